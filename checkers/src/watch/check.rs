//! The watch guarantees, checked per watch against the committed history.
//!
//! Definitions (etcd-semantics.md, "Watch", made exact). A watch's *matching* events are the
//! committed events on its keys that its filters let through; its *start* is `start_revision`,
//! or `opened_revision + 1` for a watch from revision 0 (unknown when that is not recorded);
//! its *legit* deliveries are delivered events that are matching committed events (by revision
//! and key). A watch is one logical stream across its resumes.
//!
//! - **Ordered**: no delivered event has a revision below an earlier delivered event's.
//! - **Unique**: no (revision, key) is delivered twice.
//! - **Atomic**: a revision's events are never split across responses: an event arriving in a
//!   later response than another event of its revision is a split (a repeat of an event already
//!   delivered is a duplicate, reported under unique, not a split).
//! - **Reliable**: with `a` and `c` the lowest and highest revisions of legit deliveries, every
//!   matching event with `a <= revision <= c` was delivered (so a revision delivered in part
//!   counts too). Each run of consecutive missing events is one violation.
//! - **Resumable**: the first legit delivery has the revision of the first matching event at or
//!   after the start (etcd 18089: a watch at the compact revision must get the event at exactly
//!   that revision). A resume from `f` must have `f = max(start, last + 1)`, where `last` is the
//!   highest revision delivered or notified as progress so far (a resume from `last` replays it;
//!   from beyond it skips); the first legit delivery after it has the revision of the first
//!   matching event at or after `f`. A resume from 0 ("from now") is accepted only when nothing
//!   was known to resume from.
//! - **Bookmarkable**: progress revisions never go down nor pass the final revision; no event
//!   at or below a progress revision arrives after it; and (etcd 15220) every matching event from
//!   the start up to the progress revision was delivered before it (a hole is reported once, at the first progress
//!   notification that passes it). Not judged before the start is known. Every progress
//!   notification counts, whether the watch set `progress_notify` or the client asked.
//! - **Faithful**: a delivered event's kind and kv equal the committed event at its revision and
//!   key (a delete's kv: key and revision, the rest empty); for a watch with prev_kv, its prev_kv
//!   equals the committed one, or is missing and some compaction is at or after the event's
//!   revision (the previous version, at revision - 1, was compacted away); a watch without
//!   prev_kv gets none.
//! - **Filter**: every delivered event is on the watch's keys and passes no_put / no_delete.
//! - **Compaction cancel**: a `Compacted` item carries a compaction the cluster applied, above the
//!   revision the current stream started from (a watch from revision 0 is never compacted), and
//!   nothing arrives after it.
//! - **Liveness** (watches with `follows_to_end`, not canceled): the highest revision delivered
//!   or notified as progress reaches the last matching event from the start, that is the watch has
//!   every matching event up to the final revision (gaps before are reliable's to report).
//!
//! Each property is judged independently, so one bug shape can break several (a replay after a
//! resume is out of order, a duplicate and a bad resume at once).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::committed::{CommittedEvent, CommittedHistory};
use super::format::{
    delete_kv, event_text, kv_text, place, EventKind, WatchEvent, WatchHistory, WatchItem,
    WatchRecord,
};

/// How many violations of one property on one watch the report keeps; the rest are counted.
pub const VIOLATIONS_KEPT_PER_WATCH: usize = 5;
/// How many watches `render` lists one by one.
const WATCHES_SHOWN: usize = 40;

/// A property the checker judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Property {
    Ordered,
    Unique,
    Atomic,
    Reliable,
    Resumable,
    Bookmarkable,
    Faithful,
    Filter,
    CompactionCancel,
    Liveness,
}

impl Property {
    pub const ALL: [Property; 10] = [
        Property::Ordered,
        Property::Unique,
        Property::Atomic,
        Property::Reliable,
        Property::Resumable,
        Property::Bookmarkable,
        Property::Faithful,
        Property::Filter,
        Property::CompactionCancel,
        Property::Liveness,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Property::Ordered => "ordered",
            Property::Unique => "unique",
            Property::Atomic => "atomic",
            Property::Reliable => "reliable",
            Property::Resumable => "resumable",
            Property::Bookmarkable => "bookmarkable",
            Property::Faithful => "faithful",
            Property::Filter => "filter",
            Property::CompactionCancel => "compaction cancel",
            Property::Liveness => "liveness",
        }
    }
}

