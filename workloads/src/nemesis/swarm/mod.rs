//! The swarm profile (`--faults swarm`): the fault parameters themselves are drawn from the seed,
//! as TigerBeetle's VOPR does, so that across seeds every mix gets its turn: which kinds of fault
//! are on and how often each comes, how long episodes last and how close they follow, how many
//! overlap, how often a fault is aimed at the leader, each member's clock skew and drift, the
//! latency and loss of bad-network episodes.
//!
//! Beside the plain kinds there are targeted episodes: pause the leader until another is elected
//! (etcd 20418), hit the member that just became leader, crash a lagging member as it installs
//! a snapshot, and swizzle-clogging (FoundationDB: cut a random subset's links one member at a
//! time, then heal them in random order).
//!
//! Overlap is bounded so that the cluster can still make progress: at most one episode at a time
//! changes the links, one the network's quality, one the disks' speed, one a clock, and no more
//! than a minority of members are down at once (one, in a cluster of one or two). Every episode
//! ends before the run's end; the liveness phase heals whatever is left.

mod params;

use faultline_sim::Fault;
use faultline_store::node::failpoint::FailAction;
use faultline_store::node::protocol::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use params::Hold;
pub use params::{ClockDraw, SwarmKind, SwarmParams};

use super::{Aim, PointPick, Schedule, TimedFault, Wait};

/// Draws the parameters, then the episodes, from `seed`.
pub(super) fn generate(seed: u64, members: &[NodeId], duration_ms: u64) -> Schedule {
    generate_focused(seed, members, duration_ms, &[])
}

/// As [`generate`], with the `focus` kinds on at the highest weight.
pub(super) fn generate_focused(
    seed: u64,
    members: &[NodeId],
    duration_ms: u64,
    focus: &[SwarmKind],
) -> Schedule {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7377_6172_6d21_0001);
    let mut params = SwarmParams::draw(&mut rng, members);
    params.focus(focus, members.len());
    let mut schedule = Schedule {
        faults: Vec::new(),
        swarm: Some(params.clone()),
    };
    if members.is_empty() {
        return schedule;
    }
    let down_limit = (members.len().saturating_sub(1) / 2).max(1);
    let mut active: Vec<(u64, Hold)> = Vec::new();
    let mut at_ms = rng.gen_range(300..1_500);
    for episode in 1.. {
        let kind = params.pick_kind(&mut rng);
        let length_ms = rng.gen_range(params.length_ms.0..=params.length_ms.1);
        let hold = kind.holds();
        let start = earliest_start(&mut active, at_ms, hold, params.max_overlap, down_limit);
        let draw = Draw {
            params: &params,
            members,
            start,
            length_ms,
            episode,
        };
        let faults = draw.episode(kind, &mut rng);
        let end = faults.iter().map(|f| f.at_ms).max().unwrap_or(start);
        if end >= duration_ms {
            break;
        }
        active.push((end, hold));
        schedule.faults.extend(faults);
        at_ms = start + rng.gen_range(params.gap_ms.0..=params.gap_ms.1);
    }
    // Episodes overlap, so their faults interleave; a stable sort keeps each episode's order.
    schedule.faults.sort_by_key(|f| f.at_ms);
    schedule
}

/// The first time from `at_ms` when an episode holding `hold` fits beside the active ones.
fn earliest_start(
    active: &mut Vec<(u64, Hold)>,
    mut at_ms: u64,
    hold: Hold,
    max_overlap: u32,
    down_limit: usize,
) -> u64 {
    loop {
        active.retain(|(end, _)| *end > at_ms);
        let clash = |h: &Hold| {
            (hold.links && h.links)
                || (hold.quality && h.quality)
                || (hold.disk && h.disk)
                || (hold.clock && h.clock)
        };
        let down = active.iter().filter(|(_, h)| h.down).count();
        let fits = active.len() < max_overlap as usize
            && !active.iter().any(|(_, h)| clash(h))
            && !(hold.down && down >= down_limit);
        if fits {
            return at_ms;
        }
        at_ms = active.iter().map(|(end, _)| *end).min().unwrap_or(at_ms);
    }
}

/// What one episode is drawn with.
struct Draw<'a> {
    params: &'a SwarmParams,
    members: &'a [NodeId],
    start: u64,
    length_ms: u64,
    episode: u32,
}

