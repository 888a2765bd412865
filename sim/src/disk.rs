//! The simulated disk of one node: POSIX durability rules plus the faults a real disk shows
//! (power loss, torn writes, latency, stalls, ENOSPC, failing fsyncs), on madsim's clock and RNG.
//!
//! madsim's own fs writes through at once and survives a kill untouched, so it cannot show a node
//! losing what it never synced. [`SimDisk`] keeps two layers instead. The *cached* layer is the
//! page cache: what the node reads back. The *durable* layer is what a power loss leaves. Both
//! layers exist for file contents (per inode) and for the directory (name -> inode):
//!
//! - `append`, `write` and `write_at` change an inode's cached content; `rename` and `remove`
//!   change the cached directory. None of them is durable on its own.
//! - `sync_file(name)` (fsync) makes the content of `name`'s inode durable as it was when the call
//!   started; `sync_dir()` makes the directory durable as it was when the call started. A file
//!   created and fsynced whose directory entry was never synced is therefore lost by a crash:
//!   strict POSIX, the weakest guarantee a real file system gives.
//! - [`SimDisk::crash`] replaces the cached layer with the durable one, optionally keeping a torn
//!   prefix of the latest unsynced append (see its documentation for the exact rule).
//!   [`SimDisk::durable_read`] shows what a crash would leave without crashing.
//!
//! Costs: each inode remembers which byte ranges positional writes (`write_at`, `write`) changed
//! since they were last made durable, so a sync copies only those ranges and the unsynced
//! appended tail, and a crash restores only those: both cost the bytes changed, not the file size.
//! `read` copies the whole file.
//!
//! The state lives behind an `Arc<Mutex<..>>` so the harness keeps a handle that outlives a node's
//! kill and restart while the node holds clones. This module must never hold that lock across an
//! await, read the wall clock, start a thread, iterate an unordered collection, or draw randomness
//! from anything but madsim's seeded RNG: a run must be a function of its seed.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use faultline_store::node::disk::Disk;
use madsim::rand::Rng;

use crate::sim_rng;
use faultline_store::node::time::{now, Instant};
use madsim::time;
use serde::{Deserialize, Serialize};

/// How long one operation takes: drawn uniformly from `min..=max` with madsim's RNG each time;
/// `min == max` is a fixed latency and draws nothing.
///
/// madsim sleeps at least 1 ms, so a non-zero latency below 1 ms costs 1 ms; zero costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latency {
    /// The shortest latency, inclusive.
    pub min: Duration,
    /// The longest latency, inclusive. Never below `min`.
    pub max: Duration,
}

impl Latency {
    /// No latency: the operation takes effect without sleeping.
    pub const ZERO: Latency = Latency {
        min: Duration::ZERO,
        max: Duration::ZERO,
    };

    /// Always exactly `latency`.
    pub fn fixed(latency: Duration) -> Latency {
        Latency {
            min: latency,
            max: latency,
        }
    }

    /// Uniform in `min..=max`.
    pub fn between(min: Duration, max: Duration) -> Latency {
        assert!(min <= max, "latency range {min:?}..={max:?} is empty");
        Latency { min, max }
    }

    fn draw(&self) -> Duration {
        assert!(
            self.min <= self.max,
            "latency range {:?}..={:?} is empty",
            self.min,
            self.max
        );
        if self.min == self.max {
            self.min
        } else {
            sim_rng().gen_range(self.min..=self.max)
        }
    }
}

/// The disk's options: plain data, so a run can print and replay what it used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimDiskConfig {
    /// Time each page-cache operation (`append`, `write`, `write_at`, `rename`, `remove`) takes
    /// before it takes effect. Reads and listings take no time. Default: zero.
    pub write_latency: Latency,
    /// Time each sync (`sync_file`, `sync_dir`) takes, on top of any stall. Default: 1..=3 ms.
    pub sync_latency: Latency,
    /// ENOSPC: an `append`, `write` or `write_at` that would grow the sum of the sizes of the
    /// files the node sees (cached contents of the files in the cached directory) beyond this many
    /// bytes fails with `StorageFull` and changes nothing. A `write_at` inside a file's current
    /// size grows nothing and is never refused. `None`: unlimited. Default: `None`.
    pub capacity_bytes: Option<u64>,
}

impl Default for SimDiskConfig {
    fn default() -> Self {
        SimDiskConfig {
            write_latency: Latency::ZERO,
            sync_latency: Latency::between(Duration::from_millis(1), Duration::from_millis(3)),
            capacity_bytes: None,
        }
    }
}

/// Counters since the disk was made; a crash does not reset them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimDiskStats {
    /// Syncs (`sync_file` and `sync_dir`) that completed successfully.
    pub syncs: u64,
    /// Syncs that failed with an injected error ([`SimDisk::fail_next_sync`]).
    pub syncs_failed: u64,
    /// Syncs that had to wait for a stall to end.
    pub syncs_stalled: u64,
    /// Bytes accepted by `append`, `write` and `write_at`.
    pub bytes_written: u64,
    /// Bytes copied from cached to durable content by `sync_file`: the ranges changed since they
    /// were last made durable, not the whole file.
    pub bytes_synced: u64,
    /// Calls to [`SimDisk::stall`].
    pub stalls: u64,
    /// `append`s, `write`s and `write_at`s refused with ENOSPC.
    pub writes_refused: u64,
    /// Calls to [`SimDisk::crash`].
    pub crashes: u64,
}

/// What a crash destroyed, for the harness's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashReport {
    /// For each file the node saw before the crash: its cached size minus the length of the
    /// longest prefix of that content its inode still holds after the crash (under any name).
    /// A file that did not survive counts in full.
    pub bytes_lost: u64,
    /// Names the node saw before the crash that no longer exist, sorted.
    pub files_lost: Vec<String>,
    /// Names the node did not see before the crash that exist after it (an unsynced `remove`
    /// or `rename` undone), sorted.
    pub files_restored: Vec<String>,
    /// The torn write, if one happened.
    pub torn: Option<TornWrite>,
}

/// A torn write left by a crash: part of a file's unsynced tail survived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornWrite {
    /// The file's name after the crash (its durable name).
    pub name: String,
    /// Bytes of unsynced appended tail the file had before the crash.
    pub tail_bytes: u64,
    /// How many of them survived: `1 <= kept_bytes < tail_bytes`.
    pub kept_bytes: u64,
}

type InodeId = u64;

