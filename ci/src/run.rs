//! One chaos run: a seeded simulation of the reference store under traffic and faults, then the
//! checkers' verdicts on what the clients saw.
//!
//! Phases, as in TigerBeetle's VOPR: a **fault phase** (traffic and the nemesis schedule for the
//! run's duration), then a **liveness phase** (everything healed; the cluster must commit a write
//! and serve a linearizable read within a bound). The run's outcome separates a safety violation,
//! a liveness failure and a crash of the run itself, and always carries the one command that
//! reproduces it.

use std::time::Duration;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use faultline_checkers::history::History;
use faultline_checkers::watch::{CommittedEvent, CommittedHistory, WatchHistory};
use faultline_sim::convergence::{
    db_check, db_check_input, hash_check, running_members, DbCheck, HashCheck,
};
use faultline_sim::{simulate, Cluster, ClusterConfig, FailpointArming, MemberPanic};
use faultline_store::node::protocol::NodeId;
use faultline_store::node::time::now;
use faultline_store::PlantedBugs;
use faultline_workloads::traffic::{
    commit_after_healing, compactor, etcd_kv_client, kubernetes_client,
};
use faultline_workloads::watching::{
    list_then_watch, member_follower, random_watcher, watch_event,
};
use faultline_workloads::{
    Clock, FaultProfile, Recorder, Schedule, WatchRecorder, WorkloadConfig, WorkloadKind,
};
use serde::{Deserialize, Serialize};

use faultline_workloads::nemesis::SwarmKind;

use crate::artifacts::ArtifactWriter;
use crate::faults::FaultDriver;
use crate::profile::BackendKnobs;
use faultline_workloads::maintenance::defragmenter;

/// What a run drives its traffic and faults against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunTarget {
    /// The reference store in a deterministic simulation.
    #[default]
    Sim,
    /// Real etcd processes on loopback (see `crate::real`); not deterministic.
    Etcd,
}

impl RunTarget {
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "sim" => Ok(RunTarget::Sim),
            "etcd" => Ok(RunTarget::Etcd),
            other => Err(format!("unknown target {other:?}; known: sim, etcd")),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            RunTarget::Sim => "sim",
            RunTarget::Etcd => "etcd",
        }
    }
}

/// Everything that determines a run; printed and saved with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Absent in configs saved before real mode existed: those were simulations.
    #[serde(default)]
    pub target: RunTarget,
    pub seed: u64,
    pub nodes: usize,
    /// Length of the fault phase, simulated.
    pub duration_ms: u64,
    pub workload: WorkloadConfig,
    pub faults: FaultProfile,
    pub bugs: PlantedBugs,
    /// How long the healed cluster has to commit a write and serve a read.
    pub liveness_timeout_ms: u64,
    /// The checker's budget (wall time).
    pub check_timeout_ms: u64,
    /// The most memory the checker may hold at once, by its own accounting; past it a verdict
    /// is unknown. Absent in configs saved before it existed: those had the default.
    #[serde(default = "default_check_memory_bytes")]
    pub check_memory_bytes: u64,
    /// Applied entries between a member's snapshots (the log keeps half as many behind one).
    pub snapshot_entries: u64,
    /// The backend's batch limits and the defragment schedule. Absent in configs saved before
    /// the backend had a db file: those had the defaults.
    #[serde(default)]
    pub backend: BackendKnobs,
    /// The named profile the run started from, if any (see `crate::profile`).
    #[serde(default)]
    pub profile: Option<String>,
    /// A schedule file the faults were read from instead of drawn from the seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_file: Option<String>,
    /// Swarm kinds always on, at the highest weight, beside those the seed draws.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub swarm_focus: Vec<SwarmKind>,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            target: RunTarget::Sim,
            seed: 1,
            nodes: 3,
            duration_ms: 10_000,
            workload: WorkloadConfig::default(),
            faults: FaultProfile::Default,
            bugs: PlantedBugs::default(),
            liveness_timeout_ms: 30_000,
            check_timeout_ms: 60_000,
            check_memory_bytes: default_check_memory_bytes(),
            snapshot_entries: 1_000,
            backend: BackendKnobs::default(),
            profile: None,
            schedule_file: None,
            swarm_focus: Vec::new(),
        }
    }
}

