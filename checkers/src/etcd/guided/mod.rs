//! The revision-guided etcd checker: linear in the history, for histories with writes of
//! unknown outcome too.
//!
//! etcd histories carry what makes a search unnecessary: every acknowledged write reports the
//! revision it made, every read reports the revision it saw, and each revision is made by
//! exactly one request. So [`check`]:
//! 1. indexes the history ([`index`]): the write that claims each revision, the operations that
//!    report each revision and made none, the reads that show a past revision, and the writes of
//!    unknown outcome a read saw take effect (by their unique values);
//! 2. checks what the revisions alone decide ([`realtime`]): one request per revision, and real
//!    time (a write acknowledged before another operation was invoked has a lower revision than
//!    that operation reports; an operation reports no revision made by a write invoked after it
//!    returned);
//! 3. replays the writes once in revision order on [`EtcdState`](super::EtcdState)
//!    ([`replay`]), filling each revision no acknowledged write claims with a write of unknown
//!    outcome (the one a read saw there, else one that fits what later reads saw of its keys),
//!    and checks every read against the keyspace at its revision as the replay passes it. Writes
//!    of unknown outcome no revision needs never took effect. Where more than one write could
//!    have made an unseen revision, the replay remembers the choice and comes back to it if the
//!    path fails: a depth-first search over what stays ambiguous, inside the budget.
//!
//! The replay holds one keyspace, plus one per open choice, and the index a few words per
//! operation, never a keyspace per revision. Violations are named in etcd's terms
//! ([`explain`]). What this module must never do: answer a violation it has not proven for
//! every placement of the writes of unknown outcome, or pass a history without an order that
//! explains every response.

mod explain;
mod index;
mod realtime;
mod replay;

use std::fmt::Write as _;

pub use explain::{GuidedViolation, Involved, Property};
pub use index::GuidedCounts;

use super::render::counted;
use super::Judgement;
use crate::history::History;
use crate::linearizability::{human_bytes, Budget, UndecidedReason};

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuidedReport {
    pub verdict: GuidedVerdict,
    pub counts: GuidedCounts,
    /// Things that make a verdict less certain (an assumption of the model that the history
    /// seems to break).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuidedVerdict {
    /// An order of every operation explains every response, real time included.
    Consistent,
    Violation(GuidedViolation),
    /// The budget ran out before an order was found or every placement of the writes of
    /// unknown outcome failed; `revision` is the furthest the replay got.
    Unknown {
        reason: UndecidedReason,
        revision: i64,
        /// What the check held when it stopped, and its limit.
        bytes: usize,
        max_bytes: usize,
        /// How the order that got furthest failed, if one did.
        furthest_failure: Option<Box<GuidedViolation>>,
    },
}

impl GuidedReport {
    pub fn judgement(&self) -> Judgement {
        match self.verdict {
            GuidedVerdict::Consistent => Judgement::Pass,
            GuidedVerdict::Violation(_) => Judgement::Fail,
            GuidedVerdict::Unknown { .. } => Judgement::Unknown,
        }
    }

    pub fn passed(&self) -> bool {
        self.judgement() == Judgement::Pass
    }

    pub fn violation(&self) -> Option<&GuidedViolation> {
        match &self.verdict {
            GuidedVerdict::Violation(v) => Some(v),
            _ => None,
        }
    }

    /// The report in words for people.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let headline = match &self.verdict {
            GuidedVerdict::Consistent => {
                "etcd: linearizable: one order of revisions explains every response"
            }
            GuidedVerdict::Violation(_) => "etcd: NOT LINEARIZABLE",
            GuidedVerdict::Unknown { .. } => "etcd: UNKNOWN: the check ran out of budget",
        };
        let c = &self.counts;
        let _ = writeln!(text, "{headline}");
        let _ = writeln!(
            text,
            "{}: revisions up to {}, {} claimed by acknowledged writes, {} filled by writes of \
             unknown outcome or lease revokes ({} writes seen there by a read); {} checked at a past revision; {} of unknown \
             outcome ({} dropped), {} failed and dropped",
            counted(c.total, "operation", "operations"),
            c.revisions,
            c.claimed,
            c.filled,
            c.pinned,
            counted(c.revision_reads, "read", "reads"),
            c.unknown,
            counted(c.unknown_reads_dropped, "read", "reads"),
            c.failed
        );
        if c.choices > 0 {
            let _ = writeln!(
                text,
                "{} had more than one possible maker ({} times back)",
                counted(c.choices, "revision", "revisions"),
                c.backtracks
            );
        }
        match &self.verdict {
            GuidedVerdict::Violation(violation) => text.push_str(&violation.render()),
            GuidedVerdict::Unknown {
                reason,
                revision,
                bytes,
                max_bytes,
                furthest_failure,
            } => {
                let why = match reason {
                    UndecidedReason::Deadline => "the deadline passed".to_string(),
                    UndecidedReason::MaxStates => {
                        "it tried as many placements as allowed".to_string()
                    }
                    UndecidedReason::MaxBytes => format!(
                        "memory limit of {} reached (holding {})",
                        human_bytes(*max_bytes),
                        human_bytes(*bytes)
                    ),
                };
                let _ = writeln!(
                    text,
                    "no order found and no violation proven: {why}, with the replay at rev \
                     {revision} of {}",
                    c.revisions
                );
                if let Some(failure) = furthest_failure {
                    let _ = writeln!(
                        text,
                        "the order that got furthest failed (other placements of the writes of \
                         unknown outcome were left untried):"
                    );
                    text.push_str(&failure.render());
                }
            }
            GuidedVerdict::Consistent => {}
        }
        for warning in &self.warnings {
            let _ = writeln!(text, "warning: {warning}");
        }
        text
    }
}

/// Judges an etcd history by the revisions it reports (see the module docs). Failed operations
/// are dropped, and so are reads of unknown outcome. The budget bounds the search over
/// ambiguous makers (its deadline, its `max_states` placements remembered, its `max_bytes`);
/// past it the verdict is unknown, never a violation.
pub fn check(history: &History, budget: Budget) -> GuidedReport {
    let index = index::Index::new(history);
    let warnings = index.warnings.clone();
    if let Some(violation) = realtime::check(&index) {
        return GuidedReport {
            verdict: GuidedVerdict::Violation(violation),
            counts: index.counts,
            warnings,
        };
    }
    let mut replay = replay::Replay::new(&index, &budget);
    let verdict = match replay.run() {
        replay::Ending::Consistent => GuidedVerdict::Consistent,
        replay::Ending::Violation(violation) => GuidedVerdict::Violation(violation),
        replay::Ending::Unknown(reason, revision, bytes, failure) => GuidedVerdict::Unknown {
            reason,
            revision,
            bytes,
            max_bytes: budget.max_bytes,
            furthest_failure: failure.map(Box::new),
        },
    };
    GuidedReport {
        verdict,
        counts: replay.counts,
        warnings,
    }
}
