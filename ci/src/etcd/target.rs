//! A real etcd cluster as a workload [`Target`]: one gRPC client per member, with etcd clientv3's
//! retry rules and the simulated client's outcome classification (see
//! `faultline_store::node::client`).
//!
//! - A request that changes nothing (a Range, or a txn of Ranges only) is retried on the next
//!   member after any failure, until the operation's deadline; then it has **failed** (a read
//!   that never answered tells nothing).
//! - A write is retried on the next member only when etcd provably never proposed it: no
//!   connection could be made, or etcd refused it before proposing ("no leader", "too many
//!   requests", a proposal dropped by a leaderless member).
//! - A write whose attempt timed out, or which failed in any other way that may have come after
//!   its proposal (the connection broke, "request timed out", "leader changed", an Unavailable,
//!   Unknown, DeadlineExceeded or Canceled status), has an **unknown** outcome: it may take effect
//!   later or never.
//! - etcd's definite answers (InvalidArgument, OutOfRange for compacted and future revisions,
//!   NotFound for leases, FailedPrecondition, ResourceExhausted for the space quota) have
//!   **failed**, with etcd's message, which is the store's message for the same error, so the
//!   checkers read both alike.
//!
//! Only tokio; nothing here runs inside a simulation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_checkers::history;
use faultline_workloads::record::{from_response, to_store};
use faultline_workloads::Target;
use tokio::time::Instant;

use super::convert::{execute, Namespace, RpcError};

/// Timeouts of an [`EtcdTarget`], the simulated client's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetConfig {
    /// How long one attempt on one member may take.
    pub attempt_timeout: Duration,
    /// How long one operation may take, retries included.
    pub op_timeout: Duration,
    /// Pause between attempts.
    pub retry_backoff: Duration,
    /// How long opening a TCP connection to a member may take.
    pub connect_timeout: Duration,
}

impl Default for TargetConfig {
    fn default() -> Self {
        TargetConfig {
            attempt_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_secs(6),
            retry_backoff: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(500),
        }
    }
}

/// What one failed attempt says about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// etcd answered with an error: the request did not and will not take effect.
    Definite,
    /// The request provably never reached etcd's log: safe to send again, anywhere.
    NeverProposed,
    /// The request may have been proposed: a write's outcome is unknown.
    Ambiguous,
}

/// The gRPC codes etcd uses for errors it decides on (etcd's `rpctypes`): the request was
/// refused or applied as a no-op, never half done.
const DEFINITE_CODES: &[&str] = &[
    "InvalidArgument",
    "OutOfRange",
    "NotFound",
    "FailedPrecondition",
    "AlreadyExists",
    "PermissionDenied",
    "Unauthenticated",
];

/// etcd's refusals that come before a proposal (etcd's `v3rpc` interceptor and
/// `processInternalRaftRequestOnce`; raft-rs's `ErrProposalDropped` from a member without a
/// leader). Nothing else counts: "request timed out" and "leader changed" come after one.
const NOT_PROPOSED_MESSAGES: &[&str] = &[
    "etcdserver: no leader",
    "etcdserver: too many requests",
    "raft proposal dropped",
];

fn classify(error: &RpcError) -> Failure {
    if error.never_sent() || NOT_PROPOSED_MESSAGES.contains(&error.message.as_str()) {
        Failure::NeverProposed
    } else if DEFINITE_CODES.contains(&error.code.as_str())
        || (error.code == "ResourceExhausted" && error.message.contains("space exceeded"))
    {
        Failure::Definite
    } else {
        Failure::Ambiguous
    }
}

/// Whether a request leaves the keyspace, leases and compaction alone.
fn changes_nothing(request: &history::Request) -> bool {
    match request {
        history::Request::Get { .. } => true,
        history::Request::Txn {
            success, failure, ..
        } => success.iter().chain(failure).all(changes_nothing),
        _ => false,
    }
}

struct Shared {
    endpoints: Vec<String>,
    config: TargetConfig,
    /// Each member's client; `None` until first used, and again after a failure that may have
    /// left its channel broken, so that the next attempt starts a fresh one.
    clients: Vec<Mutex<Option<etcd_client::Client>>>,
}

/// A real etcd cluster: every member's client URL, one client each, clientv3's retry rules.
///
/// Clones share the members' connections and the member they try first. Give each workload
/// client its own handle with [`EtcdTarget::starting_at`] so that their traffic spreads over the
/// members (writes sent to followers are forwarded to the leader, as in etcd).
#[derive(Clone)]
pub struct EtcdTarget {
    shared: Arc<Shared>,
    /// The member the next operation tries first: the last one that answered.
    preferred: Arc<AtomicUsize>,
}

impl std::fmt::Debug for EtcdTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTarget")
            .field("endpoints", &self.shared.endpoints)
            .field("preferred", &self.preferred.load(Ordering::Relaxed))
            .finish()
    }
}

impl EtcdTarget {
    /// A target over the members at `endpoints` (client URLs). Connects lazily.
    pub fn new(endpoints: Vec<String>, config: TargetConfig) -> Self {
        assert!(!endpoints.is_empty(), "a target needs at least one member");
        let clients = endpoints.iter().map(|_| Mutex::new(None)).collect();
        EtcdTarget {
            shared: Arc::new(Shared {
                endpoints,
                config,
                clients,
            }),
            preferred: Arc::default(),
        }
    }