impl std::fmt::Display for Property {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One broken property on one watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub property: Property,
    /// The watch's id.
    pub watch: u64,
    /// The revision at the heart of it.
    pub revision: i64,
    /// The watch in words (id, client, keys, filters, start).
    pub watch_text: String,
    /// What happened, naming revisions, events, times and members.
    pub text: String,
}

impl Violation {
    pub fn render(&self) -> String {
        format!("{}: {}: {}", self.property, self.watch_text, self.text)
    }
}

/// Counters of one watch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCounts {
    pub watch: u64,
    pub client: u64,
    pub events: u64,
    /// Responses with events.
    pub responses: u64,
    pub resumes: u64,
    pub compaction_cancels: u64,
    pub progress_notifications: u64,
    /// Violations found, kept or not.
    pub violations: u64,
}

/// Counters over all watches, and the size of the committed history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchTotals {
    pub watches: u64,
    pub events: u64,
    pub responses: u64,
    pub resumes: u64,
    pub compaction_cancels: u64,
    pub progress_notifications: u64,
    pub committed_revisions: u64,
    pub committed_events: u64,
    pub compactions: u64,
    pub final_revision: i64,
}

/// The verdict on a watch history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchReport {
    /// Per watch, in the watch history's order.
    pub watches: Vec<WatchCounts>,
    pub totals: WatchTotals,
    /// Violations found per property (kept or not); a property absent here passed.
    pub violation_counts: BTreeMap<Property, u64>,
    /// The violations kept, watch by watch: up to [`VIOLATIONS_KEPT_PER_WATCH`] per property.
    pub violations: Vec<Violation>,
    /// (watch id, property) -> violations found beyond those kept.
    pub violations_omitted: BTreeMap<(u64, Property), u64>,
    /// Problems of the committed history itself (see [`CommittedHistory::validate`]); any fails
    /// the report.
    pub input_errors: Vec<String>,
    /// What could not be judged, and why.
    pub notes: Vec<String>,
}

impl WatchReport {
    pub fn passed(&self) -> bool {
        self.input_errors.is_empty() && self.violation_counts.is_empty()
    }

    pub fn property_passed(&self, property: Property) -> bool {
        !self.violation_counts.contains_key(&property)
    }

    /// The properties with at least one violation, in [`Property::ALL`] order.
    pub fn failed_properties(&self) -> Vec<Property> {
        self.violation_counts.keys().copied().collect()
    }

