//! Each request kind, fed exact inputs, with exact outputs asserted.

mod common;

use common::*;
use faultline_store::*;

#[test]
fn an_empty_store_is_at_revision_one() {
    let h = Harness::new();
    let r = h.get("k");
    assert_eq!(r.header.revision, 1);
    assert_eq!(r.count, 0);
    assert!(r.kvs.is_empty());
}

#[test]
fn put_creates_then_versions_a_key_and_returns_prev_kv() {
    let mut h = Harness::new();
    assert_eq!(h.put("k", "v1").header.revision, 2);
    let second = PutRequest {
        prev_kv: true,
        ..put("k", "v2")
    };
    let Ok(Response::Put(r)) = h.submit(Request::Put(second)) else {
        panic!()
    };
    assert_eq!(r.header.revision, 3);
    let prev = r.prev_kv.expect("prev_kv asked for");
    assert_eq!(
        (prev.value.as_slice(), prev.version, prev.mod_revision),
        (&b"v1"[..], 1, 2)
    );
    let kv = &h.get("k").kvs[0];
    assert_eq!(
        (
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.value.as_slice()
        ),
        (2, 3, 2, &b"v2"[..])
    );
}

#[test]
fn a_deleted_key_starts_a_new_generation_at_version_one() {
    let mut h = Harness::new();
    h.put("k", "a");
    h.put("k", "b");
    h.delete("k", b"");
    h.put("k", "c");
    let kv = &h.get("k").kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
}

#[test]
fn put_ignore_value_and_ignore_lease_keep_what_the_key_has() {
    let mut h = Harness::new();
    let lease = h.grant(60, 0).id;
    h.put_lease("k", "v", lease);
    let req = PutRequest {
        ignore_value: true,
        ..put("k", "")
    };
    h.submit(Request::Put(req)).unwrap();
    let kv = h.get("k").kvs[0].clone();
    assert_eq!(
        (kv.value.as_slice(), kv.lease, kv.version),
        (&b"v"[..], 0, 2)
    );
    h.put_lease("k", "w", lease);
    let req = PutRequest {
        ignore_lease: true,
        ..put("k", "x")
    };
    h.submit(Request::Put(req)).unwrap();
    let kv = h.get("k").kvs[0].clone();
    assert_eq!((kv.value.as_slice(), kv.lease), (&b"x"[..], lease));
}

#[test]
fn put_rejects_bad_requests_without_writing() {
    let mut h = Harness::new();
    let cases = [
        (
            PutRequest {
                ignore_value: true,
                ..put("missing", "")
            },
            EtcdError::KeyNotFound,
        ),
        (
            PutRequest {
                ignore_lease: true,
                ..put("missing", "v")
            },
            EtcdError::KeyNotFound,
        ),
        (
            PutRequest {
                ignore_value: true,
                ..put("k", "v")
            },
            EtcdError::ValueProvided,
        ),
        (
            PutRequest {
                ignore_lease: true,
                lease: 5,
                ..put("k", "v")
            },
            EtcdError::LeaseProvided,
        ),
        (
            PutRequest {
                lease: 99,
                ..put("k", "v")
            },
            EtcdError::LeaseNotFound,
        ),
        (put("", "v"), EtcdError::EmptyKey),
    ];
    for (req, expected) in cases {
        assert_eq!(
            h.submit(Request::Put(req.clone())),
            Err(expected),
            "{req:?}"
        );
        assert_eq!(h.rev(), 1, "a refused put wrote something");
    }
}

#[test]
fn range_end_forms_select_a_key_a_prefix_or_everything_from_a_key() {
    let mut h = Harness::new();
    for k in ["a", "b", "b/1", "b/2", "c"] {
        h.put(k, "v");
    }
    let read = |h: &Harness, key: &str, end: &[u8]| keys(&h.store.range(&range(key, end)).unwrap());
    assert_eq!(read(&h, "b", b""), ["b"]);
    assert_eq!(read(&h, "b/", &prefix_end("b/")), ["b/1", "b/2"]);
    assert_eq!(read(&h, "b", b"\0"), ["b", "b/1", "b/2", "c"]);
    assert_eq!(read(&h, "\0", b"\0"), ["a", "b", "b/1", "b/2", "c"]);
    assert_eq!(
        read(&h, "c", b"a"),
        Vec::<String>::new(),
        "an end below the key is empty"
    );
    assert_eq!(h.store.range(&range("", b"")), Err(EtcdError::EmptyKey));
}