impl Draw<'_> {
    fn at(&self, offset_ms: u64, fault: Fault) -> TimedFault {
        TimedFault::new(self.start + offset_ms, fault, self.episode)
    }

    fn member(&self, rng: &mut ChaCha8Rng) -> NodeId {
        self.members[rng.gen_range(0..self.members.len())]
    }

    /// A member fault at the start and its end, aimed at the leader in `leader_percent` of
    /// episodes (the end then hits the same member).
    fn on_member(
        &self,
        rng: &mut ChaCha8Rng,
        start: impl Fn(NodeId) -> Fault,
        end: impl Fn(NodeId) -> Fault,
    ) -> Vec<TimedFault> {
        let node = self.member(rng);
        let leader = rng.gen_range(0..100) < self.params.leader_percent;
        let (first, last) = (self.at(0, start(node)), self.at(self.length_ms, end(node)));
        if leader {
            vec![first.aimed(Aim::Leader), last.aimed(Aim::Same(1))]
        } else {
            vec![first, last]
        }
    }

    fn episode(&self, kind: SwarmKind, rng: &mut ChaCha8Rng) -> Vec<TimedFault> {
        let length = self.length_ms;
        match kind {
            SwarmKind::Isolate => {
                let mut faults =
                    self.on_member(rng, |node| Fault::Isolate { node }, |_| Fault::Heal);
                faults[1].aim = None;
                faults
            }
            SwarmKind::Partition => self.partition(rng),
            SwarmKind::CutLink => {
                let (from, to) = (self.member(rng), self.member(rng));
                if from == to {
                    return vec![
                        self.at(0, Fault::Isolate { node: from }),
                        self.at(length, Fault::Heal),
                    ];
                }
                vec![
                    self.at(0, Fault::CutLink { from, to }),
                    self.at(length, Fault::HealLink { from, to }),
                ]
            }
            SwarmKind::Swizzle => self.swizzle(rng),
            SwarmKind::Crash => {
                let torn = rng.gen_bool(0.5);
                self.on_member(
                    rng,
                    |node| Fault::Crash { node, torn },
                    |node| Fault::Restart { node },
                )
            }
            SwarmKind::Pause => self.on_member(
                rng,
                |node| Fault::Pause { node },
                |node| Fault::Resume { node },
            ),
            SwarmKind::LeaderPause => self.leader_pause(rng),
            SwarmKind::NewLeader => self.new_leader(rng),
            SwarmKind::DiskStall => {
                let node = self.member(rng);
                vec![self.at(0, Fault::DiskStall { node, ms: length })]
            }
            SwarmKind::DiskFull => self.on_member(
                rng,
                |node| Fault::DiskFull { node },
                |node| Fault::DiskFree { node },
            ),
            // The member stops on the failed sync; it is started again at the episode's end.
            SwarmKind::SyncError => self.on_member(
                rng,
                |node| Fault::SyncError { node },
                |node| Fault::Restart { node },
            ),
            SwarmKind::Latency => {
                let (min_ms, max_ms) = self.params.latency_ms;
                vec![
                    self.at(0, Fault::Latency { min_ms, max_ms }),
                    self.at(
                        length,
                        Fault::Latency {
                            min_ms: 1,
                            max_ms: 9,
                        },
                    ),
                ]
            }
            SwarmKind::Loss => {
                let permille = self.params.loss_permille;
                vec![
                    self.at(0, Fault::PacketLoss { permille }),
                    self.at(length, Fault::PacketLoss { permille: 0 }),
                ]
            }
            SwarmKind::Clock => self.clock(rng),
            SwarmKind::CrashPoint => {
                let (start, end) = super::classic::failpoint_episode(rng, self.members);
                let leader = rng.gen_range(0..100) < self.params.leader_percent;
                // Armed at one of the points the member has passed by then, so that points off
                // the run's path (a defragment in a run without one) are never armed in vain.
                let pick = PointPick::Reached(rng.gen());
                let mut faults = vec![self.at(0, start).picking(pick)];
                faults.extend(
                    end.into_iter()
                        .map(|f| self.at(length, f).picking(PointPick::Picked)),
                );
                if leader {
                    faults[0].aim = Some(Aim::Leader);
                    faults[1].aim = Some(Aim::Same(1));
                }
                faults
            }
            SwarmKind::SnapshotCrash => self.snapshot_crash(rng),
            SwarmKind::SlowWatchers => {
                let responses = rng.gen_range(1..=4);
                self.on_member(
                    rng,
                    |node| Fault::SlowWatchStreams { node, responses },
                    |node| Fault::SlowWatchStreams { node, responses: 0 },
                )
            }
        }
    }

    fn leader_pause(&self, rng: &mut ChaCha8Rng) -> Vec<TimedFault> {
        let length = self.length_ms;
        // Paused until another member is elected (etcd's election takes about a
        // second). Half the time its links to the other members are cut as well and
        // healed a while after the resume: until it notices it lost its quorum, the
        // resumed member still believes it leads (etcd 20418).
        let node = self.member(rng);
        let (cut, held) = (rng.gen_bool(0.5), rng.gen_range(300..2_000));
        let mut faults = vec![self.at(0, Fault::Pause { node }).aimed(Aim::Leader)];
        if cut {
            faults.push(self.at(0, Fault::Isolate { node }).aimed(Aim::Same(1)));
        }
        faults.push(
            self.at(length + 3_000, Fault::Resume { node })
                .aimed(Aim::Same(1))
                .waiting(Wait::NewLeader),
        );
        if cut {
            faults.push(self.at(length + 3_000 + held, Fault::Heal));
        }
        faults
    }

    fn new_leader(&self, rng: &mut ChaCha8Rng) -> Vec<TimedFault> {
        let length = self.length_ms;
        let (node, held) = (self.member(rng), rng.gen_range(300..2_000));
        vec![
            self.at(0, Fault::Isolate { node }).aimed(Aim::Leader),
            self.at(length + 3_000, Fault::Pause { node })
                .aimed(Aim::Leader)
                .waiting(Wait::NewLeader),
            self.at(length + 3_000, Fault::Heal),
            self.at(length + 3_000 + held, Fault::Resume { node })
                .aimed(Aim::Same(2)),
        ]
    }

    fn partition(&self, rng: &mut ChaCha8Rng) -> Vec<TimedFault> {
        if self.members.len() < 3 {
            let node = self.member(rng);
            return vec![
                self.at(0, Fault::Isolate { node }),
                self.at(self.length_ms, Fault::Heal),
            ];
        }
        let mut shuffled = self.members.to_vec();
        shuffle(&mut shuffled, rng);
        let split = rng.gen_range(1..shuffled.len());
        let (left, right) = shuffled.split_at(split);
        let (mut left, mut right) = (left.to_vec(), right.to_vec());
        left.sort_unstable();
        right.sort_unstable();
        vec![
            self.at(0, Fault::Partition { left, right }),
            self.at(self.length_ms, Fault::Heal),
        ]
    }

    /// Cuts the links of a random subset of members one member at a time, then heals them one
    /// member at a time in another random order; a link stays cut while either end is clogged.
    fn swizzle(&self, rng: &mut ChaCha8Rng) -> Vec<TimedFault> {
        let n = self.members.len();
        if n < 2 {
            return Vec::new();
        }
        let mut clogged = self.members.to_vec();
        shuffle(&mut clogged, rng);
        clogged.truncate(rng.gen_range(1..n));
        let step = (self.length_ms / (2 * clogged.len() as u64)).max(1);
        let mut faults = Vec::new();
        for (i, node) in clogged.iter().enumerate() {
            faults.push(self.at(i as u64 * step, Fault::Isolate { node: *node }));
        }
        let mut order = clogged.clone();
        shuffle(&mut order, rng);
        let mut still: Vec<NodeId> = clogged.clone();
        for (i, node) in order.iter().enumerate() {
            still.retain(|m| m != node);
            let at = self.length_ms / 2 + i as u64 * step;
            for other in self
                .members
                .iter()
                .filter(|m| *m != node && !still.contains(m))
            {
                faults.push(self.at(
                    at,
                    Fault::HealLink {
                        from: *node,
                        to: *other,
                    },
                ));
                faults.push(self.at(
                    at,
                    Fault::HealLink {
                        from: *other,
                        to: *node,
                    },
                ));
            }
        }
        faults
    }

    /// Skews a member's clock by its drawn offset, lets it drift in steps of half a second, and
    /// sets it right at the end.
    fn clock(&self, rng: &mut ChaCha8Rng) -> Vec<TimedFault> {
        let node = self.member(rng);
        let draw = self.params.clocks.get(&node).copied().unwrap_or(ClockDraw {
            offset_ms: 0,
            drift_ms_per_s: 0,
        });
        let mut faults = Vec::new();
        let mut offset = 0;
        while offset < self.length_ms {
            let drifted = draw.drift_ms_per_s * offset as i64 / 1_000;
            let offset_ms = draw.offset_ms + drifted;
            faults.push(self.at(offset, Fault::ClockOffset { node, offset_ms }));
            if draw.drift_ms_per_s == 0 {
                break;
            }
            offset += 500;
        }
        faults.push(self.at(self.length_ms, Fault::ClockOffset { node, offset_ms: 0 }));
        faults
    }

    /// Isolates a member for the episode so that it falls behind, arms a snapshot-install crash
    /// point on whoever is furthest behind just before the heal, and clears it two seconds on.
    fn snapshot_crash(&self, rng: &mut ChaCha8Rng) -> Vec<TimedFault> {
        const POINTS: [&str; 5] = [
            "raftBeforeSaveSnap",
            "raftAfterSaveSnap",
            "raftBeforeApplySnap",
            "applyBeforeOpenSnapshot",
            "raftAfterApplySnap",
        ];
        let node = self.member(rng);
        let point = POINTS[rng.gen_range(0..POINTS.len())].to_string();
        let length = self.length_ms.max(3_000);
        vec![
            self.at(0, Fault::Isolate { node }),
            self.at(
                length - 1,
                Fault::Failpoint {
                    node,
                    point: point.clone(),
                    hit: 1,
                    action: FailAction::Crash,
                },
            )
            .aimed(Aim::Lagging),
            self.at(length, Fault::Heal),
            self.at(length + 2_000, Fault::ClearFailpoint { node, point })
                .aimed(Aim::Same(1)),
        ]
    }
}