    /// The report in words: the verdict, what was checked, each property, the violations kept and
    /// each watch's counters.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let t = &self.totals;
        let failing_watches = self.watches.iter().filter(|w| w.violations > 0).count();
        let found: u64 = self.violation_counts.values().sum();
        if !self.input_errors.is_empty() {
            let _ = writeln!(
                text,
                "watch: INVALID INPUT: the committed history is malformed"
            );
        } else if found > 0 {
            let names: Vec<&str> = self.violation_counts.keys().map(|p| p.name()).collect();
            let _ = writeln!(
                text,
                "watch: FAIL: {} on {} of {} ({})",
                counted(found, "violation", "violations"),
                failing_watches,
                counted(t.watches, "watch", "watches"),
                names.join(", ")
            );
        } else {
            let _ = writeln!(
                text,
                "watch: every guarantee holds on {}",
                counted(t.watches, "watch", "watches")
            );
        }
        let _ = writeln!(
            text,
            "{}: {} in {}, {}, {}, {}",
            counted(t.watches, "watch", "watches"),
            counted(t.events, "event", "events"),
            counted(t.responses, "response", "responses"),
            counted(t.resumes, "resume", "resumes"),
            counted(
                t.compaction_cancels,
                "compaction cancel",
                "compaction cancels"
            ),
            counted(
                t.progress_notifications,
                "progress notification",
                "progress notifications"
            ),
        );
        let _ = writeln!(
            text,
            "committed: {} ({}), {}, final revision {}",
            counted(t.committed_revisions, "revision", "revisions"),
            counted(t.committed_events, "event", "events"),
            counted(t.compactions, "compaction", "compactions"),
            t.final_revision
        );
        for property in Property::ALL {
            match self.violation_counts.get(&property) {
                None => {
                    let _ = writeln!(text, "  {:<18} pass", property.name());
                }
                Some(&n) => {
                    let _ = writeln!(
                        text,
                        "  {:<18} FAIL  {}",
                        property.name(),
                        counted(n, "violation", "violations")
                    );
                }
            }
        }
        for error in &self.input_errors {
            let _ = writeln!(text, "input error: {error}");
        }
        if !self.violations.is_empty() {
            let _ = writeln!(text, "violations:");
            let mut omitted_shown = BTreeSet::new();
            for (i, violation) in self.violations.iter().enumerate() {
                let _ = writeln!(text, "  {}", violation.render());
                let next_is_other = self.violations.get(i + 1).is_none_or(|next| {
                    (next.watch, next.property) != (violation.watch, violation.property)
                });
                let key = (violation.watch, violation.property);
                if next_is_other && omitted_shown.insert(key) {
                    if let Some(n) = self.violations_omitted.get(&key) {
                        let _ = writeln!(
                            text,
                            "  ... and {n} more {} on watch {}",
                            counted_word(*n, &format!("{} violation", violation.property)),
                            violation.watch
                        );
                    }
                }
            }
        }
        if !self.watches.is_empty() {
            let _ = writeln!(text, "watches:");
            for w in self.watches.iter().take(WATCHES_SHOWN) {
                let _ = writeln!(
                    text,
                    "  watch {} client {}: {} in {}, {}, {}, {}, {}",
                    w.watch,
                    w.client,
                    counted(w.events, "event", "events"),
                    counted(w.responses, "response", "responses"),
                    counted(w.resumes, "resume", "resumes"),
                    counted(
                        w.compaction_cancels,
                        "compaction cancel",
                        "compaction cancels"
                    ),
                    counted(
                        w.progress_notifications,
                        "progress notification",
                        "progress notifications"
                    ),
                    counted(w.violations, "violation", "violations"),
                );
            }
            if self.watches.len() > WATCHES_SHOWN {
                let _ = writeln!(
                    text,
                    "  ... and {} more",
                    counted(
                        (self.watches.len() - WATCHES_SHOWN) as u64,
                        "watch",
                        "watches"
                    )
                );
            }
        }
        for note in &self.notes {
            let _ = writeln!(text, "note: {note}");
        }
        text
    }
}

fn counted(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// `1 ordered violation`, `3 ordered violations`.
fn counted_word(n: u64, singular: &str) -> String {
    if n == 1 {
        singular.to_string()
    } else {
        format!("{singular}s")
    }
}

// ---------------------------------------------------------------------------------------------
// The committed history, indexed.
// ---------------------------------------------------------------------------------------------

/// A matching committed event of one watch.
#[derive(Debug, Clone, Copy)]
struct Matching<'c> {
    revision: i64,
    key: &'c str,
    event: &'c CommittedEvent,
}

/// The committed history by key, for lookups by (revision, key) and by key range.
#[derive(Debug)]
struct Index<'c> {
    /// Key -> its events, by increasing revision.
    by_key: BTreeMap<&'c str, Vec<(i64, &'c CommittedEvent)>>,
    compactions: BTreeSet<i64>,
    compaction_max: Option<i64>,
}

impl<'c> Index<'c> {
    fn new(committed: &'c CommittedHistory) -> Index<'c> {
        let mut by_key: BTreeMap<&str, Vec<(i64, &CommittedEvent)>> = BTreeMap::new();
        for (&revision, events) in &committed.revisions {
            for event in events {
                let entry = by_key.entry(event.kv.key.as_str()).or_default();
                // A key changed twice in one revision is an input error; the first one counts.
                if entry.last().is_none_or(|&(r, _)| r < revision) {
                    entry.push((revision, event));
                }
            }
        }
        Index {
            by_key,
            compactions: committed.compactions.iter().copied().collect(),
            compaction_max: committed.compactions.iter().copied().max(),
        }
    }

    fn event(&self, revision: i64, key: &str) -> Option<&'c CommittedEvent> {
        let events = self.by_key.get(key)?;
        let i = events.binary_search_by_key(&revision, |&(r, _)| r).ok()?;
        Some(events[i].1)
    }

