//! Shrinking a failing run: a smaller run that fails the same way (the same checker, the same
//! kind of finding, a property in common), found by deterministic re-runs.
//!
//! The steps, each kept only while the run still fails that way: delta debugging (ddmin) over
//! the schedule's episodes (an episode's faults stay together, so that a resume never loses its
//! pause); then each remaining episode made shorter (its later faults moved halfway to its
//! first); then a shorter run; then fewer clients, a lower rate, fewer keys and fewer watchers.
//! Every candidate is a whole simulated run of the same seed with its own schedule; traffic
//! still comes from the seed, so a smaller workload is a different (but replayable) traffic.
//! A run budget and a wall-time budget bound the search: past either, the smallest failing run
//! found so far is the answer.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use faultline_workloads::Schedule;

use crate::artifacts::judge_after_writing;
use crate::check::{judge_run, RunVerdict, Status};
use crate::run::{simulate_run_with, write_artifacts, RunConfig, RunTarget};

/// How a run fails: the checker, the kind of finding, and the properties its report names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub checker: &'static str,
    pub kind: &'static str,
    pub properties: BTreeSet<String>,
}

impl Failure {
    /// The most serious finding of `verdict` (a violation, then a member panic, then a liveness
    /// failure), or `None` when it has none (it passed, or is only undecided).
    pub fn of(verdict: &RunVerdict) -> Option<Failure> {
        let rank = |status: &Status| match status {
            Status::Violation(_) => Some((0, "violation")),
            Status::Panicked(_) => Some((1, "member panic")),
            Status::Stuck(_) => Some((2, "liveness")),
            Status::Pass | Status::Unknown(_) => None,
        };
        verdict
            .results
            .iter()
            .filter_map(|r| rank(&r.status).map(|(order, kind)| (order, kind, r)))
            .min_by_key(|(order, _, _)| *order)
            .map(|(_, kind, r)| Failure {
                checker: r.checker,
                kind,
                properties: properties(&r.status),
            })
    }

    /// Whether `verdict` fails the same way: a finding of the same kind from the same checker,
    /// naming one of the same properties when this failure names any.
    pub fn matches(&self, verdict: &RunVerdict) -> bool {
        verdict.results.iter().any(|r| {
            let kind = match r.status {
                Status::Violation(_) => "violation",
                Status::Panicked(_) => "member panic",
                Status::Stuck(_) => "liveness",
                Status::Pass | Status::Unknown(_) => return false,
            };
            r.checker == self.checker
                && kind == self.kind
                && (self.properties.is_empty()
                    || !self.properties.is_disjoint(&properties(&r.status)))
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.checker, self.kind)?;
        if !self.properties.is_empty() {
            let names: Vec<&str> = self.properties.iter().map(String::as_str).collect();
            write!(f, " ({})", names.join(", "))?;
        }
        Ok(())
    }
}

/// The properties a finding's first line names in its closing parentheses, as the watch
/// checker's "... on 3 of 10 watches (reliable, resumable)".
fn properties(status: &Status) -> BTreeSet<String> {
    let text = match status {
        Status::Violation(t) | Status::Stuck(t) | Status::Panicked(t) | Status::Unknown(t) => t,
        Status::Pass => return BTreeSet::new(),
    };
    let first = text.lines().next().unwrap_or_default().trim_end();
    match (first.rfind('('), first.strip_suffix(')')) {
        (Some(open), Some(inner)) if open < inner.len() => inner[open + 1..]
            .split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == ' '))
            .collect(),
        _ => BTreeSet::new(),
    }
}

/// The limits of one shrink.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_runs: u64,
    pub max_wall: Duration,
}

/// A run to try: its config and its schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub config: RunConfig,
    pub schedule: Schedule,
}

/// The size of a run, as the shrink reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub faults: usize,
    pub episodes: usize,
    pub operations: usize,
    pub simulated_ms: u64,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} faults in {} episodes, {} operations, {:.1} simulated s",
            self.faults,
            self.episodes,
            self.operations,
            self.simulated_ms as f64 / 1000.0
        )
    }
}

/// What a shrink came to.
#[derive(Debug, Clone)]
pub struct Shrunk {
    pub failure: Failure,
    pub before: Size,
    pub after: Size,
    pub smallest: Candidate,
    /// Candidate runs, the original's replay included.
    pub runs: u64,
    pub wall: Duration,
    /// Whether a budget ran out before every step was tried.
    pub budget_reached: bool,
    /// One line per step that made the run smaller.
    pub steps: Vec<String>,
}

