//! The errors an etcd client can receive from the store, with etcd's own messages.
//!
//! These are *etcd outcomes*: values a request can legitimately end in (a compacted revision, an
//! unknown lease). They are never used for broken invariants, which panic, nor for environment
//! faults (disk, network), which belong to the node shell.

use serde::{Deserialize, Serialize};

/// An error as etcd's gRPC API reports it. `Display` gives etcd's exact message text so that
/// histories recorded here and against a real etcd compare equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum EtcdError {
    /// A request named no key (`key` empty) where one is required.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `ignore_value` or `ignore_lease` on a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` set together with a non-empty value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` set together with a non-zero lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A txn branch (or compare list) longer than the configured maximum.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn writes one key twice, or puts a key that it also deletes.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A read, watch, hash or compaction at a revision that compaction has removed.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read, hash or compaction at a revision the store has not reached.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// The backend quota is exhausted (or the NOSPACE alarm is raised).
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// A lease id that no lease has.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A LeaseGrant asking for an id already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A LeaseGrant TTL above the maximum etcd accepts.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// The encoded request is larger than the configured maximum.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// The CORRUPT alarm is raised: the member refuses every request.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// A watch id already used on this stream.
    #[error("etcdserver: duplicate watch id")]
    WatchIdExists,
    /// A watch stream holds the configured maximum number of watchers.
    #[error("etcdserver: too many watchers on stream")]
    TooManyWatchers,
}

impl EtcdError {
    /// The gRPC status code etcd sends with this error (etcd's `rpctypes`), by its name in
    /// gRPC's vocabulary ("InvalidArgument", "OutOfRange", ...).
    pub fn grpc_code(&self) -> &'static str {
        match self {
            EtcdError::EmptyKey
            | EtcdError::KeyNotFound
            | EtcdError::ValueProvided
            | EtcdError::LeaseProvided
            | EtcdError::TooManyOps
            | EtcdError::DuplicateKey
            | EtcdError::RequestTooLarge => "InvalidArgument",
            EtcdError::Compacted | EtcdError::FutureRevision | EtcdError::LeaseTtlTooLarge => {
                "OutOfRange"
            }
            EtcdError::NoSpace => "ResourceExhausted",
            EtcdError::LeaseNotFound => "NotFound",
            EtcdError::LeaseExists | EtcdError::WatchIdExists | EtcdError::TooManyWatchers => {
                "FailedPrecondition"
            }
            EtcdError::Corrupt => "DataLoss",
        }
    }
}
