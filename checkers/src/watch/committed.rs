//! The committed history: what the cluster really committed, revision by revision. The watch
//! checker holds every delivered event against it.
//!
//! A run with ground truth fills it from the cluster. Without ground truth, [`reconstruct`]
//! rebuilds it black-box from the watch streams and the client history alone. That
//! reconstruction knows only what someone observed:
//! - A revision no watcher delivered and no acknowledged write reported is absent, so a watch
//!   that lost the only event of such a revision is not caught (a gap is only visible where some
//!   other watcher, or the client that wrote it, saw the event).
//! - A revision's events are known only for the keys some watcher covered or an acknowledged
//!   put or single-key delete named. Range deletes, lease revokes and expiries are known only
//!   through watchers.
//! - An event known only from an acknowledged put has the key, value, lease and revision; its
//!   `create_revision` and `version` are 0 (unknown). One known only from an acknowledged
//!   delete is exact (a delete's kv has nothing else).
//! - The order of events inside a revision (sub-revisions) is a merge consistent with every
//!   watcher's order; events no single watcher saw together are ordered by guess.
//! - A `prev_kv` is exact for a put of version 1 (none) and for a put whose previous version is
//!   the key's last known event; otherwise it is the one a watcher that asked for prev_kv was
//!   given; otherwise, the key's last known put (a guess: unseen revisions may lie between;
//!   such events are listed in [`CommittedHistory::guessed_prev`]). The
//!   checker only compares prev_kv for watches that asked for it, which the second rule covers.
//! - Compactions are those the client history acknowledged and those watchers were canceled
//!   with (so a cancel at a compaction that never happened is not caught on a reconstruction);
//!   the final revision is the highest revision anyone saw. Reads are not used.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::format::{delete_kv, event_text, place, seconds, EventKind, WatchHistory, WatchItem};
use crate::history::{History, Kv, Outcome, Request, Response};

/// What the cluster committed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CommittedHistory {
    /// Every revision that changed the keyspace, with its events in sub-revision order.
    pub revisions: BTreeMap<i64, Vec<CommittedEvent>>,
    /// Compact revisions in the order applied (so, increasing).
    pub compactions: Vec<i64>,
    /// The cluster's revision at the end of the run.
    pub final_revision: i64,
    /// The events, by (revision, key), whose `prev_kv` a reconstruction guessed: the key's last
    /// event it knew, where unseen revisions may lie between. Empty for ground truth.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub guessed_prev: BTreeSet<(i64, String)>,
}

/// One committed change of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedEvent {
    pub kind: EventKind,
    /// For a delete: the key and mod_revision only, other fields 0 or empty.
    pub kv: Kv,
    /// The key's kv just before this revision (`None` if it was absent).
    pub prev_kv: Option<Kv>,
}

impl CommittedEvent {
    /// Whether this event, as reconstructed, agrees with `truth` wherever it knows something. A
    /// put rebuilt from an acknowledged write alone (no watch delivered it) does not know its
    /// create revision or version (both 0): those fields agree with anything. `prev_known` says
    /// whether the rebuilt `prev_kv` is known (see [`CommittedHistory::guessed_prev`]); a guessed
    /// one agrees with anything.
    pub fn agrees_with(&self, truth: &CommittedEvent, prev_known: bool) -> bool {
        fn kv_agrees(rebuilt: &Kv, truth: &Kv) -> bool {
            let unknown = rebuilt.create_revision == 0 && rebuilt.version == 0;
            rebuilt.key == truth.key
                && rebuilt.value == truth.value
                && rebuilt.mod_revision == truth.mod_revision
                && rebuilt.lease == truth.lease
                && (unknown
                    || (rebuilt.create_revision == truth.create_revision
                        && rebuilt.version == truth.version))
        }
        self.kind == truth.kind
            && kv_agrees(&self.kv, &truth.kv)
            && (!prev_known
                || match (&self.prev_kv, &truth.prev_kv) {
                    (None, None) => true,
                    (Some(rebuilt), Some(truth)) => kv_agrees(rebuilt, truth),
                    _ => false,
                })
    }
}

impl CommittedHistory {
    /// The number of events over all revisions.
    pub fn event_count(&self) -> usize {
        self.revisions.values().map(Vec::len).sum()
    }