/// The search: the failure to keep, the best candidate so far, and what is left of the budget.
struct Shrinker<'a> {
    failure: Failure,
    best: Candidate,
    best_size: Size,
    runs: u64,
    budget: Budget,
    started: Instant,
    out_of_budget: bool,
    steps: Vec<String>,
    say: &'a mut dyn FnMut(&str),
}

/// Runs `candidate`; `Err` when the run itself cannot be carried out.
fn run(candidate: &Candidate) -> Result<(RunVerdict, Size), String> {
    let output = simulate_run_with(&candidate.config, candidate.schedule.clone())?;
    let verdict = judge_run(
        &candidate.config,
        &output,
        &candidate.config.check_options(),
    );
    let size = Size {
        faults: candidate.schedule.faults.len(),
        episodes: candidate.schedule.episodes().len(),
        operations: output.history.operations.len(),
        simulated_ms: candidate.config.duration_ms,
    };
    Ok((verdict, size))
}

impl Shrinker<'_> {
    /// Tries `candidate`: `Some(true)` if it fails the same way (it becomes the best), `None`
    /// once a budget ran out.
    fn fails(&mut self, candidate: Candidate, step: &str) -> Option<bool> {
        if self.runs >= self.budget.max_runs || self.started.elapsed() >= self.budget.max_wall {
            self.out_of_budget = true;
            return None;
        }
        self.runs += 1;
        let (verdict, size) = match run(&candidate) {
            Ok(judged) => judged,
            // A candidate the simulation cannot carry out is not smaller: skip it.
            Err(_) => return Some(false),
        };
        let same = self.failure.matches(&verdict);
        if same {
            let line = format!("{step}: still fails; now {size}");
            (self.say)(&line);
            self.steps.push(line);
            self.best = candidate;
            self.best_size = size;
        }
        Some(same)
    }

    /// Delta debugging over the episodes of the best schedule.
    fn episodes(&mut self) {
        let episodes = self.best.schedule.episodes();
        if episodes.is_empty() {
            return;
        }
        let base = self.best.schedule.clone();
        let keep = |kept: &[Vec<usize>]| -> Schedule {
            let indices: Vec<usize> = kept.iter().flatten().copied().collect();
            base.keep_faults(&indices)
        };
        let mut units = episodes;
        let empty = Candidate {
            config: self.best.config.clone(),
            schedule: keep(&[]),
        };
        if self.fails(empty, "without any fault") == Some(true) {
            return;
        }
        let mut n = 2usize;
        while units.len() >= 2 && !self.out_of_budget {
            let chunk = units.len().div_ceil(n);
            let chunks: Vec<Vec<Vec<usize>>> = units.chunks(chunk).map(<[_]>::to_vec).collect();
            let mut reduced = false;
            for (i, subset) in chunks.iter().enumerate() {
                let candidate = Candidate {
                    config: self.best.config.clone(),
                    schedule: keep(subset),
                };
                let step = format!("episodes: only part {} of {}", i + 1, chunks.len());
                match self.fails(candidate, &step) {
                    None => return,
                    Some(true) => {
                        units = subset.clone();
                        n = 2;
                        reduced = true;
                        break;
                    }
                    Some(false) => {}
                }
            }
            if !reduced && chunks.len() > 2 {
                for i in 0..chunks.len() {
                    let complement: Vec<Vec<usize>> = chunks
                        .iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .flat_map(|(_, c)| c.iter().cloned())
                        .collect();
                    let candidate = Candidate {
                        config: self.best.config.clone(),
                        schedule: keep(&complement),
                    };
                    let step = format!("episodes: without part {} of {}", i + 1, chunks.len());
                    match self.fails(candidate, &step) {
                        None => return,
                        Some(true) => {
                            units = complement;
                            n = (n - 1).max(2);
                            reduced = true;
                            break;
                        }
                        Some(false) => {}
                    }
                }
            }
            if !reduced {
                if n >= units.len() {
                    break;
                }
                n = (2 * n).min(units.len());
            }
        }
    }

    /// Each remaining episode made shorter: its later faults moved halfway to its first, while
    /// the run still fails (an episode shorter than 100 ms is left alone).
    fn lengths(&mut self) {
        let ids: BTreeSet<u32> = self
            .best
            .schedule
            .faults
            .iter()
            .filter_map(|t| t.episode)
            .collect();
        for id in ids {
            for _ in 0..6 {
                let mut schedule = self.best.schedule.clone();
                let indices: Vec<usize> = (0..schedule.faults.len())
                    .filter(|&i| schedule.faults[i].episode == Some(id))
                    .collect();
                let Some(&first) = indices.first() else { break };
                let start = schedule.faults[first].at_ms;
                let span = indices
                    .iter()
                    .map(|&i| schedule.faults[i].at_ms - start)
                    .max();
                if span.is_none_or(|span| span < 100) {
                    break;
                }
                for &i in &indices[1..] {
                    let at = &mut schedule.faults[i].at_ms;
                    *at = start + (*at - start) / 2;
                }
                // A stable sort: the episode's own faults keep their order.
                schedule.faults.sort_by_key(|t| t.at_ms);
                let candidate = Candidate {
                    config: self.best.config.clone(),
                    schedule,
                };
                match self.fails(candidate, &format!("episode {id}: half as long")) {
                    None => return,
                    Some(true) => {}
                    Some(false) => break,
                }
            }
        }
    }

    /// A shorter run: halved, but never ending before the last fault plus a second.
    fn duration(&mut self) {
        loop {
            let last = self.best.schedule.faults.iter().map(|t| t.at_ms).max();
            let floor = last.map_or(1_000, |at| (at + 1_000).div_ceil(100) * 100);
            let current = self.best.config.duration_ms;
            let shorter = (current / 2).max(floor).max(1_000);
            if shorter >= current {
                return;
            }
            let mut config = self.best.config.clone();
            config.duration_ms = shorter;
            let candidate = Candidate {
                config,
                schedule: self.best.schedule.clone(),
            };
            if self.fails(candidate, &format!("a {shorter} ms run")) != Some(true) {
                return;
            }
        }
    }

    /// A smaller workload, one knob at a time, each the smallest value found that still fails.
    fn workload(&mut self) {
        type Knob = (
            &'static str,
            u32,
            fn(&RunConfig) -> u32,
            fn(&mut RunConfig, u32),
        );
        let knobs: [Knob; 4] = [
            (
                "clients",
                1,
                |c| c.workload.clients,
                |c, v| c.workload.clients = v,
            ),
            (
                "rate",
                1,
                |c| c.workload.rate_per_client,
                |c, v| c.workload.rate_per_client = v,
            ),
            ("keys", 1, |c| c.workload.keys, |c, v| c.workload.keys = v),
            (
                "watchers",
                0,
                |c| c.workload.watchers,
                |c, v| c.workload.watchers = v,
            ),
        ];
        for (name, floor, get, set) in knobs {
            // A binary search for the smallest value that still fails, between the floor and
            // the current value (which fails).
            let (mut low, mut high) = (floor, get(&self.best.config));
            while low < high {
                let mid = low + (high - low) / 2;
                let mut config = self.best.config.clone();
                set(&mut config, mid);
                let candidate = Candidate {
                    config,
                    schedule: self.best.schedule.clone(),
                };
                match self.fails(candidate, &format!("{name} {mid}")) {
                    None => return,
                    Some(true) => high = mid,
                    Some(false) => low = mid + 1,
                }
            }
        }
    }
}

