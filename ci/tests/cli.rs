//! The `faultline` binary as a user runs it: exit codes, the reproduce line, artifacts, errors.

mod common;

use common::faultline;

#[test]
fn run_with_defaults_passes_prints_the_verdicts_and_the_reproducing_command() {
    let dir = std::env::temp_dir().join(format!("faultline-cli-{}", std::process::id()));
    let (code, stdout, stderr) = faultline(&["run", "--out", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for expected in [
        "fault schedule:",
        "linearizability",
        "replica convergence",
        "liveness",
        "verdict: PASS",
        "reproduce: faultline run --seed 1",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    for file in [
        "history.jsonl",
        "schedule.json",
        "trace.txt",
        "config.json",
        "report.txt",
    ] {
        assert!(dir.join(file).exists(), "{file} not written");
    }
    let history = dir.join("history.jsonl");
    let watches = dir.join("watches.jsonl");
    let (code, stdout, _) = faultline(&["check", history.to_str().unwrap()]);
    assert_eq!(code, 0, "{stdout}");
    // Settling uses a watch of every key from revision 1: the member followers are such watches.
    let (code, stdout, stderr) = faultline(&[
        "check",
        history.to_str().unwrap(),
        "--watches",
        watches.to_str().unwrap(),
        "--settle",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("settled by a watch of every key"),
        "{stdout}"
    );
    let (code, _, stderr) = faultline(&["check", history.to_str().unwrap(), "--settle"]);
    assert_eq!(code, 2, "--settle without --watches: {stderr}");
    let no_keyspace_watch = dir.join("no-keyspace-watch.jsonl");
    std::fs::write(
        &no_keyspace_watch,
        "{\"format\":\"faultline-watches\",\"version\":1}\n",
    )
    .unwrap();
    let (code, _, stderr) = faultline(&[
        "check",
        history.to_str().unwrap(),
        "--watches",
        no_keyspace_watch.to_str().unwrap(),
        "--settle",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--settle needs a watch of every key from revision 1"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_same_seed_prints_the_same_trace_hash() {
    let hash = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("trace hash:"))
            .map(str::to_string)
    };
    let (_, a, _) = faultline(&["run", "--seed", "9", "--duration", "3s"]);
    let (_, b, _) = faultline(&["run", "--seed", "9", "--duration", "3s"]);
    assert!(hash(&a).is_some());
    assert_eq!(hash(&a), hash(&b));
}

#[test]
fn a_planted_stale_read_bug_exits_with_the_safety_code() {
    let (code, stdout, _) = faultline(&[
        "run",
        "--seed",
        "2",
        "--duration",
        "8s",
        "--clients",
        "6",
        "--bug",
        "stale-reads",
    ]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("VIOLATION") && stdout.contains("--bug stale-reads"),
        "{stdout}"
    );
}

#[test]
fn bad_options_and_bad_files_get_clear_errors() {
    let (code, _, stderr) = faultline(&["run", "--nodes", "4"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--nodes must be 1, 3, 5 or 7"), "{stderr}");
    let (code, _, stderr) = faultline(&["run", "--duration", "ten"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a duration"), "{stderr}");
    let (code, _, stderr) = faultline(&["run", "--bug", "nope"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("known: stale-reads"), "{stderr}");
    let (code, _, stderr) = faultline(&["run", "--profile", "nope"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("known: snapshot-churn"), "{stderr}");
    let (code, _, stderr) = faultline(&["run", "--defrag-every", "10ms"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--defrag-every must be"), "{stderr}");
    let (code, _, stderr) = faultline(&["run", "--compaction-batch-limit", "0"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--compaction-batch-limit must be"),
        "{stderr}"
    );
    let file = std::env::temp_dir().join(format!("faultline-bad-{}.jsonl", std::process::id()));
    std::fs::write(
        &file,
        "{\"format\":\"faultline-history\",\"version\":1}\n{\"id\":0,\"client\":1}\n",
    )
    .unwrap();
    let (code, _, stderr) = faultline(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("line 2"), "{stderr}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn check_memory_bounds_the_checker_and_is_recorded_with_the_run() {
    let dir = std::env::temp_dir().join(format!("faultline-cli-memory-{}", std::process::id()));
    let out = dir.to_str().unwrap();
    let (code, stdout, stderr) = faultline(&[
        "run",
        "--duration",
        "2s",
        "--check-memory",
        "1KiB",
        "--out",
        out,
    ]);
    assert_eq!(code, 5, "1 KiB cannot hold a search:\n{stdout}{stderr}");
    assert!(
        stdout.contains("memory limit of 1.0 KiB reached") && stdout.contains("UNKNOWN"),
        "{stdout}"
    );
    assert!(
        stdout.contains("reproduce: faultline run --seed 1")
            && stdout.contains(" --check-memory 1KiB"),
        "{stdout}"
    );
    let config = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(config.contains("\"check_memory_bytes\": 1024"), "{config}");
    let history = dir.join("history.jsonl");
    let history = history.to_str().unwrap();
    let (code, stdout, _) = faultline(&["check", history, "--check-memory", "1000"]);
    assert_eq!(code, 5, "{stdout}");
    assert!(
        stdout.contains("memory limit of 1000 B reached"),
        "{stdout}"
    );
    let (code, stdout, _) = faultline(&["check", history, "--check-memory", "512MiB"]);
    assert_eq!(code, 0, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_check_memory_sizes_get_clear_errors() {
    for args in [
        &["run", "--check-memory", "0"][..],
        &["run", "--check-memory", "lots"],
        &["check", "history.jsonl", "--check-memory", "4 gigs"],
        &["check", "history.jsonl", "--check-memory=-1G"],
    ] {
        let (code, stdout, stderr) = faultline(args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("--check-memory")
                && (stderr.contains("no memory at all")
                    || stderr.contains("is not a size")
                    || stderr.contains("unknown unit")),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn failpoints_lists_every_crash_point_with_where_it_sits() {
    let (code, stdout, stderr) = faultline(&["failpoints"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for point in faultline_store::node::failpoint::FAILPOINTS {
        let line = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(point.name))
            .unwrap_or_else(|| panic!("{} not listed:\n{stdout}", point.name));
        assert!(line.ends_with(point.at), "{line}");
    }
    let (code, help, _) = faultline(&["run", "--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("crash-points") && help.contains("faultline failpoints"),
        "{help}"
    );
}

#[test]
fn a_crash_points_run_passes_and_reports_every_point_it_armed() {
    let dir = std::env::temp_dir().join(format!("faultline-cli-points-{}", std::process::id()));
    let out = dir.to_str().unwrap();
    let args = [
        "run",
        "--faults",
        "crash-points",
        "--seed",
        "3",
        "--duration",
        "8s",
        "--out",
        out,
    ];
    let (code, stdout, stderr) = faultline(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("reproduce: faultline run --seed 3")
            && stdout.contains("--faults crash-points"),
        "{stdout}"
    );
    let schedule: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("schedule.json")).unwrap()).unwrap();
    let armed: Vec<(u64, String)> = schedule["faults"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["fault"] == "failpoint")
        .map(|f| {
            (
                f["node"].as_u64().unwrap(),
                f["point"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(!armed.is_empty(), "{schedule}");
    let report = std::fs::read_to_string(dir.join("report.txt")).unwrap();
    let trace = std::fs::read_to_string(dir.join("trace.txt")).unwrap();
    assert!(report.contains("crash points armed:"), "{report}");
    assert!(report.contains("crash points reached"), "{report}");
    for (node, point) in &armed {
        let line = report
            .lines()
            .find(|l| l.starts_with(&format!("  n{node} {point} ")))
            .unwrap_or_else(|| panic!("n{node} {point} not in the report:\n{report}"));
        assert!(
            line.contains("never reached")
                || line.contains("triggered")
                || line.contains("not triggered"),
            "{line}"
        );
        assert!(
            trace.contains(&format!("n{node} failpoint {point} cleared: ")),
            "{trace}"
        );
    }
    let hash = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("trace hash:"))
            .map(str::to_string)
    };
    let (_, again, _) = faultline(&args[..args.len() - 2]);
    assert!(hash(&stdout).is_some());
    assert_eq!(
        hash(&stdout),
        hash(&again),
        "the same seed gives the same run"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
