//! Readers for the histories of the shared corpus (`/work/shared/corpus`, see its README):
//! Jepsen's etcd logs (one register) and porcupine's EDN key-value logs.
//!
//! Both are sequences of events per process: `:invoke` starts an operation, then `:ok` (it took
//! effect with this result), `:fail` (it certainly did not take effect: the operation is dropped)
//! or `:info` (unknown outcome: it may have taken effect at any time after its invocation, or
//! never) ends it. An operation still running at the end of the log is of unknown outcome too.
//! Times are line numbers (1-based), so operations are ordered exactly as the log orders events.
//!
//! Readers never panic on input: a malformed line is a [`ParseError`] naming the line.

use std::collections::BTreeMap;

use crate::kv::{KvInput, KvOp, KvOutput};
use crate::linearizability::Operation;
use crate::register::{RegisterInput, RegisterOutput};

/// An operation of a Jepsen etcd log.
pub type RegisterOperation = Operation<RegisterInput<i64>, RegisterOutput<i64>>;
/// An operation of a kv log.
pub type KvOperation = Operation<KvInput, KvOutput>;

/// A line that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}: {text:?}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub text: String,
    pub problem: Problem,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("{what} {found:?} is not {expected}")]
    Bad {
        what: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("process {process} completes an operation it never invoked")]
    NotInvoked { process: u64 },
    #[error("process {process} invokes while its operation of line {line} is still running")]
    StillRunning { process: u64, line: usize },
    #[error("process {process} completes {completed} but invoked {invoked} on line {line}")]
    OtherFunction {
        process: u64,
        completed: String,
        invoked: String,
        line: usize,
    },
    #[error(
        "the completion's value {completed:?} differs from the invocation's {invoked:?} \
         (line {line})"
    )]
    OtherValue {
        completed: String,
        invoked: String,
        line: usize,
    },
}

/// How an event ends an operation.
enum Completion<O> {
    Ok(O),
    Fail,
    Info,
}

/// Pairs invocations with completions per process.
struct Assembler<I, O> {
    /// Operations in invocation order; `None` once failed.
    ops: Vec<Option<Operation<I, O>>>,
    /// Per process: the slot in `ops`, the line and function of its running invocation.
    running: BTreeMap<u64, (usize, usize, &'static str)>,
}

impl<I, O> Assembler<I, O> {
    fn new() -> Self {
        Assembler {
            ops: Vec::new(),
            running: BTreeMap::new(),
        }
    }

    fn invoke(
        &mut self,
        process: u64,
        line: usize,
        f: &'static str,
        input: I,
    ) -> Result<(), Problem> {
        if let Some(&(_, running_line, _)) = self.running.get(&process) {
            return Err(Problem::StillRunning {
                process,
                line: running_line,
            });
        }
        self.running.insert(process, (self.ops.len(), line, f));
        self.ops.push(Some(Operation {
            client: process,
            call: line as u64,
            ret: None,
            input,
            output: None,
        }));
        Ok(())
    }

    /// The running invocation of `process`, which must be of `f`: its slot and line.
    fn running(&self, process: u64, f: &'static str) -> Result<(usize, usize), Problem> {
        let &(slot, line, invoked) = self
            .running
            .get(&process)
            .ok_or(Problem::NotInvoked { process })?;
        if invoked != f {
            return Err(Problem::OtherFunction {
                process,
                completed: f.to_string(),
                invoked: invoked.to_string(),
                line,
            });
        }
        Ok((slot, line))
    }

    fn input(&self, slot: usize) -> &I {
        &self.ops[slot]
            .as_ref()
            .expect("a running operation has not failed")
            .input
    }

    fn complete(
        &mut self,
        process: u64,
        line: usize,
        f: &'static str,
        completion: Completion<O>,
    ) -> Result<(), Problem> {
        let (slot, _) = self.running(process, f)?;
        self.running.remove(&process);
        match completion {
            Completion::Ok(output) => {
                let op = self.ops[slot]
                    .as_mut()
                    .expect("a running operation has not failed");
                op.ret = Some(line as u64);
                op.output = Some(output);
            }
            Completion::Fail => self.ops[slot] = None,
            // Unknown outcome: stays as invoked, with no return.
            Completion::Info => {}
        }
        Ok(())
    }

