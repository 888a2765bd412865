//! The watch hub: one member's watchers, grouped in streams, fed from the MVCC log.
//!
//! Like etcd's watchable store, a watcher is either *synced* (it has every event up to the
//! current revision and receives new revisions as they are applied) or *unsynced* (it still has
//! history to catch up on, read back from the record log by [`WatchHub::sync`]). A synced watcher
//! whose stream has too many responses waiting becomes unsynced instead of dropping anything (a
//! "victim" in etcd's words) and catches up once the stream drains.
//!
//! Responses go to a per-stream outbox, in the order the client must see them; the node shell
//! drains it. Every response carries whole revisions, so a revision's events are never split.
//! A progress notification is only emitted when every watcher it speaks for is synced, so it never
//! claims a revision whose events are still waiting. The hub never reads a clock: periodic
//! progress is driven by [`WatchHub::progress_tick`].

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::api::{
    Event, EventType, ResponseHeader, WatchCreateRequest, WatchResponse, WATCH_ID_STREAM,
};
use crate::bugs::PlantedBugs;
use crate::error::EtcdError;
use crate::mvcc::{in_range, Mvcc};

/// Identifies one watch stream (one client connection) on a member.
pub type StreamId = u64;

/// Limits of the hub; every queue is bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchConfig {
    /// Responses a stream may hold undelivered before its synced watchers become victims.
    pub stream_pending_max: usize,
    /// Revisions one catch-up response may carry.
    pub batch_revisions_max: i64,
    /// Watchers one stream may hold.
    pub stream_watchers_max: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            stream_pending_max: 128,
            batch_revisions_max: 1000,
            stream_watchers_max: 4096,
        }
    }
}

#[derive(Debug, Clone)]
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    /// The next revision whose events this watcher must receive.
    next_revision: i64,
    synced: bool,
    prev_kv: bool,
    progress_notify: bool,
    no_put: bool,
    no_delete: bool,
    /// Whether anything was sent since the last progress tick.
    sent_since_tick: bool,
    /// The planted duplicate-event bug fires once per watcher.
    duplicated: bool,
}

impl Watcher {
    fn wants(&self, event: &Event) -> bool {
        in_range(&event.kv.key, &self.key, &self.range_end)
            && !(self.no_put && event.kind == EventType::Put)
            && !(self.no_delete && event.kind == EventType::Delete)
    }
}

#[derive(Debug, Clone, Default)]
struct Stream {
    next_watch_id: i64,
    outbox: VecDeque<WatchResponse>,
    /// A requested progress notification waits for every watcher of the stream to be synced.
    progress_pending: bool,
}

/// Counters of what the hub did, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStats {
    pub events_sent: u64,
    pub victims: u64,
    pub compaction_cancels: u64,
    pub progress_sent: u64,
}

#[derive(Debug, Clone, Default)]
pub struct WatchHub {
    config: WatchConfig,
    bugs: PlantedBugs,
    watchers: BTreeMap<(StreamId, i64), Watcher>,
    streams: BTreeMap<StreamId, Stream>,
    stats: WatchStats,
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..ResponseHeader::default()
    }
}

impl WatchHub {
    pub fn new(config: WatchConfig, bugs: PlantedBugs) -> Self {
        WatchHub {
            config,
            bugs,
            ..Default::default()
        }
    }

    pub fn stats(&self) -> WatchStats {
        self.stats
    }

    pub fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    /// Creates a watcher; its `created` response goes to the outbox at once. A start revision at
    /// or below the current one makes it unsynced (a compacted one is canceled at the next sync,
    /// as etcd does).
    pub fn create(
        &mut self,
        stream_id: StreamId,
        req: &WatchCreateRequest,
        mvcc: &Mvcc,
    ) -> Result<i64, EtcdError> {
        let current = mvcc.current_revision();
        if !req.range_end.is_empty() && req.range_end != [0] && req.key >= req.range_end {
            // etcd answers an empty range with a created-and-canceled response for watch -1.
            self.streams
                .entry(stream_id)
                .or_default()
                .outbox
                .push_back(WatchResponse {
                    header: header(current),
                    watch_id: -1,
                    created: true,
                    canceled: true,
                    cancel_reason: "mvcc: watcher range is empty".into(),
                    ..WatchResponse::default()
                });
            return Ok(-1);
        }
        let on_stream = self
            .watchers
            .range((stream_id, i64::MIN)..=(stream_id, i64::MAX))
            .count();
        if on_stream >= self.config.stream_watchers_max {
            return Err(EtcdError::TooManyWatchers);
        }
        let stream = self.streams.entry(stream_id).or_default();
        let watch_id = match req.watch_id {
            Some(id) if id < 0 => return Err(EtcdError::WatchIdExists),
            Some(id) if self.watchers.contains_key(&(stream_id, id)) => {
                return Err(EtcdError::WatchIdExists)
            }
            Some(id) => id,
            None => {
                while self
                    .watchers
                    .contains_key(&(stream_id, stream.next_watch_id))
                {
                    stream.next_watch_id += 1;
                }
                stream.next_watch_id
            }
        };
        let next_revision = if req.start_revision == 0 {
            current + 1
        } else {
            req.start_revision
        };
        let watcher = Watcher {
            key: req.key.clone(),
            range_end: req.range_end.clone(),
            next_revision,
            synced: next_revision > current,
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            no_put: req.no_put,
            no_delete: req.no_delete,
            sent_since_tick: false,
            duplicated: false,
        };
        self.watchers.insert((stream_id, watch_id), watcher);
        stream.outbox.push_back(WatchResponse {
            header: header(current),
            watch_id,
            created: true,
            ..WatchResponse::default()
        });
        Ok(watch_id)
    }

