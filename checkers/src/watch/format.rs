//! The watch history format: what every watch asked for and everything it received.
//!
//! A watch history is a JSON Lines file (format version 1): the first line is a header, every
//! further line is one [`WatchRecord`]. Nothing in it refers to Faultline's simulator or store.
//!
//! ```text
//! {"format":"faultline-watches","version":1}
//! {"id":0,"client":7,"key":"k","start_revision":2,"opened_ns":1000,"opened_revision":1,"items":[{"events":{"at_ns":2000,"member":1,"header_revision":2,"events":[{"kind":"put","kv":{"key":"k","value":"a","create_revision":2,"mod_revision":2,"version":1,"lease":0}}]}}],"follows_to_end":true}
//! ```
//!
//! Semantics: a record is ONE logical watch, across the streams a resuming client opens (each
//! [`WatchItem::Resumed`] starts a new stream); its items are in the order the client received
//! them. Times are nanoseconds on the clock of the client history. Keys and values are UTF-8
//! text, ordered bytewise. Reading never panics: a malformed line is an error naming the line.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::history::Kv;

/// The `format` every watch history file declares.
pub const FORMAT: &str = "faultline-watches";
/// The version this code reads and writes.
pub const VERSION: u32 = 1;

/// The first line of a watch history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// Free-form facts about the run, for people.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
}

/// One logical watch and everything it received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchRecord {
    /// Unique within the watch history.
    pub id: u64,
    /// The client (process) that opened it.
    pub client: u64,
    pub key: String,
    /// `None` (or empty) = the key alone, `"\u0000"` = every key >= `key`, else `[key, range_end)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    /// 0 = from the next revision at the time it was opened.
    pub start_revision: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub prev_kv: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub progress_notify: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_put: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_delete: bool,
    pub opened_ns: u64,
    /// The revision known current when the watch was opened, if known (the created response's
    /// header revision). A watch from revision 0 then starts at `opened_revision + 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_revision: Option<i64>,
    pub items: Vec<WatchItem>,
    /// Liveness applies: the watcher was still up, not canceled, when the faults ended.
    #[serde(default, skip_serializing_if = "is_false")]
    pub follows_to_end: bool,
    /// The watch shared its stream with other watches: the id of the stream's first watch
    /// (`None`: a stream of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<u64>,
}

/// One thing a watch received, in the order received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchItem {
    /// A response with events (of one or more whole revisions, if the server is right).
    Events {
        at_ns: u64,
        member: u64,
        header_revision: i64,
        events: Vec<WatchEvent>,
    },
    /// A progress notification: "every event up to `revision` has been sent".
    Progress {
        at_ns: u64,
        member: u64,
        revision: i64,
    },
    /// Canceled because the start revision was compacted: the watch ends.
    Compacted {
        at_ns: u64,
        member: u64,
        compact_revision: i64,
    },
    /// The stream broke and a new one was opened on `member` from `from_revision` (0 = from the
    /// current revision). The watch goes on as one logical stream.
    Resumed {
        at_ns: u64,
        member: u64,
        from_revision: i64,
    },
}

impl WatchItem {
    pub fn at_ns(&self) -> u64 {
        match self {
            WatchItem::Events { at_ns, .. }
            | WatchItem::Progress { at_ns, .. }
            | WatchItem::Compacted { at_ns, .. }
            | WatchItem::Resumed { at_ns, .. } => *at_ns,
        }
    }

    pub fn member(&self) -> u64 {
        match self {
            WatchItem::Events { member, .. }
            | WatchItem::Progress { member, .. }
            | WatchItem::Compacted { member, .. }
            | WatchItem::Resumed { member, .. } => *member,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Put,
    Delete,
}

/// One event as a watch delivered it. Its revision is `kv.mod_revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// A delete's kv has the key and mod_revision only, every other field 0 or empty.
    pub kv: Kv,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_kv: Option<Kv>,
}

impl WatchEvent {
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }
}

