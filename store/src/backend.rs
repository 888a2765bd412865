//! Backend space accounting, modelled on etcd's bbolt file.
//!
//! bbolt never returns pages to the file system: pages freed by deletes and compaction go to a
//! freelist and are reused by later writes, and the file (the *db size*) only shrinks when a
//! defragment rewrites it. etcd's quota compares that file size, not the bytes in use, with the
//! backend quota. This module keeps exactly those two numbers, in pages, from the byte sizes of
//! the records the store holds. It does no IO and owns no data.

use serde::{Deserialize, Serialize};

/// bbolt's page size on the platforms etcd runs on.
pub const PAGE_BYTES: u64 = 4096;

/// Pages a fresh bbolt file holds before any data: two meta pages, the freelist, the root bucket
/// page and one leaf (a fresh etcd reports a 20480-byte db).
pub const META_PAGES: u64 = 5;

/// Fixed cost of one MVCC record besides its key and value: the 17-byte revision key plus the
/// encoded KeyValue fields and bbolt's leaf element header.
pub const RECORD_OVERHEAD_BYTES: u64 = 64;

/// Bytes one lease occupies in the lease bucket.
pub const LEASE_RECORD_BYTES: u64 = 48;

/// The page accounting of one member's backend file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// Bytes of live records (MVCC records kept by compaction, leases, alarms).
    live_bytes: u64,
    /// Pages the file has grown to: never smaller than the pages in use.
    file_pages: u64,
}

impl Default for Backend {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend {
    pub fn new() -> Self {
        Backend {
            live_bytes: 0,
            file_pages: META_PAGES,
        }
    }

    /// Rebuilds the accounting of a backend restored from a snapshot image.
    pub fn restored(live_bytes: u64, file_pages: u64) -> Self {
        let backend = Backend {
            live_bytes,
            file_pages: file_pages.max(META_PAGES),
        };
        let backend = Backend {
            file_pages: backend.file_pages.max(backend.pages_in_use()),
            ..backend
        };
        backend.check_invariants();
        backend
    }

    /// The size in bytes an MVCC record of this key and value takes.
    pub fn record_bytes(key_len: usize, value_len: usize) -> u64 {
        RECORD_OVERHEAD_BYTES + key_len as u64 + value_len as u64
    }

    pub fn pages_in_use(&self) -> u64 {
        META_PAGES + self.live_bytes.div_ceil(PAGE_BYTES)
    }

    /// etcd's `dbSize`: the file size.
    pub fn size_bytes(&self) -> u64 {
        self.file_pages * PAGE_BYTES
    }

    /// etcd's `dbSizeInUse`: the file size less the free pages.
    pub fn size_in_use_bytes(&self) -> u64 {
        self.pages_in_use() * PAGE_BYTES
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn file_pages(&self) -> u64 {
        self.file_pages
    }

    /// Records `bytes` of new data. Free pages are used first; the file grows only past them.
    pub fn allocate(&mut self, bytes: u64) {
        self.live_bytes += bytes;
        self.file_pages = self.file_pages.max(self.pages_in_use());
        self.check_invariants();
    }

    /// Frees `bytes` of data: the pages go to the freelist, the file keeps its size.
    pub fn free(&mut self, bytes: u64) {
        assert!(
            bytes <= self.live_bytes,
            "freeing {bytes} bytes of {} live",
            self.live_bytes
        );
        self.live_bytes -= bytes;
        self.check_invariants();
    }

    /// Rewrites the file without its free pages, as etcd's Defragment does.
    pub fn defragment(&mut self) {
        self.file_pages = self.pages_in_use();
        self.check_invariants();
    }

    pub fn check_invariants(&self) {
        assert!(self.file_pages >= META_PAGES);
        assert!(
            self.file_pages >= self.pages_in_use(),
            "file smaller than the pages in use"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_backend_is_five_pages() {
        let backend = Backend::new();
        assert_eq!(backend.size_bytes(), 20480);
        assert_eq!(backend.size_in_use_bytes(), 20480);
    }

    #[test]
    fn freed_pages_are_reused_and_only_defragment_shrinks_the_file() {
        let mut backend = Backend::new();
        backend.allocate(10 * PAGE_BYTES);
        assert_eq!(backend.file_pages(), META_PAGES + 10);
        backend.free(8 * PAGE_BYTES);
        assert_eq!(
            backend.file_pages(),
            META_PAGES + 10,
            "free pages stay in the file"
        );
        assert_eq!(backend.pages_in_use(), META_PAGES + 2);
        backend.allocate(5 * PAGE_BYTES);
        assert_eq!(
            backend.file_pages(),
            META_PAGES + 10,
            "writes reuse free pages first"
        );
        backend.defragment();
        assert_eq!(backend.file_pages(), META_PAGES + 7);
        assert_eq!(backend.size_bytes(), backend.size_in_use_bytes());
    }
}
