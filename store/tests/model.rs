//! `faultline_store::Store` held against a deliberately naive model of etcd v3 semantics.
//!
//! The model ([`model::Model`]) is written from the contract
//! (`shared/reference/etcd-semantics.md`) and from etcd's own apply code, never from the store:
//! it keeps a full copy of the keyspace at every revision, the ordered changes of every revision,
//! the compact revision and the lease table, and computes every response (or error) by brute
//! force. Random histories of Put, DeleteRange, Txn (nested ones too), Compact, LeaseGrant,
//! LeaseRevoke and Range over a six-key pool are driven through the store the way a node drives
//! it (`admit`, then `apply` at the next Raft index), and:
//!
//! 1. `store_matches_naive_model_for_random_histories`: every admission verdict, every response
//!    and every error equals the model's, the state after each step agrees (revisions, leases and
//!    their keys, the latest keyspace), invariants hold, a replayed entry is a no-op, and at the
//!    end a read at every revision from the compact revision to the current one agrees.
//! 2. `watch_delivers_exactly_the_model_history_from_any_start_revision`: watches started at,
//!    below, inside and past the live window deliver exactly the model's changes (with prev_kv
//!    as a read at `mod_revision - 1`), whole revisions per response, a compacted start gives one
//!    canceled response, and live delivery after the catch-up continues without gaps.
//! 3. `snapshot_image_round_trip_preserves_every_answer`: a store restored from its image
//!    (through JSON) answers every later request, hash and historical read as the original does.
//!
//! The model can also say that an entry would panic etcd's apply (an ignore_value/ignore_lease
//! put of a key an earlier op of the same txn deleted); the store refuses such txns as duplicate
//! keys before proposal, so with the store's admission rule no history reaches that point. The
//! fixed tests at the end pin what the properties found.
//!
//! The number of cases comes from `FAULTLINE_PROPTEST_CASES` (default 1000); `PROPTEST_RNG_SEED`
//! picks the seed.

use std::collections::BTreeMap;

