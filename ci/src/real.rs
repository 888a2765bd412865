//! Real mode: the same traffic and checkers as a simulated run, against a real etcd cluster of 1
//! or 3 local processes, with real process faults (SIGKILL and restart, SIGSTOP and SIGCONT).
//!
//! Not deterministic: the seed picks the traffic and the fault choices (kind, member, lengths),
//! but not the timing, which belongs to the machine, so the same seed gives a different history
//! every time. The phases are a simulated run's: a **fault phase** (traffic, the compactor and
//! the process faults for the run's duration; never more than one member down, so a 3-member
//! cluster keeps its quorum), then a **liveness phase** (every member resumed or restarted and
//! answering; a recorded write and linearizable read must commit within a bound).
//!
//! Watchers do not run yet, and the checkers that need the simulation's ground truth (replica
//! convergence, the watch checks against what members committed) cannot run; the history is
//! judged for linearizability (with revisions and stale reads) and the run for liveness.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faultline_checkers::history::{History, Outcome as HistoryOutcome};
use faultline_checkers::resolve::{keyspace_events, resolve_unknown_writes};
use faultline_checkers::watch::{WatchHistory, WatchItem};
use faultline_workloads::traffic::{
    commit_after_healing, compactor, etcd_kv_client, kubernetes_client,
};
use faultline_workloads::{Clock, ProcessFault, ProcessFaults, Recorder, WorkloadKind};
use serde::{Deserialize, Serialize};

use crate::artifacts::ArtifactWriter;
use crate::check::{check_history, liveness_result, CheckOptions, RunVerdict};
use crate::etcd::keyspace::{KeyspaceRecord, KeyspaceWatch};
use crate::etcd::process::{etcd_binary, etcd_version, EtcdCluster, MemberState, ProcessError};
use crate::etcd::target::{EtcdTarget, TargetConfig};
use crate::run::{RunConfig, RunTarget};

/// The line every real-mode summary carries.
pub const NOT_DETERMINISTIC: &str =
    "real mode: not deterministic; the seed picks traffic and fault choices but not timing";

/// What was done to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultAction {
    Kill,
    Restart,
    Pause,
    Resume,
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultAction::Kill => "kill",
            FaultAction::Restart => "restart",
            FaultAction::Pause => "pause",
            FaultAction::Resume => "resume",
        })
    }
}

/// A fault (or its end) as it was applied, at its time since the run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedFault {
    pub at_ms: u64,
    pub action: FaultAction,
    pub member: String,
    /// Whether the member led the cluster (as last seen) when it was hit.
    pub leader: bool,
}

impl fmt::Display for AppliedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  {:>7.3}s  {} {}{}",
            self.at_ms as f64 / 1000.0,
            self.action,
            self.member,
            if self.leader { " (leader)" } else { "" }
        )
    }
}

/// What a real-mode run produced, before any checking.
#[derive(Debug, Clone)]
pub struct RealOutput {
    pub history: History,
    /// `etcd --version`'s first line.
    pub etcd_version: String,
    pub endpoints: Vec<String>,
    pub faults: Vec<AppliedFault>,
    /// Timestamped events: faults, members ready again, leader changes, phases.
    pub trace: Vec<String>,
    /// Leaders seen (a new leader or a new term), the first one included.
    pub leader_changes: u64,
    /// `Err` when the healed cluster did not answer and commit a write and a read in time.
    pub liveness: Result<Duration, String>,
    /// Where the members kept their data and logs.
    pub cluster_dir: PathBuf,
    /// A watch of every key through the run: judged by the watch checkers, and what settles
    /// writes of unknown outcome.
    pub keyspace: KeyspaceRecord,
    /// The keyspace watch in the watch history format.
    pub watches: WatchHistory,
}

impl RealOutput {
    /// (kills, pauses) applied.
    pub fn fault_counts(&self) -> (usize, usize) {
        let count = |action| self.faults.iter().filter(|f| f.action == action).count();
        (count(FaultAction::Kill), count(FaultAction::Pause))
    }
}

