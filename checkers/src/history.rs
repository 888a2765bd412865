//! The history format: what every client of an etcd-like store asked and saw.
//!
//! A history is a JSON Lines file (format version 1): the first line is a [`Header`], every
//! further line is one [`Operation`]. Users can produce it from their own systems: nothing in it
//! refers to Faultline's simulator or store. `faultline check FILE` reads it.
//!
//! ```text
//! {"format":"faultline-history","version":1,"meta":{"seed":"7","workload":"etcd-kv"}}
//! {"id":0,"client":1,"invoke_ns":1000,"complete_ns":9000,"request":{"put":{"key":"k1","value":"v1"}},"outcome":{"ok":{"revision":2,"response":{"put":{}}}}}
//! {"id":1,"client":2,"invoke_ns":2000,"complete_ns":null,"request":{"get":{"key":"k1"}},"outcome":"unknown"}
//! ```
//!
//! Semantics of an outcome: `ok` = the request took effect (or was read) with this response;
//! `failed` = it certainly did not take effect; `unknown` = it may have taken effect at any time
//! after `invoke_ns`, or never (a timeout, a lost reply). Times are nanoseconds on one clock
//! shared by all clients (simulated time, in Faultline's own runs). Keys and values are UTF-8
//! text. Reading never panics: a malformed line is an error naming the line and the field.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

/// The `format` every history file declares.
pub const FORMAT: &str = "faultline-history";
/// The version this code reads and writes.
pub const VERSION: u32 = 1;

/// The first line of a history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    /// Free-form facts about the run (seed, workload, options), for people.
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Unique within the history.
    pub id: u64,
    /// The client (process) that issued it; one client has at most one operation in flight.
    pub client: u64,
    pub invoke_ns: u64,
    /// When the client saw the outcome; `None` for an unknown outcome that never returned.
    #[serde(default)]
    pub complete_ns: Option<u64>,
    pub request: Request,
    pub outcome: Outcome,
}

/// A key-value pair as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    #[serde(default)]
    pub lease: i64,
}

/// What a txn compare looks at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareTarget {
    Version(i64),
    Create(i64),
    Mod(i64),
    Value(String),
    Lease(i64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    pub key: String,
    pub result: CompareResult,
    pub target: CompareTarget,
}

/// A request. `get` is etcd's Range: `range_end` absent = the key alone, `"\u0000"` = every key
/// from `key`, else `[key, range_end)`; `revision` 0 = latest; `serializable` reads may be stale.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    Get {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range_end: Option<String>,
        #[serde(default, skip_serializing_if = "is_zero")]
        revision: i64,
        #[serde(default, skip_serializing_if = "is_zero")]
        limit: i64,
        #[serde(default, skip_serializing_if = "is_false")]
        keys_only: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        serializable: bool,
    },
    Put {
        key: String,
        value: String,
        #[serde(default, skip_serializing_if = "is_zero")]
        lease: i64,
    },
    Delete {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        range_end: Option<String>,
    },
    /// A txn of single-level ops (no nested txns).
    Txn {
        compare: Vec<Compare>,
        success: Vec<Request>,
        failure: Vec<Request>,
    },
    LeaseGrant {
        ttl: i64,
        id: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    Compact {
        revision: i64,
    },
}

/// A successful response, without its header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Get {
        kvs: Vec<Kv>,
        count: i64,
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    Put {},
    Delete {
        deleted: i64,
    },
    Txn {
        succeeded: bool,
        responses: Vec<Response>,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {},
    Compact {},
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It took effect; `revision` is the response header's revision.
    Ok { revision: i64, response: Response },
    /// It certainly did not take effect; the error as the client saw it.
    Failed { error: String },
    /// It may have taken effect, at any time after its invocation, or never.
    Unknown,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// A whole history.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct History {
    pub meta: BTreeMap<String, String>,
    pub operations: Vec<Operation>,
}

/// Why a history file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading the history: {0}")]
    Io(#[from] std::io::Error),
    #[error("the history is empty: its first line must be a header {{\"format\":\"{FORMAT}\",\"version\":{VERSION}}}")]
    Empty,
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
}

