//! The in-memory side of the file: content, the page table of leaves, page allocation, and the
//! copy-on-write rewrite of a commit's dirty leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound::{self, Excluded, Included, Unbounded};

use super::page::{
    self, decode_directory, decode_freelist, decode_leaf, encode_directory, encode_freelist,
    encode_leaf, encode_meta, leaf_entry_bytes, node_pages, read_node, Extent, Meta, NodeKind,
    EMPTY_CONTENT_BYTES, FREE_RANGE_BYTES, PAGE_CAPACITY,
};
use super::{Bucket, DbError, DbKey, PageWrite, PAGE_BYTES};

/// A leaf below this many content bytes is merged with a neighbour when it is rewritten (bbolt
/// rebalances nodes under a quarter full).
const MERGE_BELOW_BYTES: u64 = PAGE_CAPACITY / 4;

/// One entry, borrowed from [`Content`].
pub(super) type EntryRef<'a> = (Bucket, &'a [u8], &'a [u8]);

/// The keyspace, one ordered map per bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Content {
    pub buckets: [BTreeMap<Vec<u8>, Vec<u8>>; Bucket::ALL.len()],
}

impl Content {
    pub fn bucket(&self, bucket: Bucket) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.buckets[bucket as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = EntryRef<'_>> {
        Bucket::ALL.into_iter().flat_map(move |b| {
            self.bucket(b)
                .iter()
                .map(move |(k, v)| (b, k.as_slice(), v.as_slice()))
        })
    }

    /// The entries with keys in `lo..hi`; `lo` is never after `hi`.
    fn between(&self, lo: Bound<&DbKey>, hi: Bound<&DbKey>) -> Vec<EntryRef<'_>> {
        let mut out = Vec::new();
        for b in Bucket::ALL {
            let lo_b: Bound<&[u8]> = match lo {
                Included((lb, _)) | Excluded((lb, _)) if b < *lb => continue,
                Included((lb, lk)) if b == *lb => Included(lk.as_slice()),
                Excluded((lb, lk)) if b == *lb => Excluded(lk.as_slice()),
                _ => Unbounded,
            };
            let hi_b: Bound<&[u8]> = match hi {
                Included((hb, _)) | Excluded((hb, _)) if b > *hb => continue,
                Included((hb, hk)) if b == *hb => Included(hk.as_slice()),
                Excluded((hb, hk)) if b == *hb => Excluded(hk.as_slice()),
                _ => Unbounded,
            };
            let map = self.bucket(b);
            out.extend(
                map.range::<[u8], _>((lo_b, hi_b))
                    .map(|(k, v)| (b, k.as_slice(), v.as_slice())),
            );
        }
        out
    }
}

/// Sets of free pages as coalesced ranges, keyed by first page id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Extents {
    ranges: BTreeMap<u64, u64>,
    total: u64,
}

impl Extents {
    pub fn insert(&mut self, extent: Extent) {
        let (mut pgid, mut pages) = (extent.pgid, extent.pages);
        if pages == 0 {
            return;
        }
        self.total += pages;
        if let Some((&prev, &prev_pages)) = self.ranges.range(..pgid).next_back() {
            debug_assert!(prev + prev_pages <= pgid, "page {pgid} freed twice");
            if prev + prev_pages == pgid {
                self.ranges.remove(&prev);
                pgid = prev;
                pages += prev_pages;
            }
        }
        if let Some((&next, &next_pages)) = self.ranges.range(pgid + pages..).next() {
            if next == pgid + pages {
                self.ranges.remove(&next);
                pages += next_pages;
            }
        }
        debug_assert!(
            self.ranges
                .range(pgid..)
                .next()
                .is_none_or(|(&next, _)| next >= pgid + pages),
            "page {pgid} freed twice"
        );
        self.ranges.insert(pgid, pages);
    }

    /// Takes the first range of at least `pages` pages, if any.
    fn take_first_fit(&mut self, pages: u64) -> Option<u64> {
        let (&pgid, &len) = self.ranges.iter().find(|(_, &len)| len >= pages)?;
        self.ranges.remove(&pgid);
        if len > pages {
            self.ranges.insert(pgid + pages, len - pages);
        }
        self.total -= pages;
        Some(pgid)
    }

