//! Nemesis v1: a fault schedule drawn from the run's seed.
//!
//! A schedule is a list of timed [`Fault`] values: plain data that is printed with the run, saved
//! with its artifacts and can be replayed as is. Faults come in episodes (a fault, then its end
//! after a while); episodes do not overlap, so the cluster always heals between them. After the
//! schedule the runner heals everything and checks liveness.
//!
//! Crash-point episodes arm one of the shell's named crash points
//! ([`FAILPOINTS`]) on a member and clear it at the episode's end; clearing restarts the member
//! if the point crashed it, and leaves it running otherwise. They are all the `crash-points`
//! profile draws, and one episode in eight of `default` (one in four of `crashes`), decided by a
//! generator of their own so that the other episodes of a seed stay what they were.

use std::fmt;

use faultline_sim::{Fault, InvalidFault};
use faultline_store::node::failpoint::{FailAction, FAILPOINTS};
use faultline_store::node::protocol::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

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
}

impl FaultProfile {
    pub const NAMES: &'static [&'static str] =
        &["none", "default", "partitions", "crashes", "crash-points"];

    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "none" => Ok(FaultProfile::None),
            "default" => Ok(FaultProfile::Default),
            "partitions" => Ok(FaultProfile::Partitions),
            "crashes" => Ok(FaultProfile::Crashes),
            "crash-points" => Ok(FaultProfile::CrashPoints),
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
        }
    }
}

/// One fault at a time since the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimedFault {
    pub at_ms: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

/// A fault schedule.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Schedule {
    pub faults: Vec<TimedFault>,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.faults.is_empty() {
            return writeln!(f, "  (no faults)");
        }
        for t in &self.faults {
            writeln!(f, "  {:>7.3}s  {}", t.at_ms as f64 / 1000.0, t.fault)?;
        }
        Ok(())
    }
}

impl Schedule {
    /// Draws a schedule for `members` over `duration_ms` from `seed`: episodes of 1–4 s separated
    /// by 0.5–3 s of calm, each ended before the next starts and before the run's end.
    pub fn generate(
        seed: u64,
        profile: FaultProfile,
        members: &[NodeId],
        duration_ms: u64,
    ) -> Schedule {
        let points_one_in = match profile {
            FaultProfile::Default => Some(8),
            FaultProfile::Crashes => Some(4),
            _ => None,
        };
        let mut schedule = Schedule::default();
        for episode in draw_episodes(seed, profile, members, duration_ms, points_one_in) {
            schedule.faults.push(TimedFault {
                at_ms: episode.at_ms,
                fault: episode.start,
            });
            for fault in episode.end {
                schedule.faults.push(TimedFault {
                    at_ms: episode.at_ms + episode.length_ms,
                    fault,
                });
            }
        }
        schedule
    }

    /// Checks that every fault can be carried out on a cluster of `members` (see
    /// [`Fault::validate`]): a schedule from a file may name a member or a crash point that is
    /// not there.
    pub fn validate(&self, members: &[NodeId]) -> Result<(), InvalidFault> {
        self.faults
            .iter()
            .try_for_each(|t| t.fault.validate(members))
    }
}

/// One fault, from `at_ms`, and what ends it `length_ms` later.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Episode {
    at_ms: u64,
    length_ms: u64,
    start: Fault,
    end: Vec<Fault>,
}

/// The episodes of [`Schedule::generate`], with one episode in `points_one_in` replaced by a
/// crash-point episode (none when `None`).
fn draw_episodes(
    seed: u64,
    profile: FaultProfile,
    members: &[NodeId],
    duration_ms: u64,
    points_one_in: Option<u32>,
) -> Vec<Episode> {
    let mut episodes = Vec::new();
    if profile == FaultProfile::None || members.is_empty() {
        return episodes;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_6d65_7369_7321);
    // Crash points mixed into other profiles draw from here, so that the main generator's
    // sequence (and every other episode of the seed) is the same as without them.
    let mut points_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6661_696c_706f_696e);
    let mut at_ms = rng.gen_range(500..2_000);
    loop {
        let length_ms = rng.gen_range(1_000..4_000);
        if at_ms + length_ms >= duration_ms {
            break;
        }
        let (mut start, mut end) = match profile {
            FaultProfile::CrashPoints => failpoint_episode(&mut rng, members),
            _ => episode(&mut rng, profile, members),
        };
        if points_one_in.is_some_and(|n| points_rng.gen_ratio(1, n)) {
            (start, end) = failpoint_episode(&mut points_rng, members);
        }
        episodes.push(Episode {
            at_ms,
            length_ms,
            start,
            end,
        });
        at_ms += length_ms + rng.gen_range(500..3_000);
    }
    episodes
}

