//! etcd v3 semantics as a linearizability model, and the checker that judges a whole history
//! with it.
//!
//! [`EtcdModel`] tells the generic engine ([`crate::linearizability`]) what every request does to
//! an etcd keyspace and what it must answer: one global revision bumped by exactly one for each
//! request that changes the keyspace, create/mod revisions and versions per key, ranges with
//! `limit`/`count`/`more`, txns with compares and branches, leases with attached keys, and
//! compaction. Its input is the history request with its operation's id ([`EtcdInput`]): the id
//! tells the search which operation reported which revision (see "claimed revisions" on
//! [`EtcdModel`]), which keeps writes of unknown outcome cheap to place.
//!
//! [`check`] judges a [`History`] in two passes:
//! 1. the engine searches the writes, the linearizable reads (a read at a past revision for its
//!    header revision) and the writes of unknown outcome, as one partition (the revision couples
//!    every key);
//! 2. the reads that may show a past revision (serializable reads, reads at a past revision,
//!    inside txns too) are held against the keyspace at that revision, reconstructed from the
//!    order the engine found. When writes of unknown outcome leave that order open, a read that
//!    does not match is confirmed by searching again with it pinned to its revision, so a stale
//!    read is never blamed on where the search happened to place an unknown write.
//!
//! What this module must never do: depend on the simulator or on the store's internals (it
//! knows etcd only through the history format and the contract), or search without a budget.
//!
//! Not modelled, by design:
//! - **Lease expiry.** An expired lease deletes its keys at a revision no client asked for, which
//!   no history records. Workloads must keep lease TTLs above the length of the run (or keep
//!   their leases alive and revoke them explicitly). [`check`] warns when a lease lived longer
//!   than its TTL in the history, and a violation found then may be an expiry.
//! - The data of a read at a past revision is not checked by the search (the model keeps only
//!   the current keyspace, unless the revision read is the current one); the second pass checks
//!   it.
//! - The txn op limit, request sizes, the space quota and alarms: requests refused for these
//!   reasons end `failed`, and failed operations are dropped before checking.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::Arc;

use crate::history::{
    self, Compare, CompareResult, CompareTarget, History, Kv, Outcome, Request, Response,
};
use crate::linearizability::{self, Budget, Model, OpSummary, Operation, Verdict, Violation};

// ---------------------------------------------------------------------------------------------
// The state and what a request does to it.
// ---------------------------------------------------------------------------------------------

/// The part of an etcd store its clients can observe, as the model tracks it.
///
/// The keyspace and the lease table sit behind `Arc`s so that a read, which the search steps
/// far more often than a write, clones the state in O(1); a write copies on write. The search
/// hashes every state it reaches, so the keyspace carries a fingerprint kept up to date on each
/// change, and hashing a state costs O(1) however many keys it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdState {
    revision: i64,
    compact_revision: i64,
    keyspace: Arc<BTreeMap<String, Kv>>,
    /// XOR of [`kv_fingerprint`] over the live kvs: a function of `keyspace`.
    keyspace_fingerprint: u64,
    leases: Arc<BTreeMap<i64, Lease>>,
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

impl EtcdState {
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
    fn read_matches(&self, request: &Request, observed: &Response) -> bool {
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

fn check_read_revision(state: &EtcdState, revision: i64) -> Result<(), Refusal> {
    if revision > state.revision {
        return Err(Refusal::FutureRevision);
    }
    if revision > 0 && revision < state.compact_revision {
        return Err(Refusal::Compacted);
    }
    Ok(())
}

/// The checks etcd makes on a branch before proposing it: only get, put and delete (the history
/// format has no nested txns), keys present, and its duplicate-key rule (deletes first, then each
/// put against earlier puts and every delete).
fn check_branch(ops: &[Request]) -> Result<(), Refusal> {
    let mut deletes = Vec::new();
    for op in ops {
        match op {
            Request::Get { key, .. } | Request::Put { key, .. } if key.is_empty() => {
                return Err(Refusal::EmptyKey)
            }
            Request::Delete { key, .. } if key.is_empty() => return Err(Refusal::EmptyKey),
            Request::Delete { key, range_end } => deletes.push((key, range_end.as_deref())),
            Request::Get { .. } | Request::Put { .. } => {}
            _ => return Err(Refusal::NotATxnOp),
        }
    }
    let mut puts = BTreeSet::new();
    for op in ops {
        let Request::Put { key, .. } = op else {
            continue;
        };
        if !puts.insert(key)
            || deletes
                .iter()
                .any(|(start, end)| in_range(key, start, *end))
        {
            return Err(Refusal::DuplicateKey);
        }
    }
    Ok(())
}

fn compare_holds(compare: &Compare, kv: Option<&Kv>) -> bool {
    use std::cmp::Ordering;
    let ordering: Ordering = match (&compare.target, kv) {
        // A missing key has no value: every value compare fails.
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(v), Some(kv)) => kv.value.as_bytes().cmp(v.as_bytes()),
        (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
        (CompareTarget::Create(v), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(v),
        (CompareTarget::Mod(v), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(v),
        (CompareTarget::Lease(v), kv) => kv.map_or(0, |kv| kv.lease).cmp(v),
    };
    match compare.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

/// Whether `key` falls in etcd's range `(start, end)`: `end` absent or empty is `start` alone,
/// `"\0"` is every key from `start`, anything else is `[start, end)`.
fn in_range(key: &str, start: &str, end: Option<&str>) -> bool {
    match end {
        None | Some("") => key == start,
        Some("\u{0}") => key >= start,
        Some(end) => key >= start && key < end,
    }
}

/// The live kvs of an etcd range, in key order.
fn range<'a>(
    keyspace: &'a BTreeMap<String, Kv>,
    start: &'a str,
    end: Option<&'a str>,
) -> impl Iterator<Item = &'a Kv> + 'a {
    keyspace
        .range::<str, _>(bounds(start, end))
        .map(|(_, kv)| kv)
}

/// The bounds of an etcd range, for `BTreeMap::range` (an empty range if `end <= start`).
fn bounds<'a>(start: &'a str, end: Option<&'a str>) -> (Bound<&'a str>, Bound<&'a str>) {
    let upper = match end {
        None | Some("") => Bound::Included(start),
        Some("\u{0}") => Bound::Unbounded,
        Some(end) if end <= start => Bound::Excluded(start),
        Some(end) => Bound::Excluded(end),
    };
    (Bound::Included(start), upper)
}

/// etcd's range response: every match counted, at most `limit` returned (0 = no limit), values
/// dropped for `keys_only`.
fn get_response<'a>(
    matched: impl Iterator<Item = &'a Kv>,
    limit: i64,
    keys_only: bool,
) -> Response {
    let mut kvs: Vec<Kv> = Vec::new();
    let mut count = 0_i64;
    for kv in matched {
        count += 1;
        if limit <= 0 || count <= limit {
            let mut kv = kv.clone();
            if keys_only {
                kv.value.clear();
            }
            kvs.push(kv);
        }
    }
    let more = (kvs.len() as i64) < count;
    debug_assert!(
        kvs.windows(2).all(|w| w[0].key < w[1].key),
        "a range out of key order"
    );
    Response::Get { kvs, count, more }
}

fn get_part(response: &Response) -> Option<&Response> {
    matches!(response, Response::Get { .. }).then_some(response)
}

// ---------------------------------------------------------------------------------------------
// The model the engine searches with.
// ---------------------------------------------------------------------------------------------

/// etcd v3 as a sequential specification for the linearizability engine.
///
/// Inputs are history requests with their operation's id ([`EtcdInput`]), outputs `(header
/// revision, response)`. Every operation lands in
/// one partition: the global revision couples every key. How [`Model::step`] treats each request
/// with a known output (`Some`); with `None` (unknown outcome) the request takes effect with
/// whatever it would answer, or, if etcd would refuse it, takes no effect:
/// - put, delete, txn, lease grant and revoke, compact, and a linearizable get at the latest
///   revision: the observed header revision and response must equal etcd's;
/// - a linearizable get at a past revision: the header must be the current revision and the
///   read revision must be readable (not compacted, not in the future); its data is not checked
///   here (the state holds only the latest keyspace) but against the revisions reconstructed
///   after the search, unless the revision read is the current one;
/// - a serializable get is not a linearizable operation, and means something else here: "this
///   data is the keyspace at revision `r`" (`r` = the read's revision, or its header revision for
///   a latest read). It steps only in a state at exactly that revision, so the search places it
///   there; [`check`] gives such reads no earlier bound than time 0.
///
/// **Claimed revisions.** A model built with [`EtcdModel::for_operations`] knows the revisions
/// that acknowledged writes report as their own (a put, a delete that deleted something, a txn
/// that wrote): each is made by its claimer in every linearization, and every other revision by
/// a write of unknown outcome (or a lease revoke, whose response does not tell). So a step of
/// unknown output that would make a revision it cannot have made is refused. In the history's
/// own search this prunes nothing a linearization needs (every step of unknown output there is
/// a write of unknown outcome), and it keeps such writes from being tried in every order at
/// every point (without it, a few of them cost seconds on 2,000 operations). When the engine
/// minimises an explanation it sets outcomes aside, and the pruning still takes their
/// responses' revisions as facts: the explanation then holds given those revisions, and
/// [`EtcdReport::render`] says so.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EtcdModel {
    /// Per claimed revision, the operations that claim it (a claimer may make its own revision
    /// even when its outcome is set aside).
    claimed_revisions: BTreeMap<i64, Vec<u64>>,
    /// The operations that may make a revision no response claims: those of unknown outcome.
    /// `None` = any operation may (the plain semantics).
    unclaimed_makers: Option<BTreeSet<u64>>,
}

/// What the engine steps the model with: a history request and the id of its operation (which
/// tells a claimer from another operation with the same request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdInput {
    pub id: u64,
    pub request: Request,
}

