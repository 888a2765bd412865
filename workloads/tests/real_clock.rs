//! The traffic clients run outside a simulation: on a tokio runtime, on the real clock, against
//! any `Target` (here a small in-memory key-value map).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_checkers::history::{CompareTarget, Kv, Outcome, Request, Response};
use faultline_workloads::traffic::{compactor, etcd_kv_client, kubernetes_client};
use faultline_workloads::{Clock, Recorder, Target, WorkloadConfig, WorkloadKind};

/// Latest-state only: enough for the clients' reads, pages and optimistic txns.
#[derive(Debug, Default)]
struct Map {
    revision: i64,
    next_lease: i64,
    kvs: BTreeMap<String, Kv>,
}

impl Map {
    fn apply(&mut self, request: &Request) -> Response {
        match request {
            Request::Get {
                key,
                range_end,
                limit,
                ..
            } => {
                let matching: Vec<Kv> = match range_end {
                    None => self.kvs.get(key).cloned().into_iter().collect(),
                    Some(end) => self
                        .kvs
                        .range(key.clone()..end.clone())
                        .map(|(_, kv)| kv.clone())
                        .collect(),
                };
                let count = matching.len() as i64;
                let shown = if *limit > 0 {
                    *limit as usize
                } else {
                    usize::MAX
                };
                let kvs: Vec<Kv> = matching.into_iter().take(shown).collect();
                Response::Get {
                    more: (kvs.len() as i64) < count,
                    kvs,
                    count,
                }
            }
            Request::Put { key, value, lease } => {
                self.revision += 1;
                let old = self.kvs.get(key);
                let kv = Kv {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: old.map_or(self.revision, |kv| kv.create_revision),
                    mod_revision: self.revision,
                    version: old.map_or(1, |kv| kv.version + 1),
                    lease: *lease,
                };
                self.kvs.insert(key.clone(), kv);
                Response::Put {}
            }
            Request::Delete { key, .. } => {
                let deleted = self.kvs.remove(key).is_some();
                if deleted {
                    self.revision += 1;
                }
                Response::Delete {
                    deleted: deleted as i64,
                }
            }
            Request::Txn {
                compare,
                success,
                failure,
            } => {
                let succeeded = compare.iter().all(|c| {
                    let kv = self.kvs.get(&c.key);
                    match c.target {
                        CompareTarget::Mod(r) => kv.map_or(0, |kv| kv.mod_revision) == r,
                        CompareTarget::Create(r) => kv.map_or(0, |kv| kv.create_revision) == r,
                        _ => true,
                    }
                });
                let ops = if succeeded { success } else { failure };
                Response::Txn {
                    succeeded,
                    responses: ops.iter().map(|op| self.apply(op)).collect(),
                }
            }
            Request::LeaseGrant { ttl, .. } => {
                self.next_lease += 1;
                Response::LeaseGrant {
                    id: self.next_lease,
                    ttl: *ttl,
                }
            }
            Request::LeaseRevoke { .. } => Response::LeaseRevoke {},
            Request::Compact { .. } => Response::Compact {},
        }
    }
}

#[derive(Debug, Clone, Default)]
struct InMemory(Arc<Mutex<Map>>);

impl Target for InMemory {
    async fn call(&self, request: &Request) -> Outcome {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let mut map = self.0.lock().unwrap();
        let response = map.apply(request);
        Outcome::Ok {
            revision: map.revision,
            response,
        }
    }
}

#[tokio::test]
async fn traffic_runs_on_tokio_and_the_real_clock() {
    let until = Duration::from_millis(400);
    let recorder = Recorder::new(Clock::real());
    let target = InMemory::default();
    let etcd = WorkloadConfig {
        rate_per_client: 50,
        compact_every_ms: 100,
        ..WorkloadConfig::default()
    };
    let kubernetes = WorkloadConfig {
        kind: WorkloadKind::Kubernetes,
        ..etcd.clone()
    };
    let tasks = [
        tokio::spawn(etcd_kv_client(
            target.clone(),
            recorder.clone(),
            etcd.clone(),
            1,
            7,
            until,
        )),
        tokio::spawn(kubernetes_client(
            target.clone(),
            recorder.clone(),
            kubernetes,
            2,
            7,
            until,
        )),
        tokio::spawn(compactor(
            target.clone(),
            recorder.clone(),
            etcd,
            3,
            7,
            until,
        )),
    ];
    for task in tasks {
        task.await.expect("client task");
    }
    let elapsed = recorder.clock().elapsed();
    assert!(
        elapsed >= until,
        "the clients stopped early, at {elapsed:?}"
    );

    let operations = recorder.operations();
    for client in 1..=3 {
        assert!(
            operations.iter().any(|op| op.client == client),
            "client {client} recorded nothing"
        );
    }
    assert!(operations
        .iter()
        .any(|op| matches!(op.request, Request::Compact { .. })));
    let late = until + Duration::from_millis(200);
    for op in &operations {
        let complete = op.complete_ns.expect("every outcome is known");
        assert!(op.invoke_ns <= complete, "{op:?}");
        assert!(complete < late.as_nanos() as u64, "{op:?}");
    }
}
