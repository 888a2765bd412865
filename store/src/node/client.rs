//! The client: finds a member that answers, retries the way etcd's client does, and classifies
//! every request's outcome as ok, failed for certain, or unknown.
//!
//! Retry rules, after etcd's clientv3: a read (or any request that changes nothing) is retried
//! on another member after any failure until the operation's deadline; a write is retried only
//! after a failure that proves it was never proposed (no leader, proposal dropped, member
//! overloaded). A write whose attempt timed out, or whose reply was lost, has an **unknown**
//! outcome: it may take effect later or never. A "not leader" answer is retried at the hinted
//! leader.
//!
//! Watches are resumable and share streams as etcd's do (see [`watch`]).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::time::now;
use madsim::net::Endpoint;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

mod watch;

pub use watch::{WatchEvent, WatchStats, WatchStream, Watcher};

use super::protocol::*;
use crate::api::*;

/// Client settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// The members to talk to.
    pub members: Vec<NodeId>,
    /// How long one attempt waits for its reply.
    pub attempt_timeout_ms: u64,
    /// How long one operation may take, retries included.
    pub op_timeout_ms: u64,
    /// Pause between attempts.
    pub retry_backoff_ms: u64,
}

impl ClientConfig {
    pub fn new(members: Vec<NodeId>) -> Self {
        ClientConfig {
            members,
            attempt_timeout_ms: 2_000,
            op_timeout_ms: 6_000,
            retry_backoff_ms: 50,
        }
    }
}

/// The outcome of one client operation, as a history records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The request took effect (or was read) with this response.
    Ok(ClientResponse),
    /// The request certainly did not take effect.
    Failed(ServerError),
    /// The request may or may not take effect, at any time after it was sent.
    Unknown(String),
}

impl Outcome {
    pub fn ok(&self) -> Option<&ClientResponse> {
        match self {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
}

type Waiters = Arc<Mutex<BTreeMap<u64, oneshot::Sender<ClientReply>>>>;
type WatchRoutes = Arc<Mutex<BTreeMap<u64, mpsc::UnboundedSender<WatchMessage>>>>;

struct Inner {
    config: ClientConfig,
    endpoint: Endpoint,
    addr: SocketAddr,
    next_id: AtomicU64,
    /// Index in `members` of the member tried first (the last one that answered).
    preferred: AtomicUsize,
    waiters: Waiters,
    watch_routes: WatchRoutes,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("config", &self.config)
            .finish()
    }
}

/// Receives every message of type `T` on `tag` and hands it to `deliver`, until the client is
/// dropped.
fn spawn_receiver<T: Send + 'static>(inner: &Arc<Inner>, tag: u64, deliver: fn(&Inner, T)) {
    let weak = Arc::downgrade(inner);
    madsim::task::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let Ok((payload, _)) = inner.endpoint.recv_from_raw(tag).await else {
                return;
            };
            if let Ok(message) = payload.downcast::<T>() {
                deliver(&inner, *message);
            }
        }
    });
}

/// A client of the cluster; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

enum Attempt {
    Reply(Result<ClientResponse, ServerError>),
    Lost,
}

