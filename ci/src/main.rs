//! `faultline`: chaos runs on the reference store (or, with `--target etcd`, on real etcd
//! processes), and checks of recorded histories.
//!
//! Exit codes: 0 every check passed; 1 a safety violation; 3 a liveness failure; 4 the run
//! itself crashed; 5 a verdict is unknown (the checker's budget ran out); 2 bad usage or input.
//! `faultline sweep` exits with the worst of its seeds' findings (see `faultline::sweep`).
//! 6 a member panicked (a finding of the store, not a crash of the run). `faultline shrink`
//! exits with the shrunk run's code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use faultline::artifacts::judge_after_writing;
use faultline::check::{check_history, CheckOptions};
use faultline::history_file::{self, HistoryFile};
use faultline::profile::Profile;
use faultline::real::{
    judge_real_run, remove_member_data, run_real, write_real_artifacts, RealError,
    NOT_DETERMINISTIC,
};
use faultline::run::{write_artifacts, RunConfig, RunTarget};
use faultline::size::parse_size_bytes;
use faultline::sweep::{SweepAction, SweepArgs};
use faultline_checkers::watch::WatchHistory;
use faultline_store::node::failpoint::FAILPOINTS;
use faultline_store::PlantedBugs;
use faultline_workloads::nemesis::SwarmKind;
use faultline_workloads::traffic::OpMix;
use faultline_workloads::{FaultProfile, WorkloadKind};

/// Prints a line to stdout; a closed pipe (`faultline run | head`) is not an error.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Says which artifacts were written, or why they could not be (exit code 2).
fn listed(
    dir: &std::path::Path,
    written: std::io::Result<Vec<std::path::PathBuf>>,
) -> Result<(), ExitCode> {
    match written {
        Ok(files) => {
            for f in files {
                say!("wrote {}", f.display());
            }
            Ok(())
        }
        Err(e) => {
            eprintln!("faultline: writing artifacts to {}: {e}", dir.display());
            Err(ExitCode::from(2))
        }
    }
}

#[derive(Parser, Debug)]
#[command(
    name = "faultline",
    version,
    about = "Deterministic chaos testing of an etcd-like store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the reference store under traffic and faults from one seed, then checks the history.
    Run(Box<RunArgs>),
    /// Checks a recorded history file: a Faultline history (JSON Lines, format
    /// faultline-history version 1), a Jepsen etcd log or a porcupine kv log, told apart by
    /// their content.
    Check {
        /// The history file.
        file: PathBuf,
        /// The checker's wall-time budget, e.g. 60s.
        #[arg(long, default_value = "60s", value_parser = parse_duration_ms)]
        timeout: u64,
        /// The most memory the checker may hold, e.g. 512MiB, 4GiB, 2G or bytes; past it the
        /// verdict is unknown.
        #[arg(long, default_value = "4GiB", value_parser = parse_size_bytes)]
        check_memory: u64,
        /// A watch history (JSON Lines, format faultline-watches version 1) to judge too, against
        /// the committed history reconstructed from both files.
        #[arg(long)]
        watches: Option<PathBuf>,
        /// Settle writes of unknown outcome with the watch of every key from revision 1 in
        /// --watches (real mode records one) before checking.
        #[arg(long)]
        settle: bool,
    },
    /// Lists the reference store's crash points (after etcd's gofail failpoints), each with where
    /// it sits; `--faults crash-points` arms them.
    Failpoints,
    /// Runs `faultline run` for each seed of a range (`--out DIR` holds the sweep), a few at a
    /// time, keeping the failing seeds' artifacts; `faultline sweep merge` joins shards.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Sweep(Box<SweepCommand>),
    /// Finds a smaller run that fails the same way as the failing run in DIR (same checker,
    /// same property): fewer fault episodes, shorter ones, a shorter run, a smaller workload.
    /// Prints each step; writes the smallest run, its schedule and command to DIR/shrunk/.
    Shrink(faultline::shrink::ShrinkArgs),
}

