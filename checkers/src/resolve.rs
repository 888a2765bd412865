//! Settling writes of unknown outcome with a watch of every key, as etcd's robustness tests do.
//!
//! A write whose reply was lost may have taken effect or not, and the linearizability search
//! must keep every such write open to the end of the history: a few dozen of them make the
//! search explode. A watch of the whole keyspace from revision 1 tells what did happen. Where
//! every put's value is unique (as in Faultline's workloads), an event that put a write's value
//! says the write took effect at that event's revision; no such event, in a watch that saw every
//! revision up to the last one the history shows, says it did not (or only after everything the
//! history observed, where it cannot matter).
//!
//! [`resolve_unknown_writes`] rewrites those operations: a put that happened becomes `ok` at its
//! revision with no completion time; a write that certainly changed nothing becomes `failed`, and
//! the checkers drop it. Everything else is left unknown. The result is only as good as the
//! watch: a watch that invents or loses an event can make a history look right or wrong, so
//! the reads of the history must still agree with it, and the report says how many operations
//! the watch settled. This module never reads the simulator or the store.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::etcd::bumped;
use crate::history::{History, Outcome, Request, Response};
use crate::watch::{EventKind, WatchHistory, WatchItem};

/// One event of a watch of every key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchedEvent {
    pub revision: i64,
    pub key: String,
    /// The value put; empty for a delete.
    #[serde(default)]
    pub value: String,
    #[serde(default)]
    pub delete: bool,
}

/// What [`resolve_unknown_writes`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Writes of unknown outcome in the history.
    pub unknown_writes: usize,
    /// Puts the watch saw take effect: now `ok` at their revision.
    pub happened: usize,
    /// Writes that certainly changed nothing: now `failed`.
    pub never: usize,
    /// The highest revision up to which the watch saw every revision, if it reached the
    /// history's last revision; `None` if it did not, and then no write is settled as "never".
    pub complete_through: Option<i64>,
}

impl Resolution {
    pub fn summary(&self) -> String {
        let coverage = match self.complete_through {
            Some(r) => format!("the watch saw every revision through {r}"),
            None => "the watch missed revisions, so none was settled as never happened".to_string(),
        };
        format!(
            "{} of {} writes of unknown outcome settled by a watch of every key: {} happened, \
             {} never did ({coverage})",
            self.happened + self.never,
            self.unknown_writes,
            self.happened,
            self.never
        )
    }
}

/// The events of the first watch in `watches` that covers every key from revision 1 (key and
/// range end `"\0"`), in the order received; `None` if there is no such watch.
pub fn keyspace_events(watches: &WatchHistory) -> Option<Vec<WatchedEvent>> {
    let watch = watches
        .watches
        .iter()
        .find(|w| w.key == "\0" && w.range_end.as_deref() == Some("\0") && w.start_revision == 1)?;
    let events = watch
        .items
        .iter()
        .flat_map(|item| match item {
            WatchItem::Events { events, .. } => events.as_slice(),
            _ => &[],
        })
        .map(|e| WatchedEvent {
            revision: e.revision(),
            key: e.kv.key.clone(),
            value: e.kv.value.clone(),
            delete: e.kind == EventKind::Delete,
        })
        .collect();
    Some(events)
}

/// The puts of a request (both branches of a txn), as (key, value).
fn puts(request: &Request) -> Vec<(&str, &str)> {
    match request {
        Request::Put { key, value, .. } => vec![(key.as_str(), value.as_str())],
        Request::Txn {
            success, failure, ..
        } => success.iter().chain(failure).flat_map(puts).collect(),
        _ => Vec::new(),
    }
}

/// Whether some branch of the txn neither puts nor deletes (it may run and change nothing).
fn changes_nothing_unless_it_puts(request: &Request) -> bool {
    let Request::Txn {
        success, failure, ..
    } = request
    else {
        return false;
    };
    [success, failure].into_iter().all(|branch| {
        branch.iter().any(|op| matches!(op, Request::Put { .. }))
            || branch.iter().all(|op| matches!(op, Request::Get { .. }))
    })
}