#[test]
fn range_limit_sets_more_and_count_counts_every_match() {
    let mut h = Harness::new();
    for k in ["a", "b", "c", "d"] {
        h.put(k, "v");
    }
    let r = h
        .store
        .range(&RangeRequest {
            limit: 2,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(
        (keys(&r), r.more, r.count),
        (vec!["a".into(), "b".into()], true, 4)
    );
    let r = h
        .store
        .range(&RangeRequest {
            limit: 4,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (4, false, 4));
    let r = h
        .store
        .range(&RangeRequest {
            keys_only: true,
            ..range("a", b"")
        })
        .unwrap();
    assert!(r.kvs[0].value.is_empty());
    assert_eq!(r.kvs[0].version, 1);
    let r = h
        .store
        .range(&RangeRequest {
            count_only: true,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 4, false));
}

#[test]
fn range_sorts_by_every_target_with_key_order_breaking_ties() {
    let mut h = Harness::new();
    h.put("a", "3");
    h.put("b", "1");
    h.put("c", "2");
    h.put("b", "4"); // b: version 2, mod 5
    let sorted = |order, target| {
        let req = RangeRequest {
            sort_order: order,
            sort_target: target,
            ..range("a", b"\0")
        };
        keys(&h.store.range(&req).unwrap())
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(Descend, Key), ["c", "b", "a"]);
    assert_eq!(sorted(Ascend, Value), ["c", "a", "b"]);
    assert_eq!(
        sorted(None, Value),
        ["c", "a", "b"],
        "no order on a non-key target ascends"
    );
    assert_eq!(sorted(Descend, Mod), ["b", "c", "a"]);
    assert_eq!(sorted(Ascend, Create), ["a", "b", "c"]);
    assert_eq!(
        sorted(Descend, Version),
        ["b", "a", "c"],
        "ties keep key order"
    );
    let req = RangeRequest {
        sort_order: Descend,
        sort_target: Key,
        limit: 1,
        ..range("a", b"\0")
    };
    let r = h.store.range(&req).unwrap();
    assert_eq!(
        (keys(&r), r.more),
        (vec!["c".to_string()], true),
        "limit applies after sorting"
    );
}

/// etcd 3.4's applyRange reads `limit + 1` keys in key order when no sort order is given, and
/// only then sorts them by a non-key target: the answer is not the first of a full sort.
#[test]
fn a_limit_without_sort_order_sorts_only_the_keys_it_read() {
    let mut h = Harness::new();
    h.put("c", "x"); // create revision 2
    h.put("b", "x"); // 3
    h.put("a", "x"); // 4
    let limited = |order, min_create_revision| {
        let req = RangeRequest {
            sort_order: order,
            sort_target: SortTarget::Create,
            limit: 1,
            min_create_revision,
            ..range("a", b"\0")
        };
        let r = h.store.range(&req).unwrap();
        (keys(&r), r.more)
    };
    assert_eq!(
        limited(SortOrder::None, 0),
        (vec!["b".to_string()], true),
        "a and b are read, and b was created first"
    );
    assert_eq!(
        limited(SortOrder::Ascend, 0),
        (vec!["c".to_string()], true),
        "an explicit order reads every key before sorting"
    );
    assert_eq!(
        limited(SortOrder::None, 1),
        (vec!["c".to_string()], true),
        "a revision filter reads every key before sorting"
    );
}

#[test]
fn range_filters_on_revisions_but_count_ignores_them() {
    let mut h = Harness::new();
    h.put("a", "v"); // 2
    h.put("b", "v"); // 3
    h.put("c", "v"); // 4
    h.put("a", "w"); // 5
    let req = RangeRequest {
        min_mod_revision: 4,
        ..range("a", b"\0")
    };
    let r = h.store.range(&req).unwrap();
    assert_eq!((keys(&r), r.count), (vec!["a".into(), "c".into()], 3));
    let req = RangeRequest {
        max_create_revision: 3,
        ..range("a", b"\0")
    };
    assert_eq!(keys(&h.store.range(&req).unwrap()), ["a", "b"]);
    let req = RangeRequest {
        min_create_revision: 3,
        max_mod_revision: 3,
        ..range("a", b"\0")
    };
    assert_eq!(keys(&h.store.range(&req).unwrap()), ["b"]);
}

#[test]
fn range_at_a_past_revision_reads_history_with_the_current_header() {
    let mut h = Harness::new();
    h.put("k", "1"); // 2
    h.put("k", "2"); // 3
    h.delete("k", b""); // 4
    let at = |h: &Harness, rev| {
        h.store.range(&RangeRequest {
            revision: rev,
            ..range("k", b"")
        })
    };
    assert_eq!(text(&at(&h, 2).unwrap().kvs[0].value), "1");
    assert_eq!(at(&h, 3).unwrap().header.revision, 4);
    assert!(at(&h, 4).unwrap().kvs.is_empty());
    assert_eq!(at(&h, 5), Err(EtcdError::FutureRevision));
    h.compact(3).unwrap();
    assert_eq!(at(&h, 2), Err(EtcdError::Compacted));
    let kv = at(&h, 3).unwrap().kvs[0].clone();
    assert_eq!(
        text(&kv.value),
        "2",
        "the compact revision itself stays readable"
    );
}

#[test]
fn delete_range_counts_returns_prev_kvs_and_bumps_one_revision() {
    let mut h = Harness::new();
    for k in ["p/1", "p/2", "q"] {
        h.put(k, "v");
    }
    let r = h.delete("p/", &prefix_end("p/"));
    assert_eq!(r.deleted, 2);
    assert_eq!(
        r.prev_kvs
            .iter()
            .map(|kv| text(&kv.key))
            .collect::<Vec<_>>(),
        ["p/1", "p/2"]
    );
    assert_eq!(r.header.revision, 5, "two deletes, one revision");
    let r = h.delete("nothing", b"");
    assert_eq!(
        (r.deleted, r.header.revision),
        (0, 5),
        "deleting nothing changes nothing"
    );
}

#[test]
fn txn_compares_every_target_and_runs_the_matching_branch() {
    let mut h = Harness::new();
    let lease = h.grant(60, 7).id;
    h.put_lease("k", "v", lease); // rev 2, version 1
    use CompareResult::*;
    use CompareTarget::*;
    let cases = [
        (cmp("k", Equal, Version(1)), true),
        (cmp("k", Greater, Version(0)), true),
        (cmp("k", Less, Create(2)), false),
        (cmp("k", Equal, Mod(2)), true),
        (cmp("k", NotEqual, Value(b"v".to_vec())), false),
        (cmp("k", Greater, Value(b"u".to_vec())), true),
        (cmp("k", Equal, Lease(7)), true),
        (cmp("missing", Equal, Version(0)), true),
        (cmp("missing", Equal, Create(0)), true),
        (cmp("missing", Equal, Value(Vec::new())), false),
        (cmp("missing", NotEqual, Value(b"x".to_vec())), false),
    ];
    for (compare, expected) in cases {
        let txn = TxnRequest {
            compare: vec![compare.clone()],
            success: vec![RequestOp::Range(range("k", b""))],
            failure: vec![],
        };
        let r = h.txn(txn).unwrap();
        assert_eq!(r.succeeded, expected, "{compare:?}");
        assert_eq!(r.responses.len(), expected as usize);
    }
    assert_eq!(h.rev(), 2, "read-only txns do not bump the revision");
}

#[test]
fn txn_compare_over_a_range_must_hold_for_every_key() {
    let mut h = Harness::new();
    h.put("r/a", "1");
    h.put("r/b", "2");
    let mut compare = cmp("r/", CompareResult::Less, CompareTarget::Mod(4));
    compare.range_end = prefix_end("r/");
    let txn = TxnRequest {
        compare: vec![compare.clone()],
        ..Default::default()
    };
    assert!(h.txn(txn).unwrap().succeeded);
    compare.target = CompareTarget::Mod(3);
    let txn = TxnRequest {
        compare: vec![compare],
        ..Default::default()
    };
    assert!(!h.txn(txn).unwrap().succeeded);
}

#[test]
fn txn_reads_see_its_own_earlier_writes_and_writes_share_one_revision() {
    let mut h = Harness::new();
    h.put("a", "old"); // 2
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Range(range("a", b"")),
            RequestOp::Put(put("a", "new")),
            RequestOp::Put(put("b", "1")),
            RequestOp::Range(range("a", b"\0")),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"c".to_vec(),
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    let r = h.txn(txn).unwrap();
    assert_eq!(r.header.revision, 3);
    let ResponseOp::Range(before) = &r.responses[0] else {
        panic!()
    };
    assert_eq!(
        (text(&before.kvs[0].value), before.header.revision),
        ("old".into(), 2)
    );
    let ResponseOp::Put(p) = &r.responses[1] else {
        panic!()
    };
    assert_eq!(p.header.revision, 3);
    let ResponseOp::Range(after) = &r.responses[3] else {
        panic!()
    };
    assert_eq!(after.header.revision, 3);
    assert_eq!(
        after
            .kvs
            .iter()
            .map(|kv| text(&kv.value))
            .collect::<Vec<_>>(),
        ["new", "1"]
    );
    assert_eq!(after.kvs[0].mod_revision, 3);
    let ResponseOp::DeleteRange(d) = &r.responses[4] else {
        panic!()
    };
    assert_eq!((d.deleted, d.header.revision), (0, 3));
}

#[test]
fn nested_txn_compares_see_the_state_before_the_outer_writes() {
    let mut h = Harness::new();
    let nested = TxnRequest {
        compare: vec![cmp("x", CompareResult::Equal, CompareTarget::Version(0))],
        success: vec![RequestOp::Put(put("y", "x-was-absent"))],
        failure: vec![RequestOp::Put(put("y", "x-was-present"))],
    };
    let txn = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Put(put("x", "1")), RequestOp::Txn(nested)],
        failure: vec![],
    };
    let r = h.txn(txn).unwrap();
    let ResponseOp::Txn(inner) = &r.responses[1] else {
        panic!()
    };
    assert!(inner.succeeded);
    assert_eq!(
        inner.header,
        ResponseHeader::default(),
        "etcd leaves nested headers empty"
    );
    assert_eq!(text(&h.get("y").kvs[0].value), "x-was-absent");
    assert_eq!(
        h.get("y").kvs[0].mod_revision,
        h.get("x").kvs[0].mod_revision
    );
}

#[test]
fn txn_refuses_duplicate_keys_and_too_many_ops() {
    let mut h = Harness::new();
    let dup = |success| TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    };
    let twice = dup(vec![
        RequestOp::Put(put("a", "1")),
        RequestOp::Put(put("a", "2")),
    ]);
    assert_eq!(h.txn(twice), Err(EtcdError::DuplicateKey));
    let put_in_delete = dup(vec![
        RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: false,
        }),
        RequestOp::Put(put("b", "1")),
    ]);
    assert_eq!(h.txn(put_in_delete), Err(EtcdError::DuplicateKey));
    let nested = TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Put(put("a", "1"))],
        failure: vec![RequestOp::Put(put("a", "2"))],
    };
    let ok = dup(vec![RequestOp::Txn(nested.clone())]);
    assert!(
        h.txn(ok).is_ok(),
        "a nested txn's two branches may each put a key"
    );
    let clash = dup(vec![RequestOp::Put(put("a", "0")), RequestOp::Txn(nested)]);
    assert_eq!(h.txn(clash), Err(EtcdError::DuplicateKey));
    let many = dup((0..129)
        .map(|i| RequestOp::Put(put(&format!("k{i}"), "v")))
        .collect());
    assert_eq!(h.txn(many), Err(EtcdError::TooManyOps));
}

