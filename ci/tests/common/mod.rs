//! What the sweep tests share: which seeds to run, and how one run is judged.

#![allow(dead_code)]

use std::process::Command;

use faultline::check::{judge_run, CheckOptions, RunVerdict};
use faultline::run::{simulate_run, RunConfig};

/// Seeds 1..=count, or only `FAULTLINE_SEED` when it is set (to replay one).
pub fn seed_list(count: u64) -> Vec<u64> {
    match std::env::var("FAULTLINE_SEED") {
        Ok(seed) => vec![seed.trim().parse().expect("FAULTLINE_SEED is a number")],
        Err(_) => (1..=count).collect(),
    }
}

/// How many seeds a sweep runs: `FAULTLINE_SWEEP_SEEDS`, else `default`.
pub fn sweep_count(default: u64) -> u64 {
    std::env::var("FAULTLINE_SWEEP_SEEDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(default)
}

/// The command that replays `config` with the binary.
pub fn replay(config: &RunConfig) -> String {
    format!(
        "cargo run --release -p faultline -- {}",
        config.command().trim_start_matches("faultline ")
    )
}

/// Simulates and judges one run; a crash of the run fails the test with the replay command.
pub fn judge(config: &RunConfig) -> RunVerdict {
    let output = simulate_run(config).unwrap_or_else(|panic| {
        panic!(
            "seed {} crashed: {panic}\nreplay: {}",
            config.seed,
            replay(config)
        )
    });
    let options = CheckOptions {
        timeout_ms: 30_000,
        ..config.check_options()
    };
    judge_run(config, &output, &options)
}

/// Runs the `faultline` binary: its exit code, stdout and stderr.
pub fn faultline(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(args)
        .output()
        .expect("faultline runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