    fn finish(self) -> Vec<Operation<I, O>> {
        self.ops.into_iter().flatten().collect()
    }
}

/// Splits off the first whitespace-separated token.
fn token(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    Some((&text[..end], &text[end..]))
}

fn int(what: &'static str, text: &str) -> Result<i64, Problem> {
    text.parse().map_err(|_| Problem::Bad {
        what,
        found: text.to_string(),
        expected: "an integer",
    })
}

fn nil_or_int(what: &'static str, text: &str) -> Result<Option<i64>, Problem> {
    if text == "nil" {
        Ok(None)
    } else {
        int(what, text).map(Some)
    }
}

/// `[a b]`.
fn pair(text: &str) -> Result<(i64, i64), Problem> {
    let bad = || Problem::Bad {
        what: "cas value",
        found: text.to_string(),
        expected: "[expected new]",
    };
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(bad)?;
    let mut parts = inner.split_whitespace();
    let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    Ok((int("cas value", a)?, int("cas value", b)?))
}

fn function(text: &str) -> Result<&'static str, Problem> {
    match text {
        ":read" => Ok(":read"),
        ":write" => Ok(":write"),
        ":cas" => Ok(":cas"),
        _ => Err(Problem::Bad {
            what: "function",
            found: text.to_string(),
            expected: ":read, :write or :cas",
        }),
    }
}

/// Reads a Jepsen etcd log: lines `INFO  jepsen.util - <process> <type> <f> <value>` (fields
/// separated by tabs or spaces). Lines without `jepsen.util - ` are noise and skipped, as are the
/// nemesis's (its process is a keyword). Reads answer `nil` or an integer, writes write an
/// integer, `:cas [a b]` sets `b` if the value is `a` (`:ok` = swapped). A `:fail` of any
/// operation means it did not take effect, so it is dropped, as Knossos does.
pub fn parse_jepsen_register(text: &str) -> Result<Vec<RegisterOperation>, ParseError> {
    let mut assembler = Assembler::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let Some((_, rest)) = raw.split_once("jepsen.util - ") else {
            continue;
        };
        let error = |problem| ParseError {
            line,
            text: raw.to_string(),
            problem,
        };
        let (process, rest) = token(rest).ok_or_else(|| error(Problem::Missing("process")))?;
        if process.starts_with(':') {
            continue;
        }
        let process: u64 = process.parse().map_err(|_| {
            error(Problem::Bad {
                what: "process",
                found: process.to_string(),
                expected: "a number",
            })
        })?;
        let (kind, rest) = token(rest).ok_or_else(|| error(Problem::Missing("type")))?;
        let (f, rest) = token(rest).ok_or_else(|| error(Problem::Missing("function")))?;
        let f = function(f).map_err(error)?;
        let value = rest.trim();
        if value.is_empty() {
            return Err(error(Problem::Missing("value")));
        }
        let result = match kind {
            ":invoke" => {
                let input = match f {
                    ":read" => {
                        if value != "nil" {
                            return Err(error(Problem::Bad {
                                what: "read invocation",
                                found: value.to_string(),
                                expected: "nil",
                            }));
                        }
                        RegisterInput::Read
                    }
                    ":write" => RegisterInput::Write(int("write value", value).map_err(error)?),
                    _ => {
                        let (expected, new) = pair(value).map_err(error)?;
                        RegisterInput::Cas { expected, new }
                    }
                };
                assembler.invoke(process, line, f, input)
            }
            ":ok" => jepsen_ok(&assembler, process, f, value)
                .and_then(|output| assembler.complete(process, line, f, Completion::Ok(output))),
            ":fail" => assembler.complete(process, line, f, Completion::Fail),
            ":info" => assembler.complete(process, line, f, Completion::Info),
            _ => Err(Problem::Bad {
                what: "type",
                found: kind.to_string(),
                expected: ":invoke, :ok, :fail or :info",
            }),
        };
        result.map_err(error)?;
    }
    Ok(assembler.finish())
}