#[test]
fn a_txn_whose_path_fails_a_check_writes_nothing() {
    let mut h = Harness::new();
    h.put("a", "1");
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(put("b", "1")),
            RequestOp::Put(PutRequest {
                lease: 42,
                ..put("c", "1")
            }),
        ],
        failure: vec![],
    };
    assert_eq!(h.txn(txn), Err(EtcdError::LeaseNotFound));
    let txn = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(put("b", "1")),
            RequestOp::Range(RangeRequest {
                revision: 50,
                ..range("a", b"")
            }),
        ],
        failure: vec![],
    };
    assert_eq!(h.txn(txn), Err(EtcdError::FutureRevision));
    assert_eq!(h.rev(), 2);
    assert!(h.get("b").kvs.is_empty());
}

#[test]
fn compaction_refuses_old_and_future_revisions_and_keeps_the_newest_versions() {
    let mut h = Harness::new();
    h.put("a", "1"); // 2
    h.put("a", "2"); // 3
    h.put("b", "1"); // 4
    assert_eq!(h.compact(5), Err(EtcdError::FutureRevision));
    let Ok(Response::Compact(c)) = h.compact(3) else {
        panic!()
    };
    assert_eq!(
        c.header.revision, 4,
        "compaction does not bump the revision"
    );
    assert_eq!(h.compact(3), Err(EtcdError::Compacted));
    assert_eq!(h.compact(2), Err(EtcdError::Compacted));
    let at3 = h
        .store
        .range(&RangeRequest {
            revision: 3,
            ..range("a", b"\0")
        })
        .unwrap();
    assert_eq!(keys(&at3), ["a"]);
    assert_eq!(text(&at3.kvs[0].value), "2");
}

