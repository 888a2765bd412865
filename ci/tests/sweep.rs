//! Seed sweeps of the whole pipeline: simulate, record, check.
//!
//! `FAULTLINE_SWEEP_SEEDS` sets how many seeds the sweep runs (default 200); `FAULTLINE_SEED=N`
//! replays that one seed. A failure prints the seed and the commands that replay it.

mod common;

use common::judge;
use faultline::run::RunConfig;
use faultline_store::PlantedBugs;
use faultline_workloads::{FaultProfile, WorkloadConfig};

fn seeds(default_count: u64) -> Vec<u64> {
    common::seed_list(common::sweep_count(default_count))
}

/// A sweep run: 8 simulated seconds of etcd-kv traffic under the default faults.
fn config(seed: u64, bugs: PlantedBugs) -> RunConfig {
    RunConfig {
        seed,
        duration_ms: 8_000,
        faults: FaultProfile::Default,
        workload: WorkloadConfig {
            clients: 6,
            ..WorkloadConfig::default()
        },
        bugs,
        ..RunConfig::default()
    }
}

#[test]
fn a_sweep_of_the_correct_store_finds_no_violation() {
    let mut checked = 0;
    for seed in seeds(200) {
        let config = config(seed, PlantedBugs::default());
        let verdict = judge(&config);
        assert!(
            verdict.passed(),
            "seed {seed} failed:\n{}\nreplay: FAULTLINE_SEED={seed} cargo test -p faultline --test sweep\n    or: cargo run --release -p faultline -- {}",
            verdict.render(),
            config.command().trim_start_matches("faultline ")
        );
        checked += 1;
    }
    assert!(checked > 0);
}

#[test]
fn a_sweep_of_kubernetes_traffic_with_crashes_and_partitions_finds_no_violation() {
    for seed in seeds(50) {
        let mut config = config(seed, PlantedBugs::default());
        config.workload.kind = faultline_workloads::WorkloadKind::Kubernetes;
        let verdict = judge(&config);
        assert!(
            verdict.passed(),
            "seed {seed} failed:\n{}\nreplay: cargo run --release -p faultline -- {}",
            verdict.render(),
            config.command().trim_start_matches("faultline ")
        );
    }
}

#[test]
fn a_sweep_of_every_crash_point_and_every_profile_of_the_correct_store_finds_no_violation() {
    for seed in seeds(40) {
        let mut config = config(seed, PlantedBugs::default());
        config.faults = FaultProfile::CrashPoints;
        let verdict = judge(&config);
        assert!(
            verdict.passed(),
            "seed {seed} failed:\n{}\nreplay: cargo run --release -p faultline -- {}",
            verdict.render(),
            config.command().trim_start_matches("faultline ")
        );
    }
    for profile in faultline::profile::PROFILES {
        for seed in seeds(10) {
            let config = profile.config(seed);
            let verdict = judge(&config);
            assert!(
                verdict.passed(),
                "seed {seed} of {} failed:\n{}\nreplay: cargo run --release -p faultline -- {}",
                profile.name,
                verdict.render(),
                config.command().trim_start_matches("faultline ")
            );
        }
    }
}

/// The planted stale-read bug (linearizable reads served from local state) must be found within
/// this many seeds, with the linearizability checker naming it; the same seeds pass without it.
const STALE_READ_SEEDS: u64 = 10;

#[test]
fn the_planted_stale_read_bug_is_found_by_a_sweep_and_the_same_seeds_pass_without_it() {
    let bugs = PlantedBugs {
        stale_reads: true,
        ..PlantedBugs::default()
    };
    let mut found = None;
    for seed in seeds(STALE_READ_SEEDS) {
        let verdict = judge(&config(seed, bugs.clone()));
        if verdict.safety_violations > 0 {
            let report = verdict.render();
            // The checker names the stale read: the operations it cannot linearize include a get.
            let mut lines = report
                .lines()
                .skip_while(|l| !l.contains("cannot all have taken effect"));
            let core = lines.nth(1).unwrap_or_default();
            assert!(
                report.contains("linearizability        VIOLATION") && core.contains(" get "),
                "the report does not name a stale read:\n{report}"
            );
            found = Some((seed, report));
            break;
        }
    }
    let (seed, report) = found.unwrap_or_else(|| {
        panic!("the stale-read bug was not found within {STALE_READ_SEEDS} seeds")
    });
    println!("stale reads found at seed {seed}:\n{report}");
    for seed in 1..=seed {
        let verdict = judge(&config(seed, PlantedBugs::default()));
        assert!(
            verdict.passed(),
            "seed {seed} fails without the bug:\n{}",
            verdict.render()
        );
    }
}
