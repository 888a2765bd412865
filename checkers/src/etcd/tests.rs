//! The model's and the search adapter's unit tests.

use std::collections::BTreeSet;

use super::model::*;
use super::render::*;
use super::wgl::*;
use crate::history::{Compare, CompareResult, CompareTarget, Kv, Request, Response};
use crate::linearizability::{Model, Operation};

fn input(request: Request) -> EtcdInput {
    EtcdInput { id: 0, request }
}

fn put(key: &str, value: &str) -> Request {
    Request::Put {
        key: key.into(),
        value: value.into(),
        lease: 0,
    }
}

fn put_lease(key: &str, value: &str, lease: i64) -> Request {
    Request::Put {
        key: key.into(),
        value: value.into(),
        lease,
    }
}

fn get(key: &str, range_end: Option<&str>) -> Request {
    Request::Get {
        key: key.into(),
        range_end: range_end.map(str::to_string),
        revision: 0,
        limit: 0,
        keys_only: false,
        serializable: false,
    }
}

fn delete(key: &str, range_end: Option<&str>) -> Request {
    Request::Delete {
        key: key.into(),
        range_end: range_end.map(str::to_string),
    }
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Kv {
    Kv {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease: 0,
    }
}

fn got(kvs: Vec<Kv>) -> Response {
    let count = kvs.len() as i64;
    Response::Get {
        kvs,
        count,
        more: false,
    }
}

/// Applies requests in order, each of which must be accepted.
fn run(requests: &[Request]) -> (EtcdState, Vec<(i64, Response)>) {
    let mut state = EtcdState::new();
    let mut outputs = Vec::new();
    for request in requests {
        let applied = state
            .apply(request, None)
            .unwrap_or_else(|e| panic!("{request:?}: {e:?}"));
        applied.state.check_invariants();
        outputs.push((applied.header_revision, applied.response));
        state = applied.state;
    }
    (state, outputs)
}

#[test]
fn puts_bump_the_revision_and_track_create_mod_and_version() {
    let (state, outputs) = run(&[
        put("a", "1"),
        put("a", "2"),
        delete("a", None),
        put("a", "3"),
    ]);
    assert_eq!(outputs[0], (2, Response::Put {}));
    assert_eq!(outputs[1], (3, Response::Put {}));
    assert_eq!(outputs[2], (4, Response::Delete { deleted: 1 }));
    assert_eq!(outputs[3], (5, Response::Put {}));
    assert_eq!(state.revision(), 5);
    // A delete ends the key's generation: the next put starts again at version 1.
    assert_eq!(state.keyspace()["a"], kv("a", "3", 5, 5, 1));
}

#[test]
fn a_delete_of_nothing_and_a_read_do_not_bump() {
    let (state, outputs) = run(&[put("a", "1"), delete("b", None), get("a", None)]);
    assert_eq!(outputs[1], (2, Response::Delete { deleted: 0 }));
    assert_eq!(outputs[2], (2, got(vec![kv("a", "1", 2, 2, 1)])));
    assert_eq!(state.revision(), 2);
}

#[test]
fn ranges_single_key_from_key_and_half_open() {
    let (state, _) = run(&[put("a", "1"), put("b", "2"), put("c", "3")]);
    let keys = |request: Request| match state.apply(&request, None).unwrap().response {
        Response::Get { kvs, .. } => kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    assert_eq!(keys(get("b", None)), ["b"]);
    assert_eq!(keys(get("b", Some(""))), ["b"]);
    assert_eq!(keys(get("b", Some("\u{0}"))), ["b", "c"]);
    assert_eq!(keys(get("a", Some("c"))), ["a", "b"]);
    assert_eq!(keys(get("c", Some("a"))), Vec::<String>::new());
    assert_eq!(keys(get("\u{0}", Some("\u{0}"))), ["a", "b", "c"]);
    let (_, outputs) = run(&[
        put("a", "1"),
        put("b", "2"),
        put("c", "3"),
        delete("a", Some("c")),
    ]);
    assert_eq!(outputs[3], (5, Response::Delete { deleted: 2 }));
}

#[test]
fn limit_counts_every_match_and_keys_only_drops_values() {
    let (state, _) = run(&[put("a", "1"), put("b", "2"), put("c", "3")]);
    let request = Request::Get {
        key: "a".into(),
        range_end: Some("\u{0}".into()),
        revision: 0,
        limit: 2,
        keys_only: true,
        serializable: false,
    };
    let applied = state.apply(&request, None).unwrap();
    assert_eq!(
        applied.response,
        Response::Get {
            kvs: vec![kv("a", "", 2, 2, 1), kv("b", "", 3, 3, 1)],
            count: 3,
            more: true
        }
    );
}

fn cas(key: &str, target: CompareTarget, result: CompareResult) -> Request {
    Request::Txn {
        compare: vec![Compare {
            key: key.into(),
            result,
            target,
        }],
        success: vec![put(key, "new"), get(key, None)],
        failure: vec![get(key, None)],
    }
}

fn succeeded(state: &EtcdState, request: &Request) -> bool {
    match state.apply(request, None).unwrap().response {
        Response::Txn { succeeded, .. } => succeeded,
        other => panic!("{other:?}"),
    }
}

#[test]
fn txn_compares_on_a_missing_key_see_zero_and_every_value_compare_fails() {
    let empty = EtcdState::new();
    assert!(succeeded(
        &empty,
        &cas("k", CompareTarget::Version(0), CompareResult::Equal)
    ));
    assert!(succeeded(
        &empty,
        &cas("k", CompareTarget::Create(0), CompareResult::Equal)
    ));
    assert!(succeeded(
        &empty,
        &cas("k", CompareTarget::Mod(1), CompareResult::Less)
    ));
    assert!(succeeded(
        &empty,
        &cas("k", CompareTarget::Lease(0), CompareResult::Equal)
    ));
    for result in [
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Greater,
        CompareResult::Less,
    ] {
        assert!(!succeeded(
            &empty,
            &cas("k", CompareTarget::Value(String::new()), result)
        ));
    }
    let (state, _) = run(&[put("k", "b")]);
    assert!(succeeded(
        &state,
        &cas(
            "k",
            CompareTarget::Value("a".into()),
            CompareResult::Greater
        )
    ));
    assert!(succeeded(
        &state,
        &cas("k", CompareTarget::Value("b".into()), CompareResult::Equal)
    ));
    assert!(succeeded(
        &state,
        &cas("k", CompareTarget::Mod(2), CompareResult::Equal)
    ));
    assert!(!succeeded(
        &state,
        &cas("k", CompareTarget::Version(1), CompareResult::NotEqual)
    ));
}

#[test]
fn a_txn_bumps_once_and_its_reads_see_its_earlier_writes() {
    let (state, _) = run(&[put("k", "old")]);
    let txn = Request::Txn {
        compare: vec![Compare {
            key: "k".into(),
            result: CompareResult::Equal,
            target: CompareTarget::Value("old".into()),
        }],
        success: vec![
            get("k", None),
            put("k", "new"),
            put("j", "x"),
            get("j", Some("l")),
        ],
        failure: vec![],
    };
    let applied = state.apply(&txn, None).unwrap();
    assert_eq!(applied.header_revision, 3);
    assert_eq!(
        applied.response,
        Response::Txn {
            succeeded: true,
            responses: vec![
                got(vec![kv("k", "old", 2, 2, 1)]),
                Response::Put {},
                Response::Put {},
                got(vec![kv("j", "x", 3, 3, 1), kv("k", "new", 2, 3, 2)]),
            ],
        }
    );
    // A txn whose branch only reads changes nothing.
    let read_only = Request::Txn {
        compare: vec![],
        success: vec![get("k", None)],
        failure: vec![],
    };
    assert_eq!(state.apply(&read_only, None).unwrap().header_revision, 2);
}

#[test]
fn a_txn_writing_a_key_twice_is_refused() {
    let twice = Request::Txn {
        compare: vec![],
        success: vec![put("k", "1"), put("k", "2")],
        failure: vec![],
    };
    assert_eq!(
        EtcdState::new().apply(&twice, None),
        Err(Refusal::DuplicateKey)
    );
    let covered = Request::Txn {
        compare: vec![],
        success: vec![],
        failure: vec![delete("a", Some("z")), put("k", "2")],
    };
    assert_eq!(
        EtcdState::new().apply(&covered, None),
        Err(Refusal::DuplicateKey)
    );
    let nested = Request::Txn {
        compare: vec![],
        success: vec![Request::Compact { revision: 1 }],
        failure: vec![],
    };
    assert_eq!(
        EtcdState::new().apply(&nested, None),
        Err(Refusal::NotATxnOp)
    );
}

#[test]
fn leases_attach_keys_and_a_revoke_deletes_them_in_one_revision() {
    let (state, outputs) = run(&[
        Request::LeaseGrant { ttl: 60, id: 7 },
        put_lease("a", "1", 7),
        put_lease("b", "2", 7),
        put("c", "3"),
        put_lease("c", "4", 7),
        put("b", "5"),
    ]);
    assert_eq!(outputs[0], (1, Response::LeaseGrant { id: 7, ttl: 60 }));
    assert_eq!(
        state.leases()[&7].keys,
        BTreeSet::from(["a".to_string(), "c".to_string()])
    );
    let revoked = state.apply(&Request::LeaseRevoke { id: 7 }, None).unwrap();
    assert_eq!(revoked.header_revision, 7);
    assert_eq!(revoked.state.keyspace().keys().collect::<Vec<_>>(), ["b"]);
    assert!(revoked.state.leases().is_empty());
    // A revoke of a lease with no keys bumps nothing; a put to a missing lease is refused.
    let (empty, _) = run(&[Request::LeaseGrant { ttl: 60, id: 8 }]);
    assert_eq!(
        empty
            .apply(&Request::LeaseRevoke { id: 8 }, None)
            .unwrap()
            .header_revision,
        1
    );
    assert_eq!(
        EtcdState::new().apply(&put_lease("a", "1", 9), None),
        Err(Refusal::LeaseNotFound)
    );
    assert_eq!(
        EtcdState::new().apply(&Request::LeaseRevoke { id: 9 }, None),
        Err(Refusal::LeaseNotFound)
    );
    assert_eq!(
        state.apply(&Request::LeaseGrant { ttl: 5, id: 7 }, None),
        Err(Refusal::LeaseExists)
    );
}

#[test]
fn a_lease_granted_with_id_zero_takes_its_id_from_the_response() {
    let grant = Request::LeaseGrant { ttl: 1, id: 0 };
    let empty = EtcdState::new();
    assert_eq!(empty.apply(&grant, None), Err(Refusal::LeaseIdUnknown));
    // etcd raises a TTL below its minimum; it never lowers one.
    let applied = empty
        .apply(&grant, Some(&Response::LeaseGrant { id: 42, ttl: 5 }))
        .unwrap();
    assert_eq!(applied.response, Response::LeaseGrant { id: 42, ttl: 5 });
    assert!(applied.state.leases().contains_key(&42));
    let lowered = empty.apply(
        &Request::LeaseGrant { ttl: 10, id: 0 },
        Some(&Response::LeaseGrant { id: 42, ttl: 5 }),
    );
    assert_eq!(
        lowered.unwrap().response,
        Response::LeaseGrant { id: 42, ttl: 10 }
    );
    // With an unknown outcome the step changes nothing.
    assert_eq!(
        EtcdModel::new().step(&empty, &input(grant.clone()), None),
        Some(empty.clone())
    );
}

#[test]
fn compaction_needs_a_revision_above_the_last_and_not_above_the_current() {
    let (state, _) = run(&[put("a", "1"), put("a", "2"), put("a", "3")]);
    let compact = |state: &EtcdState, revision| state.apply(&Request::Compact { revision }, None);
    assert_eq!(compact(&state, 5), Err(Refusal::FutureRevision));
    let compacted = compact(&state, 3).unwrap();
    assert_eq!(
        (compacted.header_revision, compacted.response.clone()),
        (4, Response::Compact {})
    );
    assert_eq!(compacted.state.compact_revision(), 3);
    assert_eq!(compact(&compacted.state, 3), Err(Refusal::Compacted));
    let old_read = |revision| Request::Get {
        key: "a".into(),
        range_end: None,
        revision,
        limit: 0,
        keys_only: false,
        serializable: false,
    };
    assert_eq!(
        compacted.state.apply(&old_read(2), None),
        Err(Refusal::Compacted)
    );
    assert_eq!(
        compacted.state.apply(&old_read(5), None),
        Err(Refusal::FutureRevision)
    );
    // The current revision is read directly, and checked.
    assert_eq!(
        compacted.state.apply(&old_read(4), None).unwrap().response,
        got(vec![kv("a", "3", 2, 4, 3)])
    );
}

#[test]
fn a_step_checks_the_header_revision_and_the_response() {
    let model = EtcdModel::new();
    let empty = model.init();
    let after = model
        .step(&empty, &input(put("a", "1")), Some(&(2, Response::Put {})))
        .unwrap();
    assert_eq!(after.revision(), 2);
    assert_eq!(
        model.step(&empty, &input(put("a", "1")), Some(&(3, Response::Put {}))),
        None
    );
    assert_eq!(
        model.step(&after, &input(get("a", None)), Some(&(2, got(vec![])))),
        None
    );
    assert_eq!(
        model.step(
            &after,
            &input(get("a", None)),
            Some(&(2, got(vec![kv("a", "1", 2, 2, 1)])))
        ),
        Some(after.clone())
    );
    // An acknowledged put to a missing lease is impossible; an unknown one changes nothing.
    assert_eq!(
        model.step(
            &empty,
            &input(put_lease("a", "1", 3)),
            Some(&(2, Response::Put {}))
        ),
        None
    );
    assert_eq!(
        model.step(&empty, &input(put_lease("a", "1", 3)), None),
        Some(empty.clone())
    );
}

#[test]
fn a_serializable_read_steps_only_at_its_revision() {
    let model = EtcdModel::new();
    let (state, _) = run(&[put("a", "1"), put("a", "2")]);
    let read = Request::Get {
        key: "a".into(),
        range_end: None,
        revision: 0,
        limit: 0,
        keys_only: false,
        serializable: true,
    };
    let at_3 = (3, got(vec![kv("a", "2", 2, 3, 2)]));
    assert_eq!(
        model.step(&state, &input(read.clone()), Some(&at_3)),
        Some(state.clone())
    );
    let at_2 = (2, got(vec![kv("a", "1", 2, 2, 1)]));
    assert_eq!(model.step(&state, &input(read), Some(&at_2)), None);
}

#[test]
fn descriptions_read_like_the_requests() {
    let op = Operation::completed(
        3,
        1_200_000_000,
        1_250_000_000,
        input(put("k2", "v17")),
        (41, Response::Put {}),
    );
    assert_eq!(EtcdModel::new().describe(&op), "put k2=v17 -> ok rev 41");
    let txn = cas("k", CompareTarget::Mod(5), CompareResult::Equal);
    assert_eq!(
        request_text(&txn),
        "txn if k mod = 5 then put k=new; get k else get k"
    );
    assert_eq!(seconds(1_200_000_000), "1.200s");
    assert_eq!(seconds(1_200_300_000), "1.200300s");
    assert_eq!(seconds(7), "0.000000007s");
}

#[test]
fn the_read_fast_path_agrees_with_apply() {
    let (state, _) = run(&[
        Request::LeaseGrant { ttl: 60, id: 4 },
        put("a", "1"),
        put_lease("b", "2", 4),
        put("c", "3"),
        put("c", "4"),
    ]);
    let model = EtcdModel::new();
    let header = state.revision();
    for (key, range_end) in [
        ("a", None),
        ("b", Some("d")),
        ("a", Some("\u{0}")),
        ("z", None),
    ] {
        for limit in [0, 1, 2, 5] {
            for keys_only in [false, true] {
                let request = Request::Get {
                    key: key.into(),
                    range_end: range_end.map(str::to_string),
                    revision: 0,
                    limit,
                    keys_only,
                    serializable: false,
                };
                let answer = state.apply(&request, None).unwrap().response;
                let step = |response: &Response| {
                    model.step(
                        &state,
                        &input(request.clone()),
                        Some(&(header, response.clone())),
                    )
                };
                assert_eq!(step(&answer), Some(state.clone()), "{request:?}");
                let Response::Get { kvs, count, more } = answer.clone() else {
                    unreachable!()
                };
                let wrong = [
                    Response::Get {
                        kvs: kvs.clone(),
                        count: count + 1,
                        more,
                    },
                    Response::Get {
                        kvs: kvs.clone(),
                        count,
                        more: !more,
                    },
                    Response::Get {
                        kvs: kvs.iter().skip(1).cloned().collect(),
                        count,
                        more,
                    },
                    Response::Get {
                        kvs: kvs
                            .iter()
                            .map(|kv| Kv {
                                version: kv.version + 1,
                                ..kv.clone()
                            })
                            .collect(),
                        count,
                        more,
                    },
                    Response::Get {
                        kvs: kvs
                            .iter()
                            .map(|kv| Kv {
                                value: "x".into(),
                                ..kv.clone()
                            })
                            .collect(),
                        count,
                        more,
                    },
                ];
                for response in wrong.iter().filter(|r| **r != answer) {
                    assert_eq!(step(response), None, "{request:?} answered {response:?}");
                }
            }
        }
    }
}

fn op(id: u64, request: Request, output: Option<(i64, Response)>) -> EtcdOperation {
    let input = EtcdInput { id, request };
    match output {
        Some(output) => Operation::completed(1, id, id, input, output),
        None => Operation::unknown(1, id, input),
    }
}

#[test]
fn claimed_revisions_are_made_only_by_their_claimers() {
    let ops = [
        op(0, put("a", "1"), Some((2, Response::Put {}))),
        op(1, put("b", "1"), None),
        op(
            2,
            delete("a", None),
            Some((3, Response::Delete { deleted: 0 })),
        ),
    ];
    let model = EtcdModel::for_operations(&ops);
    let empty = model.init();
    // Revision 2 is claimed by op 0: the unknown op 1 cannot make it, op 0 can even with
    // its outcome set aside.
    assert_eq!(model.step(&empty, &ops[1].input, None), None);
    assert!(model.step(&empty, &ops[0].input, None).is_some());
    // Revision 3 is claimed by nobody (op 2 deleted nothing): only op 1, of unknown outcome,
    // may make it; op 2 with its outcome set aside may not.
    let at_2 = model
        .step(&empty, &ops[0].input, Some(&(2, Response::Put {})))
        .unwrap();
    assert_eq!(
        model.step(&at_2, &ops[1].input, None).map(|s| s.revision()),
        Some(3)
    );
    assert_eq!(model.step(&at_2, &ops[2].input, None), None);
    // The plain model allows everything.
    assert!(EtcdModel::new().step(&empty, &ops[1].input, None).is_some());
}

#[test]
fn a_header_revision_that_cannot_follow_the_state_is_refused_at_once() {
    let model = EtcdModel::new();
    let (state, _) = run(&[put("a", "1")]);
    let revoke = Request::LeaseRevoke { id: 1 };
    // A revoke's header may be the revision or the next; a put's only the next.
    assert_eq!(
        model.step(&state, &input(put("b", "1")), Some(&(2, Response::Put {}))),
        None
    );
    assert_eq!(
        model.step(&state, &input(revoke), Some(&(4, Response::LeaseRevoke {}))),
        None
    );
}

#[test]
fn heap_bytes_count_keys_values_and_leases_and_share_what_clones_share() {
    let empty = EtcdState::new();
    let one = empty
        .apply(&put("/k", &"v".repeat(1000)), None)
        .expect("put")
        .state;
    assert!(one.heap_bytes() >= empty.heap_bytes() + 1000);
    let alone = one.heap_bytes();
    // A clone shares the keyspace: each of the two holds half of it.
    let copy = one.clone();
    assert!(copy.heap_bytes() <= alone.div_ceil(2) + 1);
    let two = copy.apply(&put("/other", "x"), None).expect("put").state;
    assert!(two.heap_bytes() > 1000);
    let leased = empty
        .apply(&Request::LeaseGrant { id: 7, ttl: 60 }, None)
        .expect("grant")
        .state;
    assert!(leased.heap_bytes() > empty.heap_bytes());
}