    /// Cancels a watcher at the client's request; returns false for an unknown one.
    pub fn cancel(&mut self, stream_id: StreamId, watch_id: i64, current: i64) -> bool {
        if self.watchers.remove(&(stream_id, watch_id)).is_none() {
            return false;
        }
        let stream = self.streams.entry(stream_id).or_default();
        stream.outbox.push_back(WatchResponse {
            header: header(current),
            watch_id,
            canceled: true,
            ..WatchResponse::default()
        });
        true
    }

    /// Drops a stream and all its watchers (the client went away).
    pub fn close_stream(&mut self, stream_id: StreamId) {
        self.watchers.retain(|(s, _), _| *s != stream_id);
        self.streams.remove(&stream_id);
    }

    /// Delivers revision `revision` (just applied) to the synced watchers.
    pub fn notify(&mut self, revision: i64, mvcc: &Mvcc) {
        let events = mvcc.events(revision, revision, b"\0", b"\0");
        let pending_max = self.config.stream_pending_max;
        for ((stream_id, watch_id), w) in self.watchers.iter_mut() {
            if !w.synced || w.next_revision > revision {
                continue;
            }
            assert_eq!(
                w.next_revision, revision,
                "a synced watcher skipped a revision"
            );
            let mine: Vec<Event> = events.iter().filter(|e| w.wants(e)).cloned().collect();
            if mine.is_empty() {
                w.next_revision = revision + 1;
                continue;
            }
            let stream = self
                .streams
                .get_mut(stream_id)
                .expect("watcher's stream exists");
            if stream.outbox.len() >= pending_max {
                // A victim: it falls back to catching up from the log, losing nothing.
                w.synced = false;
                self.stats.victims += 1;
                continue;
            }
            let events = with_prev_kv(mine, w.prev_kv, mvcc);
            self.stats.events_sent += events.len() as u64;
            stream.outbox.push_back(WatchResponse {
                header: header(revision),
                watch_id: *watch_id,
                events,
                ..WatchResponse::default()
            });
            w.next_revision = revision + 1;
            w.sent_since_tick = true;
        }
    }

    /// Catches unsynced watchers up from the record log, at most `batch_revisions_max` revisions
    /// per watcher per call, skipping streams whose outbox is full. Cancels watchers whose next
    /// revision was compacted. Then sends the progress notifications that were waiting.
    pub fn sync(&mut self, mvcc: &Mvcc) {
        let current = mvcc.current_revision();
        let compact = mvcc.compact_revision();
        let mut canceled = Vec::new();
        for ((stream_id, watch_id), w) in self.watchers.iter_mut() {
            if w.synced {
                continue;
            }
            let stream = self
                .streams
                .get_mut(stream_id)
                .expect("watcher's stream exists");
            if stream.outbox.len() >= self.config.stream_pending_max {
                if self.bugs.victim_watchers_starved && w.next_revision < compact {
                    // Planted etcd 17529: the compaction cancel does not fit on the full stream
                    // and is not retried; the watcher is moved on to the current revision as if
                    // it had caught up, and every event in between is lost.
                    w.next_revision = current + 1;
                    w.synced = true;
                }
                continue;
            }
            if w.next_revision < compact {
                stream.outbox.push_back(WatchResponse {
                    header: header(current),
                    watch_id: *watch_id,
                    canceled: true,
                    compact_revision: compact,
                    // etcd sets no cancel reason here: the compact revision says it all.
                    ..WatchResponse::default()
                });
                self.stats.compaction_cancels += 1;
                canceled.push((*stream_id, *watch_id));
                continue;
            }
            let to = current.min(w.next_revision + self.config.batch_revisions_max - 1);
            let mine: Vec<Event> = mvcc
                .events(w.next_revision, to, &w.key, &w.range_end)
                .into_iter()
                .filter(|e| w.wants(e))
                .collect();
            let last_event = mine.last().map(|e| e.kv.mod_revision);
            if !mine.is_empty() {
                let events = with_prev_kv(mine, w.prev_kv, mvcc);
                self.stats.events_sent += events.len() as u64;
                stream.outbox.push_back(WatchResponse {
                    header: header(current),
                    watch_id: *watch_id,
                    events,
                    ..WatchResponse::default()
                });
                w.sent_since_tick = true;
            }
            w.next_revision = to + 1;
            if let (true, false, Some(last)) =
                (self.bugs.watch_duplicate_event, w.duplicated, last_event)
            {
                // Planted etcd 17247: the next batch starts again at the last revision sent.
                w.duplicated = true;
                w.next_revision = last;
            }
            w.synced = w.next_revision > current;
        }
        for key in canceled {
            self.watchers.remove(&key);
        }
        let stream_ids: Vec<StreamId> = self.streams.keys().copied().collect();
        for stream_id in stream_ids {
            if self.streams[&stream_id].progress_pending && self.all_synced_at(stream_id, current) {
                self.push_stream_progress(stream_id, current);
            }
        }
    }