/// The checkers' own default memory limit.
fn default_check_memory_bytes() -> u64 {
    faultline_checkers::linearizability::Budget::DEFAULT_MAX_BYTES as u64
}

impl RunConfig {
    /// Checks the options a user gave; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match self.target {
            RunTarget::Sim if !matches!(self.nodes, 1 | 3 | 5 | 7) => {
                return Err(format!("--nodes must be 1, 3, 5 or 7 (got {})", self.nodes));
            }
            RunTarget::Etcd if !matches!(self.nodes, 1 | 3) => {
                return Err(format!(
                    "--nodes must be 1 or 3 with --target etcd (got {}): real mode starts that \
                     many local etcd processes",
                    self.nodes
                ));
            }
            _ => {}
        }
        if self.target == RunTarget::Etcd {
            // Only kills and pauses can be done to real processes.
            faultline_workloads::ProcessFaults::new(self.seed, self.faults, self.nodes)?;
        }
        if self.target == RunTarget::Etcd && !self.bugs.enabled().is_empty() {
            return Err(
                "--bug plants bugs in the reference store; a real etcd has only its own".into(),
            );
        }
        if self.duration_ms < 1_000 || self.duration_ms > 3_600_000 {
            return Err(format!(
                "--duration must be between 1s and 1h (got {}ms)",
                self.duration_ms
            ));
        }
        if self.workload.clients == 0 || self.workload.clients > 1_000 {
            return Err(format!(
                "--clients must be 1 to 1000 (got {})",
                self.workload.clients
            ));
        }
        if self.workload.rate_per_client == 0 || self.workload.rate_per_client > 10_000 {
            return Err(format!(
                "--rate must be 1 to 10000 per client (got {})",
                self.workload.rate_per_client
            ));
        }
        if self.workload.pinned_clients > self.workload.clients {
            return Err(format!(
                "--pinned-clients must be at most --clients ({}; got {})",
                self.workload.clients, self.workload.pinned_clients
            ));
        }
        if !self.swarm_focus.is_empty() && self.faults != FaultProfile::Swarm {
            return Err("--swarm-focus needs --faults swarm".into());
        }
        if let Some(kind) = self.swarm_focus.iter().find(|k| !k.applies_to(self.nodes)) {
            return Err(format!(
                "--swarm-focus {}: this kind needs more than one member",
                kind.name()
            ));
        }
        if self.workload.watches_per_stream == 0 || self.workload.watches_per_stream > 64 {
            return Err(format!(
                "--watches-per-stream must be 1 to 64 (got {})",
                self.workload.watches_per_stream
            ));
        }
        if self.target == RunTarget::Etcd && self.workload.pinned_clients > 0 {
            return Err("--pinned-clients is not supported with --target etcd yet".into());
        }
        if self.snapshot_entries < 10 || self.snapshot_entries > 10_000_000 {
            return Err(format!(
                "--snapshot-entries must be 10 to 10000000 (got {})",
                self.snapshot_entries
            ));
        }
        if self.check_memory_bytes == 0 || self.check_memory_bytes > crate::size::SIZE_MAX_BYTES {
            return Err(format!(
                "--check-memory must be more than 0 bytes and at most 1PiB (got {})",
                self.check_memory_bytes
            ));
        }
        if self.workload.keys == 0 || self.workload.keys > 100_000 {
            return Err(format!(
                "--keys must be 1 to 100000 (got {})",
                self.workload.keys
            ));
        }
        if self.backend.batch_limit == 0 || self.backend.batch_limit > 1_000_000 {
            return Err(format!(
                "--backend-batch-limit must be 1 to 1000000 revisions (got {})",
                self.backend.batch_limit
            ));
        }
        if self.backend.compaction_batch_limit == 0
            || self.backend.compaction_batch_limit > 1_000_000
        {
            return Err(format!(
                "--compaction-batch-limit must be 1 to 1000000 deletes (got {})",
                self.backend.compaction_batch_limit
            ));
        }
        if self.backend.defrag_every_ms != 0 && self.backend.defrag_every_ms < 50 {
            return Err(format!(
                "--defrag-every must be 0 (never) or at least 50ms (got {}ms)",
                self.backend.defrag_every_ms
            ));
        }
        if self.target == RunTarget::Etcd && self.backend != BackendKnobs::default() {
            return Err(
                "the backend knobs set the reference store's backend; etcd has its own flags \
                 (--target etcd)"
                    .into(),
            );
        }
        Ok(())
    }

    /// The checkers' budget for this run.
    pub fn check_options(&self) -> crate::check::CheckOptions {
        crate::check::CheckOptions {
            timeout_ms: self.check_timeout_ms,
            max_bytes: usize::try_from(self.check_memory_bytes).unwrap_or(usize::MAX),
        }
    }

    /// What a history of this run says about it: the seed, the workload, the command.
    pub fn history_meta(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("seed".to_string(), self.seed.to_string()),
            (
                "workload".to_string(),
                self.workload.kind.name().to_string(),
            ),
            ("command".to_string(), self.command()),
        ])
    }

    /// The command line that reproduces this run.
    pub fn command(&self) -> String {
        let target = match self.target {
            RunTarget::Sim => String::new(),
            RunTarget::Etcd => " --target etcd".to_string(),
        };
        let profile = self
            .profile
            .as_ref()
            .map_or(String::new(), |p| format!(" --profile {p}"));
        let mut cmd = format!(
            "faultline run{target}{profile} --seed {} --nodes {} --duration {}ms --workload {} --faults {} --clients {} --rate {} --keys {}",
            self.seed,
            self.nodes,
            self.duration_ms,
            self.workload.kind.name(),
            self.faults.name(),
            self.workload.clients,
            self.workload.rate_per_client,
            self.workload.keys,
        );
        if !self.swarm_focus.is_empty() {
            let kinds: Vec<String> = self.swarm_focus.iter().map(|k| k.name()).collect();
            cmd.push_str(&format!(" --swarm-focus {}", kinds.join(",")));
        }
        let mix = self.workload.mix.diff_from_default();
        if !mix.is_empty() {
            cmd.push_str(&format!(" --mix {mix}"));
        }
        if self.workload.compact_every_ms != WorkloadConfig::default().compact_every_ms {
            cmd.push_str(&format!(
                " --compact-every {}ms",
                self.workload.compact_every_ms
            ));
        }
        if self.snapshot_entries != RunConfig::default().snapshot_entries {
            cmd.push_str(&format!(" --snapshot-entries {}", self.snapshot_entries));
        }
        if self.workload.watchers != WorkloadConfig::default().watchers
            && self.target == RunTarget::Sim
        {
            cmd.push_str(&format!(" --watchers {}", self.workload.watchers));
        }
        if self.workload.watches_per_stream != WorkloadConfig::default().watches_per_stream {
            cmd.push_str(&format!(
                " --watches-per-stream {}",
                self.workload.watches_per_stream
            ));
        }
        let backend = BackendKnobs::default();
        if self.backend.batch_limit != backend.batch_limit {
            cmd.push_str(&format!(
                " --backend-batch-limit {}",
                self.backend.batch_limit
            ));
        }
        if self.backend.compaction_batch_limit != backend.compaction_batch_limit {
            cmd.push_str(&format!(
                " --compaction-batch-limit {}",
                self.backend.compaction_batch_limit
            ));
        }
        if self.backend.defrag_every_ms != backend.defrag_every_ms {
            cmd.push_str(&format!(
                " --defrag-every {}ms",
                self.backend.defrag_every_ms
            ));
        }
        if self.workload.pinned_clients > 0 {
            cmd.push_str(&format!(
                " --pinned-clients {}",
                self.workload.pinned_clients
            ));
        }
        for bug in self.bugs.enabled() {
            cmd.push_str(&format!(" --bug {bug}"));
        }
        if let Some(file) = &self.schedule_file {
            cmd.push_str(&format!(" --schedule {file}"));
        }
        // The checker's budget decides whether a hard history is judged or left unknown.
        if self.check_timeout_ms != RunConfig::default().check_timeout_ms {
            cmd.push_str(&format!(" --check-timeout {}ms", self.check_timeout_ms));
        }
        if self.check_memory_bytes != RunConfig::default().check_memory_bytes {
            cmd.push_str(&format!(
                " --check-memory {}",
                crate::size::format_size_bytes(self.check_memory_bytes)
            ));
        }
        cmd
    }
}