/// Why a real-mode run could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealError {
    /// The machine is not set up for it (no etcd binary, a directory that cannot be written):
    /// the user's to fix, like bad usage.
    Setup(String),
    /// The run broke (a member that would not start, a panic).
    Run(String),
}

impl fmt::Display for RealError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RealError::Setup(e) | RealError::Run(e) => f.write_str(e),
        }
    }
}

fn process_error(error: ProcessError) -> RealError {
    match error {
        ProcessError::Binary { .. } | ProcessError::Size(_) => RealError::Setup(error.to_string()),
        other => RealError::Run(other.to_string()),
    }
}

/// A run's timestamped events, shared by the fault loop and the leader monitor.
#[derive(Debug, Clone)]
struct Trace {
    clock: Clock,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    fn log(&self, text: impl AsRef<str>) {
        let at = self.clock.elapsed().as_secs_f64();
        self.lines
            .lock()
            .expect("trace")
            .push(format!("{at:>8.3}s  {}", text.as_ref()));
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("trace").clone()
    }
}

/// The leader as the members report it.
#[derive(Debug, Default)]
struct LeaderView {
    /// Each member's raft id, once it has answered a status request.
    ids: Vec<Option<u64>>,
    /// The newest (term, leader id) any member reported.
    current: Option<(u64, u64)>,
    changes: u64,
}

impl LeaderView {
    fn member_of(&self, id: u64) -> Option<usize> {
        self.ids.iter().position(|m| *m == Some(id))
    }

    fn leader(&self) -> Option<usize> {
        self.current.and_then(|(_, id)| self.member_of(id))
    }
}

/// Polls one member's status, recording its id and the leader it knows of. A paused member does
/// not answer and a killed one refuses; both are simply asked again later.
async fn watch_leader(
    member: usize,
    endpoint: String,
    names: Vec<String>,
    view: Arc<Mutex<LeaderView>>,
    trace: Trace,
) {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(300))
        .with_timeout(Duration::from_millis(500));
    let mut client = None;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if client.is_none() {
            client = etcd_client::Client::connect([endpoint.as_str()], Some(options.clone()))
                .await
                .ok();
        }
        let Some(c) = client.as_mut() else { continue };
        let status = match tokio::time::timeout(Duration::from_millis(500), c.status()).await {
            Ok(Ok(status)) => status,
            _ => {
                client = None;
                continue;
            }
        };
        let mut view = view.lock().expect("leader view");
        if let Some(header) = status.header() {
            view.ids[member] = Some(header.member_id());
        }
        let (term, leader) = (status.raft_term(), status.leader());
        if leader == 0 || view.current.is_some_and(|(t, _)| t >= term) {
            continue;
        }
        view.current = Some((term, leader));
        view.changes += 1;
        let name = view
            .member_of(leader)
            .map(|i| names[i].clone())
            .unwrap_or_else(|| format!("member {leader:x}"));
        trace.log(format!("leader {name} (term {term})"));
    }
}

/// Each member's raft id by its name, from the member list, so that the first leader reported
/// is named even before it answered a status request itself. Unknown ids stay `None` (the status
/// pollers fill them in).
async fn member_ids(endpoint: &str, names: &[String]) -> Vec<Option<u64>> {
    let mut ids = vec![None; names.len()];
    let list = async {
        let mut client = etcd_client::Client::connect([endpoint], None).await.ok()?;
        client.member_list().await.ok()
    };
    if let Ok(Some(list)) = tokio::time::timeout(Duration::from_secs(2), list).await {
        for member in list.members() {
            if let Some(i) = names.iter().position(|n| n == member.name()) {
                ids[i] = Some(member.id());
            }
        }
    }
    ids
}

/// Runs `config` against a real etcd cluster kept under `dir`. Blocks for the run's duration
/// plus start-up and the liveness phase; checking is separate ([`judge_real_run`]).
pub fn run_real(config: &RunConfig, dir: &Path) -> Result<RealOutput, RealError> {
    debug_assert_eq!(config.target, RunTarget::Etcd);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RealError::Run(format!("starting the tokio runtime: {e}")))?;
    let config = config.clone();
    let dir = dir.to_path_buf();
    // A panic anywhere in the run is reported like a crashed simulation; dropping the cluster on
    // the way out kills every etcd process it started.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        runtime.block_on(run_in_runtime(config, dir))
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the run panicked".to_string());
        Err(RealError::Run(message))
    })
}

