//! Several watches on one stream, as etcd's clientv3 multiplexes them: a watch whose start
//! revision is compacted ends alone, the others go on, and when the stream's member crashes they
//! resume together, each from its own last revision, without losing or repeating an event.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_sim::{simulate, Cluster, ClusterConfig, Fault};
use faultline_store::node::client::{Client, Outcome, WatchEvent};
use faultline_store::node::protocol::{ClientRequest, ClientResponse};
use faultline_store::{CompactionRequest, Request, Response, WatchCreateRequest};

const SECOND: Duration = Duration::from_secs(1);

fn prefix_watch(prefix: &str, start_revision: i64) -> WatchCreateRequest {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("a prefix") += 1;
    WatchCreateRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: end,
        start_revision,
        ..Default::default()
    }
}

async fn put_revision(client: &Client, key: &str) -> Option<i64> {
    match client.put(key.as_bytes(), b"x").await {
        Outcome::Ok(ClientResponse::Kv(Response::Put(p))) => Some(p.header.revision),
        _ => None,
    }
}

/// What each watch of the stream saw, by index.
#[derive(Default, Debug)]
struct Seen {
    keys: BTreeMap<usize, Vec<String>>,
    compacted: BTreeMap<usize, i64>,
    resumed: BTreeMap<usize, u64>,
}

#[test]
fn watches_sharing_a_stream_end_alone_on_compaction_and_resume_together_after_a_crash() {
    simulate(31, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        // History to compact away: the third watch starts inside it.
        let compacted_to = cluster
            .with_client(|client| async move {
                let mut last = 0;
                for i in 0..5 {
                    last = put_revision(&client, &format!("old/{i}"))
                        .await
                        .expect("a write before any fault");
                }
                let compact = Request::Compact(CompactionRequest {
                    revision: last,
                    physical: true,
                });
                assert!(client.request(ClientRequest::Kv(compact)).await.is_ok());
                last
            })
            .await;
        let watcher = cluster.spawn_client(cluster.client_config(), move |client| async move {
            let requests = vec![
                prefix_watch("a/", compacted_to + 1),
                prefix_watch("b/", compacted_to + 1),
                prefix_watch("old/", 1),
            ];
            let mut stream = client.watch_many(requests).await;
            let first_member = stream.member();
            let mut seen = Seen::default();
            let deadline = faultline_store::node::time::now() + 40 * SECOND;
            let done = |seen: &Seen| seen.keys.values().map(Vec::len).sum::<usize>() >= 160;
            while !done(&seen) && faultline_store::node::time::now() < deadline {
                match madsim::time::timeout(5 * SECOND, stream.next()).await {
                    Ok(Some((i, WatchEvent::Events { events, .. }))) => {
                        seen.keys.entry(i).or_default().extend(
                            events
                                .iter()
                                .map(|e| String::from_utf8_lossy(&e.kv.key).into()),
                        )
                    }
                    Ok(Some((
                        i,
                        WatchEvent::Compacted {
                            compact_revision, ..
                        },
                    ))) => {
                        seen.compacted.insert(i, compact_revision);
                    }
                    Ok(Some((i, WatchEvent::Resumed { .. }))) => {
                        *seen.resumed.entry(i).or_default() += 1;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            let stats: Vec<_> = (0..stream.len()).map(|i| stream.stats(i)).collect();
            (first_member, seen, stats)
        });
        madsim::time::sleep(SECOND).await;
        let writer = cluster.spawn_client(cluster.client_config(), |client: Client| async move {
            let mut acked = Vec::new();
            for i in 0..80u32 {
                for prefix in ["a", "b"] {
                    let key = format!("{prefix}/{i:03}");
                    if put_revision(&client, &key).await.is_some() {
                        acked.push(key);
                    }
                }
                madsim::time::sleep(Duration::from_millis(50)).await;
            }
            acked
        });
        madsim::time::sleep(2 * SECOND).await;
        // The stream is on member 1, the client's first choice.
        cluster.apply(&Fault::Crash {
            node: 1,
            torn: false,
        });
        let acked = writer.await.expect("writer");
        cluster.apply(&Fault::Restart { node: 1 });
        let (first_member, seen, stats) = watcher.await.expect("watcher");
        assert_eq!(first_member, Some(1));

        assert_eq!(
            seen.compacted.keys().copied().collect::<Vec<_>>(),
            vec![2],
            "only the watch that starts in compacted history is canceled: {seen:?}"
        );
        assert!(seen.compacted[&2] >= compacted_to);
        assert!(
            !seen.keys.contains_key(&2),
            "a compacted watch has no events"
        );
        assert_eq!(seen.resumed.get(&2), None, "a done watch does not resume");
        for i in [0, 1] {
            assert!(
                stats[i].resumes >= 1 && seen.resumed.get(&i).copied().unwrap_or(0) >= 1,
                "watch {i} resumed after the crash: {stats:?}"
            );
        }
        assert_eq!(
            stats[0].resumes, stats[1].resumes,
            "the watches of a stream resume together"
        );
        for (i, prefix) in [(0usize, "a/"), (1, "b/")] {
            let keys = seen.keys.get(&i).cloned().unwrap_or_default();
            assert!(keys.iter().all(|k| k.starts_with(prefix)), "{i}: {keys:?}");
            assert!(
                keys.windows(2).all(|w| w[0] < w[1]),
                "ordered, unique: {keys:?}"
            );
            for key in acked.iter().filter(|k| k.starts_with(prefix)) {
                let times = keys.iter().filter(|k| *k == key).count();
                assert_eq!(times, 1, "{key} was acknowledged and seen {times} times");
            }
        }
    });
}