#[derive(clap::Args, Debug)]
struct SweepCommand {
    #[command(subcommand)]
    action: Option<SweepAction>,
    #[command(flatten)]
    sweep: SweepArgs,
    /// The options of every run (--out is the sweep's directory; --seed is refused: use --seeds).
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// What to run against: sim (the reference store in a deterministic simulation) or etcd
    /// (1 or 3 real etcd processes on loopback, with kills and pauses; not deterministic).
    #[arg(long, default_value = "sim", value_parser = RunTarget::parse)]
    target: RunTarget,
    /// The seed: the same seed gives the same run (in real mode: the same traffic and fault
    /// choices, not the same timing) [default: 1].
    #[arg(long)]
    seed: Option<u64>,
    /// A named profile: the scenario knobs a class of etcd bugs needs (snapshot-churn,
    /// lone-member, defrag, compaction; see README). Options given here win over it.
    #[arg(long, value_parser = Profile::parse)]
    profile: Option<Profile>,
    /// Cluster members: 1, 3, 5 or 7 (1 or 3 with --target etcd) [default: 3].
    #[arg(long)]
    nodes: Option<usize>,
    /// Length of the fault phase in simulated time, e.g. 10s, 1500ms, 2m.
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms)]
    duration: u64,
    /// Traffic: etcd-kv or kubernetes.
    #[arg(long, default_value = "etcd-kv", value_parser = WorkloadKind::parse)]
    workload: WorkloadKind,
    /// Faults: none, default, partitions, crashes, crash-points or swarm. crash-points arms the
    /// store's named crash points (`faultline failpoints` lists them) on random members, to
    /// crash or stall a member on a point's n-th hit; default and crashes arm one now and then
    /// too. swarm draws the fault parameters themselves from the seed (kinds, rates, lengths,
    /// overlap, leader targeting, clock skew) and prints them. [default: default]
    #[arg(long, value_parser = FaultProfile::parse)]
    faults: Option<FaultProfile>,
    /// Replay the faults of a schedule file (a run's schedule.json, or one written by hand)
    /// instead of drawing them; traffic still comes from the seed.
    #[arg(long)]
    schedule: Option<PathBuf>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Operations per second per client [default: 20].
    #[arg(long)]
    rate: Option<u32>,
    /// Keys in the pool.
    #[arg(long, default_value_t = 10)]
    keys: u32,
    /// Watchers opening watches around the current revision (besides the informer and one
    /// follower per member) [default: 2; real mode runs none].
    #[arg(long)]
    watchers: Option<u32>,
    /// With --faults swarm: kinds of episode always on at the highest weight, beside those the
    /// seed draws, e.g. leader-pause,crash-point (the kind names a swarm schedule prints).
    #[arg(long, value_delimiter = ',', value_parser = SwarmKind::parse)]
    swarm_focus: Vec<SwarmKind>,
    /// Watches each of those watchers opens at once on one stream, 1 to this many, as etcd's
    /// client shares one stream among a client's watches [default: 1].
    #[arg(long)]
    watches_per_stream: Option<u32>,
    /// Clients that talk to one member only, as the API servers of a stacked Kubernetes
    /// control plane talk to their local member (client i to the i-th member) [default: 0].
    #[arg(long)]
    pinned_clients: Option<u32>,
    /// Operation weights of the etcd-kv traffic that differ from the defaults, e.g.
    /// put=20,delete=20 (get, list, stale_get, put, delete, multi_txn, cas, lease_put,
    /// lease_revoke).
    #[arg(long, value_parser = OpMix::parse)]
    mix: Option<OpMix>,
    /// How often the compaction client compacts (0 turns it off).
    /// [default: 3s]
    #[arg(long, value_parser = parse_duration_ms)]
    compact_every: Option<u64>,
    /// Revisions of writes after which a member's backend commits at once (etcd's
    /// --backend-batch-limit, scaled) [default: 1000; simulation only].
    #[arg(long)]
    backend_batch_limit: Option<u64>,
    /// Deletes per compaction batch, each its own commit (etcd's compaction batch limit,
    /// scaled) [default: 100; simulation only].
    #[arg(long)]
    compaction_batch_limit: Option<usize>,
    /// How often a maintenance client defragments a random member, e.g. 500ms (0: never)
    /// [default: 0; simulation only].
    #[arg(long, value_parser = parse_duration_ms)]
    defrag_every: Option<u64>,
    /// Applied entries between snapshots [default: 1000; simulation only].
    #[arg(long)]
    snapshot_entries: Option<u64>,
    /// A planted bug to switch on (repeatable): stale-reads, watch-snapshot-replay,
    /// watch-compact-revision, watch-progress-overtakes, watch-duplicate-event.
    #[arg(long = "bug")]
    bugs: Vec<String>,
    /// Where to write the history, schedule, trace and report (in real mode also the etcd
    /// members' logs, under etcd/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The checker's wall-time budget.
    #[arg(long, default_value = "60s", value_parser = parse_duration_ms)]
    check_timeout: u64,
    /// The most memory the checker may hold, e.g. 512MiB, 4GiB, 2G or bytes; past it the
    /// verdict is unknown.
    #[arg(long, default_value = "4GiB", value_parser = parse_size_bytes)]
    check_memory: u64,
}