use faultline_store::watch::WatchConfig;
use faultline_store::{
    CompactionRequest, Compare, CompareResult, CompareTarget, DeleteRangeRequest, EtcdError, Event,
    LeaseGrantRequest, LeaseId, LeaseRevokeRequest, LeaseTimeToLiveResponse, PutRequest,
    RangeRequest, Request, RequestOp, Response, ResponseHeader, SortOrder, SortTarget, Store,
    StoreConfig, StoreImage, TxnRequest, WatchCreateRequest, WatchResponse,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use model::Model;

/// The naive reference: etcd v3 semantics by brute force.
mod model {
    use std::collections::BTreeMap;

    use faultline_store::{
        CompactionResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
        DeleteRangeResponse, EtcdError, Event, EventType, KeyValue, LeaseGrantResponse, LeaseId,
        LeaseRevokeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, Request,
        RequestOp, Response, ResponseHeader, ResponseOp, SortOrder, SortTarget, TxnRequest,
        TxnResponse,
    };

    /// Every live key at one revision.
    pub type Keyspace = BTreeMap<Vec<u8>, KeyValue>;

    /// How applying a committed request ends when it does not succeed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Fail {
        /// etcd answers this error and changes nothing.
        Refused(EtcdError),
        /// etcd's apply code panics on this entry (the reason says where); every member does.
        Panics(&'static str),
    }

    impl From<EtcdError> for Fail {
        fn from(e: EtcdError) -> Self {
            Fail::Refused(e)
        }
    }

    /// etcd's default minimum lease TTL on default election timeouts.
    pub const LEASE_TTL_MIN_SECS: i64 = 2;
    /// etcd's MaxLeaseTTL.
    pub const LEASE_TTL_MAX_SECS: i64 = 9_000_000_000;
    /// etcd's default `--max-txn-ops`.
    pub const TXN_OPS_MAX: usize = 128;

    /// etcd's `(key, range_end)`: empty end = the key alone, `[0]` = every key >= key.
    pub fn in_span(key: &[u8], start: &[u8], end: &[u8]) -> bool {
        match end {
            [] => key == start,
            [0] => key >= start,
            _ => key >= start && key < end,
        }
    }

    fn header(revision: i64) -> ResponseHeader {
        ResponseHeader {
            revision,
            ..ResponseHeader::default()
        }
    }

    #[derive(Debug, Clone)]
    pub struct Model {
        /// `history[r]` is the keyspace at revision `r`; revisions 0 and 1 are empty.
        history: Vec<Keyspace>,
        /// `changes[r]` are the events of revision `r`, in the order they were made.
        changes: Vec<Vec<Event>>,
        compact: i64,
        /// Lease id -> granted TTL. A lease's keys are the live keys naming it.
        leases: BTreeMap<LeaseId, i64>,
        /// Where the search for a store-chosen lease id starts (the smallest free id from here).
        next_lease_id: LeaseId,
    }

    impl Default for Model {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Model {
        pub fn new() -> Self {
            Model {
                history: vec![Keyspace::new(), Keyspace::new()],
                changes: vec![Vec::new(), Vec::new()],
                compact: 0,
                leases: BTreeMap::new(),
                next_lease_id: 1,
            }
        }

        pub fn current(&self) -> i64 {
            self.history.len() as i64 - 1
        }

        pub fn compact_revision(&self) -> i64 {
            self.compact
        }

        pub fn latest(&self) -> &Keyspace {
            self.history.last().expect("revision 1 exists")
        }

        pub fn keyspace_at(&self, revision: i64) -> &Keyspace {
            &self.history[revision as usize]
        }

        pub fn lease_ids(&self) -> Vec<LeaseId> {
            self.leases.keys().copied().collect()
        }

        pub fn lease_ttl(&self, id: LeaseId) -> Option<i64> {
            self.leases.get(&id).copied()
        }

        /// The keys attached to a lease, in key order.
        pub fn lease_keys(&self, id: LeaseId) -> Vec<Vec<u8>> {
            self.latest()
                .values()
                .filter(|kv| kv.lease == id)
                .map(|kv| kv.key.clone())
                .collect()
        }

        /// The checks etcd's gRPC layer makes before proposing: shapes first (recursively), then
        /// duplicate writes of each top-level branch.
        pub fn admit(&self, req: &Request) -> Result<(), EtcdError> {
            match req {
                Request::Range(r) => shape_range(r),
                Request::Put(p) => shape_put(p),
                Request::DeleteRange(d) => shape_delete(d),
                Request::Txn(t) => {
                    shape_txn(t, TXN_OPS_MAX)?;
                    check_intervals(&t.success)?;
                    check_intervals(&t.failure)?;
                    Ok(())
                }
                Request::Compact(_) | Request::LeaseGrant(_) | Request::LeaseRevoke(_) => Ok(()),
                Request::Alarm(_) => panic!("the model does not cover alarms"),
            }
        }

        /// Applies a committed request.
        pub fn apply(&mut self, req: &Request) -> Result<Response, Fail> {
            match req {
                Request::Range(r) => Ok(self.range(r).map(Response::Range)?),
                Request::Put(p) => {
                    // A plain put looks the lease up before the key (a txn's put does the key
                    // first).
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(EtcdError::LeaseNotFound.into());
                    }
                    let mut w = Pending::new(self);
                    w.check_put(p)?;
                    let resp = w.put(p)?;
                    let (keyspace, events) = w.finish();
                    self.commit(keyspace, events);
                    Ok(Response::Put(resp))
                }
                Request::DeleteRange(d) => {
                    let mut w = Pending::new(self);
                    let resp = w.delete(d);
                    let (keyspace, events) = w.finish();
                    self.commit(keyspace, events);
                    Ok(Response::DeleteRange(resp))
                }
                Request::Txn(t) => {
                    let mut w = Pending::new(self);
                    w.check_txn(t)?;
                    let mut resp = w.run_txn(t)?;
                    resp.header = header(w.revision());
                    let (keyspace, events) = w.finish();
                    self.commit(keyspace, events);
                    Ok(Response::Txn(resp))
                }
                Request::Compact(c) => {
                    if c.revision <= self.compact {
                        return Err(EtcdError::Compacted.into());
                    }
                    if c.revision > self.current() {
                        return Err(EtcdError::FutureRevision.into());
                    }
                    self.compact = c.revision;
                    Ok(Response::Compact(CompactionResponse {
                        header: header(self.current()),
                    }))
                }
                Request::LeaseGrant(g) => {
                    if g.ttl > LEASE_TTL_MAX_SECS {
                        return Err(EtcdError::LeaseTtlTooLarge.into());
                    }
                    let id = if g.id == 0 {
                        self.choose_lease_id()
                    } else {
                        g.id
                    };
                    if self.leases.contains_key(&id) {
                        return Err(EtcdError::LeaseExists.into());
                    }
                    let ttl = g.ttl.max(LEASE_TTL_MIN_SECS);
                    self.leases.insert(id, ttl);
                    Ok(Response::LeaseGrant(LeaseGrantResponse {
                        header: header(self.current()),
                        id,
                        ttl,
                    }))
                }
                Request::LeaseRevoke(r) => {
                    if !self.leases.contains_key(&r.id) {
                        return Err(EtcdError::LeaseNotFound.into());
                    }
                    // The attached keys go in one revision, in key order.
                    let doomed = self.lease_keys(r.id);
                    self.leases.remove(&r.id);
                    let mut keyspace = self.latest().clone();
                    let mut events = Vec::new();
                    for key in doomed {
                        keyspace.remove(&key);
                        events.push(Event {
                            kind: EventType::Delete,
                            kv: KeyValue {
                                key,
                                mod_revision: self.current() + 1,
                                ..KeyValue::default()
                            },
                            prev_kv: None,
                        });
                    }
                    self.commit(keyspace, events);
                    Ok(Response::LeaseRevoke(LeaseRevokeResponse {
                        header: header(self.current()),
                    }))
                }
                Request::Alarm(_) => panic!("the model does not cover alarms"),
            }
        }

        /// A Range outside a txn: at `revision` (0 = latest), header at the current revision.
        pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, EtcdError> {
            if r.revision > self.current() {
                return Err(EtcdError::FutureRevision);
            }
            if r.revision > 0 && r.revision < self.compact {
                return Err(EtcdError::Compacted);
            }
            let at = if r.revision > 0 {
                r.revision
            } else {
                self.current()
            };
            Ok(range_of(self.keyspace_at(at), r, self.current()))
        }

        /// The events a watch on `(key, range_end)` must receive for revisions `from..=to`, as of
        /// now: prev_kv is a read at `mod_revision - 1`, absent when that is compacted.
        pub fn watch_events(&self, w: &WatchFilter<'_>, from: i64, to: i64) -> Vec<Event> {
            let mut out = Vec::new();
            for rev in from.max(1)..=to {
                for change in &self.changes[rev as usize] {
                    if !in_span(&change.kv.key, w.key, w.range_end)
                        || (w.no_put && change.kind == EventType::Put)
                        || (w.no_delete && change.kind == EventType::Delete)
                    {
                        continue;
                    }
                    let before = rev - 1;
                    let prev_kv = if w.prev_kv && before >= 1 && before >= self.compact {
                        self.keyspace_at(before).get(&change.kv.key).cloned()
                    } else {
                        None
                    };
                    out.push(Event {
                        kind: change.kind,
                        kv: change.kv.clone(),
                        prev_kv,
                    });
                }
            }
            out
        }

        fn choose_lease_id(&mut self) -> LeaseId {
            while self.next_lease_id == 0 || self.leases.contains_key(&self.next_lease_id) {
                self.next_lease_id += 1;
            }
            let id = self.next_lease_id;
            self.next_lease_id += 1;
            id
        }

        /// Ends a write: a new revision if anything changed, else nothing.
        fn commit(&mut self, keyspace: Keyspace, events: Vec<Event>) {
            if events.is_empty() {
                assert_eq!(&keyspace, self.latest(), "model: a write without events");
                return;
            }
            // Self-check: the events replayed on the previous keyspace give the new one.
            let mut replay = self.latest().clone();
            for e in &events {
                match e.kind {
                    EventType::Put => {
                        replay.insert(e.kv.key.clone(), e.kv.clone());
                    }
                    EventType::Delete => {
                        replay.remove(&e.kv.key);
                    }
                }
            }
            assert_eq!(replay, keyspace, "model: events disagree with the keyspace");
            self.history.push(keyspace);
            self.changes.push(events);
        }
    }

    /// What a watch selects.
    #[derive(Debug, Clone, Copy)]
    pub struct WatchFilter<'a> {
        pub key: &'a [u8],
        pub range_end: &'a [u8],
        pub prev_kv: bool,
        pub no_put: bool,
        pub no_delete: bool,
    }

    /// A write in progress: a working copy of the keyspace and the events so far. Checks read the
    /// state before the write and run over the whole chosen path before anything executes, as
    /// etcd's checkTxn does; reads during execution see the write's own changes.
    struct Pending<'m> {
        model: &'m Model,
        base: i64,
        work: Keyspace,
        events: Vec<Event>,
    }

    impl<'m> Pending<'m> {
        fn new(model: &'m Model) -> Self {
            Pending {
                model,
                base: model.current(),
                work: model.latest().clone(),
                events: Vec::new(),
            }
        }

        /// The revision the write is at now: the next one once it changed something.
        fn revision(&self) -> i64 {
            if self.events.is_empty() {
                self.base
            } else {
                self.base + 1
            }
        }

        fn finish(self) -> (Keyspace, Vec<Event>) {
            (self.work, self.events)
        }

        /// etcd's checkPut: the key an ignore_* put needs first, then the lease.
        fn check_put(&self, p: &PutRequest) -> Result<(), EtcdError> {
            if (p.ignore_value || p.ignore_lease) && !self.model.latest().contains_key(&p.key) {
                return Err(EtcdError::KeyNotFound);
            }
            if p.lease != 0 && !self.model.leases.contains_key(&p.lease) {
                return Err(EtcdError::LeaseNotFound);
            }
            Ok(())
        }

        /// etcd's checkRange inside a txn, against the revisions before the txn: below the
        /// first readable revision (the compact revision, or -1 before any compaction) is
        /// compacted, negative revisions included.
        fn check_range(&self, r: &RangeRequest) -> Result<(), EtcdError> {
            let first = if self.model.compact > 0 {
                self.model.compact
            } else {
                -1
            };
            if r.revision == 0 {
                return Ok(());
            }
            if r.revision > self.base {
                return Err(EtcdError::FutureRevision);
            }
            if r.revision < first {
                return Err(EtcdError::Compacted);
            }
            Ok(())
        }

        fn put(&mut self, p: &PutRequest) -> Result<PutResponse, Fail> {
            let rev = self.base + 1;
            let prev = self.work.get(&p.key).cloned();
            if (p.ignore_value || p.ignore_lease) && prev.is_none() {
                // The check saw the key before the txn, but an earlier op of this txn deleted it
                // (a from-key delete, which etcd's duplicate-key check lets through). etcd's put()
                // then reads `prevKV.KVs[0]` of an empty result: index out of range.
                return Err(Fail::Panics(
                    "put with ignore_value/ignore_lease of a key this txn deleted",
                ));
            }
            let value = if p.ignore_value {
                prev.as_ref().expect("present").value.clone()
            } else {
                p.value.clone()
            };
            let lease = if p.ignore_lease {
                prev.as_ref().expect("present").lease
            } else {
                p.lease
            };
            let kv = KeyValue {
                key: p.key.clone(),
                create_revision: prev.as_ref().map_or(rev, |kv| kv.create_revision),
                mod_revision: rev,
                version: prev.as_ref().map_or(1, |kv| kv.version + 1),
                value,
                lease,
            };
            self.work.insert(p.key.clone(), kv.clone());
            self.events.push(Event {
                kind: EventType::Put,
                kv,
                prev_kv: None,
            });
            Ok(PutResponse {
                header: header(rev),
                prev_kv: if p.prev_kv { prev } else { None },
            })
        }

        fn delete(&mut self, d: &DeleteRangeRequest) -> DeleteRangeResponse {
            let doomed: Vec<KeyValue> = self
                .work
                .values()
                .filter(|kv| in_span(&kv.key, &d.key, &d.range_end))
                .cloned()
                .collect();
            for kv in &doomed {
                self.work.remove(&kv.key);
                self.events.push(Event {
                    kind: EventType::Delete,
                    kv: KeyValue {
                        key: kv.key.clone(),
                        mod_revision: self.base + 1,
                        ..KeyValue::default()
                    },
                    prev_kv: None,
                });
            }
            DeleteRangeResponse {
                header: header(self.revision()),
                deleted: doomed.len() as i64,
                prev_kvs: if d.prev_kv { doomed } else { Vec::new() },
            }
        }

        fn range(&self, r: &RangeRequest) -> RangeResponse {
            let keyspace = if r.revision > 0 {
                self.model.keyspace_at(r.revision)
            } else {
                &self.work
            };
            range_of(keyspace, r, self.revision())
        }

        /// The branch a txn takes: every compare (nested ones too) reads the state before the
        /// outermost txn.
        fn branch<'t>(&self, t: &'t TxnRequest) -> (bool, &'t [RequestOp]) {
            let succeeded = t
                .compare
                .iter()
                .all(|c| compare_holds(self.model.latest(), c));
            (succeeded, if succeeded { &t.success } else { &t.failure })
        }

        /// etcd's checkTxn: every put and range on the chosen path, in op order, before any op
        /// runs.
        /// etcd checks every put on the chosen path before any range.
        fn check_txn(&self, t: &TxnRequest) -> Result<(), EtcdError> {
            self.check_path(t, true)?;
            self.check_path(t, false)
        }

        fn check_path(&self, t: &TxnRequest, puts: bool) -> Result<(), EtcdError> {
            for op in self.branch(t).1 {
                match op {
                    RequestOp::Range(r) if !puts => self.check_range(r)?,
                    RequestOp::Put(p) if puts => self.check_put(p)?,
                    RequestOp::Range(_) | RequestOp::Put(_) | RequestOp::DeleteRange(_) => {}
                    RequestOp::Txn(nested) => self.check_path(nested, puts)?,
                }
            }
            Ok(())
        }

        /// Runs a checked txn's chosen branch. The header is left empty (the caller fills the
        /// outermost one).
        fn run_txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, Fail> {
            let (succeeded, branch) = self.branch(t);
            let mut responses = Vec::new();
            for op in branch {
                responses.push(match op {
                    RequestOp::Range(r) => ResponseOp::Range(self.range(r)),
                    RequestOp::Put(p) => ResponseOp::Put(self.put(p)?),
                    RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.delete(d)),
                    RequestOp::Txn(nested) => ResponseOp::Txn(self.run_txn(nested)?),
                });
            }
            Ok(TxnResponse {
                header: ResponseHeader::default(),
                succeeded,
                responses,
            })
        }
    }

    fn compare_holds(keyspace: &Keyspace, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = keyspace
            .values()
            .filter(|kv| in_span(&kv.key, &c.key, &c.range_end))
            .collect();
        if kvs.is_empty() {
            // A missing key has version/create/mod/lease 0 and no value at all.
            return match c.target {
                CompareTarget::Value(_) => false,
                _ => compare_kv(c, &KeyValue::default()),
            };
        }
        kvs.into_iter().all(|kv| compare_kv(c, kv))
    }

    fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
        let ordering = match &c.target {
            CompareTarget::Version(v) => kv.version.cmp(v),
            CompareTarget::Create(v) => kv.create_revision.cmp(v),
            CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
            CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
            CompareTarget::Lease(v) => kv.lease.cmp(v),
        };
        match c.result {
            CompareResult::Equal => ordering.is_eq(),
            CompareResult::NotEqual => ordering.is_ne(),
            CompareResult::Greater => ordering.is_gt(),
            CompareResult::Less => ordering.is_lt(),
        }
    }

    /// A range over one keyspace: count = every match (ignoring limit and the min/max filters),
    /// then filters, sort (ties in key order), limit, keys_only.
    fn range_of(keyspace: &Keyspace, r: &RangeRequest, header_revision: i64) -> RangeResponse {
        let matched: Vec<KeyValue> = keyspace
            .values()
            .filter(|kv| in_span(&kv.key, &r.key, &r.range_end))
            .cloned()
            .collect();
        let count = matched.len() as i64;
        if r.count_only {
            return RangeResponse {
                header: header(header_revision),
                kvs: Vec::new(),
                more: false,
                count,
            };
        }
        // etcd reads only limit + 1 keys, in key order, when there is no order and no filter.
        let unfiltered = r.min_mod_revision == 0
            && r.max_mod_revision == 0
            && r.min_create_revision == 0
            && r.max_create_revision == 0;
        let read = if r.sort_order == SortOrder::None && unfiltered && r.limit > 0 {
            r.limit as usize + 1
        } else {
            usize::MAX
        };
        let mut kvs: Vec<KeyValue> = matched
            .into_iter()
            .take(read)
            .filter(|kv| r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            .filter(|kv| r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
            .filter(|kv| r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
            .filter(|kv| r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            .collect();
        // etcd: no order with a non-key target means ascending.
        let descending = match (r.sort_order, r.sort_target) {
            (SortOrder::None, SortTarget::Key) => None,
            (SortOrder::None, _) | (SortOrder::Ascend, _) => Some(false),
            (SortOrder::Descend, _) => Some(true),
        };
        if let Some(descending) = descending {
            kvs.sort_by(|a, b| {
                let ordering = match r.sort_target {
                    SortTarget::Key => a.key.cmp(&b.key),
                    SortTarget::Version => a.version.cmp(&b.version),
                    SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    SortTarget::Value => a.value.cmp(&b.value),
                };
                let ordering = if descending {
                    ordering.reverse()
                } else {
                    ordering
                };
                ordering.then_with(|| a.key.cmp(&b.key))
            });
        }
        let more = r.limit > 0 && kvs.len() as i64 > r.limit;
        if more {
            kvs.truncate(r.limit as usize);
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        RangeResponse {
            header: header(header_revision),
            kvs,
            more,
            count,
        }
    }

    fn shape_range(r: &RangeRequest) -> Result<(), EtcdError> {
        if r.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        Ok(())
    }

    fn shape_put(p: &PutRequest) -> Result<(), EtcdError> {
        if p.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        if p.ignore_value && !p.value.is_empty() {
            return Err(EtcdError::ValueProvided);
        }
        if p.ignore_lease && p.lease != 0 {
            return Err(EtcdError::LeaseProvided);
        }
        Ok(())
    }

    fn shape_delete(d: &DeleteRangeRequest) -> Result<(), EtcdError> {
        if d.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        Ok(())
    }

    /// etcd's checkTxnRequest: the longest of compares, success and failure within the op
    /// budget, compare keys, then every op; a nested txn gets the budget its parent leaves.
    fn shape_txn(t: &TxnRequest, budget: usize) -> Result<(), EtcdError> {
        let ops = t.compare.len().max(t.success.len()).max(t.failure.len());
        if ops > budget {
            return Err(EtcdError::TooManyOps);
        }
        if t.compare.iter().any(|c| c.key.is_empty()) {
            return Err(EtcdError::EmptyKey);
        }
        for op in t.success.iter().chain(&t.failure) {
            match op {
                RequestOp::Range(r) => shape_range(r)?,
                RequestOp::Put(p) => shape_put(p)?,
                RequestOp::DeleteRange(d) => shape_delete(d)?,
                RequestOp::Txn(nested) => shape_txn(nested, budget - ops)?,
            }
        }
        Ok(())
    }

    /// Whether the duplicate-key check sees a put of `key` inside a delete of `(start, end)`.
    /// etcd 3.5 builds the literal interval `[start, end)`, so its from-key delete covers nothing
    /// there (and a from-key delete followed by an ignore_value put of a deleted key panics its
    /// apply); the contract, and etcd's pending fix, treat `end == [0]` as every key >= start.
    /// An inverted range covers nothing.
    fn delete_interval_covers(key: &[u8], start: &[u8], end: &[u8]) -> bool {
        if end.is_empty() {
            key == start
        } else if end == [0] {
            key >= start
        } else {
            start <= key && key < end
        }
    }

    /// etcd's `checkIntervals` (server/etcdserver/api/v3rpc/key.go), for one branch: returns the
    /// keys it may put and the ranges it may delete. Order matters, as in etcd: this level's
    /// deletes are known first; each nested txn's puts (either branch) must not repeat an earlier
    /// put nor fall in a delete known so far, then its deletes become known; last, this level's
    /// puts are checked against everything.
    ///
    /// This is not quite the contract's "writing the same key twice is an error": a put in a
    /// nested txn followed by a later sibling nested txn deleting that key passes, as in etcd.
    #[allow(clippy::type_complexity)]
    fn check_intervals(
        ops: &[RequestOp],
    ) -> Result<(Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>), EtcdError> {
        let mut dels: Vec<(Vec<u8>, Vec<u8>)> = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::DeleteRange(d) => Some((d.key.clone(), d.range_end.clone())),
                _ => None,
            })
            .collect();
        let deleted = |dels: &[(Vec<u8>, Vec<u8>)], key: &[u8]| {
            dels.iter()
                .any(|(start, end)| delete_interval_covers(key, start, end))
        };
        let mut puts: Vec<Vec<u8>> = Vec::new();
        for op in ops {
            let RequestOp::Txn(nested) = op else {
                continue;
            };
            let (puts_then, dels_then) = check_intervals(&nested.success)?;
            let (puts_else, dels_else) = check_intervals(&nested.failure)?;
            let before = puts.clone();
            for key in puts_then.iter().chain(&puts_else) {
                if before.contains(key) || deleted(&dels, key) {
                    return Err(EtcdError::DuplicateKey);
                }
                if !puts.contains(key) {
                    puts.push(key.clone());
                }
            }
            dels.extend(dels_then);
            dels.extend(dels_else);
        }
        for op in ops {
            let RequestOp::Put(p) = op else {
                continue;
            };
            if puts.contains(&p.key) || deleted(&dels, &p.key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.push(p.key.clone());
        }
        Ok((puts, dels))
    }
}

// ----- readable failures -----

/// Rewrites every list of byte values in a Debug text that reads as text (`[97, 98]`) as a
/// string (`b"ab"`), so keys and values in failures are legible.
fn show(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let tail = &rest[open + 1..];
        let close = tail.find(']');
        let parsed = close.and_then(|close| {
            let inner = &tail[..close];
            let items: Vec<&str> = inner
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect();
            if items.is_empty() {
                return None;
            }
            let bytes: Option<Vec<u8>> = items.iter().map(|t| t.parse::<u8>().ok()).collect();
            let bytes = bytes?;
            if !bytes.iter().all(|b| *b == 0 || (0x20..0x7f).contains(b)) {
                return None;
            }
            let text: String = bytes
                .iter()
                .map(|b| match b {
                    0 => "\\0".to_string(),
                    b => (*b as char).to_string(),
                })
                .collect();
            Some((format!("b\"{text}\""), close))
        });
        match parsed {
            Some((text, close)) => {
                out.push_str(&text);
                rest = &tail[close + 1..];
            }
            None => {
                out.push('[');
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A generated input whose Debug is one line with keys and values shown as strings.
#[derive(Clone)]
struct Readable<T>(T);

impl<T: std::fmt::Debug> std::fmt::Debug for Readable<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&show(&format!("{:?}", self.0)))
    }
}

impl<T> std::ops::Deref for Readable<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Fails the case unless `actual == expected`, showing both legibly.
fn same<T: PartialEq + std::fmt::Debug>(
    what: impl std::fmt::Display,
    actual: &T,
    expected: &T,
) -> Result<(), TestCaseError> {
    if actual == expected {
        return Ok(());
    }
    Err(TestCaseError::fail(format!(
        "{}\n  store: {}\n  model: {}",
        show(&what.to_string()),
        show(&format!("{actual:?}")),
        show(&format!("{expected:?}")),
    )))
}

// ----- random histories -----

const KEYS: [&str; 6] = ["a", "ab", "b", "c", "d", "e"];
const VALUES: [&str; 4] = ["", "v1", "v2", "x"];
/// A lease id no grant in these histories produces.
const UNKNOWN_LEASE: LeaseId = 99;

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = bytes(prefix);
    *end.last_mut().expect("non-empty prefix") += 1;
    end
}

/// A revision chosen relative to the state when the request is made.
#[derive(Debug, Clone, Copy)]
enum Rev {
    Zero,
    FromCompact(i64),
    FromCurrent(i64),
    Abs(i64),
}

impl Rev {
    fn at(self, m: &Model) -> i64 {
        let rev = match self {
            Rev::Zero => 0,
            Rev::FromCompact(d) => m.compact_revision() + d,
            Rev::FromCurrent(d) => m.current() + d,
            Rev::Abs(r) => r,
        };
        rev.max(0)
    }
}

#[derive(Debug, Clone)]
struct ARange {
    req: RangeRequest,
    revision: Rev,
    /// min_mod, max_mod, min_create, max_create.
    filters: [Option<Rev>; 4],
}

#[derive(Debug, Clone)]
enum ATarget {
    Version(i64),
    Create(Rev),
    Mod(Rev),
    Value(Vec<u8>),
    Lease(LeaseId),
}

#[derive(Debug, Clone)]
struct ACompare {
    result: CompareResult,
    target: ATarget,
    key: Vec<u8>,
    range_end: Vec<u8>,
}

#[derive(Debug, Clone)]
enum AOp {
    Range(ARange),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(ATxn),
}

#[derive(Debug, Clone)]
struct ATxn {
    compare: Vec<ACompare>,
    success: Vec<AOp>,
    failure: Vec<AOp>,
}

/// One step of a history; revisions are resolved against the model when the step runs.
#[derive(Debug, Clone)]
enum Step {
    Range(ARange),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(ATxn),
    Compact(Rev),
    Grant { ttl: i64, id: LeaseId },
    Revoke(LeaseId),
}

impl ARange {
    fn resolve(&self, m: &Model) -> RangeRequest {
        let f = |i: usize| self.filters[i].map_or(0, |r| r.at(m));
        RangeRequest {
            revision: self.revision.at(m),
            min_mod_revision: f(0),
            max_mod_revision: f(1),
            min_create_revision: f(2),
            max_create_revision: f(3),
            ..self.req.clone()
        }
    }
}

impl ACompare {
    fn resolve(&self, m: &Model) -> Compare {
        Compare {
            result: self.result,
            target: match &self.target {
                ATarget::Version(v) => CompareTarget::Version(*v),
                ATarget::Create(r) => CompareTarget::Create(r.at(m)),
                ATarget::Mod(r) => CompareTarget::Mod(r.at(m)),
                ATarget::Value(v) => CompareTarget::Value(v.clone()),
                ATarget::Lease(l) => CompareTarget::Lease(*l),
            },
            key: self.key.clone(),
            range_end: self.range_end.clone(),
        }
    }
}

impl AOp {
    fn resolve(&self, m: &Model) -> RequestOp {
        match self {
            AOp::Range(r) => RequestOp::Range(r.resolve(m)),
            AOp::Put(p) => RequestOp::Put(p.clone()),
            AOp::Delete(d) => RequestOp::DeleteRange(d.clone()),
            AOp::Txn(t) => RequestOp::Txn(t.resolve(m)),
        }
    }
}

impl ATxn {
    fn resolve(&self, m: &Model) -> TxnRequest {
        TxnRequest {
            compare: self.compare.iter().map(|c| c.resolve(m)).collect(),
            success: self.success.iter().map(|op| op.resolve(m)).collect(),
            failure: self.failure.iter().map(|op| op.resolve(m)).collect(),
        }
    }
}

impl Step {
    fn resolve(&self, m: &Model) -> Request {
        match self {
            Step::Range(r) => Request::Range(r.resolve(m)),
            Step::Put(p) => Request::Put(p.clone()),
            Step::Delete(d) => Request::DeleteRange(d.clone()),
            Step::Txn(t) => Request::Txn(t.resolve(m)),
            Step::Compact(r) => Request::Compact(CompactionRequest {
                revision: r.at(m),
                physical: false,
            }),
            Step::Grant { ttl, id } => {
                Request::LeaseGrant(LeaseGrantRequest { ttl: *ttl, id: *id })
            }
            Step::Revoke(id) => Request::LeaseRevoke(LeaseRevokeRequest { id: *id }),
        }
    }
}

/// A key of the pool, rarely the empty (invalid) key.
fn key() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop_oneof![
        150 => prop::sample::select(KEYS.to_vec()).prop_map(bytes),
        1 => Just(Vec::new()),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> + Clone {
    prop::sample::select(VALUES.to_vec()).prop_map(bytes)
}

/// `(key, range_end)`: one key, a prefix, from a key on, an explicit (maybe empty or inverted)
/// interval, or everything.
fn span() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> + Clone {
    prop_oneof![
        6 => key().prop_map(|k| (k, Vec::new())),
        2 => prop::sample::select(vec!["a", "ab", "b", "c"]).prop_map(|p| (bytes(p), prefix_end(p))),
        2 => key().prop_map(|k| (k, vec![0])),
        1 => (key(), key()),
        1 => Just((vec![0], vec![0])),
    ]
}

fn rev() -> impl Strategy<Value = Rev> + Clone {
    prop_oneof![
        1 => Just(Rev::Zero),
        3 => (-2i64..=2).prop_map(Rev::FromCompact),
        3 => (-3i64..=1).prop_map(Rev::FromCurrent),
        1 => (1i64..=8).prop_map(Rev::Abs),
    ]
}

/// A lease id for a put: mostly none, some that grants hand out, one that never exists.
fn put_lease() -> impl Strategy<Value = LeaseId> + Clone {
    prop_oneof![10 => Just(0), 3 => 1i64..=3, 1 => Just(UNKNOWN_LEASE)]
}

fn put() -> impl Strategy<Value = PutRequest> + Clone {
    (
        key(),
        value(),
        put_lease(),
        any::<bool>(),
        prop_oneof![
            16 => Just((false, false)),
            2 => Just((true, false)),
            2 => Just((false, true)),
            1 => Just((true, true)),
        ],
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(key, mut value, mut lease, prev_kv, (ignore_value, ignore_lease), malformed)| {
                if !malformed {
                    if ignore_value {
                        value.clear();
                    }
                    if ignore_lease {
                        lease = 0;
                    }
                }
                PutRequest {
                    key,
                    value,
                    lease,
                    prev_kv,
                    ignore_value,
                    ignore_lease,
                }
            },
        )
}

fn delete() -> impl Strategy<Value = DeleteRangeRequest> + Clone {
    (span(), any::<bool>()).prop_map(|((key, range_end), prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range() -> impl Strategy<Value = ARange> + Clone {
    let sort_order = prop_oneof![
        4 => Just(SortOrder::None),
        1 => Just(SortOrder::Ascend),
        1 => Just(SortOrder::Descend),
    ];
    let sort_target = prop_oneof![
        4 => Just(SortTarget::Key),
        1 => Just(SortTarget::Version),
        1 => Just(SortTarget::Create),
        1 => Just(SortTarget::Mod),
        1 => Just(SortTarget::Value),
    ];
    (
        span(),
        prop_oneof![3 => Just(0i64), 1 => 1i64..=3],
        prop_oneof![3 => Just(Rev::Zero), 2 => rev()],
        sort_order,
        sort_target,
        any::<bool>(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        prop::array::uniform4(prop::option::weighted(0.1, rev())),
    )
        .prop_map(
            |(
                (key, range_end),
                limit,
                revision,
                sort_order,
                sort_target,
                serializable,
                keys_only,
                count_only,
                filters,
            )| ARange {
                req: RangeRequest {
                    key,
                    range_end,
                    limit,
                    sort_order,
                    sort_target,
                    serializable,
                    keys_only,
                    count_only,
                    ..RangeRequest::default()
                },
                revision,
                filters,
            },
        )
}

fn compare() -> impl Strategy<Value = ACompare> + Clone {
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Greater,
        CompareResult::Less,
    ]);
    let target = prop_oneof![
        (-1i64..=3).prop_map(ATarget::Version),
        rev().prop_map(ATarget::Create),
        rev().prop_map(ATarget::Mod),
        value().prop_map(ATarget::Value),
        prop_oneof![Just(0i64), 1i64..=3].prop_map(ATarget::Lease),
    ];
    let span = prop_oneof![5 => key().prop_map(|k| (k, Vec::new())), 2 => span()];
    (result, target, span).prop_map(|(result, target, (key, range_end))| ACompare {
        result,
        target,
        key,
        range_end,
    })
}

/// A txn whose ops may nest txns `depth` levels further down.
fn txn(depth: u32) -> BoxedStrategy<ATxn> {
    let leaf = prop_oneof![
        3 => range().prop_map(AOp::Range),
        4 => put().prop_map(AOp::Put),
        2 => delete().prop_map(AOp::Delete),
    ];
    let op = if depth == 0 {
        leaf.boxed()
    } else {
        prop_oneof![10 => leaf, 1 => txn(depth - 1).prop_map(AOp::Txn)].boxed()
    };
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..3),
    )
        .prop_map(|(compare, success, failure)| ATxn {
            compare,
            success,
            failure,
        })
        .boxed()
}

fn step() -> impl Strategy<Value = Step> {
    let compact = prop_oneof![
        3 => (-1i64..=2).prop_map(Rev::FromCompact),
        3 => (-2i64..=1).prop_map(Rev::FromCurrent),
        1 => (1i64..=10).prop_map(Rev::Abs),
    ];
    let ttl = prop_oneof![
        1 => Just(-1i64),
        1 => Just(0i64),
        4 => 1i64..=10,
        1 => Just(model::LEASE_TTL_MAX_SECS),
        1 => Just(model::LEASE_TTL_MAX_SECS + 1),
    ];
    prop_oneof![
        6 => put().prop_map(Step::Put),
        2 => delete().prop_map(Step::Delete),
        5 => txn(2).prop_map(Step::Txn),
        3 => range().prop_map(Step::Range),
        2 => compact.prop_map(Step::Compact),
        2 => (ttl, prop_oneof![2 => Just(0i64), 1 => 1i64..=4])
            .prop_map(|(ttl, id)| Step::Grant { ttl, id }),
        1 => prop_oneof![4 => 1i64..=4, 1 => Just(UNKNOWN_LEASE)].prop_map(Step::Revoke),
    ]
}

fn history(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<Readable<Step>>> {
    prop::collection::vec(step().prop_map(Readable), len)
}

// ----- driving the store like a node -----

fn config() -> ProptestConfig {
    let cases = std::env::var("FAULTLINE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn all_keys_at(revision: i64) -> RangeRequest {
    RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision,
        ..RangeRequest::default()
    }
}

/// How one request ended on the store (and, as checked, on the model).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    /// `admit` refused it; it was never proposed.
    NotAdmitted(EtcdError),
    /// Applied at the next index with this answer.
    Applied(Result<Response, EtcdError>),
    /// Applying it panics, in etcd and in the store; the history cannot go on.
    Panicked,
}

/// A store and the model, fed the same committed log.
#[derive(Debug, Clone)]
struct Harness {
    store: Store,
    model: Model,
    /// The Raft index of the last entry applied.
    index: u64,
    now_ms: u64,
}

impl Harness {
    fn new(config: StoreConfig) -> Self {
        Harness {
            store: Store::new(config),
            model: Model::new(),
            index: 0,
            now_ms: 1_000,
        }
    }

    fn step(&mut self, step: &Step) -> Result<Outcome, TestCaseError> {
        let req = step.resolve(&self.model);
        self.drive(&req)
    }

    /// `admit`, then (if admitted) `apply` at the next index; both must answer as the model does.
    fn drive(&mut self, req: &Request) -> Result<Outcome, TestCaseError> {
        let admitted = self.store.admit(req);
        same(format!("admit {req:?}"), &admitted, &self.model.admit(req))?;
        if let Err(e) = admitted {
            // Never proposed: nothing changed.
            self.store.check_invariants();
            self.check_agrees()?;
            return Ok(Outcome::NotAdmitted(e));
        }
        if let Request::Range(r) = req {
            // The local read path answers as the applied one does.
            same(
                format!("local {req:?}"),
                &self.store.range(r),
                &self.model.range(r),
            )?;
        }
        self.index += 1;
        self.now_ms += 250;
        let expected = match self.model.apply(req) {
            Ok(resp) => Ok(resp),
            Err(model::Fail::Refused(e)) => Err(e),
            Err(model::Fail::Panics(why)) => {
                let (store, index, now_ms) = (&mut self.store, self.index, self.now_ms);
                let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    store.apply(index, req, now_ms)
                }));
                prop_assert!(
                    applied.is_err(),
                    "etcd panics applying {} ({}); the store answered {}",
                    show(&format!("{req:?}")),
                    why,
                    show(&format!("{applied:?}"))
                );
                return Ok(Outcome::Panicked);
            }
        };
        let actual = self.store.apply(self.index, req, self.now_ms);
        same(format!("apply {req:?}"), &actual.as_ref(), &Some(&expected))?;
        prop_assert!(
            self.store.apply(self.index, req, self.now_ms).is_none(),
            "entry {} applied twice",
            self.index
        );
        self.store.check_invariants();
        self.check_agrees()?;
        Ok(Outcome::Applied(expected))
    }

    /// The store's state agrees with the model's now.
    fn check_agrees(&self) -> Result<(), TestCaseError> {
        let (store, model) = (&self.store, &self.model);
        prop_assert_eq!(store.current_revision(), model.current());
        prop_assert_eq!(store.compact_revision(), model.compact_revision());
        prop_assert_eq!(store.consistent_index(), self.index);
        prop_assert_eq!(store.lease_leases(), model.lease_ids());
        for id in model.lease_ids().into_iter().chain([UNKNOWN_LEASE]) {
            let expected = match model.lease_ttl(id) {
                // Not the leader's lessor: the remaining TTL is the granted one.
                Some(ttl) => LeaseTimeToLiveResponse {
                    header: ResponseHeader {
                        revision: model.current(),
                        ..ResponseHeader::default()
                    },
                    id,
                    ttl,
                    granted_ttl: ttl,
                    keys: model.lease_keys(id),
                },
                None => LeaseTimeToLiveResponse {
                    header: ResponseHeader {
                        revision: model.current(),
                        ..ResponseHeader::default()
                    },
                    id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                },
            };
            same(
                format!("lease {id}"),
                &store.lease_time_to_live(id, true, self.now_ms),
                &expected,
            )?;
        }
        let all = all_keys_at(0);
        same("latest keyspace", &store.range(&all), &model.range(&all))?;
        Ok(())
    }

    /// A read at every revision from the compact revision to the current one (and just outside
    /// that window) agrees with the model.
    fn check_every_revision(&self) -> Result<(), TestCaseError> {
        let low = (self.model.compact_revision() - 1).max(1);
        for rev in low..=self.model.current() + 1 {
            let r = all_keys_at(rev);
            same(
                format!("read at {rev}"),
                &self.store.range(&r),
                &self.model.range(&r),
            )?;
        }
        Ok(())
    }
}

