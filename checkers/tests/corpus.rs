//! The shared corpus (`../shared/corpus` beside the repository): every history listed in
//! `verdicts.tsv` gets the verdict its source's test suite asserts, and every violation comes
//! with an explanation that is itself a proof.

use std::path::PathBuf;
use std::time::Duration;

use faultline_checkers::corpus::{parse_jepsen_register, parse_kv};
use faultline_checkers::kv::Kv;
use faultline_checkers::linearizability::{
    check, decide, Budget, Model, Operation, Verdict, Violation, Witness,
};
use faultline_checkers::register::Register;

fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus"));
    assert!(
        dir.join("verdicts.tsv").is_file(),
        "the shared corpus is missing: expected {} with verdicts.tsv (CI checks out ../shared \
         beside the repository)",
        dir.display()
    );
    dir
}

fn read(file: &str) -> String {
    let path = corpus_dir().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `(file, expected linearizable)` for every line of verdicts.tsv with a verdict (`NA` marks the
/// empty etcd_095.log, which has none).
fn verdicts() -> Vec<(String, bool)> {
    read("verdicts.tsv")
        .lines()
        .skip(1)
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let file = fields.next().expect("a file").to_string();
            let expected = match fields.next() {
                Some("true") => true,
                Some("false") => false,
                Some("NA") => return None,
                other => panic!("verdicts.tsv: {other:?} is not true, false or NA in {line:?}"),
            };
            Some((file, expected))
        })
        .collect()
}

/// Generous: every file decides far within this; a regression shows as `Unknown`.
fn budget() -> Budget {
    Budget::default().with_timeout(Duration::from_secs(60))
}

/// A violation must be a proof on its own: its core with observed outcomes, its context with
/// outcomes unknown, nothing else, is still not linearizable. If it says it is minimal, setting
/// aside any one core operation's outcome makes it linearizable.
fn assert_explanation_is_a_proof<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    violation: &Violation,
    file: &str,
) where
    M::Input: Clone,
    M::Output: Clone,
{
    assert!(!violation.core.is_empty(), "{file}: an empty core");
    assert!(
        !violation.stuck.is_empty(),
        "{file}: no operation is named as stuck"
    );
    let proof = |set_aside: Option<usize>| -> Vec<Operation<M::Input, M::Output>> {
        let mut ops: Vec<Operation<M::Input, M::Output>> = Vec::new();
        for summary in &violation.core {
            let op = history[summary.index].clone();
            ops.push(if set_aside == Some(summary.index) {
                Operation {
                    ret: None,
                    output: None,
                    ..op
                }
            } else {
                op
            });
        }
        for summary in &violation.context {
            let op = history[summary.index].clone();
            ops.push(Operation {
                ret: None,
                output: None,
                ..op
            });
        }
        ops
    };
    let verdict = decide(model, &proof(None), &budget());
    assert!(
        verdict.is_not_linearizable(),
        "{file}: the explanation is no proof:\n{}",
        violation.render()
    );
    if violation.minimal {
        for summary in &violation.core {
            let verdict = decide(model, &proof(Some(summary.index)), &budget());
            assert!(
                verdict.is_linearizable(),
                "{file}: the core is not minimal, #{} can be set aside:\n{}",
                summary.index,
                violation.render()
            );
        }
    }
}

/// A witness is a legal sequential run that respects real time and places every operation
/// with a known outcome.
fn assert_witness<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    witness: &Witness,
    file: &str,
) {
    let mut placed = vec![false; history.len()];
    for order in &witness.order {
        let mut state = model.init();
        let mut latest_call = 0;
        for &i in order {
            assert!(!placed[i], "{file}: #{i} placed twice");
            placed[i] = true;
            let op = &history[i];
            let output = if op.ret.is_some() {
                op.output.as_ref()
            } else {
                None
            };
            state = model
                .step(&state, &op.input, output)
                .unwrap_or_else(|| panic!("{file}: #{i} is illegal where placed"));
            // Everything placed before returned no earlier than the latest call placed so far.
            assert!(
                op.ret.is_none_or(|r| r >= latest_call),
                "{file}: #{i} returned before an earlier-placed call"
            );
            latest_call = latest_call.max(op.call);
        }
    }
    for (i, op) in history.iter().enumerate() {
        assert!(
            placed[i] || op.ret.is_none(),
            "{file}: #{i} has a known outcome and is not placed"
        );
    }
}