impl EtcdModel {
    /// The plain semantics: no claimed revisions.
    pub fn new() -> Self {
        EtcdModel::default()
    }

    /// The semantics with the revisions claimed by the acknowledged writes of `ops`.
    pub fn for_operations(ops: &[EtcdOperation]) -> Self {
        let mut claimed_revisions: BTreeMap<i64, Vec<u64>> = BTreeMap::new();
        let mut unclaimed_makers = BTreeSet::new();
        for op in ops {
            match (&op.ret, &op.output) {
                (Some(_), Some((header, response))) => {
                    if bumped(&op.input.request, response) {
                        claimed_revisions
                            .entry(*header)
                            .or_default()
                            .push(op.input.id);
                    }
                }
                _ => {
                    unclaimed_makers.insert(op.input.id);
                }
            }
        }
        EtcdModel {
            claimed_revisions,
            unclaimed_makers: Some(unclaimed_makers),
        }
    }

    /// Whether an operation of unknown output may make `revision`: a claimed revision only its
    /// claimer; another only an operation of unknown outcome, or a lease revoke (whose response
    /// does not say whether it deleted anything).
    fn may_make(&self, input: &EtcdInput, revision: i64) -> bool {
        match (
            self.claimed_revisions.get(&revision),
            &self.unclaimed_makers,
        ) {
            (Some(claimers), _) => claimers.contains(&input.id),
            (None, None) => true,
            (None, Some(makers)) => {
                matches!(input.request, Request::LeaseRevoke { .. }) || makers.contains(&input.id)
            }
        }
    }
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

/// A history operation as the engine sees it.
pub type EtcdOperation = Operation<EtcdInput, (i64, Response)>;

impl Model for EtcdModel {
    type State = EtcdState;
    type Input = EtcdInput;
    type Output = (i64, Response);

    fn init(&self) -> EtcdState {
        EtcdState::new()
    }

    fn step(
        &self,
        state: &EtcdState,
        input: &EtcdInput,
        output: Option<&(i64, Response)>,
    ) -> Option<EtcdState> {
        let request = &input.request;
        match (request, output) {
            (
                Request::Get {
                    serializable: true, ..
                },
                Some((header, response)),
            ) => {
                let at = read_revision(request, *header);
                if state.revision != at || *header < at {
                    return None;
                }
                let latest = as_latest_read(request);
                let applied = state.apply(&latest, None).ok()?;
                (applied.response == *response).then(|| state.clone())
            }
            // A read of unknown output has no effect (the engine never places it).
            (Request::Get { .. }, None) => Some(state.clone()),
            (Request::Put { .. }, None) if !self.may_make(input, state.revision + 1) => None,
            (_, None) => match state.apply(request, None) {
                Ok(applied)
                    if applied.state.revision != state.revision
                        && !self.may_make(input, applied.state.revision) =>
                {
                    None
                }
                Ok(applied) => Some(applied.state),
                Err(_) => Some(state.clone()),
            },
            (_, Some((header, response))) => {
                // Most candidates the search tries fail on the header revision: check it before
                // applying anything.
                let header_possible = match request {
                    // Its response does not say whether it deleted anything.
                    Request::LeaseRevoke { .. } => *header - state.revision <= 1,
                    _ => *header == state.revision + i64::from(bumped(request, response)),
                };
                if !header_possible || *header < state.revision {
                    return None;
                }
                if let Request::Get { revision: 0, .. } = request {
                    return state.read_matches(request, response).then(|| state.clone());
                }
                let applied = state.apply(request, Some(response)).ok()?;
                (applied.header_revision == *header && applied.response == *response)
                    .then_some(applied.state)
            }
        }
    }

    /// Gets (a serializable one included: it only steps where the state is its revision) and
    /// txns whose branches only read.
    fn is_read_only(&self, input: &EtcdInput) -> bool {
        match &input.request {
            Request::Get { .. } => true,
            Request::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .all(|op| matches!(op, Request::Get { .. })),
            _ => false,
        }
    }

    fn describe(&self, op: &EtcdOperation) -> String {
        let outcome = match (&op.ret, &op.output) {
            (None, _) => "unknown".to_string(),
            (Some(_), None) => "ok (response unknown)".to_string(),
            (Some(_), Some((header, response))) => ok_text(*header, response),
        };
        format!("{} -> {outcome}", request_text(&op.input.request))
    }

    fn describe_state(&self, state: &EtcdState) -> String {
        state_text(state)
    }

