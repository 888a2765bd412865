//! The multi-version keyspace: a revision-keyed record log plus a per-key index of generations.
//!
//! It mirrors etcd's split between bbolt (every record keyed by `(main, sub)` revision) and the
//! in-memory tree index (per key, its generations: the revisions from a create to a delete). Reads
//! at any revision not compacted away are exact; compaction keeps, per key, only the newest
//! version at or below the compact revision, and keeps every record *at* the compact revision
//! (tombstones included) so that a watch started there still sees that revision's events.
//!
//! This module knows nothing of leases, txns, watches or Raft: it stores and finds versions.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::api::{Event, EventType, KeyValue, LeaseId};
use crate::backend::Backend;

/// A revision: `main` is the store revision of a change, `sub` orders the changes inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }
}

/// One record of the log: a put (the full kv) or a tombstone (the deleted key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub kv: KeyValue,
    pub tombstone: bool,
}

impl Record {
    fn bytes(&self) -> u64 {
        Backend::record_bytes(self.kv.key.len(), self.kv.value.len())
    }
}

/// The revisions of one key from its creation to its deletion (if it was deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation {
    /// The revision that created the key in this generation.
    created: i64,
    /// The key's revisions in this generation, ascending; a deleted generation ends in its
    /// tombstone. Compaction may drop a prefix.
    revs: Vec<Revision>,
    deleted: bool,
}

/// etcd's keyIndex: the generations of one key, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct KeyIndex {
    generations: Vec<Generation>,
}

impl KeyIndex {
    fn is_live(&self) -> bool {
        self.generations.last().is_some_and(|g| !g.deleted)
    }

    fn put(&mut self, rev: Revision, created: i64) {
        match self.generations.last_mut() {
            Some(g) if !g.deleted => {
                assert!(
                    g.revs.last().is_none_or(|last| *last < rev),
                    "revisions go up"
                );
                g.revs.push(rev);
            }
            _ => self.generations.push(Generation {
                created,
                revs: vec![rev],
                deleted: false,
            }),
        }
    }

    fn tombstone(&mut self, rev: Revision) {
        let g = self
            .generations
            .last_mut()
            .expect("tombstone of a key with no generation");
        assert!(!g.deleted, "tombstone of a deleted key");
        assert!(
            g.revs.last().is_some_and(|last| *last < rev),
            "revisions go up"
        );
        g.revs.push(rev);
        g.deleted = true;
    }

    /// The record revision that holds the key's value at `at`, or `None` if the key did not
    /// exist then (never created, or deleted at or before `at`).
    fn get(&self, at: i64) -> Option<Revision> {
        for (i, g) in self.generations.iter().enumerate().rev() {
            let is_last = i + 1 == self.generations.len();
            let Some(first) = g.revs.first() else {
                continue;
            };
            if g.deleted {
                let tomb = g.revs.last().expect("deleted generation has a tombstone");
                if tomb.main <= at {
                    // Deleted at or before `at`; any later generation started after `at`.
                    return None;
                }
            } else {
                debug_assert!(is_last, "only the last generation is live");
            }
            if first.main <= at {
                let found = g
                    .revs
                    .iter()
                    .rev()
                    .find(|r| r.main <= at)
                    .expect("first <= at");
                return Some(*found);
            }
        }
        None
    }

    /// Drops every revision superseded at `at`, adding the one kept per generation to `keep`.
    /// Returns false when nothing of the key is left.
    fn compact(&mut self, at: i64, keep: &mut BTreeSet<Revision>) -> bool {
        let first_kept = self.generations.iter().position(|g| {
            !g.deleted
                || g.revs
                    .last()
                    .expect("deleted generation has a tombstone")
                    .main
                    > at
        });
        let Some(first_kept) = first_kept else {
            self.generations.clear();
            return false;
        };
        self.generations.drain(..first_kept);
        let g = &mut self.generations[0];
        if let Some(i) = g.revs.iter().rposition(|r| r.main <= at) {
            keep.insert(g.revs[i]);
            g.revs.drain(..i);
        }
        true
    }
}