    /// The watch's matching events, by (revision, key).
    fn matching(&self, watch: &WatchRecord) -> Vec<Matching<'c>> {
        let Some(bounds) = watch.range().bounds() else {
            return Vec::new();
        };
        let mut matching: Vec<Matching<'c>> = self
            .by_key
            .range::<str, _>(bounds)
            .flat_map(|(&key, events)| {
                events
                    .iter()
                    .filter(|(_, event)| watch.matches(event.kind, key))
                    .map(move |&(revision, event)| Matching {
                        revision,
                        key,
                        event,
                    })
            })
            .collect();
        matching.sort_unstable_by(|a, b| (a.revision, a.key).cmp(&(b.revision, b.key)));
        matching
    }
}

// ---------------------------------------------------------------------------------------------
// One watch, item by item.
// ---------------------------------------------------------------------------------------------

/// Where an item was received.
#[derive(Debug, Clone, Copy)]
struct Place {
    at_ns: u64,
    member: u64,
}

impl Place {
    fn text(self) -> String {
        place(self.at_ns, self.member)
    }
}

/// What the next legit delivery must be, and why.
#[derive(Debug, Clone, Copy)]
enum Expectation {
    /// The watch's first event: the first matching event at or after its start.
    Start(i64),
    /// The first event after a resume from this revision, received at this place.
    Resume(i64, Place),
}

/// Everything one watch's check tracks while walking its items once.
struct WatchRun<'w, 'c, 'i> {
    watch: &'w WatchRecord,
    index: &'i Index<'c>,
    final_revision: i64,
    matching: Vec<Matching<'c>>,
    /// Per matching event: where it was first delivered.
    delivered: Vec<Option<Place>>,
    /// The first matching event at or after the start, once the start is known (or inferred
    /// from the first legit delivery).
    start_index: Option<usize>,
    /// (revision, key) -> where first delivered.
    seen: BTreeMap<(i64, &'w str), Place>,
    /// Revision -> (response number, where) of the first response that carried it.
    revision_response: BTreeMap<i64, (usize, Place)>,
    /// The last split reported, as (revision, response number), to report a split once.
    split_reported: Option<(i64, usize)>,
    /// The highest revision delivered so far, and where.
    event_max: Option<(i64, Place)>,
    /// The highest progress revision so far, and where.
    progress_max: Option<(i64, Place)>,
    expectation: Option<Expectation>,
    /// The revision the current stream started from (the watch's start, then each resume's).
    stream_start: i64,
    /// The first matching event from the start not yet delivered is at or after this.
    frontier: usize,
    hole_reported: Option<usize>,
    canceled: Option<(i64, Place)>,
    after_cancel_reported: bool,
    counts: WatchCounts,
    found: Vec<(Property, i64, String)>,
}

impl<'w, 'c, 'i> WatchRun<'w, 'c, 'i> {
    fn new(watch: &'w WatchRecord, index: &'i Index<'c>, final_revision: i64) -> Self {
        let matching = index.matching(watch);
        let start = watch.effective_start();
        let start_index = start.map(|s| matching.partition_point(|m| m.revision < s));
        WatchRun {
            watch,
            index,
            final_revision,
            delivered: vec![None; matching.len()],
            matching,
            start_index,
            seen: BTreeMap::new(),
            revision_response: BTreeMap::new(),
            split_reported: None,
            event_max: None,
            progress_max: None,
            expectation: start.map(Expectation::Start),
            stream_start: watch.start_revision.max(0),
            frontier: 0,
            hole_reported: None,
            canceled: None,
            after_cancel_reported: false,
            counts: WatchCounts {
                watch: watch.id,
                client: watch.client,
                ..WatchCounts::default()
            },
            found: Vec::new(),
        }
    }

    fn report(&mut self, property: Property, revision: i64, text: String) {
        self.found.push((property, revision, text));
    }

    fn matching_text(&self, i: usize) -> String {
        let m = &self.matching[i];
        event_text(m.event.kind, &m.event.kv, None)
    }

    /// The first matching event at or after `revision`.
    fn first_at_or_after(&self, revision: i64) -> usize {
        self.matching.partition_point(|m| m.revision < revision)
    }

    /// The highest revision delivered or notified as progress, if any.
    fn last_revision(&self) -> Option<i64> {
        match (self.event_max, self.progress_max) {
            (Some((e, _)), Some((p, _))) => Some(e.max(p)),
            (Some((e, _)), None) => Some(e),
            (None, Some((p, _))) => Some(p),
            (None, None) => None,
        }
    }