    fn describe_partition(&self, _ops: &[EtcdOperation], _partition: &[usize]) -> String {
        "every key: one revision orders them all".to_string()
    }
}

/// The revision whose keyspace a get shows: its own revision, else its header's.
fn read_revision(get: &Request, header: i64) -> i64 {
    match get {
        Request::Get { revision, .. } if *revision > 0 => *revision,
        _ => header,
    }
}

/// The same get, linearizable and at the latest revision.
fn as_latest_read(get: &Request) -> Request {
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

fn is_write(request: &Request) -> bool {
    !matches!(request, Request::Get { .. })
}

// ---------------------------------------------------------------------------------------------
// Words for requests, responses and states.
// ---------------------------------------------------------------------------------------------

fn range_text(key: &str, range_end: Option<&str>) -> String {
    let key_text = key_text(key);
    match range_end {
        None | Some("") => key_text,
        Some("\u{0}") if key == "\u{0}" => "every key".to_string(),
        Some("\u{0}") => format!("{key_text}.."),
        Some(end) => format!("[{key_text}, {})", self::key_text(end)),
    }
}

/// A key as text, control characters escaped.
fn key_text(key: &str) -> String {
    if key.chars().any(char::is_control) {
        key.escape_debug().to_string()
    } else {
        key.to_string()
    }
}

/// A request in words: `put k2=v17`, `get [a, b) @rev 5 serializable`.
pub fn request_text(request: &Request) -> String {
    match request {
        Request::Get {
            key,
            range_end,
            revision,
            limit,
            keys_only,
            serializable,
        } => {
            let mut text = format!("get {}", range_text(key, range_end.as_deref()));
            if *revision != 0 {
                let _ = write!(text, " @rev {revision}");
            }
            if *limit != 0 {
                let _ = write!(text, " limit {limit}");
            }
            if *keys_only {
                text.push_str(" keys-only");
            }
            if *serializable {
                text.push_str(" serializable");
            }
            text
        }
        Request::Put { key, value, lease } => {
            let lease = if *lease != 0 {
                format!(" lease {lease}")
            } else {
                String::new()
            };
            format!("put {key}={value}{lease}")
        }
        Request::Delete { key, range_end } => {
            format!("delete {}", range_text(key, range_end.as_deref()))
        }
        Request::Txn {
            compare,
            success,
            failure,
        } => {
            let list = |ops: &[Request]| {
                if ops.is_empty() {
                    "nothing".to_string()
                } else {
                    ops.iter().map(request_text).collect::<Vec<_>>().join("; ")
                }
            };
            let compares = if compare.is_empty() {
                "true".to_string()
            } else {
                compare
                    .iter()
                    .map(compare_text)
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            format!(
                "txn if {compares} then {} else {}",
                list(success),
                list(failure)
            )
        }
        Request::LeaseGrant { ttl, id } => {
            let id = if *id != 0 {
                format!(" id {id}")
            } else {
                String::new()
            };
            format!("lease-grant ttl {ttl}{id}")
        }
        Request::LeaseRevoke { id } => format!("lease-revoke {id}"),
        Request::Compact { revision } => format!("compact {revision}"),
    }
}

fn compare_text(compare: &Compare) -> String {
    let (target, value) = match &compare.target {
        CompareTarget::Version(v) => ("version", v.to_string()),
        CompareTarget::Create(v) => ("create", v.to_string()),
        CompareTarget::Mod(v) => ("mod", v.to_string()),
        CompareTarget::Value(v) => ("value", format!("{v:?}")),
        CompareTarget::Lease(v) => ("lease", v.to_string()),
    };
    let op = match compare.result {
        CompareResult::Equal => "=",
        CompareResult::NotEqual => "!=",
        CompareResult::Greater => ">",
        CompareResult::Less => "<",
    };
    format!("{} {target} {op} {value}", compare.key)
}

/// A kv in short (`k=v@mod`) or full words.
fn kv_text(kv: &Kv, full: bool) -> String {
    let lease = if kv.lease != 0 {
        format!(" lease {}", kv.lease)
    } else {
        String::new()
    };
    if full {
        format!(
            "{}={} (create {}, mod {}, version {}{lease})",
            key_text(&kv.key),
            kv.value,
            kv.create_revision,
            kv.mod_revision,
            kv.version
        )
    } else {
        format!(
            "{}={}@{}{lease}",
            key_text(&kv.key),
            kv.value,
            kv.mod_revision
        )
    }
}

/// What a response holds, in words (empty for responses that hold nothing).
fn response_text(response: &Response, full: bool) -> String {
    match response {
        Response::Get { kvs, count, more } => {
            let mut text = if kvs.is_empty() {
                "none".to_string()
            } else {
                kvs.iter()
                    .map(|kv| kv_text(kv, full))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if *count != kvs.len() as i64 || *more {
                let _ = write!(
                    text,
                    " (count {count}{})",
                    if *more { ", more" } else { "" }
                );
            }
            text
        }
        Response::Put {} | Response::LeaseRevoke {} | Response::Compact {} => String::new(),
        Response::Delete { deleted } => format!("deleted {deleted}"),
        Response::Txn {
            succeeded,
            responses,
        } => {
            let subs: Vec<String> = responses
                .iter()
                .map(|r| match response_text(r, full) {
                    text if text.is_empty() => "ok".to_string(),
                    text => text,
                })
                .collect();
            format!(
                "{} [{}]",
                if *succeeded { "then" } else { "else" },
                subs.join("; ")
            )
        }
        Response::LeaseGrant { id, ttl } => format!("id {id} ttl {ttl}"),
    }
}

fn ok_text(header: i64, response: &Response) -> String {
    match response_text(response, false) {
        text if text.is_empty() => format!("ok rev {header}"),
        text => format!("ok rev {header}: {text}"),
    }
}

/// A state in words, its first keys only.
fn state_text(state: &EtcdState) -> String {
    const KEYS_SHOWN: usize = 8;
    let mut text = format!("rev {}", state.revision);
    if state.compact_revision > 0 {
        let _ = write!(text, ", compacted at {}", state.compact_revision);
    }
    if state.keyspace.is_empty() {
        text.push_str(", no keys");
    } else {
        let shown: Vec<String> = state
            .keyspace
            .values()
            .take(KEYS_SHOWN)
            .map(|kv| kv_text(kv, false))
            .collect();
        let _ = write!(text, ": {}", shown.join(", "));
        if state.keyspace.len() > KEYS_SHOWN {
            let _ = write!(text, " and {} more keys", state.keyspace.len() - KEYS_SHOWN);
        }
    }
    if !state.leases.is_empty() {
        let ids: Vec<String> = state.leases.keys().map(i64::to_string).collect();
        let _ = write!(text, "; leases {}", ids.join(", "));
    }
    text
}

/// `n` and the noun, in the singular or the plural.
fn counted(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Nanoseconds as seconds, with as many decimals as they need (3, 6 or 9).
fn seconds(ns: u64) -> String {
    let (whole, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac % 1_000_000 == 0 {
        format!("{whole}.{:03}s", frac / 1_000_000)
    } else if frac % 1_000 == 0 {
        format!("{whole}.{:06}s", frac / 1_000)
    } else {
        format!("{whole}.{frac:09}s")
    }
}

// ---------------------------------------------------------------------------------------------
// Checking a whole history.
// ---------------------------------------------------------------------------------------------

/// How many times [`check`] searches again with reads pinned to their revisions before it gives
/// up (each search pins every read found wrong so far, so this bounds the work).
const CONFIRMING_SEARCHES_MAX: usize = 8;

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdReport {
    /// The engine's verdict on the searched operations: writes, linearizable reads, and unknown
    /// writes (each may have taken effect, or not).
    pub linearizability: Verdict,
    /// The verdict on the reads whose data shows a past revision.
    pub revision_reads: RevisionReads,
    pub counts: EtcdCounts,
    /// Things that make a verdict less certain (an assumption of the model that the history
    /// seems to break).
    pub warnings: Vec<String>,
    /// The engine operations (the searched ones, then the pinned reads of the last confirming
    /// search) and where each comes from in the history, for explanations.
    ops: Vec<EtcdOperation>,
    origins: Vec<Origin>,
}

/// The verdict on the reads checked against the keyspace at their revision: serializable
/// reads, reads at a past revision, and reads at a past revision inside txns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionReads {
    /// Every such read shows exactly the keyspace at its revision.
    Consistent,
    /// These reads show something the store never held at their revision. `proof` is the
    /// engine's explanation when unknown writes left the order of revisions open and a search
    /// with the reads pinned to their revisions found no order at all.
    Stale {
        reads: Vec<StaleRead>,
        proof: Option<Violation>,
    },
    /// Not checked (or not decided), and why.
    Unchecked { reason: String },
}

/// A read that does not show the keyspace at its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRead {
    /// The history operation (the txn, for a read inside a txn).
    pub id: u64,
    pub client: u64,
    pub invoke_ns: u64,
    pub complete_ns: Option<u64>,
    /// The read and what it returned, in words.
    pub operation: String,
    /// The revision whose keyspace it must show.
    pub revision: i64,
    /// What the store held there, by the order of operations found (`None` if the revision was
    /// never reached).
    pub expected: Option<Response>,
    pub got: Response,
    /// What is wrong, in words.
    pub reason: String,
    /// Which operations wrote the revisions involved, in words.
    pub notes: Vec<String>,
}

/// How the history's operations were used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EtcdCounts {
    /// Operations in the history.
    pub total: usize,
    /// Failed operations: they certainly took no effect, and are dropped.
    pub failed: usize,
    /// Operations given to the linearizability search.
    pub searched: usize,
    /// Serializable reads: not linearizable, excluded from the search and checked only
    /// against the keyspace at their revision.
    pub excluded: usize,
    /// Reads whose data was checked against the keyspace at their revision (the excluded ones,
    /// linearizable reads at a past revision, and such reads inside txns).
    pub revision_reads: usize,
    /// Operations of unknown outcome.
    pub unknown: usize,
    /// Reads of unknown outcome, dropped: they changed nothing and nothing was seen.
    pub unknown_reads_dropped: usize,
    /// Searches run again with reads pinned to their revisions (needed only when writes of
    /// unknown outcome leave the order of revisions open).
    pub confirming_searches: usize,
}

/// Where an engine operation comes from in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    id: u64,
    client: u64,
    invoke_ns: u64,
    complete_ns: Option<u64>,
    /// For a read pinned to a revision (in a confirming search): the read it stands for and
    /// what is pinned, in words.
    pinned: Option<String>,
}

/// A read whose data is checked against the keyspace at one revision.
#[derive(Debug, Clone)]
struct RevisionRead {
    origin: Origin,
    /// The get (a txn's sub-request, for a read inside a txn).
    request: Request,
    /// Its position in its txn's responses, for a read inside a txn.
    in_txn: Option<usize>,
    /// The header revision of the response (the txn's, for a read inside a txn).
    header: i64,
    response: Response,
    /// The revision whose keyspace it must show.
    at: i64,
    /// A serializable read: the search did not place it, so the existence of its revisions
    /// before it returned is checked here.
    serializable: bool,
}

impl RevisionRead {
    /// The read as operations pinned to revisions for a confirming search, each a serializable
    /// get (see [`EtcdModel`]) that may be placed at any time before the read returned: one for
    /// its data at its revision and, for a serializable read at a past revision, one for its
    /// header revision, which must have been reached by then (a read of an empty range).
    fn pinned(&self) -> Vec<(Origin, EtcdOperation)> {
        let Request::Get {
            key,
            range_end,
            limit,
            keys_only,
            ..
        } = &self.request
        else {
            unreachable!("a revision read is a get");
        };
        let ret = self.origin.complete_ns.unwrap_or(u64::MAX);
        let pin = |request: Request, response: Response, note: String| {
            let origin = Origin {
                pinned: Some(format!("{} ({note})", self.text())),
                ..self.origin.clone()
            };
            let input = EtcdInput {
                id: self.origin.id,
                request,
            };
            (
                origin,
                Operation::completed(self.origin.client, 0, ret, input, (self.header, response)),
            )
        };
        let get = |key: &str, range_end: Option<String>, revision, limit, keys_only| Request::Get {
            key: key.to_string(),
            range_end,
            revision,
            limit,
            keys_only,
            serializable: true,
        };
        let header_is_data = self.serializable && self.at == self.header;
        let data = get(
            key,
            range_end.clone(),
            if header_is_data { 0 } else { self.at },
            *limit,
            *keys_only,
        );
        let mut pinned = vec![pin(
            data,
            self.response.clone(),
            format!("its data pinned to revision {}", self.at),
        )];
        if self.serializable && !header_is_data {
            // "\u{1}" to itself is an empty range: this only pins the revision.
            let marker = get("\u{1}", Some("\u{1}".to_string()), self.header, 0, false);
            let nothing = Response::Get {
                kvs: Vec::new(),
                count: 0,
                more: false,
            };
            let note = format!(
                "its header revision {} reached before it returned",
                self.header
            );
            pinned.push(pin(marker, nothing, note));
        }
        pinned
    }

    fn text(&self) -> String {
        let read = format!(
            "{} -> {}",
            request_text(&self.request),
            ok_text(self.header, &self.response)
        );
        match self.in_txn {
            Some(i) => format!("read {} of its txn: {read}", i + 1),
            None => read,
        }
    }
}

/// The history, ready for the engine.
#[derive(Debug)]
struct Prepared {
    ops: Vec<EtcdOperation>,
    origins: Vec<Origin>,
    revision_reads: Vec<RevisionRead>,
    counts: EtcdCounts,
    warnings: Vec<String>,
}

/// Judges an etcd history: the writes and linearizable reads must be linearizable under etcd v3
/// semantics ([`EtcdModel`]), and every read that may show a past revision must show exactly
/// the keyspace at that revision, reconstructed from the order the search found.
///
/// Failed operations are dropped (they took no effect), and so are reads of unknown outcome.
/// The budget bounds every search (the first, and the confirming ones that pin reads to their
/// revisions when writes of unknown outcome leave the order of revisions open); a search that
/// runs out answers unknown, never a violation.
pub fn check(history: &History, budget: Budget) -> EtcdReport {
    let mut prepared = prepare(history);
    let model = EtcdModel::for_operations(&prepared.ops);
    let linearizability = linearizability::check(&model, &prepared.ops, &budget);
    let revision_reads = match &linearizability {
        Verdict::Linearizable(witness) => {
            let order: Vec<usize> = witness.order.iter().flatten().copied().collect();
            check_revision_reads(&model, &mut prepared, &order, &budget)
        }
        Verdict::NotLinearizable(_) if prepared.revision_reads.is_empty() => {
            RevisionReads::Consistent
        }
        Verdict::NotLinearizable(_) => RevisionReads::Unchecked {
            reason:
                "the searched operations are not linearizable, so no order of revisions is known"
                    .to_string(),
        },
        Verdict::Unknown(_) if prepared.revision_reads.is_empty() => RevisionReads::Consistent,
        Verdict::Unknown(_) => RevisionReads::Unchecked {
            reason: "the search ran out of budget before it found an order of revisions"
                .to_string(),
        },
    };
    EtcdReport {
        linearizability,
        revision_reads,
        counts: prepared.counts,
        warnings: prepared.warnings,
        ops: prepared.ops,
        origins: prepared.origins,
    }
}

fn prepare(history: &History) -> Prepared {
    let mut prepared = Prepared {
        ops: Vec::new(),
        origins: Vec::new(),
        revision_reads: Vec::new(),
        counts: EtcdCounts {
            total: history.operations.len(),
            ..EtcdCounts::default()
        },
        warnings: Vec::new(),
    };
    for op in &history.operations {
        let ret = match op.complete_ns {
            Some(done) if done < op.invoke_ns => {
                prepared.warnings.push(format!(
                    "operation {} completes at {} ns, before its invocation at {} ns: taken as \
                     completing at its invocation",
                    op.id, done, op.invoke_ns
                ));
                Some(op.invoke_ns)
            }
            other => other,
        };
        let origin = Origin {
            id: op.id,
            client: op.client,
            invoke_ns: op.invoke_ns,
            complete_ns: ret,
            pinned: None,
        };
        let (header, response) = match &op.outcome {
            history::Outcome::Failed { .. } => {
                prepared.counts.failed += 1;
                continue;
            }
            Outcome::Unknown => {
                prepared.counts.unknown += 1;
                if is_write(&op.request) {
                    prepared.ops.push(Operation::unknown(
                        op.client,
                        op.invoke_ns,
                        EtcdInput {
                            id: op.id,
                            request: op.request.clone(),
                        },
                    ));
                    prepared.origins.push(origin);
                } else {
                    prepared.counts.unknown_reads_dropped += 1;
                }
                continue;
            }
            Outcome::Ok { revision, response } => (*revision, response),
        };
        // An ok outcome without a completion time returned at some unknown point.
        let ret = ret.unwrap_or(u64::MAX);
        let read = |request: &Request, response: &Response, in_txn, serializable| RevisionRead {
            origin: origin.clone(),
            request: request.clone(),
            in_txn,
            header,
            response: response.clone(),
            at: read_revision(request, header),
            serializable,
        };
        match &op.request {
            Request::Get {
                serializable: true, ..
            } => {
                prepared.counts.excluded += 1;
                prepared
                    .revision_reads
                    .push(read(&op.request, response, None, true));
                continue;
            }
            Request::Get { revision, .. } if *revision > 0 => {
                prepared
                    .revision_reads
                    .push(read(&op.request, response, None, false));
            }
            Request::Txn {
                success, failure, ..
            } => {
                if let Response::Txn {
                    succeeded,
                    responses,
                } = response
                {
                    let branch = if *succeeded { success } else { failure };
                    for (i, (sub, sub_response)) in branch.iter().zip(responses).enumerate() {
                        if matches!(sub, Request::Get { revision, .. } if *revision > 0) {
                            prepared
                                .revision_reads
                                .push(read(sub, sub_response, Some(i), false));
                        }
                    }
                }
            }
            _ => {}
        }
        prepared.ops.push(Operation::completed(
            op.client,
            op.invoke_ns,
            ret,
            EtcdInput {
                id: op.id,
                request: op.request.clone(),
            },
            (header, response.clone()),
        ));
        prepared.origins.push(origin);
    }
    prepared.counts.searched = prepared.ops.len();
    prepared.counts.revision_reads = prepared.revision_reads.len();
    prepared.warnings.extend(lease_warnings(history));
    prepared
}

/// Leases that lived longer than their TTL in the history: if one expired, its keys were
/// deleted at a revision no operation accounts for, which the model does not know of.
fn lease_warnings(history: &History) -> Vec<String> {
    let end_ns = history
        .operations
        .iter()
        .map(|op| op.complete_ns.unwrap_or(op.invoke_ns).max(op.invoke_ns))
        .max()
        .unwrap_or(0);
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
        let revoked_ns = history
            .operations
            .iter()
            .filter(
                |op| matches!(op.request, Request::LeaseRevoke { id: revoked } if revoked == id),
            )
            .filter(|op| matches!(op.outcome, Outcome::Ok { .. }))
            .filter_map(|op| op.complete_ns)
            .min()
            .unwrap_or(end_ns);
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

/// The keyspace at every revision, reconstructed from a legal order of the operations.
#[derive(Debug)]
struct Timeline {
    last_revision: i64,
    /// Per key, its changes in revision order: the kv written, or `None` for a deletion.
    changes: BTreeMap<String, Vec<(i64, Option<Kv>)>>,
    /// `writers[r - 2]` is the engine operation that made revision `r`.
    writers: Vec<usize>,
}

impl Timeline {
    fn build(model: &EtcdModel, ops: &[EtcdOperation], order: &[usize]) -> Timeline {
        let mut timeline = Timeline {
            last_revision: 1,
            changes: BTreeMap::new(),
            writers: Vec::new(),
        };
        let mut state = model.init();
        for &i in order {
            let op = &ops[i];
            let output = if op.ret.is_some() {
                op.output.as_ref()
            } else {
                None
            };
            let next = model
                .step(&state, &op.input, output)
                .expect("the engine's order replays");
            if next.revision != state.revision {
                assert_eq!(
                    next.revision,
                    state.revision + 1,
                    "a step bumped the revision twice"
                );
                timeline.writers.push(i);
                timeline.record(&state.keyspace, &next.keyspace, next.revision);
            }
            state = next;
        }
        state.check_invariants();
        timeline.last_revision = state.revision;
        assert_eq!(timeline.writers.len() as i64, timeline.last_revision - 1);
        timeline
    }

    /// Records what changed between two keyspaces at `revision`.
    fn record(
        &mut self,
        before: &Arc<BTreeMap<String, Kv>>,
        after: &Arc<BTreeMap<String, Kv>>,
        revision: i64,
    ) {
        if Arc::ptr_eq(before, after) {
            return;
        }
        let (mut old, mut new) = (before.iter().peekable(), after.iter().peekable());
        loop {
            let change = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some((key, _)), None) => {
                    let change = ((*key).clone(), None);
                    old.next();
                    change
                }
                (None, Some((key, kv))) => {
                    let change = ((*key).clone(), Some((*kv).clone()));
                    new.next();
                    change
                }
                (Some((old_key, old_kv)), Some((new_key, new_kv))) => match old_key.cmp(new_key) {
                    std::cmp::Ordering::Less => {
                        let change = ((*old_key).clone(), None);
                        old.next();
                        change
                    }
                    std::cmp::Ordering::Greater => {
                        let change = ((*new_key).clone(), Some((*new_kv).clone()));
                        new.next();
                        change
                    }
                    std::cmp::Ordering::Equal => {
                        let change = (old_kv != new_kv)
                            .then(|| ((*new_key).clone(), Some((*new_kv).clone())));
                        old.next();
                        new.next();
                        match change {
                            Some(change) => change,
                            None => continue,
                        }
                    }
                },
            };
            let (key, kv) = change;
            if let Some(kv) = &kv {
                assert_eq!(
                    kv.mod_revision, revision,
                    "a changed key carries its revision"
                );
            }
            self.changes.entry(key).or_default().push((revision, kv));
        }
    }

    /// The live kvs of an etcd range at `revision`, in key order.
    fn range_at<'a>(
        &'a self,
        start: &'a str,
        end: Option<&'a str>,
        revision: i64,
    ) -> impl Iterator<Item = &'a Kv> + 'a {
        self.changes
            .range::<str, _>(bounds(start, end))
            .filter_map(move |(_, changes)| {
                let n = changes.partition_point(|(r, _)| *r <= revision);
                n.checked_sub(1).and_then(|last| changes[last].1.as_ref())
            })
    }