/// Parses `10s`, `1500ms`, `2m` or a bare number of seconds into milliseconds.
fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let ms = match unit {
        "ms" => value,
        "s" => value * 1000.0,
        "m" | "min" => value * 60_000.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s or m"
            ))
        }
    };
    if !ms.is_finite() || !(0.0..=1e12).contains(&ms) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(ms as u64)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(*args),
        Command::Check {
            file,
            timeout,
            check_memory,
            watches,
            settle,
        } => {
            let options = CheckOptions {
                timeout_ms: timeout,
                max_bytes: usize::try_from(check_memory).unwrap_or(usize::MAX),
            };
            check(file, &options, watches, settle)
        }
        Command::Failpoints => {
            list_failpoints();
            ExitCode::SUCCESS
        }
        Command::Sweep(args) => sweep(*args),
        Command::Shrink(args) => ExitCode::from(faultline::shrink::shrink_command(&args)),
    }
}

/// `faultline sweep` and `faultline sweep merge` (see `faultline::sweep`).
fn sweep(args: SweepCommand) -> ExitCode {
    if let Some(SweepAction::Merge(merge)) = &args.action {
        return ExitCode::from(faultline::sweep::merge_command(merge));
    }
    if args.run.seed.is_some() {
        eprintln!("faultline: a sweep takes --seeds A..B, not --seed");
        return ExitCode::from(2);
    }
    let Some(out) = args.run.out.clone() else {
        eprintln!("faultline: a sweep needs --out DIR (its summary and the failing seeds' runs)");
        return ExitCode::from(2);
    };
    match checked_config(&args.run) {
        Ok(config) => ExitCode::from(faultline::sweep::sweep_command(&config, &out, &args.sweep)),
        Err(e) => {
            eprintln!("faultline: {e}");
            ExitCode::from(2)
        }
    }
}

/// `faultline failpoints`: every crash point, in the order a write meets them, with where it
/// sits.
fn list_failpoints() {
    let width = FAILPOINTS.iter().map(|p| p.name.len()).max().unwrap_or(0);
    say!(
        "crash points ({}), armed by `faultline run --faults crash-points` (and now and then by \
         default and crashes):",
        FAILPOINTS.len()
    );
    for point in FAILPOINTS {
        say!("  {:<width$}  {}", point.name, point.at);
    }
}

/// Options that only mean something in a simulation, refused in real mode with the reason.
fn sim_only_options(args: &RunArgs) -> Result<(), String> {
    if args.snapshot_entries.is_some() {
        return Err(
            "--snapshot-entries sets the reference store's snapshots; etcd keeps its own \
             (--target etcd)"
                .into(),
        );
    }
    if !args.bugs.is_empty() {
        return Err(
            "--bug plants bugs in the reference store; a real etcd has only its own \
             (--target etcd)"
                .into(),
        );
    }
    if args.watchers.is_some_and(|w| w > 0) {
        return Err(
            "real mode runs without watchers for now: drop --watchers (or pass --watchers 0) \
             with --target etcd"
                .into(),
        );
    }
    Ok(())
}