    /// Whether a progress notification at `current` may speak for every watcher of the stream:
    /// each is synced and none already expects a revision past `current + 1` (a watch resumed
    /// on a member that is behind, after a restart, must not be told the past is complete).
    fn all_synced_at(&self, stream_id: StreamId, current: i64) -> bool {
        self.watchers
            .range((stream_id, i64::MIN)..=(stream_id, i64::MAX))
            .all(|(_, w)| w.synced && w.next_revision <= current + 1)
    }

    fn push_stream_progress(&mut self, stream_id: StreamId, current: i64) {
        let stream = self.streams.entry(stream_id).or_default();
        stream.progress_pending = false;
        stream.outbox.push_back(WatchResponse {
            header: header(current),
            watch_id: WATCH_ID_STREAM,
            ..WatchResponse::default()
        });
        self.stats.progress_sent += 1;
    }

    /// A client's progress request: answered now if every watcher of the stream is synced, else
    /// as soon as they are (at a later [`sync`](Self::sync)).
    pub fn request_progress(&mut self, stream_id: StreamId, current: i64) {
        // With the planted etcd 15220 bug the notification goes out at once, overtaking events
        // that unsynced watchers of the stream have not been sent yet.
        if self.all_synced_at(stream_id, current) || self.bugs.watch_progress_overtakes {
            self.push_stream_progress(stream_id, current);
        } else {
            self.streams.entry(stream_id).or_default().progress_pending = true;
        }
    }

    /// The periodic progress notification: every synced watcher that asked for progress and was
    /// sent nothing since the last tick gets one at the current revision.
    pub fn progress_tick(&mut self, current: i64) {
        for ((stream_id, watch_id), w) in self.watchers.iter_mut() {
            let quiet = !w.sent_since_tick;
            w.sent_since_tick = false;
            if !(w.progress_notify && w.synced && quiet && w.next_revision <= current + 1) {
                continue;
            }
            let stream = self
                .streams
                .get_mut(stream_id)
                .expect("watcher's stream exists");
            stream.outbox.push_back(WatchResponse {
                header: header(current),
                watch_id: *watch_id,
                ..WatchResponse::default()
            });
            self.stats.progress_sent += 1;
        }
    }

    /// After the store under the hub was replaced (a snapshot installed), every watcher whose
    /// next revision is now in the past catches up from the new log.
    pub fn rebase(&mut self, current: i64, compact: i64) {
        for w in self.watchers.values_mut() {
            if self.bugs.watch_snapshot_replay && w.next_revision <= current + 1 {
                // Planted etcd 15271: watchers restart a few revisions back and replay events
                // they already had.
                let rewound = (w.next_revision - 5).max(1);
                if rewound >= compact {
                    w.next_revision = rewound;
                }
            }
            if self.bugs.future_watch_after_restore && w.next_revision > current + 1 {
                // Planted etcd 20221: a restore moves every watcher to catch up and sets each
                // one's next revision to the restored revision + 1, lowering a watcher that
                // waits for a future revision below its start.
                w.next_revision = current + 1;
            }
            w.synced = w.next_revision > current;
        }
    }

    /// Takes up to `max` responses waiting on a stream, oldest first.
    pub fn take(&mut self, stream_id: StreamId, max: usize) -> Vec<WatchResponse> {
        let Some(stream) = self.streams.get_mut(&stream_id) else {
            return Vec::new();
        };
        let n = max.min(stream.outbox.len());
        stream.outbox.drain(..n).collect()
    }

    pub fn pending(&self, stream_id: StreamId) -> usize {
        self.streams.get(&stream_id).map_or(0, |s| s.outbox.len())
    }

    /// Whether any watcher is still catching up.
    pub fn has_unsynced(&self) -> bool {
        self.watchers.values().any(|w| !w.synced)
    }

    pub fn check_invariants(&self, current: i64) {
        for ((stream_id, _), w) in &self.watchers {
            assert!(
                self.streams.contains_key(stream_id),
                "watcher without a stream"
            );
            if w.synced {
                assert!(w.next_revision > current, "a synced watcher is behind");
            } else {
                assert!(w.next_revision <= current, "an unsynced watcher is ahead");
            }
        }
    }
}

fn with_prev_kv(events: Vec<Event>, prev_kv: bool, mvcc: &Mvcc) -> Vec<Event> {
    if !prev_kv {
        return events;
    }
    events
        .into_iter()
        .map(|mut e| {
            e.prev_kv = mvcc.prev_kv_of(&e);
            e
        })
        .collect()
}
