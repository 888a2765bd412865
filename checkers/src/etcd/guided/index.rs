//! What the guided checker knows of a history before it replays anything: who claims each
//! revision, which operations sit at each revision, which reads look at which revision, which
//! writes of unknown outcome a read has seen, and by when each revision's maker must have been
//! invoked.
//!
//! What this module must never do: apply a request. It only sorts and indexes the history (by
//! reference: it copies no response, and no request but those of the writes of unknown
//! outcome), so its memory is a few words per operation.

use std::collections::{BTreeMap, BTreeSet};

use super::super::{bumped, is_write, lease_warnings, read_revision};
use crate::history::{
    Compare, CompareResult, CompareTarget, History, Kv, Operation, Outcome, Request, Response,
};

/// An operation, by its position in the history.
pub(super) type At = u32;

/// A read whose data is checked against the keyspace at one revision: a serializable read, a
/// read at a past revision, or such a read inside a txn.
#[derive(Debug, Clone, Copy)]
pub(super) struct RevisionRead {
    pub op: At,
    /// Its position in its txn's responses, for a read inside a txn.
    pub in_txn: Option<u32>,
    /// The revision whose keyspace it must show.
    pub at: i64,
}

/// A kv some read returned: where and what.
#[derive(Debug, Clone, Copy)]
pub(super) struct Seen<'h> {
    /// The revision whose keyspace the read showed.
    pub at: i64,
    pub kv: &'h Kv,
    /// From a keys-only read: the value is not shown.
    pub keys_only: bool,
}

impl Seen<'_> {
    /// Whether `kv` is what this read saw (its value too, unless it read keys only).
    pub fn shows(&self, kv: &Kv) -> bool {
        kv.key == self.kv.key
            && kv.create_revision == self.kv.create_revision
            && kv.mod_revision == self.kv.mod_revision
            && kv.version == self.kv.version
            && kv.lease == self.kv.lease
            && (self.keys_only || kv.value == self.kv.value)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GuidedCounts {
    /// Operations in the history.
    pub total: usize,
    /// Failed operations: they certainly took no effect, and are dropped.
    pub failed: usize,
    /// Operations of unknown outcome.
    pub unknown: usize,
    /// Reads of unknown outcome, dropped: they changed nothing and nothing was seen.
    pub unknown_reads_dropped: usize,
    /// The highest revision any response reports or shows.
    pub revisions: i64,
    /// Revisions made by an acknowledged write that reports them.
    pub claimed: usize,
    /// Reads whose data was checked against the keyspace at a revision other than the latest
    /// when they ran (serializable reads, reads at a past revision, inside txns too).
    pub revision_reads: usize,
    /// Writes of unknown outcome a read saw at a revision no acknowledged write claims.
    pub pinned: usize,
    /// Revisions filled by a write of unknown outcome (or a lease revoke that deleted keys).
    pub filled: usize,
    /// Revisions where more than one write could have been the maker, none seen by a read.
    pub choices: usize,
    /// Times the replay went back to try another maker for such a revision.
    pub backtracks: usize,
}

/// The history, indexed for one replay in revision order.
pub(super) struct Index<'h> {
    pub ops: &'h [Operation],
    pub counts: GuidedCounts,
    pub warnings: Vec<String>,
    /// The highest revision the replay must reach.
    pub max_revision: i64,
    /// Per revision (index = revision), the acknowledged write that reports it as its own.
    claimer: Vec<Option<At>>,
    /// Revisions two or more acknowledged writes report as their own, with the writes.
    pub duplicate_claims: Vec<(i64, Vec<At>)>,
    /// The acknowledged operations that made no revision, by header revision, then by
    /// completion: the operations "at" each revision, between its write and the next.
    at_revision: Vec<At>,
    at_revision_start: Vec<u32>,
    /// Reads checked at a revision, by that revision.
    revision_reads: Vec<RevisionRead>,
    revision_reads_start: Vec<u32>,
    /// The writes of unknown outcome, by invocation.
    pub unknowns: Vec<At>,
    /// Per unknown write (by its place in `unknowns`), the revision a read saw it make, if one
    /// did and no other write could have written what was seen.
    pub pinned: Vec<Option<i64>>,
    /// Per unknown write, the request the replay applies: the history's, with every value no
    /// response shows and no compare names replaced by [`UNSEEN`] (see [`canonical`]).
    pub applied: Vec<Request>,
    /// Per revision no acknowledged write claims, the kvs reads saw made there.
    pub seen_made: BTreeMap<i64, Vec<Seen<'h>>>,
    /// Per revision no acknowledged write claims, the keys reads saw created there (by a later
    /// version's create revision): whoever made the revision created them.
    pub seen_created: BTreeMap<i64, Vec<&'h str>>,
    /// Per key, the kvs reads saw, by the revision they showed.
    pub seen_by_key: BTreeMap<&'h str, Vec<Seen<'h>>>,
    /// Per key, the revisions at which acknowledged writes put it (and writes of unknown outcome
    /// a read saw there).
    pub claimed_puts: BTreeMap<&'h str, Vec<i64>>,
    /// Per key, the revisions at which acknowledged writes deleted it by name.
    claimed_deletes: BTreeMap<&'h str, Vec<i64>>,
    /// The revisions of acknowledged writes that may have deleted keys they do not name (range
    /// deletes, lease revokes).
    wide_deletes: Vec<i64>,
    /// The revisions no acknowledged write claims, in order.
    unclaimed: Vec<i64>,
    /// Per key, the writes of unknown outcome (by place in `unknowns`) that may delete it by
    /// name, and those that may put it.
    unknown_deletes: BTreeMap<&'h str, Vec<usize>>,
    unknown_puts: BTreeMap<&'h str, Vec<usize>>,
    /// The writes of unknown outcome that may delete keys they do not name.
    unknown_wide_deletes: Vec<usize>,
    /// Per revision `r`, the earliest completion of the acknowledged operations placed after
    /// the maker of `r`: whoever made `r` was invoked no later.
    made_by: Vec<u64>,
}

