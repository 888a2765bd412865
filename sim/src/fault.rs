//! Faults as values: everything the harness can do to a cluster, as documented data that can be
//! printed, saved, replayed and shrunk. [`crate::cluster::Cluster::apply`] is the one entry point
//! that carries them out.

use std::fmt;

use faultline_store::node::protocol::NodeId;
use serde::{Deserialize, Serialize};

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
    /// Every message between any two hosts takes `min_ms..=max_ms` (madsim's default is 1-10).
    Latency { min_ms: u64, max_ms: u64 },
    /// Each message is lost with probability `permille / 1000`.
    PacketLoss { permille: u32 },
    /// Every fsync on the member's disk that starts in the next `ms` waits until they pass.
    DiskStall { node: NodeId, ms: u64 },
    /// The member's clock (as its lease logic reads it) reads true time plus `offset_ms`.
    ClockOffset { node: NodeId, offset_ms: i64 },
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
            Fault::Latency { min_ms, max_ms } => write!(f, "latency {min_ms}-{max_ms}ms"),
            Fault::PacketLoss { permille } => write!(f, "packet loss {permille}‰"),
            Fault::DiskStall { node, ms } => write!(f, "disk stall n{node} {ms}ms"),
            Fault::ClockOffset { node, offset_ms } => write!(f, "clock n{node} {offset_ms:+}ms"),
        }
    }
}
