//! The replay: the history's writes applied once in revision order on [`EtcdState`], every
//! read checked against the keyspace at its revision, and, where writes of unknown outcome
//! leave a revision's maker open, a depth-first search over the makers that stays inside the
//! budget. Each candidate maker is held against what the next read of every key it (or any other
//! candidate) changes shows, with the revisions and unknown writes left before that read: one
//! that cannot lead there is set aside before the search takes it (forward checking).
//!
//! What this module must never do: keep more than one keyspace per open choice (a snapshot to
//! return to), or search past the budget.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::super::model::{Applied, EtcdState, Refusal};
use super::super::render::{ok_text, request_text, response_text, seconds};
use super::super::{as_latest_read, keyspace::get_response, keyspace::range};
use super::explain::{involved_all, read_mismatch, verb, GuidedViolation, Maker, Property};
use super::index::{completion, earliest, executed, ok_parts, At, GuidedCounts, Index};
use crate::history::{Request, Response};
use crate::linearizability::{Budget, UndecidedReason};

/// How a replay ended.
pub(super) enum Ending {
    /// Every operation took effect as reported, in the order found.
    Consistent,
    Violation(GuidedViolation),
    /// The budget ran out at this revision (the furthest reached), with no order found,
    /// holding this many bytes; with the failure of the path that got furthest, if any.
    Unknown(UndecidedReason, i64, usize, Option<GuidedViolation>),
}

/// A set of the index's unknown writes (by place in `Index::unknowns`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Used(Vec<u64>);

impl Used {
    fn new(n: usize) -> Self {
        Used(vec![0; n.div_ceil(64)])
    }
    fn contains(&self, u: usize) -> bool {
        self.0[u / 64] & (1 << (u % 64)) != 0
    }
    fn insert(&mut self, u: usize) {
        self.0[u / 64] |= 1 << (u % 64);
    }
}

/// Where the replay stands: the state after the last revision made, which writes of unknown
/// outcome it has applied, and who made the revisions no acknowledged write claims.
#[derive(Debug, Clone)]
struct Cursor {
    state: EtcdState,
    used: Used,
    /// (revision, maker) for the revisions filled so far, in revision order.
    fills: Vec<(i64, At)>,
}

/// A revision with more than one possible maker: where to come back to.
struct Choice {
    revision: i64,
    /// The cursor before the revision was made.
    cursor: Cursor,
    /// The makers not tried yet, best first.
    untried: Vec<Candidate>,
    bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    maker: At,
    /// Its place in `Index::unknowns`, for a write of unknown outcome.
    unknown: Option<usize>,
}

/// A failure of the current path, at a revision.
struct Failure {
    revision: i64,
    /// `None` for a path cut short because it reached a placement already tried.
    violation: Option<GuidedViolation>,
    /// Whether choices made on the way could have caused it.
    after_choice: bool,
}

pub(super) struct Replay<'i, 'h> {
    index: &'i Index<'h>,
    budget: &'i Budget,
    stack: Vec<Choice>,
    /// (revision, state, used) at each choice tried: a path that reaches one again fails as
    /// the first did.
    memo: HashSet<(i64, EtcdState, Used)>,
    /// Bytes held by open choices and remembered placements.
    bytes: usize,
    /// Bytes held by the index and the live state (measured now and then).
    base_bytes: usize,
    steps: u64,
    /// The failure of the path that got furthest.
    best: Option<Failure>,
    /// Unknown lease grants and revokes by lease id, by place in `Index::unknowns`.
    grants: BTreeMap<i64, Vec<usize>>,
    revokes: BTreeMap<i64, Vec<usize>>,
    /// Set when the orders at one revision were more than `GROUP_TRIES_MAX`.
    group_undecided: bool,
    pub counts: GuidedCounts,
}

/// How many orders of the operations at one revision that change the state (lease grants and
/// revokes, compactions) the replay tries before it gives up on the history as undecided.
const GROUP_TRIES_MAX: usize = 1 << 14;

/// How many revisions the replay makes between looks at the clock.
const CLOCK_EVERY: u64 = 1 << 12;

impl<'i, 'h> Replay<'i, 'h> {
    pub fn new(index: &'i Index<'h>, budget: &'i Budget) -> Self {
        let mut grants: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        let mut revokes: BTreeMap<i64, Vec<usize>> = BTreeMap::new();
        for (u, &at) in index.unknowns.iter().enumerate() {
            match index.op(at).request {
                Request::LeaseGrant { id, .. } if id != 0 => grants.entry(id).or_default().push(u),
                Request::LeaseRevoke { id } => revokes.entry(id).or_default().push(u),
                _ => {}
            }
        }
        Replay {
            index,
            budget,
            stack: Vec::new(),
            memo: HashSet::new(),
            bytes: 0,
            base_bytes: index.bytes(),
            steps: 0,
            best: None,
            grants,
            revokes,
            group_undecided: false,
            counts: index.counts,
        }
    }

