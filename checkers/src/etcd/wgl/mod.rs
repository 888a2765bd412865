//! The etcd checker built on the generic linearizability search.
//!
//! [`EtcdModel`] tells the engine ([`crate::linearizability`]) what every request does, through
//! [`EtcdState`]; its input is the history request with its operation's id ([`EtcdInput`]): the
//! id tells the search which operation reported which revision (see "claimed revisions" on
//! [`EtcdModel`]), which keeps writes of unknown outcome cheaper to place.
//!
//! [`check`] judges a [`History`] in two passes:
//! 1. the engine searches the writes, the linearizable reads (a read at a past revision for its
//!    header revision) and the writes of unknown outcome, as one partition (the revision couples
//!    every key);
//! 2. the reads that may show a past revision (serializable reads, reads at a past revision,
//!    inside txns too) are held against the keyspace at that revision, reconstructed from the
//!    order the engine found. When writes of unknown outcome leave that order open, a read that
//!    does not match is confirmed by searching again with it pinned to its revision, so a stale
//!    read is never blamed on where the search happened to place an unknown write.
//!
//! The search is exponential in the writes of unknown outcome: the default checker is
//! [`super::guided`], and this one is its second opinion. What it must never do: search without
//! a budget.

mod model;
mod report;
mod revision_reads;

pub use model::{EtcdInput, EtcdModel, EtcdOperation};

use super::render::{ok_text, request_text};
use super::{is_write, lease_warnings, read_revision};
use crate::history::{self, History, Outcome, Request, Response};
use crate::linearizability::{self, Budget, Operation, Verdict, Violation};
use revision_reads::check_revision_reads;

/// How many times [`check`] searches again with reads pinned to their revisions before it gives
/// up (each search pins every read found wrong so far, so this bounds the work).
pub(super) const CONFIRMING_SEARCHES_MAX: usize = 8;

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdReport {
    /// The engine's verdict on the searched operations: writes, linearizable reads, and unknown
    /// writes (each may have taken effect, or not).
    pub linearizability: Verdict,
    /// The verdict on the reads whose data shows a past revision.
    pub revision_reads: RevisionReads,
    pub counts: EtcdCounts,
    /// Things that make a verdict less certain (an assumption of the model that the history
    /// seems to break).
    pub warnings: Vec<String>,
    /// The engine operations (the searched ones, then the pinned reads of the last confirming
    /// search) and where each comes from in the history, for explanations.
    ops: Vec<EtcdOperation>,
    origins: Vec<Origin>,
}

/// The verdict on the reads checked against the keyspace at their revision: serializable
/// reads, reads at a past revision, and reads at a past revision inside txns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionReads {
    /// Every such read shows exactly the keyspace at its revision.
    Consistent,
    /// These reads show something the store never held at their revision. `proof` is the
    /// engine's explanation when unknown writes left the order of revisions open and a search
    /// with the reads pinned to their revisions found no order at all.
    Stale {
        reads: Vec<StaleRead>,
        proof: Option<Violation>,
    },
    /// Not checked (or not decided), and why.
    Unchecked { reason: String },
}

/// A read that does not show the keyspace at its revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRead {
    /// The history operation (the txn, for a read inside a txn).
    pub id: u64,
    pub client: u64,
    pub invoke_ns: u64,
    pub complete_ns: Option<u64>,
    /// The read and what it returned, in words.
    pub operation: String,
    /// The revision whose keyspace it must show.
    pub revision: i64,
    /// What the store held there, by the order of operations found (`None` if the revision was
    /// never reached).
    pub expected: Option<Response>,
    pub got: Response,
    /// What is wrong, in words.
    pub reason: String,
    /// Which operations wrote the revisions involved, in words.
    pub notes: Vec<String>,
}

/// How the history's operations were used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EtcdCounts {
    /// Operations in the history.
    pub total: usize,
    /// Failed operations: they certainly took no effect, and are dropped.
    pub failed: usize,
    /// Operations given to the linearizability search.
    pub searched: usize,
    /// Serializable reads: not linearizable, excluded from the search and checked only
    /// against the keyspace at their revision.
    pub excluded: usize,
    /// Reads whose data was checked against the keyspace at their revision (the excluded ones,
    /// linearizable reads at a past revision, and such reads inside txns).
    pub revision_reads: usize,
    /// Operations of unknown outcome.
    pub unknown: usize,
    /// Reads of unknown outcome, dropped: they changed nothing and nothing was seen.
    pub unknown_reads_dropped: usize,
    /// Searches run again with reads pinned to their revisions (needed only when writes of
    /// unknown outcome leave the order of revisions open).
    pub confirming_searches: usize,
}