/// What the simulation produced, before any checking.
#[derive(Debug, Clone)]
pub struct SimOutput {
    pub history: History,
    /// What every watcher was sent.
    pub watches: WatchHistory,
    /// Ground truth: what the members committed, revision by revision.
    pub committed: CommittedHistory,
    /// Revisions a member applied differently from the first member that applied them.
    pub commit_mismatches: u64,
    pub schedule: Schedule,
    pub trace: Vec<String>,
    pub trace_hash: u64,
    pub faults_injected: usize,
    pub leader_changes: u64,
    /// `Err` when the healed cluster did not commit a write and serve a read in time.
    pub liveness: Result<Duration, String>,
    /// Per member: (revision, hash) once healed, for replica convergence.
    pub replicas: Vec<(NodeId, i64, u64)>,
    /// Every crash point the schedule armed, with how it went.
    pub failpoint_armings: Vec<FailpointArming>,
    /// Times each crash point was reached over the run, per member (armed or not).
    pub failpoint_reaches: BTreeMap<NodeId, BTreeMap<String, u64>>,
    /// HashKV comparisons at one revision, during the run and after healing.
    pub hash_checks: Vec<HashCheck>,
    /// Each member's db file reopened alone at the end.
    pub db_checks: Vec<DbCheck>,
    /// Members that panicked, in order: each a finding.
    pub panics: Vec<MemberPanic>,
    /// Every fault as applied (aims resolved), with its time in ms since the cluster started.
    pub applied_faults: Vec<(u64, String)>,
}