/// Removes what an earlier run left under `dir` (member data and logs), so that the members
/// start as a new cluster: a data directory from another cluster would name other peers.
fn clear_members(dir: &Path, size: usize) -> Result<(), RealError> {
    for i in 1..=size {
        let data = dir.join(format!("m{i}.etcd"));
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .map_err(|e| RealError::Setup(format!("removing {}: {e}", data.display())))?;
        }
        let log = dir.join(format!("m{i}.log"));
        if log.exists() {
            std::fs::remove_file(&log)
                .map_err(|e| RealError::Setup(format!("removing {}: {e}", log.display())))?;
        }
    }
    Ok(())
}

/// Removes the members' data directories (etcd preallocates 64 MB of WAL each), keeping their
/// logs.
pub fn remove_member_data(dir: &Path, size: usize) {
    for i in 1..=size {
        let _ = std::fs::remove_dir_all(dir.join(format!("m{i}.etcd")));
    }
}

async fn run_in_runtime(config: RunConfig, dir: PathBuf) -> Result<RealOutput, RealError> {
    let binary = etcd_binary();
    let version = etcd_version(&binary).map_err(process_error)?;
    let mut faults =
        ProcessFaults::new(config.seed, config.faults, config.nodes).map_err(RealError::Setup)?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| RealError::Setup(format!("creating {}: {e}", dir.display())))?;
    clear_members(&dir, config.nodes)?;
    let mut cluster = EtcdCluster::start(&binary, &dir, config.nodes)
        .await
        .map_err(process_error)?;
    let names: Vec<String> = (0..cluster.size())
        .map(|i| cluster.name(i).to_string())
        .collect();
    let endpoints = cluster.endpoints();
    let clock = Clock::real();
    let recorder = Recorder::new(clock);
    let trace = Trace {
        clock,
        lines: Arc::default(),
    };
    trace.log(format!(
        "cluster up: {}",
        names
            .iter()
            .zip(&endpoints)
            .map(|(n, e)| format!("{n} {e}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let view = Arc::new(Mutex::new(LeaderView {
        ids: member_ids(&endpoints[0], &names).await,
        ..LeaderView::default()
    }));
    let monitors: Vec<_> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            tokio::spawn(watch_leader(
                i,
                e.clone(),
                names.clone(),
                view.clone(),
                trace.clone(),
            ))
        })
        .collect();
    // The watch is client 0, which no traffic client uses.
    let keyspace = KeyspaceWatch::start(endpoints.clone(), clock, 0, 0);
    let target = EtcdTarget::new(endpoints.clone(), TargetConfig::default());
    let until = Duration::from_millis(config.duration_ms);
    let mut workers = Vec::new();
    for c in 0..config.workload.clients as u64 {
        let (recorder, workload, seed) = (recorder.clone(), config.workload.clone(), config.seed);
        // Each client starts on a different member, as clients of a real cluster spread out.
        let client = target.starting_at(c as usize);
        workers.push(tokio::spawn(async move {
            match workload.kind {
                WorkloadKind::EtcdKv => {
                    etcd_kv_client(client, recorder, workload, c + 1, seed, until).await
                }
                WorkloadKind::Kubernetes => {
                    kubernetes_client(client, recorder, workload, c + 1, seed, until).await
                }
            }
        }));
    }
    let compactor_id = config.workload.clients as u64 + 1;
    {
        let (recorder, workload, seed) = (recorder.clone(), config.workload.clone(), config.seed);
        let client = target.clone();
        workers.push(tokio::spawn(async move {
            compactor(client, recorder, workload, compactor_id, seed, until).await
        }));
    }

    // The fault phase: one episode at a time, each over before the next starts.
    let mut applied = Vec::new();
    let apply = |applied: &mut Vec<AppliedFault>, action, member: usize, leader| {
        let fault = AppliedFault {
            at_ms: clock.elapsed().as_millis() as u64,
            action,
            member: names[member].clone(),
            leader,
        };
        trace.log(format!(
            "{action} {}{}",
            fault.member,
            if leader { " (leader)" } else { "" }
        ));
        applied.push(fault);
    };
    let mut stopped_faults = None;
    while let Some(episode) = faults.next_episode() {
        let calm = Duration::from_millis(episode.calm_ms);
        let length = Duration::from_millis(episode.length_ms);
        if clock.elapsed() + calm + length >= until {
            break;
        }
        clock.sleep(calm).await;
        let leader = view.lock().expect("leader view").leader();
        let member = match leader {
            Some(l) if episode.leader => l,
            _ => episode.member,
        };
        let is_leader = leader == Some(member);
        match episode.fault {
            ProcessFault::Kill => {
                cluster.kill(member).map_err(process_error)?;
                apply(&mut applied, FaultAction::Kill, member, is_leader);
                clock.sleep(length).await;
                cluster.restart(member).map_err(process_error)?;
                apply(&mut applied, FaultAction::Restart, member, false);
                let restarted = Instant::now();
                // The next episode may take down another member: this one must be back first,
                // or a 3-member cluster would lose its quorum.
                match cluster.wait_ready(member, Duration::from_secs(20)).await {
                    Ok(()) => trace.log(format!(
                        "{} answers again after {:.3}s",
                        names[member],
                        restarted.elapsed().as_secs_f64()
                    )),
                    Err(e) => {
                        trace.log(format!("{} did not come back: {e}", names[member]));
                        stopped_faults = Some(format!("{} did not come back: {e}", names[member]));
                        break;
                    }
                }
            }
            ProcessFault::Pause => {
                cluster.pause(member).map_err(process_error)?;
                apply(&mut applied, FaultAction::Pause, member, is_leader);
                clock.sleep(length).await;
                cluster.resume(member).map_err(process_error)?;
                apply(&mut applied, FaultAction::Resume, member, false);
            }
        }
    }
    if let Some(left) = until.checked_sub(clock.elapsed()) {
        clock.sleep(left).await;
    }
    trace.log("traffic ends; waiting for operations in flight");
    for worker in workers {
        worker
            .await
            .map_err(|e| RealError::Run(format!("a traffic client failed: {e}")))?;
    }

    // The liveness phase: everyone back, answering, and committing.
    trace.log("liveness phase: resuming and restarting every member");
    let healed = Instant::now();
    let bound = Duration::from_millis(config.liveness_timeout_ms);
    for i in 0..cluster.size() {
        match cluster.state(i) {
            MemberState::Running => {}
            MemberState::Paused => {
                cluster.resume(i).map_err(process_error)?;
                apply(&mut applied, FaultAction::Resume, i, false);
            }
            MemberState::Killed => {
                cluster.restart(i).map_err(process_error)?;
                apply(&mut applied, FaultAction::Restart, i, false);
            }
        }
    }
    let mut liveness = match stopped_faults {
        Some(why) => Err(why),
        None => Ok(Duration::ZERO),
    };
    for (i, name) in names.iter().enumerate() {
        let left = bound.saturating_sub(healed.elapsed());
        if let Err(e) = cluster.wait_ready(i, left).await {
            liveness = Err(format!("{name} did not answer after healing: {e}"));
        }
    }
    if liveness.is_ok() {
        let healed_at = clock.elapsed().saturating_sub(healed.elapsed());
        liveness =
            commit_after_healing(&target, &recorder, compactor_id + 1, healed_at, bound).await;
    }
    match &liveness {
        Ok(took) => trace.log(format!(
            "liveness: write and read committed {:.3}s after healing",
            took.as_secs_f64()
        )),
        Err(e) => trace.log(format!("liveness failure: {e}")),
    }
    for monitor in monitors {
        monitor.abort();
    }
    let operations = recorder.operations();
    let last_revision = operations
        .iter()
        .filter_map(|op| match &op.outcome {
            HistoryOutcome::Ok { revision, .. } => Some(*revision),
            _ => None,
        })
        .max()
        .unwrap_or(1);
    let keyspace = keyspace.finish(last_revision, bound).await;
    let watches = WatchHistory {
        meta: BTreeMap::from([("target".to_string(), "etcd".to_string())]),
        watches: vec![keyspace.watch.clone()],
    };
    trace.log(format!(
        "keyspace watch: {} events through revision {}, {} resumes{}",
        keyspace
            .watch
            .items
            .iter()
            .map(|i| match i {
                WatchItem::Events { events, .. } => events.len(),
                _ => 0,
            })
            .sum::<usize>(),
        keyspace.next_revision - 1,
        keyspace.resumes,
        keyspace
            .compacted_at
            .map(|r| format!(", overtaken by compaction at {r}"))
            .unwrap_or_default()
    ));
    let leader_changes = view.lock().expect("leader view").changes;
    drop(cluster);

    let mut history = History {
        operations,
        meta: config.history_meta(),
    };
    history.meta.insert("target".into(), "etcd".into());
    history.meta.insert("etcd".into(), version.clone());
    Ok(RealOutput {
        history,
        etcd_version: version,
        endpoints,
        faults: applied,
        trace: trace.lines(),
        leader_changes,
        liveness,
        cluster_dir: dir,
        keyspace,
        watches,
    })
}