/// Shrinks the failing run `original`, printing each step through `say`. `Err` when it does
/// not fail when replayed (or cannot be replayed at all).
pub fn shrink(
    original: Candidate,
    budget: Budget,
    say: &mut dyn FnMut(&str),
) -> Result<Shrunk, String> {
    // The wall clock, outside any simulation: the shrink's own budget.
    let started = Instant::now();
    let (verdict, before) = run(&original)?;
    let failure = Failure::of(&verdict).ok_or_else(|| {
        format!(
            "the run shows no violation, member panic or liveness failure when replayed (exit code {}): there is nothing to shrink",
            verdict.exit_code()
        )
    })?;
    say(&format!("replayed: fails on {failure}; {before}"));
    let mut shrinker = Shrinker {
        failure: failure.clone(),
        best: original,
        best_size: before,
        runs: 1,
        budget,
        started,
        out_of_budget: false,
        steps: Vec::new(),
        say,
    };
    shrinker.episodes();
    if !shrinker.out_of_budget {
        shrinker.lengths();
    }
    if !shrinker.out_of_budget {
        shrinker.duration();
    }
    if !shrinker.out_of_budget {
        shrinker.workload();
    }
    Ok(Shrunk {
        failure,
        before,
        after: shrinker.best_size,
        smallest: shrinker.best,
        runs: shrinker.runs,
        wall: started.elapsed(),
        budget_reached: shrinker.out_of_budget,
        steps: shrinker.steps,
    })
}