/// When an operation completed: never for one that did not return, and never before it was
/// invoked (a history read from a file cannot say otherwise; one built in code is clamped).
pub(super) fn completion(op: &Operation) -> u64 {
    op.complete_ns
        .map_or(u64::MAX, |done| done.max(op.invoke_ns))
}

/// When an operation may have taken effect at the earliest, for real-time order: a
/// serializable read is not linearizable, so nothing bounds it from below.
pub(super) fn earliest(op: &Operation) -> u64 {
    match &op.request {
        Request::Get {
            serializable: true, ..
        } => 0,
        _ => op.invoke_ns,
    }
}

pub(super) fn ok_parts(op: &Operation) -> Option<(i64, &Response)> {
    match &op.outcome {
        Outcome::Ok { revision, response } => Some((*revision, response)),
        _ => None,
    }
}

/// Every kv in a response, with the index of the txn sub-response it came from.
fn kvs_of(response: &Response) -> Vec<(Option<usize>, &Kv)> {
    match response {
        Response::Get { kvs, .. } => kvs.iter().map(|kv| (None, kv)).collect(),
        Response::Txn { responses, .. } => responses
            .iter()
            .enumerate()
            .flat_map(|(i, sub)| match sub {
                Response::Get { kvs, .. } => kvs.iter().map(|kv| (Some(i), kv)).collect(),
                _ => Vec::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The puts a request may make, as (key, value).
pub(super) fn puts_of(request: &Request) -> Vec<(&str, &str)> {
    match request {
        Request::Put { key, value, .. } => vec![(key, value)],
        Request::Txn {
            success, failure, ..
        } => success.iter().chain(failure).flat_map(puts_of).collect(),
        _ => Vec::new(),
    }
}

/// The value the replay gives a put of unknown outcome whose value nothing shows.
pub(super) const UNSEEN: &str = "(a value no read saw)";

/// The unknown writes as the replay applies them. A value that no response shows and no
/// compare names can never be told from another such value: whichever write put it, every
/// response is the same. Replacing those values by one marker makes such writes one request,
/// so the replay tries one of them where any would do (the earliest, which leaves the others
/// for later revisions) and paths that differ only in which one they took meet in the memo.
/// Not done when a compare orders values (`<`, `>`), or the marker is itself a value in sight.
fn canonical(
    ops: &[Operation],
    unknowns: &[At],
    seen_by_key: &BTreeMap<&str, Vec<Seen>>,
) -> Vec<Request> {
    let mut in_sight: BTreeSet<&str> = BTreeSet::new();
    for seen in seen_by_key.values().flatten() {
        in_sight.insert(&seen.kv.value);
    }
    let mut ordered = false;
    for op in ops {
        compares_of(&op.request, &mut |compare| {
            if let CompareTarget::Value(value) = &compare.target {
                in_sight.insert(value);
                ordered |= matches!(compare.result, CompareResult::Greater | CompareResult::Less);
            }
        });
    }
    let requests = unknowns.iter().map(|&at| &ops[at as usize].request);
    if ordered || in_sight.contains(UNSEEN) {
        return requests.cloned().collect();
    }
    fn unseen(request: &Request, in_sight: &BTreeSet<&str>) -> Request {
        match request {
            Request::Put { key, value, lease } if !in_sight.contains(value.as_str()) => {
                Request::Put {
                    key: key.clone(),
                    value: UNSEEN.to_string(),
                    lease: *lease,
                }
            }
            Request::Txn {
                compare,
                success,
                failure,
            } => Request::Txn {
                compare: compare.clone(),
                success: success.iter().map(|r| unseen(r, in_sight)).collect(),
                failure: failure.iter().map(|r| unseen(r, in_sight)).collect(),
            },
            other => other.clone(),
        }
    }
    requests.map(|r| unseen(r, &in_sight)).collect()
}

/// Calls `f` on every compare of `request`, nested txns included.
fn compares_of<'r>(request: &'r Request, f: &mut impl FnMut(&'r Compare)) {
    if let Request::Txn {
        compare,
        success,
        failure,
    } = request
    {
        compare.iter().for_each(&mut *f);
        for sub in success.iter().chain(failure) {
            compares_of(sub, f);
        }
    }
}

/// Per key, the writes of unknown outcome (by place in `unknowns`) that may delete it by name and
/// those that may put it; and those that may delete keys they do not name.
#[allow(clippy::type_complexity)]
fn unknown_writers<'h>(
    ops: &'h [Operation],
    unknowns: &[At],
) -> (
    BTreeMap<&'h str, Vec<usize>>,
    BTreeMap<&'h str, Vec<usize>>,
    Vec<usize>,
) {
    let mut unknown_deletes: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut unknown_puts: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut unknown_wide_deletes = Vec::new();
    for (u, &at) in unknowns.iter().enumerate() {
        let request = &ops[at as usize].request;
        match deletes_of(request) {
            Some(keys) => {
                for key in keys {
                    unknown_deletes.entry(key).or_default().push(u);
                }
            }
            None => unknown_wide_deletes.push(u),
        }
        // Pinned writes too: a pinned txn's puts no read saw are not among the known puts.
        for (key, _) in puts_of(request) {
            unknown_puts.entry(key).or_default().push(u);
        }
    }
    for writers in unknown_deletes
        .values_mut()
        .chain(unknown_puts.values_mut())
    {
        writers.dedup();
    }
    (unknown_deletes, unknown_puts, unknown_wide_deletes)
}

/// Compressed rows: `start[i]..start[i + 1]` are the entries of row `i`.
fn rows(keys: impl Iterator<Item = usize>, rows: usize) -> Vec<u32> {
    let mut start = vec![0u32; rows + 1];
    for key in keys {
        start[key + 1] += 1;
    }
    for i in 0..rows {
        start[i + 1] += start[i];
    }
    start
}

impl<'h> Index<'h> {
    pub fn new(history: &'h History) -> Index<'h> {
        let ops = &history.operations[..];
        let mut counts = GuidedCounts {
            total: ops.len(),
            ..GuidedCounts::default()
        };
        let mut max_revision = 1;
        let mut claims: BTreeMap<i64, Vec<At>> = BTreeMap::new();
        let mut at_revision: Vec<(i64, u64, At)> = Vec::new();
        let mut revision_reads: Vec<RevisionRead> = Vec::new();
        let mut unknowns: Vec<At> = Vec::new();
        let mut seen_by_key: BTreeMap<&str, Vec<Seen>> = BTreeMap::new();
        let mut claimed_puts: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        let mut claimed_deletes: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        let mut wide_deletes: Vec<i64> = Vec::new();
        for (at, op) in ops.iter().enumerate() {
            let at = at as At;
            let (header, response) = match &op.outcome {
                Outcome::Failed { .. } => {
                    counts.failed += 1;
                    continue;
                }
                Outcome::Unknown => {
                    counts.unknown += 1;
                    if is_write(&op.request) {
                        unknowns.push(at);
                    } else {
                        counts.unknown_reads_dropped += 1;
                    }
                    continue;
                }
                Outcome::Ok { revision, response } => (*revision, response),
            };
            max_revision = max_revision.max(header);
            if bumped(&op.request, response) {
                claims.entry(header).or_default().push(at);
                for (key, _) in executed_puts(&op.request, response) {
                    claimed_puts.entry(key).or_default().push(header);
                }
                match executed_deletes(&op.request, response) {
                    Some(keys) => {
                        for key in keys {
                            claimed_deletes.entry(key).or_default().push(header);
                        }
                    }
                    None => wide_deletes.push(header),
                }
            } else {
                // An acknowledged revoke that reports no revision of its own may still have
                // made its header revision, deleting its lease's keys.
                if matches!(op.request, Request::LeaseRevoke { .. }) {
                    wide_deletes.push(header);
                }
                at_revision.push((header, completion(op), at));
            }
            // Where each part of the response shows the keyspace, and whether with values.
            let shown = |sub: Option<usize>| -> (i64, bool) {
                let get = match (&op.request, sub) {
                    (request, None) => Some(request),
                    (Request::Txn { .. }, Some(i)) => {
                        executed(&op.request, response).and_then(|branch| branch.get(i))
                    }
                    _ => None,
                };
                match get {
                    Some(get @ Request::Get { keys_only, .. }) => {
                        (read_revision(get, header), *keys_only)
                    }
                    _ => (header, false),
                }
            };
            for (sub, kv) in kvs_of(response) {
                max_revision = max_revision.max(kv.mod_revision);
                let (at, keys_only) = shown(sub);
                seen_by_key
                    .entry(&kv.key)
                    .or_default()
                    .push(Seen { at, kv, keys_only });
            }
            match &op.request {
                Request::Get {
                    serializable,
                    revision,
                    ..
                } if *serializable || *revision > 0 => revision_reads.push(RevisionRead {
                    op: at,
                    in_txn: None,
                    at: read_revision(&op.request, header),
                }),
                Request::Txn { .. } => {
                    for (i, sub) in executed(&op.request, response)
                        .unwrap_or(&[])
                        .iter()
                        .enumerate()
                    {
                        if matches!(sub, Request::Get { revision, .. } if *revision > 0) {
                            revision_reads.push(RevisionRead {
                                op: at,
                                in_txn: Some(i as u32),
                                at: read_revision(sub, header),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        // A read at a past revision may name one beyond every header: the replay stops at the
        // highest revision it must reach, and such a read fails there.
        let max_revision = max_revision.max(1);
        let revisions = max_revision as usize + 2;
        counts.revisions = max_revision;
        counts.revision_reads = revision_reads.len();

        let mut claimer = vec![None; revisions];
        let mut duplicate_claims = Vec::new();
        for (revision, writers) in claims {
            if revision >= 1 {
                claimer[revision as usize] = Some(writers[0]);
                counts.claimed += 1;
            }
            if writers.len() > 1 || revision < 2 {
                duplicate_claims.push((revision, writers));
            }
        }

        at_revision.retain(|&(header, _, _)| header >= 1);
        at_revision.sort_unstable();
        let at_revision_start = rows(at_revision.iter().map(|a| a.0 as usize), revisions);
        let at_revision: Vec<At> = at_revision.into_iter().map(|a| a.2).collect();

        revision_reads.retain(|read| read.at >= 1 && read.at <= max_revision);
        revision_reads.sort_by_key(|read| (read.at, read.op, read.in_txn));
        let revision_reads_start = rows(revision_reads.iter().map(|r| r.at as usize), revisions);

        unknowns.sort_by_key(|&at| (ops[at as usize].invoke_ns, at));
        for seen in seen_by_key.values_mut() {
            seen.sort_by_key(|s| (s.at, s.kv.mod_revision));
        }
        for revisions in claimed_puts.values_mut() {
            revisions.sort_unstable();
        }

        // What reads saw made at revisions no acknowledged write claims, and which unknown
        // write each of those kvs can only come from.
        let mut seen_made: BTreeMap<i64, Vec<Seen>> = BTreeMap::new();
        for seen in seen_by_key.values().flatten() {
            let r = seen.kv.mod_revision;
            if r >= 1 && (r as usize) < revisions && claimer[r as usize].is_none() {
                let made = seen_made.entry(r).or_default();
                if !made
                    .iter()
                    .any(|m| m.keys_only == seen.keys_only && m.kv == seen.kv)
                {
                    made.push(*seen);
                }
            }
        }
        let mut seen_created: BTreeMap<i64, Vec<&str>> = BTreeMap::new();
        for seen in seen_by_key.values().flatten() {
            let c = seen.kv.create_revision;
            if c >= 1 && (c as usize) < revisions && claimer[c as usize].is_none() {
                let keys = seen_created.entry(c).or_default();
                if !keys.contains(&seen.kv.key.as_str()) {
                    keys.push(&seen.kv.key);
                }
            }
        }
        let mut writers_of: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
        for (u, &at) in unknowns.iter().enumerate() {
            for put in puts_of(&ops[at as usize].request) {
                writers_of.entry(put).or_default().push(u);
            }
        }
        let mut pinned = vec![None; unknowns.len()];
        for (&r, made) in &seen_made {
            for kv in made.iter().filter(|m| !m.keys_only).map(|m| m.kv) {
                if let Some([u]) = writers_of
                    .get(&(kv.key.as_str(), kv.value.as_str()))
                    .map(Vec::as_slice)
                {
                    if pinned[*u].is_none() {
                        pinned[*u] = Some(r);
                    }
                }
            }
        }
        counts.pinned = pinned.iter().flatten().count();
        let applied = canonical(ops, &unknowns, &seen_by_key);
        // A pinned write's puts seen at its revision are as certain as an acknowledged one's.
        for (u, r) in pinned.iter().enumerate() {
            let Some(r) = *r else { continue };
            for (key, value) in puts_of(&ops[unknowns[u] as usize].request) {
                let seen_there = seen_made[&r]
                    .iter()
                    .any(|s| s.kv.key == key && (s.keys_only || s.kv.value == value));
                if seen_there {
                    claimed_puts.entry(key).or_default().push(r);
                }
            }
        }
        for revisions in claimed_puts.values_mut() {
            revisions.sort_unstable();
            revisions.dedup();
        }
        for revisions in claimed_deletes.values_mut() {
            revisions.sort_unstable();
            revisions.dedup();
        }
        wide_deletes.sort_unstable();
        wide_deletes.dedup();
        let (unknown_deletes, unknown_puts, unknown_wide_deletes) = unknown_writers(ops, &unknowns);
        let unclaimed: Vec<i64> = (2..=max_revision)
            .filter(|&r| claimer[r as usize].is_none())
            .collect();

        // made_by[r]: the earliest completion among everything placed after the maker of r,
        // that is the operations at revisions >= r and the claimers of revisions > r.
        let mut made_by = vec![u64::MAX; revisions];
        let mut later = u64::MAX;
        for r in (1..revisions).rev() {
            if let Some(claimer) = claimer.get(r + 1).copied().flatten() {
                later = later.min(completion(&ops[claimer as usize]));
            }
            let (from, to) = (at_revision_start[r], at_revision_start[r + 1]);
            for &at in &at_revision[from as usize..to as usize] {
                later = later.min(completion(&ops[at as usize]));
            }
            made_by[r] = later;
        }

        let mut warnings = Vec::new();
        warnings.extend(lease_warnings(history));
        Index {
            ops,
            counts,
            warnings,
            max_revision,
            claimer,
            duplicate_claims,
            at_revision,
            at_revision_start,
            revision_reads,
            revision_reads_start,
            unknowns,
            pinned,
            applied,
            seen_made,
            seen_created,
            seen_by_key,
            claimed_puts,
            claimed_deletes,
            wide_deletes,
            unclaimed,
            unknown_deletes,
            unknown_puts,
            unknown_wide_deletes,
            made_by,
        }
    }

    /// The memory the index holds, by its own accounting: its tables, a few words per
    /// operation and per revision (the history itself is the caller's).
    pub fn bytes(&self) -> usize {
        use std::mem::size_of;
        const ENTRY: usize = 4 * size_of::<usize>();
        self.claimer.capacity() * size_of::<Option<At>>()
            + self.duplicate_claims.capacity() * size_of::<(i64, Vec<At>)>()
            + (self.at_revision.capacity() + self.unknowns.capacity()) * size_of::<At>()
            + (self.at_revision_start.capacity() + self.revision_reads_start.capacity()) * 4
            + self.revision_reads.capacity() * size_of::<RevisionRead>()
            + self.pinned.capacity() * size_of::<Option<i64>>()
            + self
                .applied
                .iter()
                .map(|r| size_of::<Request>() + crate::etcd::render::request_text(r).len())
                .sum::<usize>()
            + self.made_by.capacity() * size_of::<u64>()
            + self
                .seen_made
                .values()
                .map(|v| ENTRY + v.capacity() * size_of::<Seen>())
                .sum::<usize>()
            + self
                .seen_created
                .values()
                .map(|v| ENTRY + v.capacity() * size_of::<&str>())
                .sum::<usize>()
            + self
                .seen_by_key
                .values()
                .map(|v| ENTRY + v.capacity() * size_of::<Seen>())
                .sum::<usize>()
            + self
                .claimed_puts
                .values()
                .chain(self.claimed_deletes.values())
                .map(|v| ENTRY + v.capacity() * size_of::<i64>())
                .sum::<usize>()
            + (self.wide_deletes.capacity() + self.unclaimed.capacity()) * size_of::<i64>()
            + self
                .unknown_deletes
                .values()
                .chain(self.unknown_puts.values())
                .map(|v| ENTRY + v.capacity() * size_of::<usize>())
                .sum::<usize>()
            + self.unknown_wide_deletes.capacity() * size_of::<usize>()
    }

    pub fn op(&self, at: At) -> &'h Operation {
        &self.ops[at as usize]
    }

    /// The acknowledged write that reports revision `r` as its own.
    pub fn claimer(&self, r: i64) -> Option<At> {
        self.claimer.get(r as usize).copied().flatten()
    }

    /// The acknowledged operations that made no revision and report `r`, by completion.
    pub fn at_revision(&self, r: i64) -> &[At] {
        let r = r as usize;
        let (from, to) = (self.at_revision_start[r], self.at_revision_start[r + 1]);
        &self.at_revision[from as usize..to as usize]
    }

    /// The reads that must show the keyspace at revision `r`.
    pub fn revision_reads(&self, r: i64) -> &[RevisionRead] {
        let r = r as usize;
        let (from, to) = (
            self.revision_reads_start[r],
            self.revision_reads_start[r + 1],
        );
        &self.revision_reads[from as usize..to as usize]
    }

    /// The latest a write may have been invoked to make revision `r`.
    pub fn made_by(&self, r: i64) -> u64 {
        self.made_by[r as usize]
    }

    /// How many known writes (acknowledged, or pinned by a read) put `key` at revisions in
    /// `(after, up_to]`.
    pub fn claimed_puts_between(&self, key: &str, after: i64, up_to: i64) -> usize {
        self.claimed_puts.get(key).map_or(0, |revisions| {
            let from = revisions.partition_point(|&r| r <= after);
            let to = revisions.partition_point(|&r| r <= up_to);
            to.saturating_sub(from)
        })
    }

    /// How many revisions in `(after, up_to]` no acknowledged write claims.
    pub fn unclaimed_between(&self, after: i64, up_to: i64) -> usize {
        let from = self.unclaimed.partition_point(|&r| r <= after);
        let to = self.unclaimed.partition_point(|&r| r <= up_to);
        to.saturating_sub(from)
    }

    /// Whether some revision in `(after, before)` may have deleted `key`: an acknowledged
    /// delete of it, range delete or lease revoke there, or a revision there no acknowledged
    /// write claims while a write of unknown outcome that may delete it is still unused.
    pub fn may_delete_between(
        &self,
        key: &str,
        after: i64,
        before: i64,
        unused: impl Fn(usize) -> bool,
    ) -> bool {
        let within = |revisions: &[i64]| {
            revisions
                .get(revisions.partition_point(|&r| r <= after))
                .is_some_and(|&r| r < before)
        };
        within(&self.wide_deletes)
            || self.claimed_deletes.get(key).is_some_and(|r| within(r))
            || (within(&self.unclaimed)
                && (self.unknown_wide_deletes.iter().any(|&u| unused(u))
                    || self
                        .unknown_deletes
                        .get(key)
                        .is_some_and(|writers| writers.iter().any(|&u| unused(u)))))
    }

    /// How many unused writes of unknown outcome may put `key` (an upper bound on the puts they
    /// can still add: pinned ones may be among the known puts too).
    pub fn unknown_puts_left(&self, key: &str, unused: impl Fn(usize) -> bool) -> usize {
        self.unknown_puts
            .get(key)
            .map_or(0, |writers| writers.iter().filter(|&&u| unused(u)).count())
    }

    /// The first kv of `key` a read saw at revision `r` or later.
    pub fn first_seen_from(&self, key: &str, r: i64) -> Option<Seen<'h>> {
        let seen = self.seen_by_key.get(key)?;
        seen.get(seen.partition_point(|s| s.at < r)).copied()
    }
}

/// The branch of a txn its response says ran.
pub(super) fn executed<'r>(request: &'r Request, response: &Response) -> Option<&'r [Request]> {
    match (request, response) {
        (
            Request::Txn {
                success, failure, ..
            },
            Response::Txn { succeeded, .. },
        ) => Some(if *succeeded { success } else { failure }),
        _ => None,
    }
}

/// The keys an acknowledged request deleted by name, by its response; `None` when it may
/// have deleted keys it does not name (a range delete, a lease revoke).
fn executed_deletes<'r>(request: &'r Request, response: &Response) -> Option<Vec<&'r str>> {
    match request {
        Request::Txn { .. } => named_deletes(executed(request, response).unwrap_or(&[])),
        other => named_deletes(std::slice::from_ref(other)),
    }
}

/// The keys a request of unknown outcome may delete by name (in either branch of a txn);
/// `None` when it may delete keys it does not name.
fn deletes_of(request: &Request) -> Option<Vec<&str>> {
    match request {
        Request::Txn {
            success, failure, ..
        } => {
            let mut keys = named_deletes(success)?;
            keys.extend(named_deletes(failure)?);
            Some(keys)
        }
        other => named_deletes(std::slice::from_ref(other)),
    }
}

fn named_deletes(requests: &[Request]) -> Option<Vec<&str>> {
    let mut keys = Vec::new();
    for request in requests {
        match request {
            Request::Delete {
                key,
                range_end: None,
            } => keys.push(key.as_str()),
            Request::Delete { .. } | Request::LeaseRevoke { .. } | Request::Txn { .. } => {
                return None
            }
            _ => {}
        }
    }
    Some(keys)
}

/// The puts an acknowledged request made, by its response.
fn executed_puts<'r>(request: &'r Request, response: &Response) -> Vec<(&'r str, &'r str)> {
    match request {
        Request::Put { key, value, .. } => vec![(key, value)],
        Request::Txn { .. } => executed(request, response)
            .unwrap_or(&[])
            .iter()
            .flat_map(puts_of)
            .collect(),
        _ => Vec::new(),
    }
}
