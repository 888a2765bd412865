//! Traffic generators: etcd-style KV traffic, Kubernetes-style list/update traffic, and the
//! compaction client. Each client draws every choice from its own ChaCha generator, seeded from
//! the run's seed and its client number, so a run's traffic is a function of its seed.

use std::time::Duration;

use faultline_checkers::history::{
    Compare, CompareResult, CompareTarget, Outcome, Request, Response,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::record::Recorder;
use crate::target::{Clock, Target};

/// Which traffic a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// etcd's robustness-test traffic: gets, lists, stale reads, puts, deletes, multi-op txns,
    /// compare-and-set, leases.
    EtcdKv,
    /// Kubernetes' apiserver pattern: paginated lists, optimistic updates, creates, deletes.
    Kubernetes,
}

impl WorkloadKind {
    pub const NAMES: &'static [&'static str] = &["etcd-kv", "kubernetes"];

    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "etcd-kv" => Ok(WorkloadKind::EtcdKv),
            "kubernetes" | "k8s" => Ok(WorkloadKind::Kubernetes),
            other => Err(format!(
                "unknown workload {other:?}; known: {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            WorkloadKind::EtcdKv => "etcd-kv",
            WorkloadKind::Kubernetes => "kubernetes",
        }
    }

    /// The prefix every key of this traffic starts with (what list-then-watch follows).
    pub fn prefix(&self) -> &'static str {
        match self {
            WorkloadKind::EtcdKv => "key/",
            WorkloadKind::Kubernetes => "/registry/pods/",
        }
    }

    /// The prefix of the keys a watcher picks one of (`<prefix>NNN`).
    pub fn key_prefix(&self) -> &'static str {
        match self {
            WorkloadKind::EtcdKv => "key/",
            WorkloadKind::Kubernetes => "/registry/pods/default/pod-",
        }
    }
}

/// The relative weights of etcd-kv operations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpMix {
    pub get: u32,
    pub list: u32,
    pub stale_get: u32,
    pub put: u32,
    pub delete: u32,
    pub multi_txn: u32,
    pub cas: u32,
    pub lease_put: u32,
    pub lease_revoke: u32,
}

impl OpMix {
    const NAMES: [&'static str; 9] = [
        "get",
        "list",
        "stale_get",
        "put",
        "delete",
        "multi_txn",
        "cas",
        "lease_put",
        "lease_revoke",
    ];

    fn weights_mut(&mut self) -> [&mut u32; 9] {
        [
            &mut self.get,
            &mut self.list,
            &mut self.stale_get,
            &mut self.put,
            &mut self.delete,
            &mut self.multi_txn,
            &mut self.cas,
            &mut self.lease_put,
            &mut self.lease_revoke,
        ]
    }

    /// Parses `put=20,delete=20`: the named weights change, the others keep their defaults.
    pub fn parse(text: &str) -> Result<OpMix, String> {
        let mut mix = OpMix::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part.split_once('=').ok_or_else(|| {
                format!(
                    "{part:?} is not name=weight (names: {})",
                    Self::NAMES.join(", ")
                )
            })?;
            let weight: u32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight {weight:?} of {name:?} is not a whole number"))?;
            let i = Self::NAMES
                .iter()
                .position(|n| *n == name.trim())
                .ok_or_else(|| {
                    format!(
                        "unknown operation {name:?} (names: {})",
                        Self::NAMES.join(", ")
                    )
                })?;
            *mix.weights_mut()[i] = weight;
        }
        if mix.clone().weights_mut().iter().all(|w| **w == 0) {
            return Err("every weight of the mix is 0".to_string());
        }
        Ok(mix)
    }

    /// The mix as `parse` reads it, only the weights that differ from the defaults.
    pub fn diff_from_default(&self) -> String {
        let mut this = self.clone();
        let mut default = OpMix::default();
        let (a, b) = (this.weights_mut(), default.weights_mut());
        Self::NAMES
            .iter()
            .zip(a.iter().zip(b.iter()))
            .filter(|(_, (x, y))| ***x != ***y)
            .map(|(name, (x, _))| format!("{name}={}", **x))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Default for OpMix {
    fn default() -> Self {
        OpMix {
            get: 25,
            list: 8,
            stale_get: 8,
            put: 25,
            delete: 6,
            multi_txn: 6,
            cas: 10,
            lease_put: 4,
            lease_revoke: 2,
        }
    }
}

/// Traffic knobs; every one is logged with the seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadConfig {
    pub kind: WorkloadKind,
    /// Concurrent clients (each has at most one operation in flight).
    pub clients: u32,
    /// Operations per second each client attempts.
    pub rate_per_client: u32,
    /// Keys in the pool (etcd-kv) or pods per namespace (kubernetes).
    pub keys: u32,
    pub mix: OpMix,
    /// How often the compaction client compacts; 0 turns it off.
    pub compact_every_ms: u64,
    /// Lease TTL in seconds: above the run's length, since the checker does not model expiry.
    pub lease_ttl_secs: i64,
    /// Watchers that open watches around the current revision (besides one list-then-watch
    /// informer and one follower per member).
    #[serde(default)]
    pub watchers: u32,
    /// Watches each of those watchers opens at once on one stream: 1 to this many (etcd's
    /// client puts every watch of a client on one stream, so one slow watch slows its peers).
    #[serde(default = "one")]
    pub watches_per_stream: u32,
    /// Clients that talk to one member only (client i to the i-th member, round the cluster),
    /// as each API server of a stacked Kubernetes control plane talks to its local member;
    /// the others fail over across every member.
    #[serde(default)]
    pub pinned_clients: u32,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        WorkloadConfig {
            kind: WorkloadKind::EtcdKv,
            clients: 8,
            rate_per_client: 20,
            keys: 10,
            mix: OpMix::default(),
            compact_every_ms: 3_000,
            lease_ttl_secs: 3_600,
            watchers: 2,
            watches_per_stream: 1,
            pinned_clients: 0,
        }
    }
}

