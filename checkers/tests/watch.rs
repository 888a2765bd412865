//! The watch checker on hand-built committed histories and watch streams (each legal, or broken
//! in one named way, after a known etcd bug shape where there is one), on generated histories
//! whose watchers saw everything, and the watch history format.

use std::collections::BTreeMap;

use faultline_checkers::history::{History, Kv, Operation, Outcome, Request, Response};
use faultline_checkers::watch::{
    check, reconstruct, CommittedEvent, CommittedHistory, EventKind, Property, ReconstructError,
    WatchEvent, WatchHistory, WatchItem, WatchRecord, WatchReport,
};

/// Compares `text` with its golden file `golden/<name>.snap` beside this file.
macro_rules! golden {
    ($name:expr, $text:expr) => {
        insta::with_settings!({ snapshot_path => "golden", prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!($name, $text);
        })
    };
}

const MS: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// Building committed histories and watch streams.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Op<'a> {
    Put(&'a str, &'a str),
    Delete(&'a str),
}

/// A sequential etcd keyspace that records what it commits, revision by revision.
#[derive(Debug)]
struct Committer {
    revision: i64,
    keys: BTreeMap<String, Kv>,
    committed: CommittedHistory,
}

impl Committer {
    fn new() -> Self {
        Committer {
            revision: 1,
            keys: BTreeMap::new(),
            committed: CommittedHistory {
                final_revision: 1,
                ..CommittedHistory::default()
            },
        }
    }

    /// Applies the ops as one revision; returns it.
    fn apply(&mut self, ops: &[Op]) -> i64 {
        self.revision += 1;
        let revision = self.revision;
        let mut events = Vec::new();
        for op in ops {
            match *op {
                Op::Put(key, value) => {
                    let prev = self.keys.get(key).cloned();
                    let kv = Kv {
                        key: key.to_string(),
                        value: value.to_string(),
                        create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                        mod_revision: revision,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        lease: 0,
                    };
                    self.keys.insert(key.to_string(), kv.clone());
                    events.push(CommittedEvent {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: prev,
                    });
                }
                Op::Delete(key) => {
                    let prev = self.keys.remove(key).expect("deletes an existing key");
                    events.push(CommittedEvent {
                        kind: EventKind::Delete,
                        kv: delete_kv(key, revision),
                        prev_kv: Some(prev),
                    });
                }
            }
        }
        self.committed.revisions.insert(revision, events);
        self.committed.final_revision = revision;
        revision
    }

    fn compact(&mut self, revision: i64) {
        self.committed.compactions.push(revision);
    }

    /// The committed event of `key` at `revision`, as a watch with prev_kv receives it.
    fn event(&self, revision: i64, key: &str) -> WatchEvent {
        let event = self.committed.revisions[&revision]
            .iter()
            .find(|e| e.kv.key == key)
            .expect("a committed event");
        WatchEvent {
            kind: event.kind,
            kv: event.kv.clone(),
            prev_kv: event.prev_kv.clone(),
        }
    }

    /// Every event of `revision` the watch asked for, as it receives them.
    fn events_for(&self, watch: &WatchRecord, revision: i64) -> Vec<WatchEvent> {
        self.committed
            .revisions
            .get(&revision)
            .into_iter()
            .flatten()
            .filter(|e| watch.matches(e.kind, &e.kv.key))
            .map(|e| for_watch(watch, self.event(revision, &e.kv.key)))
            .collect()
    }
}

fn delete_kv(key: &str, revision: i64) -> Kv {
    Kv {
        key: key.to_string(),
        value: String::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        lease: 0,
    }
}

/// The event as `watch` receives it: without prev_kv unless it asked.
fn for_watch(watch: &WatchRecord, mut event: WatchEvent) -> WatchEvent {
    if !watch.prev_kv {
        event.prev_kv = None;
    }
    event
}

/// Builds one watch's record, item by item; times in milliseconds.
#[derive(Debug, Clone)]
struct W(WatchRecord);

fn watch(id: u64, key: &str, range_end: Option<&str>, start_revision: i64) -> W {
    W(WatchRecord {
        id,
        client: 10 + id,
        key: key.to_string(),
        range_end: range_end.map(str::to_string),
        start_revision,
        prev_kv: false,
        progress_notify: false,
        no_put: false,
        no_delete: false,
        opened_ns: 0,
        opened_revision: None,
        items: Vec::new(),
        follows_to_end: false,
        stream: None,
    })
}

impl W {
    fn prev_kv(mut self) -> Self {
        self.0.prev_kv = true;
        self
    }

    fn follows(mut self) -> Self {
        self.0.follows_to_end = true;
        self
    }

    fn no_delete(mut self) -> Self {
        self.0.no_delete = true;
        self
    }

    fn opened_at(mut self, revision: i64) -> Self {
        self.0.opened_revision = Some(revision);
        self
    }

    /// One response with these events.
    fn events(mut self, ms: u64, member: u64, events: Vec<WatchEvent>) -> Self {
        let header_revision = events.iter().map(|e| e.kv.mod_revision).max().unwrap_or(0);
        self.0.items.push(WatchItem::Events {
            at_ns: ms * MS,
            member,
            header_revision,
            events,
        });
        self
    }

