//! Judging a run: every checker's verdict on its history and ground truth, in one report.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use faultline_checkers::history::{History, Outcome};
use faultline_checkers::watch::{WatchHistory, WatchItem};
use faultline_store::node::protocol::NodeId;

use crate::run::{RunConfig, SimOutput};

/// Checker options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Wall-time budget of the linearizability search.
    pub timeout_ms: u64,
    /// The most memory the linearizability search may hold at once.
    pub max_bytes: usize,
}

impl CheckOptions {
    /// The linearizability search's budget.
    pub fn budget(&self) -> faultline_checkers::linearizability::Budget {
        faultline_checkers::linearizability::Budget::states(1 << 23)
            .with_timeout(std::time::Duration::from_millis(self.timeout_ms))
            .with_max_bytes(self.max_bytes)
    }
}

/// One checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// A broken safety property, with the explanation.
    Violation(String),
    /// A liveness failure.
    Stuck(String),
    /// The checker could not decide (budget).
    Unknown(String),
    /// A member panicked: a broken invariant of the store or of Raft, found by the run.
    Panicked(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckerResult {
    pub checker: &'static str,
    pub status: Status,
    /// One line of what was checked.
    pub summary: String,
}

/// Everything said about a run (or a history).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunVerdict {
    pub header: Vec<String>,
    pub results: Vec<CheckerResult>,
    pub safety_violations: usize,
    pub liveness_failures: usize,
    pub unknown: usize,
    pub member_panics: usize,
    pub footer: Vec<String>,
}

impl RunVerdict {
    /// Adds a verdict, counted by its kind.
    pub fn push(&mut self, result: CheckerResult) {
        match result.status {
            Status::Violation(_) => self.safety_violations += 1,
            Status::Stuck(_) => self.liveness_failures += 1,
            Status::Unknown(_) => self.unknown += 1,
            Status::Panicked(_) => self.member_panics += 1,
            Status::Pass => {}
        }
        self.results.push(result);
    }

    /// The process exit code: safety first, then a member's panic, then liveness, then unknown.
    pub fn exit_code(&self) -> u8 {
        if self.safety_violations > 0 {
            1
        } else if self.member_panics > 0 {
            6
        } else if self.liveness_failures > 0 {
            3
        } else if self.unknown > 0 {
            5
        } else {
            0
        }
    }

    /// Whether every checker passed.
    pub fn passed(&self) -> bool {
        self.exit_code() == 0
    }

    /// The report a person reads.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.header {
            let _ = writeln!(out, "{line}");
        }
        for r in &self.results {
            let status = match &r.status {
                Status::Pass => "PASS".to_string(),
                Status::Violation(_) => "VIOLATION".to_string(),
                Status::Stuck(_) => "LIVENESS FAILURE".to_string(),
                Status::Unknown(_) => "UNKNOWN".to_string(),
                Status::Panicked(_) => "PANIC".to_string(),
            };
            let _ = writeln!(out, "  {:<22} {status:<16} {}", r.checker, r.summary);
            if let Status::Violation(text)
            | Status::Stuck(text)
            | Status::Unknown(text)
            | Status::Panicked(text) = &r.status
            {
                for line in text.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
        let verdict = match self.exit_code() {
            0 => "PASS: every check held",
            1 => "FAIL: safety violation",
            3 => "FAIL: liveness failure",
            6 => "FAIL: a member panicked",
            _ => "UNKNOWN: a checker could not decide",
        };
        let _ = writeln!(out, "verdict: {verdict}");
        for line in &self.footer {
            let _ = writeln!(out, "{line}");
        }
        out
    }
}

fn count(history: &History) -> (usize, usize, usize) {
    let mut counts = (0, 0, 0);
    for op in &history.operations {
        match op.outcome {
            Outcome::Ok { .. } => counts.0 += 1,
            Outcome::Failed { .. } => counts.1 += 1,
            Outcome::Unknown => counts.2 += 1,
        }
    }
    counts
}