/// The keyspace at every revision from the compact revision on.
#[derive(Debug, Clone)]
pub struct Mvcc {
    index: BTreeMap<Vec<u8>, KeyIndex>,
    records: BTreeMap<Revision, Record>,
    current_revision: i64,
    compact_revision: i64,
    backend: Backend,
    /// The hash of every record, extended as revisions are appended so that hashing the latest
    /// state costs nothing (replicas publish it after every step); recomputed after compaction.
    hash_latest: Fnv,
}

impl Default for Mvcc {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `key` falls in etcd's range `(start, end)`: `end` empty = `start` alone, `end == [0]`
/// = every key >= `start`.
pub fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        key == start
    } else if end == [0] {
        key >= start
    } else {
        key >= start && key < end
    }
}

impl Mvcc {
    /// An empty store: revision 1, nothing compacted.
    pub fn new() -> Self {
        Mvcc {
            index: BTreeMap::new(),
            records: BTreeMap::new(),
            current_revision: 1,
            compact_revision: 0,
            backend: Backend::new(),
            hash_latest: Fnv::new(),
        }
    }

    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn backend_mut(&mut self) -> &mut Backend {
        &mut self.backend
    }

    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// The key's kv at revision `at` (no bounds checks: callers check compaction).
    pub fn kv_at(&self, key: &[u8], at: i64) -> Option<&KeyValue> {
        let rev = self.index.get(key)?.get(at)?;
        let record = self
            .records
            .get(&rev)
            .expect("indexed revision has a record");
        assert!(!record.tombstone, "index resolved to a tombstone");
        Some(&record.kv)
    }

    /// The latest live kv of `key`, including changes of the txn in progress.
    pub fn latest(&self, key: &[u8]) -> Option<&KeyValue> {
        let ki = self.index.get(key)?;
        if !ki.is_live() {
            return None;
        }
        let rev = ki.generations.last()?.revs.last()?;
        Some(&self.records[rev].kv)
    }

