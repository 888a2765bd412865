//! The etcd keyspace as a value: [`EtcdState`] and what one request does to it.
//!
//! What this module must never do: know of histories, times or clients. It applies requests one
//! at a time, with etcd v3's answers and refusals, and checks its own invariants.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::keyspace::{
    check_branch, check_read_revision, compare_holds, get_part, get_response, range,
};
use crate::history::{Kv, Request, Response};

/// The part of an etcd store its clients can observe, as the model tracks it.
///
/// The keyspace and the lease table sit behind `Arc`s so that a read, which the search steps
/// far more often than a write, clones the state in O(1); a write copies on write. The search
/// hashes every state it reaches, so the keyspace carries a fingerprint kept up to date on each
/// change, and hashing a state costs O(1) however many keys it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdState {
    pub(crate) revision: i64,
    pub(crate) compact_revision: i64,
    pub(crate) keyspace: Arc<BTreeMap<String, Kv>>,
    /// XOR of [`kv_fingerprint`] over the live kvs: a function of `keyspace`.
    keyspace_fingerprint: u64,
    pub(crate) leases: Arc<BTreeMap<i64, Lease>>,
}

impl std::hash::Hash for EtcdState {
    /// Consistent with `Eq`: equal states have equal fingerprints.
    fn hash<H: std::hash::Hasher>(&self, hasher: &mut H) {
        self.revision.hash(hasher);
        self.compact_revision.hash(hasher);
        self.keyspace_fingerprint.hash(hasher);
        self.leases.len().hash(hasher);
    }
}

/// A kv's share of the keyspace fingerprint (the same on every run and machine).
fn kv_fingerprint(kv: &Kv) -> u64 {
    // FxHash's step over 8-byte words, then splitmix64's finaliser.
    let mut hash: u64 = 0;
    let mut add =
        |word: u64| hash = (hash.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    for bytes in [kv.key.as_bytes(), kv.value.as_bytes()] {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        add(u64::from_le_bytes(last));
        add(bytes.len() as u64);
    }
    for n in [kv.create_revision, kv.mod_revision, kv.version, kv.lease] {
        add(n as u64);
    }
    let mut z = hash;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A lease as the model tracks it: no deadline, since expiry is not modelled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The TTL granted, in seconds (the response's, which etcd may raise to its minimum).
    pub ttl: i64,
    /// The live keys attached to the lease.
    pub keys: BTreeSet<String>,
}

/// Why etcd refuses a request: the request takes no effect, and an `ok` outcome for it is
/// impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A request or compare with an empty key.
    EmptyKey,
    /// A txn branch that writes one key twice, or puts a key it also deletes.
    DuplicateKey,
    /// A put to, or a revoke of, a lease that does not exist.
    LeaseNotFound,
    /// A grant of a lease id already in use.
    LeaseExists,
    /// A grant with id 0 whose response (and so the id etcd chose) is unknown.
    LeaseIdUnknown,
    /// A read or compaction below the compact revision (or a compaction at it).
    Compacted,
    /// A read or compaction above the current revision.
    FutureRevision,
    /// A txn branch holding something other than get, put and delete.
    NotATxnOp,
}

impl Refusal {
    /// etcd's message for it, as a client sees it.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::EmptyKey => "etcdserver: key is not provided",
            Refusal::DuplicateKey => "etcdserver: duplicate key given in txn request",
            Refusal::LeaseNotFound => "etcdserver: requested lease not found",
            Refusal::LeaseExists => "etcdserver: lease already exists",
            Refusal::LeaseIdUnknown => "a lease granted with id 0 needs its response to be known",
            Refusal::Compacted => "etcdserver: mvcc: required revision has been compacted",
            Refusal::FutureRevision => "etcdserver: mvcc: required revision is a future revision",
            Refusal::NotATxnOp => "a txn branch may hold only get, put and delete",
        }
    }
}

/// The result of applying a request that etcd accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub state: EtcdState,
    /// The response header's revision: the store's revision after the request.
    pub header_revision: i64,
    pub response: Response,
}

impl Default for EtcdState {
    fn default() -> Self {
        Self::new()
    }
}

/// A B-tree's cost per entry beyond the entry itself: its share of node headers, edges and
/// the slack of half-full nodes (a node holds 5 to 11 entries).
const BTREE_ENTRY_OVERHEAD: usize = 3 * size_of::<usize>();

/// `bytes` of memory held through `arc`, over the number of its holders (rounded up).
fn share<T: ?Sized>(arc: &Arc<T>, bytes: usize) -> usize {
    bytes.div_ceil(Arc::strong_count(arc))
}