    /// A handle on the same connections that tries member `member` (modulo the size) first.
    pub fn starting_at(&self, member: usize) -> Self {
        EtcdTarget {
            shared: self.shared.clone(),
            preferred: Arc::new(AtomicUsize::new(member % self.shared.endpoints.len())),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.shared.endpoints
    }

    async fn client(&self, member: usize) -> Result<etcd_client::Client, RpcError> {
        if let Some(client) = self.shared.clients[member].lock().expect("client").as_ref() {
            return Ok(client.clone());
        }
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.shared.config.connect_timeout);
        // The connection itself is made at the first request; this only builds the channel.
        let client =
            etcd_client::Client::connect([self.shared.endpoints[member].as_str()], Some(options))
                .await
                .map_err(|e| RpcError {
                    code: "Transport".into(),
                    message: format!("connecting to {}: {e}", self.shared.endpoints[member]),
                })?;
        let mut slot = self.shared.clients[member].lock().expect("client");
        Ok(slot.get_or_insert(client).clone())
    }

    /// Drops member `member`'s client so that the next attempt builds a fresh channel.
    fn forget(&self, member: usize) {
        *self.shared.clients[member].lock().expect("client") = None;
    }

    /// One attempt on one member, bounded by `timeout`.
    async fn attempt(
        &self,
        member: usize,
        request: &faultline_store::api::Request,
        timeout: Duration,
    ) -> Result<faultline_store::api::Response, RpcError> {
        let mut client = self.client(member).await?;
        match tokio::time::timeout(
            timeout,
            execute(&mut client, &Namespace::identity(), request),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(RpcError {
                code: "Timeout".into(),
                message: format!(
                    "no answer from {} within {}ms",
                    self.shared.endpoints[member],
                    timeout.as_millis()
                ),
            }),
        }
    }
}

impl Target for EtcdTarget {
    async fn call(&self, request: &history::Request) -> history::Outcome {
        let config = self.shared.config;
        let members = self.shared.endpoints.len();
        let api_request = to_store(request);
        let read_only = changes_nothing(request);
        let deadline = Instant::now() + config.op_timeout;
        let mut member = self.preferred.load(Ordering::Relaxed) % members;
        let mut last_error: Option<RpcError> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let timeout = (deadline - now).min(config.attempt_timeout);
            match self.attempt(member, &api_request, timeout).await {
                Ok(response) => {
                    self.preferred.store(member, Ordering::Relaxed);
                    return from_response(&response);
                }
                Err(error) => match classify(&error) {
                    Failure::Definite => {
                        self.preferred.store(member, Ordering::Relaxed);
                        return history::Outcome::Failed {
                            error: error.message,
                        };
                    }
                    Failure::NeverProposed => last_error = Some(error),
                    Failure::Ambiguous => {
                        // The channel may be stuck on a dead connection; start afresh next time.
                        self.forget(member);
                        if !read_only {
                            // Like clientv3's balancer, leave a member that did not answer: a
                            // paused member would otherwise take every later write of this
                            // client too, each with an unknown outcome.
                            self.preferred
                                .store((member + 1) % members, Ordering::Relaxed);
                            return history::Outcome::Unknown;
                        }
                        last_error = Some(error);
                    }
                },
            }
            member = (member + 1) % members;
            tokio::time::sleep(config.retry_backoff).await;
        }
        // Writes reach here only when every attempt was refused before a proposal.
        history::Outcome::Failed {
            error: match last_error {
                Some(e) => format!("no member answered before the deadline; last: {e}"),
                None => "no member answered before the deadline".to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, message: &str) -> RpcError {
        RpcError {
            code: code.into(),
            message: message.into(),
        }
    }

    #[test]
    fn etcd_errors_are_classified_conservatively() {
        use Failure::*;
        let cases = [
            (
                "OutOfRange",
                "etcdserver: mvcc: required revision has been compacted",
                Definite,
            ),
            (
                "NotFound",
                "etcdserver: requested lease not found",
                Definite,
            ),
            (
                "InvalidArgument",
                "etcdserver: duplicate key given in txn request",
                Definite,
            ),
            (
                "ResourceExhausted",
                "etcdserver: mvcc: database space exceeded",
                Definite,
            ),
            ("Unavailable", "etcdserver: no leader", NeverProposed),
            (
                "ResourceExhausted",
                "etcdserver: too many requests",
                NeverProposed,
            ),
            ("Unknown", "raft proposal dropped", NeverProposed),
            (
                "Transport",
                "tcp connect error: Connection refused",
                NeverProposed,
            ),
            ("Unavailable", "etcdserver: request timed out", Ambiguous),
            ("Unavailable", "etcdserver: leader changed", Ambiguous),
            (
                "Unavailable",
                "etcdserver: request timed out, possibly due to previous leader failure",
                Ambiguous,
            ),
            ("Unknown", "transport error", Ambiguous),
            ("DeadlineExceeded", "context deadline exceeded", Ambiguous),
            ("Timeout", "no answer", Ambiguous),
            ("Client", "something else", Ambiguous),
        ];
        for (code, message, expected) in cases {
            assert_eq!(
                classify(&error(code, message)),
                expected,
                "{code}: {message}"
            );
        }
    }

    #[test]
    fn only_requests_without_writes_count_as_reads() {
        let get = history::Request::Get {
            key: "a".into(),
            range_end: None,
            revision: 0,
            limit: 0,
            keys_only: false,
            serializable: false,
        };
        let put = history::Request::Put {
            key: "a".into(),
            value: "v".into(),
            lease: 0,
        };
        let txn = |ops: Vec<history::Request>| history::Request::Txn {
            compare: Vec::new(),
            success: ops,
            failure: vec![get.clone()],
        };
        assert!(changes_nothing(&get));
        assert!(changes_nothing(&txn(vec![get.clone()])));
        assert!(!changes_nothing(&txn(vec![get.clone(), put.clone()])));
        assert!(!changes_nothing(&put));
        assert!(!changes_nothing(&history::Request::Compact { revision: 3 }));
    }
}
