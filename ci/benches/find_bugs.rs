//! How fast each planted bug is found from random seeds: for every bug, under `--faults swarm`
//! and under `--faults default` (on the scenario knobs the bug needs), 20 disjoint seed ranges
//! (seeds k·100000+1 onward), one run at a time; each range stops at its first safety finding,
//! or when it has spent its wall seconds.
//! Prints the median runs and median wall seconds to the first finding, the worst range, the
//! first finding (in the first range that has one) with its reproducing command, and each bug's
//! first swarm finding shrunk.
//!
//! `cargo bench -p faultline --bench find_bugs [-- BUG...]`; `FAULTLINE_RANGES` (20),
//! `FAULTLINE_RANGE_SECONDS` (60 wall seconds per range) and `FAULTLINE_MAX_RUNS` (100000 per
//! range) bound it; `FAULTLINE_FAULTS=swarm` or `=default` measures one fault profile only;
//! `FAULTLINE_SHRINK_ONLY=1` prints only the shrink table (each bug's first swarm finding over
//! the ranges, shrunk).

use std::time::{Duration, Instant};

use faultline::check::judge_run;
use faultline::profile::Profile;
use faultline::run::{schedule_for, simulate_run, RunConfig};
use faultline::shrink::{shrink, Budget, Candidate};
use faultline_store::PlantedBugs;
use faultline_workloads::traffic::OpMix;
use faultline_workloads::{FaultProfile, WorkloadConfig};

/// A bug and the scenario it is looked for in.
struct Target {
    bug: &'static str,
    etcd: &'static str,
    scenario: fn(u64) -> RunConfig,
}

fn plain(seed: u64) -> RunConfig {
    RunConfig {
        seed,
        duration_ms: 8_000,
        workload: WorkloadConfig {
            clients: 6,
            ..WorkloadConfig::default()
        },
        ..RunConfig::default()
    }
}

fn watch_heavy(seed: u64) -> RunConfig {
    RunConfig {
        seed,
        duration_ms: 8_000,
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
        ..RunConfig::default()
    }
}

fn snapshots(seed: u64) -> RunConfig {
    RunConfig {
        seed,
        duration_ms: 10_000,
        snapshot_entries: 50,
        workload: WorkloadConfig {
            watchers: 4,
            ..WorkloadConfig::default()
        },
        ..RunConfig::default()
    }
}

fn profile(name: &str, seed: u64) -> RunConfig {
    Profile::parse(name).expect("a known profile").config(seed)
}

const TARGETS: &[Target] = &[
    Target {
        bug: "stale-reads",
        etcd: "(catalog: stale read)",
        scenario: plain,
    },
    Target {
        bug: "watch-duplicate-event",
        etcd: "17247",
        scenario: watch_heavy,
    },
    Target {
        bug: "watch-progress-overtakes",
        etcd: "15220",
        scenario: watch_heavy,
    },
    Target {
        bug: "watch-compact-revision",
        etcd: "18089",
        scenario: watch_heavy,
    },
    Target {
        bug: "watch-snapshot-replay",
        etcd: "15271",
        scenario: watch_heavy,
    },
    Target {
        bug: "consistent-index-not-atomic",
        etcd: "13766",
        scenario: |seed| profile("snapshot-churn", seed),
    },
    Target {
        bug: "apply-before-wal-sync",
        etcd: "14370",
        scenario: |seed| profile("lone-member", seed),
    },
    Target {
        bug: "defrag-drops-consistent-index",
        etcd: "14685",
        scenario: |seed| profile("defrag", seed),
    },
    Target {
        bug: "compaction-revision-backwards",
        etcd: "17780",
        scenario: |seed| profile("compaction", seed),
    },
    Target {
        bug: "resumed-compaction-drops-delete",
        etcd: "19179",
        scenario: |seed| profile("compaction", seed),
    },
    Target {
        bug: "read-index-reused",
        etcd: "20418",
        scenario: |seed| profile("leader-pause", seed),
    },
    Target {
        bug: "future-watch-after-restore",
        etcd: "20221",
        scenario: snapshots,
    },
    Target {
        bug: "victim-watchers-starved",
        etcd: "17529",
        scenario: |seed| profile("slow-watchers", seed),
    },
];

/// How far one seed range may go: runs and wall time.
#[derive(Clone, Copy)]
struct Limits {
    max_runs: u64,
    max_wall: Duration,
}