    /// The engine operation that made `revision`.
    fn writer(&self, revision: i64) -> Option<usize> {
        let at = usize::try_from(revision.checked_sub(2)?).ok()?;
        self.writers.get(at).copied()
    }
}

/// Checks every revision read against `timeline`; returns the wrong ones with their index.
fn stale_reads(
    model: &EtcdModel,
    timeline: &Timeline,
    ops: &[EtcdOperation],
    origins: &[Origin],
    reads: &[RevisionRead],
) -> Vec<(usize, StaleRead)> {
    reads
        .iter()
        .enumerate()
        .filter_map(|(i, read)| {
            stale_read(model, timeline, ops, origins, read).map(|stale| (i, stale))
        })
        .collect()
}

fn stale_read(
    model: &EtcdModel,
    timeline: &Timeline,
    ops: &[EtcdOperation],
    origins: &[Origin],
    read: &RevisionRead,
) -> Option<StaleRead> {
    let Request::Get {
        key,
        range_end,
        limit,
        keys_only,
        ..
    } = &read.request
    else {
        unreachable!("a revision read is a get");
    };
    let last = timeline.last_revision;
    let complete_ns = read.origin.complete_ns.unwrap_or(u64::MAX);
    let writer_text = |revision: i64| -> Option<String> {
        let w = timeline.writer(revision)?;
        Some(format!(
            "revision {revision} was written by {}",
            op_line(model, &ops[w], &origins[w])
        ))
    };
    let mut notes = Vec::new();
    let (reason, expected) = if read.at > last {
        (
            format!(
                "it shows revision {}, which was never reached (the last is {last})",
                read.at
            ),
            None,
        )
    } else {
        let expected = get_response(
            timeline.range_at(key, range_end.as_deref(), read.at),
            *limit,
            *keys_only,
        );
        // A serializable read's revision and header revision must both exist before it returns
        // (a member applied them): their writes cannot begin after it.
        let late_writer = [read.at, read.header].into_iter().find_map(|revision| {
            let w = timeline.writer(revision)?;
            (ops[w].call > complete_ns).then_some((revision, w))
        });
        let reason = if read.serializable && read.header < read.at {
            Some(format!(
                "its header revision {} is below the revision {} it read",
                read.header, read.at
            ))
        } else if read.serializable && read.header > last {
            Some(format!(
                "its header revision {} was never reached (the last is {last})",
                read.header
            ))
        } else if let (true, Some((revision, w))) = (read.serializable, late_writer) {
            notes.extend(writer_text(revision));
            let shows = if revision == read.at {
                "it shows"
            } else {
                "its header is"
            };
            Some(format!(
                "{shows} revision {revision}, whose write was invoked at {}, after this read \
                 returned",
                seconds(ops[w].call)
            ))
        } else if expected != read.response {
            notes.extend(
                differing_revisions(&expected, &read.response)
                    .into_iter()
                    .filter_map(writer_text),
            );
            Some(format!(
                "it does not show the keyspace at revision {}",
                read.at
            ))
        } else {
            None
        };
        (reason?, Some(expected))
    };
    Some(StaleRead {
        id: read.origin.id,
        client: read.origin.client,
        invoke_ns: read.origin.invoke_ns,
        complete_ns: read.origin.complete_ns,
        operation: read.text(),
        revision: read.at,
        expected,
        got: read.response.clone(),
        reason,
        notes,
    })
}