/// The run the options describe: the defaults, then the profile, then what was given.
fn run_config(args: &RunArgs, bugs: PlantedBugs) -> Result<RunConfig, String> {
    let mut config = RunConfig {
        target: args.target,
        seed: args.seed.unwrap_or(1),
        duration_ms: args.duration,
        bugs,
        check_timeout_ms: args.check_timeout,
        check_memory_bytes: args.check_memory,
        ..RunConfig::default()
    };
    config.workload.kind = args.workload;
    config.workload.clients = args.clients;
    config.workload.keys = args.keys;
    if let Some(profile) = &args.profile {
        profile.apply(&mut config)?;
        config.profile = Some(profile.name.to_string());
    }
    if let Some(nodes) = args.nodes {
        config.nodes = nodes;
    }
    if let Some(faults) = args.faults {
        config.faults = faults;
    }
    if let Some(file) = &args.schedule {
        config.schedule_file = Some(file.display().to_string());
    }
    if let Some(rate) = args.rate {
        config.workload.rate_per_client = rate;
    }
    if let Some(every) = args.compact_every {
        config.workload.compact_every_ms = every;
    }
    if let Some(mix) = &args.mix {
        config.workload.mix = mix.clone();
    }
    if let Some(entries) = args.snapshot_entries {
        config.snapshot_entries = entries;
    }
    if let Some(limit) = args.backend_batch_limit {
        config.backend.batch_limit = limit;
    }
    if let Some(limit) = args.compaction_batch_limit {
        config.backend.compaction_batch_limit = limit;
    }
    if let Some(every) = args.defrag_every {
        config.backend.defrag_every_ms = every;
    }
    if let Some(pinned) = args.pinned_clients {
        config.workload.pinned_clients = pinned;
    }
    if !args.swarm_focus.is_empty() {
        config.swarm_focus = args.swarm_focus.clone();
    }
    if let Some(per_stream) = args.watches_per_stream {
        config.workload.watches_per_stream = per_stream;
    }
    config.workload.watchers = match args.target {
        RunTarget::Sim => args.watchers.unwrap_or(config.workload.watchers),
        RunTarget::Etcd => 0,
    };
    Ok(config)
}

/// The run the options describe, checked: what `faultline run` would refuse is an error.
fn checked_config(args: &RunArgs) -> Result<RunConfig, String> {
    if args.target == RunTarget::Etcd {
        sim_only_options(args)?;
    }
    let mut bugs = PlantedBugs::default();
    for bug in &args.bugs {
        bugs.enable(bug)?;
    }
    let config = run_config(args, bugs)?;
    config.validate()?;
    Ok(config)
}

fn run(args: RunArgs) -> ExitCode {
    let config = match checked_config(&args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("faultline: {e}");
            return ExitCode::from(2);
        }
    };
    if config.target == RunTarget::Etcd {
        if config.schedule_file.is_some() {
            eprintln!("faultline: --schedule needs the simulation: real timing cannot be replayed");
            return ExitCode::from(2);
        }
        return run_real_mode(&config, args.out.as_deref());
    }
    // A schedule file that does not read is the user's to fix, not a crash of the run.
    let schedule = match faultline::run::schedule_for(&config) {
        Ok(schedule) => schedule,
        Err(e) => {
            eprintln!("faultline: {e}");
            return ExitCode::from(2);
        }
    };
    say!("faultline run: seed {}", config.seed);
    say!(
        "options: {}",
        serde_json::to_string(&config).expect("configs serialise")
    );
    let output = match faultline::run::simulate_run_with(&config, schedule) {
        Ok(output) => output,
        Err(panic) => {
            eprintln!("the run crashed: {panic}");
            eprintln!("reproduce: {}", config.command());
            return ExitCode::from(4);
        }
    };
    say!("fault schedule:\n{}", output.schedule);
    let options = config.check_options();
    // The run goes to disk before any checker starts; the report after.
    // Wall time, outside the simulation: on stderr, so that stdout stays the same for a seed.
    let mut checking = std::time::Duration::ZERO;
    let judged = judge_after_writing(
        args.out.as_deref(),
        |out| write_artifacts(out, &config, &output),
        || {
            let started = std::time::Instant::now();
            let verdict = faultline::check::judge_run(&config, &output, &options);
            checking = started.elapsed();
            verdict
        },
    );
    let verdict = judged.verdict;
    say!("{}", judged.report);
    eprintln!("checking took {:.3}s", checking.as_secs_f64());
    if let (Some(dir), Some(written)) = (&args.out, judged.written) {
        if let Err(code) = listed(dir, written) {
            return code;
        }
    }
    say!("reproduce: {}", config.command());
    ExitCode::from(verdict.exit_code())
}

