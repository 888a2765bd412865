//! The etcd checkers on simulated histories of about 10k, 100k and 1M operations: wall time and
//! peak heap of the revision-guided checker (the default) next to the Wing & Gong search, each
//! under the same budget, measured in the same process on the same history.
//!
//! Run with `cargo bench -p faultline --bench etcd_check`; `-- --sizes 10k,100k,1m` picks the
//! histories (default `10k,100k`; the 1M one takes a few minutes to simulate) and
//! `-- --wgl-timeout SECS` the search's time budget (default 60).
//!
//! Each history comes from `faultline run` with default faults; the command that makes it is
//! printed with its figures, so it can be saved with `--out DIR` and checked again with
//! `faultline check DIR/history.json`.

use std::alloc::System;
use std::time::{Duration, Instant};

use faultline::run::{simulate_run, RunConfig};
use faultline_checkers::etcd::{self, Judgement};
use faultline_checkers::history::{History, Outcome};
use faultline_checkers::linearizability::Budget;
use faultline_workloads::traffic::WorkloadConfig;
use peakmem_alloc::{PeakMemAlloc, PeakMemAllocTrait, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs `f`, returning its result, its wall time and the most heap it held at once beyond what
/// was live when it started.
fn measure<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    GLOBAL.reset_peak_memory();
    let started = Instant::now();
    let result = std::hint::black_box(f());
    let elapsed = started.elapsed();
    (result, elapsed, GLOBAL.get_peak_memory())
}

struct Size {
    name: &'static str,
    duration_s: u64,
    clients: u32,
    rate: u32,
}

const SIZES: [Size; 3] = [
    Size {
        name: "10k",
        duration_s: 60,
        clients: 8,
        rate: 20,
    },
    Size {
        name: "100k",
        duration_s: 120,
        clients: 32,
        rate: 100,
    },
    Size {
        name: "1m",
        duration_s: 800,
        clients: 64,
        rate: 100,
    },
];

fn word(judgement: Judgement) -> &'static str {
    match judgement {
        Judgement::Pass => "PASS",
        Judgement::Fail => "FAIL",
        Judgement::Unknown => "UNKNOWN",
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn usage(message: &str) -> ! {
    eprintln!(
        "etcd_check: {message}\nusage: etcd_check [--sizes 10k,100k,1m] [--wgl-timeout SECS]"
    );
    std::process::exit(2)
}

fn main() {
    let mut sizes = vec!["10k".to_string(), "100k".to_string()];
    let mut wgl_timeout = Duration::from_secs(60);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sizes" => {
                let value = args
                    .next()
                    .unwrap_or_else(|| usage("--sizes needs a value"));
                sizes = value.split(',').map(str::to_string).collect();
            }
            "--wgl-timeout" => {
                let value = args
                    .next()
                    .unwrap_or_else(|| usage("--wgl-timeout needs seconds"));
                let secs = value
                    .parse::<u64>()
                    .unwrap_or_else(|_| usage(&format!("not a number of seconds: {value}")));
                wgl_timeout = Duration::from_secs(secs);
            }
            // Cargo passes --bench to every bench binary.
            "--bench" => {}
            other => usage(&format!("unknown argument {other}")),
        }
    }
    for name in &sizes {
        let Some(size) = SIZES.iter().find(|s| s.name == name.as_str()) else {
            usage(&format!("unknown size {name} (10k, 100k or 1m)"));
        };
        bench(size, wgl_timeout);
    }
}

fn bench(size: &Size, wgl_timeout: Duration) {
    let config = RunConfig {
        seed: 1,
        duration_ms: size.duration_s * 1_000,
        workload: WorkloadConfig {
            clients: size.clients,
            rate_per_client: size.rate,
            ..WorkloadConfig::default()
        },
        ..RunConfig::default()
    };
    let started = Instant::now();
    let output = simulate_run(&config).expect("the run completes");
    let history: History = output.history;
    let unknown = history
        .operations
        .iter()
        .filter(|op| op.outcome == Outcome::Unknown)
        .count();
    println!(
        "{}: {} operations ({unknown} unknown), simulated in {:.1}s; made by: {}",
        size.name,
        history.operations.len(),
        started.elapsed().as_secs_f64(),
        config.command()
    );
    let budget = || Budget::default().with_timeout(wgl_timeout);
    let (guided, guided_time, guided_peak) = measure(|| etcd::check(&history, budget()));
    println!(
        "  guided  {:8} {:>9.3}s  peak heap {:>10}  ({} revisions, {} filled, {} backtracks)",
        word(guided.judgement()),
        guided_time.as_secs_f64(),
        mib(guided_peak),
        guided.counts.revisions,
        guided.counts.filled,
        guided.counts.backtracks
    );
    let (wgl, wgl_time, wgl_peak) = measure(|| etcd::wgl::check(&history, budget()));
    println!(
        "  wgl     {:8} {:>9.3}s  peak heap {:>10}  (budget {}s, 4 GiB)",
        word(wgl.judgement()),
        wgl_time.as_secs_f64(),
        mib(wgl_peak),
        wgl_timeout.as_secs()
    );
    println!(
        "  ratio   wgl / guided: {:.0}x time, {:.0}x peak heap",
        wgl_time.as_secs_f64() / guided_time.as_secs_f64().max(1e-9),
        wgl_peak as f64 / guided_peak.max(1) as f64
    );
}
