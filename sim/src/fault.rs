//! Faults as values: everything the harness can do to a cluster, as documented data that can be
//! printed, saved, replayed and shrunk. [`crate::cluster::Cluster::apply`] is the one entry point
//! that carries them out.

use std::fmt;

use faultline_store::node::failpoint::{failpoint, FailAction, UnknownFailpoint};
use faultline_store::node::protocol::NodeId;
use serde::{Deserialize, Deserializer, Serialize};

/// One fault (or the end of one). Members are named by their Raft id (1-based).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "snake_case")]
pub enum Fault {
    /// Power loss / `kill -9` of a member: its processes stop and its disk keeps only what was
    /// synced. With `torn`, part of the last unsynced append may survive (a torn write).
    Crash { node: NodeId, torn: bool },
    /// Starts a crashed member again; it recovers from its disk alone. Restarting a running
    /// member crashes it first.
    Restart { node: NodeId },
    /// Freezes a member (SIGSTOP): it runs nothing, messages to it queue up.
    Pause { node: NodeId },
    /// Thaws a paused member (SIGCONT).
    Resume { node: NodeId },
    /// Cuts every link between `node` and the other members, both ways.
    Isolate { node: NodeId },
    /// Splits the members into two sides with no link between them, both ways. Members in
    /// neither list keep every link.
    Partition {
        left: Vec<NodeId>,
        right: Vec<NodeId>,
    },
    /// Cuts the link from `from` to `to` only: `to` stops hearing `from`, not the reverse.
    CutLink { from: NodeId, to: NodeId },
    /// Restores every link between members.
    Heal,
    /// Restores the link from `from` to `to` only (the end of a [`Fault::CutLink`]).
    HealLink { from: NodeId, to: NodeId },
    /// Every message between any two hosts takes `min_ms..=max_ms` (madsim's default is 1-10).
    Latency { min_ms: u64, max_ms: u64 },
    /// Each message is lost with probability `permille / 1000`.
    PacketLoss { permille: u32 },
    /// Every fsync on the member's disk that starts in the next `ms` waits until they pass.
    DiskStall { node: NodeId, ms: u64 },
    /// The member's clock (as its lease logic reads it) reads true time plus `offset_ms`.
    ClockOffset { node: NodeId, offset_ms: i64 },
    /// The member's disk is full: every write that would grow a file fails with ENOSPC until
    /// [`Fault::DiskFree`]; nothing already written is lost.
    DiskFull { node: NodeId },
    /// The member's disk has room again.
    DiskFree { node: NodeId },
    /// The next fsync on the member's disk fails with EIO and makes nothing durable; the member
    /// stops on it, as etcd exits on a failed WAL sync.
    SyncError { node: NodeId },
    /// The member's watch streams deliver at most `responses` responses each per watch sync
    /// interval (100 ms), as slow or congested watch clients make them; 0 lifts the limit.
    SlowWatchStreams { node: NodeId, responses: u32 },
    /// Arms the crash point `point` (one of
    /// [`FAILPOINTS`](faultline_store::node::failpoint::FAILPOINTS)) on a member: it acts on its
    /// `hit`-th hit from now (1 = the next), once. `crash` kills the member there exactly as
    /// `Crash { torn: false }` does; `sleep` stalls the member's task there. The point stays
    /// armed across restarts until it triggers or is cleared. A schedule naming a point that does
    /// not exist does not read.
    Failpoint {
        node: NodeId,
        #[serde(deserialize_with = "known_point")]
        point: String,
        hit: u64,
        #[serde(flatten)]
        action: FailAction,
    },
    /// Disarms `point` on a member; the trace says whether it was reached and triggered. A member
    /// that crashed at that point is restarted (it recovers from its disk); a running member is
    /// left running, and one crashed by anything else stays down.
    ClearFailpoint {
        node: NodeId,
        #[serde(deserialize_with = "known_point")]
        point: String,
    },
}

/// Reads a crash point's name, refusing one that is not in the shell's table.
fn known_point<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    match failpoint(&name) {
        Some(_) => Ok(name),
        None => Err(serde::de::Error::custom(UnknownFailpoint(name))),
    }
}

/// A fault that cannot be carried out on a cluster: it names a member the cluster does not have
/// or a crash point the shell does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFault {
    pub fault: Fault,
    pub reason: String,
}

impl fmt::Display for InvalidFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fault \"{}\": {}", self.fault, self.reason)
    }
}

impl std::error::Error for InvalidFault {}

