//! Request and response types, shaped like etcd's v3 protobuf messages.
//!
//! Field names follow `etcdserverpb` so that a reader who knows etcd's API knows these. Keys and
//! values are raw bytes. Everything here is plain data (serde), shared by the core, the node shell,
//! the client and the history format; nothing here performs IO or holds state.

use serde::{Deserialize, Serialize};

/// A lease id; `0` means "no lease".
pub type LeaseId = i64;

/// A key as stored: the MVCC metadata etcd returns with every read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct KeyValue {
    pub key: Vec<u8>,
    /// The revision of the put that created the key's current generation.
    pub create_revision: i64,
    /// The revision of the last change to the key.
    pub mod_revision: i64,
    /// 1 on creation, +1 per put; a delete ends the generation.
    pub version: i64,
    pub value: Vec<u8>,
    /// The attached lease, 0 for none.
    pub lease: LeaseId,
}

/// The header every response carries. The core fills `revision`; the node shell fills the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResponseHeader {
    pub cluster_id: u64,
    pub member_id: u64,
    /// The store's current revision when the response was made (even for reads at an older one).
    pub revision: i64,
    pub raft_term: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// Range(key, range_end): `range_end` empty reads the single key, `range_end == [0]` reads every
/// key >= `key`, otherwise `[key, range_end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// At most this many kvs; 0 = no limit.
    pub limit: i64,
    /// Read at this revision; 0 = latest.
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    /// Served from the member's local state without a quorum (the node shell's concern).
    pub serializable: bool,
    pub keys_only: bool,
    pub count_only: bool,
    /// Filters on kv metadata; 0 = no filter.
    pub min_mod_revision: i64,
    pub max_mod_revision: i64,
    pub min_create_revision: i64,
    pub max_create_revision: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RangeResponse {
    pub header: ResponseHeader,
    pub kvs: Vec<KeyValue>,
    /// More kvs matched than `limit` let through.
    pub more: bool,
    /// Every key in the range at the read revision, ignoring `limit` and the min/max filters.
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PutRequest {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub lease: LeaseId,
    pub prev_kv: bool,
    /// Keep the key's current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the key's current lease (the key must exist).
    pub ignore_lease: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PutResponse {
    pub header: ResponseHeader,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeleteRangeRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub prev_kv: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DeleteRangeResponse {
    pub header: ResponseHeader,
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// What a compare looks at, with the operand to compare against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(Vec<u8>),
    Lease(LeaseId),
}

/// One compare of a txn; with a non-empty `range_end` it must hold for every key in the range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub result: CompareResult,
    pub target: CompareTarget,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestOp {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResponseOp {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TxnResponse {
    pub header: ResponseHeader,
    /// Whether every compare held (and so the success branch ran).
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CompactionRequest {
    pub revision: i64,
    /// etcd waits for the physical compaction to finish before answering; the core always
    /// compacts at once, so this only travels through for fidelity.
    pub physical: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CompactionResponse {
    pub header: ResponseHeader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeaseGrantRequest {
    /// Seconds; raised to the configured minimum.
    pub ttl: i64,
    /// 0 lets the store choose.
    pub id: LeaseId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeaseGrantResponse {
    pub header: ResponseHeader,
    pub id: LeaseId,
    pub ttl: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeaseRevokeRequest {
    pub id: LeaseId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeaseRevokeResponse {
    pub header: ResponseHeader,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeaseKeepAliveResponse {
    pub header: ResponseHeader,
    pub id: LeaseId,
    /// The renewed TTL in seconds; 0 when the lease does not exist (as etcd answers).
    pub ttl: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LeaseTimeToLiveResponse {
    pub header: ResponseHeader,
    pub id: LeaseId,
    /// Remaining seconds; -1 when the lease does not exist (as etcd answers).
    pub ttl: i64,
    pub granted_ttl: i64,
    pub keys: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlarmType {
    NoSpace,
    Corrupt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmAction {
    Get,
    Activate,
    Deactivate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlarmMember {
    pub member_id: u64,
    pub alarm: AlarmType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmRequest {
    pub action: AlarmAction,
    pub member_id: u64,
    pub alarm: AlarmType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AlarmResponse {
    pub header: ResponseHeader,
    pub alarms: Vec<AlarmMember>,
}

/// A request that changes (or may change) replicated state: it goes through the Raft log and is
/// applied in log order on every member. Linearizable ranges travel here too so that a node shell
/// may choose to serve them through the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    Alarm(AlarmRequest),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Range(RangeResponse),
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(AlarmResponse),
}

impl Response {
    pub fn header(&self) -> &ResponseHeader {
        match self {
            Response::Range(r) => &r.header,
            Response::Put(r) => &r.header,
            Response::DeleteRange(r) => &r.header,
            Response::Txn(r) => &r.header,
            Response::Compact(r) => &r.header,
            Response::LeaseGrant(r) => &r.header,
            Response::LeaseRevoke(r) => &r.header,
            Response::Alarm(r) => &r.header,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventType {
    Put,
    Delete,
}

/// A watch event. A delete's `kv` holds the key and the deletion's `mod_revision` only, as in
/// etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventType,
    pub kv: KeyValue,
    pub prev_kv: Option<KeyValue>,
}

/// The watch id etcd uses for stream-wide progress notifications.
pub const WATCH_ID_STREAM: i64 = -1;

/// WatchCreateRequest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WatchCreateRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// 0 = from the next revision on.
    pub start_revision: i64,
    pub progress_notify: bool,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    /// A client-chosen id; `None` lets the stream pick the next free one.
    pub watch_id: Option<i64>,
}

/// WatchResponse: a created/canceled notice, a batch of events, or a progress notification
/// (no events, not created, not canceled).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WatchResponse {
    pub header: ResponseHeader,
    pub watch_id: i64,
    pub created: bool,
    pub canceled: bool,
    /// Set when the watch was canceled because its start revision was compacted.
    pub compact_revision: i64,
    pub cancel_reason: String,
    pub events: Vec<Event>,
}

impl WatchResponse {
    /// A progress notification: "every event up to `header.revision` has been sent".
    pub fn is_progress_notify(&self) -> bool {
        self.events.is_empty() && !self.created && !self.canceled && self.compact_revision == 0
    }
}

/// Status, as far as the state machine knows it; the node shell adds Raft fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StatusResponse {
    pub header: ResponseHeader,
    pub member_id: u64,
    pub leader: u64,
    pub raft_term: u64,
    pub raft_index: u64,
    pub raft_applied_index: u64,
    /// The backend file's size in bytes (the high-water mark of pages).
    pub db_size: i64,
    /// Bytes in pages that hold live data; the rest is free pages awaiting reuse or defrag.
    pub db_size_in_use: i64,
    pub compact_revision: i64,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HashKvResponse {
    pub header: ResponseHeader,
    pub hash: u64,
    pub compact_revision: i64,
    pub hash_revision: i64,
}