/// Linearizability (with revisions) and stale reads, on the history alone.
fn linearizability(history: &History, options: &CheckOptions) -> CheckerResult {
    use faultline_checkers::etcd::{self, Judgement};
    let report = etcd::check(history, options.budget());
    let c = &report.counts;
    let summary = format!(
        "{} revisions ({} filled by unknown writes or revokes), {} read at a past revision, {} unknown outcomes",
        c.revisions, c.filled, c.revision_reads, c.unknown
    );
    let status = match report.judgement() {
        Judgement::Pass => Status::Pass,
        Judgement::Fail => Status::Violation(report.render()),
        Judgement::Unknown => Status::Unknown(report.render()),
    };
    CheckerResult {
        checker: "linearizability",
        status,
        summary,
    }
}

/// Totals over a run's watches: (watches, events, resumes, compaction cancels, progress).
fn watch_totals(history: &WatchHistory) -> (usize, usize, usize, usize, usize) {
    let mut totals = (history.watches.len(), 0, 0, 0, 0);
    for w in &history.watches {
        for item in &w.items {
            match item {
                WatchItem::Events { events, .. } => totals.1 += events.len(),
                WatchItem::Resumed { .. } => totals.2 += 1,
                WatchItem::Compacted { .. } => totals.3 += 1,
                WatchItem::Progress { .. } => totals.4 += 1,
            }
        }
    }
    totals
}

/// Every watch guarantee, judged against the run's ground truth.
fn watches(output: &SimOutput) -> CheckerResult {
    let report = faultline_checkers::watch::check(&output.watches, &output.committed);
    let (watches, events, resumes, cancels, progress) = watch_totals(&output.watches);
    let summary = format!(
        "{watches} watches: {events} events, {resumes} resumes, {cancels} compaction cancels, {progress} progress notifications"
    );
    let status = if report.passed() {
        Status::Pass
    } else {
        Status::Violation(report.render())
    };
    CheckerResult {
        checker: "watch",
        status,
        summary,
    }
}

/// The black-box reconstruction of the committed history (from the client history and the watch
/// streams alone) must agree with the ground truth wherever it knows an event.
fn reconstruction(output: &SimOutput) -> CheckerResult {
    let truth = &output.committed;
    let (status, summary) =
        match faultline_checkers::watch::reconstruct(&output.history, &output.watches) {
            Err(e) => (
                Status::Violation(e.to_string()),
                "the streams contradict each other".to_string(),
            ),
            Ok(rebuilt) => {
                let disagreements: Vec<String> = rebuilt
                    .revisions
                    .iter()
                    .filter(|(rev, events)| match truth.revisions.get(rev) {
                        // Every event rebuilt agrees with the committed one of its key (a
                        // revision rebuilt from acknowledged writes alone may lack the events
                        // of a range delete in the same txn).
                        Some(committed) => !events.iter().all(|event| {
                            committed.iter().any(|c| {
                                let prev_known = !rebuilt
                                    .guessed_prev
                                    .contains(&(**rev, event.kv.key.clone()));
                                c.kv.key == event.kv.key && event.agrees_with(c, prev_known)
                            })
                        }),
                        None => true,
                    })
                    .take(5)
                    .map(|(rev, events)| {
                        format!(
                            "revision {rev}: reconstructed {events:?}, committed {:?}",
                            truth.revisions.get(rev)
                        )
                    })
                    .collect();
                let summary = format!(
                    "{} of {} committed revisions reconstructed from clients and watchers",
                    rebuilt.revisions.len(),
                    truth.revisions.len()
                );
                if disagreements.is_empty() && output.commit_mismatches == 0 {
                    (Status::Pass, summary)
                } else {
                    let mut text = disagreements.join("\n");
                    if output.commit_mismatches > 0 {
                        text.push_str(&format!(
                            "\nmembers applied {} revisions differently",
                            output.commit_mismatches
                        ));
                    }
                    (Status::Violation(text), summary)
                }
            }
        };
    CheckerResult {
        checker: "watch ground truth",
        status,
        summary,
    }
}

