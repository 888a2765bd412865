//! The member's backend: its db file on the disk, kept by a batch transaction as etcd's is.
//!
//! The store core says what changed ([`Store::take_writes`], compaction batches); this layer
//! commits it to the db file (`db`) with the page file's protocol: data pages, fsync, meta page,
//! fsync. Every commit carries the consistent index of the state it writes (etcd's pre-commit
//! hook), so the file always holds the state at one applied index, plus, at most, the deletes of
//! a compaction still in progress (marked by its scheduled compact revision).
//!
//! - A commit happens every `batch_interval_ms`, after `batch_limit` revisions of writes, and
//!   before a snapshot, a defragment or a compaction's batches (etcd's ForceCommit).
//! - Reads never wait for a commit: the core's in-memory state is the read buffer.
//! - Defragment writes the file's live content to `db.tmp`, fsyncs it, renames it over `db` and
//!   fsyncs the directory; the file shrinks.
//! - A received snapshot is a whole db file: it is written to `snap.db` and fsynced before its
//!   metadata goes to the WAL, then renamed over `db`.
//!
//! The named crash points of etcd's backend and snapshot paths sit here (see
//! [`super::failpoint`]).

use std::io;

use super::disk::Disk;
use super::failpoint::Failpoints;
use crate::db::{DbFile, WriteSet};
use crate::persist::{db_consistent_index, put_consistent_index};
use crate::store::Store;

/// The db file.
pub const DB_FILE: &str = "db";
/// Defragment's temporary copy.
pub const DEFRAG_FILE: &str = "db.tmp";
/// A db file received in a snapshot, before it replaces `db`.
pub const SNAPSHOT_DB_FILE: &str = "snap.db";

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// One member's db file and its batch transaction.
pub struct Backend<D: Disk> {
    disk: D,
    failpoints: Failpoints,
    db: DbFile,
    /// The consistent index the last commit saved.
    committed_index: u64,
}

impl<D: Disk> std::fmt::Debug for Backend<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("txid", &self.db.txid())
            .field("committed_index", &self.committed_index)
            .field("size_bytes", &self.db.size_bytes())
            .finish()
    }
}

impl<D: Disk> Backend<D> {
    /// Opens the member's db file. A db received in a snapshot (`snap.db`) takes the place of
    /// `db` when the WAL's snapshot is newer than `db` (a crash between saving the snapshot and
    /// renaming its file). A member without a db creates an empty one durably. Leftover
    /// temporary files are removed.
    pub async fn open(disk: D, failpoints: Failpoints, snapshot_index: u64) -> io::Result<Self> {
        let files = disk.list().await?;
        let has = |name: &str| files.iter().any(|f| f == name);
        let mut db = if has(DB_FILE) {
            Some(Self::read_db(&disk, DB_FILE).await?)
        } else {
            None
        };
        let db_index = match &db {
            Some(db) => db_consistent_index(db).map_err(invalid)?,
            None => 0,
        };
        if has(SNAPSHOT_DB_FILE) {
            if snapshot_index > db_index {
                let received = Self::read_db(&disk, SNAPSHOT_DB_FILE).await?;
                disk.rename(SNAPSHOT_DB_FILE, DB_FILE).await?;
                disk.sync_dir().await?;
                db = Some(received);
            } else {
                disk.remove(SNAPSHOT_DB_FILE).await?;
            }
        }
        if has(DEFRAG_FILE) {
            disk.remove(DEFRAG_FILE).await?;
        }
        let db = match db {
            Some(db) => db,
            None => {
                let (db, bytes) = DbFile::create();
                disk.write(DB_FILE, &bytes).await?;
                disk.sync_file(DB_FILE).await?;
                disk.sync_dir().await?;
                db
            }
        };
        let committed_index = db_consistent_index(&db).map_err(invalid)?;
        Ok(Backend {
            disk,
            failpoints,
            db,
            committed_index,
        })
    }

    async fn read_db(disk: &D, name: &str) -> io::Result<DbFile> {
        let bytes = disk.read(name).await?;
        DbFile::open(&bytes).map_err(|e| invalid(format!("{name}: {e}")))
    }

    pub fn db(&self) -> &DbFile {
        &self.db
    }

    /// The consistent index the db file holds.
    pub fn committed_index(&self) -> u64 {
        self.committed_index
    }

    /// The db file as a snapshot sends it.
    pub async fn file_bytes(&self) -> io::Result<Vec<u8>> {
        self.disk.read(DB_FILE).await
    }

