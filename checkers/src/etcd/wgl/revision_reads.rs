//! The second pass: reads that may show a past revision, held against the keyspace at that
//! revision as reconstructed from the order the search found.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::super::is_write;
use super::super::keyspace::{bounds, get_response};
use super::super::render::seconds;
use super::report::op_line;
use super::{
    EtcdModel, EtcdOperation, Origin, Prepared, RevisionRead, RevisionReads, StaleRead,
    CONFIRMING_SEARCHES_MAX,
};
use crate::history::{Kv, Request, Response};
use crate::linearizability::{self, Budget, Model, Verdict};

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
pub(super) fn check_revision_reads(
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
