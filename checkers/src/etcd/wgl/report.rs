//! What the search-based etcd checker found, and its report in words.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::super::Judgement;
use super::{EtcdModel, EtcdOperation, EtcdReport, Origin, RevisionReads, StaleRead};
use crate::etcd::render::{counted, response_text, seconds};
use crate::history::Request;
use crate::linearizability::{Model, OpSummary, Verdict, Violation};

/// A range of keys `[start, end)` (`end` `None` = unbounded), for finding related operations.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Interval {
    start: String,
    end: Option<String>,
}

impl Interval {
    fn new(key: &str, range_end: Option<&str>) -> Interval {
        let end = match range_end {
            // The key followed by NUL is the least key after it.
            None | Some("") => Some(format!("{key}\u{0}")),
            Some("\u{0}") => None,
            Some(end) => Some(end.to_string()),
        };
        Interval {
            start: key.to_string(),
            end,
        }
    }

    fn everything() -> Interval {
        Interval {
            start: String::new(),
            end: None,
        }
    }

    fn overlaps(&self, other: &Interval) -> bool {
        let before =
            |start: &str, end: &Option<String>| end.as_deref().is_none_or(|end| start < end);
        before(&self.start, &other.end) && before(&other.start, &self.end)
    }
}

/// The keys a request reads or writes (a revoke: any key).
fn intervals(request: &Request) -> Vec<Interval> {
    match request {
        Request::Get { key, range_end, .. } | Request::Delete { key, range_end } => {
            vec![Interval::new(key, range_end.as_deref())]
        }
        Request::Put { key, .. } => vec![Interval::new(key, None)],
        Request::Txn {
            compare,
            success,
            failure,
        } => compare
            .iter()
            .map(|c| Interval::new(&c.key, None))
            .chain(success.iter().chain(failure).flat_map(intervals))
            .collect(),
        Request::LeaseRevoke { .. } => vec![Interval::everything()],
        Request::LeaseGrant { .. } | Request::Compact { .. } => Vec::new(),
    }
}

impl EtcdReport {
    pub fn judgement(&self) -> Judgement {
        match (&self.linearizability, &self.revision_reads) {
            (Verdict::NotLinearizable(_), _) | (_, RevisionReads::Stale { .. }) => Judgement::Fail,
            (Verdict::Linearizable(_), RevisionReads::Consistent) => Judgement::Pass,
            _ => Judgement::Unknown,
        }
    }

    pub fn passed(&self) -> bool {
        self.judgement() == Judgement::Pass
    }

    /// The stale reads found, if any.
    pub fn stale_reads(&self) -> &[StaleRead] {
        match &self.revision_reads {
            RevisionReads::Stale { reads, .. } => reads,
            _ => &[],
        }
    }

    /// The report in words for people: the verdict, what was checked, and for a violation the
    /// operations involved, by history id, client and time.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let headline = match (&self.linearizability, &self.revision_reads) {
            (Verdict::NotLinearizable(_), _) => "etcd: NOT LINEARIZABLE".to_string(),
            (_, RevisionReads::Stale { reads, .. }) => {
                format!(
                    "etcd: STALE READS: {} not show the keyspace at {} revision",
                    counted(reads.len(), "read does", "reads do"),
                    if reads.len() == 1 { "its" } else { "their" }
                )
            }
            (Verdict::Unknown(_), _) => "etcd: UNKNOWN: the search ran out of budget".to_string(),
            (_, RevisionReads::Unchecked { .. }) => {
                "etcd: UNKNOWN: linearizable, but the reads at a revision are not decided"
                    .to_string()
            }
            (Verdict::Linearizable(_), RevisionReads::Consistent) => {
                "etcd: linearizable, and every read at a revision shows that revision".to_string()
            }
        };
        let c = &self.counts;
        let _ = writeln!(text, "{headline}");
        let _ = writeln!(
            text,
            "{}: {} searched, {} excluded, {} checked at a revision, {} of unknown outcome \
             ({} dropped), {} failed and dropped",
            counted(c.total, "operation", "operations"),
            c.searched,
            counted(c.excluded, "serializable read", "serializable reads"),
            counted(c.revision_reads, "read", "reads"),
            c.unknown,
            counted(c.unknown_reads_dropped, "read", "reads"),
            c.failed
        );
        match &self.linearizability {
            Verdict::NotLinearizable(violation) => {
                text.push_str(&render_violation(violation, &self.ops, &self.origins));
            }
            Verdict::Unknown(undecided) => text.push_str(&undecided.render()),
            Verdict::Linearizable(_) => {}
        }
        match &self.revision_reads {
            RevisionReads::Stale { reads, proof } => {
                for read in reads {
                    text.push_str(&render_stale_read(read));
                }
                if let Some(proof) = proof {
                    text.push_str(
                        "no order of the operations explains these reads, wherever the writes of \
                         unknown outcome fall:\n",
                    );
                    text.push_str(&render_violation(proof, &self.ops, &self.origins));
                }
            }
            RevisionReads::Unchecked { reason } if !self.linearizability.is_not_linearizable() => {
                let _ = writeln!(text, "reads at a revision not checked: {reason}");
            }
            _ => {}
        }
        for warning in &self.warnings {
            let _ = writeln!(text, "warning: {warning}");
        }
        text
    }
}