/// `faultline run --target etcd`: real etcd processes, real faults, the same checkers.
fn run_real_mode(config: &RunConfig, out: Option<&Path>) -> ExitCode {
    say!("faultline run --target etcd: seed {}", config.seed);
    say!("{NOT_DETERMINISTIC}");
    say!(
        "options: {}",
        serde_json::to_string(config).expect("configs serialise")
    );
    // The members keep their data and logs beside the artifacts, or in a directory of their own
    // that goes away after the run.
    let (cluster_dir, temporary) = match out {
        Some(dir) => (dir.join("etcd"), false),
        None => {
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let dir =
                std::env::temp_dir().join(format!("faultline-etcd-{}-{stamp}", std::process::id()));
            (dir, true)
        }
    };
    let output = run_real(config, &cluster_dir);
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            if temporary {
                let _ = std::fs::remove_dir_all(&cluster_dir);
            }
            return match e {
                RealError::Setup(e) => {
                    eprintln!("faultline: {e}");
                    ExitCode::from(2)
                }
                RealError::Run(e) => {
                    eprintln!("the run crashed: {e}");
                    eprintln!("member logs: {}", cluster_dir.display());
                    eprintln!("rerun: {}", config.command());
                    ExitCode::from(4)
                }
            };
        }
    };
    say!("trace:");
    for line in &output.trace {
        say!("{line}");
    }
    let options = config.check_options();
    // The run goes to disk before any checker starts; the report after.
    let judged = judge_after_writing(
        out,
        |artifacts| write_real_artifacts(artifacts, config, &output),
        || {
            let mut verdict = judge_real_run(config, &output, &options);
            verdict.footer.push(if temporary {
                "member logs: removed with their temporary directory (--out keeps them)".to_string()
            } else {
                format!("member logs: {}", cluster_dir.display())
            });
            verdict
        },
    );
    let verdict = judged.verdict;
    say!("{}", judged.report);
    if temporary {
        let _ = std::fs::remove_dir_all(&cluster_dir);
    } else if verdict.passed() {
        // Keep the members' logs; their data (64 MB of preallocated WAL each) only when the
        // verdict needs looking into.
        remove_member_data(&cluster_dir, config.nodes);
    }
    if let (Some(dir), Some(written)) = (out, judged.written) {
        if let Err(code) = listed(dir, written) {
            return code;
        }
    }
    say!(
        "rerun (same traffic and fault choices, new timing): {}",
        config.command()
    );
    ExitCode::from(verdict.exit_code())
}

fn check(
    file: PathBuf,
    options: &CheckOptions,
    watches: Option<PathBuf>,
    settle: bool,
) -> ExitCode {
    fn open(file: &PathBuf) -> Result<std::io::BufReader<std::fs::File>, ExitCode> {
        std::fs::File::open(file)
            .map(std::io::BufReader::new)
            .map_err(|e| {
                eprintln!("faultline: {}: {e}", file.display());
                ExitCode::from(2)
            })
    }
    let bytes = match std::fs::read(&file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("faultline: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let history = match history_file::read(&bytes) {
        Ok(HistoryFile::Faultline(history)) => history,
        Ok(corpus) => {
            if watches.is_some() || settle {
                eprintln!(
                    "faultline: {}: --watches and --settle go with a Faultline history only",
                    file.display()
                );
                return ExitCode::from(2);
            }
            let verdict = history_file::judge_corpus(&corpus, options)
                .expect("a corpus format has a verdict");
            say!("{}", verdict.render());
            return ExitCode::from(verdict.exit_code());
        }
        Err(e) => {
            eprintln!("faultline: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let watches = match watches {
        None => None,
        Some(path) => match open(&path).map(WatchHistory::read_from) {
            Ok(Ok(w)) => Some(w),
            Ok(Err(e)) => {
                eprintln!("faultline: {}: {e}", path.display());
                return ExitCode::from(2);
            }
            Err(code) => return code,
        },
    };
    let history = match (settle, &watches) {
        (true, Some(watches)) => match faultline_checkers::resolve::keyspace_events(watches) {
            Some(events) => {
                let (resolved, resolution) =
                    faultline_checkers::resolve::resolve_unknown_writes(&history, &events);
                say!("{}", resolution.summary());
                resolved
            }
            None => {
                eprintln!(
                    "faultline: --settle needs a watch of every key from revision 1 (key and \
                     range_end \"\\u0000\", start_revision 1) in the --watches file"
                );
                return ExitCode::from(2);
            }
        },
        (true, None) => {
            eprintln!("faultline: --settle needs --watches (a watch of every key from revision 1)");
            return ExitCode::from(2);
        }
        (false, _) => history,
    };
    let verdict = check_history(&history, watches.as_ref(), options);
    say!("{}", verdict.render());
    ExitCode::from(verdict.exit_code())
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_duration_ms("10s"), Ok(10_000));
        assert_eq!(parse_duration_ms("1500ms"), Ok(1_500));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("3"), Ok(3_000));
        assert!(parse_duration_ms("ten").is_err());
        assert!(parse_duration_ms("5h").is_err());
        assert!(parse_duration_ms("-5s").is_err());
    }
}