    /// One response with every event of these revisions the watch asked for.
    fn revisions(self, ms: u64, member: u64, c: &Committer, revisions: &[i64]) -> Self {
        let events = revisions
            .iter()
            .flat_map(|&r| c.events_for(&self.0, r))
            .collect();
        self.events(ms, member, events)
    }

    fn progress(mut self, ms: u64, member: u64, revision: i64) -> Self {
        self.0.items.push(WatchItem::Progress {
            at_ns: ms * MS,
            member,
            revision,
        });
        self
    }

    fn resume(mut self, ms: u64, member: u64, from_revision: i64) -> Self {
        self.0.items.push(WatchItem::Resumed {
            at_ns: ms * MS,
            member,
            from_revision,
        });
        self
    }

    fn compacted(mut self, ms: u64, member: u64, compact_revision: i64) -> Self {
        self.0.items.push(WatchItem::Compacted {
            at_ns: ms * MS,
            member,
            compact_revision,
        });
        self
    }
}

/// Keys a, b and c:
/// rev 2 put a=a1; rev 3 put b=b1; rev 4 txn put a=a2, b=b2; rev 5 delete a; rev 6 put c=c1;
/// rev 7 put a=a3; rev 8 put b=b3.
fn scenario() -> Committer {
    let mut c = Committer::new();
    c.apply(&[Op::Put("a", "a1")]);
    c.apply(&[Op::Put("b", "b1")]);
    c.apply(&[Op::Put("a", "a2"), Op::Put("b", "b2")]);
    c.apply(&[Op::Delete("a")]);
    c.apply(&[Op::Put("c", "c1")]);
    c.apply(&[Op::Put("a", "a3")]);
    c.apply(&[Op::Put("b", "b3")]);
    c
}

/// Watch 1 on keys [a, c) (a and b) from revision 2, with prev_kv, followed to the end.
fn ab_watch() -> W {
    watch(1, "a", Some("c"), 2).prev_kv().follows()
}

fn judge(c: &Committer, watches: &[&W]) -> WatchReport {
    let history = WatchHistory {
        meta: BTreeMap::new(),
        watches: watches.iter().map(|w| w.0.clone()).collect(),
    };
    check(&history, &c.committed)
}

fn assert_passes(c: &Committer, w: &W) -> WatchReport {
    let report = judge(c, &[w]);
    assert!(report.passed(), "{}", report.render());
    report
}

/// Asserts exactly these properties fail, and that the rendered report names each on watch `w`.
fn assert_fails(c: &Committer, w: &W, properties: &[Property]) -> WatchReport {
    let report = judge(c, &[w]);
    assert!(!report.passed());
    assert_eq!(
        report.failed_properties(),
        properties,
        "{}",
        report.render()
    );
    let text = report.render();
    for property in properties {
        let named = format!("{property}: watch {} (client", w.0.id);
        assert!(text.contains(&named), "{text} should name {named:?}");
    }
    report
}

fn count(report: &WatchReport, property: Property) -> u64 {
    report.violation_counts.get(&property).copied().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Each property: a stream that keeps it, and one that breaks it.
// ---------------------------------------------------------------------------------------------

#[test]
fn every_guarantee_holds_on_streams_that_resume_notify_progress_filter_and_get_compacted() {
    let mut c = scenario();
    c.compact(3);
    let full = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .progress(1200, 1, 4)
        .resume(1500, 2, 5)
        .revisions(1600, 2, &c, &[5])
        .progress(1650, 2, 6)
        .revisions(1700, 2, &c, &[7, 8])
        .progress(1800, 2, 8);
    let only_puts = watch(2, "a", None, 2)
        .no_delete()
        .follows()
        .revisions(1000, 3, &c, &[2])
        .revisions(1100, 3, &c, &[4])
        .revisions(1700, 3, &c, &[7]);
    let from_now = watch(3, "", Some("\u{0}"), 0)
        .opened_at(5)
        .follows()
        .revisions(1650, 1, &c, &[6])
        .resume(1680, 3, 7)
        .revisions(1700, 3, &c, &[7, 8]);
    let compacted = watch(4, "b", None, 2).prev_kv().compacted(1300, 2, 3);
    let history = WatchHistory {
        meta: BTreeMap::new(),
        watches: vec![full.0, only_puts.0, from_now.0, compacted.0],
    };
    let report = check(&history, &c.committed);
    assert!(report.passed(), "{}", report.render());
    assert_eq!(report.totals.watches, 4);
    assert_eq!(report.totals.events, 7 + 3 + 3);
    assert_eq!(report.totals.resumes, 2);
    assert_eq!(report.totals.compaction_cancels, 1);
    assert_eq!(report.totals.progress_notifications, 3);
    assert_eq!(report.watches[0].responses, 4);
    golden!("watch_every_guarantee_holds", report.render());
}

#[test]
fn ordered_a_replayed_old_revision_after_a_resume_goes_back() {
    let c = scenario();
    let good = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .resume(1500, 2, 5)
        .revisions(1600, 2, &c, &[5])
        .revisions(1700, 2, &c, &[7, 8]);
    assert_passes(&c, &good);
    // The new member replays revision 3 before going on: out of order, a duplicate, and not
    // where the resume asked to start.
    let replayed = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .resume(1500, 2, 5)
        .revisions(1550, 2, &c, &[3])
        .revisions(1600, 2, &c, &[5])
        .revisions(1700, 2, &c, &[7, 8]);
    let report = assert_fails(
        &c,
        &replayed,
        &[Property::Ordered, Property::Unique, Property::Resumable],
    );
    assert!(report.render().contains(
        "ordered: watch 1 (client 11, keys [a, c), prev_kv, from revision 2): put b=b1@3 \
         (created 3, version 1) received at 1.550s from member 2 after revision 4 was delivered \
         at 1.100s from member 1"
    ));
    // Reordered responses, nothing repeated or lost: only the order is wrong.
    let reordered = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[4])
        .revisions(1200, 1, &c, &[3])
        .revisions(1600, 1, &c, &[5])
        .revisions(1700, 1, &c, &[7, 8]);
    assert_fails(&c, &reordered, &[Property::Ordered]);
}

