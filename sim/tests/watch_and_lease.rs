//! Watches that survive a member's crash, and leases kept alive, expired and carried across a
//! leader change, on a simulated cluster.

use std::time::Duration;

use faultline_sim::{simulate, Cluster, ClusterConfig, Fault};
use faultline_store::node::client::{Client, Outcome, WatchEvent};
use faultline_store::node::protocol::{ClientRequest, ClientResponse};
use faultline_store::{
    EventType, LeaseGrantRequest, PutRequest, RangeRequest, Request, Response, WatchCreateRequest,
};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn a_watch_on_a_crashed_member_resumes_elsewhere_without_losing_or_repeating_an_event() {
    simulate(21, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        let watcher = cluster.spawn_client(cluster.client_config(), |client| async move {
            let request = WatchCreateRequest {
                key: b"w/".to_vec(),
                range_end: b"w0".to_vec(),
                start_revision: 1,
                prev_kv: true,
                ..Default::default()
            };
            let mut watch = client.watch(request).await;
            let first_member = watch.member();
            let mut events = Vec::new();
            let deadline = faultline_store::node::time::now() + 40 * SECOND;
            while events.len() < 120 && faultline_store::node::time::now() < deadline {
                match madsim::time::timeout(5 * SECOND, watch.next()).await {
                    Ok(Some(WatchEvent::Events { events: batch, .. })) => events.extend(batch),
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => {}
                }
            }
            (first_member, watch.stats(), events)
        });
        madsim::time::sleep(SECOND).await;
        let writer = cluster.spawn_client(cluster.client_config(), |client: Client| async move {
            let mut acked = Vec::new();
            for i in 0..120u32 {
                if client
                    .put(format!("w/{i:03}").as_bytes(), b"x")
                    .await
                    .is_ok()
                {
                    acked.push(i);
                }
                madsim::time::sleep(Duration::from_millis(50)).await;
            }
            acked
        });
        madsim::time::sleep(2 * SECOND).await;
        // The watcher's stream is on member 1 (the client's first choice).
        cluster.apply(&Fault::Crash {
            node: 1,
            torn: false,
        });
        let acked = writer.await.expect("writer");
        cluster.apply(&Fault::Restart { node: 1 });
        let (first_member, stats, events) = watcher.await.expect("watcher");
        assert_eq!(first_member, Some(1));
        assert!(
            stats.resumes >= 1,
            "the watch resumed after the crash: {stats:?}"
        );
        let revisions: Vec<i64> = events.iter().map(|e| e.kv.mod_revision).collect();
        assert!(
            revisions.windows(2).all(|w| w[0] < w[1]),
            "ordered and unique: {revisions:?}"
        );
        for i in &acked {
            let key = format!("w/{i:03}");
            let seen = events.iter().filter(|e| e.kv.key == key.as_bytes()).count();
            assert_eq!(seen, 1, "{key} was acknowledged and seen {seen} times");
        }
        assert!(events.iter().all(|e| e.kind == EventType::Put));
    });
}

async fn lease_grant(client: &Client, ttl: i64) -> i64 {
    let request = ClientRequest::Kv(Request::LeaseGrant(LeaseGrantRequest { ttl, id: 0 }));
    match client.request(request).await {
        Outcome::Ok(ClientResponse::Kv(Response::LeaseGrant(g))) => g.id,
        other => panic!("lease grant: {other:?}"),
    }
}

async fn key_count(client: &Client, key: &[u8]) -> i64 {
    let request = RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    match client
        .request(ClientRequest::Kv(Request::Range(request)))
        .await
    {
        Outcome::Ok(ClientResponse::Kv(Response::Range(r))) => r.count,
        other => panic!("read: {other:?}"),
    }
}

#[test]
fn a_lease_kept_alive_survives_a_leader_crash_and_expires_once_abandoned() {
    simulate(22, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        let client_config = cluster.client_config();
        let (id, client) = cluster
            .with_client(move |client| async move {
                let id = lease_grant(&client, 3).await;
                let put = PutRequest {
                    key: b"lock".to_vec(),
                    value: b"me".to_vec(),
                    lease: id,
                    ..Default::default()
                };
                assert!(client
                    .request(ClientRequest::Kv(Request::Put(put)))
                    .await
                    .is_ok());
                (id, client_config)
            })
            .await;
        let keeper = cluster.spawn_client(client, move |client| async move {
            let mut renewed = 0;
            for _ in 0..16 {
                if let Outcome::Ok(ClientResponse::LeaseKeepAlive(k)) =
                    client.request(ClientRequest::LeaseKeepAlive(id)).await
                {
                    if k.ttl > 0 {
                        renewed += 1;
                    }
                }
                madsim::time::sleep(Duration::from_millis(500)).await;
            }
            let alive = key_count(&client, b"lock").await;
            (renewed, alive)
        });
        madsim::time::sleep(3 * SECOND).await;
        let leader = cluster.leader().expect("leader");
        cluster.apply(&Fault::Crash {
            node: leader,
            torn: false,
        });
        let (renewed, alive) = keeper.await.expect("keeper");
        assert!(
            renewed >= 10,
            "keepalives reach the leader, old and new: {renewed}"
        );
        assert_eq!(alive, 1, "a kept-alive lease outlives a leader change");
        let gone = cluster
            .with_client(|client| async move {
                madsim::time::sleep(6 * SECOND).await;
                key_count(&client, b"lock").await
            })
            .await;
        assert_eq!(gone, 0, "an abandoned lease expires and takes its key");
        assert!(cluster
            .trace()
            .recent()
            .iter()
            .any(|l| l.contains(&format!("lease {id} expired"))));
    });
}
