//! `faultline run --target etcd` as a user runs it: a 3-member real etcd on loopback under kills
//! and pauses, judged by the same checkers as a simulation.
//!
//! Needs etcd (`$FAULTLINE_ETCD` or `etcd` on the PATH; CI installs Debian's etcd-server). Without
//! it the test fails and says how to install it: a skipped test would hide that real mode went
//! untested.

mod common;

use common::faultline;
use std::process::Command;

fn require_etcd() {
    let binary = std::env::var("FAULTLINE_ETCD").unwrap_or_else(|_| "etcd".to_string());
    if let Err(e) = Command::new(&binary).arg("--version").output() {
        panic!(
            "real mode needs etcd, and `{binary} --version` failed: {e}. Install it (Debian or \
             Ubuntu: apt-get install etcd-server) or set FAULTLINE_ETCD to an etcd binary."
        );
    }
}

/// The number after `name ` in `line` ("kills 1, pauses 2" → kills = 1).
fn count_after(line: &str, name: &str) -> usize {
    let rest = &line[line
        .find(name)
        .unwrap_or_else(|| panic!("{name} in {line:?}"))
        + name.len()..];
    rest.trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a number after {name} in {line:?}"))
}

#[test]
fn a_three_member_etcd_under_kills_and_pauses_passes_every_checker() {
    require_etcd();
    let dir = std::env::temp_dir().join(format!("faultline-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (code, stdout, stderr) = faultline(&[
        "run",
        "--target",
        "etcd",
        "--nodes",
        "3",
        "--duration",
        "9s",
        "--seed",
        "1",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("real mode: not deterministic"),
        "the summary must say real mode is not deterministic:\n{stdout}"
    );
    let history = std::fs::read_to_string(dir.join("history.jsonl")).expect("history written");
    let operations = history.lines().count() - 1;
    assert!(
        operations >= 300,
        "only {operations} operations recorded:\n{stdout}"
    );
    let report = std::fs::read_to_string(dir.join("report.txt")).expect("report written");
    let faults = report
        .lines()
        .find(|l| l.starts_with("faults applied:"))
        .unwrap_or_else(|| panic!("no fault count in the report:\n{report}"));
    assert!(count_after(faults, "kills") >= 1, "{report}");
    assert!(count_after(faults, "pauses") >= 1, "{report}");
    let applied = std::fs::read_to_string(dir.join("faults.json")).expect("faults written");
    for action in ["\"kill\"", "\"restart\"", "\"pause\"", "\"resume\""] {
        assert!(
            applied.contains(action),
            "no {action} in faults.json:\n{applied}"
        );
    }
    let linearizability = report
        .lines()
        .find(|l| l.trim_start().starts_with("linearizability"))
        .unwrap_or_else(|| panic!("no linearizability verdict:\n{report}"));
    assert!(linearizability.contains("PASS"), "{report}");
    assert!(report.contains("verdict: PASS"), "{report}");
    // The keyspace watch followed every revision through kills and pauses, so it could settle
    // the writes whose replies were lost.
    let settled = report
        .lines()
        .find(|l| l.contains("settled by a watch of every key"))
        .unwrap_or_else(|| panic!("no settling line in the report:\n{report}"));
    assert!(
        settled.contains("the watch saw every revision through"),
        "{settled}"
    );
    // ... and the watch checkers judged it against the history reconstructed from both.
    let watch = report
        .lines()
        .find(|l| l.trim_start().starts_with("watch "))
        .unwrap_or_else(|| panic!("no watch verdict:\n{report}"));
    assert!(watch.contains("PASS"), "{report}");
    let watches = std::fs::read_to_string(dir.join("watches.jsonl")).expect("watches written");
    assert!(watches.contains("\"follows_to_end\":true"), "{watches}");
    // The members' logs stay beside the artifacts; their data goes once the run passed.
    assert!(dir.join("etcd/m1.log").exists());
    assert!(!dir.join("etcd/m1.etcd").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn real_mode_refuses_what_it_cannot_do() {
    let (code, _, stderr) = faultline(&["run", "--target", "etcd", "--nodes", "2"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--nodes must be 1 or 3 with --target etcd"),
        "{stderr}"
    );
    for (args, expected) in [
        (&["--bug", "stale-reads"][..], "--bug plants bugs"),
        (&["--snapshot-entries", "100"][..], "--snapshot-entries"),
        (&["--watchers", "2"][..], "runs without watchers"),
        (
            &["--faults", "partitions"][..],
            "needs the simulated network",
        ),
    ] {
        let mut all = vec!["run", "--target", "etcd"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = faultline(&all);
        assert_eq!(code, 2, "{all:?}: {stdout}{stderr}");
        assert!(stderr.contains(expected), "{all:?}: {stderr}");
    }
    // Without etcd the run stops before any traffic and says how to get it.
    let out = Command::new(env!("CARGO_BIN_EXE_faultline"))
        .args(["run", "--target", "etcd", "--duration", "1s"])
        .env("FAULTLINE_ETCD", "/nonexistent/etcd")
        .output()
        .expect("faultline runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("apt-get install etcd-server"), "{stderr}");
}
