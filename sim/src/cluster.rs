//! The cluster harness: builds a cluster of members on madsim and applies [`Fault`]s to it.
//!
//! Each member is a madsim node (its own IP, tasks, clock reading) running
//! [`faultline_store::node::server::run_node`] on a [`SimDisk`] that the harness keeps, so the
//! disk survives crashes with exactly its synced content. Clients run on nodes of their own.
//! Everything happens inside one madsim runtime: the same seed gives the same run.
//!
//! A member can also crash by itself, at an armed crash point ([`Fault::Failpoint`]): the point's
//! hook, running in the member's own task, does what [`Fault::Crash`] does (kill the madsim node,
//! crash the disk, record it), so the harness and the hook share each member's status.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_store::node::client::{Client, ClientConfig};
use faultline_store::node::failpoint::{FailAction, Failpoints};
use faultline_store::node::protocol::{member_ip, NodeId};
use faultline_store::node::server::{
    run_node, Clock, CommitLog, NodeConfig, NodeEnv, NodeProbe, NodeState, Trace,
};
use faultline_store::node::time::{now, Instant};
use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle};
use serde::{Deserialize, Serialize};

use crate::disk::{SimDisk, SimDiskConfig};
use crate::fault::{Fault, InvalidFault};

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
    /// Its task ended by itself: a disk error stopped it (as etcd exits on a WAL error) or it
    /// panicked. Its disk keeps what it wrote, as after a process exit; a restart starts it again.
    Stopped,
}

/// A member's panic: a broken invariant of the store or of Raft, recorded as a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPanic {
    pub node: NodeId,
    /// Simulated time since the cluster started.
    pub at_ms: u64,
    pub message: String,
    /// `file:line:column` of the panic, when known.
    pub location: Option<String>,
}

/// One arming of a crash point and how it went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailpointArming {
    pub node: NodeId,
    pub point: String,
    pub hit: u64,
    pub action: FailAction,
    /// Simulated time since the cluster started.
    pub armed_at_ms: u64,
    /// Times the point was reached after arming, until it was cleared (or so far).
    pub reached: u64,
    /// Whether it acted (crashed or stalled the member).
    pub triggered: bool,
    /// When the member crashed at it.
    pub crashed_at_ms: Option<u64>,
    /// When it was cleared (or armed again, which replaces it); `None` while it is armed.
    pub cleared_at_ms: Option<u64>,
}

/// What the harness and a member's crash hook both change.
#[derive(Debug)]
struct Liveness {
    status: MemberStatus,
    /// The crash point the member is down from, until it restarts.
    crashed_at: Option<&'static str>,
    /// Every crash at a crash point over the run, with when.
    point_crashes: Vec<(&'static str, Duration)>,
}

/// The means to crash one member, shared by the harness and the member's crash hook (which runs
/// inside the member's own task).
#[derive(Clone)]
struct MemberControl {
    node: NodeId,
    madsim_id: madsim::task::NodeId,
    runtime: Handle,
    disk: SimDisk,
    trace: Trace,
    started: Instant,
    liveness: Arc<Mutex<Liveness>>,
}

impl MemberControl {
    fn lock(&self) -> std::sync::MutexGuard<'_, Liveness> {
        self.liveness.lock().expect("member liveness lock")
    }

    fn status(&self) -> MemberStatus {
        self.lock().status
    }

    fn set_status(&self, status: MemberStatus) {
        let mut liveness = self.lock();
        liveness.status = status;
        if status != MemberStatus::Crashed {
            liveness.crashed_at = None;
        }
    }

    /// The member's process ended by itself (an error it exits on, or a panic): its node is
    /// killed, so its connections close and its clients go elsewhere as they would when etcd
    /// exits; its disk is left as the exit left it (a process exit loses no written page).
    fn stop(&self) {
        {
            let mut liveness = self.lock();
            if liveness.status != MemberStatus::Up {
                return;
            }
            liveness.status = MemberStatus::Stopped;
        }
        self.runtime.kill(self.madsim_id);
    }

    /// Kills the member's node and crashes its disk, unless it is down already. `point` names
    /// the crash point it crashed at, when it crashed by itself.
    fn crash(&self, torn: bool, point: Option<&'static str>) {
        {
            let mut liveness = self.lock();
            if liveness.status == MemberStatus::Crashed {
                return;
            }
            liveness.status = MemberStatus::Crashed;
            liveness.crashed_at = point;
            if let Some(point) = point {
                let at = now().duration_since(self.started);
                liveness.point_crashes.push((point, at));
            }
        }
        self.runtime.kill(self.madsim_id);
        let report = self.disk.crash(torn);
        self.trace.record(format!(
            "n{} crashed{}: {} bytes lost, files lost {:?}{}",
            self.node,
            point.map_or(String::new(), |p| format!(" at failpoint {p}")),
            report.bytes_lost,
            report.files_lost,
            report.torn.as_ref().map_or(String::new(), |t| format!(
                ", torn {} kept {}/{}",
                t.name, t.kept_bytes, t.tail_bytes
            ))
        ));
    }
}

