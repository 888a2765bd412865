//! The engine on tiny hand-made histories, against a brute-force checker on random ones, under
//! tiny budgets, and the explanation's text.

use std::mem::size_of;
use std::time::Duration;

use super::*;
use crate::kv::{Kv, KvInput, KvOp, KvOutput};
use crate::register::{Register, RegisterInput as In, RegisterOutput as Out};

/// Compares `text` with its golden file `golden/<name>.snap` beside this file.
macro_rules! golden {
    ($name:expr, $text:expr) => {
        insta::with_settings!({ snapshot_path => "golden", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!($name, $text);
        })
    };
}

type Op = Operation<In<i64>, Out<i64>>;

fn write(client: u64, call: u64, ret: u64, v: i64) -> Op {
    Operation::completed(client, call, ret, In::Write(v), Out::Write)
}

fn read(client: u64, call: u64, ret: u64, v: Option<i64>) -> Op {
    Operation::completed(client, call, ret, In::Read, Out::Read(v))
}

fn cas(client: u64, call: u64, ret: u64, expected: i64, new: i64, swapped: bool) -> Op {
    Operation::completed(
        client,
        call,
        ret,
        In::Cas { expected, new },
        Out::Cas { swapped },
    )
}

fn lost_write(client: u64, call: u64, v: i64) -> Op {
    Operation::unknown(client, call, In::Write(v))
}

fn verdict(history: &[Op]) -> Verdict {
    check(&Register::new(), history, &Budget::default())
}

/// A witness must be a legal sequential run that respects real time and places every
/// operation with a known outcome.
fn assert_witness<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    witness: &Witness,
) {
    let mut placed = vec![false; history.len()];
    for order in &witness.order {
        let mut state = model.init();
        for (n, &i) in order.iter().enumerate() {
            assert!(!placed[i], "#{i} placed twice");
            placed[i] = true;
            let op = &history[i];
            let output = if op.ret.is_some() {
                op.output.as_ref()
            } else {
                None
            };
            state = model
                .step(&state, &op.input, output)
                .unwrap_or_else(|| panic!("#{i} is illegal where placed"));
            for &j in &order[n + 1..] {
                assert!(
                    history[j].ret.is_none_or(|r| r >= op.call),
                    "#{j} returned before #{i} was called but comes after it"
                );
            }
        }
    }
    for (i, op) in history.iter().enumerate() {
        assert!(
            placed[i] || op.ret.is_none(),
            "#{i} has a known outcome and is not placed"
        );
    }
}

#[test]
fn an_empty_history_is_linearizable() {
    assert_eq!(
        verdict(&[]),
        Verdict::Linearizable(Witness {
            order: vec![vec![]],
            states_explored: 0
        })
    );
}

#[test]
fn a_sequential_history_linearizes_in_its_own_order() {
    let history = [
        write(1, 0, 1, 1),
        read(2, 2, 3, Some(1)),
        cas(1, 4, 5, 1, 2, true),
        read(2, 6, 7, Some(2)),
    ];
    let Verdict::Linearizable(witness) = verdict(&history) else {
        panic!("linearizable")
    };
    assert_eq!(witness.order, vec![vec![0, 1, 2, 3]]);
}

#[test]
fn a_read_after_a_completed_write_cannot_see_the_old_value() {
    let history = [write(1, 0, 1, 1), read(2, 2, 3, None)];
    assert!(verdict(&history).is_not_linearizable());
}

#[test]
fn a_read_concurrent_with_a_write_may_see_either_value() {
    for seen in [None, Some(1)] {
        let history = [write(1, 0, 10, 1), read(2, 5, 6, seen)];
        let Verdict::Linearizable(witness) = verdict(&history) else {
            panic!("{seen:?} is possible")
        };
        assert_witness(&Register::new(), &history, &witness);
    }
    assert!(verdict(&[write(1, 0, 10, 1), read(2, 5, 6, Some(2))]).is_not_linearizable());
}

#[test]
fn operations_that_touch_at_an_instant_are_concurrent() {
    // The read is called at the write's return: either order is allowed.
    assert!(verdict(&[write(1, 0, 5, 1), read(2, 5, 9, None)]).is_linearizable());
    assert!(verdict(&[write(1, 0, 5, 1), read(2, 6, 9, None)]).is_not_linearizable());
}

