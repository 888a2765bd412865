//! Scenarios of the replicated store under faults, named like specifications. Each runs a seeded
//! simulation and asserts what must hold.

use std::collections::BTreeMap;
use std::time::Duration;

use faultline_sim::{simulate, Cluster, ClusterConfig, Fault, MemberStatus};
use faultline_store::node::client::{Client, ClientConfig, Outcome};
use faultline_store::node::protocol::{ClientRequest, ClientResponse, NodeId};
use faultline_store::{RangeRequest, Request, Response};

const SECOND: Duration = Duration::from_secs(1);

/// Writes `key{i} = value{i}` for `range`, one after another; returns the acknowledged ones.
async fn write_keys(client: &Client, prefix: &str, range: std::ops::Range<u32>) -> Vec<u32> {
    let mut acked = Vec::new();
    for i in range {
        let outcome = client
            .put(
                format!("{prefix}{i:05}").as_bytes(),
                format!("v{i}").as_bytes(),
            )
            .await;
        if outcome.is_ok() {
            acked.push(i);
        }
    }
    acked
}

/// Reads every key under `prefix` linearizably (retrying until it succeeds).
async fn read_prefix(client: &Client, prefix: &str) -> BTreeMap<String, String> {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("prefix") += 1;
    let request = RangeRequest {
        key: prefix.as_bytes().to_vec(),
        range_end: end,
        ..Default::default()
    };
    for _ in 0..20 {
        if let Outcome::Ok(ClientResponse::Kv(Response::Range(r))) = client
            .request(ClientRequest::Kv(Request::Range(request.clone())))
            .await
        {
            return r
                .kvs
                .iter()
                .map(|kv| {
                    (
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        String::from_utf8_lossy(&kv.value).into_owned(),
                    )
                })
                .collect();
        }
        madsim::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no linearizable read of {prefix} succeeded");
}

fn assert_all_present(read: &BTreeMap<String, String>, prefix: &str, acked: &[u32]) {
    for i in acked {
        let key = format!("{prefix}{i:05}");
        assert_eq!(
            read.get(&key).map(String::as_str),
            Some(format!("v{i}").as_str()),
            "acknowledged {key} lost"
        );
    }
}

fn pinned(cluster: &Cluster, member: NodeId) -> ClientConfig {
    let mut config = cluster.client_config();
    config.members = vec![member];
    config
}

#[test]
fn leader_crash_a_new_leader_is_elected_and_every_acknowledged_write_survives() {
    simulate(11, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        let first = cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        let before = cluster
            .with_client(|c| async move { write_keys(&c, "a/", 0..30).await })
            .await;
        assert_eq!(
            before.len(),
            30,
            "a healthy cluster acknowledges every write"
        );
        cluster.apply(&Fault::Crash {
            node: first,
            torn: true,
        });
        madsim::time::sleep(3 * SECOND).await;
        let second = cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a new leader");
        assert_ne!(second, first);
        let after = cluster
            .with_client(|c| async move { write_keys(&c, "b/", 0..30).await })
            .await;
        assert!(
            after.len() >= 25,
            "the new leader serves writes: {} acked",
            after.len()
        );
        cluster.apply(&Fault::Restart { node: first });
        let (a, b) = cluster
            .with_client(
                |c| async move { (read_prefix(&c, "a/").await, read_prefix(&c, "b/").await) },
            )
            .await;
        assert_all_present(&a, "a/", &before);
        assert_all_present(&b, "b/", &after);
    });
}