/// The output of a Jepsen `:ok`, checked against the invocation it completes.
fn jepsen_ok(
    assembler: &Assembler<RegisterInput<i64>, RegisterOutput<i64>>,
    process: u64,
    f: &'static str,
    value: &str,
) -> Result<RegisterOutput<i64>, Problem> {
    let (slot, line) = assembler.running(process, f)?;
    let other = |invoked: String| Problem::OtherValue {
        completed: value.to_string(),
        invoked,
        line,
    };
    match assembler.input(slot) {
        RegisterInput::Read => Ok(RegisterOutput::Read(nil_or_int("read value", value)?)),
        RegisterInput::Write(v) => {
            if int("write value", value)? != *v {
                return Err(other(v.to_string()));
            }
            Ok(RegisterOutput::Write)
        }
        RegisterInput::Cas { expected, new } => {
            if pair(value)? != (*expected, *new) {
                return Err(other(format!("[{expected} {new}]")));
            }
            Ok(RegisterOutput::Cas { swapped: true })
        }
    }
}

/// An EDN value as the kv logs use them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Edn {
    Nil,
    Int(i64),
    Keyword(String),
    Str(String),
}

/// Reads one flat EDN map `{:a 1, :b :c, :d "e"}`.
fn edn_map(text: &str) -> Result<BTreeMap<String, Edn>, Problem> {
    let bad = |expected: &'static str, found: &str| Problem::Bad {
        what: "EDN",
        found: found.chars().take(20).collect(),
        expected,
    };
    let mut rest = text
        .trim()
        .strip_prefix('{')
        .ok_or_else(|| bad("a map starting with {", text))?;
    let mut map = BTreeMap::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            return Err(Problem::Missing("the closing } of the map"));
        }
        if let Some(after) = rest.strip_prefix('}') {
            if !after.trim().is_empty() {
                return Err(bad("the end of the line after }", after));
            }
            return Ok(map);
        }
        let after_colon = rest
            .strip_prefix(':')
            .ok_or_else(|| bad("a keyword key", rest))?;
        let end = after_colon
            .find(|c: char| c.is_whitespace() || c == ',' || c == '}')
            .unwrap_or(after_colon.len());
        let key = &after_colon[..end];
        if key.is_empty() {
            return Err(bad("a keyword key", rest));
        }
        rest = after_colon[end..].trim_start();
        let value;
        if let Some(string) = rest.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = string.char_indices();
            let close = loop {
                match chars.next() {
                    None => return Err(bad("a closing quote", rest)),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => out.push('\n'),
                        Some((_, 't')) => out.push('\t'),
                        Some((_, c @ ('"' | '\\'))) => out.push(c),
                        _ => return Err(bad("a known string escape", rest)),
                    },
                    Some((_, c)) => out.push(c),
                }
            };
            value = Edn::Str(out);
            rest = &string[close + 1..];
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == ',' || c == '}')
                .unwrap_or(rest.len());
            let atom = &rest[..end];
            value = if atom == "nil" {
                Edn::Nil
            } else if let Some(keyword) = atom.strip_prefix(':') {
                Edn::Keyword(keyword.to_string())
            } else if let Ok(n) = atom.parse() {
                Edn::Int(n)
            } else {
                return Err(bad("nil, an integer, a keyword or a string", rest));
            };
            rest = &rest[end..];
        }
        map.insert(key.to_string(), value);
    }
}