    /// Every kv live at `at` whose key is in `(start, end)`, in key order.
    pub fn range_at<'a>(
        &'a self,
        start: &'a [u8],
        end: &'a [u8],
        at: i64,
    ) -> impl Iterator<Item = &'a KeyValue> + 'a {
        let upper: Bound<&[u8]> = if end.is_empty() {
            Bound::Included(start)
        } else if end == [0] {
            Bound::Unbounded
        } else if end <= start {
            Bound::Excluded(start)
        } else {
            Bound::Excluded(end)
        };
        self.index
            .range::<[u8], _>((Bound::Included(start), upper))
            .filter_map(move |(key, ki)| {
                ki.get(at).map(|rev| {
                    let record = &self.records[&rev];
                    debug_assert_eq!(&record.kv.key, key);
                    &record.kv
                })
            })
    }

    /// Writes a put at `rev` and returns the new kv and the one it replaced.
    pub fn put(
        &mut self,
        rev: Revision,
        key: &[u8],
        value: Vec<u8>,
        lease: LeaseId,
    ) -> (KeyValue, Option<KeyValue>) {
        assert!(
            rev.main == self.current_revision + 1,
            "writes go to the next revision"
        );
        let prev = self.latest(key).cloned();
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: prev.as_ref().map_or(rev.main, |p| p.create_revision),
            mod_revision: rev.main,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.index
            .entry(key.to_vec())
            .or_default()
            .put(rev, kv.create_revision);
        self.insert_record(
            rev,
            Record {
                kv: kv.clone(),
                tombstone: false,
            },
        );
        (kv, prev)
    }

    /// Writes a tombstone for a live key at `rev` and returns the kv it deleted.
    pub fn delete(&mut self, rev: Revision, key: &[u8]) -> KeyValue {
        assert!(
            rev.main == self.current_revision + 1,
            "writes go to the next revision"
        );
        let prev = self
            .latest(key)
            .cloned()
            .expect("delete of a key that is not live");
        self.index
            .get_mut(key)
            .expect("live key is indexed")
            .tombstone(rev);
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: rev.main,
            ..KeyValue::default()
        };
        self.insert_record(
            rev,
            Record {
                kv,
                tombstone: true,
            },
        );
        prev
    }

    fn insert_record(&mut self, rev: Revision, record: Record) {
        self.backend.allocate(record.bytes());
        let old = self.records.insert(rev, record);
        assert!(old.is_none(), "revision {rev:?} written twice");
    }

    /// Ends a write txn: if it changed anything, the current revision moves on by one.
    pub fn end_write(&mut self, changed: bool) {
        if changed {
            self.current_revision += 1;
            let rev = Revision::new(self.current_revision, 0);
            for (r, record) in self.records.range(rev..) {
                hash_record(&mut self.hash_latest, r, record);
            }
        }
        debug_assert!(
            self.records
                .range(Revision::new(self.current_revision + 1, 0)..)
                .next()
                .is_none(),
            "records above the current revision"
        );
    }

    /// Compacts at `at`, returning the number of records removed. With
    /// `drop_tombstones_at_compact` (the planted etcd 18089 bug) the tombstones at exactly `at`
    /// go too, so a watch started at `at` misses those deletes.
    pub fn compact(&mut self, at: i64, drop_tombstones_at_compact: bool) -> Vec<Revision> {
        assert!(at > self.compact_revision && at <= self.current_revision);
        let mut keep = BTreeSet::new();
        self.index.retain(|_, ki| ki.compact(at, &mut keep));
        let mut doomed: Vec<Revision> = self
            .records
            .range(..Revision::new(at, 0))
            .map(|(rev, _)| *rev)
            .filter(|rev| !keep.contains(rev))
            .collect();
        if drop_tombstones_at_compact {
            doomed.extend(
                self.records
                    .range(Revision::new(at, 0)..Revision::new(at + 1, 0))
                    .filter(|(_, record)| record.tombstone)
                    .map(|(rev, _)| *rev),
            );
        }
        for rev in &doomed {
            let record = self.records.remove(rev).expect("doomed record exists");
            self.backend.free(record.bytes());
        }
        self.compact_revision = at;
        self.hash_latest = self.hash_from_scratch(self.current_revision);
        doomed
    }

    /// The revisions of the tombstones at exactly revision `at`.
    pub fn tombstones_at(&self, at: i64) -> Vec<Revision> {
        self.records
            .range(Revision::new(at, 0)..Revision::new(at + 1, 0))
            .filter(|(_, record)| record.tombstone)
            .map(|(rev, _)| *rev)
            .collect()
    }

    /// The records of revisions above `after`, ascending.
    pub fn records_after(&self, after: i64) -> impl Iterator<Item = (&Revision, &Record)> {
        self.records.range(Revision::new(after + 1, 0)..)
    }

    /// The events of revisions `from..=to` whose key is in `(start, end)`, in revision order.
    pub fn events(&self, from: i64, to: i64, start: &[u8], end: &[u8]) -> Vec<Event> {
        if from > to {
            return Vec::new();
        }
        self.records
            .range(Revision::new(from, 0)..Revision::new(to + 1, 0))
            .filter(|(_, record)| in_range(&record.kv.key, start, end))
            .map(|(_, record)| Event {
                kind: if record.tombstone {
                    EventType::Delete
                } else {
                    EventType::Put
                },
                kv: record.kv.clone(),
                prev_kv: None,
            })
            .collect()
    }

    /// The kv an event replaced, as etcd's watch server finds it: a read at `mod_revision - 1`,
    /// absent when that revision is compacted.
    pub fn prev_kv_of(&self, event: &Event) -> Option<KeyValue> {
        let at = event.kv.mod_revision - 1;
        if at < self.compact_revision || at < 1 {
            return None;
        }
        self.kv_at(&event.kv.key, at).cloned()
    }

    /// A deterministic hash (FNV-1a, 64 bit) of every record at or below `at`; free for the
    /// current revision.
    pub fn hash_at(&self, at: i64) -> u64 {
        if at == self.current_revision {
            return self.hash_latest.finish();
        }
        self.hash_from_scratch(at).finish()
    }

    fn hash_from_scratch(&self, at: i64) -> Fnv {
        let mut hash = Fnv::new();
        for (rev, record) in self.records.range(..Revision::new(at + 1, 0)) {
            hash_record(&mut hash, rev, record);
        }
        hash
    }

    /// The records, for a snapshot image.
    pub fn records(&self) -> impl Iterator<Item = (&Revision, &Record)> {
        self.records.iter()
    }

    /// Every live key with the lease it is attached to, in key order.
    pub fn live_keys(&self) -> impl Iterator<Item = &KeyValue> {
        self.index.values().filter(|ki| ki.is_live()).map(|ki| {
            let rev = ki
                .generations
                .last()
                .and_then(|g| g.revs.last())
                .expect("live key");
            &self.records[rev].kv
        })
    }

    /// Rebuilds a keyspace from the records of a snapshot image, as etcd restores its tree index
    /// from bbolt. A tombstone whose key has no live generation (its history was compacted) stays
    /// a record only.
    pub fn restore(
        records: Vec<(Revision, Record)>,
        current_revision: i64,
        compact_revision: i64,
        file_pages: u64,
        extra_live_bytes: u64,
    ) -> Mvcc {
        let mut index: BTreeMap<Vec<u8>, KeyIndex> = BTreeMap::new();
        let mut map = BTreeMap::new();
        let mut live_bytes = extra_live_bytes;
        for (rev, record) in records {
            assert!(
                rev.main <= current_revision,
                "image record above its revision"
            );
            live_bytes += record.bytes();
            if record.tombstone {
                if let Some(ki) = index.get_mut(&record.kv.key).filter(|ki| ki.is_live()) {
                    ki.tombstone(rev);
                }
            } else {
                index
                    .entry(record.kv.key.clone())
                    .or_default()
                    .put(rev, record.kv.create_revision);
            }
            let old = map.insert(rev, record);
            assert!(old.is_none(), "image repeats revision {rev:?}");
        }
        // Re-running the compaction drops what the live index would already have dropped (a
        // generation restored from a tombstone at or below the compact revision).
        let mut keep = BTreeSet::new();
        if compact_revision > 0 {
            index.retain(|_, ki| ki.compact(compact_revision, &mut keep));
        }
        let mut mvcc = Mvcc {
            index,
            records: map,
            current_revision,
            compact_revision,
            backend: Backend::restored(live_bytes, file_pages),
            hash_latest: Fnv::new(),
        };
        mvcc.hash_latest = mvcc.hash_from_scratch(current_revision);
        mvcc
    }

    /// Structural invariants; panics with a message naming the broken one. `extra_bytes` is what
    /// the backend holds besides MVCC records (leases, alarms).
    pub fn check_invariants(&self, extra_bytes: u64) {
        assert!(self.current_revision >= 1, "revision below 1");
        assert!(
            self.compact_revision <= self.current_revision,
            "compacted past the revision"
        );
        if let Some((last, _)) = self.records.last_key_value() {
            assert!(
                last.main <= self.current_revision,
                "record above the current revision"
            );
        }
        let mut bytes = extra_bytes;
        for (rev, record) in &self.records {
            bytes += record.bytes();
            assert_eq!(
                record.kv.mod_revision, rev.main,
                "record mod_revision != its revision"
            );
            if !record.tombstone {
                assert!(record.kv.version >= 1, "put with version < 1");
                assert!(
                    record.kv.create_revision <= rev.main,
                    "created after modified"
                );
            }
        }
        assert_eq!(
            bytes,
            self.backend.live_bytes(),
            "backend bytes drifted from the records"
        );
        self.backend.check_invariants();
        for (key, ki) in &self.index {
            assert!(!ki.generations.is_empty(), "empty key index for {key:?}");
            for (i, g) in ki.generations.iter().enumerate() {
                assert!(!g.revs.is_empty(), "empty generation");
                assert!(
                    g.deleted || i + 1 == ki.generations.len(),
                    "live generation not last"
                );
                assert!(
                    g.revs.windows(2).all(|w| w[0] < w[1]),
                    "generation revisions not sorted"
                );
                let mut prev_version = None;
                for (j, rev) in g.revs.iter().enumerate() {
                    let record = self
                        .records
                        .get(rev)
                        .expect("indexed revision has a record");
                    assert_eq!(&record.kv.key, key, "index points at another key's record");
                    let is_tomb = g.deleted && j + 1 == g.revs.len();
                    assert_eq!(record.tombstone, is_tomb, "tombstone in the wrong place");
                    if !is_tomb {
                        assert_eq!(record.kv.create_revision, g.created, "create_revision");
                        if let Some(pv) = prev_version {
                            assert_eq!(record.kv.version, pv + 1, "versions not consecutive");
                        }
                        prev_version = Some(record.kv.version);
                    }
                }
            }
        }
    }
}