/// Arms a crash point drawn from every point the shell has on a random member, for a hit of 1
/// to 5: crash there four times in five, else stall there for 100 ms to 1 s. The episode's end
/// clears it (restarting the member if it crashed).
fn failpoint_episode(rng: &mut ChaCha8Rng, members: &[NodeId]) -> (Fault, Vec<Fault>) {
    let node = members[rng.gen_range(0..members.len())];
    let point = FAILPOINTS[rng.gen_range(0..FAILPOINTS.len())]
        .name
        .to_string();
    let hit = rng.gen_range(1..=5);
    let action = if rng.gen_bool(0.8) {
        FailAction::Crash
    } else {
        FailAction::Sleep {
            ms: rng.gen_range(100..=1_000),
        }
    };
    (
        Fault::Failpoint {
            node,
            point: point.clone(),
            hit,
            action,
        },
        vec![Fault::ClearFailpoint { node, point }],
    )
}

/// One fault and what ends it.
fn episode(rng: &mut ChaCha8Rng, profile: FaultProfile, members: &[NodeId]) -> (Fault, Vec<Fault>) {
    let node = members[rng.gen_range(0..members.len())];
    let kind = match profile {
        FaultProfile::Partitions => rng.gen_range(0..3),
        FaultProfile::Crashes => 3,
        _ => rng.gen_range(0..6),
    };
    match kind {
        0 => (Fault::Isolate { node }, vec![Fault::Heal]),
        1 if members.len() > 2 => {
            let mut shuffled = members.to_vec();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, rng.gen_range(0..=i));
            }
            let split = rng.gen_range(1..shuffled.len());
            let (left, right) = shuffled.split_at(split);
            let mut left = left.to_vec();
            let mut right = right.to_vec();
            left.sort_unstable();
            right.sort_unstable();
            (Fault::Partition { left, right }, vec![Fault::Heal])
        }
        1 | 2 => {
            let to = members[rng.gen_range(0..members.len())];
            if to == node {
                (Fault::Isolate { node }, vec![Fault::Heal])
            } else {
                (Fault::CutLink { from: node, to }, vec![Fault::Heal])
            }
        }
        3 => (
            Fault::Crash {
                node,
                torn: rng.gen_bool(0.5),
            },
            vec![Fault::Restart { node }],
        ),
        4 => (Fault::Pause { node }, vec![Fault::Resume { node }]),
        _ => (
            Fault::DiskStall {
                node,
                ms: rng.gen_range(500..3_000),
            },
            Vec::new(),
        ),
    }
}

/// A fault on a real process: what real mode can do to an etcd member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessFault {
    /// SIGKILL, then a restart on the same data directory when the episode ends.
    Kill,
    /// SIGSTOP, then SIGCONT when the episode ends.
    Pause,
}

/// One episode of process faults: calm, then the fault for a while, then its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEpisode {
    /// Calm before the fault.
    pub calm_ms: u64,
    pub fault: ProcessFault,
    /// Hit whichever member leads when the episode starts, if one is known.
    pub leader: bool,
    /// The member (by index) to hit otherwise.
    pub member: usize,
    /// How long the fault lasts.
    pub length_ms: u64,
}

/// The choices behind real-mode faults, drawn from the run's seed. Against real processes the
/// timing cannot be fixed in advance (a restarted member takes as long as it takes to answer), so
/// this is not a timed schedule but a sequence of episodes the runner carries out one after the
/// other, each after the previous one has ended: never more than one member is down.
#[derive(Debug, Clone)]
pub struct ProcessFaults {
    rng: ChaCha8Rng,
    kinds: Vec<ProcessFault>,
    members: usize,
    /// The first episodes' faults: one of each kind, in an order drawn from the seed, so that
    /// even a short run sees every kind.
    opening: Vec<ProcessFault>,
}

impl ProcessFaults {
    /// The episodes for `members` processes under `profile`: `default` kills and pauses,
    /// `crashes` only kills, `none` nothing. Partitions need the simulated network and are
    /// refused.
    pub fn new(seed: u64, profile: FaultProfile, members: usize) -> Result<Self, String> {
        let kinds = match profile {
            FaultProfile::None => Vec::new(),
            FaultProfile::Default => vec![ProcessFault::Kill, ProcessFault::Pause],
            FaultProfile::Crashes => vec![ProcessFault::Kill],
            FaultProfile::Partitions => {
                return Err(
                    "--faults partitions needs the simulated network; against real processes \
                     the fault profiles are none, default (kills and pauses) and crashes (kills)"
                        .to_string(),
                )
            }
            FaultProfile::CrashPoints => {
                return Err(
                    "--faults crash-points arms the reference store's crash points; against \
                     real processes the fault profiles are none, default (kills and pauses) and \
                     crashes (kills)"
                        .to_string(),
                )
            }
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7072_6f63_6573_7321);
        let mut opening = kinds.clone();
        if opening.len() == 2 && rng.gen_bool(0.5) {
            opening.swap(0, 1);
        }
        opening.reverse();
        Ok(ProcessFaults {
            rng,
            kinds,
            members,
            opening,
        })
    }