fn shuffle(members: &mut [NodeId], rng: &mut ChaCha8Rng) {
    for i in (1..members.len()).rev() {
        members.swap(i, rng.gen_range(0..=i));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn swarm_parameters_and_episodes_are_a_function_of_the_seed_and_vary_across_seeds() {
        let members = [1, 2, 3];
        let mut kinds_seen = BTreeMap::new();
        let mut overlapped = 0;
        for seed in 0..200 {
            let a = generate(seed, &members, 30_000);
            assert_eq!(a, generate(seed, &members, 30_000));
            assert!(a.validate(&members).is_ok(), "seed {seed}: {a}");
            assert!(a.faults.iter().all(|f| f.at_ms < 30_000));
            assert!(a.faults.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
            let params = a
                .swarm
                .clone()
                .expect("a swarm schedule says its parameters");
            for kind in params.kinds.keys() {
                *kinds_seen.entry(*kind).or_insert(0) += 1;
            }
            let episodes = a.episodes();
            let spans: Vec<(u64, u64)> = episodes
                .iter()
                .map(|e| (a.faults[e[0]].at_ms, a.faults[*e.last().unwrap()].at_ms))
                .collect();
            if spans.windows(2).any(|w| w[1].0 < w[0].1) {
                overlapped += 1;
            }
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(Schedule::from_json(&json).unwrap(), a);
        }
        assert_eq!(kinds_seen.len(), SwarmKind::ALL.len(), "{kinds_seen:?}");
        assert!(
            overlapped > 20,
            "only {overlapped} of 200 schedules overlap"
        );
        assert_ne!(generate(1, &members, 30_000), generate(2, &members, 30_000));
    }

    #[test]
    fn never_more_than_a_minority_is_down_and_one_episode_at_a_time_holds_the_links() {
        for seed in 0..200 {
            let schedule = generate(seed, &[1, 2, 3, 4, 5], 30_000);
            let holds: Vec<(u64, u64, Hold)> = schedule
                .episodes()
                .iter()
                .map(|e| {
                    let first = &schedule.faults[e[0]];
                    let last = &schedule.faults[*e.last().unwrap()];
                    (first.at_ms, last.at_ms, kind_of(&schedule, e).holds())
                })
                .collect();
            for (start, _, _) in &holds {
                let live: Vec<&Hold> = holds
                    .iter()
                    .filter(|(s, e, _)| s <= start && start < e)
                    .map(|(_, _, h)| h)
                    .collect();
                assert!(live.iter().filter(|h| h.down).count() <= 2, "seed {seed}");
                assert!(live.iter().filter(|h| h.links).count() <= 1, "seed {seed}");
            }
        }
    }

    /// Which kind an episode was, told from its first fault (enough for the overlap rule).
    fn kind_of(schedule: &Schedule, episode: &[usize]) -> SwarmKind {
        let first = &schedule.faults[episode[0]];
        let aimed_second = episode
            .get(1)
            .map(|i| &schedule.faults[*i])
            .is_some_and(|f| f.wait.is_some() && matches!(f.fault, Fault::Pause { .. }));
        let isolate_second = episode
            .get(1)
            .is_some_and(|i| matches!(schedule.faults[*i].fault, Fault::Isolate { .. }));
        match &first.fault {
            Fault::Pause { .. } if isolate_second => SwarmKind::LeaderPause,
            Fault::SlowWatchStreams { .. } => SwarmKind::SlowWatchers,
            Fault::Isolate { .. } if aimed_second => SwarmKind::NewLeader,
            Fault::Isolate { .. } if episode.len() == 4 => SwarmKind::SnapshotCrash,
            Fault::Isolate { .. } | Fault::Partition { .. } | Fault::CutLink { .. } => {
                SwarmKind::Isolate
            }
            Fault::Crash { .. } | Fault::Pause { .. } | Fault::DiskFull { .. } => SwarmKind::Crash,
            Fault::SyncError { .. } | Fault::Failpoint { .. } => SwarmKind::Crash,
            Fault::Latency { .. } | Fault::PacketLoss { .. } => SwarmKind::Latency,
            Fault::DiskStall { .. } => SwarmKind::DiskStall,
            Fault::ClockOffset { .. } => SwarmKind::Clock,
            other => panic!("an episode does not start with {other}"),
        }
    }
}
