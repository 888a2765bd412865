//! The swarm parameters of a run: which episode kinds are on, their weights, lengths, gaps,
//! overlap, leader share, latency, loss and clocks, all drawn from the seed and printed with it;
//! and what each kind of episode holds while it lasts (see the overlap rule in `super`).

use std::collections::BTreeMap;
use std::fmt;

use faultline_store::node::protocol::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A kind of swarm episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwarmKind {
    Isolate,
    Partition,
    CutLink,
    Swizzle,
    Crash,
    Pause,
    /// Pause the leader until another member is elected, then resume it.
    LeaderPause,
    /// Isolate the leader, then pause the member that is elected after it.
    NewLeader,
    DiskStall,
    DiskFull,
    SyncError,
    Latency,
    Loss,
    Clock,
    CrashPoint,
    /// Isolate a member until it lags, then crash it at a snapshot-install point as it catches up.
    SnapshotCrash,
    /// Slow the watch streams of a member to a few responses per 100 ms, as slow or congested
    /// watch clients do: its send buffers fill and its watchers fall behind (etcd 17529).
    SlowWatchers,
}

impl SwarmKind {
    pub const ALL: [SwarmKind; 17] = [
        SwarmKind::Isolate,
        SwarmKind::Partition,
        SwarmKind::CutLink,
        SwarmKind::Swizzle,
        SwarmKind::Crash,
        SwarmKind::Pause,
        SwarmKind::LeaderPause,
        SwarmKind::NewLeader,
        SwarmKind::DiskStall,
        SwarmKind::DiskFull,
        SwarmKind::SyncError,
        SwarmKind::Latency,
        SwarmKind::Loss,
        SwarmKind::Clock,
        SwarmKind::CrashPoint,
        SwarmKind::SnapshotCrash,
        SwarmKind::SlowWatchers,
    ];

    /// Whether an episode of this kind can do anything to a cluster of `members`: a lone member
    /// has no links to cut and no successor to wait for, so only its own process, disk, clock,
    /// network quality and watch streams can be hit.
    pub fn applies_to(&self, members: usize) -> bool {
        use SwarmKind::*;
        let needs_peers = matches!(
            self,
            Isolate | Partition | CutLink | Swizzle | LeaderPause | NewLeader | SnapshotCrash
        );
        members > 1 || !needs_peers
    }

    /// The kind named `name` (its kebab-case name, as schedules print it).
    pub fn parse(name: &str) -> Result<SwarmKind, String> {
        serde_json::from_value(serde_json::Value::String(name.trim().to_string())).map_err(|_| {
            let known: Vec<String> = SwarmKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown swarm kind {name:?}; known: {}", known.join(", "))
        })
    }