    /// Commits the store's pending writes and `extra` with `consistent_index` (the pre-commit
    /// hook; left out when `hook` is false). Skips an empty commit at an unchanged index.
    pub async fn commit(
        &mut self,
        store: &mut Store,
        extra: WriteSet,
        consistent_index: u64,
        hook: bool,
    ) -> io::Result<()> {
        let mut writes = store.take_writes();
        writes.merge(extra);
        if writes.is_empty() && (consistent_index == self.committed_index || !hook) {
            return Ok(());
        }
        self.failpoints.reach("commitBeforePreCommitHook").await;
        if hook {
            put_consistent_index(&mut writes, consistent_index);
        }
        self.failpoints.reach("commitAfterPreCommitHook").await;
        self.failpoints.reach("beforeCommit").await;
        let plan = self.db.commit(&writes);
        for write in &plan.data {
            self.disk
                .write_at(DB_FILE, write.offset, &write.data)
                .await?;
        }
        self.disk.sync_data(DB_FILE).await?;
        self.disk
            .write_at(DB_FILE, plan.meta.offset, &plan.meta.data)
            .await?;
        self.disk.sync_data(DB_FILE).await?;
        if hook {
            self.committed_index = consistent_index;
        }
        store.set_db_size(self.db.size_bytes(), self.db.size_in_use_bytes());
        self.failpoints.reach("afterCommit").await;
        self.failpoints.reach("beforeStartDBTxn").await;
        self.failpoints.reach("afterStartDBTxn").await;
        Ok(())
    }

    /// Makes a newly applied compaction's scheduled revision durable at once (etcd's
    /// ForceCommit in Compact).
    pub async fn schedule_compaction(
        &mut self,
        store: &mut Store,
        consistent_index: u64,
    ) -> io::Result<()> {
        self.failpoints
            .reach("compactBeforeCommitScheduledCompact")
            .await;
        self.commit(store, WriteSet::default(), consistent_index, true)
            .await?;
        self.failpoints
            .reach("compactAfterCommitScheduledCompact")
            .await;
        Ok(())
    }

    /// Commits the next batch of at most `batch_limit` compaction deletes, with whatever else
    /// is buffered; the last batch sets the finished compact revision. False if none waits.
    pub async fn compaction_batch(
        &mut self,
        store: &mut Store,
        consistent_index: u64,
        batch_limit: usize,
    ) -> io::Result<bool> {
        let Some(batch) = store.take_compaction_batch(batch_limit) else {
            return Ok(false);
        };
        let last = batch.finishes.is_some();
        self.failpoints
            .reach(if last {
                "compactBeforeSetFinishedCompact"
            } else {
                "compactBeforeCommitBatch"
            })
            .await;
        self.commit(store, batch.writes, consistent_index, true)
            .await?;
        self.failpoints
            .reach(if last {
                "compactAfterSetFinishedCompact"
            } else {
                "compactAfterCommitBatch"
            })
            .await;
        Ok(true)
    }

    /// etcd's Defragment: commit, copy the live content to a new file, fsync it, rename it over
    /// the db file, fsync the directory. `hook` false leaves the consistent index out of the
    /// first commit (the planted bug 14685).
    pub async fn defragment(
        &mut self,
        store: &mut Store,
        consistent_index: u64,
        hook: bool,
    ) -> io::Result<()> {
        self.commit(store, WriteSet::default(), consistent_index, hook)
            .await?;
        self.failpoints.reach("defragBeforeCopy").await;
        let bytes = self.db.compacted();
        let db = DbFile::open(&bytes).map_err(|e| invalid(format!("defragmented db: {e}")))?;
        self.disk.write(DEFRAG_FILE, &bytes).await?;
        self.disk.sync_file(DEFRAG_FILE).await?;
        self.failpoints.reach("defragBeforeRename").await;
        self.disk.rename(DEFRAG_FILE, DB_FILE).await?;
        self.disk.sync_dir().await?;
        self.db = db;
        store.set_db_size(self.db.size_bytes(), self.db.size_in_use_bytes());
        Ok(())
    }

    /// Writes a db file received in a snapshot beside the db, durably, and checks it opens.
    pub async fn receive_snapshot(&self, bytes: &[u8]) -> io::Result<DbFile> {
        let db = DbFile::open(bytes).map_err(|e| invalid(format!("snapshot db: {e}")))?;
        self.disk.write(SNAPSHOT_DB_FILE, bytes).await?;
        self.disk.sync_file(SNAPSHOT_DB_FILE).await?;
        self.disk.sync_dir().await?;
        Ok(db)
    }

    /// Puts the received db file in place of the db (after its metadata is in the WAL).
    pub async fn swap_in_snapshot(&mut self, db: DbFile) -> io::Result<()> {
        self.disk.rename(SNAPSHOT_DB_FILE, DB_FILE).await?;
        self.disk.sync_dir().await?;
        self.failpoints.reach("applyBeforeOpenSnapshot").await;
        self.committed_index = db_consistent_index(&db).map_err(invalid)?;
        self.db = db;
        Ok(())
    }
}
