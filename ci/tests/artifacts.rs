//! A run's artifacts are on disk, whole, before any checker starts: a checker that crashes (or
//! is killed, or runs out of memory) leaves the run to replay and check again. Only the report
//! waits for the verdict.

use std::path::{Path, PathBuf};

use faultline::artifacts::{judge_after_writing, REPORT_FILE};
use faultline::check::judge_run;
use faultline::run::{simulate_run, write_artifacts, RunConfig, SimOutput};
use faultline_checkers::history::History;
use faultline_checkers::watch::WatchHistory;
use faultline_workloads::Schedule;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A short run with faults: a few hundred operations, a schedule, watch streams.
fn short_run() -> (RunConfig, SimOutput) {
    let config = RunConfig {
        seed: 3,
        duration_ms: 3_000,
        ..RunConfig::default()
    };
    let output = simulate_run(&config).expect("the run completes");
    assert!(!output.history.operations.is_empty());
    (config, output)
}

fn open(path: &Path) -> std::io::BufReader<std::fs::File> {
    std::io::BufReader::new(
        std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

/// Every artifact but the report reads back as exactly what the run produced.
fn assert_run_on_disk(dir: &Path, config: &RunConfig, output: &SimOutput) {
    let history = History::read_from(open(&dir.join("history.jsonl"))).expect("a whole history");
    assert_eq!(history, output.history);
    let watches =
        WatchHistory::read_from(open(&dir.join("watches.jsonl"))).expect("whole watch streams");
    assert_eq!(watches, output.watches);
    let schedule: Schedule =
        serde_json::from_reader(open(&dir.join("schedule.json"))).expect("a whole schedule");
    assert_eq!(schedule, output.schedule);
    let saved: RunConfig =
        serde_json::from_reader(open(&dir.join("config.json"))).expect("a whole config");
    assert_eq!(&saved, config);
    let trace = std::fs::read_to_string(dir.join("trace.txt")).expect("a trace");
    assert_eq!(trace, output.trace.join("\n") + "\n");
}

#[test]
fn the_run_is_on_disk_whole_before_the_checkers_start_and_the_report_after() {
    let (config, output) = short_run();
    let dir = scratch("artifacts-first");
    let mut checked = false;
    let judged = judge_after_writing(
        Some(&dir),
        |out| write_artifacts(out, &config, &output),
        || {
            assert_run_on_disk(&dir, &config, &output);
            assert!(
                !dir.join(REPORT_FILE).exists(),
                "the report is written before the verdict"
            );
            checked = true;
            judge_run(&config, &output, &config.check_options())
        },
    );
    assert!(checked, "the checkers ran");
    assert!(judged.verdict.passed(), "{}", judged.report);
    let written = judged.written.expect("a directory").expect("written");
    let names: Vec<_> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "history.jsonl",
            "schedule.json",
            "watches.jsonl",
            "trace.txt",
            "config.json",
            REPORT_FILE
        ]
    );
    let report = std::fs::read_to_string(dir.join(REPORT_FILE)).expect("the report");
    assert_eq!(report, judged.report);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_checker_that_crashes_leaves_the_run_on_disk_without_a_report() {
    let (config, output) = short_run();
    let dir = scratch("artifacts-crash");
    let crashed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        judge_after_writing(
            Some(&dir),
            |out| write_artifacts(out, &config, &output),
            || panic!("a checker crashed"),
        )
    }));
    assert!(crashed.is_err(), "the checker's panic goes on up");
    assert_run_on_disk(&dir, &config, &output);
    assert!(
        !dir.join(REPORT_FILE).exists(),
        "no report without a verdict"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_directory_the_run_is_only_judged() {
    let (config, output) = short_run();
    let judged = judge_after_writing(
        None,
        |_| panic!("nothing to write"),
        || judge_run(&config, &output, &config.check_options()),
    );
    assert!(judged.written.is_none());
    assert_eq!(judged.report, judged.verdict.render());
}
