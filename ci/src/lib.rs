//! The `faultline` command's library: chaos runs and their verdicts, seed sweeps.

pub mod check;
pub mod run;