/// Checks a history from files: the client history, and the watch streams if given (judged
/// against the committed history reconstructed from both).
pub fn check_history(
    history: &History,
    watches: Option<&WatchHistory>,
    options: &CheckOptions,
) -> RunVerdict {
    let mut verdict = RunVerdict::default();
    let (ok, failed, unknown) = count(history);
    verdict.header.push(format!(
        "history: {} operations ({ok} ok, {failed} failed, {unknown} unknown)",
        history.operations.len()
    ));
    verdict.push(linearizability(history, options));
    if let Some(watches) = watches {
        let result = match faultline_checkers::watch::reconstruct(history, watches) {
            Err(e) => CheckerResult {
                checker: "watch",
                status: Status::Violation(e.to_string()),
                summary: "the watch streams contradict each other or the client history".into(),
            },
            Ok(committed) => {
                let report = faultline_checkers::watch::check(watches, &committed);
                let (n, events, resumes, cancels, progress) = watch_totals(watches);
                CheckerResult {
                    checker: "watch",
                    status: if report.passed() { Status::Pass } else { Status::Violation(report.render()) },
                    summary: format!(
                        "{n} watches: {events} events, {resumes} resumes, {cancels} compaction cancels, {progress} progress notifications (reconstructed history)"
                    ),
                }
            }
        };
        verdict.push(result);
    }
    verdict
}

/// Each member's db file, reopened from its disk alone, holds that member's state.
fn db_files(output: &SimOutput) -> CheckerResult {
    let wrong: Vec<String> = output
        .db_checks
        .iter()
        .filter(|c| !c.agrees())
        .map(|c| c.to_string())
        .collect();
    CheckerResult {
        checker: "db files",
        status: if wrong.is_empty() {
            Status::Pass
        } else {
            Status::Violation(wrong.join("; "))
        },
        summary: format!(
            "{} db files reopened alone and compared with their members",
            output.db_checks.len()
        ),
    }
}

/// Judges a simulated run: the history's checkers plus the run's ground truth (replica
/// convergence) and its liveness phase.
pub fn judge_run(config: &RunConfig, output: &SimOutput, options: &CheckOptions) -> RunVerdict {
    let mut verdict = RunVerdict::default();
    let (ok, failed, unknown) = count(&output.history);
    verdict.header.push(format!(
        "ops: {} ({ok} ok, {failed} failed, {unknown} unknown); faults injected: {}; leader changes: {}",
        output.history.operations.len(),
        output.schedule.faults.len(),
        output.leader_changes
    ));
    if !config.bugs.enabled().is_empty() {
        verdict.header.push(format!(
            "planted bugs: {}",
            config.bugs.enabled().join(", ")
        ));
    }
    verdict.push(linearizability(&output.history, options));
    verdict.push(watches(output));
    verdict.push(reconstruction(output));
    let first = output.replicas.first().map(|(_, rev, hash)| (*rev, *hash));
    let diverged: Vec<String> = output
        .replicas
        .iter()
        .filter(|(_, rev, hash)| Some((*rev, *hash)) != first)
        .map(|(m, rev, hash)| format!("n{m} at revision {rev} hash {hash:016x}"))
        .collect();
    let summary = format!(
        "{} members compared after healing; HashKV compared at one revision {} times",
        output.replicas.len(),
        output.hash_checks.len()
    );
    let first_divergence = output
        .hash_checks
        .iter()
        .find(|c| !c.divergences.is_empty());
    let status = if let Some(check) = first_divergence {
        Status::Violation(format!("HashKV differs: {check}"))
    } else if diverged.is_empty() {
        Status::Pass
    } else {
        let (rev, hash) = first.unwrap_or_default();
        Status::Violation(format!(
            "members disagree: n{} at revision {rev} hash {hash:016x}, but {}",
            output.replicas[0].0,
            diverged.join(", ")
        ))
    };
    verdict.push(CheckerResult {
        checker: "replica convergence",
        status,
        summary,
    });
    verdict.push(db_files(output));
    verdict.push(member_panics(output));
    verdict.push(liveness_result(&output.liveness));
    verdict.footer.extend(crash_points(output));
    verdict
        .footer
        .push("watches (events, responses, resumes, compaction cancels, progress):".into());
    for w in &output.watches.watches {
        let mut counts = (0, 0, 0, 0, 0);
        for item in &w.items {
            match item {
                WatchItem::Events { events, .. } => {
                    counts.0 += events.len();
                    counts.1 += 1;
                }
                WatchItem::Resumed { .. } => counts.2 += 1,
                WatchItem::Compacted { .. } => counts.3 += 1,
                WatchItem::Progress { .. } => counts.4 += 1,
            }
        }
        verdict.footer.push(format!(
            "  {:<62} {:>5} events {:>5} responses {:>2} resumes {:>2} cancels {:>3} progress",
            w.describe().escape_debug().to_string(),
            counts.0,
            counts.1,
            counts.2,
            counts.3,
            counts.4
        ));
    }
    verdict
        .footer
        .push(format!("trace hash: {:016x}", output.trace_hash));
    verdict
}

