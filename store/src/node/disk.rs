//! The node's view of its disk: a flat directory of named files with POSIX durability rules.
//!
//! Writes land in a page cache and are *not durable* until synced: `sync_file` makes a file's
//! content durable, `sync_dir` makes the directory's entries (creations, renames, removals)
//! durable. After a crash only what was durable survives. An implementation may fail any call with
//! an I/O error (for example `StorageFull` for ENOSPC); the node treats that as an environment
//! fault, never as an etcd outcome.

use std::future::Future;
use std::io;

/// A node's disk. Cloning gives another handle to the same disk.
pub trait Disk: Clone + Send + Sync + 'static {
    /// The whole content of `name` as the node sees it (page cache included).
    /// `NotFound` if there is no such file.
    fn read(&self, name: &str) -> impl Future<Output = io::Result<Vec<u8>>> + Send;

    /// Appends `data` to `name`, creating the file if needed. Not durable until synced.
    fn append(&self, name: &str, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// Creates or truncates `name` and writes `data` into it. Not durable until synced.
    fn write(&self, name: &str, data: &[u8]) -> impl Future<Output = io::Result<()>> + Send;

    /// pwrite: writes `data` at byte `offset` of `name`, creating the file if needed, and
    /// overwriting what was there; the file grows to `offset + data.len()` if that is past its
    /// end, and a gap between the old end and `offset` reads as zeros. Empty `data` changes no
    /// content. Not durable until synced; a sync that started before the call need not make it
    /// durable. `FileTooLarge` if `offset + data.len()` is beyond what the disk can address.
    fn write_at(
        &self,
        name: &str,
        offset: u64,
        data: &[u8],
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// The size of `name` in bytes as the node sees it (page cache included).
    /// `NotFound` if there is no such file. The default reads the whole file.
    fn len(&self, name: &str) -> impl Future<Output = io::Result<u64>> + Send {
        async move { self.read(name).await.map(|content| content.len() as u64) }
    }

    /// fsync: makes the content of `name` durable. Blocks while the disk is stalled.
    fn sync_file(&self, name: &str) -> impl Future<Output = io::Result<()>> + Send;

    /// fdatasync: makes the content of `name` durable without its metadata. The directory
    /// entry still needs [`sync_dir`](Self::sync_dir). A disk that does not tell the two apart
    /// keeps this default, a full fsync.
    fn sync_data(&self, name: &str) -> impl Future<Output = io::Result<()>> + Send {
        self.sync_file(name)
    }

    /// fsync of the directory: makes creations, renames and removals durable.
    fn sync_dir(&self) -> impl Future<Output = io::Result<()>> + Send;

    /// Renames `from` to `to`, replacing `to` atomically. Not durable until `sync_dir`.
    fn rename(&self, from: &str, to: &str) -> impl Future<Output = io::Result<()>> + Send;

    /// Removes `name`. Not durable until `sync_dir`. `NotFound` if absent.
    fn remove(&self, name: &str) -> impl Future<Output = io::Result<()>> + Send;

    /// Every file name in the directory as the node sees it, sorted.
    fn list(&self) -> impl Future<Output = io::Result<Vec<String>>> + Send;
}
