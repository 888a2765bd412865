//! Real mode's faults: kills and pauses of real etcd processes, one episode at a time, with
//! choices drawn from the run's seed (timing comes from the machine, so this is not a schedule).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::FaultProfile;

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
        let kinds =
            match profile {
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
                FaultProfile::Swarm => return Err(
                    "--faults swarm draws partitions, disk faults and crash points that need the \
                     simulation; against real processes the fault profiles are none, default \
                     (kills and pauses) and crashes (kills)"
                        .to_string(),
                ),
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