/// Two stores agree on everything observable: revisions, status, hashes and reads at every
/// revision they keep, leases.
fn check_same_store(a: &Store, b: &Store) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.current_revision(), b.current_revision());
    prop_assert_eq!(a.compact_revision(), b.compact_revision());
    prop_assert_eq!(a.consistent_index(), b.consistent_index());
    same("status", &a.status(), &b.status())?;
    prop_assert_eq!(a.hash_kv(0), b.hash_kv(0));
    prop_assert_eq!(a.lease_leases(), b.lease_leases());
    for id in a.lease_leases() {
        prop_assert_eq!(
            a.lease_time_to_live(id, true, 0),
            b.lease_time_to_live(id, true, 0)
        );
    }
    let low = (a.compact_revision() - 1).max(1);
    for rev in low..=a.current_revision() + 1 {
        same(format!("hash at {rev}"), &a.hash_kv(rev), &b.hash_kv(rev))?;
        let r = all_keys_at(rev);
        same(format!("read at {rev}"), &a.range(&r), &b.range(&r))?;
    }
    Ok(())
}

// ----- watches -----

const STREAM: u64 = 7;

/// Where a watch starts, relative to the state when it is created.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// `start_revision = 0`: from the next revision on.
    Next,
    FromCompact(i64),
    FromCurrent(i64),
    Abs(i64),
}

