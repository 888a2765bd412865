//! The planted bugs 20418, 20221 and 17529 are found through whole swarm runs: each sweep turns
//! the switch on until a safety checker names the property the bug breaks, then runs the same
//! seeds without it, which must pass. `FAULTLINE_SEED=N` replays one. (17529 is also tested on
//! the store alone, `store/tests/planted_watch_bugs.rs`.)

mod common;

use common::{judge, replay, seed_list as seeds};
use faultline::profile::Profile;
use faultline::run::RunConfig;
use faultline_store::PlantedBugs;
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

/// The run `profile` makes of `seed`, with `bugs` planted.
fn profiled(profile: &str, seed: u64, bugs: PlantedBugs) -> RunConfig {
    let mut config = Profile::parse(profile)
        .expect("a known profile")
        .config(seed);
    config.bugs = bugs;
    config
}

/// The leader-pause profile: swarm faults, every client pinned to one member, so that
/// a paused (and, half the time, cut off) leader that is resumed still has clients to answer.
fn leader_pause(seed: u64, bugs: PlantedBugs) -> RunConfig {
    profiled("leader-pause", seed, bugs)
}

/// Swarm faults, short snapshot intervals so that a member cut off falls behind the log and is
/// sent a snapshot, and several random watchers (some start at future revisions).
fn swarm_snapshots(seed: u64, bugs: PlantedBugs) -> RunConfig {
    RunConfig {
        seed,
        duration_ms: 10_000,
        faults: FaultProfile::Swarm,
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
    found_within("read-index-reused", leader_pause, &["linearizability"], 300);
}

#[test]
fn future_watch_after_restore_etcd_20221_is_found_as_a_watch_violation() {
    found_within(
        "future-watch-after-restore",
        swarm_snapshots,
        &["reliable", "resumable", "ordered", "bookmarkable", "watch"],
        150,
    );
}

/// The slow-watchers profile: swarm faults focused on slowed watch streams, watchers sharing a
/// stream, compaction every 500 ms.
fn slow_watchers(seed: u64, bugs: PlantedBugs) -> RunConfig {
    profiled("slow-watchers", seed, bugs)
}

#[test]
fn victim_watchers_starved_etcd_17529_is_found_as_a_watch_violation() {
    found_within(
        "victim-watchers-starved",
        slow_watchers,
        &["reliable", "resumable", "ordered", "bookmarkable", "watch"],
        200,
    );
}
