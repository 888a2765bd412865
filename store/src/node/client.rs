//! The client: finds a member that answers, retries the way etcd's client does, and classifies
//! every request's outcome as ok, failed for certain, or unknown.
//!
//! Retry rules, after etcd's clientv3: a read (or any request that changes nothing) is retried
//! on another member after any failure until the operation's deadline; a write is retried only
//! after a failure that proves it was never proposed (no leader, proposal dropped, member
//! overloaded). A write whose attempt timed out, or whose reply was lost, has an **unknown**
//! outcome: it may take effect later or never. A "not leader" answer is retried at the hinted
//! leader.
//!
//! Watches are resumable: a [`Watcher`] follows one member's stream and, when the stream breaks
//! (the member dies, a message is lost, the member stops answering progress requests), opens a new
//! stream on another member from the last revision it saw + 1.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::time::{now, Instant};
use madsim::net::Endpoint;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::protocol::*;
use crate::api::*;

/// Client settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// The members to talk to.
    pub members: Vec<NodeId>,
    /// How long one attempt waits for its reply.
    pub attempt_timeout_ms: u64,
    /// How long one operation may take, retries included.
    pub op_timeout_ms: u64,
    /// Pause between attempts.
    pub retry_backoff_ms: u64,
}

impl ClientConfig {
    pub fn new(members: Vec<NodeId>) -> Self {
        ClientConfig {
            members,
            attempt_timeout_ms: 2_000,
            op_timeout_ms: 6_000,
            retry_backoff_ms: 50,
        }
    }
}

/// The outcome of one client operation, as a history records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The request took effect (or was read) with this response.
    Ok(ClientResponse),
    /// The request certainly did not take effect.
    Failed(ServerError),
    /// The request may or may not take effect, at any time after it was sent.
    Unknown(String),
}

impl Outcome {
    pub fn ok(&self) -> Option<&ClientResponse> {
        match self {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

type Waiters = Arc<Mutex<BTreeMap<u64, oneshot::Sender<ClientReply>>>>;
type WatchRoutes = Arc<Mutex<BTreeMap<u64, mpsc::UnboundedSender<WatchMessage>>>>;

struct Inner {
    config: ClientConfig,
    endpoint: Endpoint,
    addr: SocketAddr,
    next_id: AtomicU64,
    /// Index in `members` of the member tried first (the last one that answered).
    preferred: AtomicUsize,
    waiters: Waiters,
    watch_routes: WatchRoutes,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("config", &self.config)
            .finish()
    }
}

/// Receives every message of type `T` on `tag` and hands it to `deliver`, until the client is
/// dropped.
fn spawn_receiver<T: Send + 'static>(inner: &Arc<Inner>, tag: u64, deliver: fn(&Inner, T)) {
    let weak = Arc::downgrade(inner);
    madsim::task::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let Ok((payload, _)) = inner.endpoint.recv_from_raw(tag).await else {
                return;
            };
            if let Ok(message) = payload.downcast::<T>() {
                deliver(&inner, *message);
            }
        }
    });
}

/// A client of the cluster; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

enum Attempt {
    Reply(Result<ClientResponse, ServerError>),
    Lost,
}