fn assert_verdict<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    expected: bool,
    file: &str,
) where
    M::Input: Clone,
    M::Output: Clone,
{
    match check(model, history, &budget()) {
        Verdict::Linearizable(witness) => {
            assert!(
                expected,
                "{file}: expected not linearizable, found linearizable"
            );
            assert_witness(model, history, &witness, file);
        }
        Verdict::NotLinearizable(violation) => {
            assert!(
                !expected,
                "{file}: expected linearizable, found:\n{}",
                violation.render()
            );
            assert_explanation_is_a_proof(model, history, &violation, file);
        }
        Verdict::Unknown(undecided) => panic!("{file}: undecided:\n{}", undecided.render()),
    }
}

#[test]
fn every_jepsen_log_gets_its_expected_verdict() {
    let files: Vec<_> = verdicts()
        .into_iter()
        .filter(|(f, _)| f.starts_with("jepsen/"))
        .collect();
    assert_eq!(files.len(), 102, "verdicts.tsv lists 102 Jepsen logs");
    let model = Register::<i64>::new();
    for (file, expected) in &files {
        let history = parse_jepsen_register(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(!history.is_empty(), "{file}: no operations");
        assert_verdict(&model, &history, *expected, file);
    }
}

#[test]
fn the_empty_jepsen_log_is_linearizable() {
    let history = parse_jepsen_register(&read("jepsen/etcd_095.log")).unwrap();
    assert!(history.is_empty());
    let verdict = check(&Register::<i64>::new(), &history, &budget());
    assert_eq!(
        verdict.render(),
        "linearizable: 1 partitions, 0 operations placed\n"
    );
}

#[test]
fn every_kv_log_gets_its_expected_verdict_partitioned_by_key() {
    let files: Vec<_> = verdicts()
        .into_iter()
        .filter(|(f, _)| f.starts_with("kv/"))
        .collect();
    assert_eq!(files.len(), 6, "verdicts.tsv lists 6 kv logs");
    for (file, expected) in &files {
        let history = parse_kv(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_verdict(&Kv::default(), &history, *expected, file);
    }
}

#[test]
fn small_kv_logs_get_their_verdicts_unpartitioned() {
    for (file, expected) in verdicts() {
        if file.starts_with("kv/c01") || file.starts_with("kv/c10") {
            let history = parse_kv(&read(&file)).unwrap();
            let verdict = decide(&Kv::unpartitioned(), &history, &budget());
            assert_eq!(
                verdict.is_linearizable(),
                expected,
                "{file} unpartitioned: {}",
                verdict.render()
            );
            assert!(
                !verdict.is_unknown(),
                "{file} unpartitioned: {}",
                verdict.render()
            );
        }
    }
}

#[test]
fn a_tiny_budget_on_a_hard_log_gives_unknown() {
    // etcd_002 is the corpus's hardest register history (porcupine: ~120 ms).
    let history = parse_jepsen_register(&read("jepsen/etcd_002.log")).unwrap();
    let model = Register::<i64>::new();
    let Verdict::Unknown(undecided) = check(&model, &history, &Budget::states(100)) else {
        panic!("100 states cannot decide etcd_002");
    };
    assert_eq!(undecided.partitions_total, 1);
    assert_eq!(undecided.partitions_checked, 0);
    assert_eq!(undecided.undecided.len(), 1);
    assert_eq!(undecided.undecided[0].states, 100);
    assert!(undecided
        .render()
        .starts_with("unknown: the budget ran out (too many states)"));

    let past = Budget::default().with_timeout(Duration::ZERO);
    let Verdict::Unknown(undecided) = check(&model, &history, &past) else {
        panic!("a deadline that has passed cannot decide etcd_002");
    };
    assert!(undecided
        .render()
        .starts_with("unknown: the budget ran out (deadline passed)"));
}

#[test]
fn c50_bad_is_caught_by_a_key_that_fails_fast_while_others_stay_undecided() {
    // Porcupine's README: key 9 of c50-bad alone takes it ~73 s and ~11 GB, key 0 is undecided
    // after 80 s. Partitions take turns, so a key that fails fast ends the check.
    let history = parse_kv(&read("kv/c50-bad.txt")).unwrap();
    let Verdict::NotLinearizable(violation) = decide(&Kv::default(), &history, &budget()) else {
        panic!("c50-bad violates");
    };
    assert!(
        violation.partition_label.starts_with("key "),
        "{}",
        violation.partition_label
    );
    let key_0: Vec<_> = history
        .iter()
        .filter(|op| op.input.key == "0")
        .cloned()
        .collect();
    let verdict = decide(&Kv::default(), &key_0, &Budget::states(20_000));
    assert!(
        verdict.is_unknown(),
        "key 0 alone is hard: {}",
        verdict.render()
    );
}
