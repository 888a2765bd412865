//! The backend on the simulated disk: a member's state lives in its db file, written by batch
//! commits; a restart opens the file and replays only the WAL after its consistent index; a
//! defragment really shrinks the file.

use std::time::Duration;

use faultline_sim::{simulate, Cluster, ClusterConfig, Fault};
use faultline_store::db::DbFile;
use faultline_store::node::backend::DB_FILE;
use faultline_store::node::client::{Client, Outcome};
use faultline_store::node::protocol::{ClientRequest, ClientResponse, NodeId};
use faultline_store::persist::db_consistent_index;
use faultline_store::{
    CompactionRequest, DeleteRangeRequest, Request, Response, Store, StoreConfig,
};

const SECOND: Duration = Duration::from_secs(1);

async fn put_keys(client: &Client, prefix: &str, range: std::ops::Range<u32>, value: &[u8]) {
    for i in range {
        let outcome = client
            .put(format!("{prefix}{i:05}").as_bytes(), value)
            .await;
        assert!(outcome.is_ok(), "put {prefix}{i}: {outcome:?}");
    }
}

async fn request_ok(client: &Client, member: NodeId, request: ClientRequest) -> ClientResponse {
    match client.request_member(member, request.clone()).await {
        Outcome::Ok(response) => response,
        other => panic!("{request:?} on n{member}: {other:?}"),
    }
}

async fn status(client: &Client, member: NodeId) -> faultline_store::StatusResponse {
    match request_ok(client, member, ClientRequest::Status).await {
        ClientResponse::Status(s) => s,
        other => panic!("status answered {other:?}"),
    }
}

/// The member's db file as a crash now would leave it, opened and restored alone.
fn durable_store(cluster: &Cluster, member: NodeId) -> Store {
    let bytes = cluster
        .disk(member)
        .durable_read(DB_FILE)
        .expect("the db file is durable");
    let db = DbFile::open(&bytes).expect("the durable db file opens");
    Store::from_db(StoreConfig::default(), &db).expect("the db file restores a store")
}

#[test]
fn a_restart_opens_the_db_file_and_replays_only_the_wal_after_its_consistent_index() {
    simulate(41, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(1));
        cluster.wait_for_leader(10 * SECOND).await.expect("leader");
        cluster
            .with_client(|c| async move { put_keys(&c, "a/", 0..40, b"v").await })
            .await;
        madsim::time::sleep(SECOND).await;
        let committed = durable_store(&cluster, 1);
        assert!(
            committed.consistent_index() > 0 && committed.current_revision() == 41,
            "batch commits made the writes durable in the db: index {} revision {}",
            committed.consistent_index(),
            committed.current_revision()
        );
        // Writes after the last commit are only in the WAL when the member crashes.
        cluster
            .with_client(|c| async move { put_keys(&c, "b/", 0..5, b"v").await })
            .await;
        let behind = durable_store(&cluster, 1);
        cluster.apply(&Fault::Crash {
            node: 1,
            torn: false,
        });
        cluster.apply(&Fault::Restart { node: 1 });
        madsim::time::sleep(3 * SECOND).await;
        cluster.wait_for_leader(10 * SECOND).await.expect("leader");
        let probe = cluster.probe(1);
        assert_eq!(
            probe.revision, 46,
            "the WAL replay brought back the writes after the db"
        );
        let recovered = cluster
            .trace()
            .recent()
            .into_iter()
            .rfind(|l| l.contains("recover"))
            .expect("a recover line");
        assert!(
            recovered.contains(&format!("applied={}", behind.consistent_index())),
            "the restart starts from the db's consistent index: {recovered}"
        );
    });
}

#[test]
fn defragment_rewrites_the_db_file_without_its_free_pages_and_the_file_shrinks() {
    simulate(42, || async {
        let mut cluster = Cluster::start(ClusterConfig::new(1));
        cluster.wait_for_leader(10 * SECOND).await.expect("leader");
        let value = vec![b'x'; 2000];
        let (before, after) = cluster
            .with_client(|c| async move {
                put_keys(&c, "big/", 0..200, &value).await;
                let deleted = c
                    .request(ClientRequest::Kv(Request::DeleteRange(
                        DeleteRangeRequest {
                            key: b"big/".to_vec(),
                            range_end: b"big0".to_vec(),
                            ..Default::default()
                        },
                    )))
                    .await;
                let revision = match deleted {
                    Outcome::Ok(ClientResponse::Kv(Response::DeleteRange(d))) => d.header.revision,
                    other => panic!("delete: {other:?}"),
                };
                let compacted = c
                    .request(ClientRequest::Kv(Request::Compact(CompactionRequest {
                        revision,
                        physical: true,
                    })))
                    .await;
                assert!(compacted.is_ok(), "compact: {compacted:?}");
                madsim::time::sleep(5 * SECOND).await;
                let before = status(&c, 1).await;
                request_ok(&c, 1, ClientRequest::Defragment).await;
                let after = status(&c, 1).await;
                (before, after)
            })
            .await;
        assert!(
            before.db_size_in_use < before.db_size / 2,
            "compaction freed most pages but the file kept them: {} of {}",
            before.db_size_in_use,
            before.db_size
        );
        assert!(
            after.db_size < before.db_size / 2,
            "defragment shrank the file: {} -> {}",
            before.db_size,
            after.db_size
        );
        assert_eq!(after.db_size, after.db_size_in_use);
        let file = cluster
            .disk(1)
            .durable_read(DB_FILE)
            .expect("the defragmented db file is durable");
        assert_eq!(
            file.len() as i64,
            after.db_size,
            "db size is the file's length"
        );
        let store = durable_store(&cluster, 1);
        assert_eq!(store.current_revision(), after.header.revision);
        assert_eq!(
            db_consistent_index(&DbFile::open(&file).unwrap()).unwrap(),
            store.consistent_index()
        );
    });
}