#[derive(Debug, Clone)]
struct WatchSpec {
    span: (Vec<u8>, Vec<u8>),
    start: Start,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
}

impl WatchSpec {
    fn resolve(&self, m: &Model) -> WatchCreateRequest {
        let start_revision = match self.start {
            Start::Next => 0,
            Start::FromCompact(d) => (m.compact_revision() + d).max(1),
            Start::FromCurrent(d) => (m.current() + d).max(1),
            Start::Abs(r) => r,
        };
        WatchCreateRequest {
            key: self.span.0.clone(),
            range_end: self.span.1.clone(),
            start_revision,
            prev_kv: self.prev_kv,
            no_put: self.no_put,
            no_delete: self.no_delete,
            ..WatchCreateRequest::default()
        }
    }
}

fn watch_spec() -> impl Strategy<Value = Readable<WatchSpec>> {
    let span = prop_oneof![
        3 => prop::sample::select(KEYS.to_vec()).prop_map(|k| (bytes(k), Vec::new())),
        2 => prop::sample::select(vec!["a", "b"]).prop_map(|p| (bytes(p), prefix_end(p))),
        1 => prop::sample::select(KEYS.to_vec()).prop_map(|k| (bytes(k), vec![0])),
        2 => Just((vec![0], vec![0])),
    ];
    let start = prop_oneof![
        1 => Just(Start::Next),
        3 => (-2i64..=1).prop_map(Start::FromCompact),
        3 => (-3i64..=2).prop_map(Start::FromCurrent),
        1 => (1i64..=12).prop_map(Start::Abs),
    ];
    (
        span,
        start,
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(span, start, prev_kv, no_put, no_delete)| {
            Readable(WatchSpec {
                span,
                start,
                prev_kv,
                no_put,
                no_delete,
            })
        })
}