#[test]
fn unique_a_revision_delivered_twice_is_a_duplicate_not_a_split() {
    let c = scenario();
    let duplicated = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .revisions(1200, 1, &c, &[4])
        .revisions(1600, 1, &c, &[5])
        .revisions(1700, 1, &c, &[7, 8]);
    let report = assert_fails(&c, &duplicated, &[Property::Unique]);
    assert_eq!(count(&report, Property::Unique), 2, "a@4 and b@4");
    assert!(report.render().contains(
        "received at 1.200s from member 1 was already delivered at 1.100s from member 1"
    ));
}

#[test]
fn atomic_a_revision_split_across_two_responses() {
    let c = scenario();
    let split = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .events(1100, 1, vec![c.event(3, "b"), c.event(4, "a")])
        .events(1200, 1, vec![c.event(4, "b"), c.event(5, "a")])
        .revisions(1700, 1, &c, &[7, 8]);
    let report = assert_fails(&c, &split, &[Property::Atomic]);
    assert_eq!(report.violations[0].revision, 4);
    assert!(report
        .render()
        .contains("revision 4 is split across responses"));
}

#[test]
fn reliable_a_missing_revision_in_the_middle_is_a_gap() {
    let c = scenario();
    let gap = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3])
        .revisions(1600, 1, &c, &[5])
        .revisions(1700, 1, &c, &[7, 8]);
    let report = assert_fails(&c, &gap, &[Property::Reliable]);
    golden!("watch_reliable_gap", report.render());
    // Half a revision is a gap too (the rest never arrives).
    let half = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .events(1100, 1, vec![c.event(3, "b"), c.event(4, "a")])
        .revisions(1600, 1, &c, &[5])
        .revisions(1700, 1, &c, &[7, 8]);
    let report = assert_fails(&c, &half, &[Property::Reliable]);
    assert!(report
        .render()
        .contains("1 matching event at revision 4 never delivered (first: put b=b2@4"));
}

#[test]
fn resumable_a_watch_at_the_compact_revision_misses_the_delete_at_it_etcd_18089() {
    let mut c = scenario();
    c.compact(5);
    // From the compact revision 5 on key a: the delete at 5 must come first. Its prev_kv (a@4)
    // was compacted away, so it may come without one.
    let good = watch(2, "a", None, 5)
        .prev_kv()
        .follows()
        .events(
            1000,
            1,
            vec![WatchEvent {
                prev_kv: None,
                ..c.event(5, "a")
            }],
        )
        .revisions(1700, 1, &c, &[7]);
    assert_passes(&c, &good);
    let missed = watch(2, "a", None, 5)
        .prev_kv()
        .follows()
        .revisions(1700, 1, &c, &[7]);
    let report = assert_fails(&c, &missed, &[Property::Resumable]);
    golden!("watch_compact_revision_misses_its_event", report.render());
}

#[test]
fn resumable_a_resume_from_the_last_revision_instead_of_the_next() {
    let c = scenario();
    // The client resumes from 4, the revision it already has, and drops the repeat itself.
    let from_last = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .resume(1500, 2, 4)
        .revisions(1600, 2, &c, &[5])
        .revisions(1700, 2, &c, &[7, 8]);
    let report = assert_fails(&c, &from_last, &[Property::Resumable]);
    golden!("watch_resume_from_last_revision", report.render());
    // The server serves the resume as asked: revision 4 arrives again.
    let replayed = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .resume(1500, 2, 4)
        .revisions(1550, 2, &c, &[4])
        .revisions(1600, 2, &c, &[5])
        .revisions(1700, 2, &c, &[7, 8]);
    let report = assert_fails(&c, &replayed, &[Property::Unique, Property::Resumable]);
    assert_eq!(count(&report, Property::Resumable), 1);
    assert!(report
        .render()
        .contains("from revision 4 instead of 5 (last event at revision 4 at 1.100s from member 1), which delivers revision 4 again"));
    // Resuming beyond the next revision skips: resumable and reliable.
    let skipping = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .resume(1500, 2, 6)
        .revisions(1700, 2, &c, &[7, 8]);
    assert_fails(&c, &skipping, &[Property::Reliable, Property::Resumable]);
}