    pub fn name(&self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// What the episode holds while it lasts (see the module's overlap rule).
    pub(super) fn holds(&self) -> Hold {
        use SwarmKind::*;
        match self {
            Isolate | Partition | CutLink | Swizzle => Hold::links(),
            NewLeader | SnapshotCrash | LeaderPause => Hold {
                links: true,
                down: true,
                ..Hold::default()
            },
            Crash | Pause | DiskFull | SyncError | CrashPoint => Hold {
                down: true,
                ..Hold::default()
            },
            Latency | Loss => Hold {
                quality: true,
                ..Hold::default()
            },
            DiskStall => Hold {
                disk: true,
                ..Hold::default()
            },
            Clock => Hold {
                clock: true,
                ..Hold::default()
            },
            SlowWatchers => Hold::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Hold {
    pub(super) links: bool,
    pub(super) quality: bool,
    pub(super) disk: bool,
    pub(super) clock: bool,
    pub(super) down: bool,
}

impl Hold {
    fn links() -> Hold {
        Hold {
            links: true,
            ..Hold::default()
        }
    }
}

/// One member's clock under the `clock` kind: skewed by `offset_ms`, then drifting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockDraw {
    pub offset_ms: i64,
    pub drift_ms_per_s: i64,
}

/// The parameters of one swarm run, drawn from its seed and printed with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmParams {
    /// The kinds that are on, each with its weight (1–9).
    pub kinds: BTreeMap<SwarmKind, u32>,
    pub length_ms: (u64, u64),
    /// Between the starts of two episodes; shorter than an episode means overlap.
    pub gap_ms: (u64, u64),
    pub max_overlap: u32,
    /// Share of member faults aimed at the leader.
    pub leader_percent: u32,
    pub latency_ms: (u64, u64),
    pub loss_permille: u32,
    pub clocks: BTreeMap<NodeId, ClockDraw>,
}

impl SwarmParams {
    /// Draws the parameters for `members` from `rng`.
    pub fn draw(rng: &mut ChaCha8Rng, members: &[NodeId]) -> SwarmParams {
        let mut kinds = BTreeMap::new();
        for kind in SwarmKind::ALL {
            if rng.gen_bool(0.5) {
                let weight = rng.gen_range(1..=9);
                if kind.applies_to(members.len()) {
                    kinds.insert(kind, weight);
                }
            }
        }
        if kinds.is_empty() {
            let applicable: Vec<SwarmKind> = SwarmKind::ALL
                .into_iter()
                .filter(|k| k.applies_to(members.len()))
                .collect();
            kinds.insert(applicable[rng.gen_range(0..applicable.len())], 1);
        }
        let length_min = rng.gen_range(300..1_500);
        let gap_min = rng.gen_range(200..1_500);
        let latency_min = rng.gen_range(1..20);
        let clocks = members
            .iter()
            .map(|m| {
                let draw = ClockDraw {
                    offset_ms: rng.gen_range(-2_000..=2_000),
                    drift_ms_per_s: rng.gen_range(-50..=50),
                };
                (*m, draw)
            })
            .collect();
        SwarmParams {
            kinds,
            length_ms: (length_min, length_min + rng.gen_range(500..5_000)),
            gap_ms: (gap_min, gap_min + rng.gen_range(500..4_000)),
            max_overlap: rng.gen_range(1..=3),
            leader_percent: [0, 25, 50, 75, 100][rng.gen_range(0..5)],
            latency_ms: (latency_min, latency_min + rng.gen_range(10..200)),
            loss_permille: rng.gen_range(10..=300),
            clocks,
        }
    }

    /// Turns the `focus` kinds on at the highest weight (those that can act on `members`).
    pub(super) fn focus(&mut self, focus: &[SwarmKind], members: usize) {
        for kind in focus.iter().filter(|k| k.applies_to(members)) {
            self.kinds.insert(*kind, 9);
        }
    }

    pub(super) fn pick_kind(&self, rng: &mut ChaCha8Rng) -> SwarmKind {
        let total: u32 = self.kinds.values().sum();
        let mut roll = rng.gen_range(0..total);
        for (kind, weight) in &self.kinds {
            if roll < *weight {
                return *kind;
            }
            roll -= weight;
        }
        unreachable!("a roll below the total weight picks a kind")
    }
}

impl fmt::Display for SwarmParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kinds: Vec<String> = self
            .kinds
            .iter()
            .map(|(k, w)| format!("{} x{w}", k.name()))
            .collect();
        writeln!(f, "  swarm: {}", kinds.join(", "))?;
        writeln!(
            f,
            "         episodes {}-{} ms, one starting every {}-{} ms, up to {} at once, {}% aimed \
             at the leader",
            self.length_ms.0,
            self.length_ms.1,
            self.gap_ms.0,
            self.gap_ms.1,
            self.max_overlap,
            self.leader_percent
        )?;
        let clocks: Vec<String> = self
            .clocks
            .iter()
            .map(|(n, c)| format!("n{n} {:+}ms {:+}ms/s", c.offset_ms, c.drift_ms_per_s))
            .collect();
        writeln!(
            f,
            "         latency {}-{} ms, loss {}‰, clocks {}",
            self.latency_ms.0,
            self.latency_ms.1,
            self.loss_permille,
            clocks.join(", ")
        )
    }
}