/// The fault schedule of a run: read from its schedule file, or drawn from its seed. A file that
/// does not read or names what the cluster lacks is an error naming the entry.
pub fn schedule_for(config: &RunConfig) -> Result<Schedule, String> {
    let members = ClusterConfig::new(config.nodes).member_ids();
    let schedule = match &config.schedule_file {
        None if config.faults == FaultProfile::Swarm => Schedule::generate_swarm(
            config.seed,
            &members,
            config.duration_ms,
            &config.swarm_focus,
        ),
        None => Schedule::generate(config.seed, config.faults, &members, config.duration_ms),
        Some(file) => {
            let text =
                std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
            Schedule::from_json(&text).map_err(|e| format!("{file}: {e}"))?
        }
    };
    schedule
        .validate(&members)
        .map_err(|e| format!("the fault schedule cannot run: {e}"))?;
    Ok(schedule)
}

/// Runs the simulation of `config` (no checking) with its schedule (see [`schedule_for`]). A
/// schedule the cluster cannot carry out and a panic of the run itself are returned as `Err`; a
/// member's panic is not: it is recorded in the output as a finding.
pub fn simulate_run(config: &RunConfig) -> Result<SimOutput, String> {
    let schedule = schedule_for(config)?;
    simulate_run_with(config, schedule)
}

