//! `faultline sweep`: one `faultline run` per seed of a range, each a child process, a few at
//! a time, with a progress bar, one JSON line per finished seed (`sweep.jsonl`), a summary
//! (`summary.json`) and the replay command of every failing seed; sharding over machines
//! (`--shard K/N`, or the index a CI system or a Kubernetes Indexed Job sets), and
//! `faultline sweep merge` to join the shards' summaries into the summary of the whole range.
//!
//! A sweep runs no simulation itself and never judges a run: a seed's outcome is its child's
//! exit code. It must never keep a passing seed's artifacts, never give one seed to two shards,
//! and never panic on what a user typed (bad input is an error, exit code 2).
//!
//! Shards are strided: shard K of N runs the seeds s of the range with (s - A) % N == K, so the
//! shards are disjoint, cover the range, and each gets seeds from all over it.

/// Prints a line to stdout; a closed pipe is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod shard;
mod summary;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use crate::run::RunConfig;

pub use shard::{pick_shard, SeedRange, Shard};
pub use summary::{merge, merge_command, Counts, Outcome, SeedRecord, Summary};
use summary::{per_cpu_hour, write_json};

/// The exit code of bad usage or input, the sweep's and each run's.
pub const BAD_INPUT: u8 = 2;
/// The `format` field of `summary.json`.
pub const SUMMARY_FORMAT: &str = "faultline-sweep-summary";

/// `faultline sweep`'s own options; the run options are `faultline run`'s.
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// The seeds: A..B (A up to B, B excluded), A..=B (B included) or a single seed N.
    #[arg(long, required = true, value_parser = SeedRange::parse)]
    pub seeds: Option<SeedRange>,
    /// Runs at once, each a `faultline run` process [default: the machine's cores].
    #[arg(long, value_parser = parse_jobs)]
    pub jobs: Option<usize>,
    /// This machine's share of the seeds, K/N (K from 0 to N-1): the seeds s with
    /// (s - A) % N == K. Without it, read from JOB_COMPLETION_INDEX (with --shard-count or
    /// FAULTLINE_SHARD_COUNT), CI_NODE_INDEX/CI_NODE_TOTAL, CIRCLE_NODE_INDEX/CIRCLE_NODE_TOTAL
    /// or BUILDKITE_PARALLEL_JOB/BUILDKITE_PARALLEL_JOB_COUNT.
    #[arg(long, value_parser = Shard::parse)]
    pub shard: Option<Shard>,
    /// The number of shards when the index comes from JOB_COMPLETION_INDEX (a Kubernetes
    /// Indexed Job's completions).
    #[arg(long)]
    pub shard_count: Option<u64>,
    /// Launch no new seed after the first failure (the seeds already running finish).
    #[arg(long)]
    pub stop_on_failure: bool,
}

/// `faultline sweep`'s subcommands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum SweepAction {
    /// Joins the summaries of shards of one sweep (same seeds and options, disjoint shards)
    /// into one, and prints it; exits as the whole sweep would.
    Merge(MergeArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct MergeArgs {
    /// The shards' summary.json files.
    #[arg(required = true)]
    pub summaries: Vec<PathBuf>,
    /// Where to write the merged summary (JSON).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_jobs(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err("--jobs must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{text:?} is not a number of jobs")),
    }
}

/// The options of every run: `config`'s reproducing command without `faultline run` and
/// `--seed`. Its values never hold whitespace (numbers, durations, sizes and names).
pub fn run_options(config: &RunConfig) -> Vec<String> {
    let command = config.command();
    let mut words = command.split_whitespace().skip(2);
    let mut options = Vec::new();
    while let Some(word) = words.next() {
        if word == "--seed" {
            words.next();
        } else {
            options.push(word.to_string());
        }
    }
    options
}

/// What a sweep runs.
#[derive(Debug)]
pub struct Plan {
    pub config: RunConfig,
    pub options: Vec<String>,
    pub range: SeedRange,
    pub shard: Shard,
    pub shard_from: String,
    pub jobs: usize,
    pub stop_on_failure: bool,
    pub out: PathBuf,
    pub exe: PathBuf,
}