    fn check_not_canceled(&mut self, item: &str, here: Place) {
        if let Some((compact_revision, at)) = self.canceled {
            if !self.after_cancel_reported {
                self.after_cancel_reported = true;
                self.report(
                    Property::CompactionCancel,
                    compact_revision,
                    format!(
                        "{item} received {} after the watch was canceled as compacted at \
                         revision {compact_revision} {}",
                        here.text(),
                        at.text()
                    ),
                );
            }
        }
    }

    fn item(&mut self, item: &'w WatchItem, response: usize) {
        let here = Place {
            at_ns: item.at_ns(),
            member: item.member(),
        };
        match item {
            WatchItem::Events { events, .. } => {
                self.counts.responses += 1;
                self.check_not_canceled("a response", here);
                for event in events {
                    self.event(event, response, here);
                }
            }
            WatchItem::Progress { revision, .. } => {
                self.counts.progress_notifications += 1;
                self.check_not_canceled("a progress notification", here);
                self.progress(*revision, here);
            }
            WatchItem::Resumed { from_revision, .. } => {
                self.counts.resumes += 1;
                self.check_not_canceled("a resume", here);
                self.resumed(*from_revision, here);
            }
            WatchItem::Compacted {
                compact_revision, ..
            } => {
                self.counts.compaction_cancels += 1;
                self.check_not_canceled("another compaction cancel", here);
                self.compacted(*compact_revision, here);
            }
        }
    }

    fn event(&mut self, event: &'w WatchEvent, response: usize, here: Place) {
        self.counts.events += 1;
        let revision = event.revision();
        let key = event.kv.key.as_str();
        let text = event_text(event.kind, &event.kv, event.prev_kv.as_ref());

        // Filter.
        if !self.watch.range().contains(key) {
            self.report(
                Property::Filter,
                revision,
                format!(
                    "{text} received {} is outside the watch's keys",
                    here.text()
                ),
            );
        } else if !self.watch.matches(event.kind, key) {
            let filter = match event.kind {
                EventKind::Put => "no_put",
                EventKind::Delete => "no_delete",
            };
            self.report(
                Property::Filter,
                revision,
                format!(
                    "{text} received {} despite the watch's {filter}",
                    here.text()
                ),
            );
        }

        // Faithful.
        match self.index.event(revision, key) {
            None => self.report(
                Property::Faithful,
                revision,
                format!(
                    "{text} received {}: no event on {key} was committed at revision {revision}",
                    here.text()
                ),
            ),
            Some(committed) => {
                if let Some(problem) = self.unfaithful(event, committed) {
                    self.report(
                        Property::Faithful,
                        revision,
                        format!(
                            "{text} received {}: {problem}; committed: {}",
                            here.text(),
                            event_text(committed.kind, &committed.kv, committed.prev_kv.as_ref())
                        ),
                    );
                }
            }
        }

        // Ordered.
        if let Some((max, at)) = self.event_max {
            if revision < max {
                self.report(
                    Property::Ordered,
                    revision,
                    format!(
                        "{text} received {} after revision {max} was delivered {}",
                        here.text(),
                        at.text()
                    ),
                );
            }
        }

        // Unique.
        let duplicate = match self.seen.get(&(revision, key)) {
            Some(first) => {
                let first = *first;
                self.report(
                    Property::Unique,
                    revision,
                    format!(
                        "{text} received {} was already delivered {}",
                        here.text(),
                        first.text()
                    ),
                );
                true
            }
            None => {
                self.seen.insert((revision, key), here);
                false
            }
        };

        // Atomic.
        if !duplicate {
            match self.revision_response.get(&revision) {
                Some(&(first_response, first_place)) if first_response != response => {
                    if self.split_reported != Some((revision, response)) {
                        self.split_reported = Some((revision, response));
                        self.report(
                            Property::Atomic,
                            revision,
                            format!(
                                "revision {revision} is split across responses: {text} came in \
                                 a response {}, after other events of revision {revision} came \
                                 in one {}",
                                here.text(),
                                first_place.text()
                            ),
                        );
                    }
                }
                Some(_) => {}
                None => {
                    self.revision_response.insert(revision, (response, here));
                }
            }
        }

        // Bookmarkable: nothing at or below a progress revision after it.
        if let Some((progress, at)) = self.progress_max {
            if revision <= progress {
                self.report(
                    Property::Bookmarkable,
                    revision,
                    format!(
                        "{text} received {} after a progress notification at revision \
                         {progress} {}",
                        here.text(),
                        at.text()
                    ),
                );
            }
        }

        // Legit deliveries: resumable, and the record for reliable, bookmarkable and liveness.
        let legit = self
            .matching
            .binary_search_by(|m| (m.revision, m.key).cmp(&(revision, key)))
            .ok();
        if let Some(i) = legit {
            if self.delivered[i].is_none() {
                self.delivered[i] = Some(here);
            }
            if self.start_index.is_none() {
                self.start_index = Some(self.first_at_or_after(revision));
            }
            if let Some(expectation) = self.expectation.take() {
                self.expected_first(expectation, revision, &text, here);
            }
        }
        if self.event_max.is_none_or(|(max, _)| revision > max) {
            self.event_max = Some((revision, here));
        }
    }