#[test]
fn an_unknown_write_may_never_take_effect() {
    let history = [
        lost_write(1, 0, 1),
        read(2, 10, 11, None),
        read(2, 20, 21, None),
    ];
    let Verdict::Linearizable(witness) = verdict(&history) else {
        panic!("the write may never happen")
    };
    assert_eq!(
        witness.order,
        vec![vec![1, 2]],
        "the lost write is not placed"
    );
}

#[test]
fn an_unknown_write_may_take_effect_long_after_its_call() {
    let history = [
        lost_write(1, 0, 1),
        read(2, 10, 11, None),
        read(2, 20, 21, Some(1)),
    ];
    let Verdict::Linearizable(witness) = verdict(&history) else {
        panic!("the write may happen late")
    };
    assert_eq!(witness.order, vec![vec![1, 0, 2]]);
}

#[test]
fn an_unknown_write_takes_effect_at_most_once() {
    let history = [
        lost_write(1, 0, 1),
        read(2, 10, 11, Some(1)),
        write(3, 12, 13, 2),
        read(2, 20, 21, Some(1)),
    ];
    assert!(verdict(&history).is_not_linearizable());
}

#[test]
fn an_unknown_write_cannot_take_effect_before_its_call() {
    let history = [read(2, 0, 1, Some(1)), lost_write(1, 5, 1)];
    assert!(verdict(&history).is_not_linearizable());
}

#[test]
fn an_unknown_write_that_a_read_saw_must_have_happened_before_it() {
    // The read of 1 forces the lost write before it, so the value 2 written earlier is gone.
    let history = [
        write(3, 0, 1, 2),
        lost_write(1, 2, 1),
        read(2, 10, 11, Some(1)),
        read(2, 12, 13, Some(2)),
    ];
    assert!(verdict(&history).is_not_linearizable());
    let history = [
        write(3, 0, 1, 2),
        lost_write(1, 2, 1),
        read(2, 10, 11, Some(2)),
        read(2, 12, 13, Some(1)),
    ];
    assert!(verdict(&history).is_linearizable());
}

#[test]
fn an_operation_that_returned_an_unknown_output_still_took_effect_before_returning() {
    let cas_unknown_output = Operation {
        output: None,
        ..cas(1, 0, 5, 0, 7, true)
    };
    // Starting from 0, the cas swapped before 5 whatever it answered.
    let history = [cas_unknown_output.clone(), read(2, 6, 7, Some(0))];
    let register = Register { initial: Some(0) };
    assert!(check(&register, &history, &Budget::default()).is_not_linearizable());
    let history = [cas_unknown_output, read(2, 6, 7, Some(7))];
    assert!(check(&register, &history, &Budget::default()).is_linearizable());
}

#[test]
fn unknown_operations_add_only_possibilities() {
    // Two lost writes, four reads seeing them in turn: each write takes effect once.
    let history = [
        lost_write(1, 0, 1),
        lost_write(2, 0, 2),
        read(3, 5, 6, Some(1)),
        read(3, 7, 8, Some(2)),
        read(3, 9, 10, Some(2)),
        read(3, 11, 12, Some(1)),
    ];
    assert!(verdict(&history).is_not_linearizable());
    assert!(verdict(&history[..5]).is_linearizable());
}

/// A tiny deterministic generator for random histories.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Whether some order of `history` is legal: tries every operation that real time allows next,
/// without memoisation or any pruning.
fn brute_force(
    model: &Register<i64>,
    history: &[Op],
    placed: &mut Vec<bool>,
    state: &Option<i64>,
) -> bool {
    let pending_known = |placed: &[bool], j: usize| !placed[j] && history[j].ret.is_some();
    if (0..history.len()).all(|j| !pending_known(placed, j)) {
        return true;
    }
    for i in 0..history.len() {
        if placed[i] {
            continue;
        }
        let blocked = (0..history.len()).any(|j| {
            pending_known(placed, j) && history[j].ret.is_some_and(|r| r < history[i].call)
        });
        if blocked {
            continue;
        }
        let op = &history[i];
        let output = if op.ret.is_some() {
            op.output.as_ref()
        } else {
            None
        };
        if let Some(next) = model.step(state, &op.input, output) {
            placed[i] = true;
            let found = brute_force(model, history, placed, &next);
            placed[i] = false;
            if found {
                return true;
            }
        }
    }
    false
}