#[test]
fn minority_partition_isolating_the_leader_fails_its_requests_while_the_majority_serves_and_it_catches_up_after_healing(
) {
    simulate(12, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        let old = cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        cluster
            .with_client(|c| async move { write_keys(&c, "p/", 0..5).await })
            .await;
        cluster.apply(&Fault::Isolate { node: old });
        let minority = pinned(&cluster, old);
        let (read, write) = cluster
            .spawn_client(minority, |c| async move {
                let read = c.get(b"p/00000").await;
                let write = c.put(b"minority", b"x").await;
                (read, write)
            })
            .await
            .expect("client");
        assert!(
            !read.is_ok(),
            "a linearizable read on the minority side must not succeed: {read:?}"
        );
        assert!(
            !write.is_ok(),
            "a write on the minority side must not succeed: {write:?}"
        );
        let majority: Vec<NodeId> = cluster
            .member_ids()
            .into_iter()
            .filter(|m| *m != old)
            .collect();
        let new = cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("majority elects");
        assert!(
            majority.contains(&new),
            "the leader is on the majority side"
        );
        let mut config = cluster.client_config();
        config.members = majority;
        let acked = cluster
            .spawn_client(config, |c| async move { write_keys(&c, "q/", 0..20).await })
            .await
            .expect("client");
        assert_eq!(acked.len(), 20, "the majority serves every write");
        cluster.apply(&Fault::Heal);
        let leader_applied = cluster.probe(new).applied;
        assert!(
            cluster.wait_for_applied(leader_applied, 10 * SECOND).await,
            "the minority caught up"
        );
        let read = cluster
            .spawn_client(pinned(&cluster, old), |c| async move {
                read_prefix(&c, "q/").await
            })
            .await
            .expect("client");
        assert_all_present(&read, "q/", &acked);
        if let Outcome::Ok(_) = write {
            unreachable!()
        }
    });
}

#[test]
fn a_crash_loses_unsynced_disk_writes_but_never_an_acknowledged_write() {
    simulate(13, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        let mut config = cluster.client_config();
        config.op_timeout_ms = 3_000;
        let writer = cluster.spawn_client(
            config,
            |c| async move { write_keys(&c, "c/", 0..400).await },
        );
        for round in 0..6 {
            madsim::time::sleep(Duration::from_millis(700)).await;
            let victim = (round % 3) + 1;
            cluster.apply(&Fault::Crash {
                node: victim,
                torn: true,
            });
            madsim::time::sleep(Duration::from_millis(300)).await;
            cluster.apply(&Fault::Restart { node: victim });
        }
        let lost = cluster
            .trace()
            .recent()
            .iter()
            .filter(|l| l.contains(" crashed: ") && !l.contains(": 0 bytes lost"))
            .count();
        let acked = writer.await.expect("writer");
        assert!(
            acked.len() > 100,
            "writes went on between crashes: {}",
            acked.len()
        );
        println!(
            "acked {} writes, {lost} crashes lost unsynced bytes",
            acked.len()
        );
        assert!(
            lost > 0,
            "no crash lost an unsynced write, so this test proves nothing"
        );
        cluster.heal_all();
        let read = cluster
            .with_client(|c| async move { read_prefix(&c, "c/").await })
            .await;
        assert_all_present(&read, "c/", &acked);
    });
}

#[test]
fn a_follower_far_behind_receives_and_installs_a_snapshot() {
    simulate(14, || async {
        let mut config = ClusterConfig::new(3);
        config.node.snapshot_entries = 100;
        config.node.catchup_entries = 20;
        let mut cluster = Cluster::start(config);
        let leader = cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        let lagging = cluster
            .member_ids()
            .into_iter()
            .find(|m| *m != leader)
            .expect("a follower");
        cluster.apply(&Fault::Isolate { node: lagging });
        let acked = cluster
            .with_client(|c| async move { write_keys(&c, "s/", 0..300).await })
            .await;
        assert!(acked.len() >= 290);
        assert!(
            cluster.probe(leader).snapshots_made >= 2,
            "the leader compacted its log"
        );
        cluster.apply(&Fault::Heal);
        let target = cluster.probe(cluster.leader().expect("leader")).applied;
        assert!(
            cluster.wait_for_applied(target, 20 * SECOND).await,
            "the follower caught up"
        );
        let state = cluster.probe(lagging);
        println!("lagging follower: {state:?}");
        assert!(
            state.snapshots_installed >= 1,
            "the follower caught up from a snapshot: {state:?}"
        );
        let leader_state = cluster.probe(cluster.leader().expect("leader"));
        assert_eq!(state.revision, leader_state.revision);
        assert_eq!(
            state.hash, leader_state.hash,
            "the installed state equals the leader's"
        );
    });
}