    pub fn run(&mut self) -> Ending {
        let index = self.index;
        let mut cursor = Cursor {
            state: EtcdState::new(),
            used: Used::new(index.unknowns.len()),
            fills: Vec::new(),
        };
        let mut revision = 1;
        let mut resume: Option<Candidate> = None;
        loop {
            self.steps += 1;
            if self.steps % CLOCK_EVERY == 1 {
                self.base_bytes = index.bytes() + cursor.state.heap_bytes();
            }
            if self.steps % CLOCK_EVERY == 0 && self.budget.expired() {
                return self.unknown(UndecidedReason::Deadline, revision);
            }
            let step = self.step(&mut cursor, revision, resume.take());
            match step {
                Ok(()) if revision >= index.max_revision => return Ending::Consistent,
                Ok(()) => revision += 1,
                Err(_) if self.group_undecided => {
                    return self.unknown(UndecidedReason::MaxStates, revision);
                }
                Err(failure) => {
                    let forced = !failure.after_choice;
                    self.keep_best(failure);
                    if forced {
                        break;
                    }
                    match self.backtrack() {
                        Some((back, candidate, r)) => {
                            cursor = back;
                            revision = r;
                            resume = Some(candidate);
                        }
                        None => break,
                    }
                }
            }
            if self.held() > self.budget.max_bytes {
                return self.unknown(UndecidedReason::MaxBytes, revision);
            }
            if self.memo.len() > self.budget.max_states {
                return self.unknown(UndecidedReason::MaxStates, revision);
            }
        }
        let failure = self.best.take().expect("a failed replay keeps its failure");
        let mut violation = failure.violation.expect("the best failure is a violation");
        if self.counts.choices > 0 && failure.after_choice {
            violation.note = Some(format!(
                "This holds for every placement of the writes of unknown outcome: {} revisions \
                 had more than one possible maker, and every one was tried ({} times back).",
                self.counts.choices, self.counts.backtracks
            ));
        }
        Ending::Violation(violation)
    }

    fn unknown(&mut self, reason: UndecidedReason, revision: i64) -> Ending {
        let furthest = self.furthest(revision);
        let failure = self.best.take().and_then(|b| b.violation);
        Ending::Unknown(reason, furthest, self.held(), failure)
    }

    fn held(&self) -> usize {
        self.bytes + self.base_bytes
    }

    fn furthest(&self, revision: i64) -> i64 {
        self.best
            .as_ref()
            .map_or(revision, |b| b.revision.max(revision))
    }

    fn keep_best(&mut self, failure: Failure) {
        if failure.violation.is_some()
            && self
                .best
                .as_ref()
                .is_none_or(|best| failure.revision > best.revision)
        {
            self.best = Some(failure);
        }
    }

    /// The most recent choice with a maker left to try: its cursor, that maker and its revision.
    fn backtrack(&mut self) -> Option<(Cursor, Candidate, i64)> {
        while let Some(choice) = self.stack.last_mut() {
            if choice.untried.is_empty() {
                self.bytes -= choice.bytes;
                self.stack.pop();
                continue;
            }
            let candidate = choice.untried.remove(0);
            let cursor = choice.cursor.clone();
            let revision = choice.revision;
            if choice.untried.is_empty() {
                self.bytes -= choice.bytes;
                self.stack.pop();
            }
            self.counts.backtracks += 1;
            return Some((cursor, candidate, revision));
        }
        None
    }

    /// Makes `revision` (with `resume` as its maker, when coming back to a choice), then checks
    /// the reads of that revision and places the operations at it.
    fn step(
        &mut self,
        cursor: &mut Cursor,
        revision: i64,
        resume: Option<Candidate>,
    ) -> Result<(), Failure> {
        if revision >= 2 {
            self.make(cursor, revision, resume)?;
        }
        self.check_revision_reads(cursor, revision)?;
        self.place_at_revision(cursor, revision)
    }

    fn fail(&self, revision: i64, violation: GuidedViolation) -> Failure {
        Failure {
            revision,
            violation: Some(violation),
            after_choice: !self.stack.is_empty(),
        }
    }

    fn violation(&self, property: Property, summary: String, ats: &[At]) -> GuidedViolation {
        GuidedViolation {
            property,
            summary,
            operations: involved_all(self.index, ats),
            note: None,
        }
    }

    /// Who made each revision on the current path.
    fn makers<'c>(&'c self, cursor: &'c Cursor) -> impl Fn(i64) -> Option<Maker> + 'c {
        move |r| {
            if let Some(at) = self.index.claimer(r) {
                return Some(Maker::Claimed(at));
            }
            let i = cursor.fills.partition_point(|(f, _)| *f < r);
            cursor
                .fills
                .get(i)
                .filter(|(f, _)| *f == r)
                .map(|(_, at)| Maker::Filled(*at))
        }
    }