/// The core (as observed) and the context (outcomes unknown) of a violation are, alone, not
/// linearizable; with `minimal`, setting aside any one core outcome makes them linearizable.
fn assert_proof(model: &Register<i64>, history: &[Op], violation: &Violation) {
    let proof = |set_aside: Option<usize>| -> Vec<Op> {
        let core = violation
            .core
            .iter()
            .map(|op| (op.index, Some(op.index) != set_aside));
        let context = violation.context.iter().map(|op| (op.index, false));
        core.chain(context)
            .map(|(i, known)| {
                if known {
                    history[i].clone()
                } else {
                    Operation {
                        ret: None,
                        output: None,
                        ..history[i].clone()
                    }
                }
            })
            .collect()
    };
    let holds = |ops: &[Op]| brute_force(model, ops, &mut vec![false; ops.len()], &None);
    assert!(
        !holds(&proof(None)),
        "no proof: {history:?}\n{}",
        violation.render()
    );
    assert!(
        violation.minimal,
        "tiny histories are minimised in full: {history:?}\n{}",
        violation.render()
    );
    for op in &violation.core {
        assert!(
            holds(&proof(Some(op.index))),
            "#{} need not be in the core: {history:?}\n{}",
            op.index,
            violation.render()
        );
    }
    assert_eq!(
        violation.core.len() + violation.context.len() + violation.left_out,
        violation.partition_operations
    );
}

/// A history of `n` operations by 3 clients: each operation runs over a random interval, takes
/// effect at a random instant in it and answers truthfully; then some answers are corrupted and
/// some outcomes lost.
fn random_history(rng: &mut Rng, n: usize) -> Vec<Op> {
    let mut ops = Vec::new();
    let mut free_at = [0u64; 3];
    let mut effects: Vec<(u64, usize)> = Vec::new();
    for _ in 0..n {
        let client = rng.below(3) as usize;
        let call = free_at[client] + rng.below(4);
        let ret = call + 1 + rng.below(8);
        free_at[client] = ret + 1;
        let input = match rng.below(3) {
            0 => In::Read,
            1 => In::Write(rng.below(3) as i64),
            _ => In::Cas {
                expected: rng.below(3) as i64,
                new: rng.below(3) as i64,
            },
        };
        effects.push((call * 4 + 1 + rng.below(4 * (ret - call) - 1), ops.len()));
        ops.push(Operation {
            client: client as u64,
            call: call * 4,
            ret: Some(ret * 4),
            input,
            output: None,
        });
    }
    effects.sort_unstable();
    let mut state: Option<i64> = None;
    for (_, i) in effects {
        let (output, next) = match &ops[i].input {
            In::Read => (Out::Read(state), state),
            In::Write(v) => (Out::Write, Some(*v)),
            In::Cas { expected, new } if state == Some(*expected) => {
                (Out::Cas { swapped: true }, Some(*new))
            }
            In::Cas { .. } => (Out::Cas { swapped: false }, state),
        };
        ops[i].output = Some(output);
        state = next;
    }
    for op in &mut ops {
        match rng.below(20) {
            0 | 1 => {
                op.ret = None;
                op.output = None;
            }
            2 => op.output = None,
            3 | 4 => {
                op.output = Some(match &op.input {
                    In::Read => Out::Read(Some(rng.below(3) as i64)),
                    In::Write(_) => Out::Write,
                    In::Cas { .. } => Out::Cas {
                        swapped: rng.below(2) == 0,
                    },
                })
            }
            _ => {}
        }
    }
    ops
}

