//! Violations in etcd's own words: what contradicts what, with the operations involved.
//!
//! What this module must never do: decide. The replay finds a contradiction and hands over the
//! facts; this module only finds the writes that explain a key's value and puts it in words.

use std::fmt::Write as _;

use super::super::keyspace::in_range;
use super::super::render::{kv_text, ok_text, request_text, response_text, seconds};
use super::index::{completion, executed, ok_parts, At, Index};
use crate::history::{Kv, Operation, Outcome, Request, Response};

/// Which guarantee a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Property {
    /// Real time: an operation's revision contradicts what completed before it was invoked.
    RealTime,
    /// Every revision is made by exactly one request.
    OneRequestPerRevision,
    /// A revision some response shows exists, but nothing left could have made it.
    MissingRevision,
    /// A write's response is not what etcd answers at its revision.
    WriteResponse,
    /// A read does not show the keyspace at its revision.
    ReadData,
    /// etcd would have refused an acknowledged request at its revision.
    Refused,
}

impl Property {
    pub fn name(self) -> &'static str {
        match self {
            Property::RealTime => "real-time order",
            Property::OneRequestPerRevision => "one request per revision",
            Property::MissingRevision => "every revision made by a request",
            Property::WriteResponse => "a write answers as etcd does at its revision",
            Property::ReadData => "a read shows the keyspace at its revision",
            Property::Refused => "an acknowledged request is one etcd accepts",
        }
    }
}

/// One operation a violation involves, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involved {
    pub id: u64,
    pub client: u64,
    pub invoke_ns: u64,
    pub complete_ns: Option<u64>,
    /// The request and its outcome.
    pub text: String,
}

/// A contradiction in the history, named directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuidedViolation {
    pub property: Property,
    /// The contradiction in one or two sentences.
    pub summary: String,
    /// The operations it involves, the one that breaks the guarantee first.
    pub operations: Vec<Involved>,
    /// Set when the contradiction depends on where writes of unknown outcome took effect: what
    /// was tried.
    pub note: Option<String>,
}

impl GuidedViolation {
    pub fn render(&self) -> String {
        let mut text = format!("violates {}: {}\n", self.property.name(), self.summary);
        if let Some(note) = &self.note {
            let _ = writeln!(text, "{note}");
        }
        let _ = writeln!(
            text,
            "the operations involved (they cannot all have taken effect as reported):"
        );
        for op in &self.operations {
            let done = op.complete_ns.map_or("never".to_string(), seconds);
            let _ = writeln!(
                text,
                "  op {} client {} [{} .. {}]: {}",
                op.id,
                op.client,
                seconds(op.invoke_ns),
                done,
                op.text
            );
        }
        text
    }
}

/// An operation and its outcome in words.
pub(super) fn op_text(op: &Operation) -> String {
    let outcome = match &op.outcome {
        Outcome::Ok { revision, response } => ok_text(*revision, response),
        Outcome::Failed { error } => format!("failed: {error}"),
        Outcome::Unknown => "unknown outcome".to_string(),
    };
    format!("{} -> {outcome}", request_text(&op.request))
}

pub(super) fn involved(op: &Operation) -> Involved {
    Involved {
        id: op.id,
        client: op.client,
        invoke_ns: op.invoke_ns,
        complete_ns: op.complete_ns,
        text: op_text(op),
    }
}

/// The involved operations, reads first, each once.
pub(super) fn involved_all(index: &Index, ats: &[At]) -> Vec<Involved> {
    let mut ats: Vec<At> = ats.to_vec();
    ats.dedup();
    let mut seen = std::collections::BTreeSet::new();
    ats.retain(|at| seen.insert(*at));
    ats.sort_by_key(|&at| !matches!(index.op(at).request, Request::Get { .. }));
    ats.into_iter().map(|at| involved(index.op(at))).collect()
}

/// How the maker of a revision came to be there.
#[derive(Debug, Clone, Copy)]
pub(super) enum Maker {
    /// An acknowledged write that reports the revision.
    Claimed(At),
    /// A write of unknown outcome (or a lease revoke) the replay placed there.
    Filled(At),
}

impl Maker {
    pub fn at(self) -> At {
        match self {
            Maker::Claimed(at) | Maker::Filled(at) => at,
        }
    }
}

/// A write, in words, as the maker of `revision`, relative to a reader invoked at `reader_ns`
/// (when known): "put /k1=v was acknowledged at rev 5 (at 1.2s), before this get was invoked
/// (1.3s)".
pub(super) fn maker_text(
    index: &Index,
    maker: Maker,
    revision: i64,
    reader: Option<&Operation>,
) -> String {
    let op = index.op(maker.at());
    let request = request_text(&op.request);
    match maker {
        Maker::Claimed(_) => {
            let done = completion(op);
            match reader {
                Some(reader) if done < reader.invoke_ns => format!(
                    "{request} was acknowledged at rev {revision} (at {}), before this {} was \
                     invoked ({})",
                    seconds(done),
                    verb(&reader.request),
                    seconds(reader.invoke_ns)
                ),
                _ => format!(
                    "{request} was acknowledged at rev {revision} (at {})",
                    seconds(done)
                ),
            }
        }
        Maker::Filled(_) if matches!(op.outcome, Outcome::Ok { .. }) => {
            format!("{request} deleted its keys at rev {revision}")
        }
        Maker::Filled(_) => format!(
            "{request}, of unknown outcome (invoked at {}), took effect at rev {revision}",
            seconds(op.invoke_ns)
        ),
    }
}