struct Member {
    handle: NodeHandle,
    disk: SimDisk,
    clock: Clock,
    probe: NodeProbe,
    failpoints: Failpoints,
    watch_delivery: Arc<AtomicUsize>,
    control: MemberControl,
    /// What the member's task calls when it ends by itself; holds the control (and through it
    /// the runtime), so it is emptied when the cluster goes.
    stopper: Arc<Mutex<Option<MemberControl>>>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("status", &self.control.status())
            .field("disk", &self.disk)
            .field("failpoints", &self.failpoints)
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
    armings: Vec<FailpointArming>,
    panics: Arc<Mutex<Vec<MemberPanic>>>,
    /// Members whose disk a [`Fault::DiskFull`] filled.
    full_disks: BTreeSet<NodeId>,
    /// The clients' hosts, killed with the cluster (see its `Drop`).
    client_nodes: Vec<madsim::task::NodeId>,
}

/// One member's process: the node shell until it ends. An end of its own (an error it exits on,
/// or a panic, recorded in `panics` as a finding) stops the member through `stopper`.
async fn member_process(
    config: NodeConfig,
    env: NodeEnv<SimDisk>,
    started: Instant,
    panics: Arc<Mutex<Vec<MemberPanic>>>,
    stopper: Arc<Mutex<Option<MemberControl>>>,
) {
    let node = config.id;
    let run = AssertUnwindSafe(run_node(config, env.clone()));
    match crate::panics::catch(run).await {
        Ok(Ok(())) => return,
        // An environment fault (disk error, corrupt snapshot): the member stops, as etcd exits
        // on a WAL error.
        Ok(Err(e)) => env.trace.record(format!("n{node} stopped: {e}")),
        Err(caught) => {
            let panic = MemberPanic {
                node,
                at_ms: now().duration_since(started).as_millis() as u64,
                message: caught.message,
                location: caught.location,
            };
            env.trace.record(format!(
                "n{node} panicked at {}: {}",
                panic.location.as_deref().unwrap_or("an unknown place"),
                panic.message
            ));
            panics.lock().expect("member panics lock").push(panic);
        }
    }
    let control = stopper.lock().expect("member stopper lock").clone();
    if let Some(control) = control {
        control.stop();
    }
}

