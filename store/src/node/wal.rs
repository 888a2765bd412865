//! The write-ahead log and the snapshot file, on a [`Disk`].
//!
//! The WAL is one append-only file of framed records: `[len: u32][checksum: u64][payload]`, the
//! payload a bincode [`WalRecord`]. A crash can tear the last record; recovery keeps the longest
//! valid prefix and rewrites the file to it, as etcd repairs a torn WAL tail. After a snapshot the
//! WAL is rewritten (to a temporary file, fsynced, renamed over the old one, directory fsynced) so
//! that it holds only what the snapshot does not. The snapshot file is replaced the same way.
//! Nothing here is durable until the node calls [`Wal::sync`]; the node must do so before it
//! sends a message or a reply that depends on what it wrote.

use std::io;

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata};
use serde::{Deserialize, Serialize};

use super::disk::Disk;
use crate::mvcc::Fnv;

pub const WAL_FILE: &str = "wal";
pub const SNAP_FILE: &str = "snap";
const TMP_SUFFIX: &str = ".tmp";
/// Largest record accepted on recovery; anything larger is a corrupt length.
const RECORD_BYTES_MAX: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalEntry {
    pub index: u64,
    pub term: u64,
    pub entry_type: i32,
    pub data: Vec<u8>,
    pub context: Vec<u8>,
}

impl WalEntry {
    fn from_entry(e: &Entry) -> Self {
        WalEntry {
            index: e.index,
            term: e.term,
            entry_type: e.get_entry_type() as i32,
            data: e.data.to_vec(),
            context: e.context.to_vec(),
        }
    }