/// Syncs until no watcher is behind, draining the stream as a client reading promptly would.
fn drain(store: &mut Store) -> Result<Vec<WatchResponse>, TestCaseError> {
    let mut out = store.watch_take(STREAM, usize::MAX);
    let mut rounds = 0;
    while store.watch_has_unsynced() {
        rounds += 1;
        prop_assert!(rounds < 10_000, "watchers never catch up");
        store.watch_sync();
        out.extend(store.watch_take(STREAM, usize::MAX));
    }
    prop_assert_eq!(store.watch_pending(STREAM), 0);
    store.check_invariants();
    Ok(out)
}

/// One watch as the test follows it.
#[derive(Debug)]
struct Followed {
    id: i64,
    req: WatchCreateRequest,
    /// Canceled at once for a compacted start.
    compacted: bool,
    /// The first revision it must report.
    from: i64,
    /// Every revision up to this one has been checked.
    checked_to: i64,
}

/// Responses carrying events for one watch: each holds whole revisions, in order, with the
/// header at the current revision, and together they are exactly `expected`.
fn check_events(
    responses: &[WatchResponse],
    expected: &[Event],
    current: i64,
) -> Result<(), TestCaseError> {
    let mut last_revision = i64::MIN;
    let mut got = Vec::new();
    for r in responses {
        prop_assert!(
            !r.created && !r.canceled && r.compact_revision == 0,
            "{:?}",
            r
        );
        prop_assert!(!r.events.is_empty(), "an empty event response {:?}", r);
        prop_assert_eq!(r.header.revision, current);
        let first = r.events[0].kv.mod_revision;
        prop_assert!(
            first > last_revision,
            "revision {} split across responses or out of order",
            first
        );
        last_revision = r.events[r.events.len() - 1].kv.mod_revision;
        got.extend(r.events.iter().cloned());
    }
    same("events", &got, &expected.to_vec())?;
    Ok(())
}

