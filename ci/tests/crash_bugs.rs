//! Each planted crash-recovery bug of the catalog is found from random seeds of its profile,
//! the report names the property it breaks, and the same seeds pass with the switch off.
//! `FAULTLINE_SEED=N` replays one seed.

mod common;

use common::{judge, seed_list as seeds};
use faultline::profile::Profile;
use faultline_store::PlantedBugs;

/// Sweeps up to `max_seeds` seeds of `profile` with `bug` on until a safety checker fails on a
/// line starting with one of `checkers`; then the same seeds must pass with the bug off.
fn found_within(profile: &str, bug: &str, checkers: &[&str], max_seeds: u64) -> u64 {
    let profile = Profile::parse(profile).expect("a known profile");
    let mut bugs = PlantedBugs::default();
    bugs.enable(bug).expect("a known bug");
    let mut found = None;
    for seed in seeds(max_seeds) {
        let mut config = profile.config(seed);
        config.bugs = bugs.clone();
        let verdict = judge(&config);
        if verdict.safety_violations > 0 {
            let report = verdict.render();
            let named = report.lines().any(|l| {
                let l = l.trim_start();
                checkers.iter().any(|c| l.starts_with(c))
                    && (l.contains("VIOLATION") || l.contains("FAIL"))
            });
            assert!(
                named,
                "seed {seed} with {bug} failed, but not on {checkers:?}:\n{report}"
            );
            found = Some(seed);
            break;
        }
    }
    let seed = found.unwrap_or_else(|| panic!("{bug} was not found within {max_seeds} seeds"));
    println!("{bug}: found at seed {seed}");
    for clean in 1..=seed {
        let verdict = judge(&profile.config(clean));
        assert!(
            verdict.passed(),
            "seed {clean} of {} fails without {bug}:\n{}",
            profile.name,
            verdict.render()
        );
    }
    seed
}

#[test]
fn consistent_index_not_atomic_etcd_13766_drifts_the_revisions_of_a_restarted_member() {
    found_within(
        "snapshot-churn",
        "consistent-index-not-atomic",
        &[
            "replica convergence",
            "linearizability",
            "db files",
            "watch ground truth",
        ],
        120,
    );
}

#[test]
fn apply_before_wal_sync_etcd_14370_loses_an_acknowledged_write() {
    found_within(
        "lone-member",
        "apply-before-wal-sync",
        &["linearizability", "watch"],
        30,
    );
}

#[test]
fn defrag_drops_consistent_index_etcd_14685_reapplies_entries_after_a_crash() {
    found_within(
        "defrag",
        "defrag-drops-consistent-index",
        &["linearizability", "db files"],
        30,
    );
}

#[test]
fn compaction_revision_backwards_etcd_17780_moves_the_revision_back_after_a_crash() {
    found_within(
        "compaction",
        "compaction-revision-backwards",
        &["linearizability", "db files"],
        30,
    );
}

#[test]
fn resumed_compaction_drops_delete_etcd_19179_loses_the_delete_at_the_compact_revision() {
    found_within(
        "compaction",
        "resumed-compaction-drops-delete",
        &["resumable", "watch", "db files", "linearizability"],
        300,
    );
}