/// Every member panic, with where and when it happened and the faults in force then.
fn member_panics(output: &SimOutput) -> CheckerResult {
    let summary = format!(
        "{} members ran; {} panicked",
        output.replicas.len(),
        output.panics.len()
    );
    if output.panics.is_empty() {
        return CheckerResult {
            checker: "member panics",
            status: Status::Pass,
            summary,
        };
    }
    let mut text = String::new();
    for p in &output.panics {
        let _ = writeln!(
            text,
            "n{} panicked at {:.3}s, at {}: {}",
            p.node,
            p.at_ms as f64 / 1000.0,
            p.location.as_deref().unwrap_or("an unknown place"),
            p.message
        );
        let before: Vec<String> = output
            .applied_faults
            .iter()
            .filter(|(at, _)| *at <= p.at_ms)
            .map(|(at, fault)| format!("{:.3}s {fault}", *at as f64 / 1000.0))
            .collect();
        let recent = &before[before.len().saturating_sub(4)..];
        if recent.is_empty() {
            let _ = writeln!(text, "  no fault had been applied before it");
        } else {
            let _ = writeln!(text, "  the last faults before it: {}", recent.join("; "));
        }
    }
    CheckerResult {
        checker: "member panics",
        status: Status::Panicked(text),
        summary,
    }
}

/// The report's crash-point section: each point the schedule armed and how it went (a point
/// armed but never reached says so), then how often each point was reached over the run, per
/// member.
pub fn crash_points(output: &SimOutput) -> Vec<String> {
    let seconds = |ms: u64| format!("{:.3}s", ms as f64 / 1000.0);
    let mut lines = Vec::new();
    if output.failpoint_armings.is_empty() {
        lines.push("crash points armed: none".to_string());
    } else {
        lines.push("crash points armed:".to_string());
    }
    for a in &output.failpoint_armings {
        let mut outcome = if a.triggered {
            match a.crashed_at_ms {
                Some(at) => format!("triggered: n{} crashed @{}", a.node, seconds(at)),
                None => format!("triggered: {}", a.action),
            }
        } else if a.reached == 0 {
            "never reached".to_string()
        } else {
            format!("reached {} of {} hits, not triggered", a.reached, a.hit)
        };
        match a.cleared_at_ms {
            Some(at) => outcome.push_str(&format!("; cleared @{}", seconds(at))),
            None => outcome.push_str("; still armed"),
        }
        lines.push(format!(
            "  n{} {} {} on hit {} @{}: {outcome}",
            a.node,
            a.point,
            a.action,
            a.hit,
            seconds(a.armed_at_ms)
        ));
    }
    let members: Vec<NodeId> = output.failpoint_reaches.keys().copied().collect();
    let mut points: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (i, reached) in output.failpoint_reaches.values().enumerate() {
        for (point, n) in reached {
            points
                .entry(point)
                .or_insert_with(|| vec![0; members.len()])[i] = *n;
        }
    }
    if points.is_empty() {
        lines.push("crash points reached: none".to_string());
    } else {
        let who = members
            .iter()
            .map(|m| format!("n{m}"))
            .collect::<Vec<_>>()
            .join("/");
        let counts = points
            .iter()
            .map(|(point, counts)| {
                let counts = counts
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join("/");
                format!("{point} {counts}")
            })
            .collect::<Vec<_>>()
            .join(", ");
        lines.push(format!("crash points reached ({who}): {counts}"));
    }
    lines
}

/// The liveness verdict of a run's heal phase: how long the healed cluster took to commit a
/// write and a read, or why it did not.
pub fn liveness_result(liveness: &Result<std::time::Duration, String>) -> CheckerResult {
    let (status, summary) = match liveness {
        Ok(took) => (
            Status::Pass,
            format!(
                "write and read committed {:.3}s after healing",
                took.as_secs_f64()
            ),
        ),
        Err(e) => (
            Status::Stuck(e.clone()),
            "healed cluster did not serve".to_string(),
        ),
    };
    CheckerResult {
        checker: "liveness",
        status,
        summary,
    }
}