/// Where an engine operation comes from in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    id: u64,
    client: u64,
    invoke_ns: u64,
    complete_ns: Option<u64>,
    /// For a read pinned to a revision (in a confirming search): the read it stands for and
    /// what is pinned, in words.
    pinned: Option<String>,
}

/// A read whose data is checked against the keyspace at one revision.
#[derive(Debug, Clone)]
struct RevisionRead {
    origin: Origin,
    /// The get (a txn's sub-request, for a read inside a txn).
    request: Request,
    /// Its position in its txn's responses, for a read inside a txn.
    in_txn: Option<usize>,
    /// The header revision of the response (the txn's, for a read inside a txn).
    header: i64,
    response: Response,
    /// The revision whose keyspace it must show.
    at: i64,
    /// A serializable read: the search did not place it, so the existence of its revisions
    /// before it returned is checked here.
    serializable: bool,
}

impl RevisionRead {
    /// The read as operations pinned to revisions for a confirming search, each a serializable
    /// get (see [`EtcdModel`]) that may be placed at any time before the read returned: one for
    /// its data at its revision and, for a serializable read at a past revision, one for its
    /// header revision, which must have been reached by then (a read of an empty range).
    fn pinned(&self) -> Vec<(Origin, EtcdOperation)> {
        let Request::Get {
            key,
            range_end,
            limit,
            keys_only,
            ..
        } = &self.request
        else {
            unreachable!("a revision read is a get");
        };
        let ret = self.origin.complete_ns.unwrap_or(u64::MAX);
        let pin = |request: Request, response: Response, note: String| {
            let origin = Origin {
                pinned: Some(format!("{} ({note})", self.text())),
                ..self.origin.clone()
            };
            let input = EtcdInput {
                id: self.origin.id,
                request,
            };
            (
                origin,
                Operation::completed(self.origin.client, 0, ret, input, (self.header, response)),
            )
        };
        let get = |key: &str, range_end: Option<String>, revision, limit, keys_only| Request::Get {
            key: key.to_string(),
            range_end,
            revision,
            limit,
            keys_only,
            serializable: true,
        };
        let header_is_data = self.serializable && self.at == self.header;
        let data = get(
            key,
            range_end.clone(),
            if header_is_data { 0 } else { self.at },
            *limit,
            *keys_only,
        );
        let mut pinned = vec![pin(
            data,
            self.response.clone(),
            format!("its data pinned to revision {}", self.at),
        )];
        if self.serializable && !header_is_data {
            // "\u{1}" to itself is an empty range: this only pins the revision.
            let marker = get("\u{1}", Some("\u{1}".to_string()), self.header, 0, false);
            let nothing = Response::Get {
                kvs: Vec::new(),
                count: 0,
                more: false,
            };
            let note = format!(
                "its header revision {} reached before it returned",
                self.header
            );
            pinned.push(pin(marker, nothing, note));
        }
        pinned
    }

    fn text(&self) -> String {
        let read = format!(
            "{} -> {}",
            request_text(&self.request),
            ok_text(self.header, &self.response)
        );
        match self.in_txn {
            Some(i) => format!("read {} of its txn: {read}", i + 1),
            None => read,
        }
    }
}

/// The history, ready for the engine.
#[derive(Debug)]
struct Prepared {
    ops: Vec<EtcdOperation>,
    origins: Vec<Origin>,
    revision_reads: Vec<RevisionRead>,
    counts: EtcdCounts,
    warnings: Vec<String>,
}