#[test]
fn lease_grant_raises_short_ttls_and_refuses_taken_ids_and_huge_ttls() {
    let mut h = Harness::new();
    let g = h.grant(1, 0);
    assert_eq!(
        (g.id, g.ttl),
        (1, 2),
        "a TTL below the minimum is raised to it"
    );
    assert_eq!(h.grant(30, 100).id, 100);
    let again = h.submit(Request::LeaseGrant(LeaseGrantRequest { ttl: 30, id: 100 }));
    assert_eq!(again, Err(EtcdError::LeaseExists));
    let huge = h.submit(Request::LeaseGrant(LeaseGrantRequest {
        ttl: 9_000_000_001,
        id: 0,
    }));
    assert_eq!(huge, Err(EtcdError::LeaseTtlTooLarge));
    assert_eq!(h.store.lease_leases(), [1, 100]);
}

#[test]
fn lease_revoke_deletes_every_attached_key_in_one_revision() {
    let mut h = Harness::new();
    let id = h.grant(10, 0).id;
    h.put_lease("x", "1", id); // 2
    h.put_lease("y", "1", id); // 3
    h.put("z", "1"); // 4
    h.put_lease("z", "2", id); // 5
    h.put("y", "detached"); // 6: y leaves the lease
    let ttl = h.store.lease_time_to_live(id, true, 0);
    assert_eq!(ttl.keys, [b"x".to_vec(), b"z".to_vec()]);
    h.revoke(id).unwrap();
    assert_eq!(h.rev(), 7);
    assert!(h.get("x").kvs.is_empty() && h.get("z").kvs.is_empty());
    assert_eq!(h.get("y").count, 1);
    assert_eq!(h.revoke(id), Err(EtcdError::LeaseNotFound));
    assert_eq!(h.store.lease_time_to_live(id, false, 0).ttl, -1);
    assert_eq!(h.store.lease_keep_alive(id, 0).ttl, 0);
}

