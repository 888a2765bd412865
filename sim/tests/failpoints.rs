//! Crash points as faults: an armed point crashes or stalls its member where the shell reaches
//! it, the trace says so, the harness keeps the member's status right, and clearing a point says
//! how it went and brings back a member it crashed.

use std::time::Duration;

use faultline_sim::{simulate, Cluster, ClusterConfig, Fault, MemberStatus};
use faultline_store::node::client::Client;
use faultline_store::node::failpoint::FailAction;
use faultline_store::node::protocol::NodeId;

const SECOND: Duration = Duration::from_secs(1);

/// Writes `{prefix}{i}` for `range`, one after another; returns how many were acknowledged.
async fn write_keys(client: &Client, prefix: &str, range: std::ops::Range<u32>) -> usize {
    let mut acked = 0;
    for i in range {
        let outcome = client.put(format!("{prefix}{i:05}").as_bytes(), b"v").await;
        if outcome.is_ok() {
            acked += 1;
        }
    }
    acked
}

/// Writes as [`write_keys`] does, from a client that knows every member but `avoid` (a write
/// sent to a member that crashes under it has an unknown outcome).
async fn write_avoiding(
    cluster: &mut Cluster,
    avoid: NodeId,
    prefix: &'static str,
    range: std::ops::Range<u32>,
) -> usize {
    let mut config = cluster.client_config();
    config.members.retain(|m| *m != avoid);
    cluster
        .spawn_client(config, move |c| async move {
            write_keys(&c, prefix, range).await
        })
        .await
        .expect("the client task completes")
}

/// A member that does not lead (the cluster keeps its quorum without it).
async fn a_follower(cluster: &Cluster) -> NodeId {
    let leader = cluster.wait_for_leader(5 * SECOND).await.expect("a leader");
    cluster
        .member_ids()
        .into_iter()
        .find(|m| *m != leader)
        .expect("a follower")
}

/// Trace lines a member's own code wrote (`n2 ...`), apart from the harness's lines about it.
fn member_lines(trace: &[String], node: NodeId) -> usize {
    let prefix = format!("n{node} ");
    trace
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .filter(|l| {
            !l.contains(" crashed") && !l.contains(" failpoint ") && !l.contains(" restarting")
        })
        .count()
}

/// The member has caught up with the leader: the same applied index, revision and hash.
async fn assert_caught_up(cluster: &Cluster, node: NodeId) {
    let leader = cluster.wait_for_leader(5 * SECOND).await.expect("a leader");
    let target = cluster.probe(leader).applied;
    assert!(
        cluster.wait_for_applied(target, 10 * SECOND).await,
        "n{node} did not catch up to {target}: {:?}",
        cluster.probe(node)
    );
    madsim::time::sleep(SECOND).await;
    let (theirs, ours) = (cluster.probe(leader), cluster.probe(node));
    assert!(ours.applied >= target);
    assert_eq!(ours.revision, theirs.revision);
    assert_eq!(ours.hash, theirs.hash);
}

/// raftAfterSave on a follower, third hit: the follower crashes right after a WAL save, the other
/// two keep acknowledging writes, and clearing the point restarts it from its disk; it catches up.
/// Returns the trace hash.
fn crash_at_raft_after_save(seed: u64) -> u64 {
    simulate(seed, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        let node = a_follower(&cluster).await;
        cluster.apply(&Fault::Failpoint {
            node,
            point: "raftAfterSave".into(),
            hit: 3,
            action: FailAction::Crash,
        });
        let acked = write_avoiding(&mut cluster, node, "a/", 0..20).await;
        assert_eq!(acked, 20, "the two others keep serving");
        assert_eq!(cluster.status(node), MemberStatus::Crashed);
        let trace = cluster.trace().recent();
        let crash_line = format!("n{node} crashed at failpoint raftAfterSave:");
        let at = trace
            .iter()
            .position(|l| l.starts_with(&crash_line))
            .unwrap_or_else(|| panic!("no {crash_line:?} in {trace:#?}"));
        let arming = &cluster.failpoint_armings()[0];
        assert!(arming.triggered && arming.reached == 3, "{arming:?}");
        assert!(arming.crashed_at_ms.is_some() && arming.cleared_at_ms.is_none());

        // The member is dead: it applies nothing and writes no trace line of its own.
        let applied = cluster.probe(node).applied;
        let before = member_lines(&trace[at..], node);
        let acked = write_avoiding(&mut cluster, node, "b/", 0..20).await;
        assert_eq!(acked, 20);
        madsim::time::sleep(SECOND).await;
        assert_eq!(cluster.probe(node).applied, applied);
        let trace = cluster.trace().recent();
        assert_eq!(member_lines(&trace[at..], node), before);

        cluster.apply(&Fault::ClearFailpoint {
            node,
            point: "raftAfterSave".into(),
        });
        let trace = cluster.trace().recent();
        assert!(trace.contains(&format!(
            "n{node} failpoint raftAfterSave cleared: triggered (crash) on hit 3"
        )));
        assert_eq!(cluster.status(node), MemberStatus::Up);
        assert_caught_up(&cluster, node).await;
        assert!(cluster.failpoint_reaches()[&node]["raftAfterSave"] >= 3);
        cluster.trace().hash()
    })
}

