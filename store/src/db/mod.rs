//! The backend's page file, modelled on etcd's bbolt file.
//!
//! The file is an array of [`PAGE_BYTES`]-byte pages. Pages 0 and 1 are meta pages; the meta of
//! transaction `t` is written to page `t % 2`, over the meta of `t - 2`. A meta names the root of
//! a two-level tree, the freelist node and the file's length in pages, and carries a checksum.
//! The root is a directory listing each leaf's first key and pages; leaves hold sorted
//! `(bucket, key, value)` entries and fill at most one page, except that an entry too big for one
//! page gets a leaf spanning several contiguous pages (bbolt's overflow pages). Every node names
//! its own pages and carries a checksum of its content; [`page`] has the byte layout.
//!
//! A commit never writes a page reachable from the committed meta: the leaves it changes, the
//! directory and the freelist are written copy-on-write into free pages or past the end of the
//! file, and the pages of their old versions become *pending*. Pages freed by transaction `T`
//! are reused from transaction `T + 1` on, once `T`'s meta is durable, so the meta of `T - 1`
//! (the other meta page) never points at a page `T` wrote over. The shell makes a
//! [`CommitPlan`] durable by writing its data pages, fsyncing, writing its meta page and
//! fsyncing again, and finishes one plan before starting the next. A crash before the second
//! fsync completes leaves both old metas intact, or tears the one being overwritten, whose
//! checksum then fails; either way [`DbFile::open`] picks the previous transaction. Bytes past
//! the chosen meta's high-water mark are ignored.
//!
//! This module does no IO and keeps the whole keyspace in memory, as the store does. Like bbolt
//! the file never shrinks; [`DbFile::compacted`] writes a dense copy, as etcd's Defragment does.

mod page;
#[cfg(test)]
mod tests;
mod tree;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use crate::backend::PAGE_BYTES;
use page::{encode_meta, Extent};
use tree::{Content, Tree};

/// etcd's buckets, in the file's key order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Bucket {
    Meta,
    Key,
    Lease,
    Alarm,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Meta, Bucket::Key, Bucket::Lease, Bucket::Alarm];

    fn from_u8(b: u8) -> Option<Bucket> {
        Bucket::ALL.get(b as usize).copied()
    }
}

pub type DbKey = (Bucket, Vec<u8>);

/// One commit's changes: `Some(value)` puts, `None` deletes (deleting an absent key is a no-op).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteSet {
    pub changes: BTreeMap<DbKey, Option<Vec<u8>>>,
}

impl WriteSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, bucket: Bucket, key: Vec<u8>, value: Vec<u8>) {
        self.changes.insert((bucket, key), Some(value));
    }

    pub fn delete(&mut self, bucket: Bucket, key: Vec<u8>) {
        self.changes.insert((bucket, key), None);
    }

    pub fn len(&self) -> usize {
        self.changes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Adds the changes of a later write set; where both change a key, the later one wins.
    pub fn merge(&mut self, later: WriteSet) {
        self.changes.extend(later.changes);
    }
}

/// Write `data` at byte `offset` of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageWrite {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// What the shell must do, in order, to make a commit durable: write every `data` page write (in
/// any order), fsync, write `meta`, fsync. A crash anywhere before the second fsync completes
/// leaves the file opening at the previous transaction; after it, at this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitPlan {
    pub txid: u64,
    pub data: Vec<PageWrite>,
    pub meta: PageWrite,
    /// The file's length after the commit; the data writes reach at most this far.
    pub file_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DbError {
    #[error("the file is {len} bytes, shorter than its two meta pages")]
    TooShort { len: u64 },
    #[error("no valid meta page: page 0: {page0}; page 1: {page1}")]
    NoValidMeta { page0: String, page1: String },
    #[error("txid {txid}: leaf at page {pgid}: {reason}")]
    CorruptPage {
        txid: u64,
        pgid: u64,
        reason: String,
    },
    #[error("txid {txid}: {reason}")]
    CorruptTree { txid: u64, reason: String },
}

/// The file's committed content and page table, and the allocator of the next commit.
#[derive(Clone, PartialEq, Eq)]
pub struct DbFile {
    content: Content,
    tree: Tree,
    txid: u64,
}

impl std::fmt::Debug for DbFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbFile")
            .field("txid", &self.txid)
            .field("entries", &self.content.iter().count())
            .field("leaves", &self.tree.leaves.len())
            .field("high_water", &self.tree.high_water)
            .field("free_pages", &self.free_pages())
            .finish()
    }
}

impl DbFile {
    /// A fresh, empty db and its whole file: two metas (txids 0 and 1), an empty directory and an
    /// empty freelist, four pages.
    pub fn create() -> (DbFile, Vec<u8>) {
        let file = tree::whole_file(&Content::default(), 1);
        let db = DbFile::open(&file).expect("a freshly built file opens");
        (db, file)
    }

