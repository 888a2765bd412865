//! The cost of a chaos run: wall time of `faultline run` for 60 simulated seconds, 3 members,
//! 8 clients, default faults, split into simulating and checking, with the number of operations
//! checked. Run with `cargo bench -p faultline --bench run`.

use faultline::check::judge_run;
use faultline::run::{simulate_run, RunConfig};

fn main() {
    for seed in [1u64, 2, 3] {
        let config = RunConfig {
            seed,
            duration_ms: 60_000,
            check_timeout_ms: 120_000,
            ..RunConfig::default()
        };
        // The wall clock, outside the simulation: what this benchmark measures.
        let started = std::time::Instant::now();
        let output = simulate_run(&config).expect("the run completes");
        let simulated = started.elapsed();
        let verdict = judge_run(&config, &output, &config.check_options());
        let checked = started.elapsed() - simulated;
        println!(
            "seed {seed}: {} operations, {} faults; simulate {:.3}s, check {:.3}s, total {:.3}s wall; verdict exit code {}",
            output.history.operations.len(),
            output.schedule.faults.len(),
            simulated.as_secs_f64(),
            checked.as_secs_f64(),
            (simulated + checked).as_secs_f64(),
            verdict.exit_code()
        );
    }
}