/// Settles what a watch of every key from revision 1 (`events`) can settle; see the module
/// documentation.
pub fn resolve_unknown_writes(history: &History, events: &[WatchedEvent]) -> (History, Resolution) {
    let mut resolution = Resolution::default();
    let mut claimed = BTreeSet::new();
    let mut last_revision = 1;
    for op in &history.operations {
        if let Outcome::Ok { revision, response } = &op.outcome {
            last_revision = last_revision.max(*revision);
            if bumped(&op.request, response) {
                claimed.insert(*revision);
            }
        }
    }
    // Every revision changes something, so a watch that missed none has events at 2, 3, ...
    let seen: BTreeSet<i64> = events.iter().map(|e| e.revision).collect();
    let mut through = 1;
    while seen.contains(&(through + 1)) {
        through += 1;
    }
    resolution.complete_through = (through >= last_revision).then_some(through);
    let mut put_at: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    for e in events.iter().filter(|e| !e.delete) {
        put_at
            .entry((e.key.as_str(), e.value.as_str()))
            .or_default()
            .push(e.revision);
    }
    // A value two unknown writes could have put tells neither apart: leave both.
    let mut candidates: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for op in &history.operations {
        if matches!(op.outcome, Outcome::Unknown) {
            for put in puts(&op.request) {
                *candidates.entry(put).or_default() += 1;
            }
        }
    }

    let mut resolved = history.clone();
    for op in &mut resolved.operations {
        if !matches!(op.outcome, Outcome::Unknown) {
            continue;
        }
        let is_write = matches!(
            op.request,
            Request::Put { .. } | Request::Delete { .. } | Request::Txn { .. }
        );
        if !is_write {
            continue;
        }
        resolution.unknown_writes += 1;
        let own = puts(&op.request);
        let unique = own.iter().all(|p| candidates.get(p) == Some(&1));
        let seen_at: Vec<i64> = own
            .iter()
            .flat_map(|p| put_at.get(p).into_iter().flatten().copied())
            .collect();
        match &op.request {
            Request::Put { .. } if unique => match seen_at.as_slice() {
                [revision] if !claimed.contains(revision) => {
                    op.outcome = Outcome::Ok {
                        revision: *revision,
                        response: Response::Put {},
                    };
                    op.complete_ns = None;
                    resolution.happened += 1;
                }
                [] if resolution.complete_through.is_some() => {
                    op.outcome = Outcome::Failed {
                        error: "never took effect (settled by a watch of every key)".to_string(),
                    };
                    resolution.never += 1;
                }
                _ => {}
            },
            // A txn none of whose puts happened ran, if at all, a branch without puts; when
            // such a branch only reads, the txn changed nothing.
            Request::Txn { .. }
                if unique
                    && seen_at.is_empty()
                    && resolution.complete_through.is_some()
                    && changes_nothing_unless_it_puts(&op.request) =>
            {
                op.outcome = Outcome::Failed {
                    error: "changed nothing (settled by a watch of every key)".to_string(),
                };
                resolution.never += 1;
            }
            _ => {}
        }
    }
    (resolved, resolution)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;

    fn op(id: u64, request: Request, outcome: Outcome) -> Operation {
        Operation {
            id,
            client: id,
            invoke_ns: id * 10,
            complete_ns: (!matches!(outcome, Outcome::Unknown)).then_some(id * 10 + 5),
            request,
            outcome,
        }
    }

    fn put(key: &str, value: &str) -> Request {
        Request::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }

    fn ok(revision: i64) -> Outcome {
        Outcome::Ok {
            revision,
            response: Response::Put {},
        }
    }

    fn event(revision: i64, key: &str, value: &str) -> WatchedEvent {
        WatchedEvent {
            revision,
            key: key.into(),
            value: value.into(),
            delete: false,
        }
    }

    fn history(ops: Vec<Operation>) -> History {
        History {
            meta: BTreeMap::new(),
            operations: ops,
        }
    }

    #[test]
    fn a_put_the_watch_saw_happened_at_its_revision_and_one_it_never_saw_did_not_happen() {
        let h = history(vec![
            op(0, put("a", "v0"), ok(2)),
            op(1, put("a", "v1"), Outcome::Unknown),
            op(2, put("b", "v2"), Outcome::Unknown),
            op(3, put("a", "v3"), ok(4)),
        ]);
        let events = [
            event(2, "a", "v0"),
            event(3, "a", "v1"),
            event(4, "a", "v3"),
        ];
        let (resolved, resolution) = resolve_unknown_writes(&h, &events);
        assert_eq!(resolved.operations[1].outcome, ok(3));
        assert_eq!(resolved.operations[1].complete_ns, None);
        assert!(matches!(
            resolved.operations[2].outcome,
            Outcome::Failed { .. }
        ));
        assert_eq!(
            (
                resolution.unknown_writes,
                resolution.happened,
                resolution.never,
                resolution.complete_through
            ),
            (2, 1, 1, Some(4))
        );
    }

    #[test]
    fn the_events_come_from_the_watch_of_every_key_from_revision_1() {
        use crate::history::Kv;
        use crate::watch::{WatchEvent, WatchRecord};
        let watch = |key: &str, start_revision: i64, value: &str| WatchRecord {
            id: 0,
            client: 0,
            key: key.into(),
            range_end: Some("\0".into()),
            start_revision,
            prev_kv: false,
            progress_notify: false,
            no_put: false,
            no_delete: false,
            opened_ns: 0,
            opened_revision: None,
            items: vec![WatchItem::Events {
                at_ns: 1,
                member: 1,
                header_revision: 2,
                events: vec![WatchEvent {
                    kind: EventKind::Put,
                    kv: Kv {
                        key: "a".into(),
                        value: value.into(),
                        create_revision: 2,
                        mod_revision: 2,
                        version: 1,
                        lease: 0,
                    },
                    prev_kv: None,
                }],
            }],
            follows_to_end: true,
            stream: None,
        };
        let watches = WatchHistory {
            meta: BTreeMap::new(),
            watches: vec![watch("a", 1, "other"), watch("\0", 1, "v")],
        };
        assert_eq!(keyspace_events(&watches), Some(vec![event(2, "a", "v")]));
        let none = WatchHistory {
            meta: BTreeMap::new(),
            watches: vec![watch("\0", 2, "v")],
        };
        assert_eq!(keyspace_events(&none), None);
    }

    #[test]
    fn a_watch_with_a_gap_settles_no_write_as_never_happened() {
        let h = history(vec![
            op(0, put("a", "v0"), ok(2)),
            op(1, put("b", "v1"), Outcome::Unknown),
            op(2, put("a", "v2"), ok(4)),
        ]);
        // Revision 3 is missing from the watch: v1 may be there.
        let events = [event(2, "a", "v0"), event(4, "a", "v2")];
        let (resolved, resolution) = resolve_unknown_writes(&h, &events);
        assert_eq!(resolved.operations[1].outcome, Outcome::Unknown);
        assert_eq!(resolution.complete_through, None);
        assert_eq!(resolution.never, 0);
    }

    #[test]
    fn a_value_two_unknown_puts_share_or_a_revision_an_ok_write_claims_stays_unknown() {
        let h = history(vec![
            op(0, put("a", "same"), Outcome::Unknown),
            op(1, put("a", "same"), Outcome::Unknown),
            op(2, put("b", "v2"), Outcome::Unknown),
            op(3, put("c", "v3"), ok(3)),
        ]);
        let events = [event(2, "a", "same"), event(3, "b", "v2")];
        let (resolved, resolution) = resolve_unknown_writes(&h, &events);
        assert_eq!(resolved.operations[0].outcome, Outcome::Unknown);
        assert_eq!(resolved.operations[1].outcome, Outcome::Unknown);
        // Revision 3 is op 3's own: the event naming b there contradicts the history, and the
        // put stays unknown for the checkers to judge.
        assert_eq!(resolved.operations[2].outcome, Outcome::Unknown);
        assert_eq!(resolution.happened, 0);
    }

    #[test]
    fn a_cas_txn_whose_put_never_happened_changed_nothing_but_a_delete_branch_stays_open() {
        let cas = Request::Txn {
            compare: Vec::new(),
            success: vec![put("a", "v1")],
            failure: vec![Request::Get {
                key: "a".into(),
                range_end: None,
                revision: 0,
                limit: 0,
                keys_only: false,
                serializable: false,
            }],
        };
        let delete_or_put = Request::Txn {
            compare: Vec::new(),
            success: vec![Request::Delete {
                key: "a".into(),
                range_end: None,
            }],
            failure: vec![put("a", "v2")],
        };
        let h = history(vec![
            op(0, put("a", "v0"), ok(2)),
            op(1, cas, Outcome::Unknown),
            op(2, delete_or_put, Outcome::Unknown),
        ]);
        let (resolved, resolution) = resolve_unknown_writes(&h, &[event(2, "a", "v0")]);
        assert!(matches!(
            resolved.operations[1].outcome,
            Outcome::Failed { .. }
        ));
        assert_eq!(resolved.operations[2].outcome, Outcome::Unknown);
        assert_eq!((resolution.unknown_writes, resolution.never), (2, 1));
    }
}