    pub fn absorb(&mut self, other: Extents) {
        for (pgid, pages) in other.ranges {
            self.insert(Extent::new(pgid, pages));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = Extent> + '_ {
        self.ranges
            .iter()
            .map(|(&pgid, &pages)| Extent::new(pgid, pages))
    }

    pub fn range_count(&self) -> u64 {
        self.ranges.len() as u64
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Leaf {
    /// Where the committed version lies; `None` for a leaf created by the commit in progress.
    pub extent: Option<Extent>,
    /// Encoded content bytes of its current entries.
    pub bytes: u64,
}

/// The page table and the allocator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Tree {
    /// Leaves by first key. Leaf `i` holds the keys from its first key up to the next leaf's; the
    /// first leaf also holds every key before its own. Between commits each key is the leaf's
    /// smallest entry; during a commit it may be stale, which moves no key to another leaf.
    pub leaves: BTreeMap<DbKey, Leaf>,
    pub root: Extent,
    pub freelist: Extent,
    /// Pages free for this commit: freed by an earlier, committed transaction.
    pub free: Extents,
    /// Pages freed by the last commit, still reachable from the other meta page.
    pub pending: Extents,
    /// Pages the file has grown to, metas included.
    pub high_water: u64,
}

impl Tree {
    fn alloc(&mut self, pages: u64) -> Extent {
        let pgid = self.free.take_first_fit(pages).unwrap_or_else(|| {
            self.high_water += pages;
            self.high_water - pages
        });
        Extent::new(pgid, pages)
    }

    /// The index key of the leaf `key` belongs to, creating the first leaf of an empty tree.
    pub fn leaf_for(&mut self, key: &DbKey) -> DbKey {
        let found = self
            .leaves
            .range::<DbKey, _>((Unbounded, Included(key)))
            .next_back()
            .or_else(|| self.leaves.iter().next());
        match found {
            Some((k, _)) => k.clone(),
            None => {
                let leaf = Leaf {
                    extent: None,
                    bytes: EMPTY_CONTENT_BYTES,
                };
                self.leaves.insert(key.clone(), leaf);
                key.clone()
            }
        }
    }

    fn next_key(&self, key: &DbKey) -> Option<&DbKey> {
        self.leaves
            .range::<DbKey, _>((Excluded(key), Unbounded))
            .next()
            .map(|(k, _)| k)
    }

    fn prev_key(&self, key: &DbKey) -> Option<&DbKey> {
        self.leaves
            .range::<DbKey, _>((Unbounded, Excluded(key)))
            .next_back()
            .map(|(k, _)| k)
    }

    /// Rewrites the `dirty` leaves into new pages (merging small ones with a neighbour, splitting
    /// large ones), then the directory and the freelist; returns the meta of transaction `txid`.
    /// The old versions' pages become pending.
    pub fn write(
        &mut self,
        content: &Content,
        mut dirty: BTreeSet<DbKey>,
        txid: u64,
        data: &mut Vec<PageWrite>,
    ) -> Meta {
        let small: Vec<DbKey> = dirty
            .iter()
            .filter(|k| {
                let bytes = self.leaves[*k].bytes;
                bytes > EMPTY_CONTENT_BYTES && bytes < MERGE_BELOW_BYTES
            })
            .cloned()
            .collect();
        for key in small {
            if let Some(neighbour) = self.next_key(&key).or_else(|| self.prev_key(&key)) {
                dirty.insert(neighbour.clone());
            }
        }
        let mut runs: Vec<Vec<DbKey>> = Vec::new();
        for key in dirty {
            match runs.last_mut() {
                Some(run)
                    if self.next_key(run.last().expect("runs are non-empty")) == Some(&key) =>
                {
                    run.push(key)
                }
                _ => runs.push(vec![key]),
            }
        }
        for run in runs {
            self.rewrite_run(content, &run, txid, data);
        }
        self.write_root(txid, data)
    }

    /// Rewrites consecutive leaves `run` as one range of entries.
    fn rewrite_run(
        &mut self,
        content: &Content,
        run: &[DbKey],
        txid: u64,
        data: &mut Vec<PageWrite>,
    ) {
        let first = &run[0];
        let last = &run[run.len() - 1];
        let lo = if self.leaves.keys().next() == Some(first) {
            Unbounded
        } else {
            Included(first)
        };
        let hi = self.next_key(last).cloned();
        let entries = content.between(lo, hi.as_ref().map_or(Unbounded, Excluded));
        for key in run {
            let leaf = self.leaves.remove(key).expect("dirty leaves exist");
            if let Some(extent) = leaf.extent {
                self.pending.insert(extent);
            }
        }
        for (range, bytes) in split(&entries) {
            let (bucket, key, _) = entries[range.start];
            let buf = encode_leaf(entries[range].iter().copied(), bytes);
            let extent = self.alloc(buf.pages());
            data.push(PageWrite {
                offset: extent.offset(),
                data: buf.finish(NodeKind::Leaf, extent, txid),
            });
            let leaf = Leaf {
                extent: Some(extent),
                bytes,
            };
            self.leaves.insert((bucket, key.to_vec()), leaf);
        }
    }

    /// Frees the old directory and freelist and writes new ones.
    fn write_root(&mut self, txid: u64, data: &mut Vec<PageWrite>) -> Meta {
        self.pending.insert(self.root);
        self.pending.insert(self.freelist);
        let buf = encode_directory(self.leaves.iter().map(|((b, k), leaf)| {
            (
                *b,
                k.as_slice(),
                leaf.extent.expect("every leaf is written"),
            )
        }));
        self.root = self.alloc(buf.pages());
        data.push(PageWrite {
            offset: self.root.offset(),
            data: buf.finish(NodeKind::Directory, self.root, txid),
        });
        // Allocating can only shorten the lists, so the estimate is an upper bound. Pending pages
        // are written as free: on reopening, the last commit is durable and no one reads the
        // older tree.
        let ranges_max = self.free.range_count() + self.pending.range_count();
        self.freelist = self.alloc(node_pages(
            EMPTY_CONTENT_BYTES + FREE_RANGE_BYTES * ranges_max,
        ));
        let mut all = self.free.clone();
        all.absorb(self.pending.clone());
        let buf = encode_freelist(all.iter().collect::<Vec<_>>().into_iter());
        data.push(PageWrite {
            offset: self.freelist.offset(),
            data: buf.finish(NodeKind::Freelist, self.freelist, txid),
        });
        Meta {
            txid,
            root: self.root,
            freelist: self.freelist,
            high_water: self.high_water,
        }
    }

    /// Every page reachable from the committed meta of txid `txid`, that meta page included.
    pub fn reachable(&self, txid: u64) -> Vec<Extent> {
        let mut out = vec![Extent::new(txid % 2, 1), self.root, self.freelist];
        out.extend(self.leaves.values().filter_map(|leaf| leaf.extent));
        out
    }
}

/// Cuts `entries` into leaves of at most one page each; an entry too big for one page gets a leaf
/// of its own. Returns each leaf's entries and encoded content bytes.
fn split(entries: &[EntryRef<'_>]) -> Vec<(std::ops::Range<usize>, u64)> {
    let mut pieces = Vec::new();
    let (mut start, mut bytes) = (0, EMPTY_CONTENT_BYTES);
    for (i, (_, key, value)) in entries.iter().enumerate() {
        let entry = leaf_entry_bytes(key, value);
        if i > start && bytes + entry > PAGE_CAPACITY {
            pieces.push((start..i, bytes));
            (start, bytes) = (i, EMPTY_CONTENT_BYTES);
        }
        bytes += entry;
    }
    if start < entries.len() {
        pieces.push((start..entries.len(), bytes));
    }
    pieces
}

/// A whole file holding `content` densely, with no free pages, opening at `txid`. Both metas
/// point at the same tree (the other one with txid `txid - 1`), so its nodes carry the older txid.
pub(super) fn whole_file(content: &Content, txid: u64) -> Vec<u8> {
    let older = txid.saturating_sub(1);
    let entries: Vec<EntryRef<'_>> = content.iter().collect();
    let mut file = vec![0u8; 2 * PAGE_BYTES as usize];
    let mut next = 2;
    let mut leaves = Vec::new();
    let mut push = |file: &mut Vec<u8>, buf: page::NodeBuf, kind: NodeKind| {
        let extent = Extent::new(next, buf.pages());
        next += extent.pages;
        file.extend_from_slice(&buf.finish(kind, extent, older));
        extent
    };
    for (range, bytes) in split(&entries) {
        let (bucket, key, _) = entries[range.start];
        let buf = encode_leaf(entries[range].iter().copied(), bytes);
        leaves.push((bucket, key, push(&mut file, buf, NodeKind::Leaf)));
    }
    let root = push(
        &mut file,
        encode_directory(leaves.iter().copied()),
        NodeKind::Directory,
    );
    let freelist = push(
        &mut file,
        encode_freelist([].into_iter()),
        NodeKind::Freelist,
    );
    let mut meta = Meta {
        txid,
        root,
        freelist,
        high_water: next,
    };
    let put_meta = |file: &mut Vec<u8>, meta: &Meta| {
        let at = (meta.txid % 2 * PAGE_BYTES) as usize;
        file[at..at + PAGE_BYTES as usize].copy_from_slice(&encode_meta(meta));
    };
    put_meta(&mut file, &meta);
    if txid > 0 {
        meta.txid = older;
        put_meta(&mut file, &meta);
    }
    file
}

/// A meta page and the directory and freelist it points at, all checked.
type MetaTree = (Meta, Vec<(DbKey, Extent)>, Vec<Extent>);

fn check_meta(file: &[u8], index: u64) -> Result<MetaTree, String> {
    let meta = page::decode_meta(file, index)?;
    let node = |extent, kind| read_node(file, extent, kind, meta.high_water, meta.txid);
    let dir = node(meta.root, NodeKind::Directory)
        .and_then(decode_directory)
        .map_err(|e| format!("txid {}: directory: {e}", meta.txid))?;
    let free = node(meta.freelist, NodeKind::Freelist)
        .and_then(decode_freelist)
        .map_err(|e| format!("txid {}: freelist: {e}", meta.txid))?;
    Ok((meta, dir, free))
}

/// Parses a whole file: see [`super::DbFile::open`].
pub(super) fn load(file: &[u8]) -> Result<(Content, Tree, u64), DbError> {
    if (file.len() as u64) < 2 * PAGE_BYTES {
        return Err(DbError::TooShort {
            len: file.len() as u64,
        });
    }
    let (meta, dir, free) = match (check_meta(file, 0), check_meta(file, 1)) {
        (Ok(a), Ok(b)) => {
            if a.0.txid > b.0.txid {
                a
            } else {
                b
            }
        }
        (Ok(a), Err(_)) | (Err(_), Ok(a)) => a,
        (Err(page0), Err(page1)) => return Err(DbError::NoValidMeta { page0, page1 }),
    };
    let txid = meta.txid;
    let tree_err = |reason: String| DbError::CorruptTree { txid, reason };

    let mut content = Content::default();
    let mut leaves = BTreeMap::new();
    for (i, (key, extent)) in dir.iter().enumerate() {
        let page_err = |reason: String| DbError::CorruptPage {
            txid,
            pgid: extent.pgid,
            reason,
        };
        let bytes =
            read_node(file, *extent, NodeKind::Leaf, meta.high_water, txid).map_err(page_err)?;
        let entries = decode_leaf(bytes).map_err(page_err)?;
        if entries[0].0 != *key {
            return Err(page_err("first key differs from the directory's".into()));
        }
        if let Some((next, _)) = dir.get(i + 1) {
            if entries[entries.len() - 1].0 >= *next {
                return Err(page_err("keys reach into the next leaf".into()));
            }
        }
        for ((bucket, k), v) in entries {
            content.buckets[bucket as usize].insert(k, v);
        }
        let leaf = Leaf {
            extent: Some(*extent),
            bytes: bytes.len() as u64,
        };
        leaves.insert(key.clone(), leaf);
    }

    // Every data page is reachable or free, exactly once.
    let mut all: Vec<Extent> = vec![meta.root, meta.freelist];
    all.extend(dir.iter().map(|(_, e)| *e));
    for range in &free {
        if range.pgid < 2
            || range.pages == 0
            || range
                .pgid
                .checked_add(range.pages)
                .is_none_or(|end| end > meta.high_water)
        {
            return Err(tree_err(format!(
                "free range {}+{} lies outside the data pages 2..{}",
                range.pgid, range.pages, meta.high_water
            )));
        }
        all.push(*range);
    }
    all.sort();
    let mut expected = 2;
    for extent in &all {
        if extent.pgid < expected {
            return Err(tree_err(format!("page {} is used twice", extent.pgid)));
        }
        if extent.pgid > expected {
            return Err(tree_err(format!(
                "pages {expected}..{} are neither reachable nor free",
                extent.pgid
            )));
        }
        expected = extent.end();
    }
    if expected != meta.high_water {
        return Err(tree_err(format!(
            "pages {expected}..{} are neither reachable nor free",
            meta.high_water
        )));
    }

    let mut free_extents = Extents::default();
    for range in free {
        free_extents.insert(range);
    }
    let tree = Tree {
        leaves,
        root: meta.root,
        freelist: meta.freelist,
        free: free_extents,
        pending: Extents::default(),
        high_water: meta.high_water,
    };
    Ok((content, tree, txid))
}