#[test]
fn only_a_promoted_member_expires_leases_and_keepalive_renews() {
    let mut h = Harness::new();
    h.now_ms = 1_000;
    let id = h.grant(5, 0).id;
    assert!(
        h.store.leases_expired(1_000_000, 10).is_empty(),
        "a follower never expires"
    );
    h.store.lease_promote(10_000, 3_000);
    assert_eq!(h.store.lease_time_to_live(id, false, 10_000).ttl, 8);
    assert!(h.store.leases_expired(17_999, 10).is_empty());
    assert_eq!(h.store.lease_keep_alive(id, 17_000).ttl, 5);
    assert!(h.store.leases_expired(21_999, 10).is_empty());
    assert_eq!(h.store.leases_expired(22_000, 10), [id]);
    h.store.lease_demote();
    assert!(h.store.leases_expired(u64::MAX, 10).is_empty());
}

#[test]
fn the_quota_raises_nospace_and_only_compact_defrag_and_disarm_recover() {
    let config = StoreConfig {
        quota_bytes: 64 * 1024,
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(config);
    let value = "x".repeat(2000);
    let mut refused = None;
    for i in 0..100 {
        match h.submit(Request::Put(put("big", &value))) {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (writes, error) = refused.expect("the quota refused a write");
    assert_eq!(error, EtcdError::NoSpace);
    assert!(writes > 10, "only {writes} writes fit");
    // The node raises the alarm through the log.
    let alarm = AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 1,
        alarm: AlarmType::NoSpace,
    };
    h.submit(Request::Alarm(alarm)).unwrap();
    // Apply refuses writes that grow the store even if admitted elsewhere; deletes still work.
    let req = Request::Put(put("small", "1"));
    h.index += 1;
    assert_eq!(
        h.store.apply(h.index, &req, 0),
        Some(Err(EtcdError::NoSpace))
    );
    h.delete("big", b"");
    let rev = h.rev();
    h.compact(rev).unwrap();
    let status = h.store.status();
    assert!(
        status.db_size > status.db_size_in_use,
        "compaction frees pages, not the file"
    );
    assert_eq!(
        h.store.admit(&req),
        Err(EtcdError::NoSpace),
        "the file is still too big"
    );
    h.store.defragment();
    let status = h.store.status();
    assert_eq!(status.db_size, status.db_size_in_use);
    let disarm = AlarmRequest {
        action: AlarmAction::Deactivate,
        ..alarm
    };
    let Ok(Response::Alarm(a)) = h.submit(Request::Alarm(disarm)) else {
        panic!()
    };
    assert_eq!(
        a.alarms,
        [AlarmMember {
            member_id: 1,
            alarm: AlarmType::NoSpace
        }]
    );
    assert!(h.submit(req).is_ok());
}

#[test]
fn a_corrupt_alarm_refuses_every_request() {
    let mut h = Harness::new();
    let alarm = AlarmRequest {
        action: AlarmAction::Activate,
        member_id: 2,
        alarm: AlarmType::Corrupt,
    };
    h.submit(Request::Alarm(alarm)).unwrap();
    assert_eq!(
        h.submit(Request::Put(put("k", "v"))),
        Err(EtcdError::Corrupt)
    );
    assert_eq!(h.store.range(&range("k", b"")), Err(EtcdError::Corrupt));
    let get = AlarmRequest {
        action: AlarmAction::Get,
        ..alarm
    };
    let Ok(Response::Alarm(a)) = h.submit(Request::Alarm(get)) else {
        panic!()
    };
    assert_eq!(a.alarms.len(), 1);
}

#[test]
fn an_entry_at_or_below_the_consistent_index_is_not_applied_again() {
    let mut h = Harness::new();
    h.put("k", "v");
    let req = Request::Put(put("k", "again"));
    assert_eq!(h.store.apply(1, &req, 0), None);
    assert_eq!(h.rev(), 2);
    h.store.apply_noop(5);
    assert_eq!(h.store.consistent_index(), 5);
    assert_eq!(h.store.apply(5, &req, 0), None);
    assert!(h.store.apply(6, &req, 0).is_some());
}

#[test]
fn oversized_requests_are_refused() {
    let h = Harness::new();
    let big = "x".repeat(REQUEST_BYTES_MAX + 1);
    assert_eq!(
        h.store.admit(&Request::Put(put("k", &big))),
        Err(EtcdError::RequestTooLarge)
    );
}

const REQUEST_BYTES_MAX: usize = faultline_store::store::REQUEST_BYTES_MAX_DEFAULT;

#[test]
fn hash_kv_is_equal_for_equal_logs_and_refuses_bad_revisions() {
    let mut a = Harness::new();
    let mut b = Harness::new();
    for h in [&mut a, &mut b] {
        h.put("k", "1");
        h.put("j", "2");
    }
    assert_eq!(
        a.store.hash_kv(0).unwrap().hash,
        b.store.hash_kv(0).unwrap().hash
    );
    let at2 = a.store.hash_kv(2).unwrap();
    b.put("k", "3");
    assert_ne!(
        a.store.hash_kv(0).unwrap().hash,
        b.store.hash_kv(0).unwrap().hash
    );
    assert_eq!(
        b.store.hash_kv(2).unwrap().hash,
        at2.hash,
        "a hash at a revision is stable"
    );
    assert_eq!(a.store.hash_kv(9), Err(EtcdError::FutureRevision));
    a.compact(3).unwrap();
    assert_eq!(a.store.hash_kv(2), Err(EtcdError::Compacted));
}

#[test]
fn status_reports_revisions_index_and_backend_sizes() {
    let mut h = Harness::new();
    h.put("k", "v");
    let s = h.store.status();
    assert_eq!((s.header.revision, s.raft_applied_index), (2, 1));
    assert_eq!(s.db_size, 20480 + 4096);
    assert_eq!(s.db_size_in_use, s.db_size);
}

#[test]
fn a_restored_image_answers_like_the_original() {
    let mut h = Harness::new();
    let id = h.grant(10, 0).id;
    h.put_lease("a", "1", id);
    h.put("b", "1");
    h.delete("b", b"");
    h.compact(3).unwrap();
    let image = h.store.image();
    let restored = Store::restore(StoreConfig::default(), image.clone()).unwrap();
    assert_eq!(restored.hash_kv(0).unwrap(), h.store.hash_kv(0).unwrap());
    assert_eq!(restored.image(), image);
    assert_eq!(
        restored.lease_time_to_live(id, true, 0).keys,
        [b"a".to_vec()]
    );
    let mut bad = image;
    bad.records.reverse();
    assert!(Store::restore(StoreConfig::default(), bad).is_err());
}

// ----- watch -----

fn watch(key: &str, range_end: &[u8], start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.to_vec(),
        start_revision,
        prev_kv: true,
        ..Default::default()
    }
}

#[test]
fn a_watch_from_the_past_catches_up_then_follows_live() {
    let mut h = Harness::new();
    h.put("k", "1"); // 2
    h.put("other", "x"); // 3
    h.put("k", "2"); // 4
    let id = h.store.watch_create(1, &watch("k", b"", 2)).unwrap();
    assert!(h.store.watch_has_unsynced());
    h.store.watch_sync();
    h.put("k", "3"); // 5
    let out = h.store.watch_take(1, usize::MAX);
    assert!(out[0].created && out[0].watch_id == id);
    let revs: Vec<i64> = out[1..]
        .iter()
        .flat_map(|r| r.events.iter().map(|e| e.kv.mod_revision))
        .collect();
    assert_eq!(revs, [2, 4, 5]);
    let last = out.last().unwrap().events[0].clone();
    assert_eq!(text(&last.prev_kv.unwrap().value), "2");
}

#[test]
fn a_watch_below_the_compact_revision_is_canceled_with_it() {
    let mut h = Harness::new();
    h.put("k", "1");
    h.put("k", "2");
    h.compact(3).unwrap();
    h.store.watch_create(1, &watch("k", b"", 2)).unwrap();
    h.store.watch_sync();
    let out = h.store.watch_take(1, usize::MAX);
    assert_eq!(out.len(), 2);
    assert!(out[1].canceled);
    assert_eq!(out[1].compact_revision, 3);
    let at_compact = h.store.watch_create(1, &watch("k", b"", 3)).unwrap();
    h.store.watch_sync();
    let out = h.store.watch_take(1, usize::MAX);
    assert_eq!(out[1].watch_id, at_compact);
    assert_eq!(
        out[1].events[0].kv.mod_revision, 3,
        "the compact revision is still watchable"
    );
}

#[test]
fn a_requested_progress_waits_until_every_watcher_is_synced() {
    let mut h = Harness::new();
    h.put("k", "1");
    h.store.watch_create(1, &watch("k", b"", 1)).unwrap();
    h.store.watch_request_progress(1);
    let out = h.store.watch_take(1, usize::MAX);
    assert_eq!(
        out.len(),
        1,
        "only the created response: the watcher is not synced"
    );
    h.store.watch_sync();
    let out = h.store.watch_take(1, usize::MAX);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].events.len(), 1);
    assert!(out[1].is_progress_notify());
    assert_eq!(
        (out[1].watch_id, out[1].header.revision),
        (WATCH_ID_STREAM, 2)
    );
}

