use std::time::Duration;

use faultline_sim::{simulate, Cluster, ClusterConfig};
use faultline_store::node::protocol::ClientResponse;
use faultline_store::Response;

#[test]
fn a_three_member_cluster_elects_a_leader_and_serves_writes() {
    simulate(1, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        let leader = cluster.wait_for_leader(Duration::from_secs(10)).await;
        assert!(
            leader.is_some(),
            "no leader: {:?}",
            cluster.trace().recent()
        );
        let got = cluster
            .with_client(|c| async move {
                let put = c.put(b"k", b"v").await;
                assert!(put.is_ok(), "{put:?}");
                c.get(b"k").await
            })
            .await;
        let Some(ClientResponse::Kv(Response::Range(r))) = got.ok() else {
            panic!("{got:?}")
        };
        assert_eq!(r.kvs[0].value, b"v");
        for line in cluster.trace().recent() {
            println!("{line}");
        }
    });
}