impl From<crate::jsonl::ReadError> for HistoryError {
    fn from(e: crate::jsonl::ReadError) -> Self {
        match e {
            crate::jsonl::ReadError::Io(e) => HistoryError::Io(e),
            crate::jsonl::ReadError::Empty => HistoryError::Empty,
            crate::jsonl::ReadError::Line { line, message } => HistoryError::Line { line, message },
        }
    }
}

impl History {
    /// Writes the history as JSON Lines.
    pub fn write_to(&self, mut out: impl Write) -> std::io::Result<()> {
        let header = Header {
            format: FORMAT.to_string(),
            version: VERSION,
            meta: self.meta.clone(),
        };
        serde_json::to_writer(&mut out, &header)?;
        out.write_all(b"\n")?;
        for op in &self.operations {
            serde_json::to_writer(&mut out, op)?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// Reads and validates a history. Blank lines are skipped.
    pub fn read_from(input: impl BufRead) -> Result<History, HistoryError> {
        let (meta, lines) = crate::jsonl::read(input, FORMAT, VERSION)?;
        let mut history = History {
            meta,
            operations: Vec::new(),
        };
        let mut ids = std::collections::BTreeSet::new();
        for (line_no, line) in lines {
            let fail = |message: String| HistoryError::Line {
                line: line_no,
                message,
            };
            let op: Operation = serde_json::from_str(&line).map_err(|e| fail(e.to_string()))?;
            if !ids.insert(op.id) {
                return Err(fail(format!("operation id {} repeats", op.id)));
            }
            match (op.complete_ns, &op.outcome) {
                (Some(done), _) if done < op.invoke_ns => {
                    return Err(fail(format!(
                        "operation {} completes at {done} ns, before its invocation at {} ns",
                        op.id, op.invoke_ns
                    )));
                }
                (None, Outcome::Ok { .. } | Outcome::Failed { .. }) => {
                    return Err(fail(format!(
                        "operation {} has an outcome but no complete_ns",
                        op.id
                    )));
                }
                _ => {}
            }
            history.operations.push(op);
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, request: Request, outcome: Outcome) -> Operation {
        Operation {
            id,
            client: 1,
            invoke_ns: 10 * id,
            complete_ns: Some(10 * id + 5),
            request,
            outcome,
        }
    }

    #[test]
    fn a_history_round_trips_through_json_lines() {
        let history = History {
            meta: BTreeMap::from([("seed".to_string(), "7".to_string())]),
            operations: vec![
                op(
                    0,
                    Request::Put {
                        key: "k".into(),
                        value: "v".into(),
                        lease: 0,
                    },
                    Outcome::Ok {
                        revision: 2,
                        response: Response::Put {},
                    },
                ),
                Operation {
                    complete_ns: None,
                    ..op(
                        1,
                        Request::Delete {
                            key: "k".into(),
                            range_end: None,
                        },
                        Outcome::Unknown,
                    )
                },
                op(
                    2,
                    Request::Compact { revision: 9 },
                    Outcome::Failed {
                        error: "future".into(),
                    },
                ),
            ],
        };
        let mut bytes = Vec::new();
        history.write_to(&mut bytes).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.starts_with("{\"format\":\"faultline-history\",\"version\":1"));
        assert_eq!(History::read_from(&bytes[..]).unwrap(), history);
    }

    #[test]
    fn malformed_histories_name_the_line() {
        let cases = [
            ("", "empty"),
            ("{\"format\":\"other\",\"version\":1}\n", "line 1: format"),
            ("{\"format\":\"faultline-history\",\"version\":9}\n", "line 1: version 9"),
            ("{\"format\":\"faultline-history\",\"version\":1}\n\n{\"id\":0}\n", "line 3: missing field"),
            (
                "{\"format\":\"faultline-history\",\"version\":1}\n{\"id\":0,\"client\":1,\"invoke_ns\":5,\"complete_ns\":1,\"request\":{\"compact\":{\"revision\":1}},\"outcome\":\"unknown\"}\n",
                "line 2: operation 0 completes at 1 ns",
            ),
        ];
        for (text, expected) in cases {
            let error = History::read_from(text.as_bytes()).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
    }
}
