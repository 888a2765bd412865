//! The cluster harness: builds a cluster of members on madsim and applies [`Fault`]s to it.
//!
//! Each member is a madsim node (its own IP, tasks, clock reading) running
//! [`faultline_store::node::server::run_node`] on a [`SimDisk`] that the harness keeps, so the
//! disk survives crashes with exactly its synced content. Clients run on nodes of their own.
//! Everything happens inside one madsim runtime: the same seed gives the same run.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use faultline_store::node::client::{Client, ClientConfig};
use faultline_store::node::failpoint::Failpoints;
use faultline_store::node::protocol::{member_ip, NodeId};
use faultline_store::node::server::{
    run_node, Clock, CommitLog, NodeConfig, NodeEnv, NodeProbe, NodeState, Trace,
};
use faultline_store::node::time::{now, Instant};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use serde::{Deserialize, Serialize};

use crate::disk::{SimDisk, SimDiskConfig};
use crate::fault::Fault;

/// How a cluster is built: plain data, logged with the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// Members: 1, 3 or 5.
    pub nodes: usize,
    /// The members' settings (`id` and `peers` are filled per member).
    pub node: NodeConfig,
    pub disk: SimDiskConfig,
}

impl ClusterConfig {
    pub fn new(nodes: usize) -> Self {
        ClusterConfig {
            nodes,
            node: NodeConfig::new(1, vec![1]),
            disk: SimDiskConfig::default(),
        }
    }

    pub fn member_ids(&self) -> Vec<NodeId> {
        (1..=self.nodes as NodeId).collect()
    }
}

/// Whether a member runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStatus {
    Up,
    Crashed,
    Paused,
}

struct Member {
    handle: NodeHandle,
    disk: SimDisk,
    clock: Clock,
    probe: NodeProbe,
    status: MemberStatus,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("status", &self.status)
            .field("disk", &self.disk)
            .finish()
    }
}

/// A running cluster.
#[derive(Debug)]
pub struct Cluster {
    config: ClusterConfig,
    runtime: Handle,
    members: BTreeMap<NodeId, Member>,
    /// Links cut (one-way, member to member), so that `Heal` restores exactly them.
    cut_links: BTreeSet<(NodeId, NodeId)>,
    trace: Trace,
    commits: CommitLog,
    started: Instant,
    clients: u32,
    faults: Vec<(Duration, Fault)>,
}

