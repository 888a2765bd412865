//! The lease table: which leases exist, their TTLs and attached keys (replicated), and when each
//! expires on this member (local, like etcd's lessor).
//!
//! Only the primary (the Raft leader's lessor) tracks expiries; other members hold every lease
//! "forever" until they are promoted. Time comes in as milliseconds from the caller; this module
//! never reads a clock. Expired leases are *reported*, never revoked here: revocation is a request
//! that must go through the replicated log.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::LeaseId;

/// etcd's MaxLeaseTTL: 9,000,000,000 seconds.
pub const LEASE_TTL_MAX_SECS: i64 = 9_000_000_000;

/// One lease's replicated part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: LeaseId,
    /// Seconds, as granted (after raising to the minimum).
    pub ttl_secs: i64,
    pub keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    leases: BTreeMap<LeaseId, Lease>,
    /// Expiry deadline (ms) of each lease, only while this member is primary.
    expiry_ms: BTreeMap<LeaseId, u64>,
    primary: bool,
    /// The next id to try for a grant that lets the store choose.
    next_id: LeaseId,
}

impl LeaseTable {
    pub fn new() -> Self {
        LeaseTable {
            next_id: 1,
            ..Default::default()
        }
    }

    pub fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub fn contains(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    pub fn is_primary(&self) -> bool {
        self.primary
    }

    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub fn next_id(&self) -> LeaseId {
        self.next_id
    }

    /// Picks the id for a grant with `id == 0`: the smallest unused id from the counter on. It is
    /// replicated state, so every member picks the same.
    pub fn choose_id(&mut self) -> LeaseId {
        while self.leases.contains_key(&self.next_id) || self.next_id == 0 {
            self.next_id = self.next_id.wrapping_add(1).max(1);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    pub fn grant(&mut self, id: LeaseId, ttl_secs: i64, now_ms: u64) {
        assert!(id != 0, "lease id 0 means no lease");
        let old = self.leases.insert(
            id,
            Lease {
                id,
                ttl_secs,
                keys: BTreeSet::new(),
            },
        );
        assert!(old.is_none(), "lease {id} granted twice");
        if self.primary {
            self.expiry_ms.insert(id, deadline(now_ms, ttl_secs, 0));
        }
    }

    /// Removes a lease and returns its keys (which the caller deletes).
    pub fn revoke(&mut self, id: LeaseId) -> Option<Lease> {
        self.expiry_ms.remove(&id);
        self.leases.remove(&id)
    }

    pub fn attach(&mut self, id: LeaseId, key: &[u8]) {
        if id == 0 {
            return;
        }
        let lease = self
            .leases
            .get_mut(&id)
            .expect("attach to a lease that exists");
        lease.keys.insert(key.to_vec());
    }

    pub fn detach(&mut self, id: LeaseId, key: &[u8]) {
        if id == 0 {
            return;
        }
        // A key may outlive its lease's record only inside a revoke, which removed it first.
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Renews a lease to its full TTL (KeepAlive). Only the primary renews; returns the TTL, or
    /// `None` for an unknown lease.
    pub fn renew(&mut self, id: LeaseId, now_ms: u64) -> Option<i64> {
        let ttl = self.leases.get(&id)?.ttl_secs;
        if self.primary {
            self.expiry_ms.insert(id, deadline(now_ms, ttl, 0));
        }
        Some(ttl)
    }

    /// Remaining whole seconds before expiry (the full TTL on a non-primary member).
    pub fn remaining_secs(&self, id: LeaseId, now_ms: u64) -> Option<i64> {
        let lease = self.leases.get(&id)?;
        match self.expiry_ms.get(&id) {
            Some(deadline) => Some((deadline.saturating_sub(now_ms) / 1000) as i64),
            None => Some(lease.ttl_secs),
        }
    }

    /// Becomes primary (this member's node became leader): every lease gets its full TTL plus
    /// `extend_ms` from now, so that a leader change never expires a lease early.
    pub fn promote(&mut self, now_ms: u64, extend_ms: u64) {
        self.primary = true;
        self.expiry_ms = self
            .leases
            .values()
            .map(|l| (l.id, deadline(now_ms, l.ttl_secs, extend_ms)))
            .collect();
    }

    /// Stops being primary: leases no longer expire here.
    pub fn demote(&mut self) {
        self.primary = false;
        self.expiry_ms.clear();
    }

    /// The leases whose deadline has passed at `now_ms`, earliest deadline first (ties by id), at
    /// most `max`. Empty unless primary.
    pub fn expired(&self, now_ms: u64, max: usize) -> Vec<LeaseId> {
        let mut due: Vec<(u64, LeaseId)> = self
            .expiry_ms
            .iter()
            .filter(|(_, deadline)| **deadline <= now_ms)
            .map(|(id, deadline)| (*deadline, *id))
            .collect();
        due.sort_unstable();
        due.into_iter().take(max).map(|(_, id)| id).collect()
    }

    /// Restores the replicated part from an image; the member starts as non-primary.
    pub fn restored(leases: Vec<Lease>, next_id: LeaseId) -> Self {
        let leases = leases.into_iter().map(|l| (l.id, l)).collect();
        LeaseTable {
            leases,
            expiry_ms: BTreeMap::new(),
            primary: false,
            next_id,
        }
    }

    pub fn check_invariants(&self) {
        for (id, lease) in &self.leases {
            assert_eq!(*id, lease.id, "lease stored under another id");
            assert!(*id != 0, "lease with id 0");
            assert!(lease.ttl_secs > 0, "lease with a non-positive TTL");
        }
        if self.primary {
            assert!(
                self.expiry_ms.keys().eq(self.leases.keys()),
                "primary misses an expiry"
            );
        } else {
            assert!(self.expiry_ms.is_empty(), "non-primary tracks expiries");
        }
    }
}

fn deadline(now_ms: u64, ttl_secs: i64, extend_ms: u64) -> u64 {
    now_ms
        .saturating_add((ttl_secs.max(0) as u64).saturating_mul(1000))
        .saturating_add(extend_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_primary_expires_and_promotion_extends() {
        let mut table = LeaseTable::new();
        table.grant(7, 5, 0);
        assert!(
            table.expired(1_000_000, 10).is_empty(),
            "a follower never expires leases"
        );
        table.promote(10_000, 2_000);
        assert!(table.expired(16_999, 10).is_empty());
        assert_eq!(table.expired(17_000, 10), vec![7]);
        assert_eq!(table.renew(7, 17_000), Some(5));
        assert_eq!(table.remaining_secs(7, 18_000), Some(4));
        table.demote();
        assert!(table.expired(u64::MAX, 10).is_empty());
        table.check_invariants();
    }

    #[test]
    fn chosen_ids_skip_taken_ones() {
        let mut table = LeaseTable::new();
        table.grant(1, 5, 0);
        table.grant(2, 5, 0);
        assert_eq!(table.choose_id(), 3);
        assert_eq!(table.choose_id(), 4);
    }
}