/// The mod revisions of the kvs on which two get responses differ (the first few).
fn differing_revisions(expected: &Response, got: &Response) -> Vec<i64> {
    let (Response::Get { kvs: want, .. }, Response::Get { kvs: have, .. }) = (expected, got) else {
        return Vec::new();
    };
    let mut revisions = BTreeSet::new();
    for kv in want
        .iter()
        .filter(|kv| !have.contains(kv))
        .chain(have.iter().filter(|kv| !want.contains(kv)))
    {
        revisions.insert(kv.mod_revision);
    }
    revisions.into_iter().take(3).collect()
}

/// Checks the revision reads against the order `order` found by the first search; when unknown
/// writes leave the order of revisions open, confirms each wrong read with a search that pins
/// it to its revision.
fn check_revision_reads(
    model: &EtcdModel,
    prepared: &mut Prepared,
    order: &[usize],
    budget: &Budget,
) -> RevisionReads {
    if prepared.revision_reads.is_empty() {
        return RevisionReads::Consistent;
    }
    let timeline = Timeline::build(model, &prepared.ops, order);
    let mut stale = stale_reads(
        model,
        &timeline,
        &prepared.ops,
        &prepared.origins,
        &prepared.revision_reads,
    );
    if stale.is_empty() {
        return RevisionReads::Consistent;
    }
    // With every write's outcome known, each revision's write is fixed by its header, so the
    // keyspace at each revision is the same in every legal order: the reads are wrong.
    let open = prepared
        .ops
        .iter()
        .any(|op| op.ret.is_none() && is_write(&op.input.request));
    if !open {
        return RevisionReads::Stale {
            reads: stale.into_iter().map(|(_, s)| s).collect(),
            proof: None,
        };
    }
    let searched = prepared.ops.len();
    let mut pinned: BTreeSet<usize> = BTreeSet::new();
    for _ in 0..CONFIRMING_SEARCHES_MAX {
        let before = pinned.len();
        pinned.extend(stale.iter().map(|(i, _)| *i));
        assert!(
            pinned.len() > before,
            "a read pinned to its revision was found wrong again"
        );
        prepared.ops.truncate(searched);
        prepared.origins.truncate(searched);
        for &i in &pinned {
            for (origin, op) in prepared.revision_reads[i].pinned() {
                prepared.ops.push(op);
                prepared.origins.push(origin);
            }
        }
        prepared.counts.confirming_searches += 1;
        match linearizability::check(model, &prepared.ops, budget) {
            Verdict::NotLinearizable(proof) => {
                return RevisionReads::Stale {
                    reads: stale.into_iter().map(|(_, s)| s).collect(),
                    proof: Some(proof),
                };
            }
            Verdict::Unknown(_) => {
                return RevisionReads::Unchecked {
                    reason: format!(
                        "{} reads do not show their revision in the order found first, and the \
                         search for another order (writes of unknown outcome may fall elsewhere) \
                         ran out of budget",
                        pinned.len()
                    ),
                };
            }
            Verdict::Linearizable(witness) => {
                let order: Vec<usize> = witness.order.iter().flatten().copied().collect();
                let timeline = Timeline::build(model, &prepared.ops, &order);
                stale = stale_reads(
                    model,
                    &timeline,
                    &prepared.ops,
                    &prepared.origins,
                    &prepared.revision_reads,
                );
                if stale.is_empty() {
                    return RevisionReads::Consistent;
                }
            }
        }
    }
    RevisionReads::Unchecked {
        reason: format!(
            "gave up after {CONFIRMING_SEARCHES_MAX} searches with reads pinned to their revisions"
        ),
    }
}

/// A range of keys `[start, end)` (`end` `None` = unbounded), for finding related operations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval {
    start: String,
    end: Option<String>,
}

impl Interval {
    fn new(key: &str, range_end: Option<&str>) -> Interval {
        let end = match range_end {
            // The key followed by NUL is the least key after it.
            None | Some("") => Some(format!("{key}\u{0}")),
            Some("\u{0}") => None,
            Some(end) => Some(end.to_string()),
        };
        Interval {
            start: key.to_string(),
            end,
        }
    }

    fn everything() -> Interval {
        Interval {
            start: String::new(),
            end: None,
        }
    }

    fn overlaps(&self, other: &Interval) -> bool {
        let before =
            |start: &str, end: &Option<String>| end.as_deref().is_none_or(|end| start < end);
        before(&self.start, &other.end) && before(&other.start, &self.end)
    }
}

/// The keys a request reads or writes (a revoke: any key).
fn intervals(request: &Request) -> Vec<Interval> {
    match request {
        Request::Get { key, range_end, .. } | Request::Delete { key, range_end } => {
            vec![Interval::new(key, range_end.as_deref())]
        }
        Request::Put { key, .. } => vec![Interval::new(key, None)],
        Request::Txn {
            compare,
            success,
            failure,
        } => compare
            .iter()
            .map(|c| Interval::new(&c.key, None))
            .chain(success.iter().chain(failure).flat_map(intervals))
            .collect(),
        Request::LeaseRevoke { .. } => vec![Interval::everything()],
        Request::LeaseGrant { .. } | Request::Compact { .. } => Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The report in words.
// ---------------------------------------------------------------------------------------------

/// The overall judgement of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// Linearizable, and every read at a revision shows it.
    Pass,
    /// A violation: not linearizable, or a stale read.
    Fail,
    /// Not decided within the budget, and no violation found.
    Unknown,
}

impl EtcdReport {
    pub fn judgement(&self) -> Judgement {
        match (&self.linearizability, &self.revision_reads) {
            (Verdict::NotLinearizable(_), _) | (_, RevisionReads::Stale { .. }) => Judgement::Fail,
            (Verdict::Linearizable(_), RevisionReads::Consistent) => Judgement::Pass,
            _ => Judgement::Unknown,
        }
    }

    pub fn passed(&self) -> bool {
        self.judgement() == Judgement::Pass
    }

    /// The stale reads found, if any.
    pub fn stale_reads(&self) -> &[StaleRead] {
        match &self.revision_reads {
            RevisionReads::Stale { reads, .. } => reads,
            _ => &[],
        }
    }

    /// The report in words for people: the verdict, what was checked, and for a violation the
    /// operations involved, by history id, client and time.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let headline = match (&self.linearizability, &self.revision_reads) {
            (Verdict::NotLinearizable(_), _) => "etcd: NOT LINEARIZABLE".to_string(),
            (_, RevisionReads::Stale { reads, .. }) => {
                format!(
                    "etcd: STALE READS: {} not show the keyspace at {} revision",
                    counted(reads.len(), "read does", "reads do"),
                    if reads.len() == 1 { "its" } else { "their" }
                )
            }
            (Verdict::Unknown(_), _) => "etcd: UNKNOWN: the search ran out of budget".to_string(),
            (_, RevisionReads::Unchecked { .. }) => {
                "etcd: UNKNOWN: linearizable, but the reads at a revision are not decided"
                    .to_string()
            }
            (Verdict::Linearizable(_), RevisionReads::Consistent) => {
                "etcd: linearizable, and every read at a revision shows that revision".to_string()
            }
        };
        let c = &self.counts;
        let _ = writeln!(text, "{headline}");
        let _ = writeln!(
            text,
            "{}: {} searched, {} excluded, {} checked at a revision, {} of unknown outcome \
             ({} dropped), {} failed and dropped",
            counted(c.total, "operation", "operations"),
            c.searched,
            counted(c.excluded, "serializable read", "serializable reads"),
            counted(c.revision_reads, "read", "reads"),
            c.unknown,
            counted(c.unknown_reads_dropped, "read", "reads"),
            c.failed
        );
        match &self.linearizability {
            Verdict::NotLinearizable(violation) => {
                text.push_str(&render_violation(violation, &self.ops, &self.origins));
            }
            Verdict::Unknown(undecided) => text.push_str(&undecided.render()),
            Verdict::Linearizable(_) => {}
        }
        match &self.revision_reads {
            RevisionReads::Stale { reads, proof } => {
                for read in reads {
                    text.push_str(&render_stale_read(read));
                }
                if let Some(proof) = proof {
                    text.push_str(
                        "no order of the operations explains these reads, wherever the writes of \
                         unknown outcome fall:\n",
                    );
                    text.push_str(&render_violation(proof, &self.ops, &self.origins));
                }
            }
            RevisionReads::Unchecked { reason } if !self.linearizability.is_not_linearizable() => {
                let _ = writeln!(text, "reads at a revision not checked: {reason}");
            }
            _ => {}
        }
        for warning in &self.warnings {
            let _ = writeln!(text, "warning: {warning}");
        }
        text
    }
}