impl Plan {
    /// The sweep `args` describe over runs of `config` (its seed is ignored), into `out`.
    pub fn new(config: &RunConfig, out: &Path, args: &SweepArgs) -> Result<Plan, String> {
        let range = args.seeds.ok_or("faultline sweep needs --seeds A..B")?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (shard, shard_from) = pick_shard(args.shard, args.shard_count, &env)?;
        let jobs = args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let exe = std::env::current_exe()
            .map_err(|e| format!("cannot find the faultline binary to run: {e}"))?;
        Ok(Plan {
            config: config.clone(),
            options: run_options(config),
            range,
            shard,
            shard_from,
            jobs,
            stop_on_failure: args.stop_on_failure,
            out: out.to_path_buf(),
            exe,
        })
    }

    fn replay(&self, seed: u64) -> String {
        RunConfig {
            seed,
            ..self.config.clone()
        }
        .command()
    }

    fn run_dir(&self, seed: u64) -> PathBuf {
        self.out.join("runs").join(format!("seed-{seed}"))
    }

    /// Runs one seed as a child process, its stdout and stderr in its run directory; the
    /// directory is removed if the seed passed.
    fn run_seed(&self, seed: u64) -> Result<SeedRecord, String> {
        let dir = self.run_dir(seed);
        let io_error = |e: std::io::Error| format!("{}: {e}", dir.display());
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_error(e)),
            _ => {}
        }
        std::fs::create_dir_all(&dir).map_err(io_error)?;
        let stdout = std::fs::File::create(dir.join("stdout.txt")).map_err(io_error)?;
        let stderr = std::fs::File::create(dir.join("stderr.txt")).map_err(io_error)?;
        let started = Instant::now(); // deterministic: wall time of one run, outside any simulation
        let status = std::process::Command::new(&self.exe)
            .arg("run")
            .args(&self.options)
            .arg("--seed")
            .arg(seed.to_string())
            .arg("--out")
            .arg(&dir)
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .status() // deterministic: each seed's run is a process of its own, outside any simulation
            .map_err(|e| format!("running {}: {e}", self.exe.display()))?;
        let wall_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = Outcome::from_exit(status.code());
        let artifacts = if outcome == Outcome::Pass {
            std::fs::remove_dir_all(&dir).map_err(io_error)?;
            None
        } else {
            Some(dir)
        };
        Ok(SeedRecord {
            seed,
            outcome,
            exit_code: status.code(),
            wall_ms,
            replay: self.replay(seed),
            artifacts,
        })
    }
}

/// What came of a sweep: every finished seed, and whether it was stopped.
#[derive(Debug)]
pub struct Finished {
    pub records: Vec<SeedRecord>,
    pub wall: Duration,
    /// A seed whose run refused its input (exit 2), with what it said.
    pub bad_input: Option<(u64, String)>,
}

/// The progress bar on stderr (drawn only on a terminal).
fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    let style = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] {pos}/{len} runs, {per_sec}, ETA {eta} | {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(Counts::default().line());
    bar.enable_steady_tick(Duration::from_millis(500)); // deterministic: the progress bar's redraw thread, outside any simulation
    bar
}

/// Runs the plan's seeds, `plan.jobs` at once, appending each finished seed to `jsonl`.
pub fn run_seeds(plan: &Plan, jsonl: &mut impl Write) -> Result<Finished, String> {
    let started = Instant::now(); // deterministic: wall time of the sweep, outside any simulation
    let bar = progress_bar(plan.shard.len(plan.range));
    let next = Mutex::new(plan.shard.seeds(plan.range));
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Result<SeedRecord, String>>();
    let mut finished = Finished {
        records: Vec::new(),
        wall: Duration::ZERO,
        bad_input: None,
    };
    let mut error = None;
    std::thread::scope(|scope| {
        for _ in 0..plan.jobs {
            let tx = tx.clone();
            let (next, stop) = (&next, &stop);
            scope.spawn(move || worker(plan, next, stop, &tx)); // deterministic: one thread waits on each child process, outside any simulation
        }
        drop(tx);
        let mut counts = Counts::default();
        for result in rx {
            let record = match result {
                Ok(record) => record,
                Err(e) => {
                    error.get_or_insert(e);
                    continue;
                }
            };
            counts.add(record.outcome);
            bar.inc(1);
            bar.set_message(counts.line());
            if let Err(e) = append_line(jsonl, &record) {
                stop.store(true, Ordering::SeqCst);
                error.get_or_insert(format!("writing sweep.jsonl: {e}"));
            }
            note_failure(&bar, &record, &mut finished);
            finished.records.push(record);
        }
    });
    bar.finish_and_clear();
    finished.wall = started.elapsed();
    match error {
        Some(e) => Err(e),
        None => Ok(finished),
    }
}