fn hash_record(hash: &mut Fnv, rev: &Revision, record: &Record) {
    hash.write_i64(rev.main);
    hash.write_i64(rev.sub);
    hash.write_u8(record.tombstone as u8);
    hash.write_bytes(&record.kv.key);
    hash.write_i64(record.kv.create_revision);
    hash.write_i64(record.kv.mod_revision);
    hash.write_i64(record.kv.version);
    hash.write_i64(record.kv.lease);
    hash.write_bytes(&record.kv.value);
}

/// FNV-1a, 64 bit: small, stable across platforms and releases, and good enough to tell two
/// replicas apart.
#[derive(Debug, Clone)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self::new()
    }
}

impl Fnv {
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    pub fn write_u8(&mut self, byte: u8) {
        self.0 ^= byte as u64;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.write_i64(bytes.len() as i64);
        for b in bytes {
            self.write_u8(*b);
        }
    }
    pub fn write_i64(&mut self, v: i64) {
        for b in v.to_le_bytes() {
            self.write_u8(b);
        }
    }
    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(m: &mut Mvcc, key: &str, value: &str) -> KeyValue {
        let rev = Revision::new(m.current_revision() + 1, 0);
        let (kv, _) = m.put(rev, key.as_bytes(), value.as_bytes().to_vec(), 0);
        m.end_write(true);
        kv
    }

