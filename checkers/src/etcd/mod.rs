//! etcd v3 semantics, and the checkers that judge a whole history with them.
//!
//! - [`model`]: [`EtcdState`], what every request does to an etcd keyspace and what it must
//!   answer (one global revision bumped by exactly one for each request that changes the
//!   keyspace, create/mod revisions and versions per key, ranges with `limit`/`count`/`more`,
//!   txns with compares and branches, leases with attached keys, compaction), with the range and
//!   compare helpers in [`keyspace`]. It must never depend on a history's times: it is the
//!   contract, applied one request at a time.
//! - [`guided`]: the default checker. It orders the history by the revisions the store
//!   reported, fills the revisions no acknowledged write claims with writes of unknown outcome,
//!   replays once in revision order and checks every read and real time against that order. It
//!   must never search without a budget, nor hold more than the live keyspace per open choice.
//! - [`wgl`]: the same semantics as a model for the generic linearizability search
//!   ([`crate::linearizability`]), and the checker built on it: exponential in writes of unknown
//!   outcome, kept as a second opinion (the differential tests hold the two against each other).
//!   It must never decide by anything but the search and the revision reads.
//! - [`render`]: requests, responses and states in words. It must never decide anything.
//!
//! Not modelled, by design:
//! - **Lease expiry.** An expired lease deletes its keys at a revision no client asked for, which
//!   no history records. Workloads must keep lease TTLs above the length of the run (or keep
//!   their leases alive and revoke them explicitly). The checkers warn when a lease lived longer
//!   than its TTL in the history, and a violation found then may be an expiry.
//! - The txn op limit, request sizes, the space quota and alarms: requests refused for these
//!   reasons end `failed`, and failed operations are dropped before checking.

pub mod guided;
pub mod keyspace;
pub mod model;
pub mod render;
pub mod wgl;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::history::{History, Outcome, Request, Response};

pub use guided::{check, GuidedReport, GuidedVerdict, GuidedViolation, Property};
pub use model::{Applied, EtcdState, Lease, Refusal};
pub use render::request_text;
pub use wgl::{EtcdCounts, EtcdReport, RevisionReads, StaleRead};
pub use wgl::{EtcdInput, EtcdModel, EtcdOperation};

use render::seconds;

/// The overall judgement of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Linearizable, and every read shows the keyspace at its revision.
    Pass,
    /// A violation: not linearizable, or a stale read.
    Fail,
    /// Not decided within the budget, and no violation found.
    Unknown,
}

/// Whether an acknowledged request with this response certainly bumped the revision.
pub(crate) fn bumped(request: &Request, response: &Response) -> bool {
    match (request, response) {
        (Request::Put { .. }, Response::Put {}) => true,
        (Request::Delete { .. }, Response::Delete { deleted }) => *deleted > 0,
        (
            Request::Txn {
                success, failure, ..
            },
            Response::Txn {
                succeeded,
                responses,
            },
        ) => {
            let branch = if *succeeded { success } else { failure };
            branch.iter().zip(responses).any(|pair| match pair {
                (Request::Put { .. }, Response::Put {}) => true,
                (Request::Delete { .. }, Response::Delete { deleted }) => *deleted > 0,
                _ => false,
            })
        }
        _ => false,
    }
}

/// The revision whose keyspace a get shows: its own revision, else its header's.
pub(crate) fn read_revision(get: &Request, header: i64) -> i64 {
    match get {
        Request::Get { revision, .. } if *revision > 0 => *revision,
        _ => header,
    }
}

/// The same get, linearizable and at the latest revision.
pub(crate) fn as_latest_read(get: &Request) -> Request {
    let Request::Get {
        key,
        range_end,
        limit,
        keys_only,
        ..
    } = get
    else {
        unreachable!("as_latest_read() is called with gets only");
    };
    Request::Get {
        key: key.clone(),
        range_end: range_end.clone(),
        revision: 0,
        limit: *limit,
        keys_only: *keys_only,
        serializable: false,
    }
}

pub(crate) fn is_write(request: &Request) -> bool {
    !matches!(request, Request::Get { .. })
}

/// Leases that lived longer than their TTL in the history: if one expired, its keys were
/// deleted at a revision no operation accounts for, which the model does not know of.
pub(crate) fn lease_warnings(history: &History) -> Vec<String> {
    let end_ns = history
        .operations
        .iter()
        .map(|op| op.complete_ns.unwrap_or(op.invoke_ns).max(op.invoke_ns))
        .max()
        .unwrap_or(0);
    // The first acknowledged revoke of each lease, by completion.
    let mut revoked: BTreeMap<i64, u64> = BTreeMap::new();
    for op in &history.operations {
        if let (Request::LeaseRevoke { id }, Outcome::Ok { .. }, Some(done)) =
            (&op.request, &op.outcome, op.complete_ns)
        {
            let first = revoked.entry(*id).or_insert(done);
            *first = (*first).min(done);
        }
    }
    let mut warnings = Vec::new();
    for grant in &history.operations {
        let (id, ttl) = match (&grant.request, &grant.outcome) {
            (
                Request::LeaseGrant { .. },
                Outcome::Ok {
                    response: Response::LeaseGrant { id, ttl },
                    ..
                },
            ) => (*id, *ttl),
            (Request::LeaseGrant { ttl, id }, Outcome::Unknown) if *id != 0 => (*id, *ttl),
            _ => continue,
        };
        let revoked_ns = revoked.get(&id).copied().unwrap_or(end_ns);
        let ttl_ns = u64::try_from(ttl)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000);
        let lived_ns = revoked_ns.saturating_sub(grant.invoke_ns);
        if lived_ns > ttl_ns {
            warnings.push(format!(
                "lease {id} (TTL {ttl}s, granted by operation {}) lived {} in the history: lease \
                 expiry is not modelled, so if it expired, its keys vanished at a revision no \
                 operation accounts for (keep lease TTLs above the length of the run)",
                grant.id,
                seconds(lived_ns)
            ));
        }
    }
    warnings
}
