//! The store's state as etcd's backend lays it out in its bbolt file, and the write sets that
//! keep a db file up to date.
//!
//! The core stays pure: it never writes a file. It says what changed since the last commit
//! ([`Store::take_writes`]), what the next compaction batch deletes
//! ([`Store::take_compaction_batch`]), and rebuilds itself from a db file's content
//! ([`Store::from_db`]). The node shell commits those write sets to the db file on its disk.
//!
//! Buckets, after etcd's: `key` maps a revision (8 bytes main, `_`, 8 bytes sub, big-endian, as
//! etcd's revision keys) to its record; `lease` maps a lease id to its TTL; `alarm` holds the
//! raised alarms; `meta` holds the consistent index, the scheduled and finished compact
//! revisions and the lease id counter. As in etcd, the key index is not stored: it is rebuilt
//! from the key bucket when the file is opened, and the current revision is the newest record's
//! (or the compact revision, if that is newer).
//!
//! Compaction, as etcd's: applying a Compact compacts the in-memory keyspace at once and
//! schedules the db's deletes; the scheduled compact revision goes into the next commit, the
//! deletes follow in batches of a limited size, each its own commit, and the last batch sets the
//! finished compact revision. A db whose scheduled revision is past its finished one resumes the
//! compaction when it is opened.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::api::{AlarmMember, LeaseId};
use crate::db::{Bucket, DbFile, WriteSet};
use crate::mvcc::{Record, Revision};
use crate::store::{ImageError, LeaseImage, Store, StoreConfig, StoreImage};

/// Meta bucket keys.
pub const META_CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub const META_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub const META_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
pub const META_LEASE_NEXT_ID: &[u8] = b"leaseNextId";

/// etcd's revision key: 8 bytes main, `_`, 8 bytes sub, big-endian (so keys sort by revision).
pub fn revision_key(rev: Revision) -> Vec<u8> {
    let mut key = Vec::with_capacity(17);
    key.extend_from_slice(&rev.main.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&rev.sub.to_be_bytes());
    key
}

fn parse_revision_key(key: &[u8]) -> Option<Revision> {
    if key.len() != 17 || key[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(key[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(key[9..].try_into().ok()?);
    Some(Revision::new(main, sub))
}

fn put_meta(writes: &mut WriteSet, key: &[u8], value: u64) {
    writes.put(Bucket::Meta, key.to_vec(), value.to_be_bytes().to_vec());
}

/// Puts the consistent index into a commit's write set (what etcd's pre-commit hook does).
pub fn put_consistent_index(writes: &mut WriteSet, index: u64) {
    put_meta(writes, META_CONSISTENT_INDEX, index);
}

fn meta(db: &DbFile, key: &[u8]) -> Result<u64, ImageError> {
    match db.get(Bucket::Meta, key) {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes)
            .map(u64::from_be_bytes)
            .map_err(|_| {
                ImageError(format!(
                    "meta {:?} is {} bytes, not 8",
                    String::from_utf8_lossy(key),
                    bytes.len()
                ))
            }),
    }
}

/// The consistent index a db file holds (0 for a fresh one).
pub fn db_consistent_index(db: &DbFile) -> Result<u64, ImageError> {
    meta(db, META_CONSISTENT_INDEX)
}

/// The db's deletes of one compaction still to be committed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingCompaction {
    at: i64,
    deletes: VecDeque<Revision>,
}

/// What the db file holds, as far as the store's write sets go.
#[derive(Debug, Clone, Default)]
pub struct Flushed {
    /// Records up to this revision are in a write set already.
    revision: i64,
    leases: BTreeMap<LeaseId, i64>,
    alarms: BTreeSet<AlarmMember>,
    lease_next_id: LeaseId,
    scheduled_compact: i64,
    compactions: VecDeque<PendingCompaction>,
    /// The db file's size and size in use, as the shell last measured them.
    file_size: Option<(u64, u64)>,
    /// Writes taken before a compaction removed records from memory, for the next commit.
    stashed: WriteSet,
}

/// One compaction batch: its deletes, and the compaction it finishes if it is the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionBatch {
    pub writes: WriteSet,
    pub finishes: Option<i64>,
}

impl Store {
    /// etcd's dbSize and dbSizeInUse: the db file's, once the shell measured it; the core's own
    /// page accounting before that (a store without a file).
    pub fn db_size_bytes(&self) -> (u64, u64) {
        self.flushed.file_size.unwrap_or_else(|| {
            let backend = self.mvcc.backend();
            (backend.size_bytes(), backend.size_in_use_bytes())
        })
    }

    /// Records the db file's size and size in use (the shell, after each commit).
    pub fn set_db_size(&mut self, size_bytes: u64, in_use_bytes: u64) {
        self.flushed.file_size = Some((size_bytes, in_use_bytes));
    }

    /// Called before a compaction changes the keyspace in memory: what is not in the db yet
    /// (records the compaction is about to remove among them) is kept for the next commit, so
    /// the db never holds an older record of a key without the newer ones that follow it.
    pub(crate) fn stash_writes_before_compaction(&mut self) {
        let writes = self.take_writes();
        self.flushed.stashed.merge(writes);
    }

