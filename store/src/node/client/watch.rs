//! Watches, as etcd's clientv3 keeps them: the watches of one [`WatchStream`] share one stream
//! of one member (clientv3 puts every watch of a client on one gRPC stream), each watch with its
//! own id on it. The stream is numbered, so a lost or overtaken message is noticed; it asks for
//! progress when quiet. When it breaks (the member dies, a message is lost, the member stops
//! answering progress requests, or cancels a watch for no compaction), every watch of it that
//! is not done resumes on a new stream of another member, each from its own last revision + 1.
//! A watch canceled by compaction is done; the others go on.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Attempt, Client};
use crate::api::{WatchCreateRequest, WatchResponse, WATCH_ID_STREAM};
use crate::node::protocol::*;
use crate::node::time::{now, Instant};

impl Client {
    /// Opens a resumable watch on a stream of its own.
    pub async fn watch(&self, request: WatchCreateRequest) -> Watcher {
        Watcher {
            stream: self.watch_many(vec![request]).await,
        }
    }

    /// Opens resumable watches that share one stream (the `i`-th request is watch `i`).
    pub async fn watch_many(&self, requests: Vec<WatchCreateRequest>) -> WatchStream {
        let watches = requests
            .into_iter()
            .map(|request| Watch {
                request,
                last_revision: None,
                stats: WatchStats::default(),
                done: false,
            })
            .collect();
        let mut stream = WatchStream {
            client: self.clone(),
            watches,
            stream: None,
            member_index: self.inner.preferred.load(Ordering::SeqCst),
            queued: VecDeque::new(),
        };
        stream.open().await;
        stream
    }
}

/// What a watch hands its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Events of one or more whole revisions, from `member`.
    Events {
        member: NodeId,
        header_revision: i64,
        events: Vec<crate::api::Event>,
    },
    /// Every event up to `revision` has been delivered.
    Progress { member: NodeId, revision: i64 },
    /// The watch's start revision was compacted: the user must re-list. The watch is done.
    Compacted {
        member: NodeId,
        compact_revision: i64,
    },
    /// The stream broke and the watch resumed on `member` from `from_revision`.
    Resumed { member: NodeId, from_revision: i64 },
}

/// Counters of one watch, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchStats {
    pub events: u64,
    pub responses: u64,
    pub progress: u64,
    pub resumes: u64,
    pub compactions: u64,
}

/// One watch of a stream.
#[derive(Debug)]
struct Watch {
    request: WatchCreateRequest,
    /// The revision up to which everything has been delivered (last event or progress).
    last_revision: Option<i64>,
    stats: WatchStats,
    done: bool,
}

#[derive(Debug)]
struct OpenStream {
    id: u64,
    member: NodeId,
    /// Set by a heartbeat that found the member no longer knows the stream.
    lost: Arc<AtomicBool>,
    rx: mpsc::UnboundedReceiver<WatchMessage>,
    next_seq: u64,
    early: BTreeMap<u64, WatchMessage>,
    /// Since when a later message waits in `early` for a missing one.
    gap_since: Option<Instant>,
    last_heard: Instant,
    last_progress_request: Instant,
}

/// Watches that share a stream and survive its breaks.
#[derive(Debug)]
pub struct WatchStream {
    client: Client,
    watches: Vec<Watch>,
    stream: Option<OpenStream>,
    member_index: usize,
    /// What was decided for the watches and not handed out yet (a resume or a stream-wide
    /// progress notification speaks for several).
    queued: VecDeque<(usize, WatchEvent)>,
}

/// How often a quiet stream asks for progress, and how long without any message it is broken.
const WATCH_HEARTBEAT: Duration = Duration::from_millis(1_000);
const WATCH_DEAD_AFTER: Duration = Duration::from_millis(3_500);
/// How long a gap in a stream's numbering may stay open before the stream counts as broken: a
/// message later than the missing one arrived, so the missing one is lost rather than slow.
const WATCH_GAP_AFTER: Duration = Duration::from_millis(1_000);

/// The id watch `i` has on its stream (etcd reads a client-chosen id of 0 as "pick one").
fn watch_id(i: usize) -> i64 {
    i as i64 + 1
}

impl WatchStream {
    /// How many watches the stream carries, done or not.
    pub fn len(&self) -> usize {
        self.watches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.watches.is_empty()
    }

    pub fn stats(&self, watch: usize) -> WatchStats {
        self.watches[watch].stats
    }

    pub fn last_revision(&self, watch: usize) -> Option<i64> {
        self.watches[watch].last_revision
    }

