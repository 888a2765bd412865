//! The state machine: applies requests in log order and answers local queries.
//!
//! [`Store`] joins the MVCC keyspace, the lease table, the alarms, the backend accounting and the
//! watch hub, and keeps the *consistent index* (the Raft index of the last applied entry) with
//! them, so that an entry is never applied twice. It is pure: no IO, no clock, no randomness;
//! time arrives as `now_ms`. The node shell decides what to propose, when to apply and what to
//! send; this module decides what a request does.
//!
//! Request flow, as in etcd: [`Store::admit`] runs the checks etcd makes before proposing (sizes,
//! op counts, duplicate keys, the quota), [`Store::apply`] runs a committed entry, and the local
//! queries ([`Store::range`], [`Store::status`], [`Store::hash_kv`], lease TTLs) read applied
//! state.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::api::*;
use crate::backend::LEASE_RECORD_BYTES;
use crate::bugs::PlantedBugs;
use crate::error::EtcdError;
use crate::lease::{Lease, LeaseTable, LEASE_TTL_MAX_SECS};
use crate::mvcc::{Mvcc, Record, Revision};
use crate::persist::Flushed;
use crate::watch::{StreamId, WatchConfig, WatchHub, WatchStats};

/// etcd's DefaultMaxRequestBytes: 1.5 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 1536 * 1024;
/// etcd's DefaultQuotaBytes: 2 GiB.
pub const QUOTA_BYTES_DEFAULT: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's kvOverhead in its quota cost of a put.
const PUT_COST_OVERHEAD_BYTES: u64 = 256;
/// etcd's leaseOverhead in its quota cost of a grant.
const LEASE_GRANT_COST_BYTES: u64 = 64;
/// Bytes one raised alarm occupies in the alarm bucket.
const ALARM_RECORD_BYTES: u64 = 16;

/// The store's limits. Every field has etcd's default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Largest encoded request accepted (`--max-request-bytes`).
    pub request_bytes_max: usize,
    /// Most ops in one txn branch, and most compares (`--max-txn-ops`).
    pub txn_ops_max: usize,
    /// Backend size at which writes are refused and NOSPACE raised (`--quota-backend-bytes`).
    pub quota_bytes: u64,
    /// Shortest lease TTL; shorter grants are raised to it. etcd derives it from the election
    /// timeout: ceil(1.5 × election timeout) seconds, 2 s on defaults.
    pub lease_ttl_min_secs: i64,
    pub watch: WatchConfig,
    /// Known bugs re-planted on purpose, all off by default.
    #[serde(default)]
    pub bugs: PlantedBugs,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            txn_ops_max: 128,
            quota_bytes: QUOTA_BYTES_DEFAULT,
            lease_ttl_min_secs: 2,
            watch: WatchConfig::default(),
            bugs: PlantedBugs::default(),
        }
    }
}

/// The replicated state plus this member's local views (lease expiry, watchers).
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) config: StoreConfig,
    pub(crate) mvcc: Mvcc,
    pub(crate) leases: LeaseTable,
    pub(crate) alarms: BTreeSet<AlarmMember>,
    pub(crate) consistent_index: u64,
    pub(crate) hub: WatchHub,
    /// What the backend's db file already holds, to tell the next commit what changed.
    pub(crate) flushed: Flushed,
}

/// A write in progress: the revision it writes and the sub-revision of its next change.
struct WriteTxn {
    begin_revision: i64,
    changes: i64,
}

impl WriteTxn {
    fn next_revision(&mut self) -> Revision {
        let rev = Revision::new(self.begin_revision + 1, self.changes);
        self.changes += 1;
        rev
    }
    /// The revision reads inside the txn see: its own writes included.
    fn read_revision(&self) -> i64 {
        if self.changes > 0 {
            self.begin_revision + 1
        } else {
            self.begin_revision
        }
    }
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..ResponseHeader::default()
    }
}

/// An approximation of a request's protobuf size, for the request size limit.
pub fn request_bytes(req: &Request) -> usize {
    fn op_bytes(op: &RequestOp) -> usize {
        match op {
            RequestOp::Range(r) => 16 + r.key.len() + r.range_end.len() + 40,
            RequestOp::Put(p) => 16 + p.key.len() + p.value.len() + 16,
            RequestOp::DeleteRange(d) => 16 + d.key.len() + d.range_end.len(),
            RequestOp::Txn(t) => txn_bytes(t),
        }
    }
    fn txn_bytes(t: &TxnRequest) -> usize {
        let compares: usize = t
            .compare
            .iter()
            .map(|c| {
                let operand = match &c.target {
                    CompareTarget::Value(v) => v.len(),
                    _ => 10,
                };
                12 + c.key.len() + c.range_end.len() + operand
            })
            .sum();
        8 + compares
            + t.success
                .iter()
                .chain(&t.failure)
                .map(op_bytes)
                .sum::<usize>()
    }
    match req {
        Request::Range(r) => op_bytes(&RequestOp::Range(r.clone())),
        Request::Put(p) => 16 + p.key.len() + p.value.len() + 16,
        Request::DeleteRange(d) => 16 + d.key.len() + d.range_end.len(),
        Request::Txn(t) => txn_bytes(t),
        Request::Compact(_) | Request::LeaseGrant(_) | Request::LeaseRevoke(_) => 24,
        Request::Alarm(_) => 24,
    }
}