    /// What is wrong with a delivered event, held against the committed one at its revision.
    fn unfaithful(&self, event: &WatchEvent, committed: &CommittedEvent) -> Option<String> {
        if event.kind != committed.kind {
            return Some(format!(
                "it is a {}, the committed event a {}",
                kind_word(event.kind),
                kind_word(committed.kind)
            ));
        }
        let expected = match committed.kind {
            EventKind::Put => committed.kv.clone(),
            EventKind::Delete => delete_kv(&committed.kv.key, committed.kv.mod_revision),
        };
        if event.kv != expected {
            return Some("the kv differs".to_string());
        }
        if !self.watch.prev_kv {
            return event.prev_kv.as_ref().map(|_| {
                "a prev_kv was delivered to a watch that did not ask for one".to_string()
            });
        }
        match (&event.prev_kv, &committed.prev_kv) {
            (Some(delivered), Some(prev)) if delivered != prev => {
                Some(format!("prev_kv {} differs", kv_text(delivered)))
            }
            (Some(_), None) => {
                Some("a prev_kv was delivered for a key that did not exist before".to_string())
            }
            (None, Some(prev)) => {
                let compacted = self
                    .index
                    .compaction_max
                    .is_some_and(|c| prev_revision(event) < c);
                (!compacted).then(|| {
                    format!(
                        "prev_kv {} is missing, and no compaction removed revision {}",
                        kv_text(prev),
                        prev_revision(event)
                    )
                })
            }
            _ => None,
        }
    }

    /// Holds the first legit delivery since the start or a resume against the first matching
    /// event at or after it.
    fn expected_first(&mut self, expectation: Expectation, revision: i64, text: &str, here: Place) {
        let (from, why) = match expectation {
            Expectation::Start(start) => (start, format!("the watch starts at revision {start}")),
            Expectation::Resume(from, at) => (
                from,
                format!("the watch resumed from revision {from} {}", at.text()),
            ),
        };
        let first = self.first_at_or_after(from);
        if revision < from {
            self.report(
                Property::Resumable,
                revision,
                format!(
                    "{why}, but its first event then is {text} (received {}), below it",
                    here.text()
                ),
            );
        } else if self.matching[first].revision != revision {
            let expected = self.matching_text(first);
            self.report(
                Property::Resumable,
                self.matching[first].revision,
                format!(
                    "{why}, so its first event must be at revision {} ({expected}), but it is \
                     {text} (received {})",
                    self.matching[first].revision,
                    here.text()
                ),
            );
        }
    }

    fn progress(&mut self, revision: i64, here: Place) {
        if let Some((max, at)) = self.progress_max {
            if revision < max {
                self.report(
                    Property::Bookmarkable,
                    revision,
                    format!(
                        "progress notification at revision {revision} received {} after one at \
                         revision {max} {}",
                        here.text(),
                        at.text()
                    ),
                );
            }
        }
        if revision > self.final_revision {
            self.report(
                Property::Bookmarkable,
                revision,
                format!(
                    "progress notification at revision {revision} received {}, beyond the \
                     final revision {}",
                    here.text(),
                    self.final_revision
                ),
            );
        }
        if let Some(start_index) = self.start_index {
            self.frontier = self.frontier.max(start_index);
            while self.frontier < self.matching.len() && self.delivered[self.frontier].is_some() {
                self.frontier += 1;
            }
            let hole = self.frontier;
            if hole < self.matching.len()
                && self.matching[hole].revision <= revision
                && self.hole_reported != Some(hole)
            {
                self.hole_reported = Some(hole);
                let missing = self.matching_text(hole);
                self.report(
                    Property::Bookmarkable,
                    self.matching[hole].revision,
                    format!(
                        "progress notification at revision {revision} received {} says every \
                         event up to it was sent, but the matching event {missing} had not been \
                         delivered",
                        here.text()
                    ),
                );
            }
        }
        if self.progress_max.is_none_or(|(max, _)| revision > max) {
            self.progress_max = Some((revision, here));
        }
    }