    pub fn member(&self) -> Option<NodeId> {
        self.stream.as_ref().map(|s| s.member)
    }

    fn routes(
        &self,
    ) -> std::sync::MutexGuard<'_, BTreeMap<u64, mpsc::UnboundedSender<WatchMessage>>> {
        self.client.inner.watch_routes.lock().expect("routes")
    }

    /// Opens a stream on the current member with every watch that is not done, trying the next
    /// members until one accepts them all; returns each resumed watch with its start revision.
    async fn open(&mut self) -> Option<Vec<(usize, i64)>> {
        let members = self.client.inner.config.members.clone();
        let timeout = Duration::from_millis(self.client.inner.config.attempt_timeout_ms);
        for _ in 0..members.len() {
            let member = members[self.member_index % members.len()];
            let id = self.client.next_id() | (1 << 40);
            let (tx, rx) = mpsc::unbounded_channel();
            self.routes().insert(id, tx);
            let mut opened = Vec::new();
            for (i, watch) in self.watches.iter().enumerate().filter(|(_, w)| !w.done) {
                let mut request = watch.request.clone();
                request.watch_id = Some(watch_id(i));
                if let Some(last) = watch.last_revision {
                    // Never earlier than asked for: a progress notification may speak of a
                    // revision before a watch's future start.
                    request.start_revision = (last + 1).max(watch.request.start_revision);
                }
                let from = request.start_revision;
                let create = ClientRequest::WatchCreate {
                    stream: id,
                    request,
                };
                match self.client.attempt(member, &create, timeout).await {
                    Attempt::Reply(Ok(_)) => opened.push((i, from)),
                    _ => break,
                }
            }
            if opened.len() == self.watches.iter().filter(|w| !w.done).count() {
                let now_at = now();
                self.stream = Some(OpenStream {
                    id,
                    member,
                    lost: Arc::default(),
                    rx,
                    next_seq: 0,
                    early: BTreeMap::new(),
                    gap_since: None,
                    last_heard: now_at,
                    // The first progress request goes out at once (as an informer asks for a
                    // bookmark right after it starts watching).
                    last_progress_request: now_at.checked_sub(WATCH_HEARTBEAT).unwrap_or(now_at),
                });
                return Some(opened);
            }
            self.routes().remove(&id);
            if !opened.is_empty() {
                self.send_close(member, id);
            }
            self.member_index += 1;
        }
        None
    }

    fn send_close(&self, member: NodeId, id: u64) {
        let client = self.client.clone();
        let close = ClientRequest::WatchClose { stream: id };
        madsim::task::spawn(async move {
            client
                .attempt(member, &close, Duration::from_millis(500))
                .await;
        });
    }

    fn close_stream(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.routes().remove(&stream.id);
            self.send_close(stream.member, stream.id);
        }
    }

    /// Breaks the current stream and resumes every watch that is not done on the next member;
    /// false if no member would take them.
    async fn resume(&mut self) -> bool {
        self.close_stream();
        self.member_index += 1;
        let Some(opened) = self.open().await else {
            return false;
        };
        let member = self.member().expect("just opened");
        for (i, from) in opened {
            self.watches[i].stats.resumes += 1;
            self.queued.push_back((
                i,
                WatchEvent::Resumed {
                    member,
                    from_revision: from,
                },
            ));
        }
        true
    }

    /// The next thing one of the watches has to say, with the watch's index, or `None` once
    /// every watch is done (compacted), or no member would take them. Not cancel-safe while it
    /// resumes the stream: a caller that bounds it with a timeout must allow a few attempt
    /// timeouts.
    pub async fn next(&mut self) -> Option<(usize, WatchEvent)> {
        loop {
            if let Some(next) = self.queued.pop_front() {
                return Some(next);
            }
            if self.watches.iter().all(|w| w.done) {
                self.close_stream();
                return None;
            }
            if self.stream.is_none() {
                if !self.resume().await {
                    madsim::time::sleep(WATCH_HEARTBEAT).await;
                }
                continue;
            }
            let stream = self.stream.as_mut().expect("open");
            if let Some(message) = stream.early.remove(&stream.next_seq) {
                stream.last_heard = now();
                // The gap closed; one further on opens when a later message still waits.
                stream.gap_since = (!stream.early.is_empty()).then(now);
                stream.next_seq += 1;
                self.take(message.response);
                continue;
            }
            let now_at = now();
            let lost = stream.lost.load(Ordering::SeqCst);
            let gap_open = stream
                .gap_since
                .is_some_and(|since| now_at.duration_since(since) >= WATCH_GAP_AFTER);
            if lost || gap_open || now_at.duration_since(stream.last_heard) >= WATCH_DEAD_AFTER {
                self.resume().await;
                continue;
            }
            if now_at.duration_since(stream.last_progress_request) >= WATCH_HEARTBEAT {
                stream.last_progress_request = now_at;
                let client = self.client.clone();
                let (member, id, lost) = (stream.member, stream.id, stream.lost.clone());
                madsim::task::spawn(async move {
                    let request = ClientRequest::WatchProgress { stream: id };
                    let reply = client.attempt(member, &request, WATCH_HEARTBEAT).await;
                    if let Attempt::Reply(Err(ServerError::UnknownStream)) = reply {
                        lost.store(true, Ordering::SeqCst);
                    }
                });
            }
            match madsim::time::timeout(WATCH_HEARTBEAT, stream.rx.recv()).await {
                Ok(Some(message)) => {
                    if message.seq < stream.next_seq {
                        continue;
                    }
                    if message.seq > stream.next_seq {
                        // Overtaken: hold it until the gap fills, or the stream is declared dead.
                        // Only an in-order message counts as heard: a message lost for good
                        // breaks the stream (as a broken connection would), and the watches
                        // resume after their last revisions instead of waiting forever.
                        stream.early.insert(message.seq, message);
                        stream.gap_since.get_or_insert_with(now);
                        continue;
                    }
                    stream.last_heard = now();
                    stream.gap_since = None;
                    stream.next_seq += 1;
                    self.take(message.response);
                }
                Ok(None) => self.stream = None,
                Err(_) => {}
            }
        }
    }

    /// Queues what an in-order response says, for the watch it names (every watch, for a
    /// progress notification of the whole stream).
    fn take(&mut self, r: WatchResponse) {
        let Some(member) = self.member() else { return };
        let targets: Vec<usize> = if r.watch_id == WATCH_ID_STREAM && !r.created && !r.canceled {
            (0..self.watches.len())
                .filter(|i| !self.watches[*i].done)
                .collect()
        } else {
            match (0..self.watches.len()).find(|i| watch_id(*i) == r.watch_id) {
                Some(i) if !self.watches[i].done => vec![i],
                _ => return,
            }
        };
        for i in targets {
            let watch = &mut self.watches[i];
            watch.stats.responses += 1;
            if r.canceled {
                if r.compact_revision > 0 {
                    watch.stats.compactions += 1;
                    watch.done = true;
                    self.queued.push_back((
                        i,
                        WatchEvent::Compacted {
                            member,
                            compact_revision: r.compact_revision,
                        },
                    ));
                    continue;
                }
                // Canceled by the member for another reason: resume elsewhere.
                self.close_stream();
                return;
            }
            if r.created {
                // A watch from "now" resumes after the revision it was created at, as etcd's
                // client does, so that nothing committed meanwhile is skipped.
                if watch.request.start_revision == 0 && watch.last_revision.is_none() {
                    watch.last_revision = Some(r.header.revision);
                }
                continue;
            }
            if r.events.is_empty() {
                watch.stats.progress += 1;
                let revision = r.header.revision;
                if watch.last_revision.is_none_or(|last| revision > last) {
                    watch.last_revision = Some(revision);
                }
                self.queued
                    .push_back((i, WatchEvent::Progress { member, revision }));
                continue;
            }
            watch.stats.events += r.events.len() as u64;
            watch.last_revision = Some(r.events.last().expect("non-empty").kv.mod_revision);
            self.queued.push_back((
                i,
                WatchEvent::Events {
                    member,
                    header_revision: r.header.revision,
                    events: r.events.clone(),
                },
            ));
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        if let Some(stream) = self.stream.take() {
            self.routes().remove(&stream.id);
        }
    }
}

/// A watch on a stream of its own.
#[derive(Debug)]
pub struct Watcher {
    stream: WatchStream,
}

impl Watcher {
    pub fn stats(&self) -> WatchStats {
        self.stream.stats(0)
    }

    pub fn last_revision(&self) -> Option<i64> {
        self.stream.last_revision(0)
    }

    pub fn member(&self) -> Option<NodeId> {
        self.stream.member()
    }

    /// The next thing the watch has to say, or `None` once it is done (compacted, or no member
    /// would take it); see [`WatchStream::next`].
    pub async fn next(&mut self) -> Option<WatchEvent> {
        self.stream.next().await.map(|(_, event)| event)
    }
}
