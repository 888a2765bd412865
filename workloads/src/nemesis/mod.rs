//! The nemesis: fault schedules, drawn from a run's seed or read from a file.
//!
//! A schedule is a list of timed [`Fault`]s: plain data that is printed with the run, saved with
//! its artifacts, edited by hand, replayed as is and shrunk. Faults come in **episodes** (a
//! fault, then what ends it); the faults of one episode share its number, so that shrinking can
//! drop or shorten an episode as a whole. After the schedule the runner heals everything and
//! checks liveness, so any subset of a schedule is a schedule that runs.
//!
//! A fault may be **aimed** instead of naming its member: at whoever leads when it is applied,
//! at the member furthest behind (the one a snapshot goes to), or at the member an earlier fault
//! of its episode hit. A fault may also **wait for a new leader**: it is applied as soon as a
//! member its episode has not hit leads, and at its time at the latest. Aims and waits are
//! resolved by the runner against the live cluster; the trace shows the fault as applied.
//!
//! Rooms: `classic.rs` draws the fixed profiles (one uniform episode at a time), `swarm.rs` the
//! swarm profile (its parameters drawn from the seed, overlapping and targeted episodes),
//! `file.rs` reads a schedule file, `process.rs` real mode's process faults. Nothing here runs a
//! fault.

use std::fmt;

use faultline_sim::{Fault, InvalidFault};
use faultline_store::node::protocol::NodeId;
use serde::{Deserialize, Serialize};

mod classic;
mod file;
mod process;
mod swarm;

pub use process::{ProcessEpisode, ProcessFault, ProcessFaults};
pub use swarm::{SwarmKind, SwarmParams};

/// Which faults a schedule may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultProfile {
    /// No faults at all.
    None,
    /// Partitions of every shape, crashes and restarts, pauses, disk stalls, now and then a
    /// crash point.
    Default,
    /// Partitions only (isolations, splits, one-way cuts).
    Partitions,
    /// Crashes (some with torn writes) and restarts, and now and then a crash point.
    Crashes,
    /// Crash points only: a random point armed on a random member, to crash it (mostly) or
    /// stall it there on a hit of 1 to 5; cleared, and the member restarted if it crashed, at
    /// the episode's end.
    CrashPoints,
    /// Swarm testing: which kinds are on, their weights, lengths, overlap, leader targeting,
    /// clock skew and drift are themselves drawn from the seed (see [`SwarmParams`]).
    Swarm,
}

impl FaultProfile {
    pub const NAMES: &'static [&'static str] = &[
        "none",
        "default",
        "partitions",
        "crashes",
        "crash-points",
        "swarm",
    ];

    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "none" => Ok(FaultProfile::None),
            "default" => Ok(FaultProfile::Default),
            "partitions" => Ok(FaultProfile::Partitions),
            "crashes" => Ok(FaultProfile::Crashes),
            "crash-points" => Ok(FaultProfile::CrashPoints),
            "swarm" => Ok(FaultProfile::Swarm),
            other => Err(format!(
                "unknown fault profile {other:?}; known: {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FaultProfile::None => "none",
            FaultProfile::Default => "default",
            FaultProfile::Partitions => "partitions",
            FaultProfile::Crashes => "crashes",
            FaultProfile::CrashPoints => "crash-points",
            FaultProfile::Swarm => "swarm",
        }
    }
}

/// Whom an aimed fault hits, decided when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aim {
    /// Whoever leads (the fault's own member when no one does).
    Leader,
    /// The running member with the lowest applied index: the one a leader sends a snapshot to.
    Lagging,
    /// The member the `n`-th aimed fault of the same episode hit (1 = the first).
    Same(u32),
}

/// What a fault may wait for before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    /// A member the episode has not hit yet leads (at the fault's time at the latest).
    NewLeader,
}

/// Which crash point a crash-point fault arms, decided when it is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointPick {
    /// The `n mod k`-th, in name order, of the k points its member has passed so far in the run
    /// (the point written, when it has passed none): crash points are armed where the run goes,
    /// so that a point on a rare path (a compaction batch, a snapshot install) gets its turn.
    Reached(u32),
    /// The point an earlier pick of the same episode chose (to clear it).
    Picked,
}

/// One fault at a time since the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedFault {
    pub at_ms: u64,
    #[serde(flatten)]
    pub fault: Fault,
    /// The episode this fault belongs to; faults without one are episodes of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub episode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aim: Option<Aim>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick: Option<PointPick>,
}

impl TimedFault {
    /// A plain fault at `at_ms` of `episode`.
    pub fn new(at_ms: u64, fault: Fault, episode: u32) -> Self {
        TimedFault {
            at_ms,
            fault,
            episode: Some(episode),
            aim: None,
            wait: None,
            pick: None,
        }
    }

    pub fn aimed(mut self, aim: Aim) -> Self {
        self.aim = Some(aim);
        self
    }

    pub fn waiting(mut self, wait: Wait) -> Self {
        self.wait = Some(wait);
        self
    }

    pub fn picking(mut self, pick: PointPick) -> Self {
        self.pick = Some(pick);
        self
    }
}

