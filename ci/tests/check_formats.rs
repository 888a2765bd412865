//! `faultline check FILE` tells a Faultline history, a Jepsen etcd log and a porcupine kv log
//! apart by their content and judges each with the known verdict (the files and their origin:
//! `tests/fixtures/README.md`); whatever it cannot read exits with 2 and names the file and
//! the line, never a panic.

mod common;

use std::path::{Path, PathBuf};

use common::faultline;

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    assert!(path.is_file(), "missing fixture {}", path.display());
    path.to_str().expect("a UTF-8 path").to_string()
}

/// Checks `file` and asserts its exit code and that stdout names what it found.
fn assert_judged(file: &str, code: i32, expected: &[&str]) -> String {
    let (got, stdout, stderr) = faultline(&["check", file]);
    assert_eq!(got, code, "{file}:\n{stdout}{stderr}");
    for text in expected {
        assert!(stdout.contains(text), "{file}: no {text:?} in:\n{stdout}");
    }
    stdout
}

#[test]
fn a_faultline_history_is_judged_by_the_etcd_checkers() {
    assert_judged(
        &fixture("faultline-ok.jsonl"),
        0,
        &["history: 15 operations", "PASS", "verdict: PASS"],
    );
    assert_judged(
        &fixture("faultline-stale-read.jsonl"),
        1,
        &[
            "etcd: NOT LINEARIZABLE",
            "get key/002",
            "verdict: FAIL: safety violation",
        ],
    );
}

#[test]
fn a_jepsen_etcd_log_is_judged_as_one_register() {
    assert_judged(
        &fixture("jepsen-etcd-002-head30.log"),
        0,
        &[
            "history: Jepsen etcd log, 13 operations",
            "register",
            "verdict: PASS",
        ],
    );
    let stdout = assert_judged(
        &fixture("jepsen-etcd-062-head36.log"),
        1,
        &[
            "history: Jepsen etcd log, 16 operations",
            "not linearizable",
            "VIOLATION",
        ],
    );
    // The minimal contradiction: the cas swapped 3 away, and a read still sees 3.
    assert!(
        stdout.contains("cas 3 -> 1: swapped") && stdout.contains("read -> 3"),
        "{stdout}"
    );
}

#[test]
fn a_porcupine_kv_log_is_judged_key_by_key() {
    assert_judged(
        &fixture("kv-c10-ok-head40.txt"),
        0,
        &[
            "history: porcupine kv log, 25 operations",
            "10 of unknown outcome",
            "verdict: PASS",
        ],
    );
    assert_judged(
        &fixture("kv-c01-bad-head60.txt"),
        1,
        &[
            "porcupine kv log",
            "(key \"7\")",
            "get \"7\" -> \"x 0 0 y\"",
            "VIOLATION",
        ],
    );
}

#[test]
fn a_whole_corpus_log_gets_the_verdict_its_suite_asserts() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus");
    assert!(
        corpus.join("verdicts.tsv").is_file(),
        "the shared corpus is missing: expected {} (CI checks out ../shared beside the \
         repository)",
        corpus.display()
    );
    for (file, code) in [
        ("jepsen/etcd_002.log", 0),
        ("jepsen/etcd_000.log", 1),
        ("kv/c10-ok.txt", 0),
        ("kv/c10-bad.txt", 1),
    ] {
        let path = corpus.join(file);
        assert_judged(path.to_str().unwrap(), code, &["linearizability"]);
    }
}

/// A file in a scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, bytes: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("faultline-format-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("a scratch file");
        Scratch(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 path")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `faultline check` on `bytes` exits with 2, and stderr names the file and says `expected`.
fn assert_refused(name: &str, bytes: &[u8], expected: &[&str]) {
    let file = Scratch::new(name, bytes);
    let (code, stdout, stderr) = faultline(&["check", file.path()]);
    assert_eq!(code, 2, "{name}:\n{stdout}{stderr}");
    assert!(
        stderr.contains(file.path()),
        "{name}: the file is not named:\n{stderr}"
    );
    for text in expected {
        assert!(stderr.contains(text), "{name}: no {text:?} in:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{name}: {stderr}");
}

#[test]
fn unreadable_files_exit_2_naming_the_file_and_the_line() {
    assert_refused("empty", b"", &["empty: there is no history to check"]);
    assert_refused(
        "prose.txt",
        b"\nthis is not a history\n",
        &[
            "line 2: not a history this command reads",
            "Jepsen etcd log",
        ],
    );
    assert_refused(
        "binary",
        b"{:process 0, :type :invoke, :f :get, :key \"1\", :value nil}\n\xff\xfe\n",
        &["line 2: not UTF-8 text"],
    );
    assert_refused(
        "watches.jsonl",
        b"{\"format\":\"faultline-watches\",\"version\":1}\n",
        &["line 1: a watch history", "--watches"],
    );
    let mut jepsen = std::fs::read(fixture("jepsen-etcd-002-head30.log")).unwrap();
    jepsen.extend_from_slice(b"INFO  jepsen.util - 3\t:invoke\t:cas\t[1 two]\n");
    assert_refused(
        "bad-jepsen.log",
        &jepsen,
        &[
            "Jepsen etcd log: line 31",
            "cas value \"two\" is not an integer",
        ],
    );
    let mut kv = std::fs::read(fixture("kv-c10-ok-head40.txt")).unwrap();
    kv.extend_from_slice(b"{:process 3, :type :ok, :f :get, :key \"9\"\n");
    assert_refused("bad-kv.txt", &kv, &["porcupine kv log: line 41"]);
    let mut history = std::fs::read(fixture("faultline-ok.jsonl")).unwrap();
    history.extend_from_slice(b"{\"id\":99,\"client\":1}\n");
    assert_refused(
        "bad-history.jsonl",
        &history,
        &["Faultline history: line 17"],
    );
}

#[test]
fn watches_and_settling_go_with_a_faultline_history_only() {
    let (code, _, stderr) =
        faultline(&["check", &fixture("jepsen-etcd-002-head30.log"), "--settle"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--watches and --settle go with a Faultline history only"),
        "{stderr}"
    );
}

#[test]
fn the_budget_holds_for_corpus_logs_too() {
    let (code, stdout, _) = faultline(&[
        "check",
        &fixture("jepsen-etcd-002-head30.log"),
        "--check-memory",
        "1KiB",
    ]);
    assert_eq!(code, 5, "{stdout}");
    assert!(stdout.contains("reached max_bytes (1.0 KiB)"), "{stdout}");
}