fn one() -> u32 {
    1
}

/// The generator seed of client `client` in a run seeded `seed`.
pub fn client_seed(seed: u64, client: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(client.wrapping_mul(0xbf58_476d_1ce4_e5b9))
}

fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.as_bytes().to_vec();
    *end.last_mut().expect("non-empty prefix") += 1;
    String::from_utf8(end).expect("ASCII prefix")
}

fn get(key: String) -> Request {
    Request::Get {
        key,
        range_end: None,
        revision: 0,
        limit: 0,
        keys_only: false,
        serializable: false,
    }
}

/// The highest revision this client has seen, for stale reads and compaction targets.
fn seen_revision(outcome: &Outcome) -> Option<i64> {
    match outcome {
        Outcome::Ok { revision, .. } => Some(*revision),
        _ => None,
    }
}

/// Paces a client at `rate` operations per second until `until` on `clock`.
struct Pacer {
    clock: Clock,
    next: Duration,
    period: Duration,
    until: Duration,
}

impl Pacer {
    fn new(rate: u32, clock: Clock, until: Duration) -> Self {
        Pacer {
            clock,
            next: clock.elapsed(),
            period: Duration::from_micros(1_000_000 / rate.max(1) as u64),
            until,
        }
    }

    /// Waits for the next slot; false once the traffic phase is over.
    async fn tick(&mut self) -> bool {
        self.next += self.period;
        let at = self.clock.elapsed();
        if self.next > at {
            self.clock.sleep(self.next - at).await;
        } else {
            self.next = at;
        }
        self.clock.elapsed() < self.until
    }
}

