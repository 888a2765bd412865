//! Maintenance traffic: defragments, as an operator's cron job runs them. Not part of the
//! history (etcd's Defragment is member-local and changes no key), but it rewrites the member's
//! db file under load, which is where etcd's defragment bugs live.

use std::time::Duration;

use faultline_store::node::client::{Client, Outcome};
use faultline_store::node::protocol::{ClientRequest, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::target::Clock;
use crate::traffic::client_seed;

/// Every `every_ms` (jittered by up to half of it), defragments one member drawn from the
/// client's own generator, until `until` on `clock`. Returns how many defragments succeeded.
pub async fn defragmenter(
    client: Client,
    members: Vec<NodeId>,
    every_ms: u64,
    client_id: u64,
    seed: u64,
    clock: Clock,
    until: Duration,
) -> u64 {
    if every_ms == 0 || members.is_empty() {
        return 0;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(client_seed(seed, client_id));
    let mut done = 0;
    loop {
        let jitter = rng.gen_range(0..=every_ms / 2);
        clock.sleep(Duration::from_millis(every_ms + jitter)).await;
        if clock.elapsed() >= until {
            return done;
        }
        let member = members[rng.gen_range(0..members.len())];
        if let Outcome::Ok(_) = client
            .request_member(member, ClientRequest::Defragment)
            .await
        {
            done += 1;
        }
    }
}