fn by_watch(responses: Vec<WatchResponse>) -> BTreeMap<i64, Vec<WatchResponse>> {
    let mut out: BTreeMap<i64, Vec<WatchResponse>> = BTreeMap::new();
    for r in responses {
        out.entry(r.watch_id).or_default().push(r);
    }
    out
}

fn filter_of(req: &WatchCreateRequest) -> model::WatchFilter<'_> {
    model::WatchFilter {
        key: &req.key,
        range_end: &req.range_end,
        prev_kv: req.prev_kv,
        no_put: req.no_put,
        no_delete: req.no_delete,
    }
}

fn run_watch_case(
    prefix: &[Readable<Step>],
    watches: &[Readable<WatchSpec>],
    suffix: &[Readable<Step>],
    watch_config: WatchConfig,
) -> Result<(), TestCaseError> {
    let mut h = Harness::new(StoreConfig {
        watch: watch_config,
        ..StoreConfig::default()
    });
    for step in prefix {
        if h.step(step)? == Outcome::Panicked {
            return Ok(());
        }
    }
    let (current, compact) = (h.model.current(), h.model.compact_revision());
    let mut followed = Vec::new();
    for spec in watches {
        let req = spec.resolve(&h.model);
        let id = h
            .store
            .watch_create(STREAM, &req)
            .map_err(|e| TestCaseError::fail(format!("watch_create {req:?}: {e}")))?;
        prop_assert!(followed.iter().all(|f: &Followed| f.id != id), "id reused");
        let compacted = req.start_revision != 0 && req.start_revision < compact;
        let from = if req.start_revision == 0 {
            current + 1
        } else {
            req.start_revision
        };
        followed.push(Followed {
            id,
            req,
            compacted,
            from,
            checked_to: current,
        });
    }

    // Catch-up: created, then either the compaction cancel or exactly the history since `from`.
    let mut got = by_watch(drain(&mut h.store)?);
    for f in &followed {
        let responses = got.remove(&f.id).unwrap_or_default();
        let created = WatchResponse {
            header: ResponseHeader {
                revision: current,
                ..ResponseHeader::default()
            },
            watch_id: f.id,
            created: true,
            ..WatchResponse::default()
        };
        same(
            format!("first response of {f:?}"),
            &responses.first(),
            &Some(&created),
        )?;
        if f.compacted {
            same(
                format!("responses of compacted {f:?}: {responses:?}"),
                &responses.len(),
                &2,
            )?;
            let cancel = &responses[1];
            prop_assert!(cancel.canceled, "{:?}", cancel);
            prop_assert_eq!(cancel.compact_revision, compact);
            prop_assert!(cancel.events.is_empty());
            prop_assert_eq!(cancel.header.revision, current);
        } else {
            let expected = h.model.watch_events(&filter_of(&f.req), f.from, current);
            check_events(&responses[1..], &expected, current)?;
        }
    }
    prop_assert!(got.is_empty(), "responses for unknown watches {:?}", got);

    // Live: each write reaches every watch that wants it, before the next request.
    for step in suffix {
        if h.step(step)? == Outcome::Panicked {
            return Ok(());
        }
        let current = h.model.current();
        let mut got = by_watch(drain(&mut h.store)?);
        for f in &mut followed {
            let responses = got.remove(&f.id).unwrap_or_default();
            if f.compacted {
                prop_assert!(
                    responses.is_empty(),
                    "a canceled watch spoke {:?}",
                    responses
                );
                continue;
            }
            let from = f.from.max(f.checked_to + 1);
            let expected = h.model.watch_events(&filter_of(&f.req), from, current);
            check_events(&responses, &expected, current)?;
            f.checked_to = current;
        }
        prop_assert!(got.is_empty(), "responses for unknown watches {:?}", got);
    }
    Ok(())
}

