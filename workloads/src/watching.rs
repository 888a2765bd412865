//! Watch traffic: watchers that start around the current revision (compacted, current, future),
//! Kubernetes' list-then-watch, and one watcher per member that follows everything to the end.
//! Every watcher records what it was sent, in the watch history format of `faultline-checkers`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faultline_checkers::history::{Outcome, Request, Response};
use faultline_checkers::watch::{EventKind, WatchEvent, WatchItem, WatchRecord};
use faultline_store::api;
use faultline_store::node::client::{self, Client};
use faultline_store::node::time::{now, Instant};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::record::{kv_from_store, Recorder};
use crate::traffic::client_seed;

/// The watches of a run, as they ended.
#[derive(Debug, Clone)]
pub struct WatchRecorder {
    start: Instant,
    next_id: Arc<Mutex<u64>>,
    records: Arc<Mutex<Vec<WatchRecord>>>,
}

impl WatchRecorder {
    pub fn new(start: Instant) -> Self {
        WatchRecorder {
            start,
            next_id: Arc::default(),
            records: Arc::default(),
        }
    }

    fn now_ns(&self) -> u64 {
        now().duration_since(self.start).as_nanos() as u64
    }

    fn next_id(&self) -> u64 {
        let mut id = self.next_id.lock().expect("watch id lock");
        *id += 1;
        *id
    }

    fn push(&self, record: WatchRecord) {
        self.records
            .lock()
            .expect("watch records lock")
            .push(record);
    }

    /// Every finished watch, by id.
    pub fn records(&self) -> Vec<WatchRecord> {
        let mut records = self.records.lock().expect("watch records lock").clone();
        records.sort_by_key(|r| r.id);
        records
    }
}

/// A store event in the watch history's terms.
pub fn watch_event(event: &api::Event) -> WatchEvent {
    WatchEvent {
        kind: match event.kind {
            api::EventType::Put => EventKind::Put,
            api::EventType::Delete => EventKind::Delete,
        },
        kv: kv_from_store(&event.kv),
        prev_kv: event.prev_kv.as_ref().map(kv_from_store),
    }
}

/// What one watch is asked for.
#[derive(Debug, Clone)]
struct Spec {
    key: String,
    range_end: Option<String>,
    start_revision: i64,
    prev_kv: bool,
    progress_notify: bool,
}

fn create_request(spec: &Spec) -> api::WatchCreateRequest {
    api::WatchCreateRequest {
        key: spec.key.as_bytes().to_vec(),
        range_end: spec
            .range_end
            .as_deref()
            .map(|e| e.as_bytes().to_vec())
            .unwrap_or_default(),
        start_revision: spec.start_revision,
        progress_notify: spec.progress_notify,
        prev_kv: spec.prev_kv,
        ..Default::default()
    }
}

/// Follows one watch until `stop` says so (or it is canceled by compaction), recording it.
/// Returns the record (also pushed to the recorder).
async fn follow(
    client: &Client,
    recorder: &WatchRecorder,
    client_id: u64,
    spec: Spec,
    stop: &(dyn Fn() -> bool + Send + Sync),
    follows_to_end: bool,
) -> WatchRecord {
    let mut records = follow_all(
        client,
        recorder,
        client_id,
        vec![spec],
        stop,
        follows_to_end,
    )
    .await;
    records.pop().expect("one record per spec")
}

