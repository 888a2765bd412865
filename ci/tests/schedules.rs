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
        (
            r#"{"faults":[{"at_ms":10,"fault":"pause","node":1,"pick":{"reached":0}}]}"#,
            "only a crash-point fault",
        ),
        (
            r#"{"faults":[{"at_ms":10,"fault":"clear_failpoint","node":1,"point":"raftBeforeSave","episode":3,"pick":"picked"}]}"#,
            "needs an earlier",
        ),
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
fn swarm_focus_is_refused_without_swarm_faults_for_kinds_a_cluster_lacks_and_unknown_kinds() {
    let cases: [(&[&str], &str); 3] = [
        (&["--swarm-focus", "leader-pause"], "needs --faults swarm"),
        (
            &[
                "--faults",
                "swarm",
                "--nodes",
                "1",
                "--swarm-focus",
                "leader-pause",
            ],
            "needs more than one member",
        ),
        (
            &["--faults", "swarm", "--swarm-focus", "teleport"],
            "teleport",
        ),
    ];
    for (args, expected) in cases {
        let mut command = vec!["run"];
        command.extend_from_slice(args);
        let (code, stdout, stderr) = faultline(&command);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let (code, stdout, stderr) = faultline(&[
        "run",
        "--faults",
        "swarm",
        "--swarm-focus",
        "leader-pause",
        "--duration",
        "2s",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let swarm = line_with(&stdout, "swarm:").expect("the drawn kinds are printed");
    assert!(
        swarm.contains("leader-pause"),
        "a focused kind is on: {swarm}"
    );
    assert!(
        line_with(&stdout, "reproduce:").is_some_and(|l| l.contains("--swarm-focus leader-pause")),
        "{stdout}"
    );
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

/// The crash point a fault display names (`failpoint n1 POINT ...`, `clear failpoint n1 POINT`).
fn point_of(applied: &str) -> Option<&str> {
    let words: Vec<&str> = applied.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "failpoint")?;
    words.get(at + 2).copied()
}

#[test]
fn a_picked_crash_point_is_one_the_member_passed_and_its_clear_names_the_same_point() {
    use faultline::run::{simulate_run_with, RunConfig};
    use faultline_sim::Fault;
    use faultline_store::node::failpoint::{failpoint, FailAction};
    use faultline_workloads::nemesis::{PointPick, Schedule, TimedFault};

    // Points a lone member without snapshots, compaction or defragmentation never passes: the
    // written point is one of them, so a pick that kept it would show.
    let unreachable = [
        "raftBeforeApplySnap",
        "applyBeforeOpenSnapshot",
        "raftAfterApplySnap",
        "defragBeforeCopy",
        "defragBeforeRename",
        "compactBeforeCommitBatch",
    ];
    let mut picked = std::collections::BTreeSet::new();
    for n in 0..6u32 {
        let arm = Fault::Failpoint {
            node: 1,
            point: "raftBeforeApplySnap".into(),
            // Armed far beyond what the run reaches: the test looks at the pick, not a crash.
            hit: 1_000_000,
            action: FailAction::Sleep { ms: 1 },
        };
        let clear = Fault::ClearFailpoint {
            node: 1,
            point: "raftBeforeApplySnap".into(),
        };
        let schedule = Schedule {
            faults: vec![
                TimedFault::new(1_500, arm, 1).picking(PointPick::Reached(n)),
                TimedFault::new(2_500, clear, 1).picking(PointPick::Picked),
            ],
            swarm: None,
        };
        let config = RunConfig {
            seed: 7,
            nodes: 1,
            duration_ms: 3_000,
            ..RunConfig::default()
        };
        let output = simulate_run_with(&config, schedule).expect("the run completes");
        let points: Vec<&str> = output
            .applied_faults
            .iter()
            .filter_map(|(_, f)| point_of(f))
            .collect();
        assert_eq!(points.len(), 2, "{:?}", output.applied_faults);
        assert_eq!(
            points[0], points[1],
            "the clear names the point its episode picked: {:?}",
            output.applied_faults
        );
        assert!(failpoint(points[0]).is_some(), "{}", points[0]);
        assert!(
            !unreachable.contains(&points[0]),
            "pick {n} chose {}, a point the member never passed",
            points[0]
        );
        picked.insert(points[0].to_string());
    }
    assert!(
        picked.len() >= 3,
        "picks over the passed points differ: {picked:?}"
    );
}