#[derive(Debug)]
struct Inode {
    /// What the node reads.
    cached: Vec<u8>,
    /// What survives a crash.
    durable: Vec<u8>,
    /// Byte ranges of `cached` that may differ from `durable`: start -> (end, the `version` of the
    /// latest change to them). Disjoint. Below `min(cached.len(), durable.len())` every byte
    /// outside them equals its durable counterpart; bytes of `cached` from `durable.len()` on are
    /// the unsynced tail whether or not a range covers them. A range may reach past the end of
    /// `cached` after the file shrank.
    dirty: BTreeMap<usize, (usize, u64)>,
    /// Bumped by every change to `cached` and by a crash.
    version: u64,
    /// The `version` that `durable` was taken from: a sync that started before the one already
    /// committed must not roll the content back.
    durable_version: u64,
    /// The largest `cached.len()` since the inode was made or last crashed. Neither `durable` nor
    /// the content a sync in flight persists reaches past it, so an append landing below it
    /// (after the file shrank) records a dirty range, and one above it needs none.
    high_water: usize,
    /// Sequence number and `version` of this file's latest append not yet covered by a sync.
    unsynced_append: Option<(u64, u64)>,
}

/// The content a sync persists, taken when it starts: the inode's `version` and cached length
/// then, and the bytes then of every range that might differ from the durable content.
#[derive(Debug)]
struct SyncSnapshot {
    version: u64,
    len: usize,
    pieces: Vec<(usize, Vec<u8>)>,
}

impl Inode {
    fn new() -> Inode {
        Inode {
            cached: Vec::new(),
            durable: Vec::new(),
            dirty: BTreeMap::new(),
            version: 0,
            durable_version: 0,
            high_water: 0,
            unsynced_append: None,
        }
    }

    /// True while `cached` is `durable` followed only by appended bytes: only then is the
    /// unsynced part a tail that a crash can tear.
    fn tail_is_appends(&self) -> bool {
        self.dirty.is_empty() && self.cached.len() >= self.durable.len()
    }

    fn bump(&mut self) -> u64 {
        self.version += 1;
        self.high_water = self.high_water.max(self.cached.len());
        self.version
    }

    /// Records that `start..end` of `cached` changed at `version`.
    fn mark_dirty(&mut self, start: usize, end: usize, version: u64) {
        if start >= end {
            return;
        }
        let overlapping: Vec<usize> = self
            .dirty
            .range(..end)
            .rev()
            .take_while(|(_, &(e, _))| e > start)
            .map(|(&s, _)| s)
            .collect();
        for s in overlapping {
            let (e, v) = self.dirty.remove(&s).expect("an overlapping range exists");
            if s < start {
                self.dirty.insert(s, (start, v));
            }
            if e > end {
                self.dirty.insert(end, (e, v));
            }
        }
        self.dirty.insert(start, (end, version));
    }

    fn append(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let from = self.cached.len();
        let below = self.high_water;
        self.cached.extend_from_slice(data);
        let version = self.bump();
        self.mark_dirty(from, self.cached.len().min(below), version);
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let old_len = self.cached.len();
        let end = offset + data.len();
        if end > old_len {
            self.cached.resize(end, 0);
        }
        self.cached[offset..end].copy_from_slice(data);
        let version = self.bump();
        // A gap the write opened is zeros now, which may differ from old durable bytes too.
        self.mark_dirty(old_len.min(offset), end, version);
    }

    fn replace(&mut self, data: &[u8]) {
        self.cached.clear();
        self.cached.extend_from_slice(data);
        let version = self.bump();
        self.dirty.clear();
        self.mark_dirty(0, data.len(), version);
    }

    /// What a sync starting now persists. Costs the bytes not yet durable, not the file size.
    fn snapshot(&self) -> SyncSnapshot {
        let len = self.cached.len();
        let mut spans: Vec<(usize, usize)> = self
            .dirty
            .iter()
            .map(|(&s, &(e, _))| (s, e.min(len)))
            .filter(|(s, e)| s < e)
            .collect();
        if self.durable.len() < len {
            spans.push((self.durable.len(), len));
        }
        let pieces = merge_spans(spans)
            .into_iter()
            .map(|(s, e)| (s, self.cached[s..e].to_vec()))
            .collect();
        SyncSnapshot {
            version: self.version,
            len,
            pieces,
        }
    }

    /// Makes `snapshot` the durable content unless a sync that started later got there first.
    /// Returns the bytes copied.
    fn commit(&mut self, snapshot: SyncSnapshot) -> usize {
        if snapshot.version <= self.durable_version {
            return 0;
        }
        self.durable.resize(snapshot.len, 0);
        let mut copied = 0;
        for (start, bytes) in &snapshot.pieces {
            self.durable[*start..start + bytes.len()].copy_from_slice(bytes);
            copied += bytes.len();
        }
        self.durable_version = snapshot.version;
        // What changed after the sync started stays dirty; everything else now matches.
        self.dirty.retain(|_, &mut (_, v)| v > snapshot.version);
        if matches!(self.unsynced_append, Some((_, v)) if v <= snapshot.version) {
            self.unsynced_append = None;
        }
        copied
    }

    /// How long a prefix of `cached` survives a crash that keeps `torn` bytes of the unsynced
    /// tail on top of the durable content. Costs the dirty bytes, not the file size.
    fn surviving_prefix(&self, torn: Option<usize>) -> usize {
        if let Some(kept) = torn {
            // Only an appends-only tail tears: `cached` starts with the durable content.
            return self.durable.len() + kept;
        }
        let limit = self.cached.len().min(self.durable.len());
        for (&s, &(e, _)) in &self.dirty {
            if s >= limit {
                break;
            }
            let e = e.min(limit);
            let same = common_prefix_len(&self.cached[s..e], &self.durable[s..e]);
            if same < e - s {
                return s + same;
            }
        }
        limit
    }

    /// The crash: `cached` becomes the durable content plus the first `torn` bytes of the
    /// unsynced tail, and both layers are equal. Costs the bytes changed, not the file size.
    fn crash(&mut self, torn: Option<usize>) {
        match torn {
            Some(kept) => {
                let from = self.durable.len();
                self.cached.truncate(from + kept);
                self.durable.extend_from_slice(&self.cached[from..]);
            }
            None => {
                let old_len = self.cached.len();
                let len = self.durable.len();
                self.cached.resize(len, 0);
                let mut spans: Vec<(usize, usize)> = self
                    .dirty
                    .iter()
                    .map(|(&s, &(e, _))| (s, e.min(len)))
                    .filter(|(s, e)| s < e)
                    .collect();
                if old_len < len {
                    spans.push((old_len, len));
                }
                for (s, e) in merge_spans(spans) {
                    self.cached[s..e].copy_from_slice(&self.durable[s..e]);
                }
            }
        }
        self.dirty.clear();
        self.version += 1;
        self.durable_version = self.version;
        self.high_water = self.cached.len();
        self.unsynced_append = None;
    }
}