/// An operation in one line: history id, client, times, request and outcome.
fn op_line(model: &EtcdModel, op: &EtcdOperation, origin: &Origin) -> String {
    origin_line(origin, &model.describe(op))
}

/// One line for an operation from where it comes from and its model's words: a read pinned to
/// a revision is shown as the read it stands for, not as its serializable stand-in.
fn origin_line(origin: &Origin, description: &str) -> String {
    let done = origin.complete_ns.map_or_else(|| "?".to_string(), seconds);
    let description = match &origin.pinned {
        Some(read) => read.clone(),
        None => description.to_string(),
    };
    format!(
        "op {} client {} [{}..{done}] {description}",
        origin.id,
        origin.client,
        seconds(origin.invoke_ns)
    )
}

/// One operation of a violation in a line; `set_aside` lists the operations whose known outcome
/// the explanation set aside.
fn summary_line(summary: &OpSummary, origins: &[Origin], set_aside: &BTreeSet<usize>) -> String {
    let note = if summary.ret.is_none() {
        "  (never returned)"
    } else if set_aside.contains(&summary.index) {
        "  (outcome set aside)"
    } else {
        ""
    };
    format!(
        "{}{note}",
        origin_line(&origins[summary.index], &summary.description)
    )
}

/// The engine's violation in words, naming operations by history id and times in seconds. Of
/// the context, only operations on the core's keys are listed (the latest few).
fn render_violation(violation: &Violation, ops: &[EtcdOperation], origins: &[Origin]) -> String {
    const PREFIX_SHOWN: usize = 12;
    const CONTEXT_SHOWN: usize = 12;
    let set_aside: BTreeSet<usize> = violation
        .context
        .iter()
        .filter(|op| op.ret.is_some())
        .map(|op| op.index)
        .collect();
    let line = |op: &OpSummary| summary_line(op, origins, &set_aside);
    let mut text = String::new();
    const CORE_SHOWN: usize = 24;
    let _ = writeln!(
        text,
        "{} cannot all have taken effect as observed{}",
        counted(violation.core.len(), "operation", "operations"),
        match (violation.minimal, violation.core.len() > CORE_SHOWN) {
            (true, _) => {
                " (minimal: setting aside the outcome of any one of them makes the rest \
                 linearizable):"
            }
            (false, false) => " (not minimised):",
            (false, true) => " (not minimised: see below where the search got stuck).",
        }
    );
    if violation.core.len() <= CORE_SHOWN {
        for op in &violation.core {
            let _ = writeln!(text, "  {}", line(op));
        }
    }
    if !violation.context.is_empty() {
        let core_ranges: Vec<Interval> = violation
            .core
            .iter()
            .flat_map(|op| intervals(&ops[op.index].input.request))
            .collect();
        let relevant: Vec<&OpSummary> = violation
            .context
            .iter()
            .filter(|op| {
                intervals(&ops[op.index].input.request)
                    .iter()
                    .any(|range| core_ranges.iter().any(|core| range.overlaps(core)))
            })
            .collect();
        let shown = &relevant[relevant.len().saturating_sub(CONTEXT_SHOWN)..];
        let _ =
            writeln!(
            text,
            "given {}, each of unknown outcome (it may have taken effect at any time after its \
             call, or never){}",
            counted(violation.context.len(), "other operation", "other operations"),
            if shown.len() == violation.context.len() {
                ":".to_string()
            } else if shown.is_empty() {
                "; none of them touches the keys above.".to_string()
            } else {
                format!("; the latest {} on the keys above:", shown.len())
            }
        );
        for op in shown {
            let _ = writeln!(text, "  {}", line(op));
        }
        if violation.context.iter().any(|op| op.ret.is_some()) {
            let _ = writeln!(
                text,
                "(an outcome set aside still counts for revisions: each revision is written, if at \
                 all, by the operation whose response reports it, any other by an operation of \
                 unknown outcome)"
            );
        }
    }
    if let (Some(cutoff), true) = (violation.cutoff, violation.left_out > 0) {
        let _ = writeln!(
            text,
            "{} invoked after {} left out: they cannot change what happened before.",
            counted(violation.left_out, "operation", "operations"),
            seconds(cutoff)
        );
    }
    let _ = write!(
        text,
        "the longest order the model accepts has {}",
        counted(violation.prefix.len(), "operation", "operations")
    );
    if violation.prefix.len() > PREFIX_SHOWN {
        let _ = writeln!(text, "; its last {PREFIX_SHOWN}:");
    } else {
        text.push_str(if violation.prefix.is_empty() {
            ".\n"
        } else {
            ":\n"
        });
    }
    let skip = violation.prefix.len().saturating_sub(PREFIX_SHOWN);
    for (n, step) in violation.prefix.iter().enumerate().skip(skip) {
        let _ = writeln!(text, "  {:>3}. {}", n + 1, line(&step.op));
    }
    let _ = writeln!(
        text,
        "then real time requires one of these next, and each is illegal in state {}:",
        violation.stuck_state
    );
    for op in &violation.stuck {
        let _ = writeln!(text, "  {}", line(op));
    }
    text
}

