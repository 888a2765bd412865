//! What a sweep came to: each seed's outcome (`sweep.jsonl`), the counts and failures
//! (`summary.json`), and the merge of shards' summaries.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{MergeArgs, BAD_INPUT, SUMMARY_FORMAT};

/// What one seed's run came to, from its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Violation,
    Liveness,
    Undecided,
    Crash,
    Panic,
    /// Exit code 2: the options or the output directory were refused; it stops the sweep.
    BadInput,
}

impl Outcome {
    /// 0 pass, 1 violation, 2 bad input, 3 liveness, 5 undecided, 6 panic (a member
    /// panicked); 4 (the run crashed), any other code and a death by signal are crashes.
    pub fn from_exit(code: Option<i32>) -> Outcome {
        match code {
            Some(0) => Outcome::Pass,
            Some(1) => Outcome::Violation,
            Some(2) => Outcome::BadInput,
            Some(3) => Outcome::Liveness,
            Some(5) => Outcome::Undecided,
            Some(6) => Outcome::Panic,
            _ => Outcome::Crash,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Violation => "violation",
            Outcome::Liveness => "liveness",
            Outcome::Undecided => "undecided",
            Outcome::Crash => "crash",
            Outcome::Panic => "panic",
            Outcome::BadInput => "bad-input",
        }
    }
}

/// Runs per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub pass: u64,
    pub violation: u64,
    pub liveness: u64,
    pub undecided: u64,
    pub crash: u64,
    pub panic: u64,
}

impl Counts {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Pass => self.pass += 1,
            Outcome::Violation => self.violation += 1,
            Outcome::Liveness => self.liveness += 1,
            Outcome::Undecided => self.undecided += 1,
            Outcome::Crash | Outcome::BadInput => self.crash += 1,
            Outcome::Panic => self.panic += 1,
        }
    }

    fn sum(&mut self, other: &Counts) {
        self.pass += other.pass;
        self.violation += other.violation;
        self.liveness += other.liveness;
        self.undecided += other.undecided;
        self.crash += other.crash;
        self.panic += other.panic;
    }

    pub fn total(&self) -> u64 {
        self.pass + self.violation + self.liveness + self.undecided + self.crash + self.panic
    }

    /// The sweep's exit code, the worst finding first: 1 if any seed found a violation or a
    /// panic, else 3 for a liveness failure, else 5 for an undecided verdict, else 4 for a run
    /// that crashed, else 0.
    pub fn exit_code(&self) -> u8 {
        if self.violation + self.panic > 0 {
            1
        } else if self.liveness > 0 {
            3
        } else if self.undecided > 0 {
            5
        } else if self.crash > 0 {
            4
        } else {
            0
        }
    }

    pub(super) fn line(&self) -> String {
        format!(
            "pass {} violation {} liveness {} undecided {} crash {} panic {}",
            self.pass, self.violation, self.liveness, self.undecided, self.crash, self.panic
        )
    }
}

/// One finished seed: a line of `sweep.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRecord {
    pub seed: u64,
    pub outcome: Outcome,
    /// `None` when the run was killed by a signal.
    pub exit_code: Option<i32>,
    pub wall_ms: u64,
    /// The command that runs this seed again.
    pub replay: String,
    /// The run's files (and its stdout.txt and stderr.txt), kept for a failing seed only.
    pub artifacts: Option<PathBuf>,
}

/// `summary.json`: a sweep, or the merge of shards of one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub format: String,
    pub version: u32,
    /// The whole sweep's seeds, A..B with B excluded.
    pub seeds: String,
    pub seed_start: u64,
    pub seed_end: u64,
    pub shard_count: u64,
    /// The shards this summary covers (one for a sweep; those merged for a merge).
    pub shards: Vec<u64>,
    /// Where the shard came from: --shard, the environment variables, none, or merge.
    pub shard_from: String,
    /// The options of every run (`faultline run` without --seed and --out).
    pub options: Vec<String>,
    pub stop_on_failure: bool,
    /// Runs at once (summed over the shards of a merge).
    pub jobs: u64,
    pub runs: u64,
    pub counts: Counts,
    /// Seeds of the shards never launched, after --stop-on-failure stopped the sweep.
    pub seeds_not_run: u64,
    /// The lowest failing seed. Seeds are launched in increasing order and every launched seed
    /// is waited for, so with --stop-on-failure too it is the first failing seed of the shard.
    pub first_failure: Option<u64>,
    /// Every failing seed, by seed.
    pub failures: Vec<SeedRecord>,
    /// Wall time of the sweep (of the slowest shard, for a merge).
    pub wall_seconds: f64,
    /// CPU time counted as wall seconds times jobs (summed over the shards of a merge).
    pub cpu_seconds_wall_times_jobs: f64,
    pub runs_per_cpu_hour_wall_times_jobs: f64,
    /// The sweep's exit code (see [`Counts::exit_code`]).
    pub exit_code: u8,
}