/// Takes seeds until there are none left or the sweep stops.
fn worker(
    plan: &Plan,
    next: &Mutex<impl Iterator<Item = u64>>,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Result<SeedRecord, String>>,
) {
    loop {
        let seed = {
            let mut seeds = next.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match seeds.next() {
                Some(seed) => seed,
                None => return,
            }
        };
        let result = plan.run_seed(seed);
        let halt = match &result {
            Ok(record) => {
                record.outcome == Outcome::BadInput
                    || (plan.stop_on_failure && record.outcome != Outcome::Pass)
            }
            Err(_) => true,
        };
        if halt {
            stop.store(true, Ordering::SeqCst);
        }
        if tx.send(result).is_err() {
            return;
        }
    }
}

fn append_line(jsonl: &mut impl Write, record: &SeedRecord) -> std::io::Result<()> {
    let line = serde_json::to_string(record).map_err(std::io::Error::other)?;
    writeln!(jsonl, "{line}")?;
    jsonl.flush()
}

/// Says a failing seed's replay command as it finishes; keeps what a bad input said.
fn note_failure(bar: &indicatif::ProgressBar, record: &SeedRecord, finished: &mut Finished) {
    if record.outcome == Outcome::BadInput {
        if finished.bad_input.is_none() {
            let said = record
                .artifacts
                .as_ref()
                .and_then(|dir| std::fs::read_to_string(dir.join("stderr.txt")).ok())
                .unwrap_or_default();
            finished.bad_input = Some((record.seed, said.trim().to_string()));
        }
        return;
    }
    if record.outcome != Outcome::Pass {
        bar.suspend(|| {
            eprintln!(
                "seed {}: {} (exit {}); replay: {}",
                record.seed,
                record.outcome.name(),
                record
                    .exit_code
                    .map_or("by signal".to_string(), |c| c.to_string()),
                record.replay
            );
        });
    }
}

/// The summary of a finished sweep.
pub fn summarize(plan: &Plan, finished: &Finished) -> Summary {
    let mut counts = Counts::default();
    for record in &finished.records {
        counts.add(record.outcome);
    }
    let mut failures: Vec<SeedRecord> = finished
        .records
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .cloned()
        .collect();
    failures.sort_by_key(|r| r.seed);
    let wall_seconds = finished.wall.as_secs_f64();
    let cpu_seconds = wall_seconds * plan.jobs as f64;
    Summary {
        format: SUMMARY_FORMAT.into(),
        version: 1,
        seeds: plan.range.to_string(),
        seed_start: plan.range.start,
        seed_end: plan.range.end,
        shard_count: plan.shard.count,
        shards: vec![plan.shard.index],
        shard_from: plan.shard_from.clone(),
        options: plan.options.clone(),
        stop_on_failure: plan.stop_on_failure,
        jobs: plan.jobs as u64,
        runs: counts.total(),
        counts,
        seeds_not_run: plan.shard.len(plan.range) - counts.total(),
        first_failure: failures.first().map(|r| r.seed),
        failures,
        wall_seconds,
        cpu_seconds_wall_times_jobs: cpu_seconds,
        runs_per_cpu_hour_wall_times_jobs: per_cpu_hour(counts.total(), cpu_seconds),
        exit_code: counts.exit_code(),
    }
}