#[test]
fn the_engine_agrees_with_brute_force_on_random_histories() {
    let model = Register::new();
    let mut rng = Rng(7);
    let mut counts = [0, 0];
    for round in 0..20_000 {
        let history = random_history(&mut rng, 2 + round % 9);
        let expected = brute_force(&model, &history, &mut vec![false; history.len()], &None);
        let got = check(&model, &history, &Budget::default());
        assert_eq!(
            got.is_linearizable(),
            expected,
            "round {round}: {history:?}\n{}",
            got.render()
        );
        counts[usize::from(expected)] += 1;
        match &got {
            Verdict::Linearizable(witness) => assert_witness(&model, &history, witness),
            Verdict::NotLinearizable(violation) => assert_proof(&model, &history, violation),
            Verdict::Unknown(_) => panic!("round {round}: undecided"),
        }
    }
    assert!(
        counts[0] > 300 && counts[1] > 300,
        "both verdicts are exercised: {counts:?}"
    );
}

#[test]
fn the_same_history_gets_the_same_verdict() {
    let mut rng = Rng(11);
    for _ in 0..50 {
        let history = random_history(&mut rng, 8);
        assert_eq!(verdict(&history), verdict(&history));
    }
}

/// `clients` concurrent writes of distinct values and as many concurrent reads, each seeing a
/// different value: linearizable (alternate writes and reads), but the search tries the writes'
/// orders first, which grows like 3^clients.
fn crowded_history(clients: u64) -> Vec<Op> {
    let mut history = Vec::new();
    for client in 0..clients {
        history.push(write(client, client, 100 + client, client as i64));
    }
    for client in 0..clients {
        history.push(read(
            client + 20,
            50,
            200,
            Some((clients - 1 - client) as i64),
        ));
    }
    history
}

#[test]
fn a_tiny_state_budget_gives_unknown_with_what_it_explored() {
    let Verdict::Unknown(undecided) =
        check(&Register::new(), &crowded_history(12), &Budget::states(50))
    else {
        panic!("50 states cannot decide it");
    };
    assert_eq!(undecided.reason, UndecidedReason::MaxStates);
    assert_eq!(
        (
            undecided.partitions_total,
            undecided.partitions_checked,
            undecided.states_explored
        ),
        (1, 0, 50)
    );
    assert_eq!(undecided.undecided[0].states, 50);
    let verdict = check(&Register::new(), &crowded_history(6), &Budget::default());
    assert!(verdict.is_linearizable(), "{}", verdict.render());
}

#[test]
fn a_passed_deadline_gives_unknown() {
    let budget = Budget::default().with_timeout(Duration::ZERO);
    let Verdict::Unknown(undecided) = check(&Register::new(), &crowded_history(12), &budget) else {
        panic!("no time to decide");
    };
    assert_eq!(undecided.reason, UndecidedReason::Deadline);
    assert_eq!(undecided.undecided[0].reason, UndecidedReason::Deadline);
}

#[test]
fn an_undecided_key_does_not_hide_a_violating_key() {
    let get = |client: u64, call: u64, ret: u64, key: &str, value: &str| {
        Operation::completed(
            client,
            call,
            ret,
            KvInput {
                key: key.into(),
                op: KvOp::Get,
            },
            KvOutput::Value(value.into()),
        )
    };
    let put = |client: u64, call: u64, ret: u64, key: &str, value: &str| {
        Operation::completed(
            client,
            call,
            ret,
            KvInput {
                key: key.into(),
                op: KvOp::Put(value.into()),
            },
            KvOutput::Done,
        )
    };
    // Key "a": crowded and linearizable; key "b": a stale read.
    let mut history = Vec::new();
    for client in 0..12u64 {
        history.push(put(client, client, 100 + client, "a", &client.to_string()));
        history.push(get(client + 20, 50, 200, "a", &(11 - client).to_string()));
    }
    history.push(put(40, 300, 301, "b", "x"));
    history.push(get(41, 302, 303, "b", ""));
    let Verdict::NotLinearizable(violation) = check(&Kv::default(), &history, &Budget::states(50))
    else {
        panic!("key b violates whatever happens to key a");
    };
    assert_eq!(violation.partition_label, "key \"b\"");
    let Verdict::Unknown(undecided) = check(&Kv::default(), &history[..24], &Budget::states(50))
    else {
        panic!("key a alone is undecided with 50 states");
    };
    assert_eq!(undecided.undecided[0].label, "key \"a\"");
}