/// Follows watches that share one stream (as every watch of an etcd client does) until `stop`
/// says so or each is canceled by compaction, recording each; returns the records, in the
/// order of `specs` (also pushed to the recorder).
async fn follow_all(
    client: &Client,
    recorder: &WatchRecorder,
    client_id: u64,
    specs: Vec<Spec>,
    stop: &(dyn Fn() -> bool + Send + Sync),
    follows_to_end: bool,
) -> Vec<WatchRecord> {
    let ids: Vec<u64> = specs.iter().map(|_| recorder.next_id()).collect();
    let stream = (ids.len() > 1).then(|| ids[0]);
    let mut records: Vec<WatchRecord> = specs
        .iter()
        .zip(&ids)
        .map(|(spec, id)| WatchRecord {
            id: *id,
            client: client_id,
            key: spec.key.clone(),
            range_end: spec.range_end.clone(),
            start_revision: spec.start_revision,
            prev_kv: spec.prev_kv,
            progress_notify: spec.progress_notify,
            no_put: false,
            no_delete: false,
            opened_ns: recorder.now_ns(),
            opened_revision: None,
            items: Vec::new(),
            follows_to_end,
            stream,
        })
        .collect();
    let mut watches = client
        .watch_many(specs.iter().map(create_request).collect())
        .await;
    while !stop() {
        // A healthy stream says something every second (progress answers the watcher's
        // heartbeat); the long bound only matters while it resumes, which must not be cut short.
        let Ok(next) = madsim::time::timeout(Duration::from_secs(10), watches.next()).await else {
            continue;
        };
        let Some((i, event)) = next else { break };
        let at_ns = recorder.now_ns();
        let record = &mut records[i];
        match event {
            client::WatchEvent::Events {
                member,
                header_revision,
                events,
            } => {
                record.items.push(WatchItem::Events {
                    at_ns,
                    member,
                    header_revision,
                    events: events.iter().map(watch_event).collect(),
                });
            }
            client::WatchEvent::Progress { member, revision } => {
                record.items.push(WatchItem::Progress {
                    at_ns,
                    member,
                    revision,
                });
            }
            client::WatchEvent::Compacted {
                member,
                compact_revision,
            } => {
                record.items.push(WatchItem::Compacted {
                    at_ns,
                    member,
                    compact_revision,
                });
                record.follows_to_end = false;
            }
            client::WatchEvent::Resumed {
                member,
                from_revision,
            } => {
                record.items.push(WatchItem::Resumed {
                    at_ns,
                    member,
                    from_revision,
                });
            }
        }
    }
    for record in &records {
        recorder.push(record.clone());
    }
    records
}

fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    String::from_utf8(end).expect("ASCII prefix")
}

/// The current revision as a linearizable read sees it (with the client's retries).
async fn current_revision(client: &Client, kv_recorder: &Recorder, client_id: u64) -> Option<i64> {
    let read = Request::Get {
        key: "key/000".into(),
        range_end: None,
        revision: 0,
        limit: 0,
        keys_only: true,
        serializable: false,
    };
    match kv_recorder.call(client, client_id, read).await {
        Outcome::Ok { revision, .. } => Some(revision),
        _ => None,
    }
}

/// A watch on a key or the prefix, from a revision within 100 of `current`.
fn draw_spec(rng: &mut ChaCha8Rng, key_prefix: &str, keys: u32, current: i64) -> Spec {
    let (key, range_end) = if rng.gen_bool(0.5) {
        (key_prefix.to_string(), Some(prefix_end(key_prefix)))
    } else {
        (
            format!("{key_prefix}{:03}", rng.gen_range(0..keys.max(1))),
            None,
        )
    };
    Spec {
        key,
        range_end,
        start_revision: (current + rng.gen_range(-100..=100)).max(1),
        prev_kv: rng.gen_bool(0.5),
        progress_notify: rng.gen_bool(0.5),
    }
}

