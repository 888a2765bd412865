//! Golden traces of scripted scenarios: one readable line per request, response and watch
//! notification, compared with insta. A change of behaviour shows up as a diff a person can read.

mod common;

use common::*;
use faultline_store::*;

/// Records what a scripted client sees, one line an event.
struct Trace {
    h: Harness,
    lines: Vec<String>,
    streams: Vec<u64>,
}

fn kv_text(kv: &KeyValue) -> String {
    let mut s = format!(
        "{}={} (create {}, mod {}, version {}",
        text(&kv.key),
        text(&kv.value),
        kv.create_revision,
        kv.mod_revision,
        kv.version
    );
    if kv.lease != 0 {
        s.push_str(&format!(", lease {}", kv.lease));
    }
    s.push(')');
    s
}

fn op_text(op: &RequestOp) -> String {
    match op {
        RequestOp::Range(r) => format!("range {}..{}", text(&r.key), text(&r.range_end)),
        RequestOp::Put(p) => format!("put {}={}", text(&p.key), text(&p.value)),
        RequestOp::DeleteRange(d) => format!("delete {}..{}", text(&d.key), text(&d.range_end)),
        RequestOp::Txn(t) => format!(
            "txn(if {} compares then [{}] else [{}])",
            t.compare.len(),
            t.success.iter().map(op_text).collect::<Vec<_>>().join(", "),
            t.failure.iter().map(op_text).collect::<Vec<_>>().join(", ")
        ),
    }
}

