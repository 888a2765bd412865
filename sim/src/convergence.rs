//! Replica convergence the way etcd's corruption check sees it, and the db files' own check.
//!
//! [`hash_check`] asks every running member for HashKV at one revision that all of them have
//! applied and none has compacted, and compares. A member whose hash differs from the majority's
//! is bisected against a majority member to the first revision where they differ: that is where
//! it diverged. [`db_check`] opens a member's db file as a crash now would leave it, restores a
//! store from it alone, and compares it with the live member at the db's revision.

use std::collections::BTreeMap;
use std::fmt;

use faultline_store::db::DbFile;
use faultline_store::node::backend::DB_FILE;
use faultline_store::node::client::{Client, Outcome};
use faultline_store::node::protocol::{ClientRequest, ClientResponse, NodeId};
use faultline_store::{Store, StoreConfig};
use serde::{Deserialize, Serialize};

use crate::cluster::{Cluster, MemberStatus};
use crate::disk::SimDisk;

/// A member whose keyspace differs from the majority's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub member: NodeId,
    /// A majority member it was compared with.
    pub reference: NodeId,
    /// The first revision at which their HashKV differ (the lowest revision both still have if
    /// they differ there already).
    pub first_revision: i64,
    /// Whether `first_revision` is only a bound: they already differ at the lowest revision
    /// that can still be compared.
    pub at_or_before: bool,
}

/// One comparison of every running member's HashKV at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashCheck {
    /// What prompted it (e.g. "before fault 3", "after healing").
    pub when: String,
    pub revision: i64,
    pub compact_revision: i64,
    /// Each compared member's hash at `revision`.
    pub hashes: BTreeMap<NodeId, u64>,
    pub divergences: Vec<Divergence>,
    /// Members that could not be compared, and why.
    pub skipped: BTreeMap<NodeId, String>,
}

impl fmt::Display for HashCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: HashKV of {} members at revision {}",
            self.when,
            self.hashes.len(),
            self.revision
        )?;
        for d in &self.divergences {
            write!(
                f,
                "; n{} diverged from n{} {} revision {}",
                d.member,
                d.reference,
                if d.at_or_before { "at or before" } else { "at" },
                d.first_revision
            )?;
        }
        Ok(())
    }
}

async fn hash_at(client: &Client, member: NodeId, revision: i64) -> Result<(u64, i64), String> {
    match client
        .request_member(member, ClientRequest::HashKv { revision })
        .await
    {
        Outcome::Ok(ClientResponse::HashKv(h)) => Ok((h.hash, h.compact_revision)),
        other => Err(format!("{other:?}")),
    }
}

/// The running members and their published revisions: what [`hash_check`] compares.
pub fn running_members(cluster: &Cluster) -> Vec<(NodeId, i64)> {
    cluster
        .member_ids()
        .into_iter()
        .filter(|m| cluster.status(*m) == MemberStatus::Up)
        .map(|m| (m, cluster.probe(m).revision))
        .collect()
}

/// Compares the HashKV of `running` members (see [`running_members`]) at the highest revision
/// all of them have applied, among members at the same compact revision. `None` if fewer than
/// two members could be compared.
pub async fn hash_check(
    client: &Client,
    running: &[(NodeId, i64)],
    when: &str,
) -> Option<HashCheck> {
    let revision = running.iter().map(|(_, rev)| *rev).min()?;
    let running: Vec<NodeId> = running.iter().map(|(m, _)| *m).collect();
    let mut hashes = BTreeMap::new();
    let mut compacts = BTreeMap::new();
    let mut skipped = BTreeMap::new();
    for member in &running {
        match hash_at(client, *member, revision).await {
            Ok((hash, compact)) => {
                hashes.insert(*member, hash);
                compacts.insert(*member, compact);
            }
            Err(why) => {
                skipped.insert(*member, why);
            }
        }
    }
    // Members compacted differently hash different record sets: compare within the most common
    // compact revision only, as etcd's check does.
    let compact_revision = most_common(compacts.values().copied())?;
    for (member, compact) in &compacts {
        if *compact != compact_revision {
            hashes.remove(member);
            skipped.insert(
                *member,
                format!("compacted at {compact}, the others at {compact_revision}"),
            );
        }
    }
    if hashes.len() < 2 {
        return None;
    }
    let majority = most_common(hashes.values().copied())?;
    let reference = *hashes
        .iter()
        .find(|(_, h)| **h == majority)
        .map(|(m, _)| m)?;
    let mut divergences = Vec::new();
    for (member, hash) in &hashes {
        if *hash != majority {
            divergences.push(
                bisect(
                    client,
                    *member,
                    reference,
                    compact_revision.max(1),
                    revision,
                )
                .await,
            );
        }
    }
    Some(HashCheck {
        when: when.to_string(),
        revision,
        compact_revision,
        hashes,
        divergences,
        skipped,
    })
}