/// A lost update: two clients read 0, both write 1 with a cas and both are told they swapped.
fn lost_update() -> Vec<Op> {
    vec![
        write(0, 0, 10, 0),
        read(1, 20, 30, Some(0)),
        read(2, 22, 32, Some(0)),
        cas(1, 40, 50, 0, 1, true),
        cas(2, 42, 52, 0, 1, true),
        read(3, 45, 60, Some(1)),
        lost_write(4, 55, 5),
        read(3, 70, 80, Some(1)),
        write(1, 90, 95, 2),
    ]
}

#[test]
fn a_violation_names_a_minimal_core() {
    let Verdict::NotLinearizable(violation) = verdict(&lost_update()) else {
        panic!("two cas cannot both swap 0")
    };
    assert!(violation.minimal);
    let core: Vec<usize> = violation.core.iter().map(|op| op.index).collect();
    // The first write of 0 may be set aside: even as a lost write it can supply only one 0.
    assert_eq!(core, vec![3, 4]);
    assert_eq!(violation.cutoff, Some(52));
    // Three operations called after the second cas returned, three reads set aside.
    assert_eq!(violation.left_out, 6);
    let stuck: Vec<usize> = violation.stuck.iter().map(|op| op.index).collect();
    assert_eq!(stuck, vec![4]);
}

#[test]
fn a_violation_renders_for_people() {
    let Verdict::NotLinearizable(violation) = verdict(&lost_update()) else {
        panic!("violation")
    };
    golden!("lost_update", violation.render());
    let Verdict::NotLinearizable(violation) =
        decide(&Register::new(), &lost_update(), &Budget::default())
    else {
        panic!("violation")
    };
    golden!("lost_update_not_minimised", violation.render());
}

#[test]
fn an_undecided_check_renders_for_people() {
    let Verdict::Unknown(undecided) =
        check(&Register::new(), &crowded_history(12), &Budget::states(50))
    else {
        panic!("undecided");
    };
    golden!("undecided", undecided.render());
}

#[test]
fn a_tiny_memory_budget_gives_unknown_naming_the_memory_limit() {
    let budget = Budget::default().with_max_bytes(64 << 10);
    let Verdict::Unknown(undecided) = check(&Register::new(), &crowded_history(12), &budget) else {
        panic!("64 KiB cannot decide it");
    };
    assert_eq!(undecided.reason, UndecidedReason::MaxBytes);
    assert_eq!(undecided.max_bytes, 64 << 10);
    let partition = &undecided.undecided[0];
    assert_eq!(partition.reason, UndecidedReason::MaxBytes);
    assert!(partition.states > 0, "it searched before it stopped");
    assert!(
        partition.bytes <= 64 << 10,
        "it held {} bytes",
        partition.bytes
    );
    let text = undecided.render();
    assert!(
        text.starts_with("unknown: the budget ran out (memory limit of 64.0 KiB reached); 0 of 1"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "partition 1: 24 operations, {} states explored, holding ",
            partition.states
        )) && text.contains("reached max_bytes (64.0 KiB)"),
        "{text}"
    );
    golden!("undecided_max_bytes", text);
}

#[test]
fn the_default_memory_budget_decides_what_the_states_allow() {
    assert_eq!(Budget::default().max_bytes, Budget::DEFAULT_MAX_BYTES);
    for clients in [6, 8] {
        let verdict = check(
            &Register::new(),
            &crowded_history(clients),
            &Budget::default(),
        );
        assert!(verdict.is_linearizable(), "{}", verdict.render());
    }
    assert!(verdict(&lost_update()).is_not_linearizable());
    // The limit is what stops the search, not the states: the same history decides with room.
    let room = Budget::default().with_max_bytes(256 << 20);
    assert!(check(&Register::new(), &crowded_history(8), &room).is_linearizable());
}