/// A watcher client: until `until`, opens watches on a key or a prefix from a revision drawn
/// around the current one (offset -100..+100: compacted, current or future), 1 to `per_stream`
/// of them sharing one stream, follows them for 1–4 s, and after a compaction cancel re-lists
/// and watches again from the list's revision (or from the compact revision itself).
#[allow(clippy::too_many_arguments)]
pub async fn random_watcher(
    client: Client,
    recorder: WatchRecorder,
    kv_recorder: Recorder,
    key_prefix: String,
    keys: u32,
    per_stream: u32,
    client_id: u64,
    seed: u64,
    until: Instant,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(client_seed(seed, client_id));
    while now() < until {
        let Some(current) = current_revision(&client, &kv_recorder, client_id).await else {
            madsim::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let watches = if per_stream > 1 {
            rng.gen_range(1..=per_stream)
        } else {
            1
        };
        let specs: Vec<Spec> = (0..watches)
            .map(|_| draw_spec(&mut rng, &key_prefix, keys, current))
            .collect();
        let follow_for = Duration::from_millis(rng.gen_range(1_000..4_000));
        let stop_at = (now() + follow_for).min(until);
        let records = follow_all(
            &client,
            &recorder,
            client_id,
            specs.clone(),
            &move || now() >= stop_at,
            false,
        )
        .await;
        let mut again = Vec::new();
        for (spec, record) in specs.into_iter().zip(records) {
            let compacted = record.items.iter().find_map(|i| match i {
                WatchItem::Compacted {
                    compact_revision, ..
                } => Some(*compact_revision),
                _ => None,
            });
            if let (Some(compact_revision), true) = (compacted, rng.gen_bool(0.5)) {
                // Watch from exactly the compact revision, the oldest one still allowed (etcd's
                // robustness tests do this; it is where etcd 18089 lost a delete).
                again.push(Spec {
                    start_revision: compact_revision,
                    ..spec
                });
            } else if compacted.is_some() && now() < until {
                // Re-list, then watch from the list's revision + 1 (what a cache does).
                let list = Request::Get {
                    key: spec.key.clone(),
                    range_end: spec.range_end.clone(),
                    revision: 0,
                    limit: 0,
                    keys_only: false,
                    serializable: false,
                };
                if let Outcome::Ok { revision, .. } =
                    kv_recorder.call(&client, client_id, list).await
                {
                    again.push(Spec {
                        start_revision: revision + 1,
                        ..spec
                    });
                }
            }
        }
        if !again.is_empty() {
            let stop_at = (now() + follow_for).min(until);
            follow_all(
                &client,
                &recorder,
                client_id,
                again,
                &move || now() >= stop_at,
                false,
            )
            .await;
        }
    }
}

/// Kubernetes' informer: list the pods, then watch from the list's revision + 1 until `stop`;
/// re-list and watch again after a compaction cancel.
pub async fn list_then_watch(
    client: Client,
    recorder: WatchRecorder,
    kv_recorder: Recorder,
    prefix: String,
    client_id: u64,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::SeqCst) {
        let list = Request::Get {
            key: prefix.clone(),
            range_end: Some(prefix_end(&prefix)),
            revision: 0,
            limit: 0,
            keys_only: false,
            serializable: false,
        };
        let Outcome::Ok {
            revision,
            response: Response::Get { .. },
        } = kv_recorder.call(&client, client_id, list).await
        else {
            madsim::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let spec = Spec {
            key: prefix.clone(),
            range_end: Some(prefix_end(&prefix)),
            start_revision: revision + 1,
            prev_kv: true,
            progress_notify: true,
        };
        let stop_flag = stop.clone();
        let record = follow(
            &client,
            &recorder,
            client_id,
            spec,
            &move || stop_flag.load(Ordering::SeqCst),
            true,
        )
        .await;
        if !record
            .items
            .iter()
            .any(|i| matches!(i, WatchItem::Compacted { .. }))
        {
            return;
        }
    }
}

/// A watcher pinned to one member (its client knows only that member) that follows every key
/// from revision 1 until `stop`.
pub async fn member_follower(
    client: Client,
    recorder: WatchRecorder,
    client_id: u64,
    stop: Arc<AtomicBool>,
) {
    let spec = Spec {
        key: "\0".into(),
        range_end: Some("\0".into()),
        start_revision: 1,
        prev_kv: true,
        progress_notify: true,
    };
    follow(
        &client,
        &recorder,
        client_id,
        spec,
        &move || stop.load(Ordering::SeqCst),
        true,
    )
    .await;
}