fn response_op_text(op: &ResponseOp) -> String {
    match op {
        ResponseOp::Range(r) => format!(
            "range@{} count {} [{}]",
            r.header.revision,
            r.count,
            r.kvs.iter().map(kv_text).collect::<Vec<_>>().join(", ")
        ),
        ResponseOp::Put(p) => format!("put@{}", p.header.revision),
        ResponseOp::DeleteRange(d) => format!("deleted {}@{}", d.deleted, d.header.revision),
        ResponseOp::Txn(t) => format!(
            "txn {} [{}]",
            if t.succeeded { "succeeded" } else { "failed" },
            t.responses
                .iter()
                .map(response_op_text)
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

impl Trace {
    fn new() -> Self {
        Trace {
            h: Harness::new(),
            lines: Vec::new(),
            streams: Vec::new(),
        }
    }

    fn say(&mut self, line: String) {
        self.lines.push(line);
    }

    fn request(&mut self, req: Request) {
        let what = match &req {
            Request::Put(p) if p.lease != 0 => {
                format!("put {}={} lease {}", text(&p.key), text(&p.value), p.lease)
            }
            Request::Put(p) => format!("put {}={}", text(&p.key), text(&p.value)),
            Request::DeleteRange(d) => format!("delete {}..{}", text(&d.key), text(&d.range_end)),
            Request::Txn(t) => op_text(&RequestOp::Txn(t.clone())),
            Request::Compact(c) => format!("compact {}", c.revision),
            Request::LeaseGrant(g) => format!("lease grant ttl {}s", g.ttl),
            Request::LeaseRevoke(r) => format!("lease revoke {}", r.id),
            other => format!("{other:?}"),
        };
        let outcome = match self.h.submit(req) {
            Err(e) => format!("error: {e}"),
            Ok(Response::Put(p)) => format!("ok @{}", p.header.revision),
            Ok(Response::DeleteRange(d)) => format!("deleted {} @{}", d.deleted, d.header.revision),
            Ok(Response::Txn(t)) => response_op_text(&ResponseOp::Txn(t)),
            Ok(Response::LeaseGrant(g)) => format!("lease {} ttl {}s", g.id, g.ttl),
            Ok(other) => format!("ok @{}", other.header().revision),
        };
        self.say(format!("t={:>5}ms  {what} -> {outcome}", self.h.now_ms));
        self.drain_watches();
    }

    fn watch(&mut self, stream: u64, req: WatchCreateRequest) {
        let id = self
            .h
            .store
            .watch_create(stream, &req)
            .expect("watch created");
        if !self.streams.contains(&stream) {
            self.streams.push(stream);
        }
        self.say(format!(
            "t={:>5}ms  watch {}..{} from {} -> stream {stream} watch {id}",
            self.h.now_ms,
            text(&req.key),
            text(&req.range_end),
            req.start_revision
        ));
        self.drain_watches();
    }

    fn sync(&mut self) {
        self.h.store.watch_sync();
        self.drain_watches();
    }

    fn drain_watches(&mut self) {
        for stream in self.streams.clone() {
            for r in self.h.store.watch_take(stream, usize::MAX) {
                let head = format!("           stream {stream} watch {}:", r.watch_id);
                if r.created {
                    self.say(format!("{head} created @{}", r.header.revision));
                } else if r.canceled {
                    let reason = if r.cancel_reason.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", r.cancel_reason)
                    };
                    self.say(format!(
                        "{head} canceled, compact revision {}{reason}",
                        r.compact_revision
                    ));
                } else if r.is_progress_notify() {
                    self.say(format!("{head} progress @{}", r.header.revision));
                }
                for e in &r.events {
                    let prev = e
                        .prev_kv
                        .as_ref()
                        .map(kv_text)
                        .unwrap_or_else(|| "-".into());
                    let what = match e.kind {
                        EventType::Put => format!("PUT {}", kv_text(&e.kv)),
                        EventType::Delete => format!("DELETE {}", text(&e.kv.key)),
                    };
                    self.say(format!("{head} {what} @{} prev {prev}", e.kv.mod_revision));
                }
            }
        }
    }

    /// The leader's lessor checks expiries at `now_ms` and proposes a revoke for each.
    fn expire_leases(&mut self, now_ms: u64) {
        self.h.now_ms = now_ms;
        for id in self.h.store.leases_expired(now_ms, 16) {
            self.say(format!("t={now_ms:>5}ms  lease {id} expired"));
            self.request(Request::LeaseRevoke(LeaseRevokeRequest { id }));
        }
    }

    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// Compares a trace with its golden file `tests/golden/<name>.snap`.
#[track_caller]
fn golden(name: &str, trace: String) {
    insta::with_settings!({ snapshot_path => "golden", prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!(name, trace);
    });
}

fn watch_req(key: &str, range_end: &[u8], start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: range_end.to_vec(),
        start_revision,
        prev_kv: true,
        ..Default::default()
    }
}

#[test]
fn compaction_cancels_a_watcher_that_falls_behind_it() {
    let mut t = Trace::new();
    t.request(Request::Put(put("k", "1")));
    t.request(Request::Put(put("k", "2")));
    t.request(Request::DeleteRange(DeleteRangeRequest {
        key: b"k".to_vec(),
        ..Default::default()
    }));
    t.request(Request::Put(put("k", "3")));
    t.watch(1, watch_req("k", b"", 2));
    t.watch(2, watch_req("k", b"", 4));
    t.request(Request::Compact(CompactionRequest {
        revision: 4,
        physical: true,
    }));
    t.sync();
    t.request(Request::Put(put("k", "4")));
    golden("compaction_cancels_a_watcher", t.text());
}

#[test]
fn a_lease_expires_and_its_keys_go_in_one_revision() {
    let mut t = Trace::new();
    t.h.store.lease_promote(0, 0);
    t.request(Request::LeaseGrant(LeaseGrantRequest { ttl: 5, id: 0 }));
    t.watch(1, watch_req("lock/", &prefix_end("lock/"), 0));
    t.request(Request::Put(PutRequest {
        lease: 1,
        ..put("lock/a", "owner-1")
    }));
    t.request(Request::Put(PutRequest {
        lease: 1,
        ..put("lock/b", "owner-1")
    }));
    t.request(Request::Put(put("lock/c", "no-lease")));
    t.expire_leases(4_999);
    t.expire_leases(5_000);
    t.request(Request::Put(PutRequest {
        lease: 1,
        ..put("lock/a", "owner-2")
    }));
    golden("lease_expires_with_its_keys", t.text());
}

#[test]
fn a_txn_with_nested_ops_reads_its_own_writes() {
    let mut t = Trace::new();
    t.request(Request::Put(put("x", "1")));
    t.watch(1, watch_req("\0", b"\0", 0));
    let nested = TxnRequest {
        compare: vec![cmp("y", CompareResult::Equal, CompareTarget::Version(0))],
        success: vec![
            RequestOp::Put(put("y", "created")),
            RequestOp::Range(range("x", b"z")),
        ],
        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: b"y".to_vec(),
            ..Default::default()
        })],
    };
    let txn = TxnRequest {
        compare: vec![cmp(
            "x",
            CompareResult::Equal,
            CompareTarget::Value(b"1".to_vec()),
        )],
        success: vec![
            RequestOp::Put(put("x", "2")),
            RequestOp::Txn(nested.clone()),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: b"w".to_vec(),
                ..Default::default()
            }),
        ],
        failure: vec![RequestOp::Range(range("x", b""))],
    };
    t.request(Request::Txn(txn.clone()));
    t.request(Request::Txn(txn));
    t.request(Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![RequestOp::Txn(nested)],
        failure: vec![],
    }));
    golden("txn_with_nested_ops", t.text());
}