    fn make(
        &mut self,
        cursor: &mut Cursor,
        revision: i64,
        resume: Option<Candidate>,
    ) -> Result<(), Failure> {
        let index = self.index;
        if let Some(writer) = index.claimer(revision) {
            let op = index.op(writer);
            let (header, response) = ok_parts(op).expect("a claimer is acknowledged");
            let limit = completion(op).min(index.made_by(revision));
            return self.apply_reported(cursor, writer, header, response, revision, limit);
        }
        let candidate = match resume {
            Some(candidate) => candidate,
            None => {
                let mut candidates = self.candidates(cursor, revision)?;
                let first = candidates.remove(0);
                if !candidates.is_empty() {
                    self.counts.choices += 1;
                    let bytes = cursor.state.heap_bytes()
                        + cursor.used.0.len() * 8
                        + cursor.fills.len() * 16
                        + std::mem::size_of::<Choice>();
                    self.bytes += bytes;
                    self.stack.push(Choice {
                        revision,
                        cursor: cursor.clone(),
                        untried: candidates,
                        bytes,
                    });
                }
                first
            }
        };
        let request = self.candidate_request(candidate);
        let observed = ok_parts(index.op(candidate.maker)).map(|(_, response)| response);
        if let Err(Refusal::LeaseNotFound) = cursor.state.apply(request, observed) {
            self.grant_leases(cursor, request, index.made_by(revision));
        }
        let applied = cursor
            .state
            .apply(request, observed)
            .expect("a candidate applies");
        cursor.state = applied.state;
        if let Some(u) = candidate.unknown {
            cursor.used.insert(u);
        }
        cursor.fills.push((revision, candidate.maker));
        self.counts.filled = self.counts.filled.max(cursor.fills.len());
        if !self.stack.is_empty() {
            let key = (revision, cursor.state.clone(), cursor.used.clone());
            if self.memo.contains(&key) {
                return Err(Failure {
                    revision,
                    violation: None,
                    after_choice: true,
                });
            }
            self.bytes += cursor.state.heap_bytes() + cursor.used.0.len() * 8 + 64;
            self.memo.insert(key);
        }
        Ok(())
    }

    /// The writes that could have made `revision` (no acknowledged write claims it), best
    /// first; a violation if there is none.
    fn candidates(&self, cursor: &Cursor, revision: i64) -> Result<Vec<Candidate>, Failure> {
        let index = self.index;
        let state = &cursor.state;
        let deadline = index.made_by(revision);
        let seen = index.seen_made.get(&revision);
        // (rank, candidate): 0 = a read saw it here, 1 = a later read shows its effect, 2 = no
        // read shows its keys, 3 = the rest.
        let mut ranked: Vec<(u8, Candidate, EtcdState)> = Vec::new();
        // Writes that apply the same request are one candidate: the earliest invoked.
        let mut tried: HashSet<&Request> = HashSet::new();
        for (u, &at) in index.unknowns.iter().enumerate() {
            let op = index.op(at);
            if op.invoke_ns > deadline {
                break;
            }
            if cursor.used.contains(u) || index.pinned[u].is_some_and(|p| p != revision) {
                continue;
            }
            let request = &index.applied[u];
            if !tried.insert(request) {
                continue;
            }
            let applied = match state.apply(request, None) {
                Ok(applied) => applied,
                Err(Refusal::LeaseNotFound) => {
                    let mut trial = cursor.clone();
                    if !self.grant_leases(&mut trial, request, deadline) {
                        continue;
                    }
                    match trial.state.apply(request, None) {
                        Ok(applied) => applied,
                        Err(_) => continue,
                    }
                }
                Err(_) => continue,
            };
            if applied.header_revision != revision {
                continue;
            }
            if let Some(rank) = self.rank(state, &applied, request, revision, seen) {
                let rank = if index.pinned[u] == Some(revision) {
                    0
                } else {
                    rank
                };
                let candidate = Candidate {
                    maker: at,
                    unknown: Some(u),
                };
                ranked.push((rank, candidate, applied.state));
            }
        }
        // An acknowledged lease revoke reporting this revision made it if its lease had keys.
        for &at in index.at_revision(revision) {
            let op = index.op(at);
            if let Request::LeaseRevoke { id } = op.request {
                if state.leases.get(&id).is_some_and(|l| !l.keys.is_empty()) {
                    let applied = state
                        .apply(&op.request, ok_parts(op).map(|p| p.1))
                        .expect("revoking a live lease");
                    if let Some(rank) = self.rank(state, &applied, &op.request, revision, seen) {
                        let candidate = Candidate {
                            maker: at,
                            unknown: None,
                        };
                        ranked.push((rank.min(1), candidate, applied.state));
                    }
                }
            }
        }
        if ranked.is_empty() {
            return Err(self.fail(revision, self.missing_revision(cursor, revision)));
        }
        // Look ahead on every key some candidate changes: a candidate that leaves one of them
        // where no later revision can bring it to what a later read shows is no maker.
        let mut keys: BTreeSet<&str> = BTreeSet::new();
        for (_, candidate, after) in &ranked {
            let request = self.candidate_request(*candidate);
            keys.extend(touched(state, after, request, revision));
        }
        let mut doomed = None;
        let mut makers = Vec::with_capacity(ranked.len());
        for (rank, candidate, after) in &ranked {
            match keys
                .iter()
                .find_map(|key| self.doomed(after, &cursor.used, *candidate, key, revision))
            {
                Some(why) => {
                    doomed.get_or_insert(why);
                }
                None => makers.push((*rank, *candidate)),
            }
        }
        if makers.is_empty() {
            let why = doomed.expect("a candidate set aside says why");
            let ats: Vec<At> = ranked.iter().map(|(_, c, _)| c.maker).collect();
            let summary = format!(
                "rev {revision} has no maker that fits what later reads show: every write that \
                 could have made it leaves {why}"
            );
            let violation = self.violation(Property::ReadData, summary, &ats);
            return Err(self.fail(revision, violation));
        }
        makers.sort_by_key(|(rank, _)| *rank);
        Ok(makers.into_iter().map(|(_, c)| c).collect())
    }