impl Client {
    /// Binds the client's endpoint on `ip` (its simulated host) and starts its receivers.
    pub async fn connect(ip: IpAddr, config: ClientConfig) -> std::io::Result<Client> {
        assert!(!config.members.is_empty(), "a client needs members");
        let addr = SocketAddr::new(ip, PORT);
        let endpoint = Endpoint::bind(addr).await?;
        let addr = endpoint.local_addr()?;
        let inner = Arc::new(Inner {
            config,
            endpoint,
            addr,
            next_id: AtomicU64::new(1),
            preferred: AtomicUsize::new(0),
            waiters: Arc::default(),
            watch_routes: Arc::default(),
        });
        spawn_receiver(&inner, TAG_REPLY, |inner, reply: ClientReply| {
            let waiter = inner.waiters.lock().expect("waiters").remove(&reply.id);
            if let Some(tx) = waiter {
                let _ = tx.send(reply);
            }
        });
        spawn_receiver(&inner, TAG_WATCH, |inner, message: WatchMessage| {
            let route = inner
                .watch_routes
                .lock()
                .expect("routes")
                .get(&message.stream)
                .cloned();
            if let Some(tx) = route {
                let _ = tx.send(message);
            }
        });
        Ok(Client { inner })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// One attempt at one member: the reply, or `Lost` when none came in time.
    async fn attempt(&self, member: NodeId, request: &ClientRequest, timeout: Duration) -> Attempt {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.inner.waiters.lock().expect("waiters").insert(id, tx);
        let envelope = ClientEnvelope {
            id,
            reply_to: self.inner.addr,
            request: request.clone(),
        };
        let sent = self
            .inner
            .endpoint
            .send_to_raw(member_addr(member), TAG_REQUEST, Box::new(envelope))
            .await;
        let result = if sent.is_ok() {
            madsim::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(|r| r.ok())
        } else {
            None
        };
        self.inner.waiters.lock().expect("waiters").remove(&id);
        match result {
            Some(reply) => Attempt::Reply(reply.result),
            None => Attempt::Lost,
        }
    }

    /// Sends a request with etcd's retry rules and classifies its outcome.
    pub async fn request(&self, request: ClientRequest) -> Outcome {
        let config = &self.inner.config;
        let deadline = now() + Duration::from_millis(config.op_timeout_ms);
        let is_write = request.is_write();
        let members = config.members.len();
        let mut index = self.inner.preferred.load(Ordering::SeqCst) % members;
        let mut last_error = ServerError::Timeout;
        let mut maybe_sent = false;
        loop {
            let now_at = now();
            if now_at >= deadline {
                break;
            }
            let timeout = (deadline - now_at).min(Duration::from_millis(config.attempt_timeout_ms));
            let member = config.members[index];
            match self.attempt(member, &request, timeout).await {
                Attempt::Reply(Ok(response)) => {
                    self.inner.preferred.store(index, Ordering::SeqCst);
                    return Outcome::Ok(response);
                }
                Attempt::Reply(Err(ServerError::Etcd(e))) => {
                    self.inner.preferred.store(index, Ordering::SeqCst);
                    return Outcome::Failed(ServerError::Etcd(e));
                }
                Attempt::Reply(Err(ServerError::Timeout)) | Attempt::Lost => {
                    if is_write {
                        // The next request tries another member, as etcd's balancer moves off
                        // an endpoint that stopped answering.
                        self.inner
                            .preferred
                            .store((index + 1) % members, Ordering::SeqCst);
                        return Outcome::Unknown(format!("no outcome from member {member}"));
                    }
                    maybe_sent = true;
                    last_error = ServerError::Timeout;
                    index = (index + 1) % members;
                }
                Attempt::Reply(Err(ServerError::NotLeader { leader })) => {
                    last_error = ServerError::NotLeader { leader };
                    index = match leader.and_then(|l| config.members.iter().position(|m| *m == l)) {
                        Some(i) if i != index => i,
                        _ => (index + 1) % members,
                    };
                }
                Attempt::Reply(Err(e)) => {
                    // No leader, proposal dropped, overloaded: never proposed, safe to retry.
                    last_error = e;
                    index = (index + 1) % members;
                }
            }
            madsim::time::sleep(Duration::from_millis(config.retry_backoff_ms)).await;
        }
        if is_write && maybe_sent {
            Outcome::Unknown("deadline passed".to_string())
        } else {
            Outcome::Failed(last_error)
        }
    }

    /// Sends a request to one given member only (status, hash, defragment), with one attempt.
    pub async fn request_member(&self, member: NodeId, request: ClientRequest) -> Outcome {
        let timeout = Duration::from_millis(self.inner.config.attempt_timeout_ms);
        let is_write = request.is_write();
        match self.attempt(member, &request, timeout).await {
            Attempt::Reply(Ok(response)) => Outcome::Ok(response),
            Attempt::Reply(Err(ServerError::Timeout)) | Attempt::Lost if is_write => {
                Outcome::Unknown(format!("no outcome from member {member}"))
            }
            Attempt::Reply(Err(e)) => Outcome::Failed(e),
            Attempt::Lost => Outcome::Failed(ServerError::Timeout),
        }
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Outcome {
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        self.request(ClientRequest::Kv(Request::Put(req))).await
    }

    pub async fn get(&self, key: &[u8]) -> Outcome {
        let req = RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        self.request(ClientRequest::Kv(Request::Range(req))).await
    }

    /// Opens a resumable watch.
    pub async fn watch(&self, request: WatchCreateRequest) -> Watcher {
        let mut watcher = Watcher {
            client: self.clone(),
            request,
            stream: None,
            member_index: self.inner.preferred.load(Ordering::SeqCst),
            last_revision: None,
            stats: WatchStats::default(),
            done: false,
        };
        watcher.open().await;
        watcher
    }
}

/// What a watcher hands its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Events of one or more whole revisions, from `member`.
    Events {
        member: NodeId,
        header_revision: i64,
        events: Vec<Event>,
    },
    /// Every event up to `revision` has been delivered.
    Progress { member: NodeId, revision: i64 },
    /// The watch's start revision was compacted: the user must re-list. The watcher is done.
    Compacted {
        member: NodeId,
        compact_revision: i64,
    },
    /// The stream broke and the watch resumed on `member` from `from_revision`.
    Resumed { member: NodeId, from_revision: i64 },
}

/// Counters of one watcher, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStats {
    pub events: u64,
    pub responses: u64,
    pub progress: u64,
    pub resumes: u64,
    pub compactions: u64,
}