#[test]
fn a_key_out_of_memory_does_not_hide_a_violating_key() {
    let put = |client: u64, call: u64, ret: u64, key: &str, value: &str| {
        Operation::completed(
            client,
            call,
            ret,
            KvInput {
                key: key.into(),
                op: KvOp::Put(value.into()),
            },
            KvOutput::Done,
        )
    };
    let get = |client: u64, call: u64, ret: u64, key: &str, value: &str| {
        Operation::completed(
            client,
            call,
            ret,
            KvInput {
                key: key.into(),
                op: KvOp::Get,
            },
            KvOutput::Value(value.into()),
        )
    };
    let mut history = Vec::new();
    for client in 0..12u64 {
        history.push(put(client, client, 100 + client, "a", &client.to_string()));
        history.push(get(client + 20, 50, 200, "a", &(11 - client).to_string()));
    }
    history.push(put(40, 300, 301, "b", "x"));
    history.push(get(41, 302, 303, "b", ""));
    let budget = Budget::default().with_max_bytes(64 << 10);
    let Verdict::NotLinearizable(violation) = decide(&Kv::default(), &history, &budget) else {
        panic!("key b violates whatever happens to key a");
    };
    assert_eq!(violation.partition_label, "key \"b\"");
    let Verdict::Unknown(undecided) = decide(&Kv::default(), &history[..24], &budget) else {
        panic!("key a alone does not fit in 64 KiB");
    };
    assert_eq!(undecided.undecided[0].label, "key \"a\"");
    assert_eq!(undecided.reason, UndecidedReason::MaxBytes);
}

/// `(states, bytes)` after each slice of a search of `history`, until it ends.
fn growth<M: Model>(model: &M, history: &[Operation<M::Input, M::Output>]) -> Vec<(usize, usize)> {
    let all: Vec<usize> = (0..history.len()).collect();
    let mut search = Search::new(model, history, search_ops(history, &all, &[]), 2_000);
    let mut seen = vec![(search.states(), search.bytes())];
    while search.run(64, usize::MAX) == Progress::Paused {
        seen.push((search.states(), search.bytes()));
    }
    seen.push((search.states(), search.bytes()));
    seen
}

#[test]
fn the_bytes_accounted_grow_with_the_states_kept() {
    let seen = growth(&Register::new(), &crowded_history(12));
    assert!(seen.len() > 10, "the search takes many slices: {seen:?}");
    // Buffers grow by doubling, so the bytes rise in steps, and never fall while states are
    // kept; each configuration costs at least its bitset word and its state.
    for pair in seen.windows(2) {
        assert!(
            pair[1].1 >= pair[0].1,
            "fewer bytes for more states: {seen:?}"
        );
    }
    for &(states, bytes) in &seen {
        assert!(bytes > states * (8 + size_of::<Option<i64>>()), "{seen:?}");
    }
    let (states, bytes) = *seen.last().unwrap();
    assert_eq!(states, 2_000);
    let (_, bytes_at_200) = *seen.iter().find(|(states, _)| *states >= 200).unwrap();
    assert!(bytes > 4 * bytes_at_200, "{seen:?}");

    // The same search with kv states: long values cost more than short ones.
    let kv = |value_len: usize| -> Vec<Operation<KvInput, KvOutput>> {
        crowded_history(12)
            .iter()
            .map(|op| {
                let text = |v: i64| format!("{v}{}", "x".repeat(value_len));
                let (input, output) = match (&op.input, &op.output) {
                    (In::Write(v), _) => (KvOp::Put(text(*v)), KvOutput::Done),
                    (_, Some(Out::Read(Some(v)))) => (KvOp::Get, KvOutput::Value(text(*v))),
                    other => panic!("not in a crowded history: {other:?}"),
                };
                Operation {
                    input: KvInput {
                        key: "k".into(),
                        op: input,
                    },
                    output: Some(output),
                    client: op.client,
                    call: op.call,
                    ret: op.ret,
                }
            })
            .collect()
    };
    let short = growth(&Kv::default(), &kv(1));
    let long = growth(&Kv::default(), &kv(1_000));
    let (short_states, short_bytes) = *short.last().unwrap();
    let (long_states, long_bytes) = *long.last().unwrap();
    assert_eq!(short_states, long_states);
    assert!(
        long_bytes > short_bytes + short_states * 500,
        "{short_bytes} vs {long_bytes} for {short_states} states"
    );
}