#[test]
fn raft_after_save_crashes_a_follower_there_the_cluster_serves_and_it_recovers_and_catches_up() {
    assert_eq!(crash_at_raft_after_save(3), crash_at_raft_after_save(3));
}

#[test]
fn a_point_reached_in_the_members_own_task_kills_that_member_and_a_restart_recovers_it() {
    simulate(5, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        let node = a_follower(&cluster).await;
        write_avoiding(&mut cluster, node, "a/", 0..5).await;
        cluster.apply(&Fault::Failpoint {
            node,
            point: "defragBeforeRename".into(),
            hit: 1,
            action: FailAction::Crash,
        });
        // Reach the point from a task of the member's own madsim node, as its shell would.
        let points = cluster.failpoints(node).clone();
        let member = madsim::runtime::Handle::current()
            .get_node(format!("n{node}"))
            .expect("the member's node");
        let reached = member.spawn(async move { points.reach("defragBeforeRename").await });
        madsim::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(cluster.status(node), MemberStatus::Crashed);
        let applied = cluster.probe(node).applied;
        let acked = write_avoiding(&mut cluster, node, "b/", 0..20).await;
        assert_eq!(acked, 20);
        assert_eq!(
            cluster.probe(node).applied,
            applied,
            "a killed member applies nothing"
        );
        assert!(cluster
            .trace()
            .recent()
            .iter()
            .any(|l| l.starts_with(&format!("n{node} crashed at failpoint defragBeforeRename:"))));
        // The task never returns from the point: it is dropped with its node.
        let after = madsim::time::timeout(SECOND, reached).await;
        assert!(!matches!(after, Ok(Ok(()))), "{after:?}");

        // A plain restart (no clear) brings it back too; the triggered point stays inert.
        cluster.apply(&Fault::Restart { node });
        assert_eq!(cluster.status(node), MemberStatus::Up);
        assert_caught_up(&cluster, node).await;
        let arming = &cluster.failpoint_armings()[0];
        assert!(
            arming.triggered && arming.crashed_at_ms.is_some(),
            "{arming:?}"
        );
        // Clearing it later leaves the running member alone.
        cluster.apply(&Fault::ClearFailpoint {
            node,
            point: "defragBeforeRename".into(),
        });
        assert_eq!(cluster.status(node), MemberStatus::Up);
        assert!(!cluster
            .trace()
            .recent()
            .iter()
            .any(|l| l.starts_with(&format!("n{node} restarting"))));
    });
}

#[test]
fn a_point_armed_but_never_reached_is_reported_as_never_reached_and_leaves_the_member_running() {
    simulate(7, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        let node = a_follower(&cluster).await;
        for point in ["defragBeforeCopy", "applyBeforeOpenSnapshot"] {
            cluster.apply(&Fault::Failpoint {
                node,
                point: point.into(),
                hit: 2,
                action: FailAction::Sleep { ms: 500 },
            });
        }
        let acked = write_avoiding(&mut cluster, node, "a/", 0..10).await;
        assert_eq!(acked, 10);
        cluster.apply(&Fault::ClearFailpoint {
            node,
            point: "defragBeforeCopy".into(),
        });
        assert!(cluster.trace().recent().contains(&format!(
            "n{node} failpoint defragBeforeCopy cleared: never reached"
        )));
        assert_eq!(cluster.status(node), MemberStatus::Up);
        let armings = cluster.failpoint_armings();
        assert_eq!(armings.len(), 2);
        assert!(armings.iter().all(|a| a.reached == 0 && !a.triggered));
        assert!(armings[0].cleared_at_ms.is_some());
        assert!(armings[1].cleared_at_ms.is_none(), "still armed");
        assert!(!cluster.failpoint_reaches()[&node].contains_key("defragBeforeCopy"));
        // Healing clears what is still armed.
        cluster.heal_all();
        assert!(cluster
            .failpoint_armings()
            .iter()
            .all(|a| a.cleared_at_ms.is_some()));
        assert!(cluster
            .failpoints(node)
            .armed("applyBeforeOpenSnapshot")
            .is_none());
        assert_eq!(cluster.status(node), MemberStatus::Up);
    });
}

#[test]
fn a_fault_naming_an_unknown_point_or_member_is_refused_with_a_clear_error() {
    simulate(1, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        let events = cluster.trace().events();
        let unknown_point = Fault::Failpoint {
            node: 1,
            point: "raftAfterSav".into(),
            hit: 1,
            action: FailAction::Crash,
        };
        let error = cluster.try_apply(&unknown_point).unwrap_err().to_string();
        assert!(error.contains("\"raftAfterSav\""), "{error}");
        assert!(error.contains("faultline failpoints"), "{error}");
        let error = cluster
            .try_apply(&Fault::ClearFailpoint {
                node: 9,
                point: "raftAfterSave".into(),
            })
            .unwrap_err()
            .to_string();
        assert!(error.contains("no member n9"), "{error}");
        assert_eq!(cluster.trace().events(), events, "nothing was applied");
        assert!(cluster.faults().is_empty());
    });
}