#[test]
fn bookmarkable_progress_claimed_before_its_events_were_delivered_etcd_15220() {
    let c = scenario();
    let early = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .progress(1050, 1, 4)
        .revisions(1100, 1, &c, &[3, 4])
        .revisions(1600, 1, &c, &[5])
        .revisions(1700, 1, &c, &[7, 8]);
    let report = assert_fails(&c, &early, &[Property::Bookmarkable]);
    golden!("watch_progress_before_its_events", report.render());
    // Progress revisions never go down.
    let down = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .progress(1200, 1, 4)
        .progress(1300, 2, 3)
        .revisions(1600, 2, &c, &[5])
        .revisions(1700, 2, &c, &[7, 8]);
    let report = assert_fails(&c, &down, &[Property::Bookmarkable]);
    assert!(report.render().contains(
        "progress notification at revision 3 received at 1.300s from member 2 after one at \
         revision 4 at 1.200s from member 1"
    ));
}

#[test]
fn faithful_a_wrong_value_a_wrong_prev_kv_and_an_unasked_prev_kv() {
    let c = scenario();
    let mut wrong = c.event(4, "a");
    wrong.kv.value = "zz".to_string();
    let wrong_value = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .events(1100, 1, vec![c.event(3, "b"), wrong, c.event(4, "b")])
        .revisions(1600, 1, &c, &[5])
        .revisions(1700, 1, &c, &[7, 8]);
    let report = assert_fails(&c, &wrong_value, &[Property::Faithful]);
    assert!(report.render().contains(
        "put a=zz@4 (created 2, version 2) prev a=a1@2 (created 2, version 1) received at \
         1.100s from member 1: the kv differs; committed: put a=a2@4"
    ));

    let mut wrong = c.event(5, "a");
    wrong.prev_kv = c.event(2, "a").prev_kv.or(Some(c.event(2, "a").kv));
    let wrong_prev = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .events(1600, 1, vec![wrong])
        .revisions(1700, 1, &c, &[7, 8]);
    let report = assert_fails(&c, &wrong_prev, &[Property::Faithful]);
    assert!(report
        .render()
        .contains("prev_kv a=a1@2 (created 2, version 1) differs"));

    // Missing prev_kv with nothing compacted.
    let missing_prev = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .events(
            1600,
            1,
            vec![WatchEvent {
                prev_kv: None,
                ..c.event(5, "a")
            }],
        )
        .revisions(1700, 1, &c, &[7, 8]);
    assert_fails(&c, &missing_prev, &[Property::Faithful]);

    // A kind that is not the committed one.
    let as_put = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .events(
            1600,
            1,
            vec![WatchEvent {
                kind: EventKind::Put,
                ..c.event(5, "a")
            }],
        )
        .revisions(1700, 1, &c, &[7, 8]);
    let report = assert_fails(&c, &as_put, &[Property::Faithful]);
    assert!(report
        .render()
        .contains("it is a put, the committed event a delete"));

    // prev_kv to a watch that did not ask.
    let unasked = watch(3, "b", None, 3)
        .events(1000, 1, vec![c.event(3, "b")])
        .events(1100, 1, vec![c.event(4, "b")])
        .revisions(1700, 1, &c, &[8]);
    let report = assert_fails(&c, &unasked, &[Property::Faithful]);
    assert!(report
        .render()
        .contains("a prev_kv was delivered to a watch that did not ask for one"));
}

#[test]
fn filter_an_event_outside_the_range_and_a_delete_to_a_no_delete_watch() {
    let c = scenario();
    let outside = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .revisions(1600, 1, &c, &[5])
        .events(1650, 1, vec![c.event(6, "c")])
        .revisions(1700, 1, &c, &[7, 8]);
    let report = assert_fails(&c, &outside, &[Property::Filter]);
    assert!(report.render().contains(
        "filter: watch 1 (client 11, keys [a, c), prev_kv, from revision 2): put c=c1@6 \
         (created 6, version 1) received at 1.650s from member 1 is outside the watch's keys"
    ));
    let deletes = watch(2, "a", None, 2)
        .no_delete()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[4])
        .events(
            1600,
            1,
            vec![for_watch(&watch(2, "a", None, 2).0, c.event(5, "a"))],
        )
        .revisions(1700, 1, &c, &[7]);
    let report = assert_fails(&c, &deletes, &[Property::Filter]);
    assert!(report.render().contains("despite the watch's no_delete"));
}

