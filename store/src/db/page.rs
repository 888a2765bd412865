//! The byte encoding of meta pages and nodes, and its checked decoding.
//!
//! All integers are little-endian. A meta page holds, from byte 0: magic `u32`, format version
//! `u32`, page size `u32`, zero `u32`, txid `u64`, root page id `u64`, root page count `u64`,
//! freelist page id `u64`, freelist page count `u64`, high-water page count `u64` and the FNV-1a
//! checksum `u64` of the 64 bytes before it; the rest of the page is zero.
//!
//! A node starts with a 40-byte header: kind `u8`, three zero bytes, page count `u32`, its own
//! page id `u64`, the txid that wrote it `u64`, content length `u64` and the FNV-1a checksum `u64`
//! of the first 32 header bytes followed by the content. The content follows the header; the
//! node's last page is zero-padded. Contents, each starting with an entry count `u32`:
//! - leaf: entries `[bucket u8][key len u32][value len u32][key][value]`, strictly ascending;
//! - directory: leaves `[bucket u8][first key len u32][first key][page id u64][page count u32]`;
//! - freelist: free ranges `[first page id u64][page count u64]`.

use super::{Bucket, DbKey, PAGE_BYTES};

const PAGE: usize = PAGE_BYTES as usize;
const MAGIC: u32 = 0xFA17_D8B0;
const VERSION: u32 = 1;
/// Bytes of a meta page that are checked; the checksum is the last field.
pub(super) const META_BYTES: usize = 72;
pub(super) const HEADER_BYTES: usize = 40;
/// Content bytes a one-page node can hold.
pub(super) const PAGE_CAPACITY: u64 = PAGE_BYTES - HEADER_BYTES as u64;
/// Encoded size of an empty leaf, directory or freelist content: its entry count.
pub(super) const EMPTY_CONTENT_BYTES: u64 = 4;
/// Encoded size of one free range in the freelist.
pub(super) const FREE_RANGE_BYTES: u64 = 16;

/// A run of contiguous pages: a node, or a range of free pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Extent {
    pub pgid: u64,
    pub pages: u64,
}

impl Extent {
    pub fn new(pgid: u64, pages: u64) -> Self {
        Extent { pgid, pages }
    }

    pub fn end(self) -> u64 {
        self.pgid + self.pages
    }

