//! The node shell: raft-rs's `RawNode` driving the store core, on madsim's network, clock and a
//! [`Disk`].
//!
//! One task owns the node's state and handles one event at a time (a Raft message, a client
//! request, a tick), then processes raft-rs's `Ready` in the documented order: send the leader's
//! messages, install a snapshot, append entries and the hard state to the WAL, fsync, only then
//! send the messages that depend on them, apply committed entries, answer reads whose index is
//! applied. A write is answered when its entry is applied on the member that proposed it, which
//! happens only after the entry is durable on a quorum.
//!
//! Requests sent to a follower are proposed there and forwarded by raft-rs to the leader (as
//! etcd does); linearizable reads go through ReadIndex on whichever member receives them; lease
//! keepalives and TTL queries are answered by the leader only (a follower redirects).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::time::{now, Instant};
use madsim::net::Endpoint;
use raft::eraftpb::{ConfState, Entry, EntryType, Message, MessageType, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::backend::Backend;
use super::disk::Disk;
use super::failpoint::Failpoints;
use super::log_store::LogStore;
use super::protocol::*;
use super::wal::Wal;
use crate::api::*;
use crate::db::WriteSet;
use crate::error::EtcdError;
use crate::mvcc::Fnv;
use crate::store::{Store, StoreConfig};

/// A member's settings. Defaults follow etcd's (100 ms heartbeat, 1 s election timeout), with the
/// snapshot interval scaled down from etcd's 100,000 entries so that simulations exercise
/// snapshots and log compaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Every voter of the cluster, this member included.
    pub peers: Vec<NodeId>,
    /// Length of one Raft tick.
    pub tick_ms: u64,
    /// Ticks without a leader before a follower campaigns (randomised by raft-rs up to twice).
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    /// Applied entries between two snapshots (etcd's `--snapshot-count`).
    pub snapshot_entries: u64,
    /// Entries kept in the log behind a snapshot for slow followers (etcd's catch-up entries).
    pub catchup_entries: u64,
    /// How long the member waits for a request's outcome before answering `Timeout`.
    pub request_timeout_ms: u64,
    /// Interval of the watch hub's catch-up pass (etcd: 100 ms).
    pub watch_sync_ms: u64,
    /// Interval of periodic progress notifications (etcd: 10 minutes; scaled down).
    pub watch_progress_ms: u64,
    /// Requests a member holds in flight before refusing more.
    pub pending_max: usize,
    /// Interval of the backend's batch commits (etcd's `--backend-batch-interval`: 100 ms).
    pub backend_batch_interval_ms: u64,
    /// Revisions of writes after which the backend commits at once (etcd's
    /// `--backend-batch-limit`: 10,000; scaled down).
    pub backend_batch_limit: u64,
    /// Deletes per compaction batch (etcd's `--experimental-compaction-batch-limit`: 1,000;
    /// scaled down).
    pub compaction_batch_limit: usize,
    pub store: StoreConfig,
}

impl NodeConfig {
    pub fn new(id: NodeId, peers: Vec<NodeId>) -> Self {
        NodeConfig {
            id,
            peers,
            tick_ms: 100,
            election_tick: 10,
            heartbeat_tick: 1,
            snapshot_entries: 1000,
            catchup_entries: 500,
            request_timeout_ms: 5_000,
            watch_sync_ms: 100,
            watch_progress_ms: 5_000,
            pending_max: 10_000,
            backend_batch_interval_ms: 100,
            backend_batch_limit: 1_000,
            compaction_batch_limit: 100,
            store: StoreConfig::default(),
        }
    }

    /// The election timeout in milliseconds (the lower end of raft-rs's randomised range).
    pub fn election_timeout_ms(&self) -> u64 {
        self.tick_ms * self.election_tick as u64
    }
}