impl fmt::Display for TimedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.fault)?;
        match self.aim {
            Some(Aim::Leader) => write!(f, " (aimed at the leader)")?,
            Some(Aim::Lagging) => write!(f, " (aimed at the member furthest behind)")?,
            Some(Aim::Same(n)) => write!(f, " (the member of aimed fault {n})")?,
            None => {}
        }
        if self.wait == Some(Wait::NewLeader) {
            write!(f, " (as soon as a new leader is elected)")?;
        }
        match self.pick {
            Some(PointPick::Reached(n)) => {
                write!(f, " (or the point of pick {n} among those passed)")?
            }
            Some(PointPick::Picked) => write!(f, " (the point its episode picked)")?,
            None => {}
        }
        Ok(())
    }
}

/// A fault schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Schedule {
    pub faults: Vec<TimedFault>,
    /// The swarm parameters the schedule was drawn with (informative: replay reads the faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<SwarmParams>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(swarm) = &self.swarm {
            write!(f, "{swarm}")?;
        }
        if self.faults.is_empty() {
            return writeln!(f, "  (no faults)");
        }
        for t in &self.faults {
            let episode = t.episode.map_or(String::new(), |e| format!("#{e}"));
            writeln!(f, "  {:>7.3}s {episode:>4}  {t}", t.at_ms as f64 / 1000.0)?;
        }
        Ok(())
    }
}

impl Schedule {
    /// Draws a schedule for `members` over `duration_ms` from `seed` under `profile`; every
    /// episode ends before the run's end.
    pub fn generate(
        seed: u64,
        profile: FaultProfile,
        members: &[NodeId],
        duration_ms: u64,
    ) -> Schedule {
        match profile {
            FaultProfile::Swarm => swarm::generate(seed, members, duration_ms),
            _ => classic::generate(seed, profile, members, duration_ms),
        }
    }

    /// Draws a swarm schedule whose parameters have the `focus` kinds on at the highest weight,
    /// whatever the seed draws for them (a profile's way to aim swarm at a class of bugs).
    pub fn generate_swarm(
        seed: u64,
        members: &[NodeId],
        duration_ms: u64,
        focus: &[SwarmKind],
    ) -> Schedule {
        swarm::generate_focused(seed, members, duration_ms, focus)
    }

    /// Checks that every fault can be carried out on a cluster of `members` (see
    /// [`Fault::validate`]) and that every aim and wait makes sense: a schedule from a file may
    /// name a member or a crash point that is not there. The error names the entry (1-based).
    pub fn validate(&self, members: &[NodeId]) -> Result<(), InvalidFault> {
        file::validate(self, members)
    }

    /// The episodes, each as the indices of its faults in order.
    pub fn episodes(&self) -> Vec<Vec<usize>> {
        let mut by_episode: std::collections::BTreeMap<(u32, usize), Vec<usize>> =
            Default::default();
        for (i, t) in self.faults.iter().enumerate() {
            // A fault without an episode is one of its own, keyed apart from numbered ones.
            let key = t.episode.map_or((u32::MAX, i), |e| (e, 0));
            by_episode.entry(key).or_default().push(i);
        }
        by_episode.into_values().collect()
    }

    /// This schedule with only the faults at `keep` (indices, any order).
    pub fn keep_faults(&self, keep: &[usize]) -> Schedule {
        let mut keep = keep.to_vec();
        keep.sort_unstable();
        keep.dedup();
        Schedule {
            faults: keep
                .into_iter()
                .filter_map(|i| self.faults.get(i).cloned())
                .collect(),
            swarm: self.swarm.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_a_function_of_its_seed_and_ends_its_faults_in_time() {
        let a = Schedule::generate(7, FaultProfile::Default, &[1, 2, 3], 30_000);
        assert_eq!(
            a,
            Schedule::generate(7, FaultProfile::Default, &[1, 2, 3], 30_000)
        );
        assert_ne!(
            a,
            Schedule::generate(8, FaultProfile::Default, &[1, 2, 3], 30_000)
        );
        assert!(a.faults.len() >= 4, "{a}");
        assert!(a.faults.iter().all(|t| t.at_ms < 30_000));
        assert!(a.faults.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), a);
        assert!(
            Schedule::generate(7, FaultProfile::None, &[1, 2, 3], 30_000)
                .faults
                .is_empty()
        );
    }

    #[test]
    fn a_schedule_naming_an_unknown_point_or_member_does_not_pass() {
        let json = r#"{"faults":[{"at_ms":100,"fault":"failpoint","node":2,"point":"raftAfterSav","hit":1,"action":"crash"}]}"#;
        let error = serde_json::from_str::<Schedule>(json)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no crash point is named \"raftAfterSav\""),
            "{error}"
        );
        let json = r#"{"faults":[{"at_ms":100,"fault":"failpoint","node":4,"point":"raftAfterSave","hit":3,"action":"sleep","ms":500}]}"#;
        let schedule: Schedule = serde_json::from_str(json).unwrap();
        assert_eq!(
            schedule.faults[0].fault.to_string(),
            "failpoint n4 raftAfterSave sleep 500ms on hit 3"
        );
        let error = schedule.validate(&[1, 2, 3]).unwrap_err().to_string();
        assert!(error.contains("no member n4"), "{error}");
        assert!(schedule.validate(&[1, 2, 3, 4, 5]).is_ok());
    }
}