    /// The next episode, or `None` when the profile has no faults.
    pub fn next_episode(&mut self) -> Option<ProcessEpisode> {
        if self.kinds.is_empty() || self.members == 0 {
            return None;
        }
        let calm_ms = self.rng.gen_range(500..1_500);
        let fault = match self.opening.pop() {
            Some(fault) => fault,
            None => self.kinds[self.rng.gen_range(0..self.kinds.len())],
        };
        // Half of the episodes hit the leader: losing it is what exercises elections, forwarded
        // proposals in flight and reads served by a deposed leader.
        let leader = self.rng.gen_bool(0.5);
        let member = self.rng.gen_range(0..self.members);
        let length_ms = self.rng.gen_range(1_000..2_500);
        Some(ProcessEpisode {
            calm_ms,
            fault,
            leader,
            member,
            length_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_store::node::failpoint::failpoint;

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

    fn is_point_episode(fault: &Fault) -> bool {
        matches!(
            fault,
            Fault::Failpoint { .. } | Fault::ClearFailpoint { .. }
        )
    }

    #[test]
    fn crash_points_arm_known_points_on_members_and_clear_each_at_its_episodes_end() {
        let members = [1, 2, 3];
        let mut actions = (0, 0);
        for seed in 0..50 {
            let schedule = Schedule::generate(seed, FaultProfile::CrashPoints, &members, 30_000);
            assert_eq!(
                schedule,
                Schedule::generate(seed, FaultProfile::CrashPoints, &members, 30_000)
            );
            assert!(schedule.validate(&members).is_ok());
            assert!(schedule.faults.len() >= 4 && schedule.faults.len() % 2 == 0);
            for pair in schedule.faults.chunks(2) {
                let (
                    Fault::Failpoint {
                        node,
                        point,
                        hit,
                        action,
                    },
                    Fault::ClearFailpoint {
                        node: cleared,
                        point: cleared_point,
                    },
                ) = (&pair[0].fault, &pair[1].fault)
                else {
                    panic!("seed {seed}: not a crash-point episode: {schedule}");
                };
                assert_eq!((node, point), (cleared, cleared_point));
                assert!(pair[0].at_ms < pair[1].at_ms);
                assert!((1..=5).contains(hit));
                assert!(failpoint(point).is_some() && members.contains(node));
                match action {
                    FailAction::Crash => actions.0 += 1,
                    FailAction::Sleep { ms } => {
                        assert!((100..=1_000).contains(ms));
                        actions.1 += 1;
                    }
                }
            }
            let json = serde_json::to_string(&schedule).unwrap();
            assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), schedule);
        }
        assert!(actions.0 > 3 * actions.1 && actions.1 > 0, "{actions:?}");
    }

    #[test]
    fn crash_points_in_default_and_crashes_replace_a_few_episodes_and_leave_the_others_alone() {
        for (profile, one_in) in [(FaultProfile::Default, 8), (FaultProfile::Crashes, 4)] {
            let (mut episodes, mut replaced) = (0, 0);
            for seed in 0..200 {
                let mixed = draw_episodes(seed, profile, &[1, 2, 3], 30_000, Some(one_in));
                let plain = draw_episodes(seed, profile, &[1, 2, 3], 30_000, None);
                assert!(plain.iter().all(|e| !is_point_episode(&e.start)));
                assert_eq!(mixed.len(), plain.len());
                for (m, p) in mixed.iter().zip(&plain) {
                    assert_eq!((m.at_ms, m.length_ms), (p.at_ms, p.length_ms));
                    if m != p {
                        assert!(is_point_episode(&m.start), "{m:?}");
                        replaced += 1;
                    }
                }
                episodes += plain.len();
            }
            // About one in `one_in`.
            let expected = episodes / one_in as usize;
            assert!(
                replaced > expected / 2 && replaced < expected * 2,
                "{profile:?}: {replaced} of {episodes}"
            );
        }
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

    #[test]
    fn process_faults_are_a_function_of_the_seed_and_open_with_every_kind() {
        let episodes = |seed| {
            let mut faults = ProcessFaults::new(seed, FaultProfile::Default, 3).unwrap();
            (0..20)
                .map(|_| faults.next_episode().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(episodes(1), episodes(1));
        assert_ne!(episodes(1), episodes(2));
        for seed in 0..50 {
            let e = episodes(seed);
            assert_ne!(e[0].fault, e[1].fault, "seed {seed}");
            assert!(e.iter().all(|e| e.member < 3));
        }
        let mut none = ProcessFaults::new(1, FaultProfile::None, 3).unwrap();
        assert_eq!(none.next_episode(), None);
        let mut crashes = ProcessFaults::new(1, FaultProfile::Crashes, 1).unwrap();
        assert!((0..10).all(|_| crashes.next_episode().unwrap().fault == ProcessFault::Kill));
        assert!(ProcessFaults::new(1, FaultProfile::Partitions, 3).is_err());
        assert!(ProcessFaults::new(1, FaultProfile::CrashPoints, 3).is_err());
    }
}
