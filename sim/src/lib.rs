//! The deterministic world: the simulated disk, the cluster harness and the faults it applies.
//!
//! Everything here runs inside a madsim runtime, whose seed fixes network delivery, time,
//! scheduling and every random draw: the same seed gives the same run. Nothing here reads the wall
//! clock, spawns OS threads inside a simulation, or iterates an unordered collection.

pub mod cluster;
pub mod convergence;
pub mod disk;
pub mod fault;
pub mod panics;

pub use cluster::{simulate, Cluster, ClusterConfig, FailpointArming, MemberPanic, MemberStatus};

/// The simulation's random number generator: madsim's per-runtime generator, seeded from the
/// run's seed (not `rand::thread_rng`, which would read real entropy). Everything the world
/// draws by chance (disk latencies, torn-write lengths) comes from here.
pub fn sim_rng() -> madsim::rand::GlobalRng {
    madsim::rand::thread_rng() // deterministic: madsim's generator, seeded from the run
}
pub use fault::{Fault, InvalidFault};

#[cfg(test)]
mod tests {
    /// raft-rs's election timeout comes from rand's thread_rng; with getrandom routed through
    /// madsim, the same seed gives the same timeouts.
    #[test]
    fn raft_election_timeouts_repeat_for_a_seed() {
        fn timeouts(seed: u64) -> Vec<usize> {
            let run = move || {
                let rt =
                    madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
                rt.block_on(async {
                    let logger = slog::Logger::root(slog::Discard, slog::o!());
                    (1..=5u64)
                        .map(|id| {
                            let mut config = raft::Config::new(id);
                            config.election_tick = 10;
                            config.heartbeat_tick = 1;
                            let storage = raft::storage::MemStorage::new_with_conf_state((
                                vec![1, 2, 3, 4, 5],
                                vec![],
                            ));
                            let node = raft::RawNode::new(&config, storage, &logger).unwrap();
                            node.raft.randomized_election_timeout()
                        })
                        .collect()
                })
            };
            // Outside any simulation: each run needs a thread of its own (see `simulate`).
            let thread = std::thread::spawn(run); // deterministic: a test thread hosting its own seeded runtime
            thread.join().unwrap()
        }
        let a = timeouts(7);
        assert_eq!(a, timeouts(7));
        assert_ne!(a, timeouts(8));
    }
}