#[derive(Debug)]
struct State {
    config: SimDiskConfig,
    inodes: BTreeMap<InodeId, Inode>,
    dir_cached: BTreeMap<String, InodeId>,
    dir_durable: BTreeMap<String, InodeId>,
    /// Bumped by every change to `dir_cached`.
    dir_cached_version: u64,
    /// The `dir_cached_version` that `dir_durable` was taken from: a late `sync_dir` that
    /// started earlier than the one already committed must not roll the directory back.
    dir_durable_version: u64,
    next_inode: InodeId,
    next_append_seq: u64,
    /// Bumped by every crash: an operation still in flight across a crash takes no effect.
    epoch: u64,
    /// Syncs do not complete before this instant.
    stall_until: Option<Instant>,
    /// Errors the next syncs fail with, one each.
    sync_faults: VecDeque<io::ErrorKind>,
    stats: SimDiskStats,
}

/// One node's simulated disk. Cloning gives another handle to the same disk.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // File contents can be large: show only the shape.
        let st = self.lock();
        f.debug_struct("SimDisk")
            .field("files", &st.dir_cached.keys().collect::<Vec<_>>())
            .field("config", &st.config)
            .field("stats", &st.stats)
            .finish()
    }
}

impl SimDisk {
    /// An empty disk.
    pub fn new(config: SimDiskConfig) -> SimDisk {
        check_latency(&config.write_latency);
        check_latency(&config.sync_latency);
        let state = State {
            config,
            inodes: BTreeMap::new(),
            dir_cached: BTreeMap::new(),
            dir_durable: BTreeMap::new(),
            dir_cached_version: 0,
            dir_durable_version: 0,
            next_inode: 1,
            next_append_seq: 1,
            epoch: 0,
            stall_until: None,
            sync_faults: VecDeque::new(),
            stats: SimDiskStats::default(),
        };
        SimDisk {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The current options (after any `set_*`).
    pub fn config(&self) -> SimDiskConfig {
        self.lock().config.clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> SimDiskStats {
        self.lock().stats
    }

    /// Changes the latencies of later operations; operations already sleeping keep theirs.
    pub fn set_latency(&self, write_latency: Latency, sync_latency: Latency) {
        check_latency(&write_latency);
        check_latency(&sync_latency);
        let mut st = self.lock();
        st.config.write_latency = write_latency;
        st.config.sync_latency = sync_latency;
    }

    /// Changes the capacity (`None`: unlimited). Lowering it below what is in use refuses every
    /// later growth and deletes nothing.
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.lock().config.capacity_bytes = capacity_bytes;
    }

    /// Stalls the disk for `duration` of simulated time from now: no sync completes before the
    /// stall ends, whether it started before or during the stall. A stall that would end earlier
    /// than one in force does not shorten it; a longer one extends it, and syncs already waiting
    /// wait for the new end. Reads and page-cache writes are not delayed.
    pub fn stall(&self, duration: Duration) {
        let end = now() + duration;
        let mut st = self.lock();
        st.stall_until = Some(st.stall_until.map_or(end, |until| until.max(end)));
        st.stats.stalls += 1;
    }

    /// The end of the stall in force, if any.
    pub fn stalled_until(&self) -> Option<Instant> {
        self.lock().stall_until.filter(|until| *until > now())
    }

    /// Makes the next sync to start (`sync_file` or `sync_dir`) fail with `kind` after its usual
    /// stall and latency, making nothing durable; the cached layer is kept. Calls queue up: each
    /// fails one more sync.
    pub fn fail_next_sync(&self, kind: io::ErrorKind) {
        self.lock().sync_faults.push_back(kind);
    }

    /// Drops the sync failures [`SimDisk::fail_next_sync`] queued that no sync has hit yet;
    /// returns how many there were.
    pub fn clear_sync_faults(&self) -> usize {
        let mut st = self.lock();
        let dropped = st.sync_faults.len();
        st.sync_faults.clear();
        dropped
    }

    /// Power loss or kill -9: the cached layer is replaced by the durable layer. Call it after the
    /// node's tasks are gone (madsim's `kill` drops them); an operation still in flight across a
    /// crash fails with an error and takes no effect.
    ///
    /// Exactly what survives:
    /// - the durable directory: every name that a completed `sync_dir` recorded, mapping to the
    ///   inode it named then; everything else in the cached directory is gone, and inodes no
    ///   durable name refers to are dropped;
    /// - for each surviving inode, its durable content: what the completed `sync_file` that
    ///   started last saw (empty if it was never synced); an unsynced `write` or `write_at` is
    ///   lost whole, and the bytes it overwrote keep their durable value;
    /// - with `torn == true`, a torn write on top of that, at most one per crash. The candidate is
    ///   the file holding the disk's most recent append that no sync has covered since (a
    ///   `write` or `write_at` to the file cancels its earlier appends). The tear happens only if
    ///   that file's inode survives, its unsynced part is appends only (every `write` and
    ///   `write_at` to it covered by a completed sync), and
    ///   that unsynced tail `T` is at least 2 bytes long; then a prefix `T[..k]` survives after
    ///   the durable content, with `k` drawn uniformly from `1..T.len()` by madsim's RNG (so
    ///   non-empty and strictly shorter than `T`; it may end inside any earlier unsynced append of
    ///   that file). The RNG is drawn only when a tear happens. No other file gains anything.
    ///
    /// After the crash every file's cached and durable contents are equal;
    /// [`durable_read`](Self::durable_read) showed beforehand what a crash without a tear leaves.
    /// A crash costs the bytes changed since they were last made durable, not the file sizes. Options, stalls,
    /// injected sync errors and counters are kept. Call it inside the madsim runtime: the tear
    /// draws from its RNG.
    pub fn crash(&self, torn: bool) -> CrashReport {
        let mut guard = self.lock();
        let st = &mut *guard;
        let tear = if torn { st.choose_tear() } else { None };
        let kept_by = |id: InodeId| tear.filter(|&(torn_id, _)| torn_id == id).map(|(_, k)| k);

        let live: BTreeSet<InodeId> = st.dir_durable.values().copied().collect();
        let mut bytes_lost = 0u64;
        for id in st.dir_cached.values() {
            let inode = &st.inodes[id];
            let kept = if live.contains(id) {
                inode.surviving_prefix(kept_by(*id))
            } else {
                0
            };
            bytes_lost += (inode.cached.len() - kept) as u64;
        }
        let files_lost: Vec<String> = st
            .dir_cached
            .keys()
            .filter(|name| !st.dir_durable.contains_key(*name))
            .cloned()
            .collect();
        let files_restored: Vec<String> = st
            .dir_durable
            .keys()
            .filter(|name| !st.dir_cached.contains_key(*name))
            .cloned()
            .collect();
        let torn = tear.map(|(id, kept)| {
            let inode = &st.inodes[&id];
            let name = st
                .dir_durable
                .iter()
                .find(|(_, &i)| i == id)
                .map(|(n, _)| n.clone());
            TornWrite {
                name: name.expect("a torn file has a durable name"),
                tail_bytes: (inode.cached.len() - inode.durable.len()) as u64,
                kept_bytes: kept as u64,
            }
        });

        st.inodes.retain(|id, _| live.contains(id));
        for (&id, inode) in st.inodes.iter_mut() {
            inode.crash(kept_by(id));
        }
        st.dir_cached = st.dir_durable.clone();
        st.dir_cached_version += 1;
        st.dir_durable_version = st.dir_cached_version;
        st.epoch += 1;
        st.stats.crashes += 1;
        st.check_invariants_cheap();
        if let Some(t) = &torn {
            assert!(t.kept_bytes >= 1, "a tear keeps something");
            assert!(t.kept_bytes < t.tail_bytes, "a tear keeps a strict prefix");
        }
        CrashReport {
            bytes_lost,
            files_lost,
            files_restored,
            torn,
        }
    }

    /// The content of `name` as [`crash(false)`](Self::crash) would leave it right now, without
    /// crashing: `None` unless the durable directory holds `name`; otherwise the durable content
    /// of the inode it names there (empty if never synced), even if the node has since removed or
    /// renamed it. A torn crash may leave more: a prefix of the latest unsynced append on top.
    pub fn durable_read(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.lock();
        let id = st.dir_durable.get(name)?;
        Some(st.inodes[id].durable.clone())
    }

    /// The names a crash would leave right now, sorted: the durable directory.
    pub fn durable_list(&self) -> Vec<String> {
        self.lock().dir_durable.keys().cloned().collect()
    }

    /// The content of `name` as the node sees it (page cache included), without taking any
    /// simulated time; `None` if the node sees no such file.
    pub fn cached_read(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.lock();
        let id = st.dir_cached.get(name)?;
        Some(st.inodes[id].cached.clone())
    }

    /// Checks the disk's internal invariants, including the costly ones (content prefixes);
    /// panics on a broken one. Every operation checks the cheap ones itself.
    pub fn check_invariants(&self) {
        let st = self.lock();
        st.check_invariants_cheap();
        for (id, inode) in &st.inodes {
            let common = inode.cached.len().min(inode.durable.len());
            let mut clean = 0;
            let dirty = inode
                .dirty
                .range(..common)
                .map(|(&s, &(e, _))| (s, e.min(common)));
            for (s, e) in dirty.chain([(common, common)]) {
                assert!(
                    inode.cached[clean..s] == inode.durable[clean..s],
                    "inode {id}: bytes {clean}..{s} differ outside the dirty ranges"
                );
                clean = e;
            }
            if inode.tail_is_appends() {
                assert!(
                    inode.cached.starts_with(&inode.durable),
                    "inode {id}: tail is not an append"
                );
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("sim disk state poisoned: a panic broke an invariant")
    }

    /// Sleeps for `latency` unless it is zero (madsim would round zero up to 1 ms).
    async fn take(latency: Duration) {
        if !latency.is_zero() {
            time::sleep(latency).await;
        }
    }

    /// Waits until no stall is in force; true if it had to wait. Re-reads the end after each
    /// wait because a stall can be extended meanwhile.
    async fn wait_out_stall(&self) -> bool {
        let mut waited = false;
        loop {
            let until = self.lock().stall_until;
            match until {
                Some(until) if until > now() => {
                    waited = true;
                    time::sleep_until(until).await;
                }
                _ => return waited,
            }
        }
    }

    /// A sync's time on the device: any stall, its latency, and any stall that began meanwhile,
    /// so no sync completes while the disk is stalled.
    async fn sync_delay(&self, latency: Duration) {
        let mut stalled = self.wait_out_stall().await;
        Self::take(latency).await;
        stalled |= self.wait_out_stall().await;
        if stalled {
            self.lock().stats.syncs_stalled += 1;
        }
    }

    /// The start of a page-cache operation: the epoch it belongs to, after its latency.
    async fn page_cache_op(&self, names: &[&str]) -> io::Result<u64> {
        for name in names {
            check_name(name)?;
        }
        let (epoch, latency) = {
            let st = self.lock();
            (st.epoch, st.config.write_latency.draw())
        };
        Self::take(latency).await;
        Ok(epoch)
    }
}

impl State {
    fn check_epoch(&self, epoch: u64) -> io::Result<()> {
        if self.epoch == epoch {
            Ok(())
        } else {
            Err(io::Error::other(
                "the simulated disk crashed while this operation was in flight",
            ))
        }
    }

    /// The sum of the cached sizes of the files the node sees.
    fn used_bytes(&self) -> u64 {
        self.dir_cached
            .values()
            .map(|id| self.inodes[id].cached.len() as u64)
            .sum()
    }

    /// ENOSPC if changing `name`'s size to `size_after` grows usage beyond the capacity.
    fn check_space(&mut self, name: &str, size_after: u64) -> io::Result<()> {
        let Some(capacity) = self.config.capacity_bytes else {
            return Ok(());
        };
        let used = self.used_bytes();
        let size_before = self
            .dir_cached
            .get(name)
            .map_or(0, |id| self.inodes[id].cached.len() as u64);
        let used_after = used - size_before + size_after;
        if used_after > capacity && used_after > used {
            self.stats.writes_refused += 1;
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "no space left on device (simulated ENOSPC): {used_after} > {capacity} bytes"
                ),
            ));
        }
        Ok(())
    }

    /// Makes `name` an empty file in the cached directory.
    fn create(&mut self, name: &str) -> InodeId {
        assert!(
            !self.dir_cached.contains_key(name),
            "create over an existing name"
        );
        let id = self.next_inode;
        self.next_inode += 1;
        assert!(
            self.inodes.insert(id, Inode::new()).is_none(),
            "inode ids are never reused"
        );
        self.dir_cached.insert(name.to_owned(), id);
        self.dir_cached_version += 1;
        id
    }

    /// The inode `name` names in the cached directory, created empty if there is none.
    fn open_or_create(&mut self, name: &str) -> &mut Inode {
        let id = match self.dir_cached.get(name) {
            Some(&id) => id,
            None => self.create(name),
        };
        self.inodes.get_mut(&id).expect("a named inode exists")
    }

    /// Makes the content inode `id` had when a sync started, `snapshot`, durable.
    fn commit_file(&mut self, id: InodeId, snapshot: SyncSnapshot) {
        let Some(inode) = self.inodes.get_mut(&id) else {
            // Removed for good meanwhile: fsync of an unlinked file persists nothing visible.
            return;
        };
        let synced = inode.commit(snapshot);
        self.stats.bytes_synced += synced as u64;
    }

    /// The torn write a crash would leave: the inode and how many tail bytes it keeps.
    fn choose_tear(&self) -> Option<(InodeId, usize)> {
        let (&id, inode) = self
            .inodes
            .iter()
            .filter(|(_, inode)| inode.unsynced_append.is_some())
            .max_by_key(|(_, inode)| inode.unsynced_append.map(|(seq, _)| seq))?;
        let survives = self.dir_durable.values().any(|&i| i == id);
        if !survives || !inode.tail_is_appends() {
            return None;
        }
        let tail = inode.cached.len() - inode.durable.len();
        if tail < 2 {
            return None;
        }
        Some((id, sim_rng().gen_range(1..tail)))
    }

    /// Drops inodes neither directory refers to.
    fn collect_garbage(&mut self) {
        let live: BTreeSet<InodeId> = self
            .dir_cached
            .values()
            .chain(self.dir_durable.values())
            .copied()
            .collect();
        self.inodes.retain(|id, _| live.contains(id));
    }

    fn check_invariants_cheap(&self) {
        let cached: BTreeSet<InodeId> = self.dir_cached.values().copied().collect();
        let durable: BTreeSet<InodeId> = self.dir_durable.values().copied().collect();
        assert_eq!(
            cached.len(),
            self.dir_cached.len(),
            "an inode has two cached names"
        );
        assert_eq!(
            durable.len(),
            self.dir_durable.len(),
            "an inode has two durable names"
        );
        for id in cached.iter().chain(&durable) {
            assert!(
                self.inodes.contains_key(id),
                "directory names missing inode {id}"
            );
        }
        for id in self.inodes.keys() {
            assert!(
                cached.contains(id) || durable.contains(id),
                "inode {id} leaked"
            );
            assert!(*id < self.next_inode, "inode {id} from the future");
        }
        for (id, inode) in &self.inodes {
            if inode.tail_is_appends() && inode.unsynced_append.is_some() {
                assert!(
                    inode.cached.len() > inode.durable.len(),
                    "inode {id}: empty tail"
                );
            }
            if let Some((seq, version)) = inode.unsynced_append {
                assert!(
                    seq < self.next_append_seq,
                    "inode {id}: append from the future"
                );
                assert!(
                    inode.durable_version < version && version <= inode.version,
                    "inode {id}: the unsynced append is covered"
                );
            }
            assert!(
                inode.durable_version <= inode.version,
                "inode {id}: durable content from the future"
            );
            assert!(
                inode.durable.len() <= inode.high_water && inode.cached.len() <= inode.high_water,
                "inode {id}: content beyond its high water mark"
            );
            let mut end = 0;
            for (&s, &(e, v)) in &inode.dirty {
                assert!(
                    end <= s && s < e,
                    "inode {id}: dirty ranges overlap or are empty"
                );
                assert!(
                    inode.durable_version < v && v <= inode.version,
                    "inode {id}: dirty range of a durable or future version"
                );
                end = e;
            }
        }
        assert!(
            self.dir_durable_version <= self.dir_cached_version,
            "durable dir from the future"
        );
    }
}

impl Disk for SimDisk {
    async fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        check_name(name)?;
        let st = self.lock();
        let id = st.dir_cached.get(name).ok_or_else(|| not_found(name))?;
        Ok(st.inodes[id].cached.clone())
    }