/// etcd's quota cost: the bytes a request may add (0 for requests that never grow the store).
pub fn quota_cost(req: &Request) -> u64 {
    fn put_cost(p: &PutRequest) -> u64 {
        PUT_COST_OVERHEAD_BYTES + p.key.len() as u64 + p.value.len() as u64
    }
    fn branch_cost(ops: &[RequestOp]) -> u64 {
        ops.iter()
            .map(|op| {
                if let RequestOp::Put(p) = op {
                    put_cost(p)
                } else {
                    0
                }
            })
            .sum()
    }
    match req {
        Request::Put(p) => put_cost(p),
        Request::Txn(t) => branch_cost(&t.success).max(branch_cost(&t.failure)),
        Request::LeaseGrant(_) => LEASE_GRANT_COST_BYTES,
        _ => 0,
    }
}

fn check_range_request(r: &RangeRequest) -> Result<(), EtcdError> {
    if r.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

fn check_put_request(p: &PutRequest) -> Result<(), EtcdError> {
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

fn check_delete_request(d: &DeleteRangeRequest) -> Result<(), EtcdError> {
    if d.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    Ok(())
}

fn check_txn_request(t: &TxnRequest, ops_max: usize) -> Result<(), EtcdError> {
    check_txn_shape(t, ops_max as i64)?;
    check_intervals(&t.success)?;
    check_intervals(&t.failure)?;
    Ok(())
}

/// etcd's checkTxnRequest: the longest of compares, success and failure must fit the op limit,
/// and a nested txn gets what its parent left over.
fn check_txn_shape(t: &TxnRequest, ops_max: i64) -> Result<(), EtcdError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len()) as i64;
    if opc > ops_max {
        return Err(EtcdError::TooManyOps);
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) => check_range_request(r)?,
            RequestOp::Put(p) => check_put_request(p)?,
            RequestOp::DeleteRange(d) => check_delete_request(d)?,
            RequestOp::Txn(nested) => check_txn_shape(nested, ops_max - opc)?,
        }
    }
    Ok(())
}

