//! The classic profiles (`default`, `partitions`, `crashes`, `crash-points`): one episode at a
//! time, uniform kinds at random members, fixed rates; the cluster heals between episodes.

use faultline_sim::Fault;
use faultline_store::node::failpoint::{FailAction, FAILPOINTS};
use faultline_store::node::protocol::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{FaultProfile, Schedule, TimedFault};

/// Episodes of 1–4 s separated by 0.5–3 s of calm, each ended before the next starts and before
/// the run's end.
pub(super) fn generate(
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
    let episodes = draw_episodes(seed, profile, members, duration_ms, points_one_in);
    for (n, episode) in (1..).zip(episodes) {
        schedule
            .faults
            .push(TimedFault::new(episode.at_ms, episode.start, n));
        for fault in episode.end {
            let at_ms = episode.at_ms + episode.length_ms;
            schedule.faults.push(TimedFault::new(at_ms, fault, n));
        }
    }
    schedule
}

/// One fault, from `at_ms`, and what ends it `length_ms` later.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Episode {
    at_ms: u64,
    length_ms: u64,
    start: Fault,
    end: Vec<Fault>,
}

/// The episodes of [`generate`], with one episode in `points_one_in` replaced by a
/// crash-point episode (none when `None`).
fn draw_episodes(
    seed: u64,
    profile: FaultProfile,
    members: &[NodeId],
    duration_ms: u64,
    points_one_in: Option<u32>,
) -> Vec<Episode> {
    let mut episodes = Vec::new();
    if matches!(profile, FaultProfile::None | FaultProfile::Swarm) || members.is_empty() {
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
pub(super) fn failpoint_episode(rng: &mut ChaCha8Rng, members: &[NodeId]) -> (Fault, Vec<Fault>) {
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

#[cfg(test)]
mod tests {
    use super::super::Schedule;
    use super::*;
    use faultline_store::node::failpoint::failpoint;

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
                    FailAction::Panic => panic!("seed {seed}: a drawn episode never panics"),
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
}