/// An operation in one line: history id, client, times, request and outcome.
pub(super) fn op_line(model: &EtcdModel, op: &EtcdOperation, origin: &Origin) -> String {
    origin_line(origin, &model.describe(op))
}

/// One line for an operation from where it comes from and its model's words: a read pinned to
/// a revision is shown as the read it stands for, not as its serializable stand-in.
fn origin_line(origin: &Origin, description: &str) -> String {
    let done = origin.complete_ns.map_or_else(|| "?".to_string(), seconds);
    let description = match &origin.pinned {
        Some(read) => read.clone(),
        None => description.to_string(),
    };
    format!(
        "op {} client {} [{}..{done}] {description}",
        origin.id,
        origin.client,
        seconds(origin.invoke_ns)
    )
}

/// One operation of a violation in a line; `set_aside` lists the operations whose known outcome
/// the explanation set aside.
fn summary_line(summary: &OpSummary, origins: &[Origin], set_aside: &BTreeSet<usize>) -> String {
    let note = if summary.ret.is_none() {
        "  (never returned)"
    } else if set_aside.contains(&summary.index) {
        "  (outcome set aside)"
    } else {
        ""
    };
    format!(
        "{}{note}",
        origin_line(&origins[summary.index], &summary.description)
    )
}

/// The engine's violation in words, naming operations by history id and times in seconds. Of
/// the context, only operations on the core's keys are listed (the latest few).
fn render_violation(violation: &Violation, ops: &[EtcdOperation], origins: &[Origin]) -> String {
    const PREFIX_SHOWN: usize = 12;
    const CONTEXT_SHOWN: usize = 12;
    let set_aside: BTreeSet<usize> = violation
        .context
        .iter()
        .filter(|op| op.ret.is_some())
        .map(|op| op.index)
        .collect();
    let line = |op: &OpSummary| summary_line(op, origins, &set_aside);
    let mut text = String::new();
    const CORE_SHOWN: usize = 24;
    let _ = writeln!(
        text,
        "{} cannot all have taken effect as observed{}",
        counted(violation.core.len(), "operation", "operations"),
        match (violation.minimal, violation.core.len() > CORE_SHOWN) {
            (true, _) => {
                " (minimal: setting aside the outcome of any one of them makes the rest \
                 linearizable):"
            }
            (false, false) => " (not minimised):",
            (false, true) => " (not minimised: see below where the search got stuck).",
        }
    );
    if violation.core.len() <= CORE_SHOWN {
        for op in &violation.core {
            let _ = writeln!(text, "  {}", line(op));
        }
    }
    if !violation.context.is_empty() {
        let core_ranges: Vec<Interval> = violation
            .core
            .iter()
            .flat_map(|op| intervals(&ops[op.index].input.request))
            .collect();
        let relevant: Vec<&OpSummary> = violation
            .context
            .iter()
            .filter(|op| {
                intervals(&ops[op.index].input.request)
                    .iter()
                    .any(|range| core_ranges.iter().any(|core| range.overlaps(core)))
            })
            .collect();
        let shown = &relevant[relevant.len().saturating_sub(CONTEXT_SHOWN)..];
        let _ =
            writeln!(
            text,
            "given {}, each of unknown outcome (it may have taken effect at any time after its \
             call, or never){}",
            counted(violation.context.len(), "other operation", "other operations"),
            if shown.len() == violation.context.len() {
                ":".to_string()
            } else if shown.is_empty() {
                "; none of them touches the keys above.".to_string()
            } else {
                format!("; the latest {} on the keys above:", shown.len())
            }
        );
        for op in shown {
            let _ = writeln!(text, "  {}", line(op));
        }
        if violation.context.iter().any(|op| op.ret.is_some()) {
            let _ = writeln!(
                text,
                "(an outcome set aside still counts for revisions: each revision is written, if at \
                 all, by the operation whose response reports it, any other by an operation of \
                 unknown outcome)"
            );
        }
    }
    if let (Some(cutoff), true) = (violation.cutoff, violation.left_out > 0) {
        let _ = writeln!(
            text,
            "{} invoked after {} left out: they cannot change what happened before.",
            counted(violation.left_out, "operation", "operations"),
            seconds(cutoff)
        );
    }
    let _ = write!(
        text,
        "the longest order the model accepts has {}",
        counted(violation.prefix.len(), "operation", "operations")
    );
    if violation.prefix.len() > PREFIX_SHOWN {
        let _ = writeln!(text, "; its last {PREFIX_SHOWN}:");
    } else {
        text.push_str(if violation.prefix.is_empty() {
            ".\n"
        } else {
            ":\n"
        });
    }
    let skip = violation.prefix.len().saturating_sub(PREFIX_SHOWN);
    for (n, step) in violation.prefix.iter().enumerate().skip(skip) {
        let _ = writeln!(text, "  {:>3}. {}", n + 1, line(&step.op));
    }
    let _ = writeln!(
        text,
        "then real time requires one of these next, and each is illegal in state {}:",
        violation.stuck_state
    );
    for op in &violation.stuck {
        let _ = writeln!(text, "  {}", line(op));
    }
    text
}