impl Cluster {
    /// Starts every member. Must run inside a madsim runtime.
    pub fn start(config: ClusterConfig) -> Cluster {
        assert!(
            matches!(config.nodes, 1..=7),
            "a cluster has 1 to 7 members"
        );
        let runtime = Handle::current();
        let started = now();
        let trace = Trace::default();
        let commits = CommitLog::default();
        let peers = config.member_ids();
        let mut members = BTreeMap::new();
        for id in peers.clone() {
            let mut node_config = config.node.clone();
            node_config.id = id;
            node_config.peers = peers.clone();
            let env = NodeEnv {
                disk: SimDisk::new(config.disk.clone()),
                clock: Clock::new(started),
                trace: trace.clone(),
                probe: NodeProbe::default(),
                commits: commits.clone(),
                failpoints: Failpoints::new(),
            };
            let init_env = env.clone();
            let handle = runtime
                .create_node()
                .name(format!("n{id}"))
                .ip(member_ip(id))
                .init(move || {
                    let config = node_config.clone();
                    let env = init_env.clone();
                    async move {
                        if let Err(e) = run_node(config.clone(), env.clone()).await {
                            // An environment fault (disk error, corrupt snapshot): the member
                            // stops, as etcd exits on a WAL error.
                            env.trace.record(format!("n{} stopped: {e}", config.id));
                        }
                    }
                })
                .build();
            let member = Member {
                handle,
                disk: env.disk,
                clock: env.clock,
                probe: env.probe,
                status: MemberStatus::Up,
            };
            members.insert(id, member);
        }
        Cluster {
            config,
            runtime,
            members,
            cut_links: BTreeSet::new(),
            trace,
            commits,
            started,
            clients: 0,
            faults: Vec::new(),
        }
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    pub fn trace(&self) -> &Trace {
        &self.trace
    }

    /// Ground truth: what the members committed, revision by revision.
    pub fn commits(&self) -> &CommitLog {
        &self.commits
    }

    pub fn member_ids(&self) -> Vec<NodeId> {
        self.members.keys().copied().collect()
    }

    /// Simulated time since the cluster started.
    pub fn elapsed(&self) -> Duration {
        now().duration_since(self.started)
    }

    /// The faults applied so far, with when.
    pub fn faults(&self) -> &[(Duration, Fault)] {
        &self.faults
    }

    pub fn status(&self, node: NodeId) -> MemberStatus {
        self.member(node).status
    }

    /// A member's last published state (role, term, applied index, revision, hash).
    pub fn probe(&self, node: NodeId) -> NodeState {
        self.member(node).probe.get()
    }

    pub fn disk(&self, node: NodeId) -> &SimDisk {
        &self.member(node).disk
    }

    fn member(&self, node: NodeId) -> &Member {
        self.members
            .get(&node)
            .unwrap_or_else(|| panic!("no member n{node}"))
    }

    fn madsim_id(&self, node: NodeId) -> madsim::task::NodeId {
        self.member(node).handle.id()
    }

    fn cut(&mut self, from: NodeId, to: NodeId) {
        if from != to && self.cut_links.insert((from, to)) {
            NetSim::current().clog_link(self.madsim_id(from), self.madsim_id(to));
        }
    }

    /// Carries out one fault. Faults that make no sense in the current state (resuming a running
    /// member, crashing a crashed one) do nothing and say so in the trace.
    pub fn apply(&mut self, fault: &Fault) {
        let at = self.elapsed();
        self.trace
            .record(format!("fault @{}ms {fault}", at.as_millis()));
        self.faults.push((at, fault.clone()));
        match fault {
            Fault::Crash { node, torn } => self.crash(*node, *torn),
            Fault::Restart { node } => {
                if self.member(*node).status != MemberStatus::Crashed {
                    self.crash(*node, false);
                }
                let id = self.madsim_id(*node);
                self.runtime.restart(id);
                self.members.get_mut(node).expect("member").status = MemberStatus::Up;
            }
            Fault::Pause { node } => {
                if self.member(*node).status == MemberStatus::Up {
                    self.runtime.pause(self.madsim_id(*node));
                    self.members.get_mut(node).expect("member").status = MemberStatus::Paused;
                }
            }
            Fault::Resume { node } => {
                if self.member(*node).status == MemberStatus::Paused {
                    self.runtime.resume(self.madsim_id(*node));
                    self.members.get_mut(node).expect("member").status = MemberStatus::Up;
                }
            }
            Fault::Isolate { node } => {
                for other in self.member_ids() {
                    self.cut(*node, other);
                    self.cut(other, *node);
                }
            }
            Fault::Partition { left, right } => {
                for a in left {
                    for b in right {
                        self.cut(*a, *b);
                        self.cut(*b, *a);
                    }
                }
            }
            Fault::CutLink { from, to } => self.cut(*from, *to),
            Fault::Heal => {
                let net = NetSim::current();
                for (from, to) in std::mem::take(&mut self.cut_links) {
                    net.unclog_link(self.madsim_id(from), self.madsim_id(to));
                }
            }
            Fault::Latency { min_ms, max_ms } => {
                let (min, max) = ((*min_ms).max(1), (*max_ms).max(*min_ms).max(1) + 1);
                NetSim::current().update_config(|c| {
                    c.send_latency = Duration::from_millis(min)..Duration::from_millis(max);
                });
            }
            Fault::PacketLoss { permille } => {
                let rate = f64::from((*permille).min(1000)) / 1000.0;
                NetSim::current().update_config(|c| c.packet_loss_rate = rate);
            }
            Fault::DiskStall { node, ms } => {
                self.member(*node).disk.stall(Duration::from_millis(*ms))
            }
            Fault::ClockOffset { node, offset_ms } => {
                self.member(*node).clock.set_offset_ms(*offset_ms)
            }
        }
    }

    fn crash(&mut self, node: NodeId, torn: bool) {
        let member = self.member(node);
        if member.status == MemberStatus::Crashed {
            return;
        }
        self.runtime.kill(member.handle.id());
        let report = member.disk.crash(torn);
        self.trace.record(format!(
            "n{node} crashed: {} bytes lost, files lost {:?}{}",
            report.bytes_lost,
            report.files_lost,
            report.torn.as_ref().map_or(String::new(), |t| format!(
                ", torn {} kept {}/{}",
                t.name, t.kept_bytes, t.tail_bytes
            ))
        ));
        self.members.get_mut(&node).expect("member").status = MemberStatus::Crashed;
    }

    /// Heals every fault that has an end: links, paused members, crashed members, latency and
    /// loss back to defaults, clock offsets to zero. Disk stalls run out by themselves.
    pub fn heal_all(&mut self) {
        self.apply(&Fault::Heal);
        self.apply(&Fault::PacketLoss { permille: 0 });
        self.apply(&Fault::Latency {
            min_ms: 1,
            max_ms: 9,
        });
        for node in self.member_ids() {
            match self.status(node) {
                MemberStatus::Paused => self.apply(&Fault::Resume { node }),
                MemberStatus::Crashed => self.apply(&Fault::Restart { node }),
                MemberStatus::Up => {}
            }
            if self.member(node).clock.offset_ms() != 0 {
                self.apply(&Fault::ClockOffset { node, offset_ms: 0 });
            }
        }
    }

    /// The member that leads in the highest term among running members, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.members
            .iter()
            .filter(|(_, m)| m.status == MemberStatus::Up)
            .map(|(id, m)| (*id, m.probe.get()))
            .filter(|(_, s)| s.role == "leader")
            .max_by_key(|(_, s)| s.term)
            .map(|(id, _)| id)
    }