/// Whether a put of `key` collides with a delete of `(start, end)` in the duplicate-key check.
/// etcd 3.5 builds a literal interval `[start, end)` here, so its from-key delete (`end == [0]`)
/// collides with nothing, and a txn may delete a key from-key and then put it with
/// `ignore_value`, which panics etcd's apply on every member. The store treats a from-key delete
/// as the unbounded range it is (as etcd's pending fix does), so such a txn is refused as a
/// duplicate key before it is proposed.
fn delete_covers(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

type Intervals = Vec<(Vec<u8>, Vec<u8>)>;

/// etcd's duplicate-key rule for one branch, in etcd's order: this level's deletes first; then
/// each nested txn's puts must not repeat a put or fall in a delete seen so far (a key put by
/// both branches of one nested txn is fine, only one runs), after which its deletes join; then
/// this level's puts, against everything.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<Vec<u8>>, Intervals), EtcdError> {
    let mut dels: Intervals = Vec::new();
    for op in ops {
        if let RequestOp::DeleteRange(d) = op {
            dels.push((d.key.clone(), d.range_end.clone()));
        }
    }
    let covered = |dels: &Intervals, key: &[u8]| dels.iter().any(|(s, e)| delete_covers(key, s, e));
    let mut puts: BTreeSet<Vec<u8>> = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for key in &puts_then {
            if puts.contains(key) || covered(&dels, key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        for key in &puts_else {
            if puts.contains(key) && !puts_then.contains(key) || covered(&dels, key) {
                return Err(EtcdError::DuplicateKey);
            }
            puts.insert(key.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key) || covered(&dels, &p.key) {
            return Err(EtcdError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

fn compare_holds(c: &Compare, kv: Option<&KeyValue>) -> bool {
    use std::cmp::Ordering;
    let ordering = match (&c.target, kv) {
        // A missing key has no value: every value compare fails (etcd).
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(v), Some(kv)) => kv.value.as_slice().cmp(v.as_slice()),
        (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
        (CompareTarget::Create(v), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(v),
        (CompareTarget::Mod(v), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(v),
        (CompareTarget::Lease(v), kv) => kv.map_or(0, |kv| kv.lease).cmp(v),
    };
    match c.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        let hub = WatchHub::new(config.watch.clone(), config.bugs.clone());
        Store {
            config,
            mvcc: Mvcc::new(),
            leases: LeaseTable::new(),
            alarms: BTreeSet::new(),
            consistent_index: 0,
            hub,
            flushed: Flushed::default(),
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    pub fn current_revision(&self) -> i64 {
        self.mvcc.current_revision()
    }

    pub fn compact_revision(&self) -> i64 {
        self.mvcc.compact_revision()
    }

    /// The Raft index of the last entry applied.
    pub fn consistent_index(&self) -> u64 {
        self.consistent_index
    }

    pub fn mvcc(&self) -> &Mvcc {
        &self.mvcc
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.alarms.iter().copied().collect()
    }

    fn alarm_raised(&self, alarm: AlarmType) -> bool {
        self.alarms.iter().any(|a| a.alarm == alarm)
    }

    /// The checks etcd makes before proposing a request: shape, size, txn op counts, duplicate
    /// keys, a raised CORRUPT alarm, and the quota. On `Err(NoSpace)` from the quota the caller
    /// proposes a NOSPACE alarm, as etcd's quota check does.
    pub fn admit(&self, req: &Request) -> Result<(), EtcdError> {
        if request_bytes(req) > self.config.request_bytes_max {
            return Err(EtcdError::RequestTooLarge);
        }
        match req {
            Request::Range(r) => check_range_request(r)?,
            Request::Put(p) => check_put_request(p)?,
            Request::DeleteRange(d) => check_delete_request(d)?,
            Request::Txn(t) => check_txn_request(t, self.config.txn_ops_max)?,
            Request::Compact(_)
            | Request::LeaseGrant(_)
            | Request::LeaseRevoke(_)
            | Request::Alarm(_) => {}
        }
        if self.alarm_raised(AlarmType::Corrupt) && !matches!(req, Request::Alarm(_)) {
            return Err(EtcdError::Corrupt);
        }
        let cost = quota_cost(req);
        if cost > 0 && self.db_size_bytes().0 + cost >= self.config.quota_bytes {
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    /// Marks a Raft entry that carries no request (an empty entry, a conf change) as applied.
    pub fn apply_noop(&mut self, index: u64) {
        if index > self.consistent_index {
            self.consistent_index = index;
        }
    }

    /// Applies the committed entry at Raft `index`. Returns `None` if the entry was applied
    /// before (its index is at or below the consistent index), so a replay after a restart is
    /// harmless.
    pub fn apply(
        &mut self,
        index: u64,
        req: &Request,
        now_ms: u64,
    ) -> Option<Result<Response, EtcdError>> {
        if index <= self.consistent_index {
            return None;
        }
        let result = self.apply_request(req, now_ms);
        self.consistent_index = index;
        Some(result)
    }

    fn apply_request(&mut self, req: &Request, now_ms: u64) -> Result<Response, EtcdError> {
        if self.alarm_raised(AlarmType::Corrupt) && !matches!(req, Request::Alarm(_)) {
            return Err(EtcdError::Corrupt);
        }
        if self.alarm_raised(AlarmType::NoSpace) {
            let capped = match req {
                Request::Put(_) | Request::LeaseGrant(_) => true,
                Request::Txn(_) => quota_cost(req) > 0,
                _ => false,
            };
            if capped {
                return Err(EtcdError::NoSpace);
            }
        }
        match req {
            Request::Range(r) => self.range(r).map(Response::Range),
            Request::Put(p) => {
                // etcd's Put looks the lease up before the key an ignore_* put needs; a put
                // inside a txn (checkRequestPut) does the key first.
                if p.lease != 0 && !self.leases.contains(p.lease) {
                    return Err(EtcdError::LeaseNotFound);
                }
                let txn = TxnRequest {
                    success: vec![RequestOp::Put(p.clone())],
                    ..Default::default()
                };
                let mut resp = self.apply_txn(&txn)?;
                match resp.responses.pop() {
                    Some(ResponseOp::Put(mut put)) => {
                        put.header = resp.header;
                        Ok(Response::Put(put))
                    }
                    other => unreachable!("a put txn answered {other:?}"),
                }
            }
            Request::DeleteRange(d) => {
                let txn = TxnRequest {
                    success: vec![RequestOp::DeleteRange(d.clone())],
                    ..Default::default()
                };
                let mut resp = self.apply_txn(&txn)?;
                match resp.responses.pop() {
                    Some(ResponseOp::DeleteRange(mut del)) => {
                        del.header = resp.header;
                        Ok(Response::DeleteRange(del))
                    }
                    other => unreachable!("a delete txn answered {other:?}"),
                }
            }
            Request::Txn(t) => self.apply_txn(t).map(Response::Txn),
            Request::Compact(c) => self.apply_compact(c).map(Response::Compact),
            Request::LeaseGrant(g) => self.apply_lease_grant(g, now_ms).map(Response::LeaseGrant),
            Request::LeaseRevoke(r) => self.apply_lease_revoke(r.id).map(Response::LeaseRevoke),
            Request::Alarm(a) => Ok(Response::Alarm(self.apply_alarm(a))),
        }
    }

    /// Range over applied state (a serializable read, or a linearizable one once the node has
    /// confirmed its read index).
    pub fn range(&self, r: &RangeRequest) -> Result<RangeResponse, EtcdError> {
        check_range_request(r)?;
        if self.alarm_raised(AlarmType::Corrupt) {
            return Err(EtcdError::Corrupt);
        }
        self.check_read_revision(r.revision, self.current_revision())?;
        Ok(self.range_at(r, self.current_revision()))
    }

    fn check_read_revision(&self, revision: i64, current: i64) -> Result<(), EtcdError> {
        if revision > current {
            return Err(EtcdError::FutureRevision);
        }
        if revision > 0 && revision < self.compact_revision() {
            return Err(EtcdError::Compacted);
        }
        Ok(())
    }

    /// etcd's checkRange for a range inside a txn: revision 0 is the latest; above the current
    /// revision is a future one; below the first readable revision is compacted. The first
    /// readable revision is the compact revision, or -1 before any compaction (etcd's
    /// `compactMainRev` starts at -1), so -1 reads the latest until the first compaction and is
    /// compacted after it, while a plain range always reads the latest for revisions <= 0.
    fn check_txn_range_revision(&self, revision: i64) -> Result<(), EtcdError> {
        let first = if self.compact_revision() > 0 {
            self.compact_revision()
        } else {
            -1
        };
        if revision == 0 {
            Ok(())
        } else if revision > self.current_revision() {
            Err(EtcdError::FutureRevision)
        } else if revision < first {
            Err(EtcdError::Compacted)
        } else {
            Ok(())
        }
    }

    /// A range already validated, reading at `r.revision` or else at `latest`.
    fn range_at(&self, r: &RangeRequest, latest: i64) -> RangeResponse {
        let at = if r.revision > 0 { r.revision } else { latest };
        let matched: Vec<&KeyValue> = self.mvcc.range_at(&r.key, &r.range_end, at).collect();
        let count = matched.len() as i64;
        // etcd's applyRange: with no sort order and no revision filters the limit (plus one, for
        // `more`) is applied while reading in key order, and only those keys are then sorted by
        // a non-key target; otherwise every key is read, filtered, sorted and then truncated.
        let read_limit = if r.sort_order == SortOrder::None
            && r.min_mod_revision == 0
            && r.max_mod_revision == 0
            && r.min_create_revision == 0
            && r.max_create_revision == 0
            && r.limit > 0
        {
            usize::try_from(r.limit).map_or(usize::MAX, |l| l.saturating_add(1))
        } else {
            usize::MAX
        };
        let mut kvs: Vec<KeyValue> = matched
            .into_iter()
            .take(read_limit)
            .filter(|kv| {
                (r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
                    && (r.max_mod_revision == 0 || kv.mod_revision <= r.max_mod_revision)
                    && (r.min_create_revision == 0 || kv.create_revision >= r.min_create_revision)
                    && (r.max_create_revision == 0 || kv.create_revision <= r.max_create_revision)
            })
            .cloned()
            .collect();
        if r.count_only {
            return RangeResponse {
                header: header(latest),
                kvs: Vec::new(),
                more: false,
                count,
            };
        }
        sort_kvs(&mut kvs, r.sort_order, r.sort_target);
        let mut more = false;
        if r.limit > 0 && kvs.len() > r.limit as usize {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        RangeResponse {
            header: header(latest),
            kvs,
            more,
            count,
        }
    }

    /// Evaluates every compare of a txn and of the nested txns on its chosen path against the
    /// state before the txn writes anything, as etcd does, returning the branch choices in
    /// depth-first order.
    fn txn_path(&self, t: &TxnRequest, path: &mut Vec<bool>) {
        let current = self.current_revision();
        let succeeded = t.compare.iter().all(|c| {
            if c.range_end.is_empty() {
                compare_holds(c, self.mvcc.kv_at(&c.key, current))
            } else {
                let kvs: Vec<&KeyValue> =
                    self.mvcc.range_at(&c.key, &c.range_end, current).collect();
                if kvs.is_empty() {
                    compare_holds(c, None)
                } else {
                    kvs.into_iter().all(|kv| compare_holds(c, Some(kv)))
                }
            }
        });
        path.push(succeeded);
        let branch = if succeeded { &t.success } else { &t.failure };
        for op in branch {
            if let RequestOp::Txn(nested) = op {
                self.txn_path(nested, path);
            }
        }
    }

    /// The checks of the chosen path that need state: leases of puts, keys of ignore_* puts, and
    /// read revisions. A failure aborts the whole txn before it writes.
    /// etcd's checkRequests over the branches the compares chose: every put on the path is
    /// checked first (`puts`), then every range, so a bad lease wins over a future revision.
    fn check_path(
        &self,
        t: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        puts: bool,
    ) -> Result<(), EtcdError> {
        let branch = if path[*at] { &t.success } else { &t.failure };
        *at += 1;
        for op in branch {
            match op {
                RequestOp::Put(p) if puts => {
                    // etcd's checkPut: the key an ignore_* put needs first, then the lease.
                    if (p.ignore_value || p.ignore_lease) && self.mvcc.latest(&p.key).is_none() {
                        return Err(EtcdError::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.contains(p.lease) {
                        return Err(EtcdError::LeaseNotFound);
                    }
                }
                RequestOp::Range(r) if !puts => self.check_txn_range_revision(r.revision)?,
                RequestOp::Put(_) | RequestOp::Range(_) | RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(nested) => self.check_path(nested, path, at, puts)?,
            }
        }
        Ok(())
    }

    fn apply_txn(&mut self, t: &TxnRequest) -> Result<TxnResponse, EtcdError> {
        let mut path = Vec::new();
        self.txn_path(t, &mut path);
        self.check_path(t, &path, &mut 0, true)?;
        self.check_path(t, &path, &mut 0, false)?;
        let mut txn = WriteTxn {
            begin_revision: self.current_revision(),
            changes: 0,
        };
        let mut resp = self.execute_txn(t, &path, &mut 0, &mut txn);
        let changed = txn.changes > 0;
        self.mvcc.end_write(changed);
        resp.header = header(self.current_revision());
        if changed {
            self.hub.notify(self.current_revision(), &self.mvcc);
        }
        Ok(resp)
    }

    fn execute_txn(
        &mut self,
        t: &TxnRequest,
        path: &[bool],
        at: &mut usize,
        txn: &mut WriteTxn,
    ) -> TxnResponse {
        let succeeded = path[*at];
        *at += 1;
        let branch = if succeeded { &t.success } else { &t.failure };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let resp = match op {
                RequestOp::Range(r) => {
                    let read_at = txn.read_revision();
                    ResponseOp::Range(self.range_at(r, read_at))
                }
                RequestOp::Put(p) => ResponseOp::Put(self.execute_put(p, txn)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.execute_delete(d, txn)),
                RequestOp::Txn(nested) => {
                    // etcd leaves a nested txn's header empty.
                    let mut resp = self.execute_txn(nested, path, at, txn);
                    resp.header = ResponseHeader::default();
                    ResponseOp::Txn(resp)
                }
            };
            responses.push(resp);
        }
        TxnResponse {
            header: ResponseHeader::default(),
            succeeded,
            responses,
        }
    }

    fn execute_put(&mut self, p: &PutRequest, txn: &mut WriteTxn) -> PutResponse {
        let prev = self.mvcc.latest(&p.key).cloned();
        let value = match (&prev, p.ignore_value) {
            (Some(prev), true) => prev.value.clone(),
            (None, true) => unreachable!("admission refuses a txn that deletes a key it then puts"),
            (_, false) => p.value.clone(),
        };
        let lease = match (&prev, p.ignore_lease) {
            (Some(prev), true) => prev.lease,
            (None, true) => unreachable!("admission refuses a txn that deletes a key it then puts"),
            (_, false) => p.lease,
        };
        assert!(
            lease == 0 || self.leases.contains(lease),
            "put to a missing lease passed checks"
        );
        let rev = txn.next_revision();
        let (_, prev) = self.mvcc.put(rev, &p.key, value, lease);
        if let Some(prev) = &prev {
            self.leases.detach(prev.lease, &p.key);
        }
        self.leases.attach(lease, &p.key);
        PutResponse {
            header: header(txn.begin_revision + 1),
            prev_kv: if p.prev_kv { prev } else { None },
        }
    }

    fn execute_delete(
        &mut self,
        d: &DeleteRangeRequest,
        txn: &mut WriteTxn,
    ) -> DeleteRangeResponse {
        let read_at = txn.read_revision();
        let doomed: Vec<Vec<u8>> = self
            .mvcc
            .range_at(&d.key, &d.range_end, read_at)
            .map(|kv| kv.key.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        for key in &doomed {
            let rev = txn.next_revision();
            let prev = self.mvcc.delete(rev, key);
            self.leases.detach(prev.lease, key);
            if d.prev_kv {
                prev_kvs.push(prev);
            }
        }
        let revision = if txn.changes > 0 {
            txn.begin_revision + 1
        } else {
            txn.begin_revision
        };
        DeleteRangeResponse {
            header: header(revision),
            deleted: doomed.len() as i64,
            prev_kvs,
        }
    }

    fn apply_compact(&mut self, c: &CompactionRequest) -> Result<CompactionResponse, EtcdError> {
        if c.revision <= self.compact_revision() {
            return Err(EtcdError::Compacted);
        }
        if c.revision > self.current_revision() {
            return Err(EtcdError::FutureRevision);
        }
        self.stash_writes_before_compaction();
        let removed = self
            .mvcc
            .compact(c.revision, self.config.bugs.watch_compact_revision);
        self.schedule_db_compaction(c.revision, removed);
        Ok(CompactionResponse {
            header: header(self.current_revision()),
        })
    }

    fn apply_lease_grant(
        &mut self,
        g: &LeaseGrantRequest,
        now_ms: u64,
    ) -> Result<LeaseGrantResponse, EtcdError> {
        if g.ttl > LEASE_TTL_MAX_SECS {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        let id = if g.id == 0 {
            self.leases.choose_id()
        } else {
            g.id
        };
        if self.leases.contains(id) {
            return Err(EtcdError::LeaseExists);
        }
        let ttl = g.ttl.max(self.config.lease_ttl_min_secs);
        self.leases.grant(id, ttl, now_ms);
        self.mvcc.backend_mut().allocate(LEASE_RECORD_BYTES);
        Ok(LeaseGrantResponse {
            header: header(self.current_revision()),
            id,
            ttl,
        })
    }

    fn apply_lease_revoke(&mut self, id: LeaseId) -> Result<LeaseRevokeResponse, EtcdError> {
        let lease = self.leases.revoke(id).ok_or(EtcdError::LeaseNotFound)?;
        self.mvcc.backend_mut().free(LEASE_RECORD_BYTES);
        let mut txn = WriteTxn {
            begin_revision: self.current_revision(),
            changes: 0,
        };
        for key in &lease.keys {
            let rev = txn.next_revision();
            let prev = self.mvcc.delete(rev, key);
            assert_eq!(prev.lease, id, "a lease listed a key attached elsewhere");
        }
        let changed = txn.changes > 0;
        self.mvcc.end_write(changed);
        if changed {
            self.hub.notify(self.current_revision(), &self.mvcc);
        }
        Ok(LeaseRevokeResponse {
            header: header(self.current_revision()),
        })
    }

    fn apply_alarm(&mut self, a: &AlarmRequest) -> AlarmResponse {
        let member = AlarmMember {
            member_id: a.member_id,
            alarm: a.alarm,
        };
        let alarms = match a.action {
            AlarmAction::Get => self.alarms(),
            AlarmAction::Activate => {
                if self.alarms.insert(member) {
                    self.mvcc.backend_mut().allocate(ALARM_RECORD_BYTES);
                    vec![member]
                } else {
                    Vec::new()
                }
            }
            AlarmAction::Deactivate => {
                if self.alarms.remove(&member) {
                    self.mvcc.backend_mut().free(ALARM_RECORD_BYTES);
                    vec![member]
                } else {
                    Vec::new()
                }
            }
        };
        AlarmResponse {
            header: header(self.current_revision()),
            alarms,
        }
    }

    // ----- leases: local (per-member) operations -----

    /// This member's node became leader: start tracking expiries, every lease extended.
    pub fn lease_promote(&mut self, now_ms: u64, extend_ms: u64) {
        self.leases.promote(now_ms, extend_ms);
    }

    pub fn lease_demote(&mut self) {
        self.leases.demote();
    }

    /// The leases to revoke now (the node proposes a LeaseRevoke for each).
    pub fn leases_expired(&self, now_ms: u64, max: usize) -> Vec<LeaseId> {
        self.leases.expired(now_ms, max)
    }

    /// LeaseKeepAlive: TTL 0 for an unknown lease, as etcd answers.
    pub fn lease_keep_alive(&mut self, id: LeaseId, now_ms: u64) -> LeaseKeepAliveResponse {
        let ttl = self.leases.renew(id, now_ms).unwrap_or(0);
        LeaseKeepAliveResponse {
            header: header(self.current_revision()),
            id,
            ttl,
        }
    }

    /// LeaseTimeToLive: TTL -1 for an unknown lease, as etcd answers.
    pub fn lease_time_to_live(
        &self,
        id: LeaseId,
        keys: bool,
        now_ms: u64,
    ) -> LeaseTimeToLiveResponse {
        let header = header(self.current_revision());
        match (self.leases.get(id), self.leases.remaining_secs(id, now_ms)) {
            (Some(lease), Some(ttl)) => LeaseTimeToLiveResponse {
                header,
                id,
                ttl,
                granted_ttl: lease.ttl_secs,
                keys: if keys {
                    lease.keys.iter().cloned().collect()
                } else {
                    Vec::new()
                },
            },
            _ => LeaseTimeToLiveResponse {
                header,
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        }
    }

    /// LeaseLeases: every lease id, ascending.
    pub fn lease_leases(&self) -> Vec<LeaseId> {
        self.leases.iter().map(|l| l.id).collect()
    }

    // ----- maintenance -----

    pub fn status(&self) -> StatusResponse {
        let (db_size, db_size_in_use) = self.db_size_bytes();
        StatusResponse {
            header: header(self.current_revision()),
            raft_applied_index: self.consistent_index,
            db_size: db_size as i64,
            db_size_in_use: db_size_in_use as i64,
            compact_revision: self.compact_revision(),
            errors: self
                .alarms
                .iter()
                .map(|a| format!("alarm:{:?}", a.alarm))
                .collect(),
            ..StatusResponse::default()
        }
    }

    /// HashKV(revision): a hash of the MVCC state up to `revision` (0 = current).
    pub fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, EtcdError> {
        let current = self.current_revision();
        let at = if revision == 0 { current } else { revision };
        if at > current {
            return Err(EtcdError::FutureRevision);
        }
        if at < self.compact_revision() {
            return Err(EtcdError::Compacted);
        }
        Ok(HashKvResponse {
            header: header(current),
            hash: self.mvcc.hash_at(at),
            compact_revision: self.compact_revision(),
            hash_revision: at,
        })
    }

    /// Defragment: the backend file drops its free pages.
    pub fn defragment(&mut self) {
        self.mvcc.backend_mut().defragment();
    }

    // ----- watch -----

    pub fn watch_create(
        &mut self,
        stream: StreamId,
        req: &WatchCreateRequest,
    ) -> Result<i64, EtcdError> {
        self.hub.create(stream, req, &self.mvcc)
    }

    pub fn watch_cancel(&mut self, stream: StreamId, watch_id: i64) -> bool {
        self.hub.cancel(stream, watch_id, self.current_revision())
    }

    pub fn watch_close_stream(&mut self, stream: StreamId) {
        self.hub.close_stream(stream);
    }

    pub fn watch_request_progress(&mut self, stream: StreamId) {
        self.hub.request_progress(stream, self.current_revision());
    }

    pub fn watch_progress_tick(&mut self) {
        self.hub.progress_tick(self.current_revision());
    }

    /// Catches unsynced watchers up (etcd runs this every 100 ms).
    pub fn watch_sync(&mut self) {
        self.hub.sync(&self.mvcc);
    }

    pub fn watch_take(&mut self, stream: StreamId, max: usize) -> Vec<WatchResponse> {
        self.hub.take(stream, max)
    }

    pub fn watch_pending(&self, stream: StreamId) -> usize {
        self.hub.pending(stream)
    }

    pub fn watch_has_unsynced(&self) -> bool {
        self.hub.has_unsynced()
    }

    pub fn watch_stats(&self) -> WatchStats {
        self.hub.stats()
    }

    // ----- snapshot images -----

    /// The replicated state as a serialisable image (for Raft snapshots). Watchers and lease
    /// expiries are member-local and not part of it.
    pub fn image(&self) -> StoreImage {
        StoreImage {
            format_version: StoreImage::FORMAT_VERSION,
            consistent_index: self.consistent_index,
            current_revision: self.current_revision(),
            compact_revision: self.compact_revision(),
            records: self
                .mvcc
                .records()
                .map(|(rev, rec)| (*rev, rec.clone()))
                .collect(),
            leases: self
                .leases
                .iter()
                .map(|l| LeaseImage {
                    id: l.id,
                    ttl_secs: l.ttl_secs,
                })
                .collect(),
            lease_next_id: self.leases.next_id(),
            alarms: self.alarms(),
            file_pages: self.mvcc.backend().file_pages(),
        }
    }

    /// Rebuilds a store from an image. Watchers start empty and leases non-primary. An image that
    /// is not self-consistent is refused with the reason.
    pub fn restore(config: StoreConfig, image: StoreImage) -> Result<Store, ImageError> {
        image.validate()?;
        let lease_ids: BTreeSet<LeaseId> = image.leases.iter().map(|l| l.id).collect();
        let extra_bytes = image.leases.len() as u64 * LEASE_RECORD_BYTES
            + image.alarms.len() as u64 * ALARM_RECORD_BYTES;
        let mvcc = Mvcc::restore(
            image.records,
            image.current_revision,
            image.compact_revision,
            image.file_pages,
            extra_bytes,
        );
        let mut keys: BTreeMap<LeaseId, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for kv in mvcc.live_keys() {
            if kv.lease != 0 {
                if !lease_ids.contains(&kv.lease) {
                    return Err(ImageError(format!(
                        "key {:?} is attached to lease {} which the image lacks",
                        String::from_utf8_lossy(&kv.key),
                        kv.lease
                    )));
                }
                keys.entry(kv.lease).or_default().insert(kv.key.clone());
            }
        }
        let leases = image
            .leases
            .iter()
            .map(|l| Lease {
                id: l.id,
                ttl_secs: l.ttl_secs,
                keys: keys.remove(&l.id).unwrap_or_default(),
            })
            .collect();
        let hub = WatchHub::new(config.watch.clone(), config.bugs.clone());
        let store = Store {
            config,
            mvcc,
            leases: LeaseTable::restored(leases, image.lease_next_id),
            alarms: image.alarms.into_iter().collect(),
            consistent_index: image.consistent_index,
            hub,
            flushed: Flushed::default(),
        };
        store.check_invariants();
        Ok(store)
    }

    /// Replaces the replicated state with an image received from the leader (a Raft snapshot),
    /// keeping this member's watchers: each resumes from its next revision, catching up from the
    /// new log if that revision is now in the past (or canceled if it is compacted).
    pub fn install_image(&mut self, image: StoreImage) -> Result<(), ImageError> {
        let restored = Store::restore(self.config.clone(), image)?;
        self.replace_keeping_watchers(restored);
        Ok(())
    }

    /// Becomes `restored` (a received snapshot's state), keeping this member's watchers, which
    /// resume from their next revision in the new log.
    pub(crate) fn replace_keeping_watchers(&mut self, mut restored: Store) {
        std::mem::swap(&mut restored.hub, &mut self.hub);
        restored
            .hub
            .rebase(restored.current_revision(), restored.compact_revision());
        *self = restored;
        self.check_invariants();
    }

    /// Every structural invariant of the state; panics naming the one that broke.
    pub fn check_invariants(&self) {
        let extra = self.leases.len() as u64 * LEASE_RECORD_BYTES
            + self.alarms.len() as u64 * ALARM_RECORD_BYTES;
        self.mvcc.check_invariants(extra);
        self.leases.check_invariants();
        let mut attached: BTreeMap<LeaseId, BTreeSet<Vec<u8>>> = BTreeMap::new();
        for kv in self.mvcc.live_keys() {
            if kv.lease != 0 {
                assert!(
                    self.leases.contains(kv.lease),
                    "a live key's lease does not exist"
                );
                attached.entry(kv.lease).or_default().insert(kv.key.clone());
            }
        }
        for lease in self.leases.iter() {
            let expected = attached.remove(&lease.id).unwrap_or_default();
            assert_eq!(
                lease.keys, expected,
                "lease {} lists the wrong keys",
                lease.id
            );
        }
        self.hub.check_invariants(self.current_revision());
    }
}

fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    // etcd: a non-key target with no order sorts ascending; key-ascending is the natural order.
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (SortOrder::Ascend, SortTarget::Key) => return,
        (order, _) => order,
    };
    // Ties keep key order (the store's natural order), which makes the result deterministic.
    kvs.sort_by(|a, b| {
        let ordering = match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        };
        if order == SortOrder::Descend {
            ordering.reverse()
        } else {
            ordering
        }
    });
}

/// One lease in an image; its keys are found again from the keys' lease fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseImage {
    pub id: LeaseId,
    pub ttl_secs: i64,
}

/// The full replicated state of a store, as a Raft snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreImage {
    pub format_version: u32,
    pub consistent_index: u64,
    pub current_revision: i64,
    pub compact_revision: i64,
    /// Every record of the log, ascending by revision.
    pub records: Vec<(Revision, Record)>,
    pub leases: Vec<LeaseImage>,
    pub lease_next_id: LeaseId,
    pub alarms: Vec<AlarmMember>,
    /// The backend file's size in pages (so db size survives a snapshot as a file copy would).
    pub file_pages: u64,
}

/// Why an image cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid store image: {0}")]
pub struct ImageError(pub String);

impl StoreImage {
    pub const FORMAT_VERSION: u32 = 1;

    fn validate(&self) -> Result<(), ImageError> {
        let fail = |why: String| Err(ImageError(why));
        if self.format_version != Self::FORMAT_VERSION {
            return fail(format!(
                "format version {} (expected {})",
                self.format_version,
                Self::FORMAT_VERSION
            ));
        }
        if self.current_revision < 1 {
            return fail(format!("revision {} is below 1", self.current_revision));
        }
        if self.compact_revision < 0 || self.compact_revision > self.current_revision {
            return fail(format!(
                "compact revision {} outside 0..={}",
                self.compact_revision, self.current_revision
            ));
        }
        let mut live: BTreeMap<&[u8], (i64, i64)> = BTreeMap::new();
        let mut last: Option<Revision> = None;
        for (rev, record) in &self.records {
            if last.is_some_and(|l| l >= *rev) {
                return fail(format!("records out of order at {rev:?}"));
            }
            last = Some(*rev);
            if rev.main > self.current_revision || rev.main < 1 || rev.sub < 0 {
                return fail(format!(
                    "record revision {rev:?} outside the image's revisions"
                ));
            }
            if record.kv.mod_revision != rev.main {
                return fail(format!(
                    "record at {rev:?} has mod_revision {}",
                    record.kv.mod_revision
                ));
            }
            let key = record.kv.key.as_slice();
            if record.tombstone {
                live.remove(key);
            } else {
                if record.kv.version < 1 || record.kv.create_revision > rev.main {
                    return fail(format!("record at {rev:?} has an impossible version"));
                }
                if let Some((created, version)) = live.get(key) {
                    if *created != record.kv.create_revision || *version + 1 != record.kv.version {
                        return fail(format!("record at {rev:?} does not continue its key"));
                    }
                }
                live.insert(key, (record.kv.create_revision, record.kv.version));
            }
        }
        let mut ids = BTreeSet::new();
        for lease in &self.leases {
            if lease.id == 0 || lease.ttl_secs <= 0 || !ids.insert(lease.id) {
                return fail(format!("lease {} is invalid or repeated", lease.id));
            }
        }
        Ok(())
    }
}