/// A member's clock as its lease logic reads it: simulated time since the cluster started, plus
/// an offset the harness may change (a clock jump). Shared by the harness and the node, it
/// survives restarts.
#[derive(Debug, Clone)]
pub struct Clock {
    base: Instant,
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn new(base: Instant) -> Self {
        Clock {
            base,
            offset_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let elapsed = now().duration_since(self.base).as_millis() as i64;
        (elapsed + self.offset_ms.load(Ordering::SeqCst)).max(0) as u64
    }

    /// Simulated nanoseconds since the cluster started, without the offset: never the same at
    /// two boots of one member.
    pub fn since_start_ns(&self) -> u64 {
        u64::try_from(now().duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn set_offset_ms(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

/// The run's event trace: every member appends what it did; the hash of the whole trace is the
/// run's fingerprint (the same seed must give the same hash). Recent lines are kept for reports.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    inner: Arc<Mutex<TraceInner>>,
}

#[derive(Debug, Default)]
struct TraceInner {
    hash: Fnv,
    events: u64,
    recent: std::collections::VecDeque<String>,
}

/// Lines of trace kept for reports.
const TRACE_RECENT_MAX: usize = 2000;

impl Trace {
    pub fn record(&self, line: String) {
        let mut inner = self.inner.lock().expect("trace lock");
        inner.hash.write_bytes(line.as_bytes());
        inner.events += 1;
        if inner.recent.len() == TRACE_RECENT_MAX {
            inner.recent.pop_front();
        }
        inner.recent.push_back(line);
    }

    pub fn hash(&self) -> u64 {
        self.inner.lock().expect("trace lock").hash.finish()
    }

    pub fn events(&self) -> u64 {
        self.inner.lock().expect("trace lock").events
    }

    pub fn recent(&self) -> Vec<String> {
        self.inner
            .lock()
            .expect("trace lock")
            .recent
            .iter()
            .cloned()
            .collect()
    }
}

/// Ground truth: what the cluster committed, revision by revision, as the members applied it.
/// The first member to apply a revision records its events (with the kv each replaced); the
/// others compare theirs and count any difference. Compactions are recorded by log index.
#[derive(Debug, Clone, Default)]
pub struct CommitLog {
    inner: Arc<Mutex<CommitLogInner>>,
}

#[derive(Debug, Default)]
struct CommitLogInner {
    revisions: BTreeMap<i64, Vec<Event>>,
    compactions: BTreeMap<u64, i64>,
    mismatches: u64,
}

impl CommitLog {
    fn record(&self, revision: i64, events: Vec<Event>) {
        let mut inner = self.inner.lock().expect("commit log lock");
        match inner.revisions.get(&revision) {
            Some(known) if *known != events => inner.mismatches += 1,
            Some(_) => {}
            None => {
                inner.revisions.insert(revision, events);
            }
        }
    }

    fn record_compaction(&self, index: u64, revision: i64) {
        self.inner
            .lock()
            .expect("commit log lock")
            .compactions
            .insert(index, revision);
    }

    /// Every committed revision's events, in revision order.
    pub fn revisions(&self) -> BTreeMap<i64, Vec<Event>> {
        self.inner
            .lock()
            .expect("commit log lock")
            .revisions
            .clone()
    }

    /// Compact revisions in log order.
    pub fn compactions(&self) -> Vec<i64> {
        self.inner
            .lock()
            .expect("commit log lock")
            .compactions
            .values()
            .copied()
            .collect()
    }

    /// How often a member applied a revision differently from the first one.
    pub fn mismatches(&self) -> u64 {
        self.inner.lock().expect("commit log lock").mismatches
    }
}

/// What a member reports about itself to the harness (read without the network).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeState {
    pub role: String,
    pub term: u64,
    pub leader: NodeId,
    pub applied: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub hash: u64,
    pub snapshots_made: u64,
    pub snapshots_installed: u64,
}

/// The harness's window on a member: its last published state.
#[derive(Debug, Clone, Default)]
pub struct NodeProbe {
    inner: Arc<Mutex<NodeState>>,
}

impl NodeProbe {
    pub fn get(&self) -> NodeState {
        self.inner.lock().expect("probe lock").clone()
    }
    fn set(&self, state: NodeState) {
        *self.inner.lock().expect("probe lock") = state;
    }
}

/// An entry's payload: the request and who proposed it (to answer the client).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Proposal {
    origin: NodeId,
    seq: u64,
    request: Request,
}

enum Input {
    Peer(Message),
    Client(ClientEnvelope),
    Tick,
    WatchSync,
    WatchProgress,
    BackendCommit,
}

struct PendingWrite {
    id: u64,
    reply_to: SocketAddr,
    deadline: Instant,
}

struct PendingRead {
    id: u64,
    reply_to: SocketAddr,
    request: RangeRequest,
    deadline: Instant,
    /// The read index, once the leader confirmed it.
    index: Option<u64>,
}

/// One client watch stream on this member. The member names it by its own id (the hub's stream
/// id); the client's stream id is only unique per client.
struct StreamState {
    client: SocketAddr,
    client_stream: u64,
    next_seq: u64,
}

/// Everything a member needs from its world; the harness keeps these across restarts.
#[derive(Debug, Clone)]
pub struct NodeEnv<D: Disk> {
    pub disk: D,
    pub clock: Clock,
    pub trace: Trace,
    pub probe: NodeProbe,
    pub commits: CommitLog,
    /// The member's named crash points (armed by the harness, reached by the shell).
    pub failpoints: Failpoints,
    /// How many responses each watch stream may deliver per watch sync interval; 0 is no
    /// limit. A limit stands for slow or congested watch clients: gRPC flow control then fills
    /// the member's send buffers, as in etcd 17529 (set by the harness).
    pub watch_delivery: Arc<AtomicUsize>,
}

/// Runs a member until its node is killed. Recovers from disk first.
pub async fn run_node<D: Disk>(config: NodeConfig, env: NodeEnv<D>) -> std::io::Result<()> {
    let endpoint = Arc::new(Endpoint::bind(member_addr(config.id)).await?);
    let mut node = Node::recover(config, env, endpoint.clone()).await?;
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_receivers(endpoint, tx.clone());
    let tick_pending = Arc::new(AtomicBool::new(false));
    spawn_timer(
        tx.clone(),
        node.config.tick_ms,
        Some(tick_pending.clone()),
        || Input::Tick,
    );
    spawn_timer(tx.clone(), node.config.watch_sync_ms, None, || {
        Input::WatchSync
    });
    spawn_timer(tx.clone(), node.config.watch_progress_ms, None, || {
        Input::WatchProgress
    });
    spawn_timer(tx, node.config.backend_batch_interval_ms, None, || {
        Input::BackendCommit
    });
    loop {
        let Some(event) = rx.recv().await else {
            return Ok(());
        };
        if matches!(event, Input::Tick) {
            tick_pending.store(false, Ordering::SeqCst);
        }
        node.handle(event).await?;
        node.process_ready().await?;
    }
}

fn spawn_receivers(endpoint: Arc<Endpoint>, tx: mpsc::UnboundedSender<Input>) {
    let ep = endpoint.clone();
    let peer_tx = tx.clone();
    madsim::task::spawn(async move {
        while let Ok((payload, _)) = ep.recv_from_raw(TAG_PEER).await {
            if let Ok(m) = payload.downcast::<PeerMessage>() {
                if peer_tx.send(Input::Peer(m.msg)).is_err() {
                    return;
                }
            }
        }
    });
    madsim::task::spawn(async move {
        while let Ok((payload, _)) = endpoint.recv_from_raw(TAG_REQUEST).await {
            if let Ok(envelope) = payload.downcast::<ClientEnvelope>() {
                if tx.send(Input::Client(*envelope)).is_err() {
                    return;
                }
            }
        }
    });
}

/// Sends `make()` every `period_ms`. With `pending`, a tick is not queued while the previous one
/// is unprocessed, like Go's ticker: a node blocked on its disk does not wake up to a burst of
/// ticks.
fn spawn_timer(
    tx: mpsc::UnboundedSender<Input>,
    period_ms: u64,
    pending: Option<Arc<AtomicBool>>,
    make: fn() -> Input,
) {
    madsim::task::spawn(async move {
        loop {
            madsim::time::sleep(Duration::from_millis(period_ms)).await;
            if let Some(flag) = &pending {
                if flag.swap(true, Ordering::SeqCst) {
                    continue;
                }
            }
            if tx.send(make()).is_err() {
                return;
            }
        }
    });
}

struct Node<D: Disk> {
    config: NodeConfig,
    env: NodeEnv<D>,
    endpoint: Arc<Endpoint>,
    raw: RawNode<LogStore>,
    store: Store,
    wal: Wal<D>,
    backend: Backend<D>,
    /// The last index of the batch of committed entries being applied (see the planted bug
    /// `consistent-index-not-atomic`).
    applying_to: u64,
    /// When this boot began (see [`Node::read_context`]).
    boot_ns: u64,
    next_seq: u64,
    pending_writes: BTreeMap<u64, PendingWrite>,
    pending_reads: BTreeMap<u64, PendingRead>,
    /// Lease revokes proposed for expiry and not yet applied.
    revoking: BTreeSet<LeaseId>,
    streams: BTreeMap<u64, StreamState>,
    /// The member's stream id of each (client address, client stream id).
    stream_ids: BTreeMap<(SocketAddr, u64), u64>,
    next_stream: u64,
    role: StateRole,
    term: u64,
    last_snapshot_index: u64,
    snapshots_made: u64,
    snapshots_installed: u64,
    /// The last read index this member confirmed as leader, with its term (kept only for the
    /// planted bug `read-index-reused`).
    confirmed_read: Option<(u64, u64)>,
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn role_name(role: StateRole) -> &'static str {
    match role {
        StateRole::Follower => "follower",
        StateRole::Candidate => "candidate",
        StateRole::Leader => "leader",
        StateRole::PreCandidate => "pre-candidate",
    }
}

impl<D: Disk> Node<D> {
    /// Rebuilds a member from its disk alone: the snapshot restores the store (with its
    /// consistent index), the WAL restores the log; raft-rs then hands back the committed entries
    /// after the consistent index.
    async fn recover(
        config: NodeConfig,
        env: NodeEnv<D>,
        endpoint: Arc<Endpoint>,
    ) -> std::io::Result<Self> {
        let wal = Wal::new(env.disk.clone());
        let mut recovered = wal.recover().await?;
        let last_snapshot_index = recovered
            .snapshot
            .as_ref()
            .map_or(0, |s| s.get_metadata().index);
        let backend = Backend::open(
            env.disk.clone(),
            env.failpoints.clone(),
            last_snapshot_index,
        )
        .await?;
        let store = Store::from_db(config.store.clone(), backend.db())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if store.consistent_index() < last_snapshot_index {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the db file is at index {}, older than the snapshot at {last_snapshot_index}",
                    store.consistent_index()
                ),
            ));
        }
        if let Some(snapshot) = recovered.snapshot.as_mut() {
            // A lagging follower is sent the db file as it is when the snapshot is sent.
            snapshot.data = backend.file_bytes().await?.into();
        }
        let mut hard_state = recovered.hard_state.clone();
        let last_index = recovered.prev_index + recovered.entries.len() as u64;
        // Entries the db holds were committed: the commit index is at least that far.
        hard_state.commit = hard_state
            .commit
            .max(store.consistent_index().min(last_index))
            .clamp(recovered.prev_index, last_index);
        env.trace.record(format!(
            "n{} recover snapshot={} log={}..={} commit={} term={} applied={} torn_bytes={}",
            config.id,
            last_snapshot_index,
            recovered.prev_index + 1,
            last_index,
            hard_state.commit,
            hard_state.term,
            store.consistent_index(),
            recovered.truncated_bytes
        ));
        let applied = store.consistent_index().min(hard_state.commit);
        let log = LogStore::recovered(
            config.peers.clone(),
            recovered.snapshot,
            recovered.prev_index,
            recovered.prev_term,
            recovered.entries,
            hard_state,
        );
        let mut raft_config = raft::Config::new(config.id);
        raft_config.election_tick = config.election_tick;
        raft_config.heartbeat_tick = config.heartbeat_tick;
        raft_config.pre_vote = true;
        raft_config.check_quorum = true;
        raft_config.applied = applied;
        raft_config.max_size_per_msg = 1 << 20;
        raft_config.max_inflight_msgs = 256;
        let raw = RawNode::new(&raft_config, log, &logger())
            .map_err(|e| std::io::Error::other(format!("raft: {e}")))?;
        let boot_ns = env.clock.since_start_ns();
        let node = Node {
            config,
            env,
            endpoint,
            raw,
            store,
            wal,
            backend,
            applying_to: 0,
            boot_ns,
            next_seq: 0,
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            revoking: BTreeSet::new(),
            streams: BTreeMap::new(),
            stream_ids: BTreeMap::new(),
            next_stream: 0,
            role: StateRole::Follower,
            term: 0,
            last_snapshot_index,
            snapshots_made: 0,
            snapshots_installed: 0,
            confirmed_read: None,
        };
        node.publish();
        Ok(node)
    }

    fn id(&self) -> NodeId {
        self.config.id
    }

    fn now_ms(&self) -> u64 {
        self.env.clock.now_ms()
    }

    fn trace(&self, line: String) {
        self.env.trace.record(format!("n{} {line}", self.id()));
    }

    fn publish(&self) {
        self.env.probe.set(NodeState {
            role: role_name(self.raw.raft.state).to_string(),
            term: self.raw.raft.term,
            leader: self.raw.raft.leader_id,
            applied: self.store.consistent_index(),
            revision: self.store.current_revision(),
            compact_revision: self.store.compact_revision(),
            hash: self.store.hash_kv(0).map_or(0, |h| h.hash),
            snapshots_made: self.snapshots_made,
            snapshots_installed: self.snapshots_installed,
        });
    }

    fn reply(&self, to: SocketAddr, id: u64, result: Result<ClientResponse, ServerError>) {
        let endpoint = self.endpoint.clone();
        let reply = ClientReply { id, result };
        madsim::task::spawn(async move {
            let _ = endpoint.send_to_raw(to, TAG_REPLY, Box::new(reply)).await;
        });
    }

    /// Sends raft messages to their members. A snapshot is reported sent as soon as it leaves,
    /// as etcd's snapshot sender reports it once the transfer completes: raft-rs holds the
    /// follower's progress (no appends, no new snapshot) until it hears how the snapshot went,
    /// so a snapshot lost on the way or by a follower that crashed before saving it would
    /// otherwise leave that follower behind for good. If it did not arrive, the follower's next
    /// answer rejects the leader's probe and a new snapshot goes out.
    fn send_peer(&mut self, msgs: Vec<Message>) {
        for msg in msgs {
            if msg.get_msg_type() == MessageType::MsgSnapshot {
                self.raw.report_snapshot(msg.to, SnapshotStatus::Finish);
            }
            let to = member_addr(msg.to);
            let endpoint = self.endpoint.clone();
            madsim::task::spawn(async move {
                let _ = endpoint
                    .send_to_raw(to, TAG_PEER, Box::new(PeerMessage { msg }))
                    .await;
            });
        }
    }

    async fn handle(&mut self, event: Input) -> std::io::Result<()> {
        match event {
            Input::Peer(msg) => {
                // A message from a member not in the configuration is ignored, as raft-rs would.
                let _ = self.raw.step(msg);
            }
            Input::Client(envelope) => self.handle_client(envelope).await?,
            Input::Tick => self.on_tick(),
            Input::WatchSync => {
                self.store.watch_sync();
                self.flush_watches_limited();
            }
            Input::WatchProgress => {
                self.store.watch_progress_tick();
                self.flush_watches();
            }
            Input::BackendCommit => self.backend_tick().await?,
        }
        Ok(())
    }

    fn on_tick(&mut self) {
        self.raw.tick();
        let now = now();
        // Requests whose outcome did not come in time: the client hears `Timeout` (a write may
        // still take effect).
        let expired: Vec<u64> = self
            .pending_writes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            let p = self.pending_writes.remove(&seq).expect("listed");
            self.reply(p.reply_to, p.id, Err(ServerError::Timeout));
        }
        let expired: Vec<u64> = self
            .pending_reads
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(s, _)| *s)
            .collect();
        for seq in expired {
            let p = self.pending_reads.remove(&seq).expect("listed");
            self.reply(p.reply_to, p.id, Err(ServerError::Timeout));
        }
        if self.role == StateRole::Leader {
            let now_ms = self.now_ms();
            for id in self.store.leases_expired(now_ms, 64) {
                if self.revoking.insert(id) {
                    self.trace(format!("lease {id} expired at {now_ms}ms"));
                    let request = Request::LeaseRevoke(LeaseRevokeRequest { id });
                    self.propose(request, None);
                }
            }
        }
    }

    fn deadline(&self) -> Instant {
        now() + Duration::from_millis(self.config.request_timeout_ms)
    }

    /// Proposes a request; `client` is who to answer once it is applied.
    fn propose(&mut self, request: Request, client: Option<(u64, SocketAddr)>) {
        self.next_seq += 1;
        let seq = self.next_seq;
        let proposal = Proposal {
            origin: self.id(),
            seq,
            request,
        };
        let data = bincode::serialize(&proposal).expect("proposals serialise");
        match self.raw.propose(Vec::new(), data) {
            Ok(()) => {
                if let Some((id, reply_to)) = client {
                    let deadline = self.deadline();
                    self.pending_writes.insert(
                        seq,
                        PendingWrite {
                            id,
                            reply_to,
                            deadline,
                        },
                    );
                }
            }
            Err(e) => {
                if let Some((id, reply_to)) = client {
                    let error = if self.raw.raft.leader_id == raft::INVALID_ID {
                        ServerError::NoLeader
                    } else {
                        let _ = e;
                        ServerError::ProposalDropped
                    };
                    self.reply(reply_to, id, Err(error));
                }
            }
        }
    }

    async fn handle_client(&mut self, envelope: ClientEnvelope) -> std::io::Result<()> {
        let ClientEnvelope {
            id,
            reply_to,
            request,
        } = envelope;
        if self.pending_writes.len() + self.pending_reads.len() >= self.config.pending_max {
            self.reply(reply_to, id, Err(ServerError::TooManyRequests));
            return Ok(());
        }
        let now_ms = self.now_ms();
        let leader = self.raw.raft.leader_id;
        let is_leader = self.role == StateRole::Leader;
        match request {
            ClientRequest::Kv(Request::Range(r))
                if r.serializable || self.config.store.bugs.stale_reads =>
            {
                // With the planted stale-reads bug, a linearizable read skips ReadIndex too.
                let result = self
                    .store
                    .range(&r)
                    .map(|r| ClientResponse::Kv(Response::Range(r)));
                self.reply(reply_to, id, result.map_err(ServerError::Etcd));
            }
            ClientRequest::Kv(Request::Range(r)) => {
                if let Err(e) = self.store.admit(&Request::Range(r.clone())) {
                    self.reply(reply_to, id, Err(ServerError::Etcd(e)));
                    return Ok(());
                }
                if leader == raft::INVALID_ID {
                    self.reply(reply_to, id, Err(ServerError::NoLeader));
                    return Ok(());
                }
                self.next_seq += 1;
                let seq = self.next_seq;
                let deadline = self.deadline();
                let reused = self.reusable_read_index();
                self.pending_reads.insert(
                    seq,
                    PendingRead {
                        id,
                        reply_to,
                        request: r,
                        deadline,
                        index: reused,
                    },
                );
                if reused.is_none() {
                    self.raw.read_index(self.read_context(seq));
                }
            }
            ClientRequest::Kv(request) => match self.store.admit(&request) {
                Ok(()) => self.propose(request, Some((id, reply_to))),
                Err(EtcdError::NoSpace) => {
                    // etcd's quota check raises the NOSPACE alarm through the log.
                    let raised = self
                        .store
                        .alarms()
                        .iter()
                        .any(|a| a.alarm == AlarmType::NoSpace);
                    if !raised {
                        let alarm = AlarmRequest {
                            action: AlarmAction::Activate,
                            member_id: self.id(),
                            alarm: AlarmType::NoSpace,
                        };
                        self.propose(Request::Alarm(alarm), None);
                    }
                    self.reply(reply_to, id, Err(ServerError::Etcd(EtcdError::NoSpace)));
                }
                Err(e) => self.reply(reply_to, id, Err(ServerError::Etcd(e))),
            },
            ClientRequest::LeaseKeepAlive(lease) => {
                let result = if is_leader {
                    Ok(ClientResponse::LeaseKeepAlive(
                        self.store.lease_keep_alive(lease, now_ms),
                    ))
                } else {
                    Err(not_leader(leader))
                };
                self.reply(reply_to, id, result);
            }
            ClientRequest::LeaseTimeToLive { id: lease, keys } => {
                let result = if is_leader {
                    Ok(ClientResponse::LeaseTimeToLive(
                        self.store.lease_time_to_live(lease, keys, now_ms),
                    ))
                } else {
                    Err(not_leader(leader))
                };
                self.reply(reply_to, id, result);
            }
            ClientRequest::LeaseLeases => {
                self.reply(
                    reply_to,
                    id,
                    Ok(ClientResponse::LeaseLeases(self.store.lease_leases())),
                );
            }
            ClientRequest::Status => {
                let mut status = self.store.status();
                status.member_id = self.id();
                status.leader = leader;
                status.raft_term = self.raw.raft.term;
                status.raft_index = self.raw.raft.raft_log.last_index();
                self.reply(reply_to, id, Ok(ClientResponse::Status(status)));
            }
            ClientRequest::HashKv { revision } => {
                let result = self.store.hash_kv(revision).map(ClientResponse::HashKv);
                self.reply(reply_to, id, result.map_err(ServerError::Etcd));
            }
            ClientRequest::Defragment => {
                // The member serves nothing while it rewrites its backend.
                let hook = !self.store.config().bugs.defrag_drops_consistent_index;
                let index = self.store.consistent_index();
                let result = self.backend.defragment(&mut self.store, index, hook).await;
                self.store.defragment();
                // A disk error stops the member; the client sees no answer.
                result?;
                self.reply(reply_to, id, Ok(ClientResponse::Defragment));
            }
            ClientRequest::WatchCreate { stream, request } => {
                let stream = self.stream(reply_to, stream);
                let result = self.store.watch_create(stream, &request);
                let result = result
                    .map(|_| ClientResponse::WatchAck)
                    .map_err(ServerError::Etcd);
                self.reply(reply_to, id, result);
                self.flush_watches();
            }
            ClientRequest::WatchCancel { stream, watch_id } => {
                if let Some(stream) = self.stream_ids.get(&(reply_to, stream)).copied() {
                    self.store.watch_cancel(stream, watch_id);
                }
                self.reply(reply_to, id, Ok(ClientResponse::WatchAck));
                self.flush_watches();
            }
            ClientRequest::WatchProgress { stream } => {
                // Only a create opens a stream: a member that restarted must not answer for a
                // stream it lost, or the client would never notice.
                match self.stream_ids.get(&(reply_to, stream)).copied() {
                    Some(stream) => {
                        self.store.watch_request_progress(stream);
                        self.reply(reply_to, id, Ok(ClientResponse::WatchAck));
                        self.flush_watches();
                    }
                    None => self.reply(reply_to, id, Err(ServerError::UnknownStream)),
                }
            }
            ClientRequest::WatchClose { stream } => {
                if let Some(stream) = self.stream_ids.remove(&(reply_to, stream)) {
                    self.store.watch_close_stream(stream);
                    self.streams.remove(&stream);
                }
                self.reply(reply_to, id, Ok(ClientResponse::WatchAck));
            }
        }
        Ok(())
    }

    /// The member's id for a client's stream, opening the stream on first use.
    fn stream(&mut self, client: SocketAddr, client_stream: u64) -> u64 {
        if let Some(id) = self.stream_ids.get(&(client, client_stream)) {
            return *id;
        }
        self.next_stream += 1;
        let id = self.next_stream;
        self.stream_ids.insert((client, client_stream), id);
        self.streams.insert(
            id,
            StreamState {
                client,
                client_stream,
                next_seq: 0,
            },
        );
        id
    }

    /// Sends every waiting watch response, numbered per stream, unless delivery is limited:
    /// then responses go out only at the watch sync interval (see `NodeEnv::watch_delivery`).
    fn flush_watches(&mut self) {
        if self.env.watch_delivery.load(Ordering::SeqCst) == 0 {
            self.send_watch_responses(usize::MAX);
        }
    }

    /// Sends what each stream's delivery limit lets through this interval.
    fn flush_watches_limited(&mut self) {
        let limit = match self.env.watch_delivery.load(Ordering::SeqCst) {
            0 => usize::MAX,
            n => n,
        };
        self.send_watch_responses(limit);
    }

    fn send_watch_responses(&mut self, per_stream: usize) {
        let ids: Vec<u64> = self.streams.keys().copied().collect();
        for stream in ids {
            let responses = self.store.watch_take(stream, per_stream);
            if responses.is_empty() {
                continue;
            }
            let state = self.streams.get_mut(&stream).expect("listed");
            let client = state.client;
            for mut response in responses {
                response.header.member_id = self.config.id;
                response.header.raft_term = self.raw.raft.term;
                let message = WatchMessage {
                    stream: state.client_stream,
                    seq: state.next_seq,
                    response,
                };
                state.next_seq += 1;
                let endpoint = self.endpoint.clone();
                madsim::task::spawn(async move {
                    let _ = endpoint
                        .send_to_raw(client, TAG_WATCH, Box::new(message))
                        .await;
                });
            }
        }
    }

    /// Handles raft-rs's Ready in its documented order.
    async fn process_ready(&mut self) -> std::io::Result<()> {
        if !self.raw.has_ready() {
            self.after_ready();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        // 1. A leader sends its messages before persisting (Raft thesis 10.2.1).
        self.send_peer(ready.take_messages());
        // 2. A snapshot from the leader: durable first, then installed.
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.install_snapshot(snapshot).await?;
        }
        // 3. Committed entries (already durable on a quorum) are applied.
        let committed = ready.take_committed_entries();
        self.apply_entries(committed).await?;
        // 4-5. New entries and the hard state go to the WAL, then one fsync.
        let entries = ready.entries().to_vec();
        let hard_state = ready.hs().cloned();
        if self.store.config().bugs.apply_before_wal_sync
            && self.config.peers.len() == 1
            && self.role == StateRole::Leader
        {
            // The planted bug 14370: a lone member applies (and answers) its new entries
            // before they are in its WAL.
            self.apply_entries(entries.clone()).await?;
        }
        if !entries.is_empty() || hard_state.is_some() {
            self.env.failpoints.reach("raftBeforeSave").await;
            self.wal.append(&entries, hard_state.as_ref()).await?;
            if ready.must_sync() || !entries.is_empty() {
                self.wal.sync().await?;
            }
            self.env.failpoints.reach("raftAfterSave").await;
            self.raw.mut_store().append(&entries);
            if let Some(hs) = hard_state {
                self.raw.mut_store().set_hard_state(hs);
            }
        }
        // 6. Messages that depend on what was just made durable.
        self.send_peer(ready.take_persisted_messages());
        for rs in ready.take_read_states() {
            self.read_index_confirmed(&rs.request_ctx, rs.index);
        }
        // 7. Advance; the light ready carries what became committed meanwhile.
        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        self.send_peer(light.take_messages());
        let committed = light.take_committed_entries();
        self.apply_entries(committed).await?;
        self.raw.advance_apply();
        self.maybe_snapshot().await?;
        self.after_ready();
        Ok(())
    }

    /// Bookkeeping after each Ready: role changes, reads that became servable, watch delivery.
    fn after_ready(&mut self) {
        let role = self.raw.raft.state;
        let term = self.raw.raft.term;
        if role != self.role || term != self.term {
            self.trace(format!(
                "{} term={term} leader={}",
                role_name(role),
                self.raw.raft.leader_id
            ));
            if role == StateRole::Leader && self.role != StateRole::Leader {
                // A new leader extends every lease by an election timeout: no lease expires early
                // because leadership moved.
                let now = self.now_ms();
                self.store
                    .lease_promote(now, self.config.election_timeout_ms());
            } else if role != StateRole::Leader && self.role == StateRole::Leader {
                self.store.lease_demote();
            }
            self.revoking.clear();
            self.role = role;
            self.term = term;
        }
        self.serve_reads();
        self.flush_watches();
        self.publish();
    }

    /// With the planted etcd 20418 bug, a leader reuses the read index it confirmed earlier in
    /// its term while its commit index has not moved since, instead of asking a quorum again.
    /// Only a leader that was deposed without noticing (paused, then resumed) is wrong to do
    /// so: the new leader committed writes this one has not heard of.
    fn reusable_read_index(&self) -> Option<u64> {
        if !self.store.config().bugs.read_index_reused || self.role != StateRole::Leader {
            return None;
        }
        let (term, index) = self.confirmed_read?;
        (term == self.raw.raft.term && index == self.raw.raft.raft_log.committed).then_some(index)
    }

    /// The context of read `seq`'s ReadIndex request: the member, its boot and the read. The
    /// leader keys pending reads by context, its own and those its followers forward, and a
    /// heartbeat response acknowledges the context it carries; a context two members (or two
    /// boots of one) could both use lets a late acknowledgement of one member's read confirm
    /// another's, and a deposed leader answer from its old state. etcd's request ids carry the
    /// member id and a time for the same reason.
    fn read_context(&self, seq: u64) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(24);
        ctx.extend_from_slice(&self.config.id.to_le_bytes());
        ctx.extend_from_slice(&self.boot_ns.to_le_bytes());
        ctx.extend_from_slice(&seq.to_le_bytes());
        ctx
    }

    fn read_index_confirmed(&mut self, ctx: &[u8], index: u64) {
        if self.raw.raft.state == StateRole::Leader {
            self.confirmed_read = Some((self.raw.raft.term, index));
        }
        let own = self.read_context(0);
        let Some(seq) = ctx
            .strip_prefix(&own[..16])
            .and_then(|rest| <[u8; 8]>::try_from(rest).ok())
            .map(u64::from_le_bytes)
        else {
            return;
        };
        if let Some(read) = self.pending_reads.get_mut(&seq) {
            read.index = Some(index);
        }
    }

    /// Answers linearizable reads whose read index is applied.
    fn serve_reads(&mut self) {
        let applied = self.store.consistent_index();
        let ready: Vec<u64> = self
            .pending_reads
            .iter()
            .filter(|(_, r)| r.index.is_some_and(|i| i <= applied))
            .map(|(s, _)| *s)
            .collect();
        for seq in ready {
            let read = self.pending_reads.remove(&seq).expect("listed");
            let result = self.store.range(&read.request);
            let result = result.map(|r| ClientResponse::Kv(Response::Range(r)));
            self.reply(read.reply_to, read.id, result.map_err(ServerError::Etcd));
        }
    }

    /// Applies committed entries in order; the backend commits in between when the writes
    /// buffered since its last commit reach the batch limit, and right after a Compact (its
    /// scheduled revision is made durable at once, as etcd's ForceCommit does).
    async fn apply_entries(&mut self, entries: Vec<Entry>) -> std::io::Result<()> {
        let now_ms = self.now_ms();
        self.applying_to = entries.last().map_or(0, |e| e.index);
        for entry in entries {
            self.apply_entry(entry, now_ms).await;
            if self.store.compaction_unscheduled() {
                let index = self.store.consistent_index();
                self.backend
                    .schedule_compaction(&mut self.store, index)
                    .await?;
            } else if self.store.unflushed_revisions() >= self.config.backend_batch_limit {
                let index = if self.store.config().bugs.consistent_index_not_atomic {
                    self.applying_to.max(self.store.consistent_index())
                } else {
                    self.store.consistent_index()
                };
                self.backend
                    .commit(&mut self.store, WriteSet::default(), index, true)
                    .await?;
            }
        }
        Ok(())
    }

    /// A backend tick of the batch transaction.
    async fn backend_tick(&mut self) -> std::io::Result<()> {
        let index = self.store.consistent_index();
        if self.store.compaction_unscheduled() {
            self.backend
                .schedule_compaction(&mut self.store, index)
                .await?;
        }
        // A compaction waiting runs all its batches back to back, each its own commit (etcd's
        // compactor loop); otherwise the tick commits what is buffered.
        let mut batches = 0;
        while self
            .backend
            .compaction_batch(&mut self.store, index, self.config.compaction_batch_limit)
            .await?
        {
            batches += 1;
        }
        if batches == 0 {
            self.backend
                .commit(&mut self.store, WriteSet::default(), index, true)
                .await?;
        }
        Ok(())
    }

    /// Applies one committed entry and answers its client if it was proposed here.
    async fn apply_entry(&mut self, entry: Entry, now_ms: u64) {
        if entry.data.is_empty() || entry.get_entry_type() != EntryType::EntryNormal {
            // The new leader's empty entry, or a conf change (the cluster's membership is
            // fixed): nothing for the store, but the index is applied.
            self.store.apply_noop(entry.index);
            return;
        }
        let proposal: Proposal = match bincode::deserialize(&entry.data) {
            Ok(p) => p,
            Err(e) => panic!("entry {} does not decode: {e}", entry.index),
        };
        if entry.index <= self.store.consistent_index() {
            return; // applied before the restart (the db holds it)
        }
        let revision_before = self.store.current_revision();
        self.env.failpoints.reach("beforeWritebackBuf").await;
        let Some(result) = self.store.apply(entry.index, &proposal.request, now_ms) else {
            return;
        };
        self.env.failpoints.reach("afterWritebackBuf").await;
        let revision = self.store.current_revision();
        if revision > revision_before {
            let events = self.store.mvcc().events(revision, revision, b"\0", b"\0");
            let events = events
                .into_iter()
                .map(|mut e| {
                    e.prev_kv = self.store.mvcc().prev_kv_of(&e);
                    e
                })
                .collect();
            self.env.commits.record(revision, events);
        }
        if let (Request::Compact(c), Ok(_)) = (&proposal.request, &result) {
            self.env.commits.record_compaction(entry.index, c.revision);
        }
        if let Request::LeaseRevoke(r) = &proposal.request {
            self.revoking.remove(&r.id);
        }
        self.trace(format!(
            "apply {} t{} rev={} {}",
            entry.index,
            entry.term,
            self.store.current_revision(),
            if result.is_ok() { "ok" } else { "err" }
        ));
        if proposal.origin == self.id() {
            if let Some(p) = self.pending_writes.remove(&proposal.seq) {
                let result = result.map(ClientResponse::Kv).map_err(ServerError::Etcd);
                self.reply(p.reply_to, p.id, result);
            }
        }
    }

    /// Takes a snapshot every `snapshot_entries` applied entries and compacts the log behind it,
    /// keeping `catchup_entries` for slow followers. The db is committed first, so it is never
    /// older than the snapshot; the snapshot file keeps only the metadata, and the copy a lagging
    /// follower is sent carries the db file.
    async fn maybe_snapshot(&mut self) -> std::io::Result<()> {
        let applied = self.store.consistent_index();
        if applied < self.last_snapshot_index + self.config.snapshot_entries {
            return Ok(());
        }
        self.backend
            .commit(&mut self.store, WriteSet::default(), applied, true)
            .await?;
        let term = self.raw.raft.raft_log.term(applied).unwrap_or(0);
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = applied;
        meta.term = term;
        meta.set_conf_state(ConfState {
            voters: self.config.peers.clone(),
            ..Default::default()
        });
        self.wal.save_snapshot(&snapshot).await?;
        snapshot.data = self.backend.file_bytes().await?.into();
        self.raw.mut_store().set_snapshot(snapshot);
        let compact_to = applied.saturating_sub(self.config.catchup_entries);
        self.raw.mut_store().compact_to(compact_to);
        let log = self.raw.store();
        let (prev_index, prev_term) = log.prev();
        let entries = log.entries_all().to_vec();
        let hs = log.hard_state().clone();
        self.wal
            .rewrite(prev_index, prev_term, &entries, &hs)
            .await?;
        self.env.failpoints.reach("raftAfterWALRelease").await;
        self.last_snapshot_index = applied;
        self.snapshots_made += 1;
        self.trace(format!("snapshot at {applied} log from {}", prev_index + 1));
        Ok(())
    }

    /// Installs a snapshot from the leader: its db file is written beside the db and synced,
    /// its metadata saved to the WAL, the log replaced, then the db file swapped in and opened.
    async fn install_snapshot(&mut self, snapshot: Snapshot) -> std::io::Result<()> {
        let index = snapshot.get_metadata().index;
        let db = self.backend.receive_snapshot(&snapshot.data).await?;
        self.env.failpoints.reach("raftBeforeSaveSnap").await;
        let mut meta_only = Snapshot::default();
        meta_only.set_metadata(snapshot.get_metadata().clone());
        self.wal.save_snapshot(&meta_only).await?;
        self.env.failpoints.reach("raftAfterSaveSnap").await;
        self.raw.mut_store().install_snapshot(snapshot);
        let log = self.raw.store();
        let hs = log.hard_state().clone();
        let (prev_index, prev_term) = log.prev();
        self.wal.rewrite(prev_index, prev_term, &[], &hs).await?;
        self.env.failpoints.reach("raftBeforeApplySnap").await;
        self.backend.swap_in_snapshot(db).await?;
        self.store
            .install_db(self.backend.db())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        self.env.failpoints.reach("raftAfterApplySnap").await;
        self.last_snapshot_index = index;
        self.snapshots_installed += 1;
        self.trace(format!(
            "install snapshot at {index} rev={}",
            self.store.current_revision()
        ));
        Ok(())
    }
}

fn not_leader(leader: NodeId) -> ServerError {
    ServerError::NotLeader {
        leader: (leader != raft::INVALID_ID).then_some(leader),
    }
}