/// Judges an etcd history: the writes and linearizable reads must be linearizable under etcd v3
/// semantics ([`EtcdModel`]), and every read that may show a past revision must show exactly
/// the keyspace at that revision, reconstructed from the order the search found.
///
/// Failed operations are dropped (they took no effect), and so are reads of unknown outcome.
/// The budget bounds every search (the first, and the confirming ones that pin reads to their
/// revisions when writes of unknown outcome leave the order of revisions open); a search that
/// runs out answers unknown, never a violation.
pub fn check(history: &History, budget: Budget) -> EtcdReport {
    let mut prepared = prepare(history);
    let model = EtcdModel::for_operations(&prepared.ops);
    let linearizability = linearizability::check(&model, &prepared.ops, &budget);
    let revision_reads = match &linearizability {
        Verdict::Linearizable(witness) => {
            let order: Vec<usize> = witness.order.iter().flatten().copied().collect();
            check_revision_reads(&model, &mut prepared, &order, &budget)
        }
        Verdict::NotLinearizable(_) if prepared.revision_reads.is_empty() => {
            RevisionReads::Consistent
        }
        Verdict::NotLinearizable(_) => RevisionReads::Unchecked {
            reason:
                "the searched operations are not linearizable, so no order of revisions is known"
                    .to_string(),
        },
        Verdict::Unknown(_) if prepared.revision_reads.is_empty() => RevisionReads::Consistent,
        Verdict::Unknown(_) => RevisionReads::Unchecked {
            reason: "the search ran out of budget before it found an order of revisions"
                .to_string(),
        },
    };
    EtcdReport {
        linearizability,
        revision_reads,
        counts: prepared.counts,
        warnings: prepared.warnings,
        ops: prepared.ops,
        origins: prepared.origins,
    }
}

fn prepare(history: &History) -> Prepared {
    let mut prepared = Prepared {
        ops: Vec::new(),
        origins: Vec::new(),
        revision_reads: Vec::new(),
        counts: EtcdCounts {
            total: history.operations.len(),
            ..EtcdCounts::default()
        },
        warnings: Vec::new(),
    };
    for op in &history.operations {
        let ret = match op.complete_ns {
            Some(done) if done < op.invoke_ns => {
                prepared.warnings.push(format!(
                    "operation {} completes at {} ns, before its invocation at {} ns: taken as \
                     completing at its invocation",
                    op.id, done, op.invoke_ns
                ));
                Some(op.invoke_ns)
            }
            other => other,
        };
        let origin = Origin {
            id: op.id,
            client: op.client,
            invoke_ns: op.invoke_ns,
            complete_ns: ret,
            pinned: None,
        };
        let (header, response) = match &op.outcome {
            history::Outcome::Failed { .. } => {
                prepared.counts.failed += 1;
                continue;
            }
            Outcome::Unknown => {
                prepared.counts.unknown += 1;
                if is_write(&op.request) {
                    prepared.ops.push(Operation::unknown(
                        op.client,
                        op.invoke_ns,
                        EtcdInput {
                            id: op.id,
                            request: op.request.clone(),
                        },
                    ));
                    prepared.origins.push(origin);
                } else {
                    prepared.counts.unknown_reads_dropped += 1;
                }
                continue;
            }
            Outcome::Ok { revision, response } => (*revision, response),
        };
        // An ok outcome without a completion time returned at some unknown point.
        let ret = ret.unwrap_or(u64::MAX);
        let read = |request: &Request, response: &Response, in_txn, serializable| RevisionRead {
            origin: origin.clone(),
            request: request.clone(),
            in_txn,
            header,
            response: response.clone(),
            at: read_revision(request, header),
            serializable,
        };
        match &op.request {
            Request::Get {
                serializable: true, ..
            } => {
                prepared.counts.excluded += 1;
                prepared
                    .revision_reads
                    .push(read(&op.request, response, None, true));
                continue;
            }
            Request::Get { revision, .. } if *revision > 0 => {
                prepared
                    .revision_reads
                    .push(read(&op.request, response, None, false));
            }
            Request::Txn {
                success, failure, ..
            } => {
                if let Response::Txn {
                    succeeded,
                    responses,
                } = response
                {
                    let branch = if *succeeded { success } else { failure };
                    for (i, (sub, sub_response)) in branch.iter().zip(responses).enumerate() {
                        if matches!(sub, Request::Get { revision, .. } if *revision > 0) {
                            prepared
                                .revision_reads
                                .push(read(sub, sub_response, Some(i), false));
                        }
                    }
                }
            }
            _ => {}
        }
        prepared.ops.push(Operation::completed(
            op.client,
            op.invoke_ns,
            ret,
            EtcdInput {
                id: op.id,
                request: op.request.clone(),
            },
            (header, response.clone()),
        ));
        prepared.origins.push(origin);
    }
    prepared.counts.searched = prepared.ops.len();
    prepared.counts.revision_reads = prepared.revision_reads.len();
    prepared.warnings.extend(lease_warnings(history));
    prepared
}