/// A whole watch history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchHistory {
    pub meta: BTreeMap<String, String>,
    pub watches: Vec<WatchRecord>,
}

/// Why a watch history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WatchHistoryError {
    #[error("reading the watch history: {0}")]
    Io(#[from] std::io::Error),
    #[error("the watch history is empty: its first line must be a header {{\"format\":\"{FORMAT}\",\"version\":{VERSION}}}")]
    Empty,
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

impl From<crate::jsonl::ReadError> for WatchHistoryError {
    fn from(e: crate::jsonl::ReadError) -> Self {
        match e {
            crate::jsonl::ReadError::Io(e) => WatchHistoryError::Io(e),
            crate::jsonl::ReadError::Empty => WatchHistoryError::Empty,
            crate::jsonl::ReadError::Line { line, message } => {
                WatchHistoryError::Line { line, message }
            }
        }
    }
}

impl WatchHistory {
    /// Writes the watch history as JSON Lines.
    pub fn write_to(&self, mut out: impl Write) -> std::io::Result<()> {
        let header = Header {
            format: FORMAT.to_string(),
            version: VERSION,
            meta: self.meta.clone(),
        };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        for watch in &self.watches {
            serde_json::to_writer(&mut out, watch)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Reads and validates a watch history: ids are unique, and a watch's items are received in
    /// time order, none before it was opened. Blank lines are skipped.
    pub fn read_from(input: impl BufRead) -> Result<WatchHistory, WatchHistoryError> {
        let (meta, lines) = crate::jsonl::read(input, FORMAT, VERSION)?;
        let mut history = WatchHistory {
            meta,
            watches: Vec::new(),
        };
        let mut ids = BTreeSet::new();
        for (line_no, line) in lines {
            let fail = |message: String| WatchHistoryError::Line {
                line: line_no,
                message,
            };
            let watch: WatchRecord =
                serde_json::from_str(&line).map_err(|e| fail(e.to_string()))?;
            if !ids.insert(watch.id) {
                return Err(fail(format!("watch id {} repeats", watch.id)));
            }
            let mut previous_ns = watch.opened_ns;
            for (i, item) in watch.items.iter().enumerate() {
                if item.at_ns() < previous_ns {
                    return Err(fail(format!(
                        "watch {}: item {i} is received at {} ns, before the item or opening \
                         before it ({previous_ns} ns)",
                        watch.id,
                        item.at_ns()
                    )));
                }
                previous_ns = item.at_ns();
            }
            history.watches.push(watch);
        }
        Ok(history)
    }
}

fn is_false(v: &bool) -> bool {
    !*v
}

// ---------------------------------------------------------------------------------------------
// Key ranges, and the words the checker uses for watches, events and items.
// ---------------------------------------------------------------------------------------------

/// A watch's keys, read from `key` and `range_end` with etcd's conventions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyRange<'a> {
    One(&'a str),
    /// Every key >= this one.
    From(&'a str),
    /// `[start, end)`; empty when `end <= start`.
    Between(&'a str, &'a str),
}

impl<'a> KeyRange<'a> {
    pub(crate) fn new(key: &'a str, range_end: Option<&'a str>) -> KeyRange<'a> {
        match range_end {
            None | Some("") => KeyRange::One(key),
            Some("\u{0}") => KeyRange::From(key),
            Some(end) => KeyRange::Between(key, end),
        }
    }

    pub(crate) fn contains(self, key: &str) -> bool {
        match self {
            KeyRange::One(k) => key == k,
            KeyRange::From(start) => key >= start,
            KeyRange::Between(start, end) => key >= start && key < end,
        }
    }

    /// Bounds for `BTreeMap::range`, or `None` for an empty range (which `range` would refuse).
    pub(crate) fn bounds(self) -> Option<(Bound<&'a str>, Bound<&'a str>)> {
        match self {
            KeyRange::One(k) => Some((Bound::Included(k), Bound::Included(k))),
            KeyRange::From(start) => Some((Bound::Included(start), Bound::Unbounded)),
            KeyRange::Between(start, end) if start < end => {
                Some((Bound::Included(start), Bound::Excluded(end)))
            }
            KeyRange::Between(..) => None,
        }
    }

    pub(crate) fn text(self) -> String {
        match self {
            KeyRange::One(k) => format!("key {k}"),
            KeyRange::From("") => "every key".to_string(),
            KeyRange::From(start) => format!("keys >= {start}"),
            KeyRange::Between(start, end) => format!("keys [{start}, {end})"),
        }
    }
}

impl WatchRecord {
    pub(crate) fn range(&self) -> KeyRange<'_> {
        KeyRange::new(&self.key, self.range_end.as_deref())
    }

    /// Whether an event of this kind on this key is one the watch asked for.
    pub fn matches(&self, kind: EventKind, key: &str) -> bool {
        let wanted = match kind {
            EventKind::Put => !self.no_put,
            EventKind::Delete => !self.no_delete,
        };
        wanted && self.range().contains(key)
    }

    /// The revision the watch's first event may have, if known: `start_revision`, or for a watch
    /// from revision 0 the revision after `opened_revision`.
    pub fn effective_start(&self) -> Option<i64> {
        if self.start_revision > 0 {
            Some(self.start_revision)
        } else {
            self.opened_revision.map(|r| r + 1)
        }
    }

    /// The watch in words: `watch 3 (client 2, keys [a, c), no deletes, prev_kv, from revision
    /// 5)`.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "watch {} (client {}, {}",
            self.id,
            self.client,
            self.range().text()
        );
        if self.no_put {
            text.push_str(", no puts");
        }
        if self.no_delete {
            text.push_str(", no deletes");
        }
        if self.prev_kv {
            text.push_str(", prev_kv");
        }
        match (self.start_revision, self.opened_revision) {
            (start, _) if start > 0 => text.push_str(&format!(", from revision {start})")),
            (_, Some(opened)) => text.push_str(&format!(", from revision 0, opened at {opened})")),
            (_, None) => text.push_str(", from revision 0)"),
        }
        text
    }
}