    /// Problems that make the history unusable as ground truth, in words: an event whose kv is
    /// not at its revision, a key changed twice in one revision, compactions out of order, a
    /// revision after the final one. Empty when it is well formed.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (&revision, events) in &self.revisions {
            if revision < 1 {
                problems.push(format!("revision {revision} is below 1"));
            }
            let mut keys = BTreeSet::new();
            for event in events {
                if event.kv.mod_revision != revision {
                    problems.push(format!(
                        "revision {revision}: event {} has mod_revision {}",
                        event_text(event.kind, &event.kv, None),
                        event.kv.mod_revision
                    ));
                }
                if !keys.insert(event.kv.key.as_str()) {
                    problems.push(format!(
                        "revision {revision}: key {} changes twice",
                        event.kv.key
                    ));
                }
            }
        }
        if let Some((&last, _)) = self.revisions.last_key_value() {
            if last > self.final_revision {
                problems.push(format!(
                    "revision {last} is after the final revision {}",
                    self.final_revision
                ));
            }
        }
        for pair in self.compactions.windows(2) {
            if pair[1] <= pair[0] {
                problems.push(format!(
                    "compaction at {} is applied after one at {}",
                    pair[1], pair[0]
                ));
            }
        }
        problems
    }
}

/// Why a committed history cannot be reconstructed: observers disagree on what was committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconstructError {
    /// Two watch deliveries (of two watches, or twice on one) disagree on a revision's event.
    #[error("revision {revision}, key {key}: watchers disagree: {first} -- but {second}")]
    Disagreement {
        revision: i64,
        key: String,
        first: String,
        second: String,
    },
    /// An acknowledged write disagrees with what watchers delivered at its revision.
    #[error("revision {revision}, key {key}: {operation} -- but {seen}")]
    Contradiction {
        revision: i64,
        key: String,
        operation: String,
        seen: String,
    },
}

/// Who showed an event, for error messages.
#[derive(Debug, Clone)]
enum Source {
    Watch {
        describe: String,
        at_ns: u64,
        member: u64,
    },
    Operation {
        text: String,
    },
}

impl Source {
    fn text(&self) -> String {
        match self {
            Source::Watch {
                describe,
                at_ns,
                member,
            } => format!("{describe} received {}", place(*at_ns, *member)),
            Source::Operation { text } => text.clone(),
        }
    }
}

/// What is known of one revision while it is rebuilt.
#[derive(Debug, Default)]
struct RevisionBuild {
    /// In merged sub-revision order.
    events: Vec<(CommittedEvent, Source)>,
    /// Key -> index in `events`.
    positions: BTreeMap<String, usize>,
    /// Key -> the prev_kv a watch that asked for it was given.
    delivered_prev: BTreeMap<String, (Kv, Source)>,
}

impl RevisionBuild {
    /// Inserts an event at `position`, keeping `positions` right.
    fn insert(&mut self, position: usize, event: CommittedEvent, source: Source) {
        debug_assert!(!self.positions.contains_key(&event.kv.key));
        if position < self.events.len() {
            for p in self.positions.values_mut() {
                if *p >= position {
                    *p += 1;
                }
            }
        }
        self.positions.insert(event.kv.key.clone(), position);
        self.events.insert(position, (event, source));
        debug_assert_eq!(self.positions.len(), self.events.len());
    }
}

/// A delivered or acknowledged event as the committed history holds it (prev_kv filled later).
fn normalized(kind: EventKind, kv: &Kv) -> CommittedEvent {
    let kv = match kind {
        EventKind::Put => kv.clone(),
        EventKind::Delete => delete_kv(&kv.key, kv.mod_revision),
    };
    CommittedEvent {
        kind,
        kv,
        prev_kv: None,
    }
}