#[test]
fn compaction_cancel_only_below_an_applied_compaction() {
    let mut c = scenario();
    c.compact(5);
    assert_passes(&c, &watch(2, "a", None, 4).compacted(1000, 1, 5));
    let report = assert_fails(
        &c,
        &watch(2, "a", None, 5).compacted(1000, 1, 5),
        &[Property::CompactionCancel],
    );
    assert!(report
        .render()
        .contains("but its stream started at revision 5, which that compaction keeps"));
    let report = assert_fails(
        &c,
        &watch(2, "a", None, 2).compacted(1000, 1, 6),
        &[Property::CompactionCancel],
    );
    assert!(report
        .render()
        .contains("the cluster applied no compaction at that revision (compactions: 5)"));
    // After a resume, the stream's start is the resume revision.
    let resumed_then_canceled = watch(2, "a", None, 2)
        .revisions(1000, 1, &c, &[2])
        .resume(1100, 2, 3)
        .compacted(1200, 2, 5);
    assert_passes(&c, &resumed_then_canceled);
    let from_now = watch(2, "a", None, 0).compacted(1000, 1, 5);
    assert_fails(&c, &from_now, &[Property::CompactionCancel]);
    let after = watch(2, "a", None, 2)
        .compacted(1000, 1, 5)
        .revisions(1100, 1, &c, &[7]);
    let report = assert_fails(&c, &after, &[Property::CompactionCancel]);
    assert!(report
        .render()
        .contains("a response received at 1.100s from member 1 after the watch was canceled"));
}

#[test]
fn liveness_a_watch_followed_to_the_end_that_stops_short() {
    let c = scenario();
    let short = ab_watch()
        .revisions(1000, 1, &c, &[2])
        .revisions(1100, 1, &c, &[3, 4])
        .revisions(1600, 1, &c, &[5]);
    let report = assert_fails(&c, &short, &[Property::Liveness]);
    assert!(report.render().contains(
        "followed to the end but reached revision 5: 2 matching events committed after it, up \
         to revision 8, never arrived (first: put a=a3@7"
    ));
    // The same stream from a watcher that was gone before the end is not judged on liveness.
    let mut gone = short.clone();
    gone.0.follows_to_end = false;
    assert_passes(&c, &gone);
    // A watch with nothing to receive after its start is live without a single item.
    let idle = watch(3, "c", None, 7).follows();
    assert_passes(&c, &idle);
}

#[test]
fn violations_beyond_the_kept_few_are_counted() {
    let mut c = Committer::new();
    for i in 0..20 {
        c.apply(&[Op::Put("k", &format!("v{i}"))]);
    }
    // Every event delivered twice.
    let mut w = watch(5, "k", None, 2);
    for r in 2..=21 {
        w = w
            .revisions(r as u64 * 10, 1, &c, &[r])
            .revisions(r as u64 * 10 + 5, 1, &c, &[r]);
    }
    let report = assert_fails(&c, &w, &[Property::Unique]);
    assert_eq!(count(&report, Property::Unique), 20);
    assert_eq!(report.violations.len(), 5);
    assert_eq!(report.violations_omitted[&(5, Property::Unique)], 15);
    assert!(report
        .render()
        .contains("... and 15 more unique violations on watch 5"));
}