impl Summary {
    /// The summary a person reads.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let shards: Vec<String> = self.shards.iter().map(u64::to_string).collect();
        let _ = writeln!(
            out,
            "faultline sweep: seeds {}, shard {} of {}, {} runs in {:.1}s ({} jobs)",
            self.seeds,
            shards.join(","),
            self.shard_count,
            self.runs,
            self.wall_seconds,
            self.jobs
        );
        let _ = writeln!(out, "  {}", self.counts.line());
        let _ = writeln!(
            out,
            "  runs per CPU-hour (wall time x jobs): {:.0}",
            self.runs_per_cpu_hour_wall_times_jobs
        );
        if self.seeds_not_run > 0 {
            let _ = writeln!(
                out,
                "  stopped at the first failure: {} seeds not run",
                self.seeds_not_run
            );
        }
        if let Some(seed) = self.first_failure {
            let _ = writeln!(out, "  first failing seed: {seed}");
        }
        if !self.failures.is_empty() {
            let _ = writeln!(out, "failures:");
        }
        for failure in &self.failures {
            let _ = writeln!(
                out,
                "  seed {} {}: {}",
                failure.seed,
                failure.outcome.name(),
                failure.replay
            );
            if let Some(dir) = &failure.artifacts {
                let _ = writeln!(out, "      artifacts: {}", dir.display());
            }
        }
        let verdict = match self.exit_code {
            0 => "PASS: every seed passed",
            1 => "FAIL: safety violation or panic",
            3 => "FAIL: liveness failure",
            5 => "UNKNOWN: a verdict was undecided",
            _ => "FAIL: a run crashed",
        };
        let _ = writeln!(out, "verdict: {verdict}");
        out
    }
}

fn read_summary(path: &Path) -> Result<Summary, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let summary: Summary = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a sweep summary: {e}", path.display()))?;
    if summary.format != SUMMARY_FORMAT || summary.version != 1 {
        return Err(format!(
            "{}: format {:?} version {}, expected {SUMMARY_FORMAT:?} version 1",
            path.display(),
            summary.format,
            summary.version
        ));
    }
    Ok(summary)
}

/// Checks that `other` is another shard of `first`'s sweep, naming what differs.
fn same_sweep(first: &Summary, other: &Summary) -> Result<(), String> {
    if (first.seed_start, first.seed_end) != (other.seed_start, other.seed_end) {
        return Err(format!("seeds {} and {} differ", first.seeds, other.seeds));
    }
    if first.shard_count != other.shard_count {
        return Err(format!(
            "shard counts {} and {} differ",
            first.shard_count, other.shard_count
        ));
    }
    if first.options != other.options {
        return Err(format!(
            "run options differ: {:?} and {:?}",
            first.options.join(" "),
            other.options.join(" ")
        ));
    }
    if first.stop_on_failure != other.stop_on_failure {
        return Err("one stopped on the first failure and the other did not".into());
    }
    Ok(())
}

/// Joins summaries of disjoint shards of one sweep.
pub fn merge(summaries: &[(PathBuf, Summary)]) -> Result<Summary, String> {
    let Some((first_path, first)) = summaries.first() else {
        return Err("nothing to merge".into());
    };
    let mut merged = first.clone();
    let mut shards: BTreeSet<u64> = first.shards.iter().copied().collect();
    for (path, other) in &summaries[1..] {
        same_sweep(first, other).map_err(|e| {
            format!(
                "{} and {} are not shards of one sweep: {e}",
                first_path.display(),
                path.display()
            )
        })?;
        for shard in &other.shards {
            if !shards.insert(*shard) {
                return Err(format!(
                    "shard {shard} of {} is in {} and in an earlier summary",
                    other.shard_count,
                    path.display()
                ));
            }
        }
        merged.counts.sum(&other.counts);
        merged.runs += other.runs;
        merged.jobs += other.jobs;
        merged.seeds_not_run += other.seeds_not_run;
        merged.failures.extend(other.failures.iter().cloned());
        merged.wall_seconds = merged.wall_seconds.max(other.wall_seconds);
        merged.cpu_seconds_wall_times_jobs += other.cpu_seconds_wall_times_jobs;
    }
    merged.failures.sort_by_key(|r| r.seed);
    merged.first_failure = merged.failures.first().map(|r| r.seed);
    merged.shards = shards.into_iter().collect();
    merged.shard_from = "merge".into();
    merged.runs_per_cpu_hour_wall_times_jobs =
        per_cpu_hour(merged.runs, merged.cpu_seconds_wall_times_jobs);
    merged.exit_code = merged.counts.exit_code();
    Ok(merged)
}

/// `faultline sweep merge`: prints the merged summary (and writes it with --out); exits as the
/// whole sweep would, or with 2 when the files are not shards of one sweep.
pub fn merge_command(args: &MergeArgs) -> u8 {
    let mut summaries = Vec::new();
    for path in &args.summaries {
        match read_summary(path) {
            Ok(summary) => summaries.push((path.clone(), summary)),
            Err(e) => {
                eprintln!("faultline: {e}");
                return BAD_INPUT;
            }
        }
    }
    let merged = match merge(&summaries) {
        Ok(merged) => merged,
        Err(e) => {
            eprintln!("faultline: {e}");
            return BAD_INPUT;
        }
    };
    say!("{}", merged.render().trim_end());
    let missing = (0..merged.shard_count)
        .filter(|k| !merged.shards.contains(k))
        .count();
    if missing > 0 {
        say!(
            "note: {missing} of {} shards are not in this merge",
            merged.shard_count
        );
    }
    if let Some(path) = &args.out {
        if let Err(e) = write_json(path, &merged) {
            eprintln!("faultline: {e}");
            return BAD_INPUT;
        }
        say!("wrote {}", path.display());
    }
    merged.exit_code
}

/// Runs per CPU-hour, counting wall time times jobs as CPU time.
pub(super) fn per_cpu_hour(runs: u64, cpu_seconds: f64) -> f64 {
    if cpu_seconds > 0.0 {
        runs as f64 * 3600.0 / cpu_seconds
    } else {
        0.0
    }
}

pub(super) fn write_json(path: &Path, summary: &Summary) -> Result<(), String> {
    let text = serde_json::to_string_pretty(summary).map_err(|e| e.to_string())?;
    std::fs::write(path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
}
