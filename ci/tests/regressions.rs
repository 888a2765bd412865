//! Failures found by swarm sweeps, shrunk, fixed, and kept: each replays its shrunk schedule
//! (`ci/tests/fixtures/`, where each one's story is told) and must pass.

mod common;

use common::{judge, replay};
use faultline::profile::Profile;
use faultline::run::RunConfig;
use faultline_workloads::traffic::OpMix;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn passes(config: &RunConfig) {
    let verdict = judge(config);
    assert!(
        verdict.passed(),
        "{}\nreplay: {}",
        verdict.render(),
        replay(config)
    );
}

/// A paused, cut-off leader resumed and confirmed a read with a follower's late acknowledgement
/// of a forwarded read whose ReadIndex context was the same number.
#[test]
fn a_late_heartbeat_acknowledgement_confirms_no_other_member_s_read() {
    let mut config = Profile::parse("leader-pause")
        .expect("a known profile")
        .config(122);
    config.duration_ms = 7_900;
    config.workload.keys = 9;
    config.schedule_file = Some(fixture("read-context-collision.schedule.json"));
    passes(&config);
}

/// A member that crashed before saving the leader's snapshot was never sent another: the
/// leader's raft-rs progress waited for a snapshot report that never came.
#[test]
fn a_member_that_lost_the_snapshot_it_was_sent_is_sent_another() {
    let mut config = RunConfig {
        seed: 65,
        duration_ms: 6_600,
        snapshot_entries: 100,
        ..RunConfig::default()
    };
    config.workload.clients = 6;
    config.workload.rate_per_client = 10;
    config.workload.keys = 1;
    config.workload.mix = OpMix::parse("put=20,delete=20").expect("a mix");
    config.workload.compact_every_ms = 500;
    config.workload.watchers = 4;
    config.schedule_file = Some(fixture("lost-snapshot.schedule.json"));
    passes(&config);
}
