//! Ranges, compares and the checks etcd makes before it proposes a request.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::model::{EtcdState, Refusal};
use crate::history::{Compare, CompareResult, CompareTarget, Kv, Request, Response};

pub(crate) fn check_read_revision(state: &EtcdState, revision: i64) -> Result<(), Refusal> {
    if revision > state.revision {
        return Err(Refusal::FutureRevision);
    }
    if revision > 0 && revision < state.compact_revision {
        return Err(Refusal::Compacted);
    }
    Ok(())
}

/// The checks etcd makes on a branch before proposing it: only get, put and delete (the history
/// format has no nested txns), keys present, and its duplicate-key rule (deletes first, then each
/// put against earlier puts and every delete).
pub(crate) fn check_branch(ops: &[Request]) -> Result<(), Refusal> {
    let mut deletes = Vec::new();
    for op in ops {
        match op {
            Request::Get { key, .. } | Request::Put { key, .. } if key.is_empty() => {
                return Err(Refusal::EmptyKey)
            }
            Request::Delete { key, .. } if key.is_empty() => return Err(Refusal::EmptyKey),
            Request::Delete { key, range_end } => deletes.push((key, range_end.as_deref())),
            Request::Get { .. } | Request::Put { .. } => {}
            _ => return Err(Refusal::NotATxnOp),
        }
    }
    let mut puts = BTreeSet::new();
    for op in ops {
        let Request::Put { key, .. } = op else {
            continue;
        };
        if !puts.insert(key)
            || deletes
                .iter()
                .any(|(start, end)| in_range(key, start, *end))
        {
            return Err(Refusal::DuplicateKey);
        }
    }
    Ok(())
}

pub(crate) fn compare_holds(compare: &Compare, kv: Option<&Kv>) -> bool {
    use std::cmp::Ordering;
    let ordering: Ordering = match (&compare.target, kv) {
        // A missing key has no value: every value compare fails.
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(v), Some(kv)) => kv.value.as_bytes().cmp(v.as_bytes()),
        (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
        (CompareTarget::Create(v), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(v),
        (CompareTarget::Mod(v), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(v),
        (CompareTarget::Lease(v), kv) => kv.map_or(0, |kv| kv.lease).cmp(v),
    };
    match compare.result {
        CompareResult::Equal => ordering == Ordering::Equal,
        CompareResult::NotEqual => ordering != Ordering::Equal,
        CompareResult::Greater => ordering == Ordering::Greater,
        CompareResult::Less => ordering == Ordering::Less,
    }
}

/// Whether `key` falls in etcd's range `(start, end)`: `end` absent or empty is `start` alone,
/// `"\0"` is every key from `start`, anything else is `[start, end)`.
pub(crate) fn in_range(key: &str, start: &str, end: Option<&str>) -> bool {
    match end {
        None | Some("") => key == start,
        Some("\u{0}") => key >= start,
        Some(end) => key >= start && key < end,
    }
}

/// The live kvs of an etcd range, in key order.
pub(crate) fn range<'a>(
    keyspace: &'a BTreeMap<String, Kv>,
    start: &'a str,
    end: Option<&'a str>,
) -> impl Iterator<Item = &'a Kv> + 'a {
    keyspace
        .range::<str, _>(bounds(start, end))
        .map(|(_, kv)| kv)
}

/// The bounds of an etcd range, for `BTreeMap::range` (an empty range if `end <= start`).
pub(crate) fn bounds<'a>(start: &'a str, end: Option<&'a str>) -> (Bound<&'a str>, Bound<&'a str>) {
    let upper = match end {
        None | Some("") => Bound::Included(start),
        Some("\u{0}") => Bound::Unbounded,
        Some(end) if end <= start => Bound::Excluded(start),
        Some(end) => Bound::Excluded(end),
    };
    (Bound::Included(start), upper)
}

/// etcd's range response: every match counted, at most `limit` returned (0 = no limit), values
/// dropped for `keys_only`.
pub(crate) fn get_response<'a>(
    matched: impl Iterator<Item = &'a Kv>,
    limit: i64,
    keys_only: bool,
) -> Response {
    let mut kvs: Vec<Kv> = Vec::new();
    let mut count = 0_i64;
    for kv in matched {
        count += 1;
        if limit <= 0 || count <= limit {
            let mut kv = kv.clone();
            if keys_only {
                kv.value.clear();
            }
            kvs.push(kv);
        }
    }
    let more = (kvs.len() as i64) < count;
    debug_assert!(
        kvs.windows(2).all(|w| w[0].key < w[1].key),
        "a range out of key order"
    );
    Response::Get { kvs, count, more }
}

pub(crate) fn get_part(response: &Response) -> Option<&Response> {
    matches!(response, Response::Get { .. }).then_some(response)
}