#[derive(Debug)]
struct OpenStream {
    id: u64,
    member: NodeId,
    /// Set by a heartbeat that found the member no longer knows the stream.
    lost: Arc<std::sync::atomic::AtomicBool>,
    rx: mpsc::UnboundedReceiver<WatchMessage>,
    next_seq: u64,
    early: BTreeMap<u64, WatchMessage>,
    /// Since when a later message waits in `early` for a missing one.
    gap_since: Option<Instant>,
    last_heard: Instant,
    last_progress_request: Instant,
}

/// A watch that survives broken streams.
#[derive(Debug)]
pub struct Watcher {
    client: Client,
    request: WatchCreateRequest,
    stream: Option<OpenStream>,
    member_index: usize,
    /// The revision up to which everything has been delivered (last event or progress).
    last_revision: Option<i64>,
    stats: WatchStats,
    done: bool,
}

/// How often a quiet stream asks for progress, and how long without any message it is broken.
const WATCH_HEARTBEAT: Duration = Duration::from_millis(1_000);
const WATCH_DEAD_AFTER: Duration = Duration::from_millis(3_500);
/// How long a gap in a stream's numbering may stay open before the stream counts as broken: a
/// message later than the missing one arrived, so the missing one is lost rather than slow.
const WATCH_GAP_AFTER: Duration = Duration::from_millis(1_000);

impl Watcher {
    pub fn stats(&self) -> WatchStats {
        self.stats
    }

    pub fn last_revision(&self) -> Option<i64> {
        self.last_revision
    }

    pub fn member(&self) -> Option<NodeId> {
        self.stream.as_ref().map(|s| s.member)
    }

    /// Opens a stream on the current member, trying the next ones until one accepts.
    async fn open(&mut self) -> Option<i64> {
        let members = self.client.inner.config.members.clone();
        for _ in 0..members.len() {
            let member = members[self.member_index % members.len()];
            let id = self.client.next_id() | (1 << 40);
            let (tx, rx) = mpsc::unbounded_channel();
            self.client
                .inner
                .watch_routes
                .lock()
                .expect("routes")
                .insert(id, tx);
            let mut request = self.request.clone();
            if let Some(last) = self.last_revision {
                // Never earlier than asked for: a progress notification may speak of a revision
                // before a watch's future start.
                request.start_revision = (last + 1).max(self.request.start_revision);
            }
            let from = request.start_revision;
            let create = ClientRequest::WatchCreate {
                stream: id,
                request,
            };
            let timeout = Duration::from_millis(self.client.inner.config.attempt_timeout_ms);
            match self.client.attempt(member, &create, timeout).await {
                Attempt::Reply(Ok(_)) => {
                    let now_at = now();
                    self.stream = Some(OpenStream {
                        id,
                        member,
                        lost: Arc::default(),
                        rx,
                        next_seq: 0,
                        early: BTreeMap::new(),
                        gap_since: None,
                        last_heard: now_at,
                        // The first progress request goes out at once (as an informer asks for
                        // a bookmark right after it starts watching).
                        last_progress_request: now_at
                            .checked_sub(WATCH_HEARTBEAT)
                            .unwrap_or(now_at),
                    });
                    return Some(from);
                }
                _ => {
                    self.client
                        .inner
                        .watch_routes
                        .lock()
                        .expect("routes")
                        .remove(&id);
                    self.member_index += 1;
                }
            }
        }
        None
    }

