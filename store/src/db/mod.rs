//! TEMPORARY STUB for type checking.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
pub const PAGE_BYTES: u64 = 4096;
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Bucket {
    Meta,
    Key,
    Lease,
    Alarm,
}
pub type DbKey = (Bucket, Vec<u8>);
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteSet {
    pub changes: BTreeMap<DbKey, Option<Vec<u8>>>,
}
impl WriteSet {
    pub fn put(&mut self, b: Bucket, k: Vec<u8>, v: Vec<u8>) {
        self.changes.insert((b, k), Some(v));
    }
    pub fn delete(&mut self, b: Bucket, k: Vec<u8>) {
        self.changes.insert((b, k), None);
    }
    pub fn len(&self) -> usize {
        self.changes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
    pub fn merge(&mut self, later: WriteSet) {
        self.changes.extend(later.changes);
    }
}
pub struct PageWrite {
    pub offset: u64,
    pub data: Vec<u8>,
}
pub struct CommitPlan {
    pub txid: u64,
    pub data: Vec<PageWrite>,
    pub meta: PageWrite,
    pub file_bytes: u64,
}
#[derive(Debug, thiserror::Error)]
#[error("bad db")]
pub struct DbError;
pub struct DbFile {
    content: BTreeMap<DbKey, Vec<u8>>,
    txid: u64,
}
impl DbFile {
    pub fn create() -> (DbFile, Vec<u8>) {
        let d = DbFile {
            content: BTreeMap::new(),
            txid: 0,
        };
        let b = d.compacted();
        (d, b)
    }
    pub fn open(bytes: &[u8]) -> Result<DbFile, DbError> {
        let content = bincode::deserialize(bytes).map_err(|_| DbError)?;
        Ok(DbFile { content, txid: 0 })
    }
    pub fn get(&self, bucket: Bucket, key: &[u8]) -> Option<&[u8]> {
        self.content
            .get(&(bucket, key.to_vec()))
            .map(|v| v.as_slice())
    }
    pub fn iter(&self, bucket: Bucket) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.content
            .iter()
            .filter(move |((b, _), _)| *b == bucket)
            .map(|((_, k), v)| (k.as_slice(), v.as_slice()))
    }
    pub fn len(&self, bucket: Bucket) -> usize {
        self.iter(bucket).count()
    }
    pub fn commit(&mut self, writes: &WriteSet) -> CommitPlan {
        for (k, v) in &writes.changes {
            match v {
                Some(v) => {
                    self.content.insert(k.clone(), v.clone());
                }
                None => {
                    self.content.remove(k);
                }
            }
        }
        self.txid += 1;
        let data = self.compacted();
        CommitPlan {
            txid: self.txid,
            file_bytes: data.len() as u64,
            data: vec![],
            meta: PageWrite { offset: 0, data },
        }
    }
    pub fn txid(&self) -> u64 {
        self.txid
    }
    pub fn size_bytes(&self) -> u64 {
        20480
    }
    pub fn size_in_use_bytes(&self) -> u64 {
        20480
    }
    pub fn free_pages(&self) -> u64 {
        0
    }
    pub fn compacted(&self) -> Vec<u8> {
        bincode::serialize(&self.content).unwrap()
    }
}
