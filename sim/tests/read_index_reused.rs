//! The mechanism of the planted etcd 20418 bug: a leader paused long enough for another member
//! to be elected, then resumed, answers a linearizable read. With the switch it reuses the read
//! index it confirmed before the pause and returns a value older than a write the new leader
//! acknowledged meanwhile; without it the read needs a quorum it no longer has and fails.

use std::time::Duration;

use faultline_sim::{simulate, Cluster, ClusterConfig, Fault};
use faultline_store::node::client::{ClientConfig, Outcome};
use faultline_store::node::protocol::{ClientResponse, NodeId};
use faultline_store::{PlantedBugs, Response};

const SECOND: Duration = Duration::from_secs(1);

fn pinned(cluster: &Cluster, member: NodeId) -> ClientConfig {
    let mut config = cluster.client_config();
    config.members = vec![member];
    config
}

fn value(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Ok(ClientResponse::Kv(Response::Range(r))) => r
            .kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
        _ => None,
    }
}

/// What a linearizable read of `k` on the resumed old leader answers, after the new leader
/// acknowledged `k = new`.
fn read_on_resumed_leader(bugs: PlantedBugs) -> Option<String> {
    simulate(7, move || async move {
        let mut config = ClusterConfig::new(3);
        config.node.store.bugs = bugs;
        let mut cluster = Cluster::start(config);
        let old = cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        let before = cluster
            .spawn_client(pinned(&cluster, old), |c| async move {
                assert!(c.put(b"k", b"old").await.is_ok());
                c.get(b"k").await
            })
            .await
            .expect("client");
        assert_eq!(value(&before).as_deref(), Some("old"));
        // The pause outlasts an election timeout; the links to the other members stay cut
        // after the resume, so that nothing tells the old leader it was deposed.
        cluster.apply(&Fault::Pause { node: old });
        cluster.apply(&Fault::Isolate { node: old });
        let others: Vec<NodeId> = cluster
            .member_ids()
            .into_iter()
            .filter(|m| *m != old)
            .collect();
        let mut new = None;
        for _ in 0..100 {
            madsim::time::sleep(Duration::from_millis(100)).await;
            new = others
                .iter()
                .copied()
                .find(|m| cluster.probe(*m).role == "leader");
            if new.is_some() {
                break;
            }
        }
        let new = new.expect("another member is elected");
        let written = cluster
            .spawn_client(pinned(&cluster, new), |c| async move {
                c.put(b"k", b"new").await
            })
            .await
            .expect("client");
        assert!(written.is_ok(), "the new leader acknowledges the write");
        cluster.apply(&Fault::Resume { node: old });
        let mut client = pinned(&cluster, old);
        client.op_timeout_ms = 1_000;
        client.attempt_timeout_ms = 1_000;
        let after = cluster
            .spawn_client(client, |c| async move { c.get(b"k").await })
            .await
            .expect("client");
        value(&after)
    })
}

#[test]
fn read_index_reused_etcd_20418_a_resumed_old_leader_answers_a_stale_read() {
    let correct = read_on_resumed_leader(PlantedBugs::default());
    assert_ne!(
        correct.as_deref(),
        Some("old"),
        "the correct store never answers the value overwritten by an acknowledged write"
    );
    let mut bugs = PlantedBugs::default();
    bugs.enable("read-index-reused").unwrap();
    assert_eq!(
        read_on_resumed_leader(bugs).as_deref(),
        Some("old"),
        "with the bug the old leader answers from before the pause"
    );
}
