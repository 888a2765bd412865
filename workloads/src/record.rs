//! Recording what clients asked and saw, in the history format.
//!
//! A [`Recorder`] is shared by every client of a run. Each operation is recorded with its
//! invocation and completion times in nanoseconds since the run started on the run's [`Clock`],
//! its request and its outcome. Requests are written in the history's vocabulary; the
//! translations to and from the store's client API live here too, for the simulated [`Target`].

use std::sync::{Arc, Mutex};

use faultline_checkers::history::{self, Compare, CompareResult, CompareTarget, Kv, Operation};
use faultline_store::api;
use faultline_store::node::client::Outcome;

use crate::target::{Clock, Target};

/// The operations of a run, in the order they completed (or were given up).
#[derive(Debug, Clone)]
pub struct Recorder {
    clock: Clock,
    inner: Arc<Mutex<Vec<Operation>>>,
}

impl Recorder {
    /// A recorder that stamps operations with `clock` (started when the run started).
    pub fn new(clock: Clock) -> Self {
        Recorder {
            clock,
            inner: Arc::default(),
        }
    }

    /// The run's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn now_ns(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// Sends `request` to `target` and records it as client `client_id`'s operation.
    pub async fn call<T: Target>(
        &self,
        target: &T,
        client_id: u64,
        request: history::Request,
    ) -> history::Outcome {
        let invoke_ns = self.now_ns();
        let outcome = target.call(&request).await;
        let complete_ns = self.now_ns();
        let mut ops = self.inner.lock().expect("recorder lock");
        let id = ops.len() as u64;
        let complete_ns = match outcome {
            history::Outcome::Unknown => None,
            _ => Some(complete_ns.max(invoke_ns)),
        };
        ops.push(Operation {
            id,
            client: client_id,
            invoke_ns,
            complete_ns,
            request,
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Every operation recorded so far.
    pub fn operations(&self) -> Vec<Operation> {
        self.inner.lock().expect("recorder lock").clone()
    }
}

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn op_to_store(request: &history::Request) -> api::RequestOp {
    match to_store(request) {
        api::Request::Range(r) => api::RequestOp::Range(r),
        api::Request::Put(p) => api::RequestOp::Put(p),
        api::Request::DeleteRange(d) => api::RequestOp::DeleteRange(d),
        api::Request::Txn(t) => api::RequestOp::Txn(t),
        other => panic!("{other:?} cannot be a txn op"),
    }
}

/// A history request as the store's API request.
pub fn to_store(request: &history::Request) -> api::Request {
    use history::Request as H;
    match request {
        H::Get {
            key,
            range_end,
            revision,
            limit,
            keys_only,
            serializable,
        } => api::Request::Range(api::RangeRequest {
            key: bytes(key),
            range_end: range_end.as_deref().map(bytes).unwrap_or_default(),
            revision: *revision,
            limit: *limit,
            keys_only: *keys_only,
            serializable: *serializable,
            ..Default::default()
        }),
        H::Put { key, value, lease } => api::Request::Put(api::PutRequest {
            key: bytes(key),
            value: bytes(value),
            lease: *lease,
            ..Default::default()
        }),
        H::Delete { key, range_end } => api::Request::DeleteRange(api::DeleteRangeRequest {
            key: bytes(key),
            range_end: range_end.as_deref().map(bytes).unwrap_or_default(),
            prev_kv: false,
        }),
        H::Txn {
            compare,
            success,
            failure,
        } => api::Request::Txn(api::TxnRequest {
            compare: compare.iter().map(compare_to_store).collect(),
            success: success.iter().map(op_to_store).collect(),
            failure: failure.iter().map(op_to_store).collect(),
        }),
        H::LeaseGrant { ttl, id } => {
            api::Request::LeaseGrant(api::LeaseGrantRequest { ttl: *ttl, id: *id })
        }
        H::LeaseRevoke { id } => api::Request::LeaseRevoke(api::LeaseRevokeRequest { id: *id }),
        H::Compact { revision } => api::Request::Compact(api::CompactionRequest {
            revision: *revision,
            physical: true,
        }),
    }
}

fn compare_to_store(c: &Compare) -> api::Compare {
    api::Compare {
        result: match c.result {
            CompareResult::Equal => api::CompareResult::Equal,
            CompareResult::NotEqual => api::CompareResult::NotEqual,
            CompareResult::Greater => api::CompareResult::Greater,
            CompareResult::Less => api::CompareResult::Less,
        },
        target: match &c.target {
            CompareTarget::Version(v) => api::CompareTarget::Version(*v),
            CompareTarget::Create(v) => api::CompareTarget::Create(*v),
            CompareTarget::Mod(v) => api::CompareTarget::Mod(*v),
            CompareTarget::Value(v) => api::CompareTarget::Value(bytes(v)),
            CompareTarget::Lease(v) => api::CompareTarget::Lease(*v),
        },
        key: bytes(&c.key),
        range_end: Vec::new(),
    }
}

/// A store kv in the history's terms.
pub fn kv_from_store(kv: &api::KeyValue) -> Kv {
    Kv {
        key: text(&kv.key),
        value: text(&kv.value),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn response_op_from_store(op: &api::ResponseOp) -> history::Response {
    match op {
        api::ResponseOp::Range(r) => history::Response::Get {
            kvs: r.kvs.iter().map(kv_from_store).collect(),
            count: r.count,
            more: r.more,
        },
        api::ResponseOp::Put(_) => history::Response::Put {},
        api::ResponseOp::DeleteRange(d) => history::Response::Delete { deleted: d.deleted },
        api::ResponseOp::Txn(t) => history::Response::Txn {
            succeeded: t.succeeded,
            responses: t.responses.iter().map(response_op_from_store).collect(),
        },
    }
}

/// An answer etcd (or the store) gave, in the history's terms: ok with the response and the
/// header's revision.
pub fn from_response(response: &api::Response) -> history::Outcome {
    let revision = response.header().revision;
    let response = match response {
        api::Response::Range(r) => response_op_from_store(&api::ResponseOp::Range(r.clone())),
        api::Response::Put(_) => history::Response::Put {},
        api::Response::DeleteRange(d) => history::Response::Delete { deleted: d.deleted },
        api::Response::Txn(t) => response_op_from_store(&api::ResponseOp::Txn(t.clone())),
        api::Response::LeaseGrant(g) => history::Response::LeaseGrant {
            id: g.id,
            ttl: g.ttl,
        },
        api::Response::LeaseRevoke(_) => history::Response::LeaseRevoke {},
        api::Response::Compact(_) => history::Response::Compact {},
        api::Response::Alarm(_) => {
            return history::Outcome::Failed {
                error: "alarm responses are not recorded".into(),
            }
        }
    };
    history::Outcome::Ok { revision, response }
}

/// A client outcome in the history's terms.
pub fn from_store(outcome: Outcome) -> history::Outcome {
    use faultline_store::node::protocol::ClientResponse;
    match outcome {
        Outcome::Ok(ClientResponse::Kv(response)) => from_response(&response),
        Outcome::Ok(other) => history::Outcome::Failed {
            error: format!("unexpected response {other:?}"),
        },
        Outcome::Failed(error) => history::Outcome::Failed {
            error: error.to_string(),
        },
        Outcome::Unknown(_) => history::Outcome::Unknown,
    }
}