/// One etcd-kv client: runs until `until` on the recorder's clock.
pub async fn etcd_kv_client<T: Target>(
    client: T,
    recorder: Recorder,
    config: WorkloadConfig,
    client_id: u64,
    seed: u64,
    until: Duration,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(client_seed(seed, client_id));
    let mix = &config.mix;
    let weights = [
        mix.get,
        mix.list,
        mix.stale_get,
        mix.put,
        mix.delete,
        mix.multi_txn,
        mix.cas,
        mix.lease_put,
        mix.lease_revoke,
    ];
    let total: u32 = weights.iter().sum::<u32>().max(1);
    let keys = config.keys.max(4);
    let key = |i: u32| format!("key/{i:03}");
    let mut seq = 0u64;
    let mut last_revision = 1i64;
    let mut lease: Option<i64> = None;
    let mut pacer = Pacer::new(config.rate_per_client, recorder.clock(), until);
    while pacer.tick().await {
        seq += 1;
        let value = format!("c{client_id}-{seq}");
        let mut pick = rng.gen_range(0..total);
        let mut kind = 0;
        while pick >= weights[kind] {
            pick -= weights[kind];
            kind += 1;
        }
        let request = match kind {
            0 => get(key(rng.gen_range(0..keys))),
            1 => Request::Get {
                key: "key/".into(),
                range_end: Some(prefix_end("key/")),
                revision: 0,
                limit: if rng.gen_bool(0.5) {
                    rng.gen_range(1..5)
                } else {
                    0
                },
                keys_only: rng.gen_bool(0.3),
                serializable: false,
            },
            2 => {
                let past = rng.gen_bool(0.5);
                Request::Get {
                    key: key(rng.gen_range(0..keys)),
                    range_end: None,
                    revision: if past {
                        (last_revision - rng.gen_range(0..10)).max(1)
                    } else {
                        0
                    },
                    limit: 0,
                    keys_only: false,
                    serializable: !past,
                }
            }
            3 => Request::Put {
                key: key(rng.gen_range(0..keys)),
                value,
                lease: 0,
            },
            4 => Request::Delete {
                key: key(rng.gen_range(0..keys)),
                range_end: None,
            },
            5 => {
                let mut picked: Vec<u32> = Vec::new();
                while picked.len() < 4 {
                    let k = rng.gen_range(0..keys);
                    if !picked.contains(&k) {
                        picked.push(k);
                    }
                }
                let ops = picked
                    .iter()
                    .enumerate()
                    .map(|(i, k)| match i % 3 {
                        0 => Request::Put {
                            key: key(*k),
                            value: format!("{value}-{i}"),
                            lease: 0,
                        },
                        1 => get(key(*k)),
                        _ => Request::Delete {
                            key: key(*k),
                            range_end: None,
                        },
                    })
                    .collect();
                Request::Txn {
                    compare: Vec::new(),
                    success: ops,
                    failure: Vec::new(),
                }
            }
            6 => {
                // Compare-and-set: read, then write only if nobody wrote in between.
                let k = key(rng.gen_range(0..keys));
                let read = recorder.call(&client, client_id, get(k.clone())).await;
                last_revision = seen_revision(&read)
                    .unwrap_or(last_revision)
                    .max(last_revision);
                let mod_revision = match &read {
                    Outcome::Ok {
                        response: Response::Get { kvs, .. },
                        ..
                    } => kvs.first().map_or(0, |kv| kv.mod_revision),
                    _ => continue,
                };
                Request::Txn {
                    compare: vec![Compare {
                        key: k.clone(),
                        result: CompareResult::Equal,
                        target: CompareTarget::Mod(mod_revision),
                    }],
                    success: vec![Request::Put {
                        key: k.clone(),
                        value,
                        lease: 0,
                    }],
                    failure: vec![get(k)],
                }
            }
            7 => match lease {
                Some(id) => Request::Put {
                    key: key(rng.gen_range(0..keys)),
                    value,
                    lease: id,
                },
                None => Request::LeaseGrant {
                    ttl: config.lease_ttl_secs,
                    id: 0,
                },
            },
            _ => match lease.take() {
                Some(id) => Request::LeaseRevoke { id },
                None => Request::LeaseGrant {
                    ttl: config.lease_ttl_secs,
                    id: 0,
                },
            },
        };
        let outcome = recorder.call(&client, client_id, request).await;
        if let Outcome::Ok {
            response: Response::LeaseGrant { id, .. },
            ..
        } = &outcome
        {
            lease = Some(*id);
        }
        last_revision = seen_revision(&outcome)
            .unwrap_or(last_revision)
            .max(last_revision);
    }
}