#[test]
fn a_malformed_committed_history_fails_as_invalid_input() {
    let mut c = scenario();
    c.committed.final_revision = 3;
    c.committed.compactions = vec![5, 4];
    let report = judge(&c, &[&ab_watch()]);
    assert!(!report.passed());
    let text = report.render();
    assert!(text.starts_with("watch: INVALID INPUT"), "{text}");
    assert!(
        text.contains("revision 8 is after the final revision 3"),
        "{text}"
    );
    assert!(
        text.contains("compaction at 4 is applied after one at 5"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Generated histories: reconstruct() agrees with the committed history watchers saw in full.
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a small seeded generator, enough for test data.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KEYS: [&str; 8] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7"];

/// A generated run: the committed history, a client history of acknowledged writes and
/// compactions, and watchers that each see everything they asked for (grouped in responses of
/// 1-3 revisions, with progress notifications and resumes from the right revision).
struct Generated {
    committer: Committer,
    history: History,
    watches: WatchHistory,
}

fn generate(seed: u64, revisions: usize) -> Generated {
    let mut rng = Rng(seed);
    let mut c = Committer::new();
    let mut operations = Vec::new();
    let mut value = 0u64;
    let mut ms = 0u64;
    let mut op = |request: Request, revision: i64, response: Response, ms: u64| {
        let id = operations.len() as u64;
        operations.push(Operation {
            id,
            client: 1 + id % 3,
            invoke_ns: ms * MS,
            complete_ns: Some(ms * MS + MS / 2),
            request,
            outcome: Outcome::Ok { revision, response },
        });
    };
    while (c.revision as usize) < revisions + 1 {
        ms += 1;
        value += 1;
        let before = c.revision;
        let roll = rng.below(100);
        let key = KEYS[rng.below(KEYS.len() as u64) as usize];
        let v = format!("v{value}");
        if roll < 60 {
            let r = c.apply(&[Op::Put(key, &v)]);
            op(
                Request::Put {
                    key: key.to_string(),
                    value: v,
                    lease: 0,
                },
                r,
                Response::Put {},
                ms,
            );
        } else if roll < 75 {
            if c.keys.contains_key(key) {
                let r = c.apply(&[Op::Delete(key)]);
                op(
                    Request::Delete {
                        key: key.to_string(),
                        range_end: None,
                    },
                    r,
                    Response::Delete { deleted: 1 },
                    ms,
                );
            }
        } else {
            // A txn over 2-3 distinct keys, each put or (if present) deleted.
            let first = rng.below(KEYS.len() as u64) as usize;
            let n = 2 + rng.below(2) as usize;
            let keys: Vec<&str> = (0..n).map(|i| KEYS[(first + i * 3) % KEYS.len()]).collect();
            let values: Vec<String> = (0..n).map(|i| format!("t{value}.{i}")).collect();
            let mut ops = Vec::new();
            let mut requests = Vec::new();
            let mut responses = Vec::new();
            for (k, v) in keys.iter().zip(&values) {
                if c.keys.contains_key(*k) && rng.below(3) == 0 {
                    ops.push(Op::Delete(k));
                    requests.push(Request::Delete {
                        key: k.to_string(),
                        range_end: None,
                    });
                    responses.push(Response::Delete { deleted: 1 });
                } else {
                    ops.push(Op::Put(k, v.as_str()));
                    requests.push(Request::Put {
                        key: k.to_string(),
                        value: v.clone(),
                        lease: 0,
                    });
                    responses.push(Response::Put {});
                }
            }
            let r = c.apply(&ops);
            op(
                Request::Txn {
                    compare: Vec::new(),
                    success: requests,
                    failure: Vec::new(),
                },
                r,
                Response::Txn {
                    succeeded: true,
                    responses,
                },
                ms,
            );
        }
        if c.revision != before && c.revision % 300 == 0 {
            let at = c.revision - 50;
            c.compact(at);
            op(
                Request::Compact { revision: at },
                c.revision,
                Response::Compact {},
                ms,
            );
        }
    }

    let shapes = [
        watch(0, "", Some("\u{0}"), 2).prev_kv(),
        watch(1, "k3", None, 1),
        {
            let mut w = watch(2, "k2", Some("k5"), (revisions / 4) as i64).prev_kv();
            w.0.no_delete = true;
            w
        },
        watch(3, "k", Some("l"), 0).opened_at(10).follows(),
    ];
    let mut watches = Vec::new();
    for (n, shape) in shapes.into_iter().enumerate() {
        let mut w = shape.follows();
        let start = w.0.effective_start().expect("known");
        let mut r = start;
        let mut member = 1 + n as u64;
        let mut at = 0u64;
        while r <= c.revision {
            at += 1;
            let take = 1 + rng.below(3) as i64;
            let revs: Vec<i64> = (r..(r + take).min(c.revision + 1)).collect();
            let events: Vec<WatchEvent> =
                revs.iter().flat_map(|&x| c.events_for(&w.0, x)).collect();
            r = (r + take).min(c.revision + 1);
            if !events.is_empty() {
                w = w.events(at, member, events);
            }
            match rng.below(20) {
                0 => w = w.progress(at, member, r - 1),
                1 => {
                    // Resume from the last revision delivered or notified + 1.
                    let last = w.0.items.iter().rev().find_map(|item| match item {
                        WatchItem::Events { events, .. } => {
                            events.last().map(|e| e.kv.mod_revision)
                        }
                        WatchItem::Progress { revision, .. } => Some(*revision),
                        _ => None,
                    });
                    let from = last.map_or(start, |l| l + 1);
                    // Revisions from `from` to r - 1 hold no matching event: the new stream
                    // goes on at r.
                    member = 1 + (member % 3);
                    w = w.resume(at, member, from);
                }
                _ => {}
            }
        }
        watches.push(w.0);
    }
    Generated {
        committer: c,
        history: History {
            meta: BTreeMap::new(),
            operations,
        },
        watches: WatchHistory {
            meta: BTreeMap::from([("seed".to_string(), seed.to_string())]),
            watches,
        },
    }
}

#[test]
fn reconstruct_agrees_with_the_committed_history_when_watchers_see_everything() {
    for seed in 1..=5 {
        let g = generate(seed, 1500);
        let report = check(&g.watches, &g.committer.committed);
        assert!(report.passed(), "seed {seed}: {}", report.render());
        let rebuilt = reconstruct(&g.history, &g.watches).expect("consistent observers");
        assert_eq!(
            rebuilt.compactions, g.committer.committed.compactions,
            "seed {seed}"
        );
        assert_eq!(
            rebuilt.final_revision, g.committer.committed.final_revision,
            "seed {seed}"
        );
        for (revision, events) in &g.committer.committed.revisions {
            assert_eq!(
                rebuilt.revisions.get(revision),
                Some(events),
                "seed {seed}, revision {revision}"
            );
        }
        assert_eq!(rebuilt, g.committer.committed, "seed {seed}");
        assert!(check(&g.watches, &rebuilt).passed());
    }
}

#[test]
fn reconstruct_names_both_watchers_that_disagree_on_a_revision() {
    let c = scenario();
    let all = watch(0, "", Some("\u{0}"), 2).revisions(1000, 1, &c, &(2..=8).collect::<Vec<_>>());
    let mut wrong = c.event(4, "b");
    wrong.kv.value = "bogus".to_string();
    let b = watch(7, "b", None, 3)
        .events(900, 2, vec![c.event(3, "b")])
        .events(1200, 2, vec![wrong]);
    let watches = WatchHistory {
        meta: BTreeMap::new(),
        watches: vec![all.0, b.0],
    };
    let error = reconstruct(&History::default(), &watches).unwrap_err();
    assert!(matches!(
        error,
        ReconstructError::Disagreement { revision: 4, .. }
    ));
    let text = error.to_string();
    assert!(
        text.contains("watch 0 (client 10, every key, from revision 2) received at 1.000s from member 1 put b=b2@4"),
        "{text}"
    );
    assert!(
        text.contains("watch 7 (client 17, key b, from revision 3) received at 1.200s from member 2 put b=bogus@4"),
        "{text}"
    );
}

/// A reconstruction with its guessed prev_kvs unmarked. The watches of the hand-made scenario do
/// not ask for prev_kv, so its deletes' prev_kvs are guesses; nothing lies unseen there, so they
/// must also be right.
fn guesses_cleared(mut rebuilt: CommittedHistory) -> CommittedHistory {
    assert!(!rebuilt.guessed_prev.is_empty());
    rebuilt.guessed_prev.clear();
    rebuilt
}

#[test]
fn reconstruct_holds_acknowledged_writes_against_the_watch_streams() {
    let c = scenario();
    let all = watch(0, "", Some("\u{0}"), 2).revisions(1000, 1, &c, &(2..=8).collect::<Vec<_>>());
    let watches = WatchHistory {
        meta: BTreeMap::new(),
        watches: vec![all.0],
    };
    let put = |value: &str, revision: i64| Operation {
        id: 0,
        client: 1,
        invoke_ns: 0,
        complete_ns: Some(MS),
        request: Request::Put {
            key: "c".to_string(),
            value: value.to_string(),
            lease: 0,
        },
        outcome: Outcome::Ok {
            revision,
            response: Response::Put {},
        },
    };
    let agreeing = History {
        meta: BTreeMap::new(),
        operations: vec![put("c1", 6)],
    };
    assert_eq!(
        guesses_cleared(reconstruct(&agreeing, &watches).unwrap()),
        c.committed
    );
    let contradicting = History {
        meta: BTreeMap::new(),
        operations: vec![put("c9", 6)],
    };
    let error = reconstruct(&contradicting, &watches).unwrap_err();
    assert!(matches!(
        error,
        ReconstructError::Contradiction { revision: 6, .. }
    ));
    assert!(error
        .to_string()
        .contains("op 0 client 1 [0.000s..0.001s] put c=c9 -> ok rev 6"));
}

#[test]
fn reconstruct_lets_one_watcher_convict_another_that_lost_an_event() {
    let c = scenario();
    let all = watch(0, "", Some("\u{0}"), 2).revisions(1000, 1, &c, &(2..=8).collect::<Vec<_>>());
    // Watch 1 on key b loses revision 4 (part of the txn); watch 0 saw it.
    let lossy = watch(1, "b", None, 3)
        .follows()
        .revisions(1000, 2, &c, &[3])
        .revisions(1100, 2, &c, &[8]);
    let watches = WatchHistory {
        meta: BTreeMap::new(),
        watches: vec![all.0, lossy.0],
    };
    let rebuilt = reconstruct(&History::default(), &watches).unwrap();
    assert_eq!(guesses_cleared(rebuilt.clone()), c.committed);
    let report = check(&watches, &rebuilt);
    assert_eq!(report.failed_properties(), [Property::Reliable]);
    // An acknowledged put no watcher saw (in a txn) still convicts a watcher that skipped it.
    let only_lossy = WatchHistory {
        meta: BTreeMap::new(),
        watches: vec![watches.watches[1].clone()],
    };
    let history = History {
        meta: BTreeMap::new(),
        operations: vec![Operation {
            id: 0,
            client: 1,
            invoke_ns: 0,
            complete_ns: Some(MS),
            request: Request::Txn {
                compare: Vec::new(),
                success: vec![Request::Put {
                    key: "b".to_string(),
                    value: "b2".to_string(),
                    lease: 0,
                }],
                failure: Vec::new(),
            },
            outcome: Outcome::Ok {
                revision: 4,
                response: Response::Txn {
                    succeeded: true,
                    responses: vec![Response::Put {}],
                },
            },
        }],
    };
    let rebuilt = reconstruct(&history, &only_lossy).unwrap();
    assert_eq!(rebuilt.revisions[&4].len(), 1);
    assert_eq!(rebuilt.revisions[&4][0].kv.value, "b2");
    let report = check(&only_lossy, &rebuilt);
    assert_eq!(report.failed_properties(), [Property::Reliable]);
}

#[test]
fn a_long_history_is_checked_and_rebuilt_exactly() {
    let g = generate(99, 30_000);
    let events = g.committer.committed.event_count();
    assert!(events > 35_000, "{events}");
    let report = check(&g.watches, &g.committer.committed);
    let rebuilt = reconstruct(&g.history, &g.watches).unwrap();
    assert!(report.passed(), "{}", report.render());
    assert_eq!(rebuilt, g.committer.committed);
}

#[test]
fn every_lost_repeated_reordered_or_altered_response_is_caught_and_nothing_panics() {
    let g = generate(7, 400);
    let mut rng = Rng(7);
    for round in 0..300 {
        let mut watches = g.watches.clone();
        let w = rng.below(watches.watches.len() as u64) as usize;
        let items = &mut watches.watches[w].items;
        let responses: Vec<usize> = (0..items.len())
            .filter(|&i| matches!(items[i], WatchItem::Events { .. }))
            .collect();
        let i = responses[rng.below(responses.len() as u64) as usize];
        let j = responses[rng.below(responses.len() as u64) as usize];
        let mutation = match rng.below(4) {
            0 => {
                items.remove(i);
                "lost"
            }
            1 => {
                let copy = items[i].clone();
                items.insert(j.max(i) + 1, copy);
                "repeated"
            }
            2 if i != j => {
                items.swap(i, j);
                "reordered"
            }
            _ => {
                let WatchItem::Events { events, .. } = &mut items[i] else {
                    unreachable!("a response")
                };
                let e = rng.below(events.len() as u64) as usize;
                events[e].kv.mod_revision = rng.below(500) as i64 - 50;
                "altered"
            }
        };
        if watches == g.watches {
            continue;
        }
        let report = check(&watches, &g.committer.committed);
        assert!(
            !report.passed(),
            "round {round}: a {mutation} response on watch {w} passed:\n{}",
            report.render()
        );
        // Reconstruction may succeed or name a disagreement; it must not panic.
        let _ = reconstruct(&g.history, &watches);
    }
}

// ---------------------------------------------------------------------------------------------
// The format.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_watch_history_round_trips_through_json_lines() {
    let g = generate(3, 200);
    let mut watches = g.watches.clone();
    let mut compacted = watch(9, "a", None, 2).compacted(5, 2, 3).0;
    compacted.progress_notify = true;
    compacted.no_put = true;
    watches.watches.push(compacted);
    let mut bytes = Vec::new();
    watches.write_to(&mut bytes).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.starts_with(
        "{\"format\":\"faultline-watches\",\"version\":1,\"meta\":{\"seed\":\"3\"}}\n"
    ));
    assert_eq!(text.lines().count(), 1 + watches.watches.len());
    assert_eq!(WatchHistory::read_from(&bytes[..]).unwrap(), watches);

    let bare = "{\"format\":\"faultline-watches\",\"version\":1}\n\
        {\"id\":4,\"client\":1,\"key\":\"k\",\"start_revision\":0,\"opened_ns\":7,\"items\":[\
        {\"progress\":{\"at_ns\":8,\"member\":1,\"revision\":3}},\
        {\"resumed\":{\"at_ns\":9,\"member\":2,\"from_revision\":4}},\
        {\"events\":{\"at_ns\":10,\"member\":2,\"header_revision\":4,\"events\":[\
        {\"kind\":\"delete\",\"kv\":{\"key\":\"k\",\"value\":\"\",\"create_revision\":0,\"mod_revision\":4,\"version\":0,\"lease\":0}}]}}]}\n";
    let read = WatchHistory::read_from(bare.as_bytes()).unwrap();
    assert_eq!(read.watches.len(), 1);
    assert_eq!(read.watches[0].items.len(), 3);
    let mut again = Vec::new();
    read.write_to(&mut again).unwrap();
    assert_eq!(String::from_utf8(again).unwrap(), bare);
}

#[test]
fn malformed_watch_histories_name_the_line() {
    let header = "{\"format\":\"faultline-watches\",\"version\":1}\n";
    let record = |id: u64, items: &str| {
        format!("{{\"id\":{id},\"client\":1,\"key\":\"k\",\"start_revision\":0,\"opened_ns\":100,\"items\":[{items}]}}\n")
    };
    let cases = [
        (String::new(), "empty"),
        ("\n\n".to_string(), "empty"),
        ("not json\n".to_string(), "line 1: bad header"),
        ("{\"format\":\"faultline-history\",\"version\":1}\n".to_string(), "line 1: format"),
        ("{\"format\":\"faultline-watches\",\"version\":2}\n".to_string(), "line 1: version 2"),
        (format!("{header}\n{{\"id\":0}}\n"), "line 3: missing field"),
        (format!("{header}{}{{\"id\":", record(0, "")), "line 3: EOF"),
        (format!("{header}{}{}", record(0, ""), record(0, "")), "line 3: watch id 0 repeats"),
        (
            format!("{header}{}", record(1, "{\"progress\":{\"at_ns\":50,\"member\":1,\"revision\":3}}")),
            "line 2: watch 1: item 0 is received at 50 ns, before",
        ),
        (
            format!("{header}{}", record(1, "{\"gone\":{}}")),
            "line 2: unknown variant `gone`",
        ),
        (
            format!(
                "{header}{}",
                record(1, "{\"events\":{\"at_ns\":150,\"member\":1,\"header_revision\":3,\"events\":[{\"kind\":\"upsert\"}]}}")
            ),
            "line 2: unknown variant `upsert`",
        ),
    ];
    for (text, expected) in cases {
        let error = WatchHistory::read_from(text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(expected),
            "{error:?} should say {expected:?}"
        );
    }
}