fn render_stale_read(read: &StaleRead) -> String {
    let mut text = String::new();
    let done = read.complete_ns.map_or_else(|| "?".to_string(), seconds);
    let _ = writeln!(
        text,
        "stale read: op {} client {} [{}..{done}] {}",
        read.id,
        read.client,
        seconds(read.invoke_ns),
        read.operation
    );
    let _ = writeln!(text, "  {}", read.reason);
    if let Some(expected) = &read.expected {
        // Short words for both, unless they hide the difference.
        let full = response_text(expected, false) == response_text(&read.got, false);
        let _ = writeln!(
            text,
            "  at revision {} the store held: {}",
            read.revision,
            response_text(expected, full)
        );
        let _ = writeln!(
            text,
            "  the read returned:           {}",
            response_text(&read.got, full)
        );
    }
    for note in &read.notes {
        let _ = writeln!(text, "  {note}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_intervals_overlap_like_etcd_ranges() {
        let single = Interval::new("k", None);
        assert!(single.overlaps(&Interval::new("k", Some("l"))));
        assert!(!single.overlaps(&Interval::new("k0", None)));
        assert!(single.overlaps(&Interval::new("a", Some("\u{0}"))));
        assert!(!single.overlaps(&Interval::new("l", Some("\u{0}"))));
        assert!(Interval::everything().overlaps(&single));
        assert_eq!(crate::etcd::render::counted(1, "read", "reads"), "1 read");
        assert_eq!(
            crate::etcd::render::range_text("\u{0}", Some("\u{0}")),
            "every key"
        );
        assert_eq!(crate::etcd::render::range_text("a", Some("\u{0}")), "a..");
        assert_eq!(crate::etcd::render::range_text("a\u{1}", None), "a\\u{1}");
    }
}