    pub fn offset(self) -> u64 {
        self.pgid * PAGE_BYTES
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NodeKind {
    Leaf = 1,
    Directory = 2,
    Freelist = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Meta {
    pub txid: u64,
    pub root: Extent,
    pub freelist: Extent,
    pub high_water: u64,
}

/// FNV-1a, 64 bit, over a sequence of byte slices.
pub(super) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            hash ^= *byte as u64;
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

pub(super) fn leaf_entry_bytes(key: &[u8], value: &[u8]) -> u64 {
    9 + key.len() as u64 + value.len() as u64
}

pub(super) fn dir_entry_bytes(key: &[u8]) -> u64 {
    17 + key.len() as u64
}

/// Pages a node with `content_bytes` of content spans.
pub(super) fn node_pages(content_bytes: u64) -> u64 {
    (HEADER_BYTES as u64 + content_bytes).div_ceil(PAGE_BYTES)
}

/// The whole meta page of `meta`.
pub(super) fn encode_meta(meta: &Meta) -> Vec<u8> {
    let mut page = Vec::with_capacity(PAGE);
    page.extend_from_slice(&MAGIC.to_le_bytes());
    page.extend_from_slice(&VERSION.to_le_bytes());
    page.extend_from_slice(&(PAGE_BYTES as u32).to_le_bytes());
    page.extend_from_slice(&0u32.to_le_bytes());
    for field in [
        meta.txid,
        meta.root.pgid,
        meta.root.pages,
        meta.freelist.pgid,
        meta.freelist.pages,
        meta.high_water,
    ] {
        page.extend_from_slice(&field.to_le_bytes());
    }
    let checksum = fnv1a(&[&page]);
    page.extend_from_slice(&checksum.to_le_bytes());
    debug_assert_eq!(page.len(), META_BYTES);
    page.resize(PAGE, 0);
    page
}

/// Decodes meta page `index` (0 or 1) of `file`, checking its fields against the file.
pub(super) fn decode_meta(file: &[u8], index: u64) -> Result<Meta, String> {
    let start = (index * PAGE_BYTES) as usize;
    let bytes = file
        .get(start..start + META_BYTES)
        .ok_or("the file ends inside the meta page")?;
    let mut r = Reader::new(bytes);
    if r.u32()? != MAGIC {
        return Err("bad magic".into());
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!("unknown format version {version}"));
    }
    let page_size = r.u32()?;
    if page_size as u64 != PAGE_BYTES {
        return Err(format!("page size {page_size}, expected {PAGE_BYTES}"));
    }
    r.u32()?;
    let txid = r.u64()?;
    let root = Extent::new(r.u64()?, r.u64()?);
    let freelist = Extent::new(r.u64()?, r.u64()?);
    let high_water = r.u64()?;
    let checksum = r.u64()?;
    if checksum != fnv1a(&[&bytes[..META_BYTES - 8]]) {
        return Err("checksum mismatch".into());
    }
    if txid % 2 != index {
        return Err(format!("txid {txid} does not belong in meta page {index}"));
    }
    let file_pages = file.len() as u64 / PAGE_BYTES;
    if high_water < 2 || high_water > file_pages {
        return Err(format!(
            "high-water mark of {high_water} pages, but the file holds {file_pages} whole pages"
        ));
    }
    Ok(Meta {
        txid,
        root,
        freelist,
        high_water,
    })
}

/// A node being encoded: the header's room, then the content.
#[derive(Debug)]
pub(super) struct NodeBuf {
    bytes: Vec<u8>,
}

impl NodeBuf {
    pub fn new(content_bytes: u64) -> Self {
        let mut bytes = Vec::with_capacity(node_pages(content_bytes) as usize * PAGE);
        bytes.resize(HEADER_BYTES, 0);
        NodeBuf { bytes }
    }

    pub fn content_bytes(&self) -> u64 {
        (self.bytes.len() - HEADER_BYTES) as u64
    }

    pub fn pages(&self) -> u64 {
        node_pages(self.content_bytes())
    }

    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }

    pub fn raw(&mut self, v: &[u8]) {
        self.bytes.extend_from_slice(v);
    }

    /// The node's whole pages, written at `extent` (at least [`NodeBuf::pages`] long) by
    /// transaction `txid`.
    pub fn finish(mut self, kind: NodeKind, extent: Extent, txid: u64) -> Vec<u8> {
        debug_assert!(extent.pages >= self.pages());
        let (pgid, pages) = (extent.pgid, extent.pages);
        let content_bytes = self.content_bytes();
        let mut header = [0u8; HEADER_BYTES];
        header[0] = kind as u8;
        header[4..8].copy_from_slice(&(pages as u32).to_le_bytes());
        header[8..16].copy_from_slice(&pgid.to_le_bytes());
        header[16..24].copy_from_slice(&txid.to_le_bytes());
        header[24..32].copy_from_slice(&content_bytes.to_le_bytes());
        let checksum = fnv1a(&[&header[..32], &self.bytes[HEADER_BYTES..]]);
        header[32..40].copy_from_slice(&checksum.to_le_bytes());
        self.bytes[..HEADER_BYTES].copy_from_slice(&header);
        self.bytes.resize(pages as usize * PAGE, 0);
        self.bytes
    }
}

pub(super) fn encode_leaf<'a>(
    entries: impl ExactSizeIterator<Item = (Bucket, &'a [u8], &'a [u8])>,
    content_bytes: u64,
) -> NodeBuf {
    let mut buf = NodeBuf::new(content_bytes);
    buf.u32(entries.len() as u32);
    for (bucket, key, value) in entries {
        buf.u8(bucket as u8);
        buf.u32(key.len() as u32);
        buf.u32(value.len() as u32);
        buf.raw(key);
        buf.raw(value);
    }
    debug_assert_eq!(buf.content_bytes(), content_bytes);
    buf
}

/// Checks the node at `extent` of `file` and returns its content. `high_water` bounds the pages a
/// node may occupy, `txid` the transaction that may have written it.
pub(super) fn read_node(
    file: &[u8],
    extent: Extent,
    kind: NodeKind,
    high_water: u64,
    txid: u64,
) -> Result<&[u8], String> {
    let end = extent.pgid.checked_add(extent.pages);
    if extent.pgid < 2 || extent.pages == 0 || end.is_none_or(|end| end > high_water) {
        return Err(format!(
            "pages {}+{} lie outside the data pages 2..{high_water}",
            extent.pgid, extent.pages
        ));
    }
    // high_water pages lie inside the file (checked with the meta), so these cannot overflow.
    let start = extent.offset() as usize;
    let bytes = &file[start..start + extent.pages as usize * PAGE];
    let mut r = Reader::new(&bytes[..HEADER_BYTES]);
    let found_kind = r.u8()?;
    if found_kind != kind as u8 {
        return Err(format!("node kind {found_kind}, expected {kind:?}"));
    }
    r.bytes(3)?;
    let pages = r.u32()? as u64;
    let pgid = r.u64()?;
    let node_txid = r.u64()?;
    let content_bytes = r.u64()?;
    let checksum = r.u64()?;
    if pages != extent.pages || pgid != extent.pgid {
        return Err(format!(
            "node header says pages {pgid}+{pages}, expected {}+{}",
            extent.pgid, extent.pages
        ));
    }
    if node_txid > txid {
        return Err(format!(
            "node written by txid {node_txid}, after txid {txid}"
        ));
    }
    if content_bytes > extent.pages * PAGE_BYTES - HEADER_BYTES as u64 {
        return Err(format!("content of {content_bytes} bytes in {pages} pages"));
    }
    let content = &bytes[HEADER_BYTES..HEADER_BYTES + content_bytes as usize];
    if checksum != fnv1a(&[&bytes[..32], content]) {
        return Err("checksum mismatch".into());
    }
    Ok(content)
}

