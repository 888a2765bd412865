//! The `faultline` command's library: chaos runs and their verdicts, seed sweeps.

pub mod artifacts;
pub mod check;
pub mod etcd;
pub mod faults;
pub mod history_file;
pub mod profile;
pub mod real;
pub mod run;
pub mod shrink;
pub mod size;
pub mod sweep;