    fn resumed(&mut self, from: i64, here: Place) {
        let start = self.watch.effective_start();
        let expected = match (start, self.last_revision()) {
            (Some(s), Some(last)) => Some(s.max(last + 1)),
            (Some(s), None) => Some(s),
            (None, Some(last)) => Some(last + 1),
            (None, None) => None,
        };
        let last_text = match (self.event_max, self.progress_max) {
            (None, None) => "nothing delivered yet".to_string(),
            (Some((e, at)), None) => format!("last event at revision {e} {}", at.text()),
            (None, Some((p, at))) => format!("last progress at revision {p} {}", at.text()),
            (Some((e, eat)), Some((p, pat))) => format!(
                "last event at revision {e} {}, last progress at revision {p} {}",
                eat.text(),
                pat.text()
            ),
        };
        if let Some(expected) = expected {
            if from != expected {
                let consequence = if from == 0 {
                    "from the current revision, which skips whatever was committed meanwhile"
                        .to_string()
                } else if from < expected {
                    format!("which delivers {} again", revision_span(from, expected - 1))
                } else {
                    format!("which skips {}", revision_span(expected, from - 1))
                };
                self.report(
                    Property::Resumable,
                    from,
                    format!(
                        "resumed {} from revision {from} instead of {expected} ({last_text}), \
                         {consequence}",
                        here.text()
                    ),
                );
            }
        }
        self.expectation = (from > 0).then_some(Expectation::Resume(from, here));
        self.stream_start = from.max(0);
    }

    fn compacted(&mut self, compact_revision: i64, here: Place) {
        let start = self.stream_start;
        if start == 0 {
            self.report(
                Property::CompactionCancel,
                compact_revision,
                format!(
                    "canceled as compacted at revision {compact_revision} {}, but its stream \
                     started from the current revision, which no compaction can remove",
                    here.text()
                ),
            );
        } else if compact_revision <= start {
            self.report(
                Property::CompactionCancel,
                compact_revision,
                format!(
                    "canceled as compacted at revision {compact_revision} {}, but its stream \
                     started at revision {start}, which that compaction keeps",
                    here.text()
                ),
            );
        }
        if !self.index.compactions.contains(&compact_revision) {
            let applied: Vec<String> = self
                .index
                .compactions
                .iter()
                .map(|c| c.to_string())
                .collect();
            self.report(
                Property::CompactionCancel,
                compact_revision,
                format!(
                    "canceled as compacted at revision {compact_revision} {}, but the cluster \
                     applied no compaction at that revision (compactions: {})",
                    here.text(),
                    if applied.is_empty() {
                        "none".to_string()
                    } else {
                        applied.join(", ")
                    }
                ),
            );
        }
        if self.canceled.is_none() {
            self.canceled = Some((compact_revision, here));
        }
        self.expectation = None;
    }

    /// Reliable and liveness, once every item is in.
    fn finish(&mut self) -> Option<String> {
        self.reliable();
        self.liveness()
    }

    fn reliable(&mut self) {
        let Some(lowest) = self.delivered.iter().position(Option::is_some) else {
            return;
        };
        let highest = self
            .delivered
            .iter()
            .rposition(Option::is_some)
            .expect("one");
        let lo = self.first_at_or_after(self.matching[lowest].revision);
        let hi = self
            .matching
            .partition_point(|m| m.revision <= self.matching[highest].revision);
        let mut before: Option<usize> = None;
        let mut i = lo;
        while i < hi {
            if self.delivered[i].is_some() {
                before = Some(i);
                i += 1;
                continue;
            }
            let run_start = i;
            while i < hi && self.delivered[i].is_none() {
                i += 1;
            }
            let run_end = i - 1;
            let n = (run_end - run_start + 1) as u64;
            let first = self.matching_text(run_start);
            let around = |j: Option<usize>| match j {
                Some(j) => format!(
                    "{} ({})",
                    self.matching_text(j),
                    self.delivered[j].expect("delivered").text()
                ),
                None => "nothing".to_string(),
            };
            let after = (i < hi).then_some(i);
            let revisions = revision_span(
                self.matching[run_start].revision,
                self.matching[run_end].revision,
            );
            let text = format!(
                "{} at {revisions} never delivered (first: {first}); delivered before: {}; \
                 after: {}",
                counted(n, "matching event", "matching events"),
                around(before),
                around(after)
            );
            self.report(Property::Reliable, self.matching[run_start].revision, text);
        }
    }