    /// Parses a whole file. Chooses, of the two meta pages, the valid one with the higher txid: a
    /// meta is valid if its magic, version, page size and checksum are right, it lies on its
    /// txid's page, the file holds its high-water mark, and its directory and freelist nodes lie
    /// inside that mark and pass their own checks. Fails if neither meta is valid, or if the tree
    /// of the chosen one is corrupt: a leaf fails its checks, keys are out of order, or a page is
    /// neither reachable nor free, or both. Never panics, whatever the bytes.
    pub fn open(bytes: &[u8]) -> Result<DbFile, DbError> {
        let (content, tree, txid) = tree::load(bytes)?;
        Ok(DbFile {
            content,
            tree,
            txid,
        })
    }

    pub fn get(&self, bucket: Bucket, key: &[u8]) -> Option<&[u8]> {
        self.content.bucket(bucket).get(key).map(Vec::as_slice)
    }

    /// Every (key, value) of a bucket, ascending by key.
    pub fn iter(&self, bucket: Bucket) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.content
            .bucket(bucket)
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub fn len(&self, bucket: Bucket) -> usize {
        self.content.bucket(bucket).len()
    }

    /// True if no bucket holds a key.
    pub fn is_empty(&self) -> bool {
        Bucket::ALL.iter().all(|b| self.len(*b) == 0)
    }

    /// Applies `writes` in memory and plans the page writes of transaction `txid() + 1`. The data
    /// writes touch only pages past the old end of the file or freed by an earlier transaction,
    /// never one reachable from the committed meta. An empty write set still commits. Costs
    /// O(changes · log n + entries of the changed leaves + leaves + free ranges).
    pub fn commit(&mut self, writes: &WriteSet) -> CommitPlan {
        let txid = self.txid + 1;
        let pending = std::mem::take(&mut self.tree.pending);
        self.tree.free.absorb(pending);
        let mut dirty = BTreeSet::new();
        for (key, change) in &writes.changes {
            if let Some(leaf) = self.apply(key, change.as_deref()) {
                dirty.insert(leaf);
            }
        }
        let mut data = Vec::new();
        let meta = self.tree.write(&self.content, dirty, txid, &mut data);
        self.txid = txid;
        CommitPlan {
            txid,
            data,
            meta: PageWrite {
                offset: txid % 2 * PAGE_BYTES,
                data: encode_meta(&meta),
            },
            file_bytes: self.size_bytes(),
        }
    }

    /// Applies one change to the content; returns the leaf it dirtied, if it changed anything.
    fn apply(&mut self, key: &DbKey, change: Option<&[u8]>) -> Option<DbKey> {
        let map = &mut self.content.buckets[key.0 as usize];
        let (old_bytes, new_bytes) = match change {
            Some(value) => match map.get_mut(&key.1) {
                Some(old) if old.as_slice() == value => return None,
                Some(old) => {
                    let sizes = (
                        page::leaf_entry_bytes(&key.1, old),
                        page::leaf_entry_bytes(&key.1, value),
                    );
                    *old = value.to_vec();
                    sizes
                }
                None => {
                    map.insert(key.1.clone(), value.to_vec());
                    (0, page::leaf_entry_bytes(&key.1, value))
                }
            },
            None => {
                let old = map.remove(&key.1)?;
                (page::leaf_entry_bytes(&key.1, &old), 0)
            }
        };
        let leaf_key = self.tree.leaf_for(key);
        let leaf = self
            .tree
            .leaves
            .get_mut(&leaf_key)
            .expect("leaf_for finds a leaf");
        leaf.bytes = leaf.bytes + new_bytes - old_bytes;
        Some(leaf_key)
    }

    pub fn txid(&self) -> u64 {
        self.txid
    }

    /// etcd's `dbSize`: the file's length in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.tree.high_water * PAGE_BYTES
    }

    /// etcd's `dbSizeInUse`: the file's length less its free and pending pages.
    pub fn size_in_use_bytes(&self) -> u64 {
        self.size_bytes() - self.free_pages() * PAGE_BYTES
    }

    /// Pages free now or from the next commit on.
    pub fn free_pages(&self) -> u64 {
        self.tree.free.total() + self.tree.pending.total()
    }

    /// A new whole file with the same content, densely packed and without free pages, opening at
    /// this txid: what Defragment writes to its temporary file, and what a Raft snapshot can
    /// carry.
    pub fn compacted(&self) -> Vec<u8> {
        tree::whole_file(&self.content, self.txid)
    }

    /// The pages reachable from the committed meta, that meta page included, as (first page id,
    /// page count) ranges: the pages no commit may write before its meta is durable.
    pub fn reachable_pages(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self
            .tree
            .reachable(self.txid)
            .into_iter()
            .map(|e: Extent| (e.pgid, e.pages))
            .collect();
        out.sort();
        out
    }
}