/// Bounds-checked reading of a byte slice.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.bytes.len() {
            return Err(format!("content ends {} bytes short", n - self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, String> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u32(&mut self) -> Result<u32, String> {
        let b = self.bytes(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }

    pub fn bucket(&mut self) -> Result<Bucket, String> {
        let b = self.u8()?;
        Bucket::from_u8(b).ok_or_else(|| format!("unknown bucket {b}"))
    }

    /// An entry count, checked against the bytes left (each entry takes at least `min_bytes`).
    pub fn count(&mut self, min_bytes: usize) -> Result<usize, String> {
        let count = self.u32()? as usize;
        if count > self.remaining() / min_bytes {
            return Err(format!(
                "{count} entries cannot fit in {} bytes",
                self.remaining()
            ));
        }
        Ok(count)
    }

    pub fn finish(&self) -> Result<(), String> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.bytes.len()))
        }
    }
}

/// A leaf's entries, checked to be non-empty and strictly ascending.
pub(super) fn decode_leaf(content: &[u8]) -> Result<Vec<(DbKey, Vec<u8>)>, String> {
    let mut r = Reader::new(content);
    let count = r.count(9)?;
    if count == 0 {
        return Err("empty leaf".into());
    }
    let mut entries: Vec<(DbKey, Vec<u8>)> = Vec::with_capacity(count);
    for _ in 0..count {
        let bucket = r.bucket()?;
        let key_len = r.u32()? as usize;
        let value_len = r.u32()? as usize;
        let key = r.bytes(key_len)?.to_vec();
        let value = r.bytes(value_len)?.to_vec();
        let key = (bucket, key);
        if entries.last().is_some_and(|(last, _)| *last >= key) {
            return Err("leaf keys out of order".into());
        }
        entries.push((key, value));
    }
    r.finish()?;
    Ok(entries)
}

pub(super) fn encode_directory<'a>(
    leaves: impl Iterator<Item = (Bucket, &'a [u8], Extent)> + Clone,
) -> NodeBuf {
    let (count, content_bytes) = leaves
        .clone()
        .fold((0u32, EMPTY_CONTENT_BYTES), |(n, bytes), (_, key, _)| {
            (n + 1, bytes + dir_entry_bytes(key))
        });
    let mut buf = NodeBuf::new(content_bytes);
    buf.u32(count);
    for (bucket, key, extent) in leaves {
        buf.u8(bucket as u8);
        buf.u32(key.len() as u32);
        buf.raw(key);
        buf.u64(extent.pgid);
        buf.u32(extent.pages as u32);
    }
    debug_assert_eq!(buf.content_bytes(), content_bytes);
    buf
}

/// The directory's leaves: first key and pages, checked to be strictly ascending.
pub(super) fn decode_directory(content: &[u8]) -> Result<Vec<(DbKey, Extent)>, String> {
    let mut r = Reader::new(content);
    let count = r.count(17)?;
    let mut leaves: Vec<(DbKey, Extent)> = Vec::with_capacity(count);
    for _ in 0..count {
        let bucket = r.bucket()?;
        let key_len = r.u32()? as usize;
        let key = (bucket, r.bytes(key_len)?.to_vec());
        let extent = Extent::new(r.u64()?, r.u32()? as u64);
        if leaves.last().is_some_and(|(last, _)| *last >= key) {
            return Err("directory keys out of order".into());
        }
        leaves.push((key, extent));
    }
    r.finish()?;
    Ok(leaves)
}

pub(super) fn encode_freelist(ranges: impl ExactSizeIterator<Item = Extent>) -> NodeBuf {
    let content_bytes = EMPTY_CONTENT_BYTES + FREE_RANGE_BYTES * ranges.len() as u64;
    let mut buf = NodeBuf::new(content_bytes);
    buf.u32(ranges.len() as u32);
    for range in ranges {
        buf.u64(range.pgid);
        buf.u64(range.pages);
    }
    buf
}

pub(super) fn decode_freelist(content: &[u8]) -> Result<Vec<Extent>, String> {
    let mut r = Reader::new(content);
    let count = r.count(16)?;
    let mut ranges = Vec::with_capacity(count);
    for _ in 0..count {
        ranges.push(Extent::new(r.u64()?, r.u64()?));
    }
    r.finish()?;
    Ok(ranges)
}
