//! What travels over the network between members and between clients and members.
//!
//! Messages are typed Rust values carried by madsim's endpoint as raw payloads (the whole cluster
//! lives in one process, so nothing is serialised on the wire). Raft messages travel as raft-rs's
//! protobuf structs. Delivery is a datagram's: a message may be lost (a partition, packet loss, a
//! crash) or overtaken by a later one, so every client interaction carries an id and a deadline,
//! and watch streams carry sequence numbers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::api::*;
use crate::error::EtcdError;

/// A member's Raft id (1-based).
pub type NodeId = u64;

/// Raft messages between members.
pub const TAG_PEER: u64 = 1;
/// Client requests to a member.
pub const TAG_REQUEST: u64 = 2;
/// A member's replies to client requests.
pub const TAG_REPLY: u64 = 3;
/// Watch stream messages from a member to a client.
pub const TAG_WATCH: u64 = 4;

/// The port every member and client endpoint binds.
pub const PORT: u16 = 2379;

/// The address of member `id` (10.0.0.id).
pub fn member_addr(id: NodeId) -> SocketAddr {
    assert!((1..=250).contains(&id), "member ids are 1..=250");
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8)), PORT)
}

/// The IP of member `id`.
pub fn member_ip(id: NodeId) -> IpAddr {
    member_addr(id).ip()
}

/// A Raft message from one member to another.
#[derive(Debug, Clone)]
pub struct PeerMessage {
    pub msg: raft::eraftpb::Message,
}

/// One client request, with the id its reply will carry and where to send it.
#[derive(Debug, Clone)]
pub struct ClientEnvelope {
    pub id: u64,
    pub reply_to: SocketAddr,
    pub request: ClientRequest,
}

/// What a client can ask a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientRequest {
    /// A KV, lease-grant/revoke, compaction or alarm request. A `Range` is linearizable (through
    /// ReadIndex) unless it asks to be `serializable`, then it reads the member's applied state.
    Kv(Request),
    /// Renews a lease (served by the leader only).
    LeaseKeepAlive(LeaseId),
    /// A lease's remaining TTL (served by the leader only, as etcd forwards it there).
    LeaseTimeToLive {
        id: LeaseId,
        keys: bool,
    },
    LeaseLeases,
    Status,
    HashKv {
        revision: i64,
    },
    /// Rebuilds this member's backend; the member serves nothing while it runs.
    Defragment,
    WatchCreate {
        stream: u64,
        request: WatchCreateRequest,
    },
    WatchCancel {
        stream: u64,
        watch_id: i64,
    },
    WatchProgress {
        stream: u64,
    },
    WatchClose {
        stream: u64,
    },
}

impl ClientRequest {
    /// Whether the request can change replicated state (and so may have an unknown outcome).
    pub fn is_write(&self) -> bool {
        match self {
            ClientRequest::Kv(Request::Range(_)) => false,
            ClientRequest::Kv(Request::Alarm(a)) => a.action != AlarmAction::Get,
            ClientRequest::Kv(_) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientResponse {
    Kv(Response),
    LeaseKeepAlive(LeaseKeepAliveResponse),
    LeaseTimeToLive(LeaseTimeToLiveResponse),
    LeaseLeases(Vec<LeaseId>),
    Status(StatusResponse),
    HashKv(HashKvResponse),
    Defragment,
    /// A watch request was taken; its effect arrives on the stream.
    WatchAck,
}

/// Why a member did not answer a request with a response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ServerError {
    /// An etcd outcome: the request was refused before proposal or applied and failed.
    #[error("{0}")]
    Etcd(EtcdError),
    /// The member knows no leader; the request was not proposed.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The request must go to the leader; `leader` is the member's best guess.
    #[error("etcdserver: not leader")]
    NotLeader { leader: Option<NodeId> },
    /// The member dropped the proposal before it entered the log (raft refused it).
    #[error("etcdserver: proposal dropped")]
    ProposalDropped,
    /// The member gave up waiting for the request's outcome; it may still take effect.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// Too many requests in flight on this member.
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// A watch request named a stream this member does not have (it restarted, or the stream
    /// was closed): the client must open a new stream.
    #[error("etcdserver: unknown watch stream")]
    UnknownStream,
}

impl ServerError {
    /// Whether the request certainly did not take effect.
    pub fn is_definite(&self) -> bool {
        !matches!(self, ServerError::Timeout)
    }
}

#[derive(Debug, Clone)]
pub struct ClientReply {
    pub id: u64,
    pub result: Result<ClientResponse, ServerError>,
}

/// One response on a watch stream; `seq` numbers a stream's messages from 0 so that the client
/// notices a lost or overtaken one.
#[derive(Debug, Clone)]
pub struct WatchMessage {
    pub stream: u64,
    pub seq: u64,
    pub response: WatchResponse,
}