/// `faultline shrink` options.
#[derive(clap::Args, Debug)]
pub struct ShrinkArgs {
    /// The directory of a failing run (`faultline run --out DIR`): its config.json and
    /// schedule.json are read; the smallest run found is written to DIR/shrunk/.
    pub dir: PathBuf,
    /// The most candidate runs to try.
    #[arg(long, default_value_t = 300)]
    pub max_runs: u64,
    /// The most wall time to spend, in seconds; past it the smallest failing run so far is
    /// the answer.
    #[arg(long, default_value_t = 600)]
    pub max_seconds: u64,
}

/// Reads the run saved in `dir`.
pub fn load(dir: &Path) -> Result<Candidate, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    let config_text = read("config.json")?;
    let mut config: RunConfig = serde_json::from_str(&config_text)
        .map_err(|e| format!("{}: {e}", dir.join("config.json").display()))?;
    if config.target != RunTarget::Sim {
        return Err("only a simulated run can be shrunk: real timing cannot be replayed".into());
    }
    config.validate()?;
    let schedule = Schedule::from_json(&read("schedule.json")?)
        .map_err(|e| format!("{}: {e}", dir.join("schedule.json").display()))?;
    config.schedule_file = None;
    Ok(Candidate { config, schedule })
}

/// `faultline shrink DIR`: the exit code is the shrunk run's (the same as the original's),
/// 2 when DIR does not hold a run that fails when replayed, 4 when a run crashed.
pub fn shrink_command(args: &ShrinkArgs) -> u8 {
    let original = match load(&args.dir) {
        Ok(original) => original,
        Err(e) => {
            eprintln!("faultline: {e}");
            return 2;
        }
    };
    if args.max_runs == 0 || args.max_seconds == 0 {
        eprintln!("faultline: --max-runs and --max-seconds must be at least 1");
        return 2;
    }
    let budget = Budget {
        max_runs: args.max_runs,
        max_wall: Duration::from_secs(args.max_seconds),
    };
    let mut say = |line: &str| println!("  {line}");
    println!("faultline shrink: {}", args.dir.display());
    let shrunk = match shrink(original, budget, &mut say) {
        Ok(shrunk) => shrunk,
        Err(e) => {
            eprintln!("faultline: {e}");
            return 2;
        }
    };
    match write_shrunk(&args.dir.join("shrunk"), &shrunk) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("faultline: {e}");
            4
        }
    }
}

/// Writes the smallest run into `out` (its artifacts, report and shrink.txt), prints the
/// summary and the command that replays it; returns its exit code.
fn write_shrunk(out: &Path, shrunk: &Shrunk) -> Result<u8, String> {
    let mut config = shrunk.smallest.config.clone();
    let schedule_path = out.join("schedule.json");
    config.schedule_file = Some(schedule_path.display().to_string());
    // The swarm parameters describe the original's draw, not this schedule: left out.
    let schedule = Schedule {
        swarm: None,
        ..shrunk.smallest.schedule.clone()
    };
    let output = simulate_run_with(&config, schedule.clone())
        .map_err(|e| format!("the shrunk run crashed: {e}"))?;
    let judged = judge_after_writing(
        Some(out),
        |w| write_artifacts(w, &config, &output),
        || judge_run(&config, &output, &config.check_options()),
    );
    let mut summary = String::new();
    let _ = writeln!(summary, "fails on: {}", shrunk.failure);
    let _ = writeln!(summary, "before: {}", shrunk.before);
    let _ = writeln!(summary, "after:  {}", shrunk.after);
    let _ = writeln!(
        summary,
        "{} runs in {:.1} s{}",
        shrunk.runs,
        shrunk.wall.as_secs_f64(),
        if shrunk.budget_reached {
            " (a budget ran out: this is the smallest found so far)"
        } else {
            ""
        }
    );
    let _ = writeln!(summary, "steps:");
    for step in &shrunk.steps {
        let _ = writeln!(summary, "  {step}");
    }
    let _ = writeln!(summary, "schedule:\n{schedule}");
    let _ = writeln!(summary, "replay: {}", config.command());
    std::fs::write(out.join("shrink.txt"), &summary)
        .map_err(|e| format!("{}: {e}", out.join("shrink.txt").display()))?;
    match judged.written {
        Some(Ok(_)) | None => {}
        Some(Err(e)) => return Err(format!("{}: {e}", out.display())),
    }
    print!("{summary}");
    println!("wrote {}", out.display());
    if !shrunk.failure.matches(&judged.verdict) {
        return Err(
            "the shrunk run did not fail the same way when written: a nondeterminism".into(),
        );
    }
    Ok(judged.verdict.exit_code())
}