impl Client {
    /// Binds the client's endpoint on `ip` (its simulated host) and starts its receivers.
    pub async fn connect(ip: IpAddr, config: ClientConfig) -> std::io::Result<Client> {
        assert!(!config.members.is_empty(), "a client needs members");
        let addr = SocketAddr::new(ip, PORT);
        let endpoint = Endpoint::bind(addr).await?;
        let addr = endpoint.local_addr()?;
        let inner = Arc::new(Inner {
            config,
            endpoint,
            addr,
            next_id: AtomicU64::new(1),
            preferred: AtomicUsize::new(0),
            waiters: Arc::default(),
            watch_routes: Arc::default(),
        });
        spawn_receiver(&inner, TAG_REPLY, |inner, reply: ClientReply| {
            let waiter = inner.waiters.lock().expect("waiters").remove(&reply.id);
            if let Some(tx) = waiter {
                let _ = tx.send(reply);
            }
        });
        spawn_receiver(&inner, TAG_WATCH, |inner, message: WatchMessage| {
            let route = inner
                .watch_routes
                .lock()
                .expect("routes")
                .get(&message.stream)
                .cloned();
            if let Some(tx) = route {
                let _ = tx.send(message);
            }
        });
        Ok(Client { inner })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// One attempt at one member: the reply, or `Lost` when none came in time.
    async fn attempt(&self, member: NodeId, request: &ClientRequest, timeout: Duration) -> Attempt {
        let id = self.next_id();
        let (tx, rx) = oneshot::channel();
        self.inner.waiters.lock().expect("waiters").insert(id, tx);
        let envelope = ClientEnvelope {
            id,
            reply_to: self.inner.addr,
            request: request.clone(),
        };
        let sent = self
            .inner
            .endpoint
            .send_to_raw(member_addr(member), TAG_REQUEST, Box::new(envelope))
            .await;
        let result = if sent.is_ok() {
            madsim::time::timeout(timeout, rx)
                .await
                .ok()
                .and_then(|r| r.ok())
        } else {
            None
        };
        self.inner.waiters.lock().expect("waiters").remove(&id);
        match result {
            Some(reply) => Attempt::Reply(reply.result),
            None => Attempt::Lost,
        }
    }

    /// Sends a request with etcd's retry rules and classifies its outcome.
    pub async fn request(&self, request: ClientRequest) -> Outcome {
        let config = &self.inner.config;
        let deadline = now() + Duration::from_millis(config.op_timeout_ms);
        let is_write = request.is_write();
        let members = config.members.len();
        let mut index = self.inner.preferred.load(Ordering::SeqCst) % members;
        let mut last_error = ServerError::Timeout;
        let mut maybe_sent = false;
        loop {
            let now_at = now();
            if now_at >= deadline {
                break;
            }
            let timeout = (deadline - now_at).min(Duration::from_millis(config.attempt_timeout_ms));
            let member = config.members[index];
            match self.attempt(member, &request, timeout).await {
                Attempt::Reply(Ok(response)) => {
                    self.inner.preferred.store(index, Ordering::SeqCst);
                    return Outcome::Ok(response);
                }
                Attempt::Reply(Err(ServerError::Etcd(e))) => {
                    self.inner.preferred.store(index, Ordering::SeqCst);
                    return Outcome::Failed(ServerError::Etcd(e));
                }
                Attempt::Reply(Err(ServerError::Timeout)) | Attempt::Lost => {
                    if is_write {
                        // The next request tries another member, as etcd's balancer moves off
                        // an endpoint that stopped answering.
                        self.inner
                            .preferred
                            .store((index + 1) % members, Ordering::SeqCst);
                        return Outcome::Unknown(format!("no outcome from member {member}"));
                    }
                    maybe_sent = true;
                    last_error = ServerError::Timeout;
                    index = (index + 1) % members;
                }
                Attempt::Reply(Err(ServerError::NotLeader { leader })) => {
                    last_error = ServerError::NotLeader { leader };
                    index = match leader.and_then(|l| config.members.iter().position(|m| *m == l)) {
                        Some(i) if i != index => i,
                        _ => (index + 1) % members,
                    };
                }
                Attempt::Reply(Err(e)) => {
                    // No leader, proposal dropped, overloaded: never proposed, safe to retry.
                    last_error = e;
                    index = (index + 1) % members;
                }
            }
            madsim::time::sleep(Duration::from_millis(config.retry_backoff_ms)).await;
        }
        if is_write && maybe_sent {
            Outcome::Unknown("deadline passed".to_string())
        } else {
            Outcome::Failed(last_error)
        }
    }

    /// Sends a request to one given member only (status, hash, defragment), with one attempt.
    pub async fn request_member(&self, member: NodeId, request: ClientRequest) -> Outcome {
        let timeout = Duration::from_millis(self.inner.config.attempt_timeout_ms);
        let is_write = request.is_write();
        match self.attempt(member, &request, timeout).await {
            Attempt::Reply(Ok(response)) => Outcome::Ok(response),
            Attempt::Reply(Err(ServerError::Timeout)) | Attempt::Lost if is_write => {
                Outcome::Unknown(format!("no outcome from member {member}"))
            }
            Attempt::Reply(Err(e)) => Outcome::Failed(e),
            Attempt::Lost => Outcome::Failed(ServerError::Timeout),
        }
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Outcome {
        let req = PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        };
        self.request(ClientRequest::Kv(Request::Put(req))).await
    }

    pub async fn get(&self, key: &[u8]) -> Outcome {
        let req = RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        self.request(ClientRequest::Kv(Request::Range(req))).await
    }
}