    fn liveness(&mut self) -> Option<String> {
        let final_revision = self.final_revision;
        if !self.watch.follows_to_end || self.canceled.is_some() {
            return None;
        }
        let Some(start_index) = self.start_index else {
            if self.matching.is_empty() {
                return None;
            }
            return Some(format!(
                "{}: liveness not judged: it delivered nothing and its start revision is unknown \
                 (from revision 0 without opened_revision)",
                self.watch.describe()
            ));
        };
        if start_index >= self.matching.len() {
            return None;
        }
        let last = self.matching[self.matching.len() - 1].revision;
        let reached = self.last_revision();
        if reached.is_some_and(|r| r >= last) {
            return None;
        }
        let missing_from = match reached {
            Some(r) => self.first_at_or_after(r + 1).max(start_index),
            None => start_index,
        };
        let n = (self.matching.len() - missing_from) as u64;
        let reached_text = match reached {
            Some(r) => format!("reached revision {r}"),
            None => "delivered nothing".to_string(),
        };
        let first = self.matching_text(missing_from);
        self.report(
            Property::Liveness,
            last,
            format!(
                "followed to the end but {reached_text}: {} committed after it, up to revision \
                 {last}, never arrived (first: {first}); final revision {final_revision}",
                counted(n, "matching event", "matching events"),
            ),
        );
        None
    }
}

/// `revision 4` or `revisions 4..6`.
fn revision_span(first: i64, last: i64) -> String {
    if first == last {
        format!("revision {first}")
    } else {
        format!("revisions {first}..{last}")
    }
}

fn kind_word(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Put => "put",
        EventKind::Delete => "delete",
    }
}

/// The revision etcd reads a prev_kv at.
fn prev_revision(event: &WatchEvent) -> i64 {
    event.revision() - 1
}

/// Checks every watch against the committed history; see the module documentation for the exact
/// definitions. Runs in O((delivered events + matching committed events) · log) per watch.
pub fn check(watches: &WatchHistory, committed: &CommittedHistory) -> WatchReport {
    let mut report = WatchReport {
        input_errors: committed.validate(),
        ..WatchReport::default()
    };
    let index = Index::new(committed);
    let t = &mut report.totals;
    t.watches = watches.watches.len() as u64;
    t.committed_revisions = committed.revisions.len() as u64;
    t.committed_events = committed.event_count() as u64;
    t.compactions = committed.compactions.len() as u64;
    t.final_revision = committed.final_revision;
    for watch in &watches.watches {
        let mut run = WatchRun::new(watch, &index, committed.final_revision);
        for (response, item) in watch.items.iter().enumerate() {
            run.item(item, response);
        }
        if let Some(note) = run.finish() {
            report.notes.push(note);
        }
        let mut kept: BTreeMap<Property, usize> = BTreeMap::new();
        run.counts.violations = run.found.len() as u64;
        let watch_text = watch.describe();
        let mut found = std::mem::take(&mut run.found);
        // Property by property, each in the order found.
        found.sort_by_key(|(property, _, _)| *property);
        for (property, revision, text) in found {
            *report.violation_counts.entry(property).or_default() += 1;
            let n = kept.entry(property).or_default();
            if *n < VIOLATIONS_KEPT_PER_WATCH {
                *n += 1;
                report.violations.push(Violation {
                    property,
                    watch: watch.id,
                    revision,
                    watch_text: watch_text.clone(),
                    text,
                });
            } else {
                *report
                    .violations_omitted
                    .entry((watch.id, property))
                    .or_default() += 1;
            }
        }
        let c = run.counts;
        let t = &mut report.totals;
        t.events += c.events;
        t.responses += c.responses;
        t.resumes += c.resumes;
        t.compaction_cancels += c.compaction_cancels;
        t.progress_notifications += c.progress_notifications;
        report.watches.push(c);
    }
    report
}
