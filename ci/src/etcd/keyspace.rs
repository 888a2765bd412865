//! A watch of every key from revision 1, kept alive across kills and pauses: the watch real mode
//! records for the watch checkers, and what settles writes of unknown outcome
//! ([`faultline_checkers::resolve`]).
//!
//! The watch follows one member at a time. When its stream breaks (the member was killed), or
//! stays silent through a progress request (the member is paused), it moves to the next member
//! and resumes from the revision after the last one it saw, as etcd's clientv3 watcher does; the
//! record shows each resume. If compaction overtakes it, revisions are lost for good: the record
//! ends with the cancel, and the resolver then settles nothing as "never happened". Progress
//! responses only prove a member alive here and are not recorded: etcd 3.4 answers a progress
//! request before a catching-up watcher has caught up (etcd 15220), which is not what this watch
//! is for.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client as ec;
use faultline_checkers::history::Kv;
use faultline_checkers::watch::{EventKind, WatchEvent, WatchItem, WatchRecord};
use faultline_workloads::Clock;

/// The key and range end of a watch of every key.
pub const ALL_KEYS: &str = "\0";

/// What the keyspace watch saw, and how it went.
#[derive(Debug, Clone)]
pub struct KeyspaceRecord {
    /// The watch in the watch history format.
    pub watch: WatchRecord,
    /// The next revision the watch waits for.
    pub next_revision: i64,
    /// Set when compaction removed revisions the watch had not seen yet.
    pub compacted_at: Option<i64>,
    /// Times the watch moved to another member.
    pub resumes: u64,
}

/// A running keyspace watch.
#[derive(Debug)]
pub struct KeyspaceWatch {
    record: Arc<Mutex<KeyspaceRecord>>,
    task: tokio::task::JoinHandle<()>,
}

/// How long a stream may stay silent, a progress request included, before the watch moves on.
const SILENCE: Duration = Duration::from_secs(2);

impl KeyspaceWatch {
    /// Starts watching every key from revision 1 on `endpoints`, as watch `id` of client
    /// `client`, with times on `clock`.
    pub fn start(endpoints: Vec<String>, clock: Clock, id: u64, client: u64) -> KeyspaceWatch {
        let watch = WatchRecord {
            id,
            client,
            key: ALL_KEYS.to_string(),
            range_end: Some(ALL_KEYS.to_string()),
            start_revision: 1,
            prev_kv: false,
            progress_notify: false,
            no_put: false,
            no_delete: false,
            opened_ns: clock.elapsed().as_nanos() as u64,
            opened_revision: None,
            items: Vec::new(),
            follows_to_end: false,
            stream: None,
        };
        let record = Arc::new(Mutex::new(KeyspaceRecord {
            watch,
            next_revision: 1,
            compacted_at: None,
            resumes: 0,
        }));
        let task = tokio::spawn(follow(endpoints, clock, record.clone()));
        KeyspaceWatch { record, task }
    }

    /// Waits until the watch has seen every revision through `revision` (or `timeout` passes),
    /// then stops it and returns what it saw. A watch that caught up is marked as following to
    /// the end, so the watch checkers hold it to every revision.
    pub async fn finish(self, revision: i64, timeout: Duration) -> KeyspaceRecord {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (caught_up, over) = {
                let record = self.record.lock().expect("keyspace record");
                (
                    record.next_revision > revision,
                    record.compacted_at.is_some(),
                )
            };
            if caught_up || over || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        let mut record = self.record.lock().expect("keyspace record").clone();
        record.watch.follows_to_end =
            record.compacted_at.is_none() && record.next_revision > revision;
        record
    }
}

async fn follow(endpoints: Vec<String>, clock: Clock, record: Arc<Mutex<KeyspaceRecord>>) {
    let mut turn = 0usize;
    loop {
        let member = turn % endpoints.len();
        turn += 1;
        let next = {
            let mut record = record.lock().expect("keyspace record");
            if turn > 1 {
                record.resumes += 1;
                let from_revision = record.next_revision;
                record.watch.items.push(WatchItem::Resumed {
                    at_ns: clock.elapsed().as_nanos() as u64,
                    member: member as u64 + 1,
                    from_revision,
                });
            }
            record.next_revision
        };
        if let Err(Some(at)) =
            follow_member(&endpoints[member], member as u64 + 1, next, clock, &record).await
        {
            record.lock().expect("keyspace record").compacted_at = Some(at);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kv_of(kv: &ec::KeyValue) -> Kv {
    Kv {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
        lease: kv.lease(),
    }
}

/// Follows member `member` (numbered from 1) from `next` until its stream breaks or goes silent
/// (`Err(None)`), or compaction overtakes the watch (`Err(Some(compact revision))`).
async fn follow_member(
    endpoint: &str,
    member: u64,
    next: i64,
    clock: Clock,
    record: &Mutex<KeyspaceRecord>,
) -> Result<(), Option<i64>> {
    let options = ec::ConnectOptions::new().with_connect_timeout(Duration::from_millis(500));
    let connect = ec::Client::connect([endpoint], Some(options));
    let mut client = match tokio::time::timeout(SILENCE, connect).await {
        Ok(Ok(client)) => client,
        _ => return Err(None),
    };
    let watch = ec::WatchOptions::new()
        .with_all_keys()
        .with_start_revision(next);
    let opened = tokio::time::timeout(SILENCE, client.watch(vec![0u8], Some(watch))).await;
    let Ok(Ok(mut stream)) = opened else {
        return Err(None);
    };
    let mut asked = false;
    loop {
        match tokio::time::timeout(SILENCE, stream.message()).await {
            Err(_) if asked => return Err(None),
            Err(_) => {
                // Silent: an idle keyspace, or a paused member. A member that answers this is
                // alive.
                asked = true;
                if stream.request_progress().await.is_err() {
                    return Err(None);
                }
            }
            Ok(Ok(Some(response))) => {
                asked = false;
                let at_ns = clock.elapsed().as_nanos() as u64;
                let mut record = record.lock().expect("keyspace record");
                if response.canceled() {
                    let compact_revision = response.compact_revision();
                    if compact_revision > 0 {
                        record.watch.items.push(WatchItem::Compacted {
                            at_ns,
                            member,
                            compact_revision,
                        });
                        return Err(Some(compact_revision));
                    }
                    return Err(None);
                }
                let events: Vec<WatchEvent> = response
                    .events()
                    .iter()
                    .filter_map(|event| {
                        let kv = kv_of(event.kv()?);
                        let kind = match event.event_type() {
                            ec::EventType::Put => EventKind::Put,
                            ec::EventType::Delete => EventKind::Delete,
                        };
                        Some(WatchEvent {
                            kind,
                            kv,
                            prev_kv: None,
                        })
                    })
                    .collect();
                let Some(last) = events.last().map(WatchEvent::revision) else {
                    continue;
                };
                record.next_revision = record.next_revision.max(last + 1);
                record.watch.items.push(WatchItem::Events {
                    at_ns,
                    member,
                    header_revision: response.header().map_or(0, |h| h.revision()),
                    events,
                });
            }
            Ok(_) => return Err(None),
        }
    }
}