fn render_stale_read(read: &StaleRead) -> String {
    let mut text = String::new();
    let done = read.complete_ns.map_or_else(|| "?".to_string(), seconds);
    let _ = writeln!(
        text,
        "stale read: op {} client {} [{}..{done}] {}",
        read.id,
        read.client,
        seconds(read.invoke_ns),
        read.operation
    );
    let _ = writeln!(text, "  {}", read.reason);
    if let Some(expected) = &read.expected {
        // Short words for both, unless they hide the difference.
        let full = response_text(expected, false) == response_text(&read.got, false);
        let _ = writeln!(
            text,
            "  at revision {} the store held: {}",
            read.revision,
            response_text(expected, full)
        );
        let _ = writeln!(
            text,
            "  the read returned:           {}",
            response_text(&read.got, full)
        );
    }
    for note in &read.notes {
        let _ = writeln!(text, "  {note}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(request: Request) -> EtcdInput {
        EtcdInput { id: 0, request }
    }

    fn put(key: &str, value: &str) -> Request {
        Request::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    fn put_lease(key: &str, value: &str, lease: i64) -> Request {
        Request::Put {
            key: key.into(),
            value: value.into(),
            lease,
        }
    }

    fn get(key: &str, range_end: Option<&str>) -> Request {
        Request::Get {
            key: key.into(),
            range_end: range_end.map(str::to_string),
            revision: 0,
            limit: 0,
            keys_only: false,
            serializable: false,
        }
    }

    fn delete(key: &str, range_end: Option<&str>) -> Request {
        Request::Delete {
            key: key.into(),
            range_end: range_end.map(str::to_string),
        }
    }

    fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64) -> Kv {
        Kv {
            key: key.into(),
            value: value.into(),
            create_revision: create,
            mod_revision: modified,
            version,
            lease: 0,
        }
    }

    fn got(kvs: Vec<Kv>) -> Response {
        let count = kvs.len() as i64;
        Response::Get {
            kvs,
            count,
            more: false,
        }
    }

    /// Applies requests in order, each of which must be accepted.
    fn run(requests: &[Request]) -> (EtcdState, Vec<(i64, Response)>) {
        let mut state = EtcdState::new();
        let mut outputs = Vec::new();
        for request in requests {
            let applied = state
                .apply(request, None)
                .unwrap_or_else(|e| panic!("{request:?}: {e:?}"));
            applied.state.check_invariants();
            outputs.push((applied.header_revision, applied.response));
            state = applied.state;
        }
        (state, outputs)
    }

    #[test]
    fn puts_bump_the_revision_and_track_create_mod_and_version() {
        let (state, outputs) = run(&[
            put("a", "1"),
            put("a", "2"),
            delete("a", None),
            put("a", "3"),
        ]);
        assert_eq!(outputs[0], (2, Response::Put {}));
        assert_eq!(outputs[1], (3, Response::Put {}));
        assert_eq!(outputs[2], (4, Response::Delete { deleted: 1 }));
        assert_eq!(outputs[3], (5, Response::Put {}));
        assert_eq!(state.revision(), 5);
        // A delete ends the key's generation: the next put starts again at version 1.
        assert_eq!(state.keyspace()["a"], kv("a", "3", 5, 5, 1));
    }

    #[test]
    fn a_delete_of_nothing_and_a_read_do_not_bump() {
        let (state, outputs) = run(&[put("a", "1"), delete("b", None), get("a", None)]);
        assert_eq!(outputs[1], (2, Response::Delete { deleted: 0 }));
        assert_eq!(outputs[2], (2, got(vec![kv("a", "1", 2, 2, 1)])));
        assert_eq!(state.revision(), 2);
    }

    #[test]
    fn ranges_single_key_from_key_and_half_open() {
        let (state, _) = run(&[put("a", "1"), put("b", "2"), put("c", "3")]);
        let keys = |request: Request| match state.apply(&request, None).unwrap().response {
            Response::Get { kvs, .. } => kvs.into_iter().map(|kv| kv.key).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(keys(get("b", None)), ["b"]);
        assert_eq!(keys(get("b", Some(""))), ["b"]);
        assert_eq!(keys(get("b", Some("\u{0}"))), ["b", "c"]);
        assert_eq!(keys(get("a", Some("c"))), ["a", "b"]);
        assert_eq!(keys(get("c", Some("a"))), Vec::<String>::new());
        assert_eq!(keys(get("\u{0}", Some("\u{0}"))), ["a", "b", "c"]);
        let (_, outputs) = run(&[
            put("a", "1"),
            put("b", "2"),
            put("c", "3"),
            delete("a", Some("c")),
        ]);
        assert_eq!(outputs[3], (5, Response::Delete { deleted: 2 }));
    }

    #[test]
    fn limit_counts_every_match_and_keys_only_drops_values() {
        let (state, _) = run(&[put("a", "1"), put("b", "2"), put("c", "3")]);
        let request = Request::Get {
            key: "a".into(),
            range_end: Some("\u{0}".into()),
            revision: 0,
            limit: 2,
            keys_only: true,
            serializable: false,
        };
        let applied = state.apply(&request, None).unwrap();
        assert_eq!(
            applied.response,
            Response::Get {
                kvs: vec![kv("a", "", 2, 2, 1), kv("b", "", 3, 3, 1)],
                count: 3,
                more: true
            }
        );
    }

    fn cas(key: &str, target: CompareTarget, result: CompareResult) -> Request {
        Request::Txn {
            compare: vec![Compare {
                key: key.into(),
                result,
                target,
            }],
            success: vec![put(key, "new"), get(key, None)],
            failure: vec![get(key, None)],
        }
    }

    fn succeeded(state: &EtcdState, request: &Request) -> bool {
        match state.apply(request, None).unwrap().response {
            Response::Txn { succeeded, .. } => succeeded,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn txn_compares_on_a_missing_key_see_zero_and_every_value_compare_fails() {
        let empty = EtcdState::new();
        assert!(succeeded(
            &empty,
            &cas("k", CompareTarget::Version(0), CompareResult::Equal)
        ));
        assert!(succeeded(
            &empty,
            &cas("k", CompareTarget::Create(0), CompareResult::Equal)
        ));
        assert!(succeeded(
            &empty,
            &cas("k", CompareTarget::Mod(1), CompareResult::Less)
        ));
        assert!(succeeded(
            &empty,
            &cas("k", CompareTarget::Lease(0), CompareResult::Equal)
        ));
        for result in [
            CompareResult::Equal,
            CompareResult::NotEqual,
            CompareResult::Greater,
            CompareResult::Less,
        ] {
            assert!(!succeeded(
                &empty,
                &cas("k", CompareTarget::Value(String::new()), result)
            ));
        }
        let (state, _) = run(&[put("k", "b")]);
        assert!(succeeded(
            &state,
            &cas(
                "k",
                CompareTarget::Value("a".into()),
                CompareResult::Greater
            )
        ));
        assert!(succeeded(
            &state,
            &cas("k", CompareTarget::Value("b".into()), CompareResult::Equal)
        ));
        assert!(succeeded(
            &state,
            &cas("k", CompareTarget::Mod(2), CompareResult::Equal)
        ));
        assert!(!succeeded(
            &state,
            &cas("k", CompareTarget::Version(1), CompareResult::NotEqual)
        ));
    }

    #[test]
    fn a_txn_bumps_once_and_its_reads_see_its_earlier_writes() {
        let (state, _) = run(&[put("k", "old")]);
        let txn = Request::Txn {
            compare: vec![Compare {
                key: "k".into(),
                result: CompareResult::Equal,
                target: CompareTarget::Value("old".into()),
            }],
            success: vec![
                get("k", None),
                put("k", "new"),
                put("j", "x"),
                get("j", Some("l")),
            ],
            failure: vec![],
        };
        let applied = state.apply(&txn, None).unwrap();
        assert_eq!(applied.header_revision, 3);
        assert_eq!(
            applied.response,
            Response::Txn {
                succeeded: true,
                responses: vec![
                    got(vec![kv("k", "old", 2, 2, 1)]),
                    Response::Put {},
                    Response::Put {},
                    got(vec![kv("j", "x", 3, 3, 1), kv("k", "new", 2, 3, 2)]),
                ],
            }
        );
        // A txn whose branch only reads changes nothing.
        let read_only = Request::Txn {
            compare: vec![],
            success: vec![get("k", None)],
            failure: vec![],
        };
        assert_eq!(state.apply(&read_only, None).unwrap().header_revision, 2);
    }

    #[test]
    fn a_txn_writing_a_key_twice_is_refused() {
        let twice = Request::Txn {
            compare: vec![],
            success: vec![put("k", "1"), put("k", "2")],
            failure: vec![],
        };
        assert_eq!(
            EtcdState::new().apply(&twice, None),
            Err(Refusal::DuplicateKey)
        );
        let covered = Request::Txn {
            compare: vec![],
            success: vec![],
            failure: vec![delete("a", Some("z")), put("k", "2")],
        };
        assert_eq!(
            EtcdState::new().apply(&covered, None),
            Err(Refusal::DuplicateKey)
        );
        let nested = Request::Txn {
            compare: vec![],
            success: vec![Request::Compact { revision: 1 }],
            failure: vec![],
        };
        assert_eq!(
            EtcdState::new().apply(&nested, None),
            Err(Refusal::NotATxnOp)
        );
    }

    #[test]
    fn leases_attach_keys_and_a_revoke_deletes_them_in_one_revision() {
        let (state, outputs) = run(&[
            Request::LeaseGrant { ttl: 60, id: 7 },
            put_lease("a", "1", 7),
            put_lease("b", "2", 7),
            put("c", "3"),
            put_lease("c", "4", 7),
            put("b", "5"),
        ]);
        assert_eq!(outputs[0], (1, Response::LeaseGrant { id: 7, ttl: 60 }));
        assert_eq!(
            state.leases()[&7].keys,
            BTreeSet::from(["a".to_string(), "c".to_string()])
        );
        let revoked = state.apply(&Request::LeaseRevoke { id: 7 }, None).unwrap();
        assert_eq!(revoked.header_revision, 7);
        assert_eq!(revoked.state.keyspace().keys().collect::<Vec<_>>(), ["b"]);
        assert!(revoked.state.leases().is_empty());
        // A revoke of a lease with no keys bumps nothing; a put to a missing lease is refused.
        let (empty, _) = run(&[Request::LeaseGrant { ttl: 60, id: 8 }]);
        assert_eq!(
            empty
                .apply(&Request::LeaseRevoke { id: 8 }, None)
                .unwrap()
                .header_revision,
            1
        );
        assert_eq!(
            EtcdState::new().apply(&put_lease("a", "1", 9), None),
            Err(Refusal::LeaseNotFound)
        );
        assert_eq!(
            EtcdState::new().apply(&Request::LeaseRevoke { id: 9 }, None),
            Err(Refusal::LeaseNotFound)
        );
        assert_eq!(
            state.apply(&Request::LeaseGrant { ttl: 5, id: 7 }, None),
            Err(Refusal::LeaseExists)
        );
    }

    #[test]
    fn a_lease_granted_with_id_zero_takes_its_id_from_the_response() {
        let grant = Request::LeaseGrant { ttl: 1, id: 0 };
        let empty = EtcdState::new();
        assert_eq!(empty.apply(&grant, None), Err(Refusal::LeaseIdUnknown));
        // etcd raises a TTL below its minimum; it never lowers one.
        let applied = empty
            .apply(&grant, Some(&Response::LeaseGrant { id: 42, ttl: 5 }))
            .unwrap();
        assert_eq!(applied.response, Response::LeaseGrant { id: 42, ttl: 5 });
        assert!(applied.state.leases().contains_key(&42));
        let lowered = empty.apply(
            &Request::LeaseGrant { ttl: 10, id: 0 },
            Some(&Response::LeaseGrant { id: 42, ttl: 5 }),
        );
        assert_eq!(
            lowered.unwrap().response,
            Response::LeaseGrant { id: 42, ttl: 10 }
        );
        // With an unknown outcome the step changes nothing.
        assert_eq!(
            EtcdModel::new().step(&empty, &input(grant.clone()), None),
            Some(empty.clone())
        );
    }

    #[test]
    fn compaction_needs_a_revision_above_the_last_and_not_above_the_current() {
        let (state, _) = run(&[put("a", "1"), put("a", "2"), put("a", "3")]);
        let compact =
            |state: &EtcdState, revision| state.apply(&Request::Compact { revision }, None);
        assert_eq!(compact(&state, 5), Err(Refusal::FutureRevision));
        let compacted = compact(&state, 3).unwrap();
        assert_eq!(
            (compacted.header_revision, compacted.response.clone()),
            (4, Response::Compact {})
        );
        assert_eq!(compacted.state.compact_revision(), 3);
        assert_eq!(compact(&compacted.state, 3), Err(Refusal::Compacted));
        let old_read = |revision| Request::Get {
            key: "a".into(),
            range_end: None,
            revision,
            limit: 0,
            keys_only: false,
            serializable: false,
        };
        assert_eq!(
            compacted.state.apply(&old_read(2), None),
            Err(Refusal::Compacted)
        );
        assert_eq!(
            compacted.state.apply(&old_read(5), None),
            Err(Refusal::FutureRevision)
        );
        // The current revision is read directly, and checked.
        assert_eq!(
            compacted.state.apply(&old_read(4), None).unwrap().response,
            got(vec![kv("a", "3", 2, 4, 3)])
        );
    }

    #[test]
    fn a_step_checks_the_header_revision_and_the_response() {
        let model = EtcdModel::new();
        let empty = model.init();
        let after = model
            .step(&empty, &input(put("a", "1")), Some(&(2, Response::Put {})))
            .unwrap();
        assert_eq!(after.revision(), 2);
        assert_eq!(
            model.step(&empty, &input(put("a", "1")), Some(&(3, Response::Put {}))),
            None
        );
        assert_eq!(
            model.step(&after, &input(get("a", None)), Some(&(2, got(vec![])))),
            None
        );
        assert_eq!(
            model.step(
                &after,
                &input(get("a", None)),
                Some(&(2, got(vec![kv("a", "1", 2, 2, 1)])))
            ),
            Some(after.clone())
        );
        // An acknowledged put to a missing lease is impossible; an unknown one changes nothing.
        assert_eq!(
            model.step(
                &empty,
                &input(put_lease("a", "1", 3)),
                Some(&(2, Response::Put {}))
            ),
            None
        );
        assert_eq!(
            model.step(&empty, &input(put_lease("a", "1", 3)), None),
            Some(empty.clone())
        );
    }

    #[test]
    fn a_serializable_read_steps_only_at_its_revision() {
        let model = EtcdModel::new();
        let (state, _) = run(&[put("a", "1"), put("a", "2")]);
        let read = Request::Get {
            key: "a".into(),
            range_end: None,
            revision: 0,
            limit: 0,
            keys_only: false,
            serializable: true,
        };
        let at_3 = (3, got(vec![kv("a", "2", 2, 3, 2)]));
        assert_eq!(
            model.step(&state, &input(read.clone()), Some(&at_3)),
            Some(state.clone())
        );
        let at_2 = (2, got(vec![kv("a", "1", 2, 2, 1)]));
        assert_eq!(model.step(&state, &input(read), Some(&at_2)), None);
    }

    #[test]
    fn descriptions_read_like_the_requests() {
        let op = Operation::completed(
            3,
            1_200_000_000,
            1_250_000_000,
            input(put("k2", "v17")),
            (41, Response::Put {}),
        );
        assert_eq!(EtcdModel::new().describe(&op), "put k2=v17 -> ok rev 41");
        let txn = cas("k", CompareTarget::Mod(5), CompareResult::Equal);
        assert_eq!(
            request_text(&txn),
            "txn if k mod = 5 then put k=new; get k else get k"
        );
        assert_eq!(seconds(1_200_000_000), "1.200s");
        assert_eq!(seconds(1_200_300_000), "1.200300s");
        assert_eq!(seconds(7), "0.000000007s");
    }

    #[test]
    fn the_read_fast_path_agrees_with_apply() {
        let (state, _) = run(&[
            Request::LeaseGrant { ttl: 60, id: 4 },
            put("a", "1"),
            put_lease("b", "2", 4),
            put("c", "3"),
            put("c", "4"),
        ]);
        let model = EtcdModel::new();
        let header = state.revision();
        for (key, range_end) in [
            ("a", None),
            ("b", Some("d")),
            ("a", Some("\u{0}")),
            ("z", None),
        ] {
            for limit in [0, 1, 2, 5] {
                for keys_only in [false, true] {
                    let request = Request::Get {
                        key: key.into(),
                        range_end: range_end.map(str::to_string),
                        revision: 0,
                        limit,
                        keys_only,
                        serializable: false,
                    };
                    let answer = state.apply(&request, None).unwrap().response;
                    let step = |response: &Response| {
                        model.step(
                            &state,
                            &input(request.clone()),
                            Some(&(header, response.clone())),
                        )
                    };
                    assert_eq!(step(&answer), Some(state.clone()), "{request:?}");
                    let Response::Get { kvs, count, more } = answer.clone() else {
                        unreachable!()
                    };
                    let wrong = [
                        Response::Get {
                            kvs: kvs.clone(),
                            count: count + 1,
                            more,
                        },
                        Response::Get {
                            kvs: kvs.clone(),
                            count,
                            more: !more,
                        },
                        Response::Get {
                            kvs: kvs.iter().skip(1).cloned().collect(),
                            count,
                            more,
                        },
                        Response::Get {
                            kvs: kvs
                                .iter()
                                .map(|kv| Kv {
                                    version: kv.version + 1,
                                    ..kv.clone()
                                })
                                .collect(),
                            count,
                            more,
                        },
                        Response::Get {
                            kvs: kvs
                                .iter()
                                .map(|kv| Kv {
                                    value: "x".into(),
                                    ..kv.clone()
                                })
                                .collect(),
                            count,
                            more,
                        },
                    ];
                    for response in wrong.iter().filter(|r| **r != answer) {
                        assert_eq!(step(response), None, "{request:?} answered {response:?}");
                    }
                }
            }
        }
    }

    fn op(id: u64, request: Request, output: Option<(i64, Response)>) -> EtcdOperation {
        let input = EtcdInput { id, request };
        match output {
            Some(output) => Operation::completed(1, id, id, input, output),
            None => Operation::unknown(1, id, input),
        }
    }

    #[test]
    fn claimed_revisions_are_made_only_by_their_claimers() {
        let ops = [
            op(0, put("a", "1"), Some((2, Response::Put {}))),
            op(1, put("b", "1"), None),
            op(
                2,
                delete("a", None),
                Some((3, Response::Delete { deleted: 0 })),
            ),
        ];
        let model = EtcdModel::for_operations(&ops);
        let empty = model.init();
        // Revision 2 is claimed by op 0: the unknown op 1 cannot make it, op 0 can even with
        // its outcome set aside.
        assert_eq!(model.step(&empty, &ops[1].input, None), None);
        assert!(model.step(&empty, &ops[0].input, None).is_some());
        // Revision 3 is claimed by nobody (op 2 deleted nothing): only op 1, of unknown outcome,
        // may make it; op 2 with its outcome set aside may not.
        let at_2 = model
            .step(&empty, &ops[0].input, Some(&(2, Response::Put {})))
            .unwrap();
        assert_eq!(
            model.step(&at_2, &ops[1].input, None).map(|s| s.revision()),
            Some(3)
        );
        assert_eq!(model.step(&at_2, &ops[2].input, None), None);
        // The plain model allows everything.
        assert!(EtcdModel::new().step(&empty, &ops[1].input, None).is_some());
    }

    #[test]
    fn a_header_revision_that_cannot_follow_the_state_is_refused_at_once() {
        let model = EtcdModel::new();
        let (state, _) = run(&[put("a", "1")]);
        let revoke = Request::LeaseRevoke { id: 1 };
        // A revoke's header may be the revision or the next; a put's only the next.
        assert_eq!(
            model.step(&state, &input(put("b", "1")), Some(&(2, Response::Put {}))),
            None
        );
        assert_eq!(
            model.step(&state, &input(revoke), Some(&(4, Response::LeaseRevoke {}))),
            None
        );
    }

    #[test]
    fn key_intervals_overlap_like_etcd_ranges() {
        let single = Interval::new("k", None);
        assert!(single.overlaps(&Interval::new("k", Some("l"))));
        assert!(!single.overlaps(&Interval::new("k0", None)));
        assert!(single.overlaps(&Interval::new("a", Some("\u{0}"))));
        assert!(!single.overlaps(&Interval::new("l", Some("\u{0}"))));
        assert!(Interval::everything().overlaps(&single));
        assert_eq!(counted(1, "read", "reads"), "1 read");
        assert_eq!(range_text("\u{0}", Some("\u{0}")), "every key");
        assert_eq!(range_text("a", Some("\u{0}")), "a..");
        assert_eq!(range_text("a\u{1}", None), "a\\u{1}");
    }
}
