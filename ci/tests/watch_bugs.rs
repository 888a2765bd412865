//! Each planted watch bug is found by a seed sweep, the report names the watch property it
//! breaks, and the same seeds pass with the switch off. `FAULTLINE_SEED=N` replays one seed;
//! `FAULTLINE_SWEEP_SEEDS=N` sets how many seeds the sweep of the correct store runs (default 60).

mod common;

use common::{judge, replay, seed_list as seeds, sweep_count};
use faultline::run::RunConfig;
use faultline_store::PlantedBugs;
use faultline_workloads::traffic::OpMix;
use faultline_workloads::{FaultProfile, WorkloadConfig};

/// A watch-heavy run: half the writes are deletes, compaction every second, three random
/// watchers, small snapshots so that partitioned members catch up by installing one.
fn config(seed: u64, bugs: PlantedBugs) -> RunConfig {
    RunConfig {
        seed,
        duration_ms: 8_000,
        faults: FaultProfile::Default,
        snapshot_entries: 100,
        workload: WorkloadConfig {
            clients: 6,
            watchers: 3,
            compact_every_ms: 1_000,
            mix: OpMix {
                put: 20,
                delete: 20,
                ..OpMix::default()
            },
            ..WorkloadConfig::default()
        },
        bugs,
        ..RunConfig::default()
    }
}

/// Sweeps `max_seeds` seeds with `bug` on until the watch checker reports one of `properties`; then runs
/// the same seeds with the bug off, which must pass. Returns the seed that found it.
fn found_within(bug: &str, properties: &[&str], max_seeds: u64) -> u64 {
    let mut bugs = PlantedBugs::default();
    bugs.enable(bug).expect("a known bug");
    let mut found = None;
    for seed in seeds(max_seeds) {
        let verdict = judge(&config(seed, bugs.clone()));
        let report = verdict.render();
        if verdict.safety_violations > 0 {
            // The watch report lists each property on a line of its own: it must say FAIL.
            let named = report.lines().any(|l| {
                let l = l.trim_start();
                properties.iter().any(|p| l.starts_with(p)) && l.contains("FAIL")
            });
            assert!(
                named,
                "seed {seed} with {bug} failed, but not on {properties:?}:\n{report}"
            );
            found = Some(seed);
            break;
        }
    }
    let seed = found.unwrap_or_else(|| panic!("{bug} was not found within {max_seeds} seeds"));
    println!("{bug}: found at seed {seed}, properties {properties:?}");
    for clean in 1..=seed {
        let verdict = judge(&config(clean, PlantedBugs::default()));
        assert!(
            verdict.passed(),
            "seed {clean} fails without {bug}:\n{}",
            verdict.render()
        );
    }
    seed
}

#[test]
fn watch_duplicate_event_etcd_17247_is_found_as_a_unique_violation() {
    found_within("watch-duplicate-event", &["unique"], 20);
}

#[test]
fn watch_progress_overtakes_events_etcd_15220_is_found_as_a_bookmarkable_violation() {
    found_within("watch-progress-overtakes", &["bookmarkable"], 20);
}

#[test]
fn watch_compact_revision_etcd_18089_is_found_as_a_resumable_or_reliable_violation() {
    // A watch resumed at the compact revision breaks resumable; one opened there for the first
    // time misses the delete as a reliable violation. Either is the bug.
    found_within("watch-compact-revision", &["resumable", "reliable"], 40);
}

#[test]
fn watch_snapshot_replay_etcd_15271_is_found_as_an_ordered_or_resumable_violation() {
    // Since members restart from their db file (not an older snapshot), a member more often
    // catches up from the log than by installing a snapshot. A rewound watcher that had
    // received nothing yet gets events below its start: a resumable violation, the same replay.
    found_within("watch-snapshot-replay", &["ordered", "resumable"], 100);
}

#[test]
fn watch_heavy_runs_of_the_correct_store_pass_every_watch_check() {
    for seed in seeds(sweep_count(60)) {
        let config = config(seed, PlantedBugs::default());
        let verdict = judge(&config);
        assert!(
            verdict.passed(),
            "seed {seed} failed:\n{}\nreplay: {}",
            verdict.render(),
            replay(&config)
        );
    }
}
