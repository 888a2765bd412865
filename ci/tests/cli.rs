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
