//! Failures found by swarm sweeps, shrunk, fixed, and kept: each replays its shrunk schedule
//! (`ci/tests/fixtures/`, where each one's story is told) and must pass.

mod common;

use common::{judge, replay};
use faultline::profile::Profile;
use faultline::run::RunConfig;

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