    pub(crate) fn schedule_db_compaction(&mut self, at: i64, mut removed: Vec<Revision>) {
        if self.config.bugs.compaction_revision_backwards {
            removed.extend(self.mvcc.tombstones_at(at));
        }
        removed.sort_unstable();
        removed.dedup();
        self.flushed.compactions.push_back(PendingCompaction {
            at,
            deletes: removed.into(),
        });
    }

    /// Changes since the last call, except the compaction's deletes and the consistent index:
    /// new records, leases granted or revoked, alarms, the lease id counter, a newly scheduled
    /// compaction. Afterwards the store counts them as in the db.
    pub fn take_writes(&mut self) -> WriteSet {
        let mut writes = std::mem::take(&mut self.flushed.stashed);
        for (rev, record) in self.mvcc.records_after(self.flushed.revision) {
            writes.put(
                Bucket::Key,
                revision_key(*rev),
                bincode::serialize(record).expect("records serialise"),
            );
        }
        self.flushed.revision = self.current_revision();
        let leases: BTreeMap<LeaseId, i64> =
            self.leases.iter().map(|l| (l.id, l.ttl_secs)).collect();
        for (id, ttl) in &leases {
            if self.flushed.leases.get(id) != Some(ttl) {
                writes.put(
                    Bucket::Lease,
                    id.to_be_bytes().to_vec(),
                    ttl.to_be_bytes().to_vec(),
                );
            }
        }
        for id in self.flushed.leases.keys() {
            if !leases.contains_key(id) {
                writes.delete(Bucket::Lease, id.to_be_bytes().to_vec());
            }
        }
        self.flushed.leases = leases;
        for alarm in self.alarms.difference(&self.flushed.alarms) {
            writes.put(Bucket::Alarm, alarm_key(alarm), Vec::new());
        }
        for alarm in self.flushed.alarms.difference(&self.alarms) {
            writes.delete(Bucket::Alarm, alarm_key(alarm));
        }
        self.flushed.alarms = self.alarms.clone();
        if self.leases.next_id() != self.flushed.lease_next_id {
            self.flushed.lease_next_id = self.leases.next_id();
            put_meta(
                &mut writes,
                META_LEASE_NEXT_ID,
                self.flushed.lease_next_id as u64,
            );
        }
        if let Some(last) = self.flushed.compactions.back() {
            if last.at > self.flushed.scheduled_compact {
                self.flushed.scheduled_compact = last.at;
                put_meta(&mut writes, META_SCHEDULED_COMPACT, last.at as u64);
            }
        }
        writes
    }

    /// Revisions written since the last write set (etcd's pending count of its batch tx).
    pub fn unflushed_revisions(&self) -> u64 {
        (self.current_revision() - self.flushed.revision).max(0) as u64
    }

    /// Whether a newly applied Compact has not yet gone into a write set.
    pub fn compaction_unscheduled(&self) -> bool {
        self.flushed
            .compactions
            .back()
            .is_some_and(|c| c.at > self.flushed.scheduled_compact)
    }

    /// Whether compaction batches are waiting.
    pub fn compaction_pending(&self) -> bool {
        !self.flushed.compactions.is_empty()
    }

    /// The next batch of at most `limit` deletes of a scheduled compaction (call after the
    /// write set that scheduled it is committed). The batch that empties a compaction's deletes
    /// sets its finished compact revision.
    pub fn take_compaction_batch(&mut self, limit: usize) -> Option<CompactionBatch> {
        let scheduled = self.flushed.scheduled_compact;
        let pending = self.flushed.compactions.front_mut()?;
        if pending.at > scheduled {
            return None;
        }
        let mut writes = WriteSet::default();
        for _ in 0..limit.max(1) {
            let Some(rev) = pending.deletes.pop_front() else {
                break;
            };
            writes.delete(Bucket::Key, revision_key(rev));
        }
        let finishes = pending.deletes.is_empty().then_some(pending.at);
        if let Some(at) = finishes {
            put_meta(&mut writes, META_FINISHED_COMPACT, at as u64);
            self.flushed.compactions.pop_front();
        }
        Some(CompactionBatch { writes, finishes })
    }