/// Rebuilds the committed history from every event any watcher received, merged by revision and
/// cross-checked with the client history's acknowledged writes. See the module documentation for
/// what it cannot know. Errors when two deliveries disagree on a revision's event (naming both)
/// or an acknowledged put or delete disagrees with the event delivered at its revision.
pub fn reconstruct(
    history: &History,
    watches: &WatchHistory,
) -> Result<CommittedHistory, ReconstructError> {
    let mut builds: BTreeMap<i64, RevisionBuild> = BTreeMap::new();
    let mut compactions = BTreeSet::new();
    let mut final_revision = 0i64;

    for watch in &watches.watches {
        let describe = watch.describe();
        if let Some(opened) = watch.opened_revision {
            final_revision = final_revision.max(opened);
        }
        for item in &watch.items {
            let (at_ns, member) = (item.at_ns(), item.member());
            match item {
                WatchItem::Events {
                    header_revision,
                    events,
                    ..
                } => {
                    final_revision = final_revision.max(*header_revision);
                    // Runs of events at one revision, each merged as one ordered sequence.
                    for run in events.chunk_by(|a, b| a.revision() == b.revision()) {
                        let revision = run[0].revision();
                        if revision < 1 {
                            // No revision below 1 changes anything: such an event is the
                            // checker's to report (faithful), not a fact to rebuild from.
                            continue;
                        }
                        final_revision = final_revision.max(revision);
                        let build = builds.entry(revision).or_default();
                        let source = || Source::Watch {
                            describe: describe.clone(),
                            at_ns,
                            member,
                        };
                        let mut previous: Option<usize> = None;
                        for (i, event) in run.iter().enumerate() {
                            let new = normalized(event.kind, &event.kv);
                            let key = &event.kv.key;
                            if let Some(&at) = build.positions.get(key) {
                                let (known, known_source) = &build.events[at];
                                if known.kind != new.kind || known.kv != new.kv {
                                    return Err(ReconstructError::Disagreement {
                                        revision,
                                        key: key.clone(),
                                        first: format!(
                                            "{} {}",
                                            known_source.text(),
                                            event_text(known.kind, &known.kv, None)
                                        ),
                                        second: format!(
                                            "{} {}",
                                            source().text(),
                                            event_text(new.kind, &new.kv, None)
                                        ),
                                    });
                                }
                                previous = Some(at);
                            } else {
                                // After this sequence's previous event, or else before its next
                                // event already known, or else at the end.
                                let position = match previous {
                                    Some(p) => p + 1,
                                    None => run[i + 1..]
                                        .iter()
                                        .find_map(|e| build.positions.get(&e.kv.key).copied())
                                        .unwrap_or(build.events.len()),
                                };
                                build.insert(position, new, source());
                                previous = Some(position);
                            }
                            if let (true, Some(prev)) = (watch.prev_kv, &event.prev_kv) {
                                if let Some((known, known_source)) = build.delivered_prev.get(key) {
                                    if known != prev {
                                        return Err(ReconstructError::Disagreement {
                                            revision,
                                            key: key.clone(),
                                            first: format!(
                                                "{} prev_kv {}",
                                                known_source.text(),
                                                super::format::kv_text(known)
                                            ),
                                            second: format!(
                                                "{} prev_kv {}",
                                                source().text(),
                                                super::format::kv_text(prev)
                                            ),
                                        });
                                    }
                                } else {
                                    build
                                        .delivered_prev
                                        .insert(key.clone(), (prev.clone(), source()));
                                }
                            }
                        }
                    }
                }
                WatchItem::Progress { revision, .. } => {
                    final_revision = final_revision.max(*revision);
                }
                WatchItem::Compacted {
                    compact_revision, ..
                } => {
                    compactions.insert(*compact_revision);
                    final_revision = final_revision.max(*compact_revision);
                }
                WatchItem::Resumed { from_revision, .. } => {
                    final_revision = final_revision.max(from_revision - 1);
                }
            }
        }
    }

    for op in &history.operations {
        let Outcome::Ok { revision, response } = &op.outcome else {
            continue;
        };
        final_revision = final_revision.max(*revision);
        let text = |what: String| Source::Operation {
            text: format!(
                "op {} client {} [{}..{}] {what} -> ok rev {revision}",
                op.id,
                op.client,
                seconds(op.invoke_ns),
                op.complete_ns.map_or_else(|| "?".to_string(), seconds)
            ),
        };
        match (&op.request, response) {
            (Request::Compact { revision }, Response::Compact {}) => {
                compactions.insert(*revision);
            }
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
                for (request, response) in branch.iter().zip(responses) {
                    acknowledge(&mut builds, *revision, request, response, || {
                        text(format!("txn {}", write_text(request)))
                    })?;
                }
            }
            (request, response) => {
                acknowledge(&mut builds, *revision, request, response, || {
                    text(write_text(request))
                })?;
            }
        }
    }

    // prev_kv, in revision order, from each key's last known event.
    let mut last: BTreeMap<String, CommittedEvent> = BTreeMap::new();
    let mut revisions = BTreeMap::new();
    let mut guessed_prev = BTreeSet::new();
    for (revision, mut build) in builds {
        let mut events = Vec::with_capacity(build.events.len());
        for (mut event, _) in build.events {
            let key = event.kv.key.clone();
            let known = last.get(&key);
            let continues = |known: &CommittedEvent| {
                known.kind == EventKind::Put
                    && known.kv.create_revision == event.kv.create_revision
                    && known.kv.create_revision != 0
                    && known.kv.version == event.kv.version - 1
            };
            event.prev_kv = match (event.kind, known) {
                (EventKind::Put, _) if event.kv.version == 1 => None,
                (EventKind::Put, Some(known)) if event.kv.version > 1 && continues(known) => {
                    Some(known.kv.clone())
                }
                _ => match build.delivered_prev.remove(&key) {
                    Some((prev, _)) => Some(prev),
                    None => {
                        guessed_prev.insert((revision, key.clone()));
                        known
                            .filter(|known| known.kind == EventKind::Put)
                            .map(|known| known.kv.clone())
                    }
                },
            };
            last.insert(key, event.clone());
            events.push(event);
        }
        revisions.insert(revision, events);
    }
    let committed = CommittedHistory {
        revisions,
        compactions: compactions.into_iter().collect(),
        final_revision,
        guessed_prev,
    };
    debug_assert!(
        committed.validate().is_empty(),
        "{:?}",
        committed.validate()
    );
    Ok(committed)
}