#[test]
fn a_slow_stream_makes_victims_that_lose_nothing() {
    let config = StoreConfig {
        watch: faultline_store::watch::WatchConfig {
            stream_pending_max: 2,
            ..Default::default()
        },
        ..StoreConfig::default()
    };
    let mut h = Harness::with_config(config);
    h.store.watch_create(1, &watch("k", b"", 0)).unwrap();
    for i in 0..10 {
        h.put("k", &i.to_string());
    }
    assert_eq!(h.store.watch_stats().victims, 1);
    let mut revs = Vec::new();
    for _ in 0..20 {
        h.store.watch_sync();
        for r in h.store.watch_take(1, 1) {
            revs.extend(r.events.iter().map(|e| e.kv.mod_revision));
        }
    }
    assert_eq!(revs, (2..=11).collect::<Vec<_>>());
}

#[test]
fn filters_and_periodic_progress() {
    let mut h = Harness::new();
    let req = WatchCreateRequest {
        no_put: true,
        progress_notify: true,
        ..watch("k", b"", 0)
    };
    let id = h.store.watch_create(1, &req).unwrap();
    h.put("k", "1");
    h.delete("k", b"");
    h.store.watch_progress_tick();
    h.store.watch_progress_tick();
    let out = h.store.watch_take(1, usize::MAX);
    assert_eq!(out.len(), 3, "created, the delete, one progress: {out:?}");
    assert_eq!(out[1].events[0].kind, EventType::Delete);
    assert_eq!(
        out[1].events[0].kv,
        KeyValue {
            key: b"k".to_vec(),
            mod_revision: 3,
            ..Default::default()
        }
    );
    assert!(out[2].is_progress_notify() && out[2].watch_id == id);
}

#[test]
fn cancel_and_duplicate_watch_ids() {
    let mut h = Harness::new();
    let req = WatchCreateRequest {
        watch_id: Some(7),
        ..watch("k", b"", 0)
    };
    assert_eq!(h.store.watch_create(1, &req), Ok(7));
    assert_eq!(h.store.watch_create(1, &req), Err(EtcdError::WatchIdExists));
    assert_eq!(h.store.watch_create(2, &req), Ok(7), "ids are per stream");
    assert!(h.store.watch_cancel(1, 7));
    assert!(!h.store.watch_cancel(1, 7));
    h.put("k", "v");
    let out = h.store.watch_take(1, usize::MAX);
    assert!(out.last().unwrap().canceled);
    assert_eq!(h.store.watch_take(2, usize::MAX).len(), 2);
}
