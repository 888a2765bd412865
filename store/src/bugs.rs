//! Known bugs the store can re-introduce on purpose, each behind a named switch that is off by
//! default, so that a seed sweep can show the framework finds it and say which property broke.
//! Each switch names the etcd issue (etcd-io/etcd) whose mistake it re-plants.

use serde::{Deserialize, Serialize};

/// The switches; all off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PlantedBugs {
    /// `stale-reads`: serve "linearizable" reads from the member's local applied state, without
    /// ReadIndex (the classic Raft mistake): a partitioned or lagging member answers stale data.
    pub stale_reads: bool,
    /// `watch-snapshot-replay` (etcd 15271): a member that installs a snapshot restarts its
    /// watchers from an older revision and replays events they already had.
    pub watch_snapshot_replay: bool,
    /// `watch-compact-revision` (etcd 18089): compaction drops the tombstones at the compact
    /// revision, so a watch opened there misses the delete at exactly that revision.
    pub watch_compact_revision: bool,
    /// `watch-progress-overtakes` (etcd 15220): a requested progress notification is sent at once,
    /// even while watchers of the stream still have events to catch up on.
    pub watch_progress_overtakes: bool,
    /// `watch-duplicate-event` (etcd 17247): a watcher catching up resends the last revision of
    /// a batch at the start of the next one.
    pub watch_duplicate_event: bool,
    /// `consistent-index-not-atomic` (etcd 13766): the consistent index a backend commit saves is
    /// the last index of the batch of entries being applied, not the last one applied, so a
    /// commit in the middle of a batch saves an index whose entries are not all in the db; after
    /// a crash they are never applied again.
    pub consistent_index_not_atomic: bool,
    /// `apply-before-wal-sync` (etcd 14370): a single-member cluster applies and acknowledges new
    /// entries before they are written and synced to its WAL.
    pub apply_before_wal_sync: bool,
    /// `defrag-drops-consistent-index` (etcd 14685): the commit that starts a defragment leaves
    /// out the pre-commit hook, so the db holds applied data with an older consistent index and
    /// a crash makes the restart apply those entries again.
    pub defrag_drops_consistent_index: bool,
    /// `compaction-revision-backwards` (etcd 17780): batched compaction deletes the tombstones
    /// at the compact revision from the db, and a restart takes the revision from the records
    /// and the finished compaction only, so a crash before the finished mark moves the
    /// member's revision backwards.
    pub compaction_revision_backwards: bool,
    /// `resumed-compaction-drops-delete` (etcd 19179): a compaction resumed after a restart
    /// drops the tombstones at its compact revision, so a watch from that revision on that
    /// member misses the delete there.
    pub resumed_compaction_drops_delete: bool,
    /// `read-index-reused` (etcd 20418): a leader answers a linearizable read from the read
    /// index it confirmed earlier in its term, as long as its commit index has not moved since,
    /// instead of confirming its leadership with a quorum again. A leader that was paused and
    /// deposed meanwhile does not know it, so it answers from a state older than writes the new
    /// leader acknowledged.
    pub read_index_reused: bool,
    /// `victim-watchers-starved` (etcd 17529): a watcher whose next revision was compacted is
    /// sent no cancel while its stream's outbox is full; it is moved to the current revision as
    /// if it had caught up, and the events in between are lost.
    pub victim_watchers_starved: bool,
    /// `future-watch-after-restore` (etcd 20221): after a snapshot is restored, a watcher that
    /// waits for a future revision is lowered to the restored revision + 1, so it is sent
    /// events and progress from before its start revision.
    pub future_watch_after_restore: bool,
}

impl PlantedBugs {
    /// Every switch by name, for command lines and reports.
    pub const NAMES: &'static [&'static str] = &[
        "stale-reads",
        "watch-snapshot-replay",
        "watch-compact-revision",
        "watch-progress-overtakes",
        "watch-duplicate-event",
        "consistent-index-not-atomic",
        "apply-before-wal-sync",
        "defrag-drops-consistent-index",
        "compaction-revision-backwards",
        "resumed-compaction-drops-delete",
        "read-index-reused",
        "victim-watchers-starved",
        "future-watch-after-restore",
    ];

    fn switch(&mut self, name: &str) -> Option<&mut bool> {
        Some(match name {
            "stale-reads" => &mut self.stale_reads,
            "watch-snapshot-replay" => &mut self.watch_snapshot_replay,
            "watch-compact-revision" => &mut self.watch_compact_revision,
            "watch-progress-overtakes" => &mut self.watch_progress_overtakes,
            "watch-duplicate-event" => &mut self.watch_duplicate_event,
            "consistent-index-not-atomic" => &mut self.consistent_index_not_atomic,
            "apply-before-wal-sync" => &mut self.apply_before_wal_sync,
            "defrag-drops-consistent-index" => &mut self.defrag_drops_consistent_index,
            "compaction-revision-backwards" => &mut self.compaction_revision_backwards,
            "resumed-compaction-drops-delete" => &mut self.resumed_compaction_drops_delete,
            "read-index-reused" => &mut self.read_index_reused,
            "victim-watchers-starved" => &mut self.victim_watchers_starved,
            "future-watch-after-restore" => &mut self.future_watch_after_restore,
            _ => return None,
        })
    }

    /// Turns on the switch called `name`; an unknown name is an error that lists the known ones.
    pub fn enable(&mut self, name: &str) -> Result<(), String> {
        match self.switch(name) {
            Some(on) => {
                *on = true;
                Ok(())
            }
            None => Err(format!(
                "unknown planted bug {name:?}; known: {}",
                Self::NAMES.join(", ")
            )),
        }
    }

    /// The names of the switches that are on.
    pub fn enabled(&self) -> Vec<&'static str> {
        let mut copy = self.clone();
        Self::NAMES
            .iter()
            .copied()
            .filter(|name| copy.switch(name).is_some_and(|on| *on))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_named_and_unknown_names_refused() {
        let mut bugs = PlantedBugs::default();
        assert!(bugs.enabled().is_empty());
        for name in PlantedBugs::NAMES {
            bugs.enable(name).unwrap();
        }
        assert_eq!(bugs.enabled(), PlantedBugs::NAMES);
        let error = bugs.enable("nope").unwrap_err();
        assert!(error.contains("known: stale-reads"), "{error}");
    }
}