    /// The request a candidate applies.
    fn candidate_request(&self, candidate: Candidate) -> &'i Request {
        match candidate.unknown {
            Some(u) => &self.index.applied[u],
            None => &self.index.op(candidate.maker).request,
        }
    }

    /// Whether `key`, as `after` leaves it at `revision`, can no longer become what the next
    /// read to show it saw, with the revisions left before then; why, in words, if so.
    fn doomed(
        &self,
        after: &EtcdState,
        used: &Used,
        candidate: Candidate,
        key: &str,
        revision: i64,
    ) -> Option<String> {
        let index = self.index;
        let unused = |u: usize| !used.contains(u) && candidate.unknown != Some(u);
        let seen = index.first_seen_from(key, revision + 1)?;
        let kv = seen.kv;
        let now = after.keyspace.get(key);
        let shown = super::super::render::kv_text(kv, !seen.keys_only);
        let what = |now: Option<&crate::history::Kv>| match now {
            Some(now) => super::super::render::kv_text(now, true),
            None => format!("{key} absent"),
        };
        if kv.create_revision > revision {
            // A later generation: the key must be gone before it is created again.
            if now.is_some() && !index.may_delete_between(key, revision, kv.create_revision, unused)
            {
                return Some(format!(
                    "{} at rev {revision}, and a read at rev {} saw {shown}: nothing between \
                     can delete it before rev {}",
                    what(now),
                    seen.at,
                    kv.create_revision
                ));
            }
            return None;
        }
        // The generation the read saw was alive here, and lived on until the read.
        let fits = now.is_some_and(|now| {
            now.create_revision == kv.create_revision
                && if kv.mod_revision <= revision {
                    seen.shows(now)
                } else {
                    let puts = index.claimed_puts_between(key, revision, kv.mod_revision);
                    let needed = kv.version - now.version - puts as i64;
                    needed >= 0
                        && needed as usize <= index.unclaimed_between(revision, kv.mod_revision)
                        && needed as usize <= index.unknown_puts_left(key, unused)
                }
        });
        (!fits).then(|| {
            format!(
                "{} at rev {revision}, but a read at rev {} saw {shown}",
                what(now),
                seen.at
            )
        })
    }

    /// Whether a write may have made `revision` given what reads saw of the keys it wrote, and
    /// how well that fits (lower is better); `None` when some read rules it out.
    fn rank(
        &self,
        before: &EtcdState,
        after: &Applied,
        request: &Request,
        revision: i64,
        seen_here: Option<&Vec<super::index::Seen>>,
    ) -> Option<u8> {
        let index = self.index;
        // Reads saw keys created here: this write must have created them.
        if let Some(keys) = index.seen_created.get(&revision) {
            let created = |key: &str| {
                after
                    .state
                    .keyspace
                    .get(key)
                    .is_some_and(|kv| kv.create_revision == revision)
            };
            if !keys.iter().all(|key| created(key)) {
                return None;
            }
        }
        if let Some(seen_here) = seen_here {
            // Reads saw kvs made here: this write must have made exactly them.
            for seen in seen_here {
                if !after
                    .state
                    .keyspace
                    .get(&seen.kv.key)
                    .is_some_and(|kv| seen.shows(kv))
                {
                    return None;
                }
            }
            return Some(0);
        }
        // Whether a later read shows this write's effect on some key (a version that counts
        // its put, a newer generation after its delete), and whether any read shows its keys.
        let (mut explained, mut observed) = (false, false);
        for key in touched(before, &after.state, request, revision) {
            let now = after.state.keyspace.get(key);
            let Some(seen) = index.first_seen_from(key, revision) else {
                continue;
            };
            observed = true;
            let kv = seen.kv;
            match now {
                // Put here: a later read of the same generation must count this put.
                Some(now) => {
                    if kv.create_revision <= revision && kv.mod_revision < revision {
                        return None;
                    }
                    if kv.create_revision == now.create_revision {
                        let at_least = now.version
                            + index.claimed_puts_between(key, revision, kv.mod_revision) as i64;
                        if kv.version < at_least {
                            return None;
                        }
                        explained = true;
                    }
                }
                // Deleted here: a later read shows a newer generation or nothing.
                None => {
                    if kv.create_revision <= revision {
                        return None;
                    }
                    // A newer generation than any before this revision: a delete came first.
                    explained = true;
                }
            }
        }
        Some(match (explained, observed) {
            (true, _) => 1,
            (false, false) => 2,
            (false, true) => 3,
        })
    }

    fn missing_revision(&self, cursor: &Cursor, revision: i64) -> GuidedViolation {
        let index = self.index;
        let deadline = index.made_by(revision);
        let shown_by = (revision..=index.max_revision)
            .find_map(|r| {
                index
                    .claimer(r)
                    .or_else(|| index.at_revision(r).first().copied())
            })
            .into_iter()
            .collect::<Vec<At>>();
        let mut summary = match index.seen_made.get(&revision) {
            Some(kvs) => format!(
                "a read saw {} made at rev {revision}, but no acknowledged write reports rev \
                 {revision} and no write of unknown outcome left could have made it",
                kvs.iter()
                    .map(|seen| super::super::render::kv_text(seen.kv, true))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => format!(
                "rev {revision} exists (later responses report higher revisions), but no \
                 acknowledged write reports it and no write of unknown outcome left could have \
                 made it"
            ),
        };
        let mut ats = shown_by;
        if let Some(kvs) = index.seen_made.get(&revision) {
            for kv in kvs.iter().filter(|s| !s.keys_only).map(|s| s.kv) {
                for (u, &at) in index.unknowns.iter().enumerate() {
                    let op = index.op(at);
                    if super::index::puts_of(&op.request)
                        .contains(&(kv.key.as_str(), kv.value.as_str()))
                    {
                        ats.push(at);
                        if op.invoke_ns > deadline {
                            summary.push_str(&format!(
                                ": {} was invoked at {}, after an operation placed after rev \
                                 {revision} had completed ({})",
                                request_text(&op.request),
                                seconds(op.invoke_ns),
                                seconds(deadline)
                            ));
                        } else if cursor.used.contains(u) {
                            summary.push_str(&format!(
                                ": {} took effect at another revision",
                                request_text(&op.request)
                            ));
                        }
                    }
                }
            }
        }
        self.violation(Property::MissingRevision, summary, &ats)
    }

    /// Applies an acknowledged request where the order puts it, and holds its response to
    /// etcd's. Unknown lease grants its leases need are applied first, if they can be.
    fn apply_reported(
        &mut self,
        cursor: &mut Cursor,
        at: At,
        header: i64,
        response: &Response,
        revision: i64,
        limit: u64,
    ) -> Result<(), Failure> {
        let op = self.index.op(at);
        let applied = match cursor.state.apply(&op.request, Some(response)) {
            Err(Refusal::LeaseNotFound) if self.grant_leases(cursor, &op.request, limit) => {
                cursor.state.apply(&op.request, Some(response))
            }
            Err(Refusal::LeaseExists) if self.revoke_lease(cursor, &op.request, limit) => {
                cursor.state.apply(&op.request, Some(response))
            }
            other => other,
        };
        let applied = match applied {
            Ok(applied) => applied,
            Err(refusal) => {
                let summary = format!(
                    "{} was acknowledged at rev {header}, but etcd refuses it there: {}",
                    request_text(&op.request),
                    refusal.message()
                );
                let mut ats = vec![at];
                ats.extend(self.lease_writers(&op.request));
                return Err(self.fail(revision, self.violation(Property::Refused, summary, &ats)));
            }
        };
        if applied.header_revision != header || applied.response != *response {
            return Err(self.wrong_response(cursor, at, header, &applied, revision));
        }
        cursor.state = applied.state;
        Ok(())
    }

    fn wrong_response(
        &self,
        cursor: &Cursor,
        at: At,
        header: i64,
        applied: &Applied,
        revision: i64,
    ) -> Failure {
        let op = self.index.op(at);
        let before = cursor.state.revision;
        let summary = format!(
            "{} was acknowledged with {}, but after rev {before} etcd answers {}",
            request_text(&op.request),
            ok_text(header, ok_parts(op).expect("acknowledged").1),
            ok_text(applied.header_revision, &applied.response)
        );
        let mut ats = vec![at];
        let makers = self.makers(cursor);
        for key in keys_read(&op.request) {
            if let Some((_, maker)) = super::explain::last_writer(self.index, &makers, key, before)
            {
                ats.push(maker.at());
            }
        }
        self.fail(
            revision,
            self.violation(Property::WriteResponse, summary, &ats),
        )
    }

    /// The revokes and grants of the leases a request names, for explanations.
    fn lease_writers(&self, request: &Request) -> Vec<At> {
        let leases = leases_named(request);
        (0..self.index.ops.len() as At)
            .filter(|&at| {
                let op = self.index.op(at);
                ok_parts(op).is_some()
                    && match op.request {
                        Request::LeaseRevoke { id } => leases.contains(&id),
                        Request::LeaseGrant { id, .. } => leases.contains(&id),
                        _ => false,
                    }
            })
            .take(4)
            .collect()
    }

    /// Applies the unknown grants of the leases `request` names that are not live, if each was
    /// invoked by `limit`. Whether all of them could be.
    fn grant_leases(&self, cursor: &mut Cursor, request: &Request, limit: u64) -> bool {
        let mut granted = false;
        for id in leases_named(request) {
            if cursor.state.leases.contains_key(&id) {
                continue;
            }
            let Some(grants) = self.grants.get(&id) else {
                return false;
            };
            let Some(&u) = grants.iter().find(|&&u| {
                !cursor.used.contains(u) && self.index.op(self.index.unknowns[u]).invoke_ns <= limit
            }) else {
                return false;
            };
            let op = self.index.op(self.index.unknowns[u]);
            match cursor.state.apply(&op.request, None) {
                Ok(applied) => {
                    cursor.state = applied.state;
                    cursor.used.insert(u);
                    granted = true;
                }
                Err(_) => return false,
            }
        }
        granted
    }

    /// Applies an unknown revoke of the lease a grant names, if one was invoked by `limit` and
    /// the lease holds no keys (a revoke that deletes keys makes a revision, and only a fill
    /// may place it). Whether it could.
    fn revoke_lease(&self, cursor: &mut Cursor, request: &Request, limit: u64) -> bool {
        let Request::LeaseGrant { id, .. } = request else {
            return false;
        };
        if cursor
            .state
            .leases
            .get(id)
            .is_none_or(|l| !l.keys.is_empty())
        {
            return false;
        }
        let Some(&u) = self.revokes.get(id).and_then(|revokes| {
            revokes.iter().find(|&&u| {
                !cursor.used.contains(u) && self.index.op(self.index.unknowns[u]).invoke_ns <= limit
            })
        }) else {
            return false;
        };
        let op = self.index.op(self.index.unknowns[u]);
        match cursor.state.apply(&op.request, None) {
            Ok(applied) if applied.header_revision == cursor.state.revision => {
                cursor.state = applied.state;
                cursor.used.insert(u);
                true
            }
            _ => false,
        }
    }

    /// The reads that must show the keyspace at `revision`.
    fn check_revision_reads(&self, cursor: &Cursor, revision: i64) -> Result<(), Failure> {
        let index = self.index;
        for read in index.revision_reads(revision) {
            let op = index.op(read.op);
            let (_, response) = ok_parts(op).expect("a revision read is acknowledged");
            let (get, got) = match read.in_txn {
                None => (&op.request, response),
                Some(i) => {
                    let branch = executed(&op.request, response).unwrap_or(&[]);
                    let Response::Txn { responses, .. } = response else {
                        continue;
                    };
                    match (branch.get(i as usize), responses.get(i as usize)) {
                        (Some(get), Some(got)) => (get, got),
                        _ => continue,
                    }
                }
            };
            let latest = as_latest_read(get);
            if !cursor.state.read_matches(&latest, got) {
                return Err(self.read_failure(cursor, read.op, read.in_txn, get, revision, got));
            }
        }
        Ok(())
    }

    fn read_failure(
        &self,
        cursor: &Cursor,
        reader: At,
        in_txn: Option<u32>,
        get: &Request,
        revision: i64,
        got: &Response,
    ) -> Failure {
        let Request::Get {
            key,
            range_end,
            limit,
            keys_only,
            ..
        } = get
        else {
            unreachable!("a read is a get");
        };
        let expected = get_response(
            range(&cursor.state.keyspace, key, range_end.as_deref()),
            *limit,
            *keys_only,
        );
        let makers = self.makers(cursor);
        let (summary, ats) = read_mismatch(
            self.index, &makers, reader, in_txn, get, revision, &expected, got,
        );
        self.fail(revision, self.violation(Property::ReadData, summary, &ats))
    }

    /// Places the acknowledged operations that report `revision` and made none, in an order
    /// real time allows: reads first, then lease grants, revokes and compactions.
    fn place_at_revision(&mut self, cursor: &mut Cursor, revision: i64) -> Result<(), Failure> {
        let index = self.index;
        let ops = index.at_revision(revision);
        let filler = {
            let i = cursor.fills.partition_point(|(f, _)| *f < revision);
            cursor
                .fills
                .get(i)
                .filter(|(f, _)| *f == revision)
                .map(|(_, at)| *at)
        };
        let changes_state = |at: At| {
            matches!(
                index.op(at).request,
                Request::LeaseGrant { .. } | Request::LeaseRevoke { .. } | Request::Compact { .. }
            )
        };
        let after_revision = index.made_by(revision + 1).min(
            index
                .claimer(revision + 1)
                .map_or(u64::MAX, |at| completion(index.op(at))),
        );
        if !ops.iter().any(|&at| changes_state(at)) {
            for &at in ops {
                self.place(cursor, at, revision, after_revision)?;
            }
            return Ok(());
        }
        // Operations that change the state: an order real time allows in which etcd accepts
        // every one, found by a search that tries the likeliest kinds first.
        let pending: Vec<At> = ops
            .iter()
            .copied()
            .filter(|&at| Some(at) != filler)
            .collect();
        let mut tries = 0;
        match self.schedule(cursor, &pending, revision, after_revision, &mut tries) {
            Ok(done) => {
                *cursor = done;
                Ok(())
            }
            Err(failure) => Err(failure),
        }
    }

    /// Places `pending` (by completion) in some order real time allows; the cursor after, or the
    /// failure of the first order tried.
    fn schedule(
        &mut self,
        cursor: &Cursor,
        pending: &[At],
        revision: i64,
        after_revision: u64,
        tries: &mut usize,
    ) -> Result<Cursor, Failure> {
        let index = self.index;
        let mut cursor = cursor.clone();
        let mut pending: Vec<At> = pending.to_vec();
        // What changes nothing goes as soon as real time allows, without a choice: earlier is
        // never worse for it (only a compaction before it can refuse it) nor for the rest.
        loop {
            let Some(&first) = pending.first() else {
                return Ok(cursor);
            };
            let first_done = completion(index.op(first));
            let limit = first_done.min(after_revision);
            let Some(i) = (0..pending.len()).find(|&i| {
                let op = index.op(pending[i]);
                kind_order(&op.request) == 0 && earliest(op) <= first_done
            }) else {
                break;
            };
            self.place(&mut cursor, pending[i], revision, limit)?;
            pending.remove(i);
        }
        let first_done = completion(index.op(pending[0]));
        let mut allowed: Vec<usize> = (0..pending.len())
            .filter(|&i| earliest(index.op(pending[i])) <= first_done)
            .collect();
        allowed.sort_by_key(|&i| {
            let request = &index.op(pending[i]).request;
            let compacts = match request {
                Request::Compact { revision } => *revision,
                _ => 0,
            };
            (kind_order(request), compacts, i)
        });
        let limit = first_done.min(after_revision);
        let mut first_failure = None;
        for i in allowed {
            *tries += 1;
            if *tries > GROUP_TRIES_MAX {
                self.group_undecided = true;
                break;
            }
            let mut trial = cursor.clone();
            let placed = self
                .place(&mut trial, pending[i], revision, limit)
                .and_then(|()| {
                    let rest: Vec<At> = pending
                        .iter()
                        .enumerate()
                        .filter(|&(j, _)| j != i)
                        .map(|(_, &at)| at)
                        .collect();
                    self.schedule(&trial, &rest, revision, after_revision, tries)
                });
            match placed {
                Ok(done) => return Ok(done),
                Err(failure) => {
                    first_failure.get_or_insert(failure);
                }
            }
        }
        Err(first_failure.expect("the first pending operation is always allowed"))
    }

    /// Places one acknowledged operation that made no revision at `revision`.
    fn place(
        &mut self,
        cursor: &mut Cursor,
        at: At,
        revision: i64,
        limit: u64,
    ) -> Result<(), Failure> {
        let op = self.index.op(at);
        let (header, response) = ok_parts(op).expect("placed operations are acknowledged");
        if let Request::LeaseRevoke { .. } = op.request {
            let i = cursor.fills.partition_point(|(f, _)| *f < revision);
            if cursor.fills.get(i) == Some(&(revision, at)) {
                return Ok(());
            }
        }
        match &op.request {
            Request::Get {
                revision: 0, key, ..
            } => {
                if key.is_empty() || !cursor.state.read_matches(&op.request, response) {
                    return Err(self.read_failure(
                        cursor,
                        at,
                        None,
                        &op.request,
                        revision,
                        response,
                    ));
                }
                Ok(())
            }
            Request::Get {
                revision: read_at, ..
            } => match super::super::keyspace::check_read_revision(&cursor.state, *read_at) {
                Ok(()) if matches!(response, Response::Get { .. }) => Ok(()),
                Ok(()) => Err(self.fail(
                    revision,
                    self.violation(
                        Property::WriteResponse,
                        format!(
                            "{} answered {}",
                            request_text(&op.request),
                            response_text(response, true)
                        ),
                        &[at],
                    ),
                )),
                Err(refusal) => Err(self.refused_read(cursor, at, *read_at, refusal, revision)),
            },
            _ => self.apply_reported(cursor, at, header, response, revision, limit),
        }
    }

    fn refused_read(
        &self,
        cursor: &Cursor,
        at: At,
        read_at: i64,
        refusal: Refusal,
        revision: i64,
    ) -> Failure {
        let op = self.index.op(at);
        let mut ats = vec![at];
        let summary = match refusal {
            Refusal::Compacted => {
                let compacted = cursor.state.compact_revision;
                let compactor = (0..self.index.ops.len() as At).find(|&c| {
                    let c_op = self.index.op(c);
                    matches!(c_op.request, Request::Compact { revision } if revision == compacted)
                        && ok_parts(c_op).is_some_and(|(h, _)| h <= revision)
                });
                let by = match compactor {
                    Some(c) => {
                        ats.push(c);
                        let c_op = self.index.op(c);
                        format!(
                            "compact {compacted} was acknowledged at {}, before this {} was \
                             invoked ({})",
                            seconds(completion(c_op)),
                            verb(&op.request),
                            seconds(op.invoke_ns)
                        )
                    }
                    None => format!("the store was compacted at {compacted} by then"),
                };
                format!(
                    "{} succeeded at rev {revision}, but {by}, so etcd answers \"{}\"",
                    request_text(&op.request),
                    refusal.message()
                )
            }
            _ => format!(
                "{} succeeded at rev {revision} reading rev {read_at}, but etcd answers \"{}\"",
                request_text(&op.request),
                refusal.message()
            ),
        };
        self.fail(revision, self.violation(Property::Refused, summary, &ats))
    }
}