#[test]
fn all_members_restart_at_once_and_every_hashkv_equals_its_value_before() {
    simulate(15, || async {
        let mut config = ClusterConfig::new(3);
        config.node.snapshot_entries = 50;
        let mut cluster = Cluster::start(config);
        cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        let acked = cluster
            .with_client(|c| async move { write_keys(&c, "r/", 0..120).await })
            .await;
        let leader = cluster.leader().expect("leader");
        let applied = cluster.probe(leader).applied;
        assert!(cluster.wait_for_applied(applied, 10 * SECOND).await);
        let before: Vec<(i64, u64)> = cluster
            .member_ids()
            .iter()
            .map(|m| (cluster.probe(*m).revision, cluster.probe(*m).hash))
            .collect();
        assert!(
            before.windows(2).all(|w| w[0] == w[1]),
            "members agree before: {before:?}"
        );
        for node in cluster.member_ids() {
            cluster.apply(&Fault::Crash { node, torn: false });
        }
        for node in cluster.member_ids() {
            cluster.apply(&Fault::Restart { node });
        }
        cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader after the restart");
        let leader = cluster.leader().expect("leader");
        let applied = cluster.probe(leader).applied;
        assert!(cluster.wait_for_applied(applied, 10 * SECOND).await);
        let after: Vec<(i64, u64)> = cluster
            .member_ids()
            .iter()
            .map(|m| (cluster.probe(*m).revision, cluster.probe(*m).hash))
            .collect();
        assert_eq!(
            before, after,
            "every member's revision and HashKV survive a full restart"
        );
        let read = cluster
            .with_client(|c| async move { read_prefix(&c, "r/").await })
            .await;
        assert_all_present(&read, "r/", &acked);
        assert!(cluster
            .member_ids()
            .iter()
            .all(|m| cluster.status(*m) == MemberStatus::Up));
    });
}

#[test]
fn a_disk_stall_on_the_leader_delays_commits_and_the_cluster_stays_correct() {
    simulate(16, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        let leader = cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader");
        let fast = cluster
            .with_client(|c| async move {
                let start = faultline_store::node::time::now();
                assert!(c.put(b"before", b"1").await.is_ok());
                start.elapsed()
            })
            .await;
        cluster.apply(&Fault::DiskStall {
            node: leader,
            ms: 4_000,
        });
        let (slow, outcome) = cluster
            .with_client(|c| async move {
                let start = faultline_store::node::time::now();
                let outcome = c.put(b"during", b"2").await;
                (start.elapsed(), outcome)
            })
            .await;
        println!("put before the stall {fast:?}, during {slow:?}: {outcome:?}");
        assert!(
            slow > fast * 10 || !outcome.is_ok(),
            "a write during the leader's stall is delayed ({fast:?} before, {slow:?} during) or fails"
        );
        madsim::time::sleep(5 * SECOND).await;
        cluster
            .wait_for_leader(10 * SECOND)
            .await
            .expect("a leader after the stall");
        let read = cluster
            .with_client(|c| async move { read_prefix(&c, "before").await })
            .await;
        assert_eq!(read.get("before").map(String::as_str), Some("1"));
        let leader = cluster.leader().expect("leader");
        let applied = cluster.probe(leader).applied;
        assert!(cluster.wait_for_applied(applied, 10 * SECOND).await);
        let hashes: Vec<u64> = cluster
            .member_ids()
            .iter()
            .map(|m| cluster.probe(*m).hash)
            .collect();
        assert!(
            hashes.windows(2).all(|w| w[0] == w[1]),
            "replicas converge: {hashes:?}"
        );
    });
}