/// The request's kind, as a noun: "get", "put", "txn".
pub(super) fn verb(request: &Request) -> &'static str {
    match request {
        Request::Get { .. } => "get",
        Request::Put { .. } => "put",
        Request::Delete { .. } => "delete",
        Request::Txn { .. } => "txn",
        Request::LeaseGrant { .. } => "lease-grant",
        Request::LeaseRevoke { .. } => "lease-revoke",
        Request::Compact { .. } => "compact",
    }
}

/// Whether a request may write `key` (either branch of a txn).
fn may_write(request: &Request, key: &str) -> bool {
    match request {
        Request::Put { key: k, .. } => k == key,
        Request::Delete { key: k, range_end } => in_range(key, k, range_end.as_deref()),
        Request::Txn {
            success, failure, ..
        } => success.iter().chain(failure).any(|r| may_write(r, key)),
        Request::LeaseRevoke { .. } => true,
        _ => false,
    }
}

/// Whether an acknowledged request wrote `key`, by its response.
fn wrote(op: &Operation, key: &str) -> bool {
    match (&op.request, ok_parts(op)) {
        (Request::Txn { .. }, Some((_, response))) => executed(&op.request, response)
            .unwrap_or(&[])
            .iter()
            .any(|r| may_write(r, key)),
        (request, _) => may_write(request, key),
    }
}

/// The last revision at or before `revision` whose maker may have written `key`, with it.
pub(super) fn last_writer(
    index: &Index,
    makers: &dyn Fn(i64) -> Option<Maker>,
    key: &str,
    revision: i64,
) -> Option<(i64, Maker)> {
    (2..=revision).rev().find_map(|r| {
        let maker = makers(r)?;
        wrote(index.op(maker.at()), key).then_some((r, maker))
    })
}

/// The first kv where two get responses differ, by key: (key, expected, got).
pub(super) fn first_difference<'a>(
    expected: &'a Response,
    got: &'a Response,
) -> Option<(&'a str, Option<&'a Kv>, Option<&'a Kv>)> {
    let (Response::Get { kvs: want, .. }, Response::Get { kvs: have, .. }) = (expected, got) else {
        return None;
    };
    let (mut w, mut h) = (want.iter().peekable(), have.iter().peekable());
    loop {
        match (w.peek(), h.peek()) {
            (None, None) => return None,
            (Some(a), Some(b)) if a.key == b.key => {
                if a != b {
                    return Some((&a.key, Some(a), Some(b)));
                }
                w.next();
                h.next();
            }
            (Some(a), Some(b)) if a.key < b.key => return Some((&a.key, Some(a), None)),
            (Some(a), None) => return Some((&a.key, Some(a), None)),
            (_, Some(b)) => return Some((&b.key, None, Some(b))),
        }
    }
}

/// A read's data against the keyspace at its revision, in words: what it returned for the first
/// key that differs, and which write explains what the keyspace held there.
#[allow(clippy::too_many_arguments)]
pub(super) fn read_mismatch(
    index: &Index,
    makers: &dyn Fn(i64) -> Option<Maker>,
    reader: At,
    in_txn: Option<u32>,
    get: &Request,
    revision: i64,
    expected: &Response,
    got: &Response,
) -> (String, Vec<At>) {
    let reader_op = index.op(reader);
    let what = match in_txn {
        Some(i) => format!(
            "read {} of txn (op {}), {},",
            i + 1,
            reader_op.id,
            request_text(get)
        ),
        None => request_text(get),
    };
    let mut ats = vec![reader];
    let Some((key, want, have)) = first_difference(expected, got) else {
        return (
            format!(
                "{what} at rev {revision} returned {}, but the keyspace at rev {revision} gives \
                 {}",
                response_text(got, true),
                response_text(expected, true)
            ),
            ats,
        );
    };
    let returned = match have {
        Some(kv) => kv_text(kv, want.is_some_and(|w| w.value == kv.value)),
        None => format!("no {key}"),
    };
    let held = match want {
        Some(kv) => {
            let cause = makers(kv.mod_revision).map(|maker| {
                ats.push(maker.at());
                maker_text(index, maker, kv.mod_revision, Some(reader_op))
            });
            match cause {
                Some(cause) => cause,
                None => format!("at rev {revision} it holds {}", kv_text(kv, true)),
            }
        }
        None => match last_writer(index, makers, key, revision) {
            Some((r, maker)) => {
                ats.push(maker.at());
                let mut text = maker_text(index, maker, r, Some(reader_op));
                let _ = write!(text, ", and {key} does not exist at rev {revision}");
                text
            }
            None => format!("no request wrote {key} by rev {revision}"),
        },
    };
    (
        format!("{what} at rev {revision} returned {returned}, but {held}"),
        ats,
    )
}