impl EtcdState {
    /// The heap memory the state holds: the keyspace's and the lease table's trees with every
    /// key and value (capacities included). A tree shared with other states (a read's clone, a
    /// write's predecessor before copy-on-write) counts in shares.
    pub fn heap_bytes(&self) -> usize {
        let kv_entry = size_of::<String>() + size_of::<Kv>() + BTREE_ENTRY_OVERHEAD;
        let keyspace: usize = self
            .keyspace
            .iter()
            .map(|(key, kv)| kv_entry + key.capacity() + kv.key.capacity() + kv.value.capacity())
            .sum();
        let lease_entry = size_of::<i64>() + size_of::<Lease>() + BTREE_ENTRY_OVERHEAD;
        let key_entry = size_of::<String>() + BTREE_ENTRY_OVERHEAD;
        let leases: usize = self
            .leases
            .values()
            .map(|lease| {
                lease_entry
                    + lease
                        .keys
                        .iter()
                        .map(|key| key_entry + key.capacity())
                        .sum::<usize>()
            })
            .sum();
        share(&self.keyspace, keyspace) + share(&self.leases, leases)
    }

    /// An empty store: revision 1, nothing compacted, no keys, no leases.
    pub fn new() -> Self {
        EtcdState {
            revision: 1,
            compact_revision: 0,
            keyspace: Arc::new(BTreeMap::new()),
            keyspace_fingerprint: 0,
            leases: Arc::new(BTreeMap::new()),
        }
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Reads below this revision fail; 0 before the first compaction.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// The live keys.
    pub fn keyspace(&self) -> &BTreeMap<String, Kv> {
        &self.keyspace
    }

    /// The live leases.
    pub fn leases(&self) -> &BTreeMap<i64, Lease> {
        &self.leases
    }

    /// Applies `request` with etcd v3's semantics and returns the new state and the response,
    /// or why etcd refuses it.
    ///
    /// `observed` is the response the client saw, if it saw one. It supplies the two things the
    /// request alone cannot decide: the id (and the TTL, which etcd may raise to its minimum) of
    /// a lease granted with id 0, and the data of a read at a past revision, which this state no
    /// longer holds (unless the revision is the current one); that data is copied from
    /// `observed` and must be checked elsewhere.
    ///
    /// A serializable get is answered from this state like any other read: pinning it to the
    /// right revision is the caller's business (see [`EtcdModel`]).
    pub fn apply(
        &self,
        request: &Request,
        observed: Option<&Response>,
    ) -> Result<Applied, Refusal> {
        let applied = match request {
            Request::Get { .. } => {
                let response = self.read(self, request, observed)?;
                Applied {
                    state: self.clone(),
                    header_revision: self.revision,
                    response,
                }
            }
            Request::Put { .. } | Request::Delete { .. } => {
                check_branch(std::slice::from_ref(request))?;
                let mut txn = WriteTxn::new(self);
                let response = txn.execute(self, request, None)?;
                txn.finish(response)
            }
            Request::Txn {
                compare,
                success,
                failure,
            } => {
                if compare.iter().any(|c| c.key.is_empty()) {
                    return Err(Refusal::EmptyKey);
                }
                check_branch(success)?;
                check_branch(failure)?;
                // etcd evaluates every compare against the state before the txn writes.
                let succeeded = compare
                    .iter()
                    .all(|c| compare_holds(c, self.keyspace.get(&c.key)));
                let branch = if succeeded { success } else { failure };
                let observed_subs = match observed {
                    Some(Response::Txn { responses, .. }) => responses.as_slice(),
                    _ => &[],
                };
                // The checks that need state run on the chosen branch before anything is
                // written: a refused op refuses the whole txn.
                for op in branch {
                    self.precheck(op)?;
                }
                let mut txn = WriteTxn::new(self);
                let mut responses = Vec::with_capacity(branch.len());
                for (i, op) in branch.iter().enumerate() {
                    responses.push(txn.execute(self, op, observed_subs.get(i))?);
                }
                txn.finish(Response::Txn {
                    succeeded,
                    responses,
                })
            }
            Request::LeaseGrant { ttl, id } => {
                let granted = match observed {
                    Some(Response::LeaseGrant { id, ttl }) => Some((*id, *ttl)),
                    _ => None,
                };
                let id = if *id != 0 {
                    *id
                } else {
                    granted.map_or(0, |(id, _)| id)
                };
                if id == 0 {
                    return Err(Refusal::LeaseIdUnknown);
                }
                if self.leases.contains_key(&id) {
                    return Err(Refusal::LeaseExists);
                }
                // etcd raises a TTL below its minimum to the minimum, never lowers one.
                let ttl = granted.map_or(*ttl, |(_, granted_ttl)| granted_ttl.max(*ttl));
                let mut state = self.clone();
                Arc::make_mut(&mut state.leases).insert(
                    id,
                    Lease {
                        ttl,
                        keys: BTreeSet::new(),
                    },
                );
                Applied {
                    state,
                    header_revision: self.revision,
                    response: Response::LeaseGrant { id, ttl },
                }
            }
            Request::LeaseRevoke { id } => {
                let lease = self.leases.get(id).ok_or(Refusal::LeaseNotFound)?;
                let mut txn = WriteTxn::new(self);
                for key in &lease.keys {
                    let removed = txn.state_mut().remove_key(key);
                    assert_eq!(
                        removed.lease, *id,
                        "lease {id} lists key {key:?} attached elsewhere"
                    );
                    txn.changed = true;
                }
                Arc::make_mut(&mut txn.state.leases).remove(id);
                txn.finish(Response::LeaseRevoke {})
            }
            Request::Compact { revision } => {
                if *revision <= self.compact_revision {
                    return Err(Refusal::Compacted);
                }
                if *revision > self.revision {
                    return Err(Refusal::FutureRevision);
                }
                let mut state = self.clone();
                state.compact_revision = *revision;
                Applied {
                    state,
                    header_revision: self.revision,
                    response: Response::Compact {},
                }
            }
        };
        debug_assert!(
            applied.state.revision - self.revision <= 1,
            "a request bumped more than once"
        );
        // The full check (`check_invariants`) is O(keys): the model's tests run it.
        debug_assert!(
            applied.state.leases.is_empty() || applied.state.leases_agree_with_keys(),
            "lease key sets disagree with keys"
        );
        Ok(applied)
    }

    /// A get against `base` as the state before the request (for reads at a past revision) and
    /// `self` as what the request has written so far (for latest reads inside a txn).
    fn read(
        &self,
        base: &EtcdState,
        request: &Request,
        observed: Option<&Response>,
    ) -> Result<Response, Refusal> {
        let Request::Get {
            key,
            range_end,
            revision,
            limit,
            keys_only,
            ..
        } = request
        else {
            unreachable!("read() is called with gets only");
        };
        if key.is_empty() {
            return Err(Refusal::EmptyKey);
        }
        check_read_revision(base, *revision)?;
        let source = if *revision == 0 {
            self
        } else if *revision == base.revision {
            base
        } else {
            // A past revision the model no longer holds: take the observed data, which the
            // check after the search holds against the reconstructed revisions.
            let observed = observed.and_then(get_part).cloned();
            return Ok(observed.unwrap_or(Response::Get {
                kvs: Vec::new(),
                count: 0,
                more: false,
            }));
        };
        Ok(get_response(
            range(&source.keyspace, key, range_end.as_deref()),
            *limit,
            *keys_only,
        ))
    }

    /// Whether a latest get answered `observed` in this state: [`EtcdState::apply`]'s answer,
    /// compared without building it (the search asks this more than anything else).
    pub(crate) fn read_matches(&self, request: &Request, observed: &Response) -> bool {
        let Request::Get {
            key,
            range_end,
            limit,
            keys_only,
            ..
        } = request
        else {
            unreachable!("read_matches() is called with gets only");
        };
        let Response::Get {
            kvs: observed_kvs,
            count,
            more,
        } = observed
        else {
            return false;
        };
        if key.is_empty() {
            return false;
        }
        let mut observed_kvs = observed_kvs.iter();
        let mut matched = 0_i64;
        for kv in range(&self.keyspace, key, range_end.as_deref()) {
            matched += 1;
            if *limit > 0 && matched > *limit {
                continue;
            }
            let Some(seen) = observed_kvs.next() else {
                return false;
            };
            let value_matches = if *keys_only {
                seen.value.is_empty()
            } else {
                seen.value == kv.value
            };
            if !value_matches
                || seen.key != kv.key
                || seen.create_revision != kv.create_revision
                || seen.mod_revision != kv.mod_revision
                || seen.version != kv.version
                || seen.lease != kv.lease
            {
                return false;
            }
        }
        let returned = if *limit > 0 {
            matched.min(*limit)
        } else {
            matched
        };
        observed_kvs.next().is_none() && *count == matched && *more == (returned < matched)
    }

    /// The checks of one txn op that need the state before the txn.
    fn precheck(&self, op: &Request) -> Result<(), Refusal> {
        match op {
            Request::Put { lease, .. } if *lease != 0 && !self.leases.contains_key(lease) => {
                Err(Refusal::LeaseNotFound)
            }
            Request::Get { revision, .. } => check_read_revision(self, *revision),
            _ => Ok(()),
        }
    }

    /// Removes a live key, detaching it from its lease; returns what it held.
    fn remove_key(&mut self, key: &str) -> Kv {
        let removed = Arc::make_mut(&mut self.keyspace)
            .remove(key)
            .expect("removing a live key");
        self.keyspace_fingerprint ^= kv_fingerprint(&removed);
        if removed.lease != 0 {
            let lease = Arc::make_mut(&mut self.leases).get_mut(&removed.lease);
            let detached = lease.expect("a key's lease exists").keys.remove(key);
            assert!(detached, "key {key:?} was not in its lease's key set");
        }
        removed
    }

    /// Panics unless the model's own invariants hold: the fingerprint matches the keyspace,
    /// every key is stored under its own name with a plausible history, and every lease lists
    /// exactly the keys attached to it. O(keys): the model's tests call it after every step.
    pub fn check_invariants(&self) {
        let fingerprint = self
            .keyspace
            .values()
            .fold(0, |f, kv| f ^ kv_fingerprint(kv));
        assert_eq!(
            fingerprint, self.keyspace_fingerprint,
            "the keyspace fingerprint is stale"
        );
        for (key, kv) in self.keyspace.iter() {
            assert_eq!(*key, kv.key, "a kv stored under another key");
            assert!(kv.version >= 1, "{key:?} has version {}", kv.version);
            assert!(
                kv.create_revision >= 2,
                "{key:?} was created at {}",
                kv.create_revision
            );
            assert!(
                kv.create_revision <= kv.mod_revision,
                "{key:?} was modified before created"
            );
            assert!(
                kv.mod_revision <= self.revision,
                "{key:?} was modified in the future"
            );
        }
        assert!(
            self.compact_revision <= self.revision,
            "compacted beyond the revision"
        );
        assert!(
            self.leases_agree_with_keys(),
            "lease key sets disagree with keys"
        );
    }

    /// Whether every lease lists exactly the keys attached to it.
    fn leases_agree_with_keys(&self) -> bool {
        if self.leases.is_empty() {
            // The common case, without allocating: then no key may name a lease.
            return self.keyspace.values().all(|kv| kv.lease == 0);
        }
        let mut attached: BTreeMap<i64, BTreeSet<&str>> = BTreeMap::new();
        for kv in self.keyspace.values().filter(|kv| kv.lease != 0) {
            attached.entry(kv.lease).or_default().insert(&kv.key);
        }
        attached.keys().all(|id| self.leases.contains_key(id))
            && self.leases.iter().all(|(id, lease)| {
                let listed: BTreeSet<&str> = lease.keys.iter().map(String::as_str).collect();
                listed == attached.get(id).cloned().unwrap_or_default()
            })
    }
}

/// The writes of one request, all at the revision after the current one.
struct WriteTxn {
    state: EtcdState,
    changed: bool,
}

impl WriteTxn {
    fn new(base: &EtcdState) -> Self {
        WriteTxn {
            state: base.clone(),
            changed: false,
        }
    }

