//! `faultline sweep` as a user runs it: shards merged equal the whole sweep, a planted bug's
//! seed keeps its artifacts and fails the sweep, bad shards and ranges are refused, and the
//! shard index is read from the variables CI systems and Kubernetes set.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The variables a sweep reads its shard from: removed from every test's child, so that a CI
/// system running these tests in parallel does not shard them.
const SHARD_VARS: [&str; 8] = [
    "JOB_COMPLETION_INDEX",
    "FAULTLINE_SHARD_COUNT",
    "CI_NODE_INDEX",
    "CI_NODE_TOTAL",
    "CIRCLE_NODE_INDEX",
    "CIRCLE_NODE_TOTAL",
    "BUILDKITE_PARALLEL_JOB",
    "BUILDKITE_PARALLEL_JOB_COUNT",
];

/// Short runs with the planted stale-read bug: seed 2 of 1..4 fails, the others pass.
const BUGGY: [&str; 6] = ["--duration", "2s", "--clients", "4", "--bug", "stale-reads"];

/// Runs the binary with `env` set (and no other shard variable): exit code, stdout, stderr.
fn faultline(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_faultline"));
    command.args(args);
    for var in SHARD_VARS {
        command.env_remove(var);
    }
    command.envs(env.iter().copied());
    let out = command.output().expect("faultline runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faultline-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// The lines of a sweep's sweep.jsonl.
fn lines(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("sweep.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The seeds a sweep ran, in order.
fn seeds_run(dir: &Path) -> Vec<u64> {
    let mut seeds: Vec<u64> = lines(dir)
        .iter()
        .map(|l| l["seed"].as_u64().unwrap())
        .collect();
    seeds.sort_unstable();
    seeds
}

/// What a sweep's summary must say the same whether sharded or not.
fn deterministic(summary: &Value) -> Value {
    let failures: Vec<Value> = summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| serde_json::json!([f["seed"], f["outcome"], f["replay"]]))
        .collect();
    serde_json::json!({
        "seeds": summary["seeds"],
        "options": summary["options"],
        "counts": summary["counts"],
        "runs": summary["runs"],
        "first_failure": summary["first_failure"],
        "failures": failures,
        "exit_code": summary["exit_code"],
    })
}

#[test]
fn three_shards_merged_equal_the_whole_sweep() {
    let dir = scratch("shards");
    let whole = dir.join("whole");
    let mut args = vec!["sweep", "--seeds", "1..7", "--jobs", "2", "--out"];
    args.push(whole.to_str().unwrap());
    args.extend(BUGGY);
    let (code, stdout, stderr) = faultline(&args, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let mut summaries = Vec::new();
    for k in 0..3 {
        let out = dir.join(format!("shard-{k}"));
        let shard = format!("{k}/3");
        let mut args = vec!["sweep", "--seeds", "1..7", "--shard", &shard, "--out"];
        args.push(out.to_str().unwrap());
        args.extend(BUGGY);
        let (code, stdout, stderr) = faultline(&args, &[]);
        assert!(code == 0 || code == 1, "{stdout}{stderr}");
        summaries.push(out.join("summary.json"));
    }
    let merged = dir.join("merged.json");
    let mut args = vec!["sweep", "merge"];
    args.extend(summaries.iter().map(|p| p.to_str().unwrap()));
    args.extend(["--out", merged.to_str().unwrap()]);
    let (code, stdout, stderr) = faultline(&args, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains("seed 2 violation: faultline run --seed 2"),
        "{stdout}"
    );
    let whole = json(&whole.join("summary.json"));
    let merged = json(&merged);
    assert_eq!(deterministic(&merged), deterministic(&whole));
    assert_eq!(merged["shards"], serde_json::json!([0, 1, 2]));
    // A shard merged twice, or with a shard of another sweep, is refused.
    let twice = [
        summaries[0].to_str().unwrap(),
        summaries[0].to_str().unwrap(),
    ];
    let (code, _, stderr) = faultline(&[&["sweep", "merge"][..], &twice[..]].concat(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("shard 0 of 3"), "{stderr}");
    let other = dir.join("other");
    let (code, stdout, stderr) = faultline(
        &[
            "sweep",
            "--seeds",
            "1..7",
            "--shard",
            "1/3",
            "--duration",
            "2s",
            "--clients",
            "2",
            "--out",
            other.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let other = other.join("summary.json");
    let mixed = [summaries[0].to_str().unwrap(), other.to_str().unwrap()];
    let (code, _, stderr) = faultline(&[&["sweep", "merge"][..], &mixed[..]].concat(), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("run options differ"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_planted_bug_fails_the_sweep_and_keeps_only_the_failing_seed_s_run() {
    let dir = scratch("bug");
    let mut args = vec!["sweep", "--seeds", "1..4", "--jobs", "2", "--out"];
    args.push(dir.to_str().unwrap());
    args.extend(BUGGY);
    let (code, stdout, stderr) = faultline(&args, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("violation 1"), "{stdout}");
    let replay = "faultline run --seed 2 --nodes 3 --duration 2000ms";
    assert!(stdout.contains(replay), "{stdout}");
    let lines = lines(&dir);
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let seed = line["seed"].as_u64().unwrap();
        let replay = line["replay"].as_str().unwrap();
        assert!(
            replay.starts_with(&format!("faultline run --seed {seed} ")),
            "{line}"
        );
        assert!(replay.contains("--bug stale-reads"), "{line}");
        let outcome = if seed == 2 { "violation" } else { "pass" };
        assert_eq!(line["outcome"], outcome, "{line}");
    }
    let runs: Vec<String> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs, ["seed-2"]);
    for file in ["history.jsonl", "report.txt", "stdout.txt"] {
        assert!(dir.join("runs/seed-2").join(file).exists(), "{file}");
    }
    let summary = json(&dir.join("summary.json"));
    assert_eq!(summary["first_failure"], 2);
    assert_eq!(summary["counts"]["pass"], 2);
    // Stopping at the first failure still runs every seed below it.
    let stopped = dir.join("stopped");
    let mut args = vec![
        "sweep",
        "--seeds",
        "1..100",
        "--jobs",
        "1",
        "--stop-on-failure",
    ];
    args.extend(["--out", stopped.to_str().unwrap()]);
    args.extend(BUGGY);
    let (code, stdout, stderr) = faultline(&args, &[]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let summary = json(&stopped.join("summary.json"));
    assert_eq!(summary["first_failure"], 2);
    assert_eq!(summary["runs"], 2);
    assert_eq!(summary["seeds_not_run"], 97);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sweep arguments, environment variables, and what the error must say.
type BadCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn bad_shards_and_ranges_exit_2_naming_the_problem() {
    let dir = scratch("bad");
    let out = dir.to_str().unwrap();
    let cases: [BadCase; 9] = [
        (&["--seeds", "7..1"], &[], "ends before it starts"),
        (&["--seeds", "one..7"], &[], "is not a seed"),
        (
            &["--seeds", "1..7", "--shard", "3/3"],
            &[],
            "not below the shard count",
        ),
        (&["--seeds", "1..7", "--shard", "0/0"], &[], "at least 1"),
        (&["--seeds", "1..7", "--shard", "half"], &[], "is not K/N"),
        (
            &["--seeds", "1..7", "--shard-count", "3"],
            &[],
            "JOB_COMPLETION_INDEX",
        ),
        (
            &["--seeds", "1..7"],
            &[("JOB_COMPLETION_INDEX", "1")],
            "shard count",
        ),
        (
            &["--seeds", "1..7"],
            &[("CI_NODE_INDEX", "4"), ("CI_NODE_TOTAL", "3")],
            "CI_NODE_INDEX",
        ),
        (&["--seeds", "1..7", "--seed", "3"], &[], "not --seed"),
    ];
    for (args, env, expected) in cases {
        let args = [&["sweep", "--out", out][..], args].concat();
        let (code, stdout, stderr) = faultline(&args, env);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn shards_from_environment_variables_pick_the_same_seeds_as_the_flag() {
    let dir = scratch("env");
    let run = |name: &str, shard: &[&str], env: &[(&str, &str)]| {
        let out = dir.join(name);
        let args = [
            &[
                "sweep",
                "--seeds",
                "10..=17",
                "--duration",
                "1s",
                "--clients",
                "1",
            ][..],
            shard,
            &["--out", out.to_str().unwrap()],
        ]
        .concat();
        let (code, stdout, stderr) = faultline(&args, env);
        assert_eq!(code, 0, "{name}: {stdout}{stderr}");
        seeds_run(&out)
    };
    let flag = run("flag", &["--shard", "1/3"], &[]);
    assert_eq!(flag, [11, 14, 17]);
    let kubernetes = run(
        "k8s",
        &["--shard-count", "3"],
        &[("JOB_COMPLETION_INDEX", "1")],
    );
    assert_eq!(kubernetes, flag);
    let count_from_env = [
        ("JOB_COMPLETION_INDEX", "1"),
        ("FAULTLINE_SHARD_COUNT", "3"),
    ];
    assert_eq!(run("k8s-env", &[], &count_from_env), flag);
    let gitlab = [("CI_NODE_INDEX", "2"), ("CI_NODE_TOTAL", "3")];
    assert_eq!(run("gitlab", &[], &gitlab), flag);
    let circle = [("CIRCLE_NODE_INDEX", "1"), ("CIRCLE_NODE_TOTAL", "3")];
    assert_eq!(run("circle", &[], &circle), flag);
    let buildkite = [
        ("BUILDKITE_PARALLEL_JOB", "1"),
        ("BUILDKITE_PARALLEL_JOB_COUNT", "3"),
    ];
    assert_eq!(run("buildkite", &[], &buildkite), flag);
    let _ = std::fs::remove_dir_all(&dir);
}
