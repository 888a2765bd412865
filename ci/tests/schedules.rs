//! Swarm runs, schedule files, member panics and shrinking, through the binary as a user runs
//! them.

mod common;

use std::path::{Path, PathBuf};

use common::faultline;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn line_with<'a>(out: &'a str, prefix: &str) -> Option<&'a str> {
    out.lines().find(|l| l.trim_start().starts_with(prefix))
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

#[test]
fn a_swarm_run_prints_its_drawn_parameters_and_its_saved_schedule_replays_it_exactly() {
    let dir = scratch("swarm");
    let out = dir.to_str().unwrap();
    let (code, first, stderr) =
        faultline(&["run", "--faults", "swarm", "--seed", "4", "--out", out]);
    assert_eq!(code, 0, "{first}{stderr}");
    let swarm = line_with(&first, "swarm:").expect("the drawn kinds are printed");
    assert!(swarm.contains(" x"), "{swarm}");
    assert!(first.contains("episodes "), "{first}");
    assert!(first.contains("clocks n1"), "{first}");
    let schedule = dir.join("schedule.json");
    let (code, replay, stderr) = faultline(&[
        "run",
        "--seed",
        "4",
        "--schedule",
        schedule.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{replay}{stderr}");
    let hash = |out: &str| line_with(out, "trace hash:").map(str::to_string);
    assert!(hash(&first).is_some());
    assert_eq!(
        hash(&first),
        hash(&replay),
        "the replayed schedule must give the same run"
    );
    assert!(
        line_with(&replay, "reproduce:").is_some_and(|l| l.contains("--schedule")),
        "{replay}"
    );
}

#[test]
fn a_bad_schedule_file_is_refused_naming_the_entry() {
    let dir = scratch("bad-schedule");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        (
            r#"{"faults":[{"at_ms":10,"fault":"pause","node":1},{"at_ms":20,"fault":"teleport","node":1}]}"#,
            "entry 2",
        ),
        (
            r#"{"faults":[{"at_ms":10,"fault":"crash","node":9,"torn":false}]}"#,
            "n9",
        ),
        (r#"{"faults": ["#, "schedule"),
    ];
    for (i, (text, expected)) in cases.iter().enumerate() {
        let file = write(&dir.join(format!("bad-{i}.json")), text);
        let (code, stdout, stderr) = faultline(&["run", "--schedule", &file]);
        assert_eq!(code, 2, "{text}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{text}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let (code, _, stderr) = faultline(&["run", "--schedule", "/nonexistent/schedule.json"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn a_member_panic_is_a_finding_with_its_member_place_time_and_fault() {
    let dir = scratch("panic");
    std::fs::create_dir_all(&dir).unwrap();
    let schedule = write(
        &dir.join("panic.json"),
        r#"{"faults":[{"at_ms":2000,"fault":"failpoint","node":2,"point":"beforeCommit","hit":1,"action":"panic"}]}"#,
    );
    let out = dir.join("run");
    let (code, stdout, stderr) = faultline(&[
        "run",
        "--schedule",
        &schedule,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 6, "{stdout}{stderr}");
    let panicked = line_with(&stdout, "n2 panicked at").expect("the member is named");
    assert!(panicked.contains("failpoint.rs"), "{panicked}");
    assert!(panicked.contains("armed to panic"), "{panicked}");
    assert!(
        stdout.contains("the last faults before it:")
            && stdout.contains("failpoint n2 beforeCommit panic"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verdict: FAIL: a member panicked"),
        "{stdout}"
    );
    for file in [
        "history.jsonl",
        "schedule.json",
        "trace.txt",
        "config.json",
        "report.txt",
    ] {
        assert!(out.join(file).exists(), "{file} not written");
    }
    // The other members went on: the cluster healed and served the liveness check.
    assert!(
        line_with(&stdout, "liveness").is_some_and(|l| l.contains("PASS")),
        "{stdout}"
    );
}

#[test]
fn shrink_finds_a_smaller_run_that_fails_the_same_way_and_writes_its_replay() {
    let dir = scratch("shrink");
    let out = dir.to_str().unwrap();
    let args = [
        "run",
        "--faults",
        "swarm",
        "--seed",
        "3",
        "--duration",
        "8s",
        "--clients",
        "6",
        "--bug",
        "stale-reads",
        "--out",
        out,
    ];
    let (code, run, stderr) = faultline(&args);
    assert_eq!(code, 1, "{run}{stderr}");
    let (code, stdout, stderr) = faultline(&["shrink", out]);
    assert_eq!(
        code, 1,
        "the shrunk run fails as the original did: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("fails on: linearizability violation"),
        "{stdout}"
    );
    let number = |prefix: &str, what: &str| -> f64 {
        let line = line_with(&stdout, prefix).unwrap_or_else(|| panic!("{prefix}\n{stdout}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| w.trim_end_matches(',') == what)
            .unwrap_or_else(|| panic!("{what} in {line}"));
        words[at - 1].parse().unwrap()
    };
    assert!(
        number("before:", "faults") > number("after:", "faults"),
        "{stdout}"
    );
    assert!(
        number("before:", "operations") > number("after:", "operations"),
        "{stdout}"
    );
    let shrunk = dir.join("shrunk");
    for file in ["schedule.json", "config.json", "report.txt", "shrink.txt"] {
        assert!(shrunk.join(file).exists(), "{file} not written");
    }
    // The printed command replays the smallest run, and it fails the same way.
    let replay = line_with(&stdout, "replay: faultline run").expect("a replay command");
    let words: Vec<&str> = replay
        .trim_start_matches("replay: faultline ")
        .split_whitespace()
        .collect();
    let (code, again, stderr) = faultline(&words);
    assert_eq!(code, 1, "{again}{stderr}");
    assert!(
        line_with(&again, "linearizability").is_some_and(|l| l.contains("VIOLATION")),
        "{again}"
    );
}

#[test]
fn shrink_refuses_a_directory_without_a_failing_run() {
    let dir = scratch("shrink-pass");
    let out = dir.to_str().unwrap();
    let (code, _, _) = faultline(&["run", "--duration", "2s", "--out", out]);
    assert_eq!(code, 0);
    let (code, _, stderr) = faultline(&["shrink", out]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("nothing to shrink"), "{stderr}");
    let (code, _, stderr) = faultline(&["shrink", "/nonexistent/run"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cannot read"), "{stderr}");
}