/// `faultline sweep`: runs the sweep, writes `sweep.jsonl` and `summary.json` into `out`,
/// prints the summary; returns the exit code.
pub fn sweep_command(config: &RunConfig, out: &Path, args: &SweepArgs) -> u8 {
    let plan = match Plan::new(config, out, args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("faultline: {e}");
            return BAD_INPUT;
        }
    };
    let jsonl_path = out.join("sweep.jsonl");
    let opened = std::fs::create_dir_all(out).and_then(|()| std::fs::File::create(&jsonl_path));
    let mut jsonl = match opened {
        Ok(file) => std::io::BufWriter::new(file),
        Err(e) => {
            eprintln!("faultline: {}: {e}", jsonl_path.display());
            return BAD_INPUT;
        }
    };
    let finished = match run_seeds(&plan, &mut jsonl) {
        Ok(finished) => finished,
        Err(e) => {
            eprintln!("faultline: {e}");
            return BAD_INPUT;
        }
    };
    if let Some((seed, said)) = &finished.bad_input {
        eprintln!("faultline: the run of seed {seed} refused its input; the sweep stopped:");
        eprintln!("{said}");
        return BAD_INPUT;
    }
    let summary = summarize(&plan, &finished);
    let summary_path = out.join("summary.json");
    if let Err(e) = write_json(&summary_path, &summary) {
        eprintln!("faultline: {e}");
        return BAD_INPUT;
    }
    say!("{}", summary.render().trim_end());
    say!("wrote {}", jsonl_path.display());
    say!("wrote {}", summary_path.display());
    summary.exit_code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_and_refuse_nonsense() {
        let r = |start, end| Ok(SeedRange { start, end });
        assert_eq!(SeedRange::parse("1..7"), r(1, 7));
        assert_eq!(SeedRange::parse("1..=7"), r(1, 8));
        assert_eq!(SeedRange::parse("5"), r(5, 6));
        assert_eq!(SeedRange::parse("3..3"), r(3, 3));
        for bad in [
            "7..1",
            "a..b",
            "",
            "1..",
            "..5",
            "1...5",
            "-1..3",
            "0..=18446744073709551615",
        ] {
            assert!(SeedRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_are_disjoint_and_cover_the_range() {
        let range = SeedRange { start: 3, end: 20 };
        for count in 1..6 {
            let mut all: Vec<u64> = Vec::new();
            for index in 0..count {
                let shard = Shard::new(index, count).unwrap();
                let seeds: Vec<u64> = shard.seeds(range).collect();
                assert_eq!(seeds.len() as u64, shard.len(range));
                all.extend(seeds);
            }
            all.sort_unstable();
            assert_eq!(all, (3..20).collect::<Vec<_>>());
        }
        assert!(Shard::parse("4/4").is_err());
        assert!(Shard::parse("0/0").is_err());
        assert!(Shard::parse("x").is_err());
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
    }

    #[test]
    fn shards_come_from_each_system_s_variables() {
        let pick = |vars: &[(&str, &str)], count: Option<u64>| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let env =
                move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            pick_shard(None, count, &env).map(|(shard, _)| shard)
        };
        let shard = |index, count| Ok(Shard { index, count });
        assert_eq!(pick(&[], None), shard(0, 1));
        assert_eq!(pick(&[("JOB_COMPLETION_INDEX", "2")], Some(4)), shard(2, 4));
        assert_eq!(
            pick(
                &[
                    ("JOB_COMPLETION_INDEX", "2"),
                    ("FAULTLINE_SHARD_COUNT", "3")
                ],
                None
            ),
            shard(2, 3)
        );
        assert!(pick(&[("JOB_COMPLETION_INDEX", "2")], None).is_err());
        assert!(pick(&[("JOB_COMPLETION_INDEX", "4")], Some(4)).is_err());
        assert!(pick(&[], Some(4)).is_err());
        assert_eq!(
            pick(&[("CI_NODE_INDEX", "1"), ("CI_NODE_TOTAL", "3")], None),
            shard(0, 3)
        );
        assert!(pick(&[("CI_NODE_INDEX", "0"), ("CI_NODE_TOTAL", "3")], None).is_err());
        assert_eq!(
            pick(
                &[("CIRCLE_NODE_INDEX", "2"), ("CIRCLE_NODE_TOTAL", "3")],
                None
            ),
            shard(2, 3)
        );
        assert_eq!(
            pick(
                &[
                    ("BUILDKITE_PARALLEL_JOB", "0"),
                    ("BUILDKITE_PARALLEL_JOB_COUNT", "2")
                ],
                None
            ),
            shard(0, 2)
        );
        assert!(pick(
            &[("CIRCLE_NODE_INDEX", "x"), ("CIRCLE_NODE_TOTAL", "3")],
            None
        )
        .is_err());
    }

    #[test]
    fn exit_codes_put_the_worst_finding_first() {
        let mut counts = Counts::default();
        assert_eq!(counts.exit_code(), 0);
        counts.add(Outcome::Crash);
        assert_eq!(counts.exit_code(), 4);
        counts.add(Outcome::Undecided);
        assert_eq!(counts.exit_code(), 5);
        counts.add(Outcome::Liveness);
        assert_eq!(counts.exit_code(), 3);
        counts.add(Outcome::Panic);
        assert_eq!(counts.exit_code(), 1);
        assert_eq!(Outcome::from_exit(Some(6)), Outcome::Panic);
        assert_eq!(Outcome::from_exit(None), Outcome::Crash);
        assert_eq!(Outcome::from_exit(Some(101)), Outcome::Crash);
    }
}