// ----- snapshot images -----

fn run_image_case(
    prefix: &[Readable<Step>],
    suffix: &[Readable<Step>],
) -> Result<(), TestCaseError> {
    let mut a = Harness::new(StoreConfig::default());
    for step in prefix {
        if a.step(step)? == Outcome::Panicked {
            return Ok(());
        }
    }
    let image = a.store.image();
    let json = serde_json::to_string(&image).expect("an image serializes");
    let back: StoreImage = serde_json::from_str(&json).expect("an image deserializes");
    prop_assert_eq!(&back, &image);
    let restored = Store::restore(StoreConfig::default(), back)
        .map_err(|e| TestCaseError::fail(format!("restore: {e}")))?;
    restored.check_invariants();
    same("image of the restored store", &restored.image(), &image)?;
    let mut b = Harness {
        store: restored,
        ..a.clone()
    };
    check_same_store(&a.store, &b.store)?;
    for step in suffix {
        let req = step.resolve(&a.model);
        let from_a = a.drive(&req)?;
        let from_b = b.drive(&req)?;
        same(format!("{req:?} (original vs restored)"), &from_a, &from_b)?;
        if from_a == Outcome::Panicked {
            return Ok(());
        }
    }
    check_same_store(&a.store, &b.store)?;
    b.check_every_revision()?;
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn store_matches_naive_model_for_random_histories(steps in history(1..80)) {
        let mut h = Harness::new(StoreConfig::default());
        for step in &steps {
            if h.step(step)? == Outcome::Panicked {
                return Ok(());
            }
        }
        h.check_every_revision()?;
    }

    #[test]
    fn watch_delivers_exactly_the_model_history_from_any_start_revision(
        prefix in history(0..50),
        watches in prop::collection::vec(watch_spec(), 1..6),
        suffix in history(0..30),
        stream_pending_max in prop::sample::select(vec![1usize, 2, 128]),
        batch_revisions_max in prop::sample::select(vec![1i64, 2, 1000]),
    ) {
        let watch_config = WatchConfig {
            stream_pending_max,
            batch_revisions_max,
            ..WatchConfig::default()
        };
        run_watch_case(&prefix, &watches, &suffix, watch_config)?;
    }

    #[test]
    fn snapshot_image_round_trip_preserves_every_answer(
        prefix in history(0..50),
        suffix in history(0..30),
    ) {
        run_image_case(&prefix, &suffix)?;
    }
}

