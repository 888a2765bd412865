//! The planted bugs 20418, 17529 and 20221 are found through whole runs of existing fault
//! profiles: each sweep turns the switch on until a safety checker names the property the bug
//! breaks, then runs the same seeds without it, which must pass. `FAULTLINE_SEED=N` replays one.

mod common;

use common::{judge, replay, seed_list as seeds};
use faultline::run::RunConfig;
use faultline_store::PlantedBugs;
use faultline_workloads::traffic::OpMix;
use faultline_workloads::{FaultProfile, WorkloadConfig};

/// Sweeps up to `max_seeds` seeds of `config` with `bug` on until a safety checker fails on a
/// report line starting with one of `properties`; then the same seeds must pass without it.
fn found_within(
    bug: &str,
    config: fn(u64, PlantedBugs) -> RunConfig,
    properties: &[&str],
    max_seeds: u64,
) -> u64 {
    let mut bugs = PlantedBugs::default();
    bugs.enable(bug).expect("a known bug");
    let mut found = None;
    for seed in seeds(max_seeds) {
        let run = config(seed, bugs.clone());
        let verdict = judge(&run);
        if verdict.safety_violations > 0 {
            let report = verdict.render();
            let named = report.lines().any(|l| {
                let l = l.trim_start();
                properties.iter().any(|p| l.starts_with(p))
                    && (l.contains("VIOLATION") || l.contains("FAIL"))
            });
            assert!(
                named,
                "seed {seed} with {bug} failed, but not on {properties:?}:\n{report}\nreplay: {}",
                replay(&run)
            );
            found = Some(seed);
            break;
        }
    }
    let seed = found.unwrap_or_else(|| panic!("{bug} was not found within {max_seeds} seeds"));
    println!("{bug}: found at seed {seed}");
    for clean in 1..=seed {
        let run = config(clean, PlantedBugs::default());
        let verdict = judge(&run);
        assert!(
            verdict.passed(),
            "seed {clean} fails without {bug}:\n{}\nreplay: {}",
            verdict.render(),
            replay(&run)
        );
    }
    seed
}

/// The default mix under every kind of fault: the pauses among them hit the leader a third of
/// the time, long enough (1 to 4 s) for another member to be elected.
fn pauses(seed: u64, bugs: PlantedBugs) -> RunConfig {
    RunConfig {
        seed,
        duration_ms: 10_000,
        faults: FaultProfile::Default,
        bugs,
        ..RunConfig::default()
    }
}

/// Watch-heavy traffic with frequent compaction and many watchers, so that slow streams have
/// watchers whose next revision is compacted while they wait.
fn many_watchers(seed: u64, bugs: PlantedBugs) -> RunConfig {
    RunConfig {
        seed,
        duration_ms: 8_000,
        faults: FaultProfile::Default,
        snapshot_entries: 100,
        workload: WorkloadConfig {
            clients: 6,
            watchers: 8,
            compact_every_ms: 500,
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

/// Partitions only, short snapshot intervals so that a member cut off falls behind the log and
/// is sent a snapshot, and several random watchers (some start at future revisions).
fn partitions_and_snapshots(seed: u64, bugs: PlantedBugs) -> RunConfig {
    RunConfig {
        seed,
        duration_ms: 10_000,
        faults: FaultProfile::Partitions,
        snapshot_entries: 50,
        workload: WorkloadConfig {
            watchers: 4,
            ..WorkloadConfig::default()
        },
        bugs,
        ..RunConfig::default()
    }
}

#[test]
fn read_index_reused_etcd_20418_is_found_as_a_stale_read() {
    found_within("read-index-reused", pauses, &["linearizability"], 60);
}

#[test]
fn victim_watchers_starved_etcd_17529_is_found_as_a_reliable_violation() {
    found_within(
        "victim-watchers-starved",
        many_watchers,
        &["reliable", "watch"],
        60,
    );
}

#[test]
fn future_watch_after_restore_etcd_20221_is_found_as_a_watch_violation() {
    found_within(
        "future-watch-after-restore",
        partitions_and_snapshots,
        &["reliable", "resumable", "ordered", "bookmarkable", "watch"],
        100,
    );
}
