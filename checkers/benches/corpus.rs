//! Times the linearizability checker over the shared corpus, next to porcupine's figures from
//! the corpus README. Run with `cargo bench -p faultline-checkers --bench corpus`; pass
//! `--runs N` to change the repetitions per file (the median is reported).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use faultline_checkers::corpus::{parse_jepsen_register, parse_kv};
use faultline_checkers::kv::Kv;
use faultline_checkers::linearizability::{check, decide, Budget, Model, Operation, Verdict};
use faultline_checkers::register::Register;

fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/corpus"));
    assert!(
        dir.join("verdicts.tsv").is_file(),
        "the shared corpus is missing: expected {} (../shared beside the repository)",
        dir.display()
    );
    dir
}

/// The median of `runs` timings of `f`, and its last result.
fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut times = Vec::with_capacity(runs);
    let mut result = None;
    for _ in 0..runs {
        let start = Instant::now();
        result = Some(std::hint::black_box(f()));
        times.push(start.elapsed());
    }
    times.sort_unstable();
    (times[times.len() / 2], result.expect("at least one run"))
}

fn word(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Linearizable(_) => "linearizable",
        Verdict::NotLinearizable(_) => "NOT linearizable",
        Verdict::Unknown(_) => "unknown",
    }
}

struct Row {
    file: String,
    ops: usize,
    decide: Duration,
    check: Duration,
    verdict: &'static str,
    expected: Option<bool>,
    detail: String,
}

/// The median times to decide and to check (decide, then explain a violation), the verdict in
/// a word, and a detail: the states a linearizable history took, or a violation's core.
fn measure<M: Model>(
    model: &M,
    history: &[Operation<M::Input, M::Output>],
    runs: usize,
) -> (Duration, Duration, &'static str, String) {
    let budget = Budget::default().with_timeout(Duration::from_secs(120));
    let (decide_time, decided) = time(runs, || decide(model, history, &budget));
    let (check_time, checked) = time(runs, || check(model, history, &budget));
    assert_eq!(word(&decided), word(&checked));
    let detail = match &checked {
        Verdict::Linearizable(witness) => format!("{} states", witness.states_explored),
        Verdict::NotLinearizable(v) => {
            let minimal = if v.minimal { "" } else { ", not minimal" };
            format!("core of {}{minimal}", v.core.len())
        }
        Verdict::Unknown(u) => format!("{} states", u.states_explored),
    };
    (decide_time, check_time, word(&checked), detail)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn main() {
    let mut runs = 5;
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--runs") {
        runs = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .expect("--runs N");
    }
    let dir = corpus_dir();
    let tsv = std::fs::read_to_string(dir.join("verdicts.tsv")).expect("verdicts.tsv");
    let mut rows = Vec::new();
    for line in tsv.lines().skip(1) {
        let mut fields = line.split('\t');
        let (Some(file), Some(expected)) = (fields.next(), fields.next()) else {
            continue;
        };
        let expected = match expected {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        };
        let text = std::fs::read_to_string(dir.join(file)).expect("a corpus file");
        let (ops, (decide, check, verdict, detail)) = if file.starts_with("jepsen/") {
            let history = parse_jepsen_register(&text).expect("a Jepsen log");
            (
                history.len(),
                measure(&Register::<i64>::new(), &history, runs),
            )
        } else {
            let history = parse_kv(&text).expect("a kv log");
            (history.len(), measure(&Kv::default(), &history, runs))
        };
        rows.push(Row {
            file: file.to_string(),
            ops,
            decide,
            check,
            verdict,
            expected,
            detail,
        });
    }

    println!(
        "median of {runs} runs per file; decide = verdict only, check = verdict + minimised \
         explanation"
    );
    println!(
        "{:<22} {:>5} {:>11} {:>11}  {:<17} detail",
        "file", "ops", "decide ms", "check ms", "verdict"
    );
    for row in &rows {
        let wrong = match row.expected {
            Some(e) if e != (row.verdict == "linearizable") => "  <-- WRONG",
            _ => "",
        };
        println!(
            "{:<22} {:>5} {:>11} {:>11}  {:<17} {}{wrong}",
            row.file,
            row.ops,
            ms(row.decide),
            ms(row.check),
            row.verdict,
            row.detail
        );
    }

    let jepsen: Vec<&Row> = rows
        .iter()
        .filter(|r| r.file.starts_with("jepsen/"))
        .collect();
    let total = |f: fn(&Row) -> Duration| jepsen.iter().map(|r| f(r)).sum::<Duration>();
    let mut decides: Vec<Duration> = jepsen.iter().map(|r| r.decide).collect();
    decides.sort_unstable();
    let mut slowest: Vec<&&Row> = jepsen.iter().collect();
    slowest.sort_by_key(|r| std::cmp::Reverse(r.decide));
    println!();
    println!(
        "Jepsen, {} logs: decide total {} ms, median file {} us; check total {} ms",
        jepsen.len(),
        ms(total(|r| r.decide)),
        decides[decides.len() / 2].as_micros(),
        ms(total(|r| r.check))
    );
    println!("  porcupine: about 310-360 ms total, median file about 70 us");
    println!(
        "  slowest: {}",
        slowest
            .iter()
            .take(4)
            .map(|r| format!("{} {} ms", r.file, ms(r.decide)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  porcupine: etcd_002 ~120 ms, etcd_007 ~85 ms, etcd_057 ~40 ms, etcd_099 ~35 ms");
    println!("kv, partitioned by key (decide / check):");
    for row in rows.iter().filter(|r| r.file.starts_with("kv/")) {
        println!(
            "  {:<14} {:>9} ms / {:>9} ms",
            row.file,
            ms(row.decide),
            ms(row.check)
        );
    }
    println!("  porcupine: c01 < 0.2 ms, c10 ~0.3 ms, c50-ok ~94-158 ms, c50-bad ~4-17 ms");
    let wrong = rows
        .iter()
        .filter(|r| {
            r.expected
                .is_some_and(|e| e != (r.verdict == "linearizable"))
        })
        .count();
    assert_eq!(wrong, 0, "{wrong} files got the wrong verdict");
}