/// Runs the simulation of `config` with `schedule` instead of the one it would draw.
pub fn simulate_run_with(config: &RunConfig, schedule: Schedule) -> Result<SimOutput, String> {
    let config = config.clone();
    let seed = config.seed;
    let members = ClusterConfig::new(config.nodes).member_ids();
    schedule
        .validate(&members)
        .map_err(|e| format!("the fault schedule cannot run: {e}"))?;
    let result = std::panic::catch_unwind(move || {
        simulate(seed, move || run_in_simulation(config, schedule))
    });
    result.map_err(|panic| faultline_sim::panics::message(panic.as_ref()))
}

async fn run_in_simulation(config: RunConfig, schedule: Schedule) -> SimOutput {
    let mut cluster_config = ClusterConfig::new(config.nodes);
    cluster_config.node.store.bugs = config.bugs.clone();
    cluster_config.node.snapshot_entries = config.snapshot_entries;
    cluster_config.node.catchup_entries = config.snapshot_entries / 2;
    cluster_config.node.backend_batch_limit = config.backend.batch_limit;
    cluster_config.node.compaction_batch_limit = config.backend.compaction_batch_limit;
    let mut cluster = Cluster::start(cluster_config);
    let start = now();
    let recorder = Recorder::new(Clock::Simulated(start));
    let members = cluster.member_ids();
    // Traffic runs for the fault phase on the recorder's clock; watchers stop at the same instant.
    let traffic_until = Duration::from_millis(config.duration_ms);
    let until = start + traffic_until;
    let mut workers = Vec::new();
    for c in 0..config.workload.clients as u64 {
        let (recorder, workload, seed) = (recorder.clone(), config.workload.clone(), config.seed);
        let mut client_config = cluster.client_config();
        if c < u64::from(config.workload.pinned_clients) {
            client_config.members = vec![members[c as usize % members.len()]];
        }
        workers.push(
            cluster.spawn_client(client_config, move |client| async move {
                match workload.kind {
                    WorkloadKind::EtcdKv => {
                        etcd_kv_client(client, recorder, workload, c + 1, seed, traffic_until).await
                    }
                    WorkloadKind::Kubernetes => {
                        kubernetes_client(client, recorder, workload, c + 1, seed, traffic_until)
                            .await
                    }
                }
            }),
        );
    }
    // Watchers: around the current revision, one informer (list then watch), one per member.
    let watch_recorder = WatchRecorder::new(start);
    let stop_watching = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    let mut client_id = config.workload.clients as u64 + 1;
    for _ in 0..config.workload.watchers {
        client_id += 1;
        let (kv, w, seed, id) = (
            recorder.clone(),
            watch_recorder.clone(),
            config.seed,
            client_id,
        );
        let (prefix, keys, per_stream) = (
            config.workload.kind.key_prefix().to_string(),
            config.workload.keys,
            config.workload.watches_per_stream,
        );
        let client_config = cluster.client_config();
        watchers.push(
            cluster.spawn_client(client_config, move |client| async move {
                random_watcher(client, w, kv, prefix, keys, per_stream, id, seed, until).await
            }),
        );
    }
    {
        client_id += 1;
        let (kv, w, id, stop) = (
            recorder.clone(),
            watch_recorder.clone(),
            client_id,
            stop_watching.clone(),
        );
        let prefix = config.workload.kind.prefix().to_string();
        let client_config = cluster.client_config();
        watchers.push(
            cluster.spawn_client(client_config, move |client| async move {
                list_then_watch(client, w, kv, prefix, id, stop).await
            }),
        );
    }
    for member in &members {
        client_id += 1;
        let (w, id, stop) = (watch_recorder.clone(), client_id, stop_watching.clone());
        let mut client_config = cluster.client_config();
        client_config.members = vec![*member];
        watchers.push(
            cluster.spawn_client(client_config, move |client| async move {
                member_follower(client, w, id, stop).await
            }),
        );
    }
    {
        let (recorder, workload, seed) = (recorder.clone(), config.workload.clone(), config.seed);
        let client_id = config.workload.clients as u64 + 1;
        let client_config = cluster.client_config();
        workers.push(
            cluster.spawn_client(client_config, move |client| async move {
                compactor(client, recorder, workload, client_id, seed, traffic_until).await
            }),
        );
    }
    if config.backend.defrag_every_ms > 0 {
        let (members, every, seed) = (members.clone(), config.backend.defrag_every_ms, config.seed);
        let clock = recorder.clock();
        let client_config = cluster.client_config();
        let id = client_id + 100;
        workers.push(
            cluster.spawn_client(client_config, move |client| async move {
                defragmenter(client, members, every, id, seed, clock, traffic_until).await;
            }),
        );
    }
    // The fault phase: apply the schedule on time, watching leadership. Before each fault that
    // follows a calm second, every running member's HashKV is compared at one revision (after a
    // restart, that is once the member had time to catch up).
    let mut driver = FaultDriver::new(schedule);
    let mut leader_changes = 0u64;
    let mut last_leader = None;
    let mut hash_checks = Vec::new();
    let mut last_change = now();
    while now() < until {
        let elapsed_ms = now().duration_since(start).as_millis() as u64;
        while let Some(next) = driver.due(&cluster, elapsed_ms) {
            if now().duration_since(last_change) >= Duration::from_secs(1) {
                let when = format!("before fault {} at {}ms", next + 1, elapsed_ms);
                hash_checks.extend(compare_hashes(&mut cluster, when).await);
            }
            driver.apply(&mut cluster, next);
            last_change = now();
        }
        let leader = cluster.leader().map(|l| (l, cluster.probe(l).term));
        if leader.is_some() && leader != last_leader {
            leader_changes += 1;
            last_leader = leader;
        }
        madsim::time::sleep(Duration::from_millis(50)).await;
    }
    for worker in workers {
        let _ = worker.await;
    }
    // The liveness phase.
    cluster.heal_all();
    let bound = Duration::from_millis(config.liveness_timeout_ms);
    let liveness_recorder = recorder.clone();
    let liveness_client = client_id + 1;
    let healed_at = recorder.clock().elapsed();
    let liveness = cluster
        .with_client(move |client| async move {
            commit_after_healing(
                &client,
                &liveness_recorder,
                liveness_client,
                healed_at,
                bound,
            )
            .await
        })
        .await;
    // Let every member catch up before comparing replicas.
    if let Some(leader) = cluster.leader() {
        let applied = cluster.probe(leader).applied;
        cluster
            .wait_for_applied(applied, Duration::from_secs(10))
            .await;
    }
    madsim::time::sleep(Duration::from_millis(300)).await;
    // Give watchers time to deliver everything committed, then stop them.
    madsim::time::sleep(Duration::from_secs(3)).await;
    stop_watching.store(true, Ordering::SeqCst);
    for watcher in watchers {
        let _ = watcher.await;
    }
    let replicas = members
        .iter()
        .map(|m| {
            let p = cluster.probe(*m);
            (*m, p.revision, p.hash)
        })
        .collect();
    hash_checks.extend(compare_hashes(&mut cluster, "after healing".into()).await);
    let db_checks = reopen_db_files(&mut cluster, &members).await;
    let history = History {
        operations: recorder.operations(),
        meta: config.history_meta(),
    };
    let commits = cluster.commits();
    let revisions: BTreeMap<i64, Vec<CommittedEvent>> = commits
        .revisions()
        .into_iter()
        .map(|(rev, events)| {
            let events = events
                .iter()
                .map(|e| {
                    let w = watch_event(e);
                    CommittedEvent {
                        kind: w.kind,
                        kv: w.kv,
                        prev_kv: w.prev_kv,
                    }
                })
                .collect();
            (rev, events)
        })
        .collect();
    let final_revision = revisions.keys().next_back().copied().unwrap_or(1);
    let committed = CommittedHistory {
        revisions,
        compactions: commits.compactions(),
        final_revision,
        guessed_prev: Default::default(),
    };
    let mut watches = WatchHistory {
        watches: watch_recorder.records(),
        ..WatchHistory::default()
    };
    watches.meta = history.meta.clone();
    SimOutput {
        history,
        watches,
        committed,
        commit_mismatches: commits.mismatches(),
        schedule: driver.schedule().clone(),
        panics: cluster.panics(),
        applied_faults: cluster
            .faults()
            .iter()
            .map(|(at, fault)| (at.as_millis() as u64, fault.to_string()))
            .collect(),
        trace: cluster.trace().recent(),
        trace_hash: cluster.trace().hash(),
        faults_injected: cluster.faults().len(),
        leader_changes,
        liveness,
        replicas,
        failpoint_armings: cluster.failpoint_armings(),
        failpoint_reaches: cluster
            .failpoint_reaches()
            .into_iter()
            .map(|(node, reached)| {
                let reached = reached
                    .into_iter()
                    .map(|(point, n)| (point.to_string(), n))
                    .collect();
                (node, reached)
            })
            .collect(),
        hash_checks,
        db_checks,
    }
}

