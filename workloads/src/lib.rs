//! Chaos: traffic generators and fault schedules, driven by a run's seed.
//!
//! Workloads talk to the store only through a [`Target`] (in a simulation, the store's client API
//! [`faultline_store::node::client`]) and record what they saw in the history format of
//! `faultline-checkers`. Every choice a
//! workload or the nemesis makes is drawn from a ChaCha generator seeded from the run's seed.

pub mod maintenance;
pub mod nemesis;
pub mod record;
pub mod target;
pub mod traffic;
pub mod watching;

pub use nemesis::{
    FaultProfile, ProcessEpisode, ProcessFault, ProcessFaults, Schedule, TimedFault,
};
pub use record::Recorder;
pub use target::{Clock, Target};
pub use traffic::{WorkloadConfig, WorkloadKind};
pub use watching::WatchRecorder;
