//! How fast the simulated world runs: simulated seconds per wall second for a 3-member cluster,
//! idle and under a steady load of 1,000 puts per simulated second. Run with
//! `cargo bench -p faultline-sim --bench sim_speed`; it prints one line per figure, and the loaded
//! run's speed as a ratio of the idle run's (measured in the same process).

use std::time::Duration;

use faultline_sim::{simulate, Cluster, ClusterConfig};

const SIMULATED: Duration = Duration::from_secs(60);

/// Runs a 3-member cluster for `SIMULATED` with `writers` clients each putting every
/// `period_ms`; returns (puts acknowledged, wall seconds).
fn run(seed: u64, writers: u32, period_ms: u64) -> (u64, f64) {
    // The wall clock, outside the simulation: what this benchmark measures.
    let wall = std::time::Instant::now();
    let acked = simulate(seed, move || async move {
        let mut cluster = Cluster::start(ClusterConfig::new(3));
        cluster
            .wait_for_leader(Duration::from_secs(10))
            .await
            .expect("a leader");
        let start = faultline_store::node::time::now();
        let mut tasks = Vec::new();
        for w in 0..writers {
            let config = cluster.client_config();
            tasks.push(cluster.spawn_client(config, move |client| async move {
                let mut acked = 0u64;
                let mut next = faultline_store::node::time::now();
                let mut i = 0u64;
                while next.duration_since(start) < SIMULATED {
                    let key = format!("w{w}/{}", i % 50);
                    if client.put(key.as_bytes(), &i.to_le_bytes()).await.is_ok() {
                        acked += 1;
                    }
                    i += 1;
                    next += Duration::from_millis(period_ms);
                    let now = faultline_store::node::time::now();
                    if next > now {
                        madsim::time::sleep(next - now).await;
                    }
                }
                acked
            }));
        }
        let elapsed = faultline_store::node::time::now().duration_since(start);
        if elapsed < SIMULATED {
            madsim::time::sleep(SIMULATED - elapsed).await;
        }
        let mut acked = 0;
        for task in tasks {
            acked += task.await.expect("writer");
        }
        acked
    });
    (acked, wall.elapsed().as_secs_f64())
}

fn main() {
    let simulated = SIMULATED.as_secs_f64();
    let (_, idle_wall) = run(1, 0, 1_000);
    let idle_speed = simulated / idle_wall;
    println!("idle 3-member cluster: {simulated:.0} simulated s in {idle_wall:.3} wall s = {idle_speed:.0} simulated s per wall s");
    // 40 writers, one put each every 40 ms: 1,000 puts per simulated second offered.
    let (acked, loaded_wall) = run(2, 40, 40);
    let loaded_speed = simulated / loaded_wall;
    println!(
        "1,000 puts/s offered: {acked} acknowledged ({:.0}/s), {simulated:.0} simulated s in {loaded_wall:.3} wall s = {loaded_speed:.1} simulated s per wall s",
        acked as f64 / simulated
    );
    println!(
        "loaded / idle speed ratio: {:.4}",
        loaded_speed / idle_speed
    );
}