/// Reads a kv log: one EDN map per line, `{:process 0, :type :invoke, :f :append, :key "0",
/// :value "x 0 0 y"}`; f is `:get` (value `nil` on invoke, the value read on `:ok`), `:put` or
/// `:append`. Blank lines are skipped, other fields ignored, nemesis events (a keyword process)
/// skipped. Everything else must be such a map.
pub fn parse_kv(text: &str) -> Result<Vec<KvOperation>, ParseError> {
    let mut assembler = Assembler::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let error = |problem| ParseError {
            line,
            text: raw.to_string(),
            problem,
        };
        let map = edn_map(raw).map_err(error)?;
        let field = |name: &'static str| map.get(name).ok_or(Problem::Missing(name));
        let process = match field("process").map_err(error)? {
            Edn::Int(p) if *p >= 0 => *p as u64,
            Edn::Keyword(_) => continue,
            other => {
                return Err(error(Problem::Bad {
                    what: ":process",
                    found: format!("{other:?}"),
                    expected: "a number",
                }))
            }
        };
        let keyword = |name: &'static str| match field(name)? {
            Edn::Keyword(k) => Ok(k.as_str()),
            other => Err(Problem::Bad {
                what: name,
                found: format!("{other:?}"),
                expected: "a keyword",
            }),
        };
        let string = |name: &'static str| match field(name)? {
            Edn::Str(s) => Ok(s.clone()),
            other => Err(Problem::Bad {
                what: name,
                found: format!("{other:?}"),
                expected: "a string",
            }),
        };
        let f = match keyword("f").map_err(error)? {
            "get" => ":get",
            "put" => ":put",
            "append" => ":append",
            other => {
                return Err(error(Problem::Bad {
                    what: ":f",
                    found: other.to_string(),
                    expected: ":get, :put or :append",
                }))
            }
        };
        let result = match keyword("type").map_err(error)? {
            "invoke" => {
                let key = string("key").map_err(error)?;
                let op = match f {
                    ":get" => KvOp::Get,
                    ":put" => KvOp::Put(string("value").map_err(error)?),
                    _ => KvOp::Append(string("value").map_err(error)?),
                };
                assembler.invoke(process, line, f, KvInput { key, op })
            }
            "ok" => assembler
                .running(process, f)
                .and_then(|(slot, invoked_line)| {
                    let output = match &assembler.input(slot).op {
                        KvOp::Get => KvOutput::Value(string("value")?),
                        KvOp::Put(value) | KvOp::Append(value) => {
                            if let Ok(echo) = string("value") {
                                if echo != *value {
                                    return Err(Problem::OtherValue {
                                        completed: echo,
                                        invoked: value.clone(),
                                        line: invoked_line,
                                    });
                                }
                            }
                            KvOutput::Done
                        }
                    };
                    assembler.complete(process, line, f, Completion::Ok(output))
                }),
            "fail" => assembler.complete(process, line, f, Completion::Fail),
            "info" => assembler.complete(process, line, f, Completion::Info),
            other => Err(Problem::Bad {
                what: ":type",
                found: other.to_string(),
                expected: ":invoke, :ok, :fail or :info",
            }),
        };
        result.map_err(error)?;
    }
    Ok(assembler.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jepsen_lines_pair_up_per_process() {
        let log = "\
noise before the history
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 1   :invoke :cas    [1 2]
INFO  jepsen.util - 2\t:invoke\t:write\t4
INFO  jepsen.util - :nemesis\t:info\t:start\tnil
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 1   :fail   :cas    [1 2]
INFO  jepsen.util - 2\t:info\t:write\t:timed-out
INFO  jepsen.util - 3\t:invoke\t:write\t1
INFO  jepsen.util - 4\t:invoke\t:cas\t[1 5]
INFO  jepsen.util - 4\t:ok\t:cas\t[1 5]
";
        let ops = parse_jepsen_register(log).unwrap();
        assert_eq!(
            ops,
            vec![
                Operation::completed(0, 2, 6, RegisterInput::Read, RegisterOutput::Read(None)),
                Operation::unknown(2, 4, RegisterInput::Write(4)),
                Operation::unknown(3, 9, RegisterInput::Write(1)),
                Operation::completed(
                    4,
                    10,
                    11,
                    RegisterInput::Cas {
                        expected: 1,
                        new: 5
                    },
                    RegisterOutput::Cas { swapped: true }
                ),
            ]
        );
    }

    #[test]
    fn malformed_jepsen_lines_are_named() {
        const WRITE_3: &str = "INFO  jepsen.util - 1\t:invoke\t:write\t3\n";
        let cases = [
            (
                "INFO  jepsen.util - x\t:invoke\t:read\tnil",
                "line 1: process \"x\" is not a number",
            ),
            (
                "INFO  jepsen.util - 1\t:invoke\t:frob\tnil",
                "line 1: function \":frob\"",
            ),
            (
                "INFO  jepsen.util - 1\t:ok\t:read\t3",
                "line 1: process 1 completes an operation it",
            ),
            (
                &format!("{WRITE_3}INFO  jepsen.util - 1\t:invoke\t:read\tnil"),
                "line 2: process 1 invokes while its operation of line 1",
            ),
            (
                &format!("{WRITE_3}INFO  jepsen.util - 1\t:ok\t:read\t3"),
                "line 2: process 1 completes :read but invoked :write",
            ),
            (
                &format!("{WRITE_3}INFO  jepsen.util - 1\t:ok\t:write\t4"),
                "line 2: the completion's value \"4\" differs",
            ),
            (
                "INFO  jepsen.util - 1\t:invoke\t:cas\t[1]",
                "line 1: cas value \"[1]\" is not [expected new]",
            ),
            ("INFO  jepsen.util - 1\t:invoke", "line 1: missing function"),
            (
                "INFO  jepsen.util - 1\t:begin\t:read\tnil",
                "line 1: type \":begin\"",
            ),
        ];
        for (log, expected) in cases {
            let message = parse_jepsen_register(log).unwrap_err().to_string();
            assert!(
                message.starts_with(expected),
                "{message:?} should start with {expected:?}"
            );
        }
    }

    #[test]
    fn kv_maps_pair_up_per_process() {
        let log = r#"{:process 0, :type :invoke, :f :append, :key "0", :value "x \"0\" y"}
{:process 1, :type :invoke, :f :get, :key "0", :value nil}

{:process 0, :type :ok, :f :append, :key "0", :value "x \"0\" y"}
{:process 1, :type :ok, :f :get, :key "0", :value ""}
{:process 2, :type :invoke, :f :put, :key "1", :value "z", :time 99}
{:process :nemesis, :type :info, :f :start, :value nil}
"#;
        let ops = parse_kv(log).unwrap();
        let input = |key: &str, op| KvInput {
            key: key.to_string(),
            op,
        };
        assert_eq!(
            ops,
            vec![
                Operation::completed(
                    0,
                    1,
                    4,
                    input("0", KvOp::Append("x \"0\" y".into())),
                    KvOutput::Done
                ),
                Operation::completed(
                    1,
                    2,
                    5,
                    input("0", KvOp::Get),
                    KvOutput::Value(String::new())
                ),
                Operation::unknown(2, 6, input("1", KvOp::Put("z".into()))),
            ]
        );
    }

    #[test]
    fn malformed_kv_lines_are_named() {
        let cases = [
            (
                "{:process 0, :type :invoke, :f :get, :key \"0\"",
                "line 1: missing the closing } of the map",
            ),
            (
                "{:process 0, :type :invoke, :f :get, :key \"0}",
                "line 1: EDN",
            ),
            (
                "{:process 0, :type :invoke, :f :get}",
                "line 1: missing key",
            ),
            (
                "{:process 0, :type :invoke, :f :cas, :key \"0\"}",
                "line 1: :f \"cas\"",
            ),
            (
                "{:process 0, :type :ok, :f :get, :key \"0\", :value \"\"}",
                "line 1: process 0 completes",
            ),
            ("[1 2]", "line 1: EDN \"[1 2]\" is not a map"),
        ];
        for (log, expected) in cases {
            let message = parse_kv(log).unwrap_err().to_string();
            assert!(
                message.starts_with(expected),
                "{message:?} should start with {expected:?}"
            );
        }
    }
}