/// Nanoseconds as seconds, with as many decimals as they need (3, 6 or 9).
pub(crate) fn seconds(ns: u64) -> String {
    let (whole, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac % 1_000_000 == 0 {
        format!("{whole}.{:03}s", frac / 1_000_000)
    } else if frac % 1_000 == 0 {
        format!("{whole}.{:06}s", frac / 1_000)
    } else {
        format!("{whole}.{frac:09}s")
    }
}

/// Where and when something was received: `at 1.250s from member 2`.
pub(crate) fn place(at_ns: u64, member: u64) -> String {
    format!("at {} from member {member}", seconds(at_ns))
}

/// A kv in a few words: `k=v@5 (created 3, version 2)`, with the lease when it has one.
pub(crate) fn kv_text(kv: &Kv) -> String {
    let lease = if kv.lease != 0 {
        format!(", lease {}", kv.lease)
    } else {
        String::new()
    };
    format!(
        "{}={}@{} (created {}, version {}{lease})",
        kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.version
    )
}

/// An event in a few words: `put k=v@5 (created 3, version 2)`, `delete k@7`, with ` prev ...`
/// when it carries a previous kv.
pub(crate) fn event_text(kind: EventKind, kv: &Kv, prev_kv: Option<&Kv>) -> String {
    let mut text = match kind {
        EventKind::Put => format!("put {}", kv_text(kv)),
        EventKind::Delete if *kv == delete_kv(&kv.key, kv.mod_revision) => {
            format!("delete {}@{}", kv.key, kv.mod_revision)
        }
        EventKind::Delete => format!("delete {}", kv_text(kv)),
    };
    if let Some(prev) = prev_kv {
        text.push_str(&format!(" prev {}", kv_text(prev)));
    }
    text
}

/// A delete's kv as a watch delivers it: the key and the revision, nothing else.
pub(crate) fn delete_kv(key: &str, revision: i64) -> Kv {
    Kv {
        key: key.to_string(),
        value: String::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        lease: 0,
    }
}