    fn close_stream(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.client
                .inner
                .watch_routes
                .lock()
                .expect("routes")
                .remove(&stream.id);
            let client = self.client.clone();
            let close = ClientRequest::WatchClose { stream: stream.id };
            madsim::task::spawn(async move {
                client
                    .attempt(stream.member, &close, Duration::from_millis(500))
                    .await;
            });
        }
    }

    /// Breaks the current stream and resumes on the next member.
    async fn resume(&mut self) -> Option<WatchEvent> {
        self.close_stream();
        self.member_index += 1;
        self.stats.resumes += 1;
        let from = self.open().await?;
        let member = self.member()?;
        Some(WatchEvent::Resumed {
            member,
            from_revision: from,
        })
    }

    /// The next thing the watch has to say, or `None` once it is done (compacted, or no member
    /// would take it). Not cancel-safe while it resumes a stream: a caller that bounds it with a
    /// timeout must allow a few attempt timeouts.
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if self.done {
                return None;
            }
            if self.stream.is_none() {
                match self.resume().await {
                    Some(event) => return Some(event),
                    None => {
                        madsim::time::sleep(WATCH_HEARTBEAT).await;
                        continue;
                    }
                }
            }
            let stream = self.stream.as_mut().expect("open");
            if let Some(message) = stream.early.remove(&stream.next_seq) {
                stream.last_heard = now();
                // The gap closed; one further on opens when a later message still waits.
                stream.gap_since = (!stream.early.is_empty()).then(now);
                stream.next_seq += 1;
                if let Some(event) = self.take(message) {
                    return Some(event);
                }
                continue;
            }
            let now_at = now();
            let lost = stream.lost.load(Ordering::SeqCst);
            let gap_open = stream
                .gap_since
                .is_some_and(|since| now_at.duration_since(since) >= WATCH_GAP_AFTER);
            if lost || gap_open || now_at.duration_since(stream.last_heard) >= WATCH_DEAD_AFTER {
                if let Some(event) = self.resume().await {
                    return Some(event);
                }
                continue;
            }
            if now_at.duration_since(stream.last_progress_request) >= WATCH_HEARTBEAT {
                stream.last_progress_request = now_at;
                let client = self.client.clone();
                let (member, id, lost) = (stream.member, stream.id, stream.lost.clone());
                madsim::task::spawn(async move {
                    let request = ClientRequest::WatchProgress { stream: id };
                    let reply = client.attempt(member, &request, WATCH_HEARTBEAT).await;
                    if let Attempt::Reply(Err(ServerError::UnknownStream)) = reply {
                        lost.store(true, Ordering::SeqCst);
                    }
                });
            }
            match madsim::time::timeout(WATCH_HEARTBEAT, stream.rx.recv()).await {
                Ok(Some(message)) => {
                    if message.seq < stream.next_seq {
                        continue;
                    }
                    if message.seq > stream.next_seq {
                        // Overtaken: hold it until the gap fills, or the stream is declared dead.
                        // Only an in-order message counts as heard: a message lost for good
                        // breaks the stream (as a broken connection would), and the watch
                        // resumes after its last revision instead of waiting forever.
                        stream.early.insert(message.seq, message);
                        stream.gap_since.get_or_insert_with(now);
                        continue;
                    }
                    stream.last_heard = now();
                    stream.gap_since = None;
                    stream.next_seq += 1;
                    if let Some(event) = self.take(message) {
                        return Some(event);
                    }
                }
                Ok(None) => self.stream = None,
                Err(_) => {}
            }
        }
    }

    fn take(&mut self, message: WatchMessage) -> Option<WatchEvent> {
        let member = self.member()?;
        let r = message.response;
        self.stats.responses += 1;
        if r.canceled {
            if r.compact_revision > 0 {
                self.stats.compactions += 1;
                self.done = true;
                self.close_stream();
                return Some(WatchEvent::Compacted {
                    member,
                    compact_revision: r.compact_revision,
                });
            }
            // Canceled by the member for another reason: resume elsewhere.
            self.close_stream();
            return None;
        }
        if r.created {
            // A watch from "now" resumes after the revision it was created at, as etcd's
            // client does, so that nothing committed meanwhile is skipped.
            if self.request.start_revision == 0 && self.last_revision.is_none() {
                self.last_revision = Some(r.header.revision);
            }
            return None;
        }
        if r.events.is_empty() {
            self.stats.progress += 1;
            let revision = r.header.revision;
            if self.last_revision.is_none_or(|last| revision > last) {
                self.last_revision = Some(revision);
            }
            return Some(WatchEvent::Progress { member, revision });
        }
        self.stats.events += r.events.len() as u64;
        let last = r.events.last().expect("non-empty").kv.mod_revision;
        self.last_revision = Some(last);
        Some(WatchEvent::Events {
            member,
            header_revision: r.header.revision,
            events: r.events,
        })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.client
                .inner
                .watch_routes
                .lock()
                .expect("routes")
                .remove(&stream.id);
        }
    }
}
