//! A watch of every key from revision 1, kept alive across kills and pauses, for settling writes
//! of unknown outcome ([`faultline_checkers::resolve`]).
//!
//! The watch follows one member at a time. When its stream breaks (the member was killed), or
//! stays silent through a progress request (the member is paused), it moves to the next member
//! and resumes from the revision after the last one it saw, as etcd's clientv3 watcher does. If
//! compaction overtakes it, revisions are lost for good: the record says so, and the resolver
//! then settles nothing as "never happened".

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client as ec;
use faultline_checkers::resolve::WatchedEvent;

/// What the keyspace watch saw.
#[derive(Debug, Clone, Default)]
pub struct KeyspaceRecord {
    pub events: Vec<WatchedEvent>,
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
    /// Starts watching every key from revision 1 on `endpoints`.
    pub fn start(endpoints: Vec<String>) -> KeyspaceWatch {
        let record = Arc::new(Mutex::new(KeyspaceRecord {
            next_revision: 1,
            ..KeyspaceRecord::default()
        }));
        let task = tokio::spawn(follow(endpoints, record.clone()));
        KeyspaceWatch { record, task }
    }

    /// Waits until the watch has seen every revision through `revision` (or `timeout` passes),
    /// then stops it and returns what it saw.
    pub async fn finish(self, revision: i64, timeout: Duration) -> KeyspaceRecord {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let caught_up = {
                let record = self.record.lock().expect("keyspace record");
                record.next_revision > revision || record.compacted_at.is_some()
            };
            if caught_up || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.task.abort();
        let record = self.record.lock().expect("keyspace record");
        record.clone()
    }
}

async fn follow(endpoints: Vec<String>, record: Arc<Mutex<KeyspaceRecord>>) {
    let mut member = 0usize;
    loop {
        let endpoint = endpoints[member % endpoints.len()].clone();
        member += 1;
        let next = record.lock().expect("keyspace record").next_revision;
        if let Err(Some(at)) = follow_member(&endpoint, next, &record).await {
            record.lock().expect("keyspace record").compacted_at = Some(at);
            return;
        }
        record.lock().expect("keyspace record").resumes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Follows one member from `next` until its stream breaks or goes silent (`Err(None)`), or
/// compaction overtakes the watch (`Err(Some(compact revision))`).
async fn follow_member(
    endpoint: &str,
    next: i64,
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
    let mut stream = match tokio::time::timeout(SILENCE, client.watch(vec![0u8], Some(watch))).await
    {
        Ok(Ok(stream)) => stream,
        _ => return Err(None),
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
                if response.canceled() {
                    return Err(
                        (response.compact_revision() > 0).then_some(response.compact_revision())
                    );
                }
                let mut record = record.lock().expect("keyspace record");
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let revision = kv.mod_revision();
                    if revision < record.next_revision {
                        continue;
                    }
                    record.events.push(WatchedEvent {
                        revision,
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value: String::from_utf8_lossy(kv.value()).into_owned(),
                        delete: event.event_type() == ec::EventType::Delete,
                    });
                }
                if let Some(last) = record.events.last().map(|e| e.revision) {
                    record.next_revision = record.next_revision.max(last + 1);
                }
            }
            Ok(_) => return Err(None),
        }
    }
}