/// The first revision in `low..=high` where `member`'s hash differs from `reference`'s
/// (they differ at `high`).
async fn bisect(
    client: &Client,
    member: NodeId,
    reference: NodeId,
    low: i64,
    high: i64,
) -> Divergence {
    let differs = |rev: i64| async move {
        match (
            hash_at(client, member, rev).await,
            hash_at(client, reference, rev).await,
        ) {
            (Ok((a, _)), Ok((b, _))) => Some(a != b),
            _ => None,
        }
    };
    let mut divergence = Divergence {
        member,
        reference,
        first_revision: high,
        at_or_before: false,
    };
    if differs(low).await != Some(false) {
        divergence.first_revision = low;
        divergence.at_or_before = true;
        return divergence;
    }
    // Invariant: equal at `lo`, different at `hi`.
    let (mut lo, mut hi) = (low, high);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match differs(mid).await {
            Some(true) => hi = mid,
            Some(false) => lo = mid,
            None => break,
        }
    }
    divergence.first_revision = hi;
    divergence
}

fn most_common<T: Ord + Copy>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_insert(0usize) += 1;
    }
    let best = counts.values().copied().max()?;
    counts.into_iter().find(|(_, c)| *c == best).map(|(v, _)| v)
}

/// One member's db file reopened from disk alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbCheck {
    pub member: NodeId,
    /// The consistent index, revision and HashKV the db file restores, or why it does not.
    pub restored: Result<(u64, i64, u64), String>,
    /// The live member's applied index and its HashKV at the db's revision (or why not).
    pub live: Result<(u64, u64), String>,
}

impl DbCheck {
    /// Whether the db file holds the member's state at its consistent index.
    pub fn agrees(&self) -> bool {
        match (&self.restored, &self.live) {
            (Ok((index, _, hash)), Ok((applied, live_hash))) => {
                index <= applied && hash == live_hash
            }
            _ => false,
        }
    }
}

impl fmt::Display for DbCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.restored, &self.live) {
            (Ok((index, rev, hash)), Ok((applied, live))) => write!(
                f,
                "n{}: db at index {index} (member applied {applied}), revision {rev}, hash \
                 {hash:016x} vs the member's {live:016x}",
                self.member
            ),
            (Err(e), _) => write!(f, "n{}: the db file does not restore: {e}", self.member),
            (_, Err(e)) => write!(f, "n{}: the member's HashKV: {e}", self.member),
        }
    }
}

/// What [`db_check`] needs of a member: its disk, its applied index and its store's settings.
pub fn db_check_input(cluster: &Cluster, member: NodeId) -> (NodeId, SimDisk, u64, StoreConfig) {
    (
        member,
        cluster.disk(member).clone(),
        cluster.probe(member).applied,
        cluster.config().node.store.clone(),
    )
}

/// Opens `member`'s db file as a crash now would leave it, restores a store from it alone
/// (finishing an interrupted compaction as a restart would) and compares its HashKV at its
/// revision with the live member's.
pub async fn db_check(
    client: &Client,
    (member, disk, applied, store_config): (NodeId, SimDisk, u64, StoreConfig),
) -> DbCheck {
    let restored = disk
        .durable_read(DB_FILE)
        .ok_or_else(|| "no durable db file".to_string())
        .and_then(|bytes| DbFile::open(&bytes).map_err(|e| e.to_string()))
        .and_then(|db| Store::from_db(store_config, &db).map_err(|e| e.to_string()))
        .and_then(|store| {
            let rev = store.current_revision();
            let hash = store.hash_kv(rev).map_err(|e| e.to_string())?.hash;
            Ok((store.consistent_index(), rev, hash))
        });
    let live = match &restored {
        Ok((_, rev, _)) => hash_at(client, member, *rev)
            .await
            .map(|(hash, _)| (applied, hash)),
        Err(_) => Err("not compared".to_string()),
    };
    DbCheck {
        member,
        restored,
        live,
    }
}