    fn state_mut(&mut self) -> &mut EtcdState {
        &mut self.state
    }

    fn write_revision(&self) -> i64 {
        self.state.revision + 1
    }

    /// Executes one get, put or delete of the request; reads see the earlier writes.
    fn execute(
        &mut self,
        base: &EtcdState,
        op: &Request,
        observed: Option<&Response>,
    ) -> Result<Response, Refusal> {
        match op {
            Request::Get { .. } => self.state.read(base, op, observed),
            Request::Put { key, value, lease } => {
                let revision = self.write_revision();
                let prev = self.state.keyspace.get(key).cloned();
                if let Some(prev) = &prev {
                    self.state.remove_key(&prev.key);
                }
                let kv = Kv {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    lease: *lease,
                };
                if *lease != 0 {
                    let leases = Arc::make_mut(&mut self.state.leases);
                    let lease = leases.get_mut(lease).ok_or(Refusal::LeaseNotFound)?;
                    lease.keys.insert(key.clone());
                }
                self.state.keyspace_fingerprint ^= kv_fingerprint(&kv);
                Arc::make_mut(&mut self.state.keyspace).insert(key.clone(), kv);
                self.changed = true;
                Ok(Response::Put {})
            }
            Request::Delete { key, range_end } => {
                let doomed: Vec<String> = range(&self.state.keyspace, key, range_end.as_deref())
                    .map(|kv| kv.key.clone())
                    .collect();
                for key in &doomed {
                    self.state.remove_key(key);
                }
                self.changed |= !doomed.is_empty();
                Ok(Response::Delete {
                    deleted: doomed.len() as i64,
                })
            }
            Request::Txn { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::Compact { .. } => Err(Refusal::NotATxnOp),
        }
    }

    /// Bumps the revision by one if anything changed, never more.
    fn finish(mut self, response: Response) -> Applied {
        if self.changed {
            self.state.revision += 1;
        }
        Applied {
            header_revision: self.state.revision,
            state: self.state,
            response,
        }
    }
}