    /// Waits (in simulated time) until a running member leads, up to `within`.
    pub async fn wait_for_leader(&self, within: Duration) -> Option<NodeId> {
        let deadline = now() + within;
        loop {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            if now() >= deadline {
                return None;
            }
            madsim::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running member has applied at least `index`, up to `within`.
    pub async fn wait_for_applied(&self, index: u64, within: Duration) -> bool {
        let deadline = now() + within;
        loop {
            let behind = self
                .members
                .values()
                .filter(|m| m.status == MemberStatus::Up)
                .any(|m| m.probe.get().applied < index);
            if !behind {
                return true;
            }
            if now() >= deadline {
                return false;
            }
            madsim::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A client configuration that knows every member.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig::new(self.member_ids())
    }

    /// Runs `work` with a fresh client on a host of its own (10.0.1.x), returning its result.
    pub async fn with_client<F, Fut, T>(&mut self, work: F) -> T
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let config = self.client_config();
        self.spawn_client(config, work)
            .await
            .expect("client task completes")
    }

    /// Spawns `work` with a client of the given configuration on a host of its own; the returned
    /// handle yields its result.
    pub fn spawn_client<F, Fut, T>(
        &mut self,
        config: ClientConfig,
        work: F,
    ) -> madsim::task::JoinHandle<T>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        self.clients += 1;
        let n = self.clients;
        let ip = IpAddr::V4(Ipv4Addr::new(
            10,
            0,
            1 + (n / 250) as u8,
            (n % 250) as u8 + 1,
        ));
        let node = self
            .runtime
            .create_node()
            .name(format!("client{n}"))
            .ip(ip)
            .build();
        node.spawn(async move {
            let client = Client::connect(ip, config)
                .await
                .expect("client endpoint binds");
            work(client).await
        })
    }
}

/// Runs `f` in a fresh madsim runtime seeded with `seed`, on a thread of its own (rand's
/// thread-local generator is seeded on first use in a thread, so each run gets a new thread).
/// A panic inside the simulation is raised again here.
pub fn simulate<F, Fut, T>(seed: u64, f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let thread = std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .spawn(move || {
            let runtime =
                madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            runtime.block_on(f())
        })
        .expect("simulation thread starts");
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