    fn delete(m: &mut Mvcc, key: &str) {
        let rev = Revision::new(m.current_revision() + 1, 0);
        m.delete(rev, key.as_bytes());
        m.end_write(true);
    }

    #[test]
    fn versions_and_generations() {
        let mut m = Mvcc::new();
        let a = put(&mut m, "k", "1"); // rev 2
        let b = put(&mut m, "k", "2"); // rev 3
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 2, 1));
        assert_eq!((b.create_revision, b.mod_revision, b.version), (2, 3, 2));
        delete(&mut m, "k"); // rev 4
        let c = put(&mut m, "k", "3"); // rev 5
        assert_eq!((c.create_revision, c.mod_revision, c.version), (5, 5, 1));
        assert_eq!(m.kv_at(b"k", 1), None);
        assert_eq!(
            m.kv_at(b"k", 3).map(|kv| kv.value.clone()),
            Some(b"2".to_vec())
        );
        assert_eq!(m.kv_at(b"k", 4), None);
        assert_eq!(m.kv_at(b"k", 5).map(|kv| kv.version), Some(1));
        m.check_invariants(0);
    }

    #[test]
    fn compaction_keeps_newest_version_and_tombstone_at_compact_revision() {
        let mut m = Mvcc::new();
        put(&mut m, "a", "1"); // 2
        put(&mut m, "a", "2"); // 3
        put(&mut m, "b", "1"); // 4
        delete(&mut m, "b"); // 5
        put(&mut m, "a", "3"); // 6
        m.compact(5, false);
        assert_eq!(
            m.kv_at(b"a", 5).map(|kv| kv.value.clone()),
            Some(b"2".to_vec())
        );
        assert_eq!(m.kv_at(b"b", 5), None);
        // The tombstone at the compact revision stays for watchers starting there.
        let events = m.events(5, 6, b"\0", b"\0");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].kind, EventType::Delete);
        // Records of revisions 2 (superseded), 4 (b's put, deleted at 5) are gone.
        assert_eq!(m.record_count(), 3);
        m.check_invariants(0);
        m.compact(6, false);
        assert_eq!(
            m.record_count(),
            1,
            "the tombstone goes with the next compaction"
        );
        m.check_invariants(0);
    }
}
