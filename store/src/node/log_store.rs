//! The Raft log as raft-rs reads it: an in-memory mirror of what the WAL and the snapshot file
//! hold, implementing raft-rs's `Storage`.
//!
//! The node writes to disk first (WAL, snapshot file) and to this mirror second; after a restart
//! the mirror is rebuilt from disk alone. It never does IO itself.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// The log: entries after a known (index, term), the hard state, the conf state and the latest
/// snapshot (with its data, so a lagging follower can be sent it).
#[derive(Debug, Clone, Default)]
pub struct LogStore {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// `entries[0].index == prev_index + 1`.
    entries: Vec<Entry>,
    prev_index: u64,
    prev_term: u64,
}

impl LogStore {
    /// A fresh log for a cluster of `voters`.
    pub fn new(voters: Vec<u64>) -> Self {
        let conf_state = ConfState {
            voters,
            ..Default::default()
        };
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().set_conf_state(conf_state.clone());
        LogStore {
            conf_state,
            snapshot,
            ..Default::default()
        }
    }

    /// A log rebuilt from disk: the snapshot (if any), then the entries after `(prev_index,
    /// prev_term)`, then the hard state.
    pub fn recovered(
        voters: Vec<u64>,
        snapshot: Option<Snapshot>,
        prev_index: u64,
        prev_term: u64,
        entries: Vec<Entry>,
        hard_state: HardState,
    ) -> Self {
        let mut log = LogStore::new(voters);
        if let Some(snapshot) = snapshot {
            log.conf_state = snapshot.get_metadata().get_conf_state().clone();
            log.snapshot = snapshot;
        }
        log.prev_index = prev_index;
        log.prev_term = prev_term;
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                prev_index + 1 + i as u64,
                "recovered entries are contiguous"
            );
        }
        log.entries = entries;
        log.hard_state = hard_state;
        log
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    pub fn latest_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn prev(&self) -> (u64, u64) {
        (self.prev_index, self.prev_term)
    }

    pub fn entries_all(&self) -> &[Entry] {
        &self.entries
    }

    pub fn last_index_value(&self) -> u64 {
        self.prev_index + self.entries.len() as u64
    }

    /// Appends entries, replacing any conflicting suffix (raft-rs hands a suffix to overwrite).
    pub fn append(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first() else { return };
        assert!(
            first.index > self.prev_index,
            "append below the compacted log"
        );
        assert!(
            first.index <= self.last_index_value() + 1,
            "append leaves a gap"
        );
        let keep = (first.index - self.prev_index - 1) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
    }

    /// Records a snapshot this member made at `index`; the log is untouched.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = snapshot;
    }

    /// Installs a snapshot received from the leader: the log restarts after it.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.get_metadata();
        self.prev_index = meta.index;
        self.prev_term = meta.term;
        self.entries.clear();
        self.conf_state = meta.get_conf_state().clone();
        if self.hard_state.commit < meta.index {
            self.hard_state.commit = meta.index;
        }
        if self.hard_state.term < meta.term {
            self.hard_state.term = meta.term;
        }
        self.snapshot = snapshot;
    }

    /// Drops entries up to and including `index` (keeping its term as the log's base).
    pub fn compact_to(&mut self, index: u64) {
        if index <= self.prev_index {
            return;
        }
        assert!(index <= self.last_index_value(), "compacting past the log");
        let drop = (index - self.prev_index) as usize;
        self.prev_term = self.entries[drop - 1].term;
        self.prev_index = index;
        self.entries.drain(..drop);
    }

    fn term_of(&self, index: u64) -> raft::Result<u64> {
        if index == self.prev_index {
            return Ok(self.prev_term);
        }
        if index < self.prev_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((index - self.prev_index - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.prev_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index_value() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = (low - self.prev_index - 1) as usize;
        let hi = (high - self.prev_index - 1) as usize;
        let mut entries = self.entries[lo..hi].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.prev_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_value())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}
