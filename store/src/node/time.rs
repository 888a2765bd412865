//! The only clock the node shell reads: madsim's simulated clock.
//!
//! Inside a simulation `madsim::time::Instant` is virtual time, advanced by the simulator and the
//! same for the same seed. Everything in the shell and the harness reads time through [`now`], so
//! that one place says which clock that is.

pub use madsim::time::Instant;

/// The current simulated instant.
pub fn now() -> Instant {
    Instant::now() // deterministic: madsim's virtual clock, not the wall clock
}