// ----- fixed histories for what the properties found -----

fn put_req(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: bytes(key),
        value: bytes(value),
        ..PutRequest::default()
    }
}

/// Drives a fixed history through store and model; panics at the first disagreement.
fn agree(requests: &[Request]) -> Vec<Outcome> {
    let mut h = Harness::new(StoreConfig::default());
    let mut out = Vec::new();
    for req in requests {
        let outcome = h.drive(req).unwrap_or_else(|e| panic!("{e}"));
        out.push(outcome.clone());
        if outcome == Outcome::Panicked {
            return out;
        }
    }
    h.check_every_revision().unwrap_or_else(|e| panic!("{e}"));
    out
}

#[test]
fn txn_compare_on_an_empty_key_is_refused_as_empty_key() {
    let txn = Request::Txn(TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: Vec::new(),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp::Put(put_req("a", "1"))],
        failure: Vec::new(),
    });
    assert_eq!(
        agree(&[txn]),
        vec![Outcome::NotAdmitted(EtcdError::EmptyKey)]
    );
}

/// etcd 3.4, measured by the conformance test: a plain Put looks the lease up first, a put in a
/// txn (checkRequestPut) the key first.
#[test]
fn a_plain_put_reports_a_missing_lease_first_and_a_txn_put_a_missing_key_first() {
    let put = PutRequest {
        lease: UNKNOWN_LEASE,
        ignore_value: true,
        ..put_req("a", "")
    };
    let outcomes = agree(&[
        Request::Put(put.clone()),
        Request::Txn(TxnRequest {
            success: vec![RequestOp::Put(put)],
            ..TxnRequest::default()
        }),
    ]);
    assert_eq!(
        outcomes,
        vec![
            Outcome::Applied(Err(EtcdError::LeaseNotFound)),
            Outcome::Applied(Err(EtcdError::KeyNotFound))
        ]
    );
}

#[test]
fn nested_txn_may_put_a_key_in_one_branch_and_delete_it_in_the_other() {
    let nested = TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal,
            target: CompareTarget::Version(0),
            key: bytes("a"),
            range_end: Vec::new(),
        }],
        success: vec![RequestOp::Put(put_req("a", "1"))],
        failure: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: bytes("a"),
            ..DeleteRangeRequest::default()
        })],
    };
    let txn = Request::Txn(TxnRequest {
        success: vec![RequestOp::Txn(nested)],
        ..TxnRequest::default()
    });
    let outcomes = agree(&[txn.clone(), txn]);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Applied(Ok(_)))),
        "{outcomes:?}"
    );
}

/// etcd's duplicate-key check is order-dependent across sibling nested txns (the store follows
/// etcd); a from-key delete covers the keys after it (the contract, and etcd's pending fix).
#[test]
fn duplicate_keys_follow_etcds_check_intervals_quirks() {
    let put_a = TxnRequest {
        success: vec![RequestOp::Put(put_req("a", "1"))],
        ..TxnRequest::default()
    };
    let delete_a = TxnRequest {
        success: vec![RequestOp::DeleteRange(DeleteRangeRequest {
            key: bytes("a"),
            ..DeleteRangeRequest::default()
        })],
        ..TxnRequest::default()
    };
    let siblings = |first: &TxnRequest, second: &TxnRequest| {
        Request::Txn(TxnRequest {
            success: vec![
                RequestOp::Txn(first.clone()),
                RequestOp::Txn(second.clone()),
            ],
            ..TxnRequest::default()
        })
    };
    let from_key_delete_then_put = Request::Txn(TxnRequest {
        success: vec![
            RequestOp::Put(put_req("b", "1")),
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: bytes("a"),
                range_end: vec![0],
                prev_kv: true,
            }),
            RequestOp::Put(put_req("a", "2")),
        ],
        ..TxnRequest::default()
    });
    let outcomes = agree(&[
        Request::Put(put_req("a", "0")),
        siblings(&put_a, &delete_a),
        siblings(&delete_a, &put_a),
        from_key_delete_then_put,
    ]);
    assert!(
        matches!(outcomes[1], Outcome::Applied(Ok(_))),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[2], Outcome::NotAdmitted(EtcdError::DuplicateKey));
    assert_eq!(outcomes[3], Outcome::NotAdmitted(EtcdError::DuplicateKey));
}

#[test]
fn txn_shape_errors_come_before_duplicate_key_errors() {
    let nested = TxnRequest {
        success: vec![
            RequestOp::Put(put_req("a", "1")),
            RequestOp::Put(put_req("a", "2")),
        ],
        ..TxnRequest::default()
    };
    let txn = Request::Txn(TxnRequest {
        success: vec![RequestOp::Txn(nested), RequestOp::Put(put_req("", "x"))],
        ..TxnRequest::default()
    });
    let store = Store::new(StoreConfig::default());
    assert_eq!(store.admit(&txn), Err(EtcdError::EmptyKey));
    assert_eq!(
        agree(&[txn]),
        vec![Outcome::NotAdmitted(EtcdError::EmptyKey)]
    );
}

/// A from-key delete followed by an ignore_value put of a key it deleted passes etcd 3.5's checks
/// and then panics etcd's apply on every member. The store refuses it before proposal instead.
#[test]
fn ignore_value_put_of_a_key_the_same_txn_deleted_from_key_is_refused_not_a_crash() {
    let txn = Request::Txn(TxnRequest {
        success: vec![
            RequestOp::DeleteRange(DeleteRangeRequest {
                key: bytes("a"),
                range_end: vec![0],
                prev_kv: false,
            }),
            RequestOp::Put(PutRequest {
                ignore_value: true,
                ..put_req("b", "")
            }),
        ],
        ..TxnRequest::default()
    });
    let outcomes = agree(&[Request::Put(put_req("b", "1")), txn]);
    assert_eq!(outcomes[1], Outcome::NotAdmitted(EtcdError::DuplicateKey));
}