impl Fault {
    /// The members this fault names.
    pub fn nodes(&self) -> Vec<NodeId> {
        match self {
            Fault::Crash { node, .. }
            | Fault::Restart { node }
            | Fault::Pause { node }
            | Fault::Resume { node }
            | Fault::Isolate { node }
            | Fault::DiskStall { node, .. }
            | Fault::ClockOffset { node, .. }
            | Fault::DiskFull { node }
            | Fault::DiskFree { node }
            | Fault::SyncError { node }
            | Fault::SlowWatchStreams { node, .. }
            | Fault::Failpoint { node, .. }
            | Fault::ClearFailpoint { node, .. } => vec![*node],
            Fault::Partition { left, right } => left.iter().chain(right).copied().collect(),
            Fault::CutLink { from, to } | Fault::HealLink { from, to } => vec![*from, *to],
            Fault::Heal | Fault::Latency { .. } | Fault::PacketLoss { .. } => Vec::new(),
        }
    }

    /// The same fault aimed at `node` instead, for a fault that names one member; `None` for
    /// the others. A schedule aims an episode at whoever leads when it starts with this.
    pub fn aimed_at(&self, node: NodeId) -> Option<Fault> {
        let mut fault = self.clone();
        match &mut fault {
            Fault::Crash { node: n, .. }
            | Fault::Restart { node: n }
            | Fault::Pause { node: n }
            | Fault::Resume { node: n }
            | Fault::Isolate { node: n }
            | Fault::DiskStall { node: n, .. }
            | Fault::ClockOffset { node: n, .. }
            | Fault::DiskFull { node: n }
            | Fault::DiskFree { node: n }
            | Fault::SyncError { node: n }
            | Fault::SlowWatchStreams { node: n, .. }
            | Fault::Failpoint { node: n, .. }
            | Fault::ClearFailpoint { node: n, .. } => *n = node,
            _ => return None,
        }
        Some(fault)
    }

    /// The same crash-point fault at point `name` instead; `None` for the other faults.
    pub fn at_point(&self, name: &str) -> Option<Fault> {
        let mut fault = self.clone();
        match &mut fault {
            Fault::Failpoint { point, .. } | Fault::ClearFailpoint { point, .. } => {
                *point = name.to_string()
            }
            _ => return None,
        }
        Some(fault)
    }

    /// Checks that the fault can be carried out on a cluster of `members`: every member it names
    /// is one of them and every crash point it names exists.
    pub fn validate(&self, members: &[NodeId]) -> Result<(), InvalidFault> {
        let invalid = |reason: String| InvalidFault {
            fault: self.clone(),
            reason,
        };
        if let Some(node) = self.nodes().into_iter().find(|n| !members.contains(n)) {
            let known = members
                .iter()
                .map(|n| format!("n{n}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(invalid(format!(
                "the cluster has no member n{node} (members: {known})"
            )));
        }
        if let Fault::Failpoint { point, .. } | Fault::ClearFailpoint { point, .. } = self {
            if failpoint(point).is_none() {
                return Err(invalid(UnknownFailpoint(point.clone()).to_string()));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Crash { node, torn } => {
                write!(
                    f,
                    "crash n{node}{}",
                    if *torn { " (torn write)" } else { "" }
                )
            }
            Fault::Restart { node } => write!(f, "restart n{node}"),
            Fault::Pause { node } => write!(f, "pause n{node}"),
            Fault::Resume { node } => write!(f, "resume n{node}"),
            Fault::Isolate { node } => write!(f, "isolate n{node}"),
            Fault::Partition { left, right } => {
                let side = |s: &[NodeId]| {
                    s.iter()
                        .map(|n| format!("n{n}"))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                write!(f, "partition {{{}}} | {{{}}}", side(left), side(right))
            }
            Fault::CutLink { from, to } => write!(f, "cut link n{from} -> n{to}"),
            Fault::Heal => write!(f, "heal"),
            Fault::HealLink { from, to } => write!(f, "heal link n{from} -> n{to}"),
            Fault::DiskFull { node } => write!(f, "disk full n{node}"),
            Fault::DiskFree { node } => write!(f, "disk free n{node}"),
            Fault::SyncError { node } => write!(f, "sync error n{node}"),
            Fault::SlowWatchStreams { node, responses: 0 } => {
                write!(f, "watch streams of n{node} at full speed")
            }
            Fault::SlowWatchStreams { node, responses } => {
                write!(
                    f,
                    "slow watch streams n{node} ({responses} responses per 100 ms)"
                )
            }
            Fault::Latency { min_ms, max_ms } => write!(f, "latency {min_ms}-{max_ms}ms"),
            Fault::PacketLoss { permille } => write!(f, "packet loss {permille}‰"),
            Fault::DiskStall { node, ms } => write!(f, "disk stall n{node} {ms}ms"),
            Fault::ClockOffset { node, offset_ms } => write!(f, "clock n{node} {offset_ms:+}ms"),
            Fault::Failpoint {
                node,
                point,
                hit,
                action,
            } => write!(f, "failpoint n{node} {point} {action} on hit {hit}"),
            Fault::ClearFailpoint { node, point } => write!(f, "clear failpoint n{node} {point}"),
        }
    }
}
