//! Requests, responses and states in words, for reports.
//!
//! What this module must never do: decide anything, or hide a difference (a short form that
//! would show two different responses alike falls back to the full one).

use std::fmt::Write as _;

use super::model::EtcdState;
use crate::history::{Compare, CompareResult, CompareTarget, Kv, Request, Response};

pub(crate) fn range_text(key: &str, range_end: Option<&str>) -> String {
    let key_text = key_text(key);
    match range_end {
        None | Some("") => key_text,
        Some("\u{0}") if key == "\u{0}" => "every key".to_string(),
        Some("\u{0}") => format!("{key_text}.."),
        Some(end) => format!("[{key_text}, {})", self::key_text(end)),
    }
}

/// A key as text, control characters escaped.
pub(crate) fn key_text(key: &str) -> String {
    if key.chars().any(char::is_control) {
        key.escape_debug().to_string()
    } else {
        key.to_string()
    }
}

/// A request in words: `put k2=v17`, `get [a, b) @rev 5 serializable`.
pub fn request_text(request: &Request) -> String {
    match request {
        Request::Get {
            key,
            range_end,
            revision,
            limit,
            keys_only,
            serializable,
        } => {
            let mut text = format!("get {}", range_text(key, range_end.as_deref()));
            if *revision != 0 {
                let _ = write!(text, " @rev {revision}");
            }
            if *limit != 0 {
                let _ = write!(text, " limit {limit}");
            }
            if *keys_only {
                text.push_str(" keys-only");
            }
            if *serializable {
                text.push_str(" serializable");
            }
            text
        }
        Request::Put { key, value, lease } => {
            let lease = if *lease != 0 {
                format!(" lease {lease}")
            } else {
                String::new()
            };
            format!("put {key}={value}{lease}")
        }
        Request::Delete { key, range_end } => {
            format!("delete {}", range_text(key, range_end.as_deref()))
        }
        Request::Txn {
            compare,
            success,
            failure,
        } => {
            let list = |ops: &[Request]| {
                if ops.is_empty() {
                    "nothing".to_string()
                } else {
                    ops.iter().map(request_text).collect::<Vec<_>>().join("; ")
                }
            };
            let compares = if compare.is_empty() {
                "true".to_string()
            } else {
                compare
                    .iter()
                    .map(compare_text)
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            format!(
                "txn if {compares} then {} else {}",
                list(success),
                list(failure)
            )
        }
        Request::LeaseGrant { ttl, id } => {
            let id = if *id != 0 {
                format!(" id {id}")
            } else {
                String::new()
            };
            format!("lease-grant ttl {ttl}{id}")
        }
        Request::LeaseRevoke { id } => format!("lease-revoke {id}"),
        Request::Compact { revision } => format!("compact {revision}"),
    }
}

pub(crate) fn compare_text(compare: &Compare) -> String {
    let (target, value) = match &compare.target {
        CompareTarget::Version(v) => ("version", v.to_string()),
        CompareTarget::Create(v) => ("create", v.to_string()),
        CompareTarget::Mod(v) => ("mod", v.to_string()),
        CompareTarget::Value(v) => ("value", format!("{v:?}")),
        CompareTarget::Lease(v) => ("lease", v.to_string()),
    };
    let op = match compare.result {
        CompareResult::Equal => "=",
        CompareResult::NotEqual => "!=",
        CompareResult::Greater => ">",
        CompareResult::Less => "<",
    };
    format!("{} {target} {op} {value}", compare.key)
}

/// A kv in short (`k=v@mod`) or full words.
pub(crate) fn kv_text(kv: &Kv, full: bool) -> String {
    let lease = if kv.lease != 0 {
        format!(" lease {}", kv.lease)
    } else {
        String::new()
    };
    if full {
        format!(
            "{}={} (create {}, mod {}, version {}{lease})",
            key_text(&kv.key),
            kv.value,
            kv.create_revision,
            kv.mod_revision,
            kv.version
        )
    } else {
        format!(
            "{}={}@{}{lease}",
            key_text(&kv.key),
            kv.value,
            kv.mod_revision
        )
    }
}

/// What a response holds, in words (empty for responses that hold nothing).
pub(crate) fn response_text(response: &Response, full: bool) -> String {
    match response {
        Response::Get { kvs, count, more } => {
            let mut text = if kvs.is_empty() {
                "none".to_string()
            } else {
                kvs.iter()
                    .map(|kv| kv_text(kv, full))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if *count != kvs.len() as i64 || *more {
                let _ = write!(
                    text,
                    " (count {count}{})",
                    if *more { ", more" } else { "" }
                );
            }
            text
        }
        Response::Put {} | Response::LeaseRevoke {} | Response::Compact {} => String::new(),
        Response::Delete { deleted } => format!("deleted {deleted}"),
        Response::Txn {
            succeeded,
            responses,
        } => {
            let subs: Vec<String> = responses
                .iter()
                .map(|r| match response_text(r, full) {
                    text if text.is_empty() => "ok".to_string(),
                    text => text,
                })
                .collect();
            format!(
                "{} [{}]",
                if *succeeded { "then" } else { "else" },
                subs.join("; ")
            )
        }
        Response::LeaseGrant { id, ttl } => format!("id {id} ttl {ttl}"),
    }
}

pub(crate) fn ok_text(header: i64, response: &Response) -> String {
    match response_text(response, false) {
        text if text.is_empty() => format!("ok rev {header}"),
        text => format!("ok rev {header}: {text}"),
    }
}

/// A state in words, its first keys only.
pub(crate) fn state_text(state: &EtcdState) -> String {
    const KEYS_SHOWN: usize = 8;
    let mut text = format!("rev {}", state.revision);
    if state.compact_revision > 0 {
        let _ = write!(text, ", compacted at {}", state.compact_revision);
    }
    if state.keyspace.is_empty() {
        text.push_str(", no keys");
    } else {
        let shown: Vec<String> = state
            .keyspace
            .values()
            .take(KEYS_SHOWN)
            .map(|kv| kv_text(kv, false))
            .collect();
        let _ = write!(text, ": {}", shown.join(", "));
        if state.keyspace.len() > KEYS_SHOWN {
            let _ = write!(text, " and {} more keys", state.keyspace.len() - KEYS_SHOWN);
        }
    }
    if !state.leases.is_empty() {
        let ids: Vec<String> = state.leases.keys().map(i64::to_string).collect();
        let _ = write!(text, "; leases {}", ids.join(", "));
    }
    text
}

/// `n` and the noun, in the singular or the plural.
pub(crate) fn counted(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// Nanoseconds as seconds, with as many decimals as they need (3, 6 or 9).
pub(crate) fn seconds(ns: u64) -> String {
    let (whole, frac) = (ns / 1_000_000_000, ns % 1_000_000_000);
    if frac % 1_000_000 == 0 {
        format!("{whole}.{:03}s", frac / 1_000_000)
    } else if frac % 1_000 == 0 {
        format!("{whole}.{:06}s", frac / 1_000)
    } else {
        format!("{whole}.{frac:09}s")
    }
}