/// Judges a real-mode run: the history's checkers (linearizability with revisions and stale
/// reads) and the liveness phase. Replica convergence and the watch checks need the simulation's
/// ground truth and do not run; the report says so.
pub fn judge_real_run(
    config: &RunConfig,
    output: &RealOutput,
    options: &CheckOptions,
) -> RunVerdict {
    let started = Instant::now();
    let events = keyspace_events(&output.watches).unwrap_or_default();
    let (resolved, resolution) = resolve_unknown_writes(&output.history, &events);
    let mut verdict = check_history(&resolved, Some(&output.watches), options);
    let (kills, pauses) = output.fault_counts();
    let mut header = vec![
        NOT_DETERMINISTIC.to_string(),
        format!(
            "etcd: {} ({} members: {})",
            output.etcd_version,
            output.endpoints.len(),
            output.endpoints.join(", ")
        ),
        format!(
            "faults applied: kills {kills}, pauses {pauses}; leader changes: {}",
            output.leader_changes
        ),
        format!(
            "traffic: {}, {} clients at {} ops/s each, compaction every {}ms; watchers: one \
             watch of every key from revision 1, following the cluster (the simulation's watcher \
             workloads do not run here yet)",
            config.workload.kind.name(),
            config.workload.clients,
            config.workload.rate_per_client,
            config.workload.compact_every_ms
        ),
        "checkers: linearizability (with revisions and stale reads), watch (against the history \
         reconstructed from both), liveness; not run: watch ground truth, replica convergence \
         (they need the simulation's ground truth)"
            .to_string(),
        resolution.summary(),
    ];
    header.append(&mut verdict.header);
    verdict.header = header;
    verdict.push(liveness_result(&output.liveness));
    verdict.footer.push("faults:".to_string());
    if output.faults.is_empty() {
        verdict.footer.push("  (no faults)".to_string());
    }
    for fault in &output.faults {
        verdict.footer.push(fault.to_string());
    }
    verdict.footer.push(format!(
        "checking took {:.3}s",
        started.elapsed().as_secs_f64()
    ));
    verdict
}

/// Writes what a real-mode run produced: the history, the keyspace watch, the faults as
/// applied, the trace and the config (the same formats as a simulated run's; `faults.json` in
/// place of `schedule.json`; the report comes after checking, see `crate::artifacts`).
pub fn write_real_artifacts(
    out: &mut ArtifactWriter,
    config: &RunConfig,
    output: &RealOutput,
) -> std::io::Result<()> {
    out.lines("history.jsonl", |w| output.history.write_to(w))?;
    out.lines("watches.jsonl", |w| output.watches.write_to(w))?;
    out.json("faults.json", &output.faults)?;
    out.text("trace.txt", &(output.trace.join("\n") + "\n"))?;
    out.json("config.json", config)?;
    Ok(())
}