    fn to_entry(&self) -> Entry {
        let mut e = Entry {
            index: self.index,
            term: self.term,
            data: self.data.clone().into(),
            context: self.context.clone().into(),
            ..Default::default()
        };
        e.set_entry_type(match self.entry_type {
            1 => EntryType::EntryConfChange,
            2 => EntryType::EntryConfChangeV2,
            _ => EntryType::EntryNormal,
        });
        e
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    /// The log continues after this (index, term); written first in a rewritten WAL.
    Start {
        index: u64,
        term: u64,
    },
    /// Entries to append; the first one replaces everything from its index on.
    Entries(Vec<WalEntry>),
    HardState {
        term: u64,
        vote: u64,
        commit: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotFile {
    index: u64,
    term: u64,
    voters: Vec<u64>,
    data: Vec<u8>,
}

/// What recovery found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<Snapshot>,
    pub prev_index: u64,
    pub prev_term: u64,
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
    /// Bytes of a torn or corrupt tail that recovery cut off.
    pub truncated_bytes: usize,
}

fn checksum(payload: &[u8]) -> u64 {
    let mut h = Fnv::new();
    h.write_bytes(payload);
    h.finish()
}

fn frame(record: &WalRecord) -> Vec<u8> {
    let payload = bincode::serialize(record).expect("WAL records serialise");
    let mut out = Vec::with_capacity(payload.len() + 12);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&checksum(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Splits a WAL file into its valid records and the length of the valid prefix.
fn parse(bytes: &[u8]) -> (Vec<WalRecord>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 12 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let sum = u64::from_le_bytes(bytes[at + 4..at + 12].try_into().expect("8 bytes"));
        if len > RECORD_BYTES_MAX || bytes.len() - at - 12 < len {
            break;
        }
        let payload = &bytes[at + 12..at + 12 + len];
        if checksum(payload) != sum {
            break;
        }
        match bincode::deserialize::<WalRecord>(payload) {
            Ok(record) => records.push(record),
            Err(_) => break,
        }
        at += 12 + len;
    }
    (records, at)
}

fn hard_state_record(hs: &HardState) -> WalRecord {
    WalRecord::HardState {
        term: hs.term,
        vote: hs.vote,
        commit: hs.commit,
    }
}

/// The WAL and snapshot file of one member.
#[derive(Debug, Clone)]
pub struct Wal<D: Disk> {
    disk: D,
}

impl<D: Disk> Wal<D> {
    pub fn new(disk: D) -> Self {
        Wal { disk }
    }

    pub fn disk(&self) -> &D {
        &self.disk
    }

    /// Appends entries and/or a hard state as one write. Not durable until [`sync`](Self::sync).
    pub async fn append(&self, entries: &[Entry], hs: Option<&HardState>) -> io::Result<()> {
        let mut bytes = Vec::new();
        if !entries.is_empty() {
            bytes.extend(frame(&WalRecord::Entries(
                entries.iter().map(WalEntry::from_entry).collect(),
            )));
        }
        if let Some(hs) = hs {
            bytes.extend(frame(&hard_state_record(hs)));
        }
        if bytes.is_empty() {
            return Ok(());
        }
        self.disk.append(WAL_FILE, &bytes).await
    }

    /// fdatasync of the WAL, as etcd syncs its WAL (the file exists durably since recovery).
    pub async fn sync(&self) -> io::Result<()> {
        self.disk.sync_data(WAL_FILE).await
    }

    /// Replaces `name` with `bytes` durably: temporary file, fsync, rename, directory fsync.
    async fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = format!("{name}{TMP_SUFFIX}");
        self.disk.write(&tmp, bytes).await?;
        self.disk.sync_file(&tmp).await?;
        self.disk.rename(&tmp, name).await?;
        self.disk.sync_dir().await
    }

    /// Makes a snapshot durable.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> io::Result<()> {
        let meta = snapshot.get_metadata();
        let file = SnapshotFile {
            index: meta.index,
            term: meta.term,
            voters: meta.get_conf_state().voters.clone(),
            data: snapshot.data.to_vec(),
        };
        let payload = bincode::serialize(&file).expect("snapshots serialise");
        let mut bytes = checksum(&payload).to_le_bytes().to_vec();
        bytes.extend_from_slice(&payload);
        self.replace(SNAP_FILE, &bytes).await
    }

    /// Rewrites the WAL to hold only the log after `(prev_index, prev_term)`, then `hs`. Durable
    /// when it returns.
    pub async fn rewrite(
        &self,
        prev_index: u64,
        prev_term: u64,
        entries: &[Entry],
        hs: &HardState,
    ) -> io::Result<()> {
        let mut bytes = frame(&WalRecord::Start {
            index: prev_index,
            term: prev_term,
        });
        if !entries.is_empty() {
            bytes.extend(frame(&WalRecord::Entries(
                entries.iter().map(WalEntry::from_entry).collect(),
            )));
        }
        bytes.extend(frame(&hard_state_record(hs)));
        self.replace(WAL_FILE, &bytes).await
    }

    /// Reads the snapshot and the WAL back. A torn or corrupt WAL tail is cut off (and the cut
    /// made durable); a corrupt snapshot file is an error, since the log before it is gone.
    pub async fn recover(&self) -> io::Result<Recovered> {
        let mut recovered = Recovered::default();
        match self.disk.read(SNAP_FILE).await {
            Ok(bytes) => {
                let corrupt =
                    || io::Error::new(io::ErrorKind::InvalidData, "corrupt snapshot file");
                if bytes.len() < 8 {
                    return Err(corrupt());
                }
                let sum = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
                if checksum(&bytes[8..]) != sum {
                    return Err(corrupt());
                }
                let file: SnapshotFile =
                    bincode::deserialize(&bytes[8..]).map_err(|_| corrupt())?;
                let mut meta = SnapshotMetadata {
                    index: file.index,
                    term: file.term,
                    ..Default::default()
                };
                meta.set_conf_state(ConfState {
                    voters: file.voters,
                    ..Default::default()
                });
                let mut snapshot = Snapshot {
                    data: file.data.into(),
                    ..Default::default()
                };
                snapshot.set_metadata(meta);
                recovered.prev_index = file.index;
                recovered.prev_term = file.term;
                recovered.snapshot = Some(snapshot);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let bytes = match self.disk.read(WAL_FILE).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A new member: the WAL file itself must be durable before anything in it can
                // be, or a crash would lose the whole file however often it was fsynced.
                self.replace(WAL_FILE, &[]).await?;
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        let (records, valid) = parse(&bytes);
        let mut entries: Vec<Entry> = Vec::new();
        let mut start: Option<(u64, u64)> = None;
        for record in records {
            match record {
                WalRecord::Start { index, term } => {
                    start = Some((index, term));
                    entries.clear();
                }
                WalRecord::Entries(batch) => {
                    let Some(first) = batch.first() else { continue };
                    let base = start.map_or(0, |(i, _)| i);
                    let keep = first.index.saturating_sub(base + 1) as usize;
                    entries.truncate(keep.min(entries.len()));
                    entries.extend(batch.iter().map(WalEntry::to_entry));
                }
                WalRecord::HardState { term, vote, commit } => {
                    recovered.hard_state = HardState {
                        term,
                        vote,
                        commit,
                        ..Default::default()
                    };
                }
            }
        }
        if valid < bytes.len() {
            recovered.truncated_bytes = bytes.len() - valid;
            self.replace(WAL_FILE, &bytes[..valid]).await?;
        }
        let (wal_prev_index, wal_prev_term) = start.unwrap_or((0, 0));
        // The snapshot may be newer than the WAL's base (a snapshot installed from the leader
        // is saved before the WAL is rewritten): then the log starts after the snapshot.
        if wal_prev_index >= recovered.prev_index || recovered.snapshot.is_none() {
            recovered.prev_index = wal_prev_index;
            recovered.prev_term = wal_prev_term;
        } else {
            // Entries after the snapshot stay only while they continue it: contiguous, and of
            // a term no older than the snapshot's (an older-term entry there was never
            // committed, since every later leader's log holds the snapshot's entry before it).
            entries.retain(|e| e.index > recovered.prev_index);
            if entries
                .first()
                .is_some_and(|e| e.index != recovered.prev_index + 1)
            {
                entries.clear();
            }
            if let Some(cut) = entries.iter().position(|e| e.term < recovered.prev_term) {
                entries.truncate(cut);
            }
            let hs = &mut recovered.hard_state;
            hs.commit = hs.commit.max(recovered.prev_index);
            hs.term = hs.term.max(recovered.prev_term);
        }
        recovered.entries = entries;
        Ok(recovered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_tail_is_dropped_and_earlier_records_kept() {
        let a = frame(&WalRecord::HardState {
            term: 1,
            vote: 1,
            commit: 3,
        });
        let b = frame(&WalRecord::Entries(vec![WalEntry {
            index: 4,
            term: 1,
            entry_type: 0,
            data: b"x".to_vec(),
            context: Vec::new(),
        }]));
        let mut bytes = a.clone();
        bytes.extend_from_slice(&b[..b.len() - 3]);
        let (records, valid) = parse(&bytes);
        assert_eq!(records.len(), 1);
        assert_eq!(valid, a.len());
        let mut flipped = a.clone();
        flipped.extend_from_slice(&b);
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(
            parse(&flipped).0.len(),
            1,
            "a corrupt record ends the valid prefix"
        );
    }
}