/// The keys a write changed between `before` and `after` (made at `revision`).
fn touched<'a>(
    before: &'a EtcdState,
    after: &'a EtcdState,
    request: &'a Request,
    revision: i64,
) -> Vec<&'a str> {
    let mut keys: Vec<&str> = Vec::new();
    collect_touched(before, request, &mut keys);
    keys.sort_unstable();
    keys.dedup();
    keys.retain(|key| match after.keyspace.get(*key) {
        Some(kv) => kv.mod_revision == revision,
        None => before.keyspace.contains_key(*key),
    });
    keys
}

fn collect_touched<'a>(before: &'a EtcdState, request: &'a Request, keys: &mut Vec<&'a str>) {
    match request {
        Request::Put { key, .. } => keys.push(key),
        Request::Delete { key, range_end } => keys
            .extend(range(&before.keyspace, key, range_end.as_deref()).map(|kv| kv.key.as_str())),
        Request::Txn {
            success, failure, ..
        } => {
            for op in success.iter().chain(failure) {
                collect_touched(before, op, keys);
            }
        }
        Request::LeaseRevoke { id } => {
            if let Some(lease) = before.leases.get(id) {
                keys.extend(lease.keys.iter().map(String::as_str));
            }
        }
        _ => {}
    }
}

/// The keys a request's answer depends on: its compares, ranges and puts.
fn keys_read(request: &Request) -> Vec<&str> {
    match request {
        Request::Get { key, .. } | Request::Put { key, .. } | Request::Delete { key, .. } => {
            vec![key]
        }
        Request::Txn {
            compare,
            success,
            failure,
        } => compare
            .iter()
            .map(|c| c.key.as_str())
            .chain(success.iter().chain(failure).flat_map(keys_read))
            .collect(),
        _ => Vec::new(),
    }
}

fn leases_named(request: &Request) -> Vec<i64> {
    match request {
        Request::Put { lease, .. } if *lease != 0 => vec![*lease],
        Request::LeaseRevoke { id } => vec![*id],
        Request::Txn {
            success, failure, ..
        } => success
            .iter()
            .chain(failure)
            .flat_map(leases_named)
            .collect(),
        _ => Vec::new(),
    }
}

/// The order in which operations at one revision are tried: reads (and whatever changes
/// nothing) first, since a compaction or a revoke can only refuse what follows it.
fn kind_order(request: &Request) -> u8 {
    match request {
        Request::LeaseGrant { .. } => 1,
        Request::LeaseRevoke { .. } => 2,
        Request::Compact { .. } => 3,
        _ => 0,
    }
}