/// What one seed range came to: runs to the first finding (None: not found), and wall time.
struct Range {
    runs: Option<u64>,
    tried: u64,
    wall: Duration,
    first: Option<(u64, String)>,
    other_failures: u64,
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn search(target: &Target, faults: FaultProfile, range: u64, limits: Limits) -> Range {
    let mut bugs = PlantedBugs::default();
    bugs.enable(target.bug).expect("a known bug");
    // The wall clock, outside the simulation: what this benchmark measures.
    let started = Instant::now();
    let mut other_failures = 0;
    let mut tried = 0;
    while tried < limits.max_runs && started.elapsed() < limits.max_wall {
        let i = tried;
        tried += 1;
        let mut config = (target.scenario)(range * 100_000 + 1 + i);
        config.faults = faults;
        if faults != FaultProfile::Swarm {
            // A profile's focus names swarm kinds; other fault profiles have none.
            config.swarm_focus.clear();
        }
        config.bugs = bugs.clone();
        let Ok(output) = simulate_run(&config) else {
            other_failures += 1;
            continue;
        };
        let verdict = judge_run(&config, &output, &config.check_options());
        match verdict.exit_code() {
            0 => {}
            1 | 6 => {
                let first = verdict
                    .render()
                    .lines()
                    .find(|l| l.contains("VIOLATION") || l.contains("FAIL"))
                    .map(|l| l.trim().to_string())
                    .unwrap_or_default();
                return Range {
                    runs: Some(i + 1),
                    tried,
                    wall: started.elapsed(),
                    first: Some((config.seed, format!("{first}\n      {}", config.command()))),
                    other_failures,
                };
            }
            _ => other_failures += 1,
        }
    }
    Range {
        runs: None,
        tried,
        wall: started.elapsed(),
        first: None,
        other_failures,
    }
}

/// The median of `values`, where `None` (not found) counts as larger than any number.
fn median(values: &[Option<f64>]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().map(|v| v.unwrap_or(f64::INFINITY)).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let m = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    m.is_finite().then_some(m)
}

fn show(value: Option<f64>, digits: usize) -> String {
    value.map_or("not found".into(), |v| format!("{v:.digits$}"))
}

fn main() {
    let ranges = env_number("FAULTLINE_RANGES", 20);
    let limits = Limits {
        max_runs: env_number("FAULTLINE_MAX_RUNS", 100_000),
        max_wall: Duration::from_secs(env_number("FAULTLINE_RANGE_SECONDS", 60)),
    };
    let profiles: Vec<FaultProfile> = match std::env::var("FAULTLINE_FAULTS").as_deref() {
        Ok("swarm") => vec![FaultProfile::Swarm],
        Ok("default") => vec![FaultProfile::Default],
        _ => vec![FaultProfile::Swarm, FaultProfile::Default],
    };
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if std::env::var("FAULTLINE_SHRINK_ONLY").is_ok() {
        shrink_only(&wanted, ranges, limits);
        return;
    }
    println!("| bug | etcd | faults | found in | median runs | median wall s | worst range | other failures |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut firsts = Vec::new();
    let mut shrinks = Vec::new();
    for target in TARGETS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == target.bug) {
            continue;
        }
        for &faults in &profiles {
            let results: Vec<Range> = (0..ranges)
                .map(|k| search(target, faults, k, limits))
                .collect();
            let runs: Vec<Option<f64>> = results.iter().map(|r| r.runs.map(|n| n as f64)).collect();
            let walls: Vec<Option<f64>> = results
                .iter()
                .map(|r| r.runs.map(|_| r.wall.as_secs_f64()))
                .collect();
            let found = results.iter().filter(|r| r.runs.is_some()).count();
            let worst = results
                .iter()
                .max_by_key(|r| r.runs.unwrap_or(u64::MAX))
                .map(|r| match r.runs {
                    Some(n) => format!("{n} runs, {:.1} s", r.wall.as_secs_f64()),
                    None => format!(
                        "not found in {} runs, {:.0} s",
                        r.tried,
                        r.wall.as_secs_f64()
                    ),
                })
                .unwrap_or_default();
            let others: u64 = results.iter().map(|r| r.other_failures).sum();
            println!(
                "| `{}` | {} | {} | {found}/{ranges} ranges | {} | {} | {worst} | {others} |",
                target.bug,
                target.etcd,
                faults.name(),
                show(median(&runs), 1),
                show(median(&walls), 1),
            );
            if let Some((seed, what)) = results.iter().find_map(|r| r.first.clone()) {
                firsts.push(format!(
                    "{} under {}: seed {seed}: {what}",
                    target.bug,
                    faults.name()
                ));
                if faults == FaultProfile::Swarm {
                    shrinks.push(shrink_row(target, seed));
                }
            }
        }
    }
    println!();
    for first in firsts {
        println!("{first}");
    }
    println!();
    println!("| bug | seed | fails on | before: faults, ops, sim s | after: faults, ops, sim s | runs | shrink wall s |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in shrinks {
        println!("{row}");
    }
}

/// `FAULTLINE_SHRINK_ONLY`: for each bug, the first finding over the ranges in order, under
/// swarm faults, shrunk; only the shrink table.
fn shrink_only(wanted: &[String], ranges: u64, limits: Limits) {
    println!("| bug | seed | fails on | before: faults, ops, sim s | after: faults, ops, sim s | runs | shrink wall s |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for target in TARGETS {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == target.bug) {
            continue;
        }
        let found = (0..ranges).find_map(|k| search(target, FaultProfile::Swarm, k, limits).first);
        match found {
            Some((seed, _)) => println!("{}", shrink_row(target, seed)),
            None => println!("| `{}` | not found | | | | | |", target.bug),
        }
    }
}

/// Shrinks a swarm finding of `target` at `seed` (300 runs, 120 s at most) into a table row.
fn shrink_row(target: &Target, seed: u64) -> String {
    let mut config = (target.scenario)(seed);
    config.faults = FaultProfile::Swarm;
    config.bugs.enable(target.bug).expect("a known bug");
    let schedule = match schedule_for(&config) {
        Ok(schedule) => schedule,
        Err(e) => return format!("| `{}` | {seed} | {e} | | | | |", target.bug),
    };
    let budget = Budget {
        max_runs: 300,
        max_wall: Duration::from_secs(120),
    };
    match shrink(Candidate { config, schedule }, budget, &mut |_| {}) {
        Ok(s) => format!(
            "| `{}` | {seed} | {} | {}, {}, {:.1} | {}, {}, {:.1} | {} | {:.1}{} |",
            target.bug,
            s.failure,
            s.before.faults,
            s.before.operations,
            s.before.simulated_ms as f64 / 1000.0,
            s.after.faults,
            s.after.operations,
            s.after.simulated_ms as f64 / 1000.0,
            s.runs,
            s.wall.as_secs_f64(),
            if s.budget_reached { " (budget)" } else { "" }
        ),
        Err(e) => format!("| `{}` | {seed} | {e} | | | | |", target.bug),
    }
}