    async fn len(&self, name: &str) -> io::Result<u64> {
        check_name(name)?;
        let st = self.lock();
        let id = st.dir_cached.get(name).ok_or_else(|| not_found(name))?;
        Ok(st.inodes[id].cached.len() as u64)
    }

    async fn append(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let epoch = self.page_cache_op(&[name]).await?;
        let mut st = self.lock();
        st.check_epoch(epoch)?;
        let size_before = st
            .dir_cached
            .get(name)
            .map_or(0, |id| st.inodes[id].cached.len());
        st.check_space(name, (size_before + data.len()) as u64)?;
        let seq = st.next_append_seq;
        st.next_append_seq += 1;
        let inode = st.open_or_create(name);
        inode.append(data);
        if !data.is_empty() {
            inode.unsynced_append = Some((seq, inode.version));
        }
        assert_eq!(
            inode.cached.len(),
            size_before + data.len(),
            "append grows by its length"
        );
        st.stats.bytes_written += data.len() as u64;
        st.check_invariants_cheap();
        Ok(())
    }

    async fn write(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let epoch = self.page_cache_op(&[name]).await?;
        let mut st = self.lock();
        st.check_epoch(epoch)?;
        st.check_space(name, data.len() as u64)?;
        let inode = st.open_or_create(name);
        inode.replace(data);
        inode.unsynced_append = None;
        st.stats.bytes_written += data.len() as u64;
        st.check_invariants_cheap();
        Ok(())
    }