/// Once every batch commit has had time to land, each member's db file reopened alone (see
/// `faultline_sim::convergence::db_check`).
async fn reopen_db_files(cluster: &mut Cluster, members: &[NodeId]) -> Vec<DbCheck> {
    madsim::time::sleep(Duration::from_millis(500)).await;
    let mut checks = Vec::new();
    for member in members {
        let input = db_check_input(cluster, *member);
        checks.push(
            cluster
                .with_client(move |client| async move { db_check(&client, input).await })
                .await,
        );
    }
    checks
}

/// One HashKV comparison of the running members (see `faultline_sim::convergence`).
async fn compare_hashes(cluster: &mut Cluster, when: String) -> Option<HashCheck> {
    let running = running_members(cluster);
    cluster
        .with_client(move |client| async move { hash_check(&client, &running, &when).await })
        .await
}

/// Writes what a simulated run produced (the history, the schedule, the watch streams, the
/// trace and the config; the report comes after checking, see `crate::artifacts`).
pub fn write_artifacts(
    out: &mut ArtifactWriter,
    config: &RunConfig,
    output: &SimOutput,
) -> std::io::Result<()> {
    out.lines("history.jsonl", |w| output.history.write_to(w))?;
    out.json("schedule.json", &output.schedule)?;
    out.lines("watches.jsonl", |w| output.watches.write_to(w))?;
    out.text("trace.txt", &(output.trace.join("\n") + "\n"))?;
    out.json("config.json", config)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::RunConfig;

    #[test]
    fn the_check_memory_must_be_more_than_nothing_and_goes_into_the_command_when_set() {
        let config = RunConfig {
            check_memory_bytes: 0,
            ..RunConfig::default()
        };
        let error = config.validate().expect_err("0 bytes");
        assert!(error.contains("--check-memory"), "{error}");
        assert!(!RunConfig::default().command().contains("--check-memory"));
        let config = RunConfig {
            check_memory_bytes: 512 << 20,
            ..RunConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
        assert!(config.command().ends_with(" --check-memory 512MiB"));
        assert_eq!(config.check_options().max_bytes, 512 << 20);
    }

    #[test]
    fn a_config_saved_before_the_memory_limit_gets_the_default() {
        let mut saved = serde_json::to_value(RunConfig::default()).expect("configs serialise");
        saved
            .as_object_mut()
            .expect("an object")
            .remove("check_memory_bytes");
        let config: RunConfig = serde_json::from_value(saved).expect("an older config reads");
        assert_eq!(config, RunConfig::default());
    }
}