    /// Rebuilds a store from a db file's content alone: records, leases, alarms, the consistent
    /// index and the compaction marks. A compaction scheduled but not finished is compacted
    /// again in memory and its deletes queued for the db, as etcd resumes it after a restart.
    pub fn from_db(config: StoreConfig, db: &DbFile) -> Result<Store, ImageError> {
        let finished = meta(db, META_FINISHED_COMPACT)? as i64;
        let scheduled = meta(db, META_SCHEDULED_COMPACT)? as i64;
        let mut records = Vec::with_capacity(db.len(Bucket::Key));
        for (key, value) in db.iter(Bucket::Key) {
            let rev = parse_revision_key(key)
                .ok_or_else(|| ImageError(format!("key bucket has a bad revision {key:?}")))?;
            let record: Record = bincode::deserialize(value)
                .map_err(|e| ImageError(format!("record {rev:?}: {e}")))?;
            records.push((rev, record));
        }
        let newest = records.last().map_or(1, |(rev, _)| rev.main);
        let current_revision = if config.bugs.compaction_revision_backwards {
            newest.max(finished)
        } else {
            newest.max(finished).max(scheduled)
        };
        let mut leases = Vec::new();
        for (key, value) in db.iter(Bucket::Lease) {
            let (Ok(id), Ok(ttl)) = (<[u8; 8]>::try_from(key), <[u8; 8]>::try_from(value)) else {
                return Err(ImageError(format!("lease bucket has a bad entry {key:?}")));
            };
            leases.push(LeaseImage {
                id: i64::from_be_bytes(id),
                ttl_secs: i64::from_be_bytes(ttl),
            });
        }
        let mut alarms = Vec::new();
        for (key, _) in db.iter(Bucket::Alarm) {
            alarms.push(
                bincode::deserialize(key).map_err(|e| ImageError(format!("alarm bucket: {e}")))?,
            );
        }
        let image = StoreImage {
            format_version: StoreImage::FORMAT_VERSION,
            consistent_index: db_consistent_index(db)?,
            current_revision,
            compact_revision: finished,
            records,
            leases,
            lease_next_id: meta(db, META_LEASE_NEXT_ID)? as LeaseId,
            alarms,
            file_pages: db.size_bytes().div_ceil(crate::backend::PAGE_BYTES),
        };
        let mut store = Store::restore(config, image)?;
        store.flushed = Flushed {
            revision: store.current_revision(),
            leases: store.leases.iter().map(|l| (l.id, l.ttl_secs)).collect(),
            alarms: store.alarms.clone(),
            lease_next_id: store.leases.next_id(),
            scheduled_compact: scheduled.max(finished),
            compactions: VecDeque::new(),
            file_size: Some((db.size_bytes(), db.size_in_use_bytes())),
            stashed: WriteSet::default(),
        };
        let resume_at = scheduled.min(store.current_revision());
        if resume_at > store.compact_revision() {
            let drop_tombstones = store.config.bugs.watch_compact_revision
                || store.config.bugs.resumed_compaction_drops_delete;
            let removed = store.mvcc.compact(resume_at, drop_tombstones);
            store.schedule_db_compaction(resume_at, removed);
        }
        store.check_invariants();
        Ok(store)
    }

    /// Replaces the replicated state with a db file received from the leader, keeping this
    /// member's watchers (see [`Store::install_image`]).
    pub fn install_db(&mut self, db: &DbFile) -> Result<(), ImageError> {
        let restored = Store::from_db(self.config.clone(), db)?;
        self.replace_keeping_watchers(restored);
        Ok(())
    }
}

fn alarm_key(alarm: &AlarmMember) -> Vec<u8> {
    bincode::serialize(alarm).expect("alarms serialise")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::{CompactionRequest, DeleteRangeRequest, PutRequest, Request};

    fn put(key: &[u8]) -> Request {
        Request::Put(PutRequest {
            key: key.to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        })
    }

    #[test]
    fn a_record_compacted_before_any_commit_still_reaches_the_db_before_the_deletes() {
        let mut store = Store::new(StoreConfig::default());
        store.apply(1, &put(b"a"), 0).unwrap().unwrap(); // revision 2
        let first = store.take_writes();
        assert!(first
            .changes
            .contains_key(&(Bucket::Key, revision_key(Revision::new(2, 0)))));
        let delete = Request::DeleteRange(DeleteRangeRequest {
            key: b"a".to_vec(),
            ..DeleteRangeRequest::default()
        });
        store.apply(2, &delete, 0).unwrap().unwrap(); // revision 3: a's tombstone
        store.apply(3, &put(b"b"), 0).unwrap().unwrap(); // revision 4
        let compact = Request::Compact(CompactionRequest {
            revision: 4,
            physical: false,
        });
        store.apply(4, &compact, 0).unwrap().unwrap();
        // The compaction removed a's whole generation from memory, the tombstone included, but
        // the db holds a's put: the tombstone must reach the db before the delete of the put,
        // or a crash between the two leaves a live in the db.
        let scheduled = store.take_writes();
        assert!(
            scheduled
                .changes
                .contains_key(&(Bucket::Key, revision_key(Revision::new(3, 0)))),
            "the tombstone is written before the compaction deletes"
        );
        let batch = store.take_compaction_batch(10).expect("a batch");
        assert_eq!(batch.finishes, Some(4));
    }

    #[test]
    fn revision_keys_sort_by_revision_and_parse_back() {
        let a = revision_key(Revision::new(2, 7));
        let b = revision_key(Revision::new(10, 0));
        assert!(a < b);
        assert_eq!(parse_revision_key(&a), Some(Revision::new(2, 7)));
        assert_eq!(parse_revision_key(&a[..16]), None);
    }
}