/// The members' crash hooks and stoppers hold the runtime's handle, and the runtime holds the
/// members' tasks that hold them: a cycle that would keep every finished run's memory (its
/// disks, its trace) alive in a process that runs many (a shrink, a test sweep).
impl Drop for Cluster {
    fn drop(&mut self) {
        for member in self.members.values() {
            member.failpoints.clear_crash_hook();
            if let Ok(mut stopper) = member.stopper.lock() {
                *stopper = None;
            }
            // madsim drops a node's tasks when it is killed, and never otherwise: a member's
            // loops would outlive the run, holding its state.
            self.runtime.kill(member.handle.id());
        }
        for client in &self.client_nodes {
            self.runtime.kill(*client);
        }
    }
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
        let panics: Arc<Mutex<Vec<MemberPanic>>> = Arc::default();
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
                watch_delivery: Arc::default(),
            };
            let init_env = env.clone();
            let liveness = Arc::new(Mutex::new(Liveness {
                status: MemberStatus::Up,
                crashed_at: None,
                point_crashes: Vec::new(),
            }));
            let init_panics = panics.clone();
            // The member's task stops its own node when it ends; the control exists only once
            // the node is built, before its task first runs.
            let stopper: Arc<Mutex<Option<MemberControl>>> = Arc::default();
            let init_stopper = stopper.clone();
            let handle = runtime
                .create_node()
                .name(format!("n{id}"))
                .ip(member_ip(id))
                .init(move || {
                    let config = node_config.clone();
                    let env = init_env.clone();
                    let panics = init_panics.clone();
                    let stopper = init_stopper.clone();
                    member_process(config, env, started, panics, stopper)
                })
                .build();
            let control = MemberControl {
                node: id,
                madsim_id: handle.id(),
                runtime: runtime.clone(),
                disk: env.disk.clone(),
                trace: trace.clone(),
                started,
                liveness,
            };
            *stopper.lock().expect("member stopper lock") = Some(control.clone());
            // The member's task cannot run before `start` returns, so the hook is in place
            // before any point can be reached.
            let hook = control.clone();
            env.failpoints
                .set_crash_hook(move |point| hook.crash(false, Some(point)));
            let member = Member {
                handle,
                disk: env.disk,
                clock: env.clock,
                probe: env.probe,
                failpoints: env.failpoints,
                watch_delivery: env.watch_delivery,
                control,
                stopper,
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
            armings: Vec::new(),
            panics,
            full_disks: BTreeSet::new(),
            client_nodes: Vec::new(),
        }
    }

    /// Every member panic so far, in the order they happened.
    pub fn panics(&self) -> Vec<MemberPanic> {
        self.panics.lock().expect("member panics lock").clone()
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
        self.member(node).control.status()
    }

    /// A member's crash points: what is armed, what was reached.
    pub fn failpoints(&self, node: NodeId) -> &Failpoints {
        &self.member(node).failpoints
    }

    /// Every arming of a crash point so far, in order, with how it went (points still armed
    /// as they stand now).
    pub fn failpoint_armings(&self) -> Vec<FailpointArming> {
        self.armings
            .iter()
            .map(|arming| {
                let mut arming = arming.clone();
                if arming.cleared_at_ms.is_none() {
                    self.settle_arming(&mut arming);
                }
                arming
            })
            .collect()
    }

    /// Times each crash point was reached over the run, per member (points never reached are
    /// left out).
    pub fn failpoint_reaches(&self) -> BTreeMap<NodeId, BTreeMap<&'static str, u64>> {
        self.members
            .iter()
            .map(|(id, m)| (*id, m.failpoints.reached_all()))
            .collect()
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
    ///
    /// Panics on a fault that names a member the cluster does not have or an unknown crash
    /// point: a fault built in code is expected to be right; a schedule from outside goes
    /// through [`Fault::validate`] or [`Cluster::try_apply`].
    pub fn apply(&mut self, fault: &Fault) {
        if let Err(e) = self.try_apply(fault) {
            panic!("{e}");
        }
    }

    /// Carries out one fault, or says why it cannot be (see [`Fault::validate`]); an invalid
    /// fault leaves the cluster and its trace as they were.
    pub fn try_apply(&mut self, fault: &Fault) -> Result<(), InvalidFault> {
        fault.validate(&self.member_ids())?;
        let at = self.elapsed();
        self.trace
            .record(format!("fault @{}ms {fault}", at.as_millis()));
        self.faults.push((at, fault.clone()));
        match fault {
            Fault::Crash { node, torn } => self.crash(*node, *torn),
            Fault::Restart { node } => self.restart(*node),
            Fault::Pause { node } => {
                if self.status(*node) == MemberStatus::Up {
                    self.runtime.pause(self.madsim_id(*node));
                    self.member(*node).control.set_status(MemberStatus::Paused);
                }
            }
            Fault::Resume { node } => {
                if self.status(*node) == MemberStatus::Paused {
                    self.runtime.resume(self.madsim_id(*node));
                    self.member(*node).control.set_status(MemberStatus::Up);
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
            Fault::HealLink { from, to } => {
                if self.cut_links.remove(&(*from, *to)) {
                    NetSim::current().unclog_link(self.madsim_id(*from), self.madsim_id(*to));
                }
            }
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
            // Capacity 0 refuses every later growth and deletes nothing.
            Fault::DiskFull { node } => {
                self.full_disks.insert(*node);
                self.member(*node).disk.set_capacity(Some(0));
            }
            Fault::DiskFree { node } => {
                if self.full_disks.remove(node) {
                    let capacity = self.config.disk.capacity_bytes;
                    self.member(*node).disk.set_capacity(capacity);
                }
            }
            Fault::SyncError { node } => self
                .member(*node)
                .disk
                .fail_next_sync(std::io::ErrorKind::Other),
            Fault::SlowWatchStreams { node, responses } => self
                .member(*node)
                .watch_delivery
                .store(*responses as usize, Ordering::SeqCst),
            Fault::Failpoint {
                node,
                point,
                hit,
                action,
            } => self.arm_failpoint(*node, point, *hit, *action, at),
            Fault::ClearFailpoint { node, point } => self.clear_failpoint(*node, point, at),
        }
        Ok(())
    }

    fn crash(&mut self, node: NodeId, torn: bool) {
        self.member(node).control.crash(torn, None);
    }

    /// Starts a member again from its disk; a running or paused one is crashed first, a stopped
    /// one starts from what its disk holds (a process exit loses no written page).
    fn restart(&mut self, node: NodeId) {
        match self.status(node) {
            MemberStatus::Crashed => {}
            // Its node was killed when its task ended; its disk is left as the exit left it.
            MemberStatus::Stopped => {}
            MemberStatus::Up | MemberStatus::Paused => self.crash(node, false),
        }
        self.runtime.restart(self.madsim_id(node));
        self.member(node).control.set_status(MemberStatus::Up);
    }

    fn arm_failpoint(
        &mut self,
        node: NodeId,
        point: &str,
        hit: u64,
        action: FailAction,
        at: Duration,
    ) {
        // Arming a point again replaces the arming before it.
        self.close_arming(node, point, at);
        self.member(node)
            .failpoints
            .arm(point, hit, action)
            .expect("a validated fault names a known crash point");
        self.armings.push(FailpointArming {
            node,
            point: point.to_string(),
            hit: hit.max(1),
            action,
            armed_at_ms: at.as_millis() as u64,
            reached: 0,
            triggered: false,
            crashed_at_ms: None,
            cleared_at_ms: None,
        });
    }

    fn clear_failpoint(&mut self, node: NodeId, point: &str, at: Duration) {
        self.close_arming(node, point, at);
        let outcome = match self.member(node).failpoints.disarm(point) {
            None => "was not armed".to_string(),
            Some(a) if a.triggered => format!("triggered ({}) on hit {}", a.action, a.hit),
            Some(a) if a.reached == 0 => "never reached".to_string(),
            Some(a) => format!("reached {} of {} hits, not triggered", a.reached, a.hit),
        };
        self.trace
            .record(format!("n{node} failpoint {point} cleared: {outcome}"));
        let crashed_here = self.member(node).control.lock().crashed_at;
        if self.status(node) == MemberStatus::Crashed && crashed_here == Some(point) {
            self.trace.record(format!(
                "n{node} restarting after its crash at failpoint {point}"
            ));
            self.restart(node);
        }
    }

    /// Ends the open arming of `point` on `node` (if any) at `at`, with its outcome as it stands.
    fn close_arming(&mut self, node: NodeId, point: &str, at: Duration) {
        let Some(index) = self
            .armings
            .iter()
            .rposition(|a| a.node == node && a.point == point && a.cleared_at_ms.is_none())
        else {
            return;
        };
        let mut arming = self.armings[index].clone();
        self.settle_arming(&mut arming);
        arming.cleared_at_ms = Some(at.as_millis() as u64);
        self.armings[index] = arming;
    }

    /// Fills an open arming's outcome from the member's registry as it stands.
    fn settle_arming(&self, arming: &mut FailpointArming) {
        let member = self.member(arming.node);
        if let Some(armed) = member.failpoints.armed(&arming.point) {
            arming.reached = armed.reached;
            arming.triggered = armed.triggered;
        }
        if arming.triggered && arming.action == FailAction::Crash {
            arming.crashed_at_ms = member
                .control
                .lock()
                .point_crashes
                .iter()
                .find(|(point, at)| {
                    *point == arming.point && at.as_millis() as u64 >= arming.armed_at_ms
                })
                .map(|(_, at)| at.as_millis() as u64);
        }
    }

    /// Heals every fault that has an end: links, paused members, armed crash points (cleared),
    /// crashed members, latency and loss back to defaults, clock offsets to zero. Disk stalls
    /// run out by themselves.
    pub fn heal_all(&mut self) {
        self.apply(&Fault::Heal);
        self.apply(&Fault::PacketLoss { permille: 0 });
        self.apply(&Fault::Latency {
            min_ms: 1,
            max_ms: 9,
        });
        for node in self.member_ids() {
            let armed: Vec<String> = self
                .armings
                .iter()
                .filter(|a| a.node == node && a.cleared_at_ms.is_none())
                .map(|a| a.point.clone())
                .collect();
            for point in armed {
                self.apply(&Fault::ClearFailpoint { node, point });
            }
            if self.full_disks.contains(&node) {
                self.apply(&Fault::DiskFree { node });
            }
            if self.member(node).watch_delivery.load(Ordering::SeqCst) != 0 {
                self.apply(&Fault::SlowWatchStreams { node, responses: 0 });
            }
            // Sync errors injected but not yet hit would stop the member again after healing.
            let dropped = self.member(node).disk.clear_sync_faults();
            if dropped > 0 {
                self.trace
                    .record(format!("n{node}: {dropped} pending sync errors dropped"));
            }
            match self.status(node) {
                MemberStatus::Paused => self.apply(&Fault::Resume { node }),
                MemberStatus::Crashed | MemberStatus::Stopped => {
                    self.apply(&Fault::Restart { node })
                }
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
            .filter(|(_, m)| m.control.status() == MemberStatus::Up)
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
                .filter(|m| m.control.status() == MemberStatus::Up)
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
        self.client_nodes.push(node.id());
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