    async fn write_at(&self, name: &str, offset: u64, data: &[u8]) -> io::Result<()> {
        check_name(name)?;
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= isize::MAX as u64)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::FileTooLarge,
                    format!(
                        "write of {} bytes at offset {offset} of {name} is beyond the simulated disk",
                        data.len()
                    ),
                )
            })?;
        let epoch = self.page_cache_op(&[name]).await?;
        let mut st = self.lock();
        st.check_epoch(epoch)?;
        let size_before = st
            .dir_cached
            .get(name)
            .map_or(0, |id| st.inodes[id].cached.len() as u64);
        let size_after = if data.is_empty() {
            size_before
        } else {
            size_before.max(end)
        };
        st.check_space(name, size_after)?;
        let inode = st.open_or_create(name);
        inode.write_at(offset as usize, data);
        if !data.is_empty() {
            // Like a `write`: the unsynced part is no longer appends only.
            inode.unsynced_append = None;
        }
        assert_eq!(
            inode.cached.len() as u64,
            size_after,
            "write_at grows to its end"
        );
        st.stats.bytes_written += data.len() as u64;
        st.check_invariants_cheap();
        Ok(())
    }

    async fn sync_file(&self, name: &str) -> io::Result<()> {
        check_name(name)?;
        let (epoch, id, snapshot, fault, latency) = {
            let mut st = self.lock();
            let id = *st.dir_cached.get(name).ok_or_else(|| not_found(name))?;
            let fault = st.sync_faults.pop_front();
            // Taken now: the sync persists the content as it is when it starts.
            let snapshot = match fault {
                None => Some(st.inodes[&id].snapshot()),
                Some(_) => None,
            };
            (st.epoch, id, snapshot, fault, st.config.sync_latency.draw())
        };
        self.sync_delay(latency).await;
        let mut st = self.lock();
        st.check_epoch(epoch)?;
        if let Some(kind) = fault {
            st.stats.syncs_failed += 1;
            return Err(io::Error::new(
                kind,
                format!("simulated fsync failure on {name}"),
            ));
        }
        st.commit_file(id, snapshot.expect("a sync without a fault has a snapshot"));
        st.stats.syncs += 1;
        st.check_invariants_cheap();
        Ok(())
    }

    async fn sync_dir(&self) -> io::Result<()> {
        let (epoch, snapshot, version, fault, latency) = {
            let mut st = self.lock();
            let fault = st.sync_faults.pop_front();
            let latency = st.config.sync_latency.draw();
            (
                st.epoch,
                st.dir_cached.clone(),
                st.dir_cached_version,
                fault,
                latency,
            )
        };
        self.sync_delay(latency).await;
        let mut st = self.lock();
        st.check_epoch(epoch)?;
        if let Some(kind) = fault {
            st.stats.syncs_failed += 1;
            return Err(io::Error::new(
                kind,
                "simulated fsync failure on the directory",
            ));
        }
        if version > st.dir_durable_version {
            // An inode removed for good while this sync ran is gone: its removal counts as
            // persisted too, which a real file system may also do at any time.
            let mut durable = snapshot;
            durable.retain(|_, id| st.inodes.contains_key(id));
            st.dir_durable = durable;
            st.dir_durable_version = version;
            st.collect_garbage();
        }
        st.stats.syncs += 1;
        st.check_invariants_cheap();
        Ok(())
    }

    async fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let epoch = self.page_cache_op(&[from, to]).await?;
        let mut st = self.lock();
        st.check_epoch(epoch)?;
        let id = *st.dir_cached.get(from).ok_or_else(|| not_found(from))?;
        if from != to {
            st.dir_cached.remove(from);
            st.dir_cached.insert(to.to_owned(), id);
            st.dir_cached_version += 1;
            st.collect_garbage();
        }
        assert_eq!(
            st.dir_cached.get(to),
            Some(&id),
            "rename lands at its target"
        );
        st.check_invariants_cheap();
        Ok(())
    }

    async fn remove(&self, name: &str) -> io::Result<()> {
        let epoch = self.page_cache_op(&[name]).await?;
        let mut st = self.lock();
        st.check_epoch(epoch)?;
        st.dir_cached.remove(name).ok_or_else(|| not_found(name))?;
        st.dir_cached_version += 1;
        st.collect_garbage();
        st.check_invariants_cheap();
        Ok(())
    }

    async fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().dir_cached.keys().cloned().collect())
    }
}