/// One Kubernetes-style client: lists pods page by page, then creates, updates or deletes one
/// with an optimistic-concurrency txn on the revision it saw. Runs until `until` on the
/// recorder's clock.
pub async fn kubernetes_client<T: Target>(
    client: T,
    recorder: Recorder,
    config: WorkloadConfig,
    client_id: u64,
    seed: u64,
    until: Duration,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(client_seed(seed, client_id));
    let namespaces = ["default", "kube-system"];
    let mut seq = 0u64;
    let mut pacer = Pacer::new(config.rate_per_client, recorder.clock(), until);
    while pacer.tick().await {
        seq += 1;
        let ns = namespaces[rng.gen_range(0..namespaces.len())];
        let prefix = format!("/registry/pods/{ns}/");
        let name = format!("{prefix}pod-{:03}", rng.gen_range(0..config.keys.max(1)));
        let value = format!("{{\"client\":{client_id},\"seq\":{seq}}}");
        match rng.gen_range(0..10) {
            0..=2 => {
                // A paginated list: pages of 5 until `more` is false.
                let mut from = prefix.clone();
                for _ in 0..20 {
                    let page = Request::Get {
                        key: from.clone(),
                        range_end: Some(prefix_end(&prefix)),
                        revision: 0,
                        limit: 5,
                        keys_only: false,
                        serializable: false,
                    };
                    match recorder.call(&client, client_id, page).await {
                        Outcome::Ok {
                            response:
                                Response::Get {
                                    kvs, more: true, ..
                                },
                            ..
                        } => {
                            let last = kvs.last().map(|kv| kv.key.clone()).unwrap_or_default();
                            from = format!("{last}\0");
                        }
                        _ => break,
                    }
                }
            }
            3..=4 => {
                let create = Request::Txn {
                    compare: vec![Compare {
                        key: name.clone(),
                        result: CompareResult::Equal,
                        target: CompareTarget::Create(0),
                    }],
                    success: vec![Request::Put {
                        key: name.clone(),
                        value,
                        lease: 0,
                    }],
                    failure: vec![get(name)],
                };
                recorder.call(&client, client_id, create).await;
            }
            _ => {
                let read = recorder.call(&client, client_id, get(name.clone())).await;
                let Outcome::Ok {
                    response: Response::Get { kvs, .. },
                    ..
                } = read
                else {
                    continue;
                };
                let Some(seen) = kvs.first().map(|kv| kv.mod_revision) else {
                    continue;
                };
                let write = if rng.gen_range(0..5) == 0 {
                    Request::Delete {
                        key: name.clone(),
                        range_end: None,
                    }
                } else {
                    Request::Put {
                        key: name.clone(),
                        value,
                        lease: 0,
                    }
                };
                let update = Request::Txn {
                    compare: vec![Compare {
                        key: name.clone(),
                        result: CompareResult::Equal,
                        target: CompareTarget::Mod(seen),
                    }],
                    success: vec![write],
                    failure: vec![get(name)],
                };
                recorder.call(&client, client_id, update).await;
            }
        }
    }
}

/// The compaction client: every `compact_every_ms`, compacts to a revision in and around the live
/// window (a little behind the latest it saw, sometimes at or past it), as an apiserver does.
/// Stops at the first wake-up at or after `until` on the recorder's clock.
pub async fn compactor<T: Target>(
    client: T,
    recorder: Recorder,
    config: WorkloadConfig,
    client_id: u64,
    seed: u64,
    until: Duration,
) {
    if config.compact_every_ms == 0 {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(client_seed(seed, client_id));
    let clock = recorder.clock();
    loop {
        clock
            .sleep(Duration::from_millis(config.compact_every_ms))
            .await;
        if clock.elapsed() >= until {
            return;
        }
        let read = recorder
            .call(&client, client_id, get("key/000".into()))
            .await;
        let Some(revision) = seen_revision(&read) else {
            continue;
        };
        let target = revision - rng.gen_range(-2..50);
        if target >= 1 {
            recorder
                .call(&client, client_id, Request::Compact { revision: target })
                .await;
        }
    }
}

/// The liveness probe after healing: a recorded write, then a recorded linearizable read of
/// `liveness`, retried every 100 ms until both are ok. Returns how long after `healed` (time on
/// the recorder's clock) they committed, or an error once `bound` has passed. Its operations are
/// recorded like every other: they change the revision other reads see.
pub async fn commit_after_healing<T: Target>(
    target: &T,
    recorder: &Recorder,
    client_id: u64,
    healed: Duration,
    bound: Duration,
) -> Result<Duration, String> {
    let clock = recorder.clock();
    let mut attempt = 0u64;
    loop {
        if clock.elapsed().saturating_sub(healed) > bound {
            return Err(format!(
                "no write and read committed within {}ms of healing",
                bound.as_millis()
            ));
        }
        attempt += 1;
        let put = Request::Put {
            key: "liveness".into(),
            value: format!("ok-{attempt}"),
            lease: 0,
        };
        if let Outcome::Ok { .. } = recorder.call(target, client_id, put).await {
            if let Outcome::Ok { .. } = recorder
                .call(target, client_id, get("liveness".into()))
                .await
            {
                return Ok(clock.elapsed().saturating_sub(healed));
            }
        }
        clock.sleep(Duration::from_millis(100)).await;
    }
}