/// A put or delete request in a few words.
fn write_text(request: &Request) -> String {
    match request {
        Request::Put { key, value, .. } => format!("put {key}={value}"),
        Request::Delete { key, .. } => format!("delete {key}"),
        _ => "request".to_string(),
    }
}

/// Holds an acknowledged put, or a delete of one key that deleted it, against the revision it
/// reported: an event delivered there for the key must be that write; if none was, the write is
/// the event.
fn acknowledge(
    builds: &mut BTreeMap<i64, RevisionBuild>,
    revision: i64,
    request: &Request,
    response: &Response,
    source: impl Fn() -> Source,
) -> Result<(), ReconstructError> {
    let (kind, kv) = match (request, response) {
        (Request::Put { key, value, lease }, Response::Put {}) => (
            EventKind::Put,
            Kv {
                key: key.clone(),
                value: value.clone(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
                lease: *lease,
            },
        ),
        (
            Request::Delete {
                key,
                range_end: None,
            },
            Response::Delete { deleted: 1 },
        ) => (EventKind::Delete, delete_kv(key, revision)),
        (
            Request::Delete {
                key,
                range_end: Some(end),
            },
            Response::Delete { deleted: 1 },
        ) if end.is_empty() => (EventKind::Delete, delete_kv(key, revision)),
        _ => return Ok(()),
    };
    if revision < 1 {
        return Ok(());
    }
    let build = builds.entry(revision).or_default();
    match build.positions.get(&kv.key) {
        Some(&at) => {
            let (known, known_source) = &build.events[at];
            let agrees = known.kind == kind
                && (kind == EventKind::Delete
                    || (known.kv.value == kv.value && known.kv.lease == kv.lease));
            if !agrees {
                return Err(ReconstructError::Contradiction {
                    revision,
                    key: kv.key.clone(),
                    operation: source().text(),
                    seen: format!(
                        "{} {}",
                        known_source.text(),
                        event_text(known.kind, &known.kv, None)
                    ),
                });
            }
        }
        None => {
            let position = build.events.len();
            build.insert(
                position,
                CommittedEvent {
                    kind,
                    kv,
                    prev_kv: None,
                },
                source(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(value: &str, create: i64, modified: i64, version: i64) -> Kv {
        Kv {
            key: "k".into(),
            value: value.into(),
            create_revision: create,
            mod_revision: modified,
            version,
            lease: 0,
        }
    }

    fn event(kv: Kv, prev_kv: Option<Kv>) -> CommittedEvent {
        CommittedEvent {
            kind: EventKind::Put,
            kv,
            prev_kv,
        }
    }

    #[test]
    fn a_put_rebuilt_from_its_acknowledgement_agrees_on_what_it_knows() {
        let truth = event(put("b", 3, 7, 2), Some(put("a", 3, 3, 1)));
        // Rebuilt from the write alone: no create revision or version.
        let rebuilt = event(put("b", 0, 7, 0), Some(put("a", 3, 3, 1)));
        assert!(rebuilt.agrees_with(&truth, true));
        assert!(event(put("b", 3, 7, 2), Some(put("a", 0, 3, 0))).agrees_with(&truth, true));
        // What it does know must match.
        assert!(!event(put("c", 0, 7, 0), Some(put("a", 3, 3, 1))).agrees_with(&truth, true));
        assert!(!event(put("b", 3, 7, 3), Some(put("a", 3, 3, 1))).agrees_with(&truth, true));
        assert!(!event(put("b", 3, 7, 2), None).agrees_with(&truth, true));
        assert!(!event(put("b", 3, 7, 2), Some(put("z", 3, 3, 1))).agrees_with(&truth, true));
        // A guessed prev_kv agrees with anything; the rest must still match.
        assert!(event(put("b", 0, 7, 0), None).agrees_with(&truth, false));
        assert!(!event(put("c", 0, 7, 0), None).agrees_with(&truth, false));
    }
}