fn check_latency(latency: &Latency) {
    assert!(
        latency.min <= latency.max,
        "latency range {:?}..={:?} is empty",
        latency.min,
        latency.max
    );
}

/// The directory is flat: a name is one non-empty path component.
fn check_name(name: &str) -> io::Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad file name {name:?}"),
        ));
    }
    Ok(())
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such file: {name}"))
}

fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Sorts `spans` and merges those that overlap or touch.
fn merge_spans(mut spans: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (s, e) in spans {
        match merged.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    fn run<T>(seed: u64, test: impl Future<Output = T>) -> T {
        madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default())
            .block_on(test)
    }

    /// No latency, so tests can reason about exact simulated times.
    fn instant_disk() -> SimDisk {
        SimDisk::new(SimDiskConfig {
            sync_latency: Latency::ZERO,
            ..SimDiskConfig::default()
        })
    }

    async fn durable_file(disk: &SimDisk, name: &str, data: &[u8]) {
        disk.write(name, data).await.unwrap();
        disk.sync_file(name).await.unwrap();
        disk.sync_dir().await.unwrap();
    }

    fn kind<T: fmt::Debug>(result: io::Result<T>) -> io::ErrorKind {
        result.expect_err("expected an error").kind()
    }

    #[test]
    fn unsynced_appends_vanish_on_crash() {
        run(1, async {
            let disk = SimDisk::new(SimDiskConfig::default());
            disk.append("wal", b"abc").await.unwrap();
            disk.sync_file("wal").await.unwrap();
            disk.sync_dir().await.unwrap();
            disk.append("wal", b"def").await.unwrap();
            disk.append("wal", b"gh").await.unwrap();
            assert_eq!(disk.read("wal").await.unwrap(), b"abcdefgh");

            let report = disk.crash(false);
            assert_eq!(disk.read("wal").await.unwrap(), b"abc");
            assert_eq!(
                report,
                CrashReport {
                    bytes_lost: 5,
                    files_lost: vec![],
                    files_restored: vec![],
                    torn: None
                }
            );
            disk.check_invariants();
        });
    }

    #[test]
    fn synced_data_survives_crash() {
        run(2, async {
            let disk = SimDisk::new(SimDiskConfig::default());
            durable_file(&disk, "snap", b"image").await;
            disk.append("wal", b"e1").await.unwrap();
            disk.append("wal", b"e2").await.unwrap();
            disk.sync_file("wal").await.unwrap();
            disk.sync_dir().await.unwrap();

            let report = disk.crash(true);
            assert_eq!(disk.read("snap").await.unwrap(), b"image");
            assert_eq!(disk.read("wal").await.unwrap(), b"e1e2");
            assert_eq!(disk.list().await.unwrap(), ["snap", "wal"]);
            assert_eq!(report.bytes_lost, 0);
            assert_eq!(report.torn, None);
            // Surviving content is durable again: a second crash changes nothing.
            assert_eq!(disk.crash(true).bytes_lost, 0);
            assert_eq!(disk.read("wal").await.unwrap(), b"e1e2");
            assert_eq!(disk.stats().crashes, 2);
            disk.check_invariants();
        });
    }

    #[test]
    fn fsynced_file_without_sync_dir_vanishes_on_crash() {
        run(3, async {
            let disk = SimDisk::new(SimDiskConfig::default());
            disk.append("wal-0001", b"entries").await.unwrap();
            disk.sync_file("wal-0001").await.unwrap();
            assert_eq!(disk.list().await.unwrap(), ["wal-0001"]);

            let report = disk.crash(true);
            assert_eq!(kind(disk.read("wal-0001").await), io::ErrorKind::NotFound);
            assert!(disk.list().await.unwrap().is_empty());
            assert_eq!(report.files_lost, ["wal-0001"]);
            assert_eq!(report.bytes_lost, 7);
            assert_eq!(report.torn, None);
            disk.check_invariants();
        });
    }

    #[test]
    fn sync_dir_without_sync_file_keeps_an_empty_file() {
        run(4, async {
            let disk = SimDisk::new(SimDiskConfig::default());
            disk.write("meta", b"v1").await.unwrap();
            disk.sync_dir().await.unwrap();
            disk.crash(false);
            assert_eq!(disk.read("meta").await.unwrap(), b"");
        });
    }

    #[test]
    fn rename_is_atomic_and_durable_only_after_sync_dir() {
        run(5, async {
            let disk = SimDisk::new(SimDiskConfig::default());
            durable_file(&disk, "conf", b"old").await;
            disk.write("conf.tmp", b"new").await.unwrap();
            disk.sync_file("conf.tmp").await.unwrap();
            disk.rename("conf.tmp", "conf").await.unwrap();
            // The node sees the replacement at once, with no moment where `conf` is missing.
            assert_eq!(disk.read("conf").await.unwrap(), b"new");
            assert_eq!(disk.list().await.unwrap(), ["conf"]);

            // Without sync_dir the rename is undone, and the never-synced `conf.tmp` is gone.
            let report = disk.crash(false);
            assert_eq!(disk.read("conf").await.unwrap(), b"old");
            assert_eq!(disk.list().await.unwrap(), ["conf"]);
            assert_eq!(report.files_lost, Vec::<String>::new());
            assert_eq!(report.bytes_lost, 3);

            // With sync_dir it holds, and the old inode is dropped.
            disk.write("conf.tmp", b"new").await.unwrap();
            disk.sync_file("conf.tmp").await.unwrap();
            disk.rename("conf.tmp", "conf").await.unwrap();
            disk.sync_dir().await.unwrap();
            assert_eq!(disk.crash(false).bytes_lost, 0);
            assert_eq!(disk.read("conf").await.unwrap(), b"new");
            assert_eq!(disk.list().await.unwrap(), ["conf"]);
            disk.check_invariants();
        });
    }

    #[test]
    fn unsynced_rename_of_a_durable_name_restores_the_old_name() {
        run(6, async {
            let disk = SimDisk::new(SimDiskConfig::default());
            durable_file(&disk, "a", b"x").await;
            disk.rename("a", "b").await.unwrap();
            assert_eq!(kind(disk.read("a").await), io::ErrorKind::NotFound);
            let report = disk.crash(false);
            assert_eq!(disk.list().await.unwrap(), ["a"]);
            assert_eq!(disk.read("a").await.unwrap(), b"x");
            assert_eq!(report.files_lost, ["b"]);
            assert_eq!(report.files_restored, ["a"]);
            // The inode survived under another name: no bytes lost.
            assert_eq!(report.bytes_lost, 0);
        });
    }

    #[test]
    fn remove_is_durable_only_after_sync_dir() {
        run(7, async {
            let disk = SimDisk::new(SimDiskConfig::default());
            durable_file(&disk, "wal-0001", b"old entries").await;
            disk.remove("wal-0001").await.unwrap();
            assert_eq!(kind(disk.read("wal-0001").await), io::ErrorKind::NotFound);
            assert_eq!(kind(disk.remove("wal-0001").await), io::ErrorKind::NotFound);

            let report = disk.crash(false);
            assert_eq!(disk.read("wal-0001").await.unwrap(), b"old entries");
            assert_eq!(report.files_restored, ["wal-0001"]);

            disk.remove("wal-0001").await.unwrap();
            disk.sync_dir().await.unwrap();
            let report = disk.crash(false);
            assert!(disk.list().await.unwrap().is_empty());
            assert_eq!(report.files_restored, Vec::<String>::new());
            disk.check_invariants();
        });
    }

    #[test]
    fn torn_crash_keeps_a_strict_prefix_of_the_unsynced_tail() {
        for seed in 0..20 {
            run(seed, async {
                let disk = SimDisk::new(SimDiskConfig::default());
                durable_file(&disk, "other", b"OTHER").await;
                disk.append("wal", b"HEAD").await.unwrap();
                disk.sync_file("wal").await.unwrap();
                disk.sync_dir().await.unwrap();
                // An earlier unsynced append elsewhere is lost whole.
                disk.append("other", b"+lost").await.unwrap();
                disk.append("wal", b"0123456789").await.unwrap();
                disk.append("wal", b"abcdefghij").await.unwrap();

                let report = disk.crash(true);
                let torn = report
                    .torn
                    .clone()
                    .expect("the latest unsynced append tears");
                assert_eq!(torn.name, "wal");
                assert_eq!(torn.tail_bytes, 20);
                assert!(
                    (1..20).contains(&torn.kept_bytes),
                    "kept {}",
                    torn.kept_bytes
                );
                let kept = torn.kept_bytes as usize;
                let mut expected = b"HEAD".to_vec();
                expected.extend_from_slice(&b"0123456789abcdefghij"[..kept]);
                assert_eq!(disk.read("wal").await.unwrap(), expected);
                assert_eq!(disk.read("other").await.unwrap(), b"OTHER");
                assert_eq!(report.bytes_lost, (20 - kept + 5) as u64);
                assert_eq!(report.files_lost, Vec::<String>::new());
                disk.check_invariants();
            });
        }
    }

    #[test]
    fn torn_crash_tears_only_the_file_with_the_latest_unsynced_append() {
        run(8, async {
            let disk = SimDisk::new(SimDiskConfig::default());
            durable_file(&disk, "a", b"").await;
            durable_file(&disk, "b", b"").await;
            disk.append("a", b"aaaa").await.unwrap();
            disk.append("b", b"bbbb").await.unwrap();
            disk.sync_file("b").await.unwrap();
            // `b`'s append is synced, so `a` holds the latest unsynced append.
            let torn = disk.crash(true).torn.expect("a tears");
            assert_eq!(torn.name, "a");
            assert_eq!(disk.read("b").await.unwrap(), b"bbbb");

            // A `write` is no append: the file it touched cannot tear, and no other file does.
            let a_before = disk.read("a").await.unwrap();
            disk.append("a", b"aaaa").await.unwrap();
            disk.write("b", b"rewritten").await.unwrap();
            disk.append("b", b"more").await.unwrap();
            assert_eq!(disk.crash(true).torn, None);
            assert_eq!(disk.read("a").await.unwrap(), a_before);
            assert_eq!(disk.read("b").await.unwrap(), b"bbbb");

            // A file whose name never became durable cannot tear either.
            disk.append("c", b"cccc").await.unwrap();
            assert_eq!(disk.crash(true).torn, None);
            assert_eq!(disk.list().await.unwrap(), ["a", "b"]);
            disk.check_invariants();
        });
    }

    #[test]
    fn same_seed_gives_same_torn_prefix() {
        fn kept_bytes(seed: u64) -> u64 {
            run(seed, async {
                let disk = SimDisk::new(SimDiskConfig::default());
                durable_file(&disk, "wal", b"").await;
                disk.append("wal", &[7u8; 1000]).await.unwrap();
                disk.crash(true).torn.expect("a tear").kept_bytes
            })
        }
        for seed in [11, 12, 13] {
            assert_eq!(kept_bytes(seed), kept_bytes(seed), "seed {seed}");
        }
        let distinct: BTreeSet<u64> = (20..30).map(kept_bytes).collect();
        assert!(
            distinct.len() > 1,
            "the tear depends on the seed: {distinct:?}"
        );
    }

    #[test]
    fn enospc_refuses_and_changes_nothing() {
        run(9, async {
            let disk = SimDisk::new(SimDiskConfig {
                capacity_bytes: Some(10),
                ..SimDiskConfig::default()
            });
            disk.write("a", b"123456").await.unwrap();
            assert_eq!(
                kind(disk.append("a", b"12345").await),
                io::ErrorKind::StorageFull
            );
            assert_eq!(
                kind(disk.write("b", b"12345").await),
                io::ErrorKind::StorageFull
            );
            assert_eq!(disk.read("a").await.unwrap(), b"123456");
            assert_eq!(disk.list().await.unwrap(), ["a"]);
            // Exactly full is allowed; replacing a file counts only the difference.
            disk.append("a", b"7890").await.unwrap();
            disk.write("a", b"1234567890").await.unwrap();
            // Over capacity after a lowered limit: shrinking still works, growing does not.
            disk.set_capacity(Some(4));
            disk.write("a", b"12345").await.unwrap();
            assert_eq!(
                kind(disk.append("a", b"6").await),
                io::ErrorKind::StorageFull
            );
            disk.set_capacity(None);
            disk.append("a", b"6").await.unwrap();
            assert_eq!(disk.read("a").await.unwrap(), b"123456");
            let stats = disk.stats();
            assert_eq!(stats.writes_refused, 3);
            assert_eq!(stats.bytes_written, 6 + 4 + 10 + 5 + 1);
            disk.check_invariants();
        });
    }

    #[test]
    fn stall_delays_a_sync_by_its_duration_while_reads_proceed() {
        run(10, async {
            let disk = SimDisk::new(SimDiskConfig {
                sync_latency: Latency::fixed(Duration::from_millis(2)),
                ..SimDiskConfig::default()
            });
            disk.append("wal", b"entry").await.unwrap();
            let start = now();
            disk.stall(Duration::from_secs(5));
            let syncer = disk.clone();
            let sync = madsim::task::spawn(async move {
                syncer.sync_file("wal").await.unwrap();
                now()
            });
            time::sleep(Duration::from_millis(100)).await;
            assert_eq!(disk.read("wal").await.unwrap(), b"entry");
            disk.append("wal", b"+more").await.unwrap();
            assert!(
                start.elapsed() < Duration::from_millis(101),
                "reads and appends do not wait"
            );
            assert!(disk.stalled_until().is_some());

            let synced_at = sync.await.unwrap();
            let took = synced_at - start;
            assert!(took >= Duration::from_millis(5002), "took {took:?}");
            assert!(took < Duration::from_millis(5003), "took {took:?}");
            assert_eq!(disk.stats().syncs_stalled, 1);
            // Only what was there when the sync started is durable.
            disk.sync_dir().await.unwrap();
            disk.crash(false);
            assert_eq!(disk.read("wal").await.unwrap(), b"entry");
        });
    }

    #[test]
    fn extended_stall_holds_a_waiting_sync_until_its_new_end() {
        run(11, async {
            let disk = instant_disk();
            durable_file(&disk, "wal", b"x").await;
            let start = now();
            disk.stall(Duration::from_secs(1));
            let syncer = disk.clone();
            let sync = madsim::task::spawn(async move {
                syncer.sync_dir().await.unwrap();
                now()
            });
            time::sleep(Duration::from_millis(500)).await;
            disk.stall(Duration::from_secs(2));
            // A shorter stall does not cut the longer one short.
            disk.stall(Duration::from_millis(10));
            let took = sync.await.unwrap() - start;
            assert!(took >= Duration::from_millis(2500), "took {took:?}");
            assert!(took < Duration::from_millis(2501), "took {took:?}");
            assert_eq!(disk.stats().stalls, 3);
            assert_eq!(disk.stalled_until(), None);
        });
    }

    #[test]
    fn latency_is_simulated_time() {
        run(12, async {
            let disk = SimDisk::new(SimDiskConfig::default());
            disk.set_latency(
                Latency::fixed(Duration::from_millis(5)),
                Latency::fixed(Duration::from_millis(7)),
            );
            let start = now();
            disk.append("wal", b"x").await.unwrap();
            let appended = start.elapsed();
            disk.sync_file("wal").await.unwrap();
            let synced = start.elapsed();
            assert!(appended >= Duration::from_millis(5) && appended < Duration::from_millis(6));
            assert!(synced >= Duration::from_millis(12) && synced < Duration::from_millis(13));

            // The default sync latency is drawn from 1..=3 ms.
            disk.set_latency(Latency::ZERO, SimDiskConfig::default().sync_latency);
            for _ in 0..20 {
                let before = now();
                disk.sync_dir().await.unwrap();
                let took = before.elapsed();
                assert!(took >= Duration::from_millis(1) && took < Duration::from_micros(3100));
            }
        });
    }

    #[test]
    fn injected_sync_failure_persists_nothing() {
        run(13, async {
            let disk = instant_disk();
            durable_file(&disk, "wal", b"a").await;
            disk.append("wal", b"b").await.unwrap();
            disk.fail_next_sync(io::ErrorKind::Other);
            assert_eq!(kind(disk.sync_file("wal").await), io::ErrorKind::Other);
            // The node still sees its write; the next sync succeeds.
            assert_eq!(disk.read("wal").await.unwrap(), b"ab");
            disk.crash(false);
            assert_eq!(disk.read("wal").await.unwrap(), b"a");

            disk.write("new", b"n").await.unwrap();
            disk.fail_next_sync(io::ErrorKind::Other);
            assert!(disk.sync_dir().await.is_err());
            disk.sync_file("new").await.unwrap();
            disk.crash(false);
            assert_eq!(disk.list().await.unwrap(), ["wal"]);
            let stats = disk.stats();
            assert_eq!(stats.syncs_failed, 2);
        });
    }

    #[test]
    fn sync_in_flight_across_a_crash_takes_no_effect() {
        run(14, async {
            let disk = instant_disk();
            durable_file(&disk, "wal", b"a").await;
            disk.append("wal", b"b").await.unwrap();
            disk.stall(Duration::from_secs(1));
            let syncer = disk.clone();
            let sync = madsim::task::spawn(async move { syncer.sync_file("wal").await });
            time::sleep(Duration::from_millis(10)).await;
            disk.crash(false);
            assert_eq!(kind(sync.await.unwrap()), io::ErrorKind::Other);
            disk.crash(false);
            assert_eq!(disk.read("wal").await.unwrap(), b"a");
        });
    }

    #[test]
    fn fsync_makes_durable_only_what_was_written_before_it_started() {
        run(15, async {
            let disk = SimDisk::new(SimDiskConfig {
                sync_latency: Latency::fixed(Duration::from_millis(10)),
                ..SimDiskConfig::default()
            });
            durable_file(&disk, "wal", b"").await;
            disk.append("wal", b"first").await.unwrap();
            let syncer = disk.clone();
            let sync = madsim::task::spawn(async move { syncer.sync_file("wal").await });
            time::sleep(Duration::from_millis(2)).await;
            disk.append("wal", b"second").await.unwrap();
            sync.await.unwrap().unwrap();
            disk.crash(false);
            assert_eq!(disk.read("wal").await.unwrap(), b"first");
        });
    }

    #[test]
    fn bad_names_are_refused() {
        run(16, async {
            let disk = instant_disk();
            for name in ["", ".", "..", "dir/file"] {
                assert_eq!(
                    kind(disk.write(name, b"x").await),
                    io::ErrorKind::InvalidInput
                );
            }
            assert!(disk.list().await.unwrap().is_empty());
        });
    }
}
