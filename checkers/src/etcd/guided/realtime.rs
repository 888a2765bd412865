//! The checks the revisions alone decide, before any replay: one request per revision, and real
//! time against the order of revisions.
//!
//! The acknowledged operations sit in one order: the write that reports revision `r`, then the
//! operations that report `r` and made nothing (by completion), then the write of `r + 1`. Real
//! time allows that order exactly when no operation in it completed before an earlier one was
//! invoked, which one pass decides with the running maximum of invocation times. Writes of
//! unknown outcome are not in the order: where they may go is the replay's business.
//!
//! What this module must never do: look at keys or values.

use super::super::render::{request_text, seconds};
use super::explain::{involved_all, verb, GuidedViolation, Property};
use super::index::{completion, earliest, ok_parts, At, Index};

/// The first contradiction the revisions alone show, if any.
pub(super) fn check(index: &Index) -> Option<GuidedViolation> {
    if let Some(violation) = bad_headers(index) {
        return Some(violation);
    }
    if let Some((revision, writers)) = index.duplicate_claims.first() {
        let texts: Vec<String> = writers
            .iter()
            .map(|&at| request_text(&index.op(at).request))
            .collect();
        let summary = if *revision < 2 {
            format!(
                "{} reported making rev {revision}, but etcd starts at rev 1 and every write \
                 makes a higher one",
                texts.join(" and ")
            )
        } else {
            format!(
                "{} were all acknowledged as making rev {revision}, but etcd makes every \
                 revision with exactly one request",
                texts.join(" and ")
            )
        };
        return Some(GuidedViolation {
            property: Property::OneRequestPerRevision,
            summary,
            operations: involved_all(index, writers),
            note: None,
        });
    }
    real_time(index)
}

fn bad_headers(index: &Index) -> Option<GuidedViolation> {
    let (at, op) = index
        .ops
        .iter()
        .enumerate()
        .find(|(_, op)| ok_parts(op).is_some_and(|(header, _)| header < 1))?;
    let header = ok_parts(op).expect("acknowledged").0;
    Some(GuidedViolation {
        property: Property::RealTime,
        summary: format!(
            "{} reported rev {header}, but etcd's revisions start at 1",
            request_text(&op.request)
        ),
        operations: involved_all(index, &[at as At]),
        note: None,
    })
}

fn real_time(index: &Index) -> Option<GuidedViolation> {
    // The latest invocation so far in the order, and whose it is.
    let mut latest: Option<(u64, At, i64)> = None;
    for revision in 1..=index.max_revision {
        let writer = (revision >= 2).then(|| index.claimer(revision)).flatten();
        for &at in writer.iter().chain(index.at_revision(revision)) {
            let op = index.op(at);
            if let Some((invoked, before, before_revision)) = latest {
                if completion(op) < invoked {
                    return Some(contradiction(index, at, revision, before, before_revision));
                }
            }
            let from = earliest(op);
            if latest.is_none_or(|(invoked, _, _)| from > invoked) {
                latest = Some((from, at, revision));
            }
        }
    }
    None
}

/// `later` (at `revision`) completed before `earlier` (at `earlier_revision`, no later in the
/// order) was invoked.
fn contradiction(
    index: &Index,
    later: At,
    revision: i64,
    earlier: At,
    earlier_revision: i64,
) -> GuidedViolation {
    let (l, e) = (index.op(later), index.op(earlier));
    let made = |at: At, r: i64| index.claimer(r) == Some(at);
    let summary = if made(earlier, earlier_revision) {
        // An operation saw a revision made by a write invoked only after it returned.
        format!(
            "{} returned at {}, reporting rev {revision}, but rev {earlier_revision} was made by \
             {}, invoked only at {}, after it returned",
            request_text(&l.request),
            seconds(completion(l)),
            request_text(&e.request),
            seconds(e.invoke_ns)
        )
    } else {
        // An operation invoked after a higher revision was reported reports a lower one.
        let what = if made(later, revision) {
            "was acknowledged at"
        } else {
            "had returned"
        };
        format!(
            "{} reports rev {earlier_revision}, but {} {what} rev {revision} (at {}), before \
             this {} was invoked ({})",
            request_text(&e.request),
            request_text(&l.request),
            seconds(completion(l)),
            verb(&e.request),
            seconds(e.invoke_ns)
        )
    };
    GuidedViolation {
        property: Property::RealTime,
        summary,
        operations: involved_all(index, &[later, earlier]),
        note: None,
    }
}
