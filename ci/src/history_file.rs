//! `faultline check FILE`: which kind of history a file holds, told from its content, and the
//! verdict on the histories of the shared corpus's formats.
//!
//! Three formats are read: Faultline's own history (JSON Lines with a `faultline-history`
//! header, judged by the etcd checkers in `crate::check`), a Jepsen etcd log (one register:
//! lines `INFO  jepsen.util - <process> <type> <f> <value>`) and a porcupine kv log (one EDN map
//! per line, `{:process 0, :type :invoke, :f :get, :key "1", ...}`); the last two are judged for
//! linearizability against the register and kv models, with the same budget.
//!
//! It must never panic on a file: whatever it cannot read is an error that names the line.

use faultline_checkers::corpus::{parse_jepsen_register, parse_kv, KvOperation, RegisterOperation};
use faultline_checkers::history::History;
use faultline_checkers::kv::Kv;
use faultline_checkers::linearizability::{self, Model, Operation, Verdict};
use faultline_checkers::register::Register;

use crate::check::{CheckOptions, CheckerResult, RunVerdict, Status};

/// What `faultline check` found in a file.
#[derive(Debug)]
pub enum HistoryFile {
    /// Faultline's history format.
    Faultline(History),
    /// A Jepsen etcd log: one register.
    JepsenEtcd(Vec<RegisterOperation>),
    /// A porcupine kv log: a key-value map.
    PorcupineKv(Vec<KvOperation>),
}

/// The formats, as told from a file's first lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Faultline,
    JepsenEtcd,
    PorcupineKv,
}

impl Format {
    pub fn name(&self) -> &'static str {
        match self {
            Format::Faultline => "Faultline history",
            Format::JepsenEtcd => "Jepsen etcd log",
            Format::PorcupineKv => "porcupine kv log",
        }
    }
}

/// Why a file holds no history to check. Every variant about the content names a line.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("empty: there is no history to check")]
    Empty,
    #[error("line {line}: not UTF-8 text")]
    NotText { line: usize },
    #[error(
        "line {line}: a watch history (format faultline-watches): check it with --watches beside \
         the client history it belongs to"
    )]
    WatchHistory { line: usize },
    #[error(
        "line {line}: not a history this command reads: {text:?}; expected a Faultline history \
         (JSON Lines with a header {{\"format\":\"faultline-history\",\"version\":1}}), a Jepsen \
         etcd log (lines \"INFO  jepsen.util - <process> <type> <f> <value>\") or a porcupine kv \
         log (EDN maps such as {{:process 0, :type :invoke, :f :get, :key \"1\"}})"
    )]
    Unrecognised { line: usize, text: String },
    /// The format was recognised; the message names the line at fault.
    #[error("{format}: {message}", format = .format.name())]
    Malformed { format: Format, message: String },
}

/// How long a line an error quotes at most.
const QUOTED_CHARS_MAX: usize = 120;

/// Tells the format from the first non-blank line: a JSON object is a Faultline history (or a
/// watch history, refused with a hint), an EDN map (`{:`) a kv log; a Jepsen log may open with
/// lines of other loggers, so any `jepsen.util - ` line makes it one.
pub fn detect(text: &str) -> Result<Format, FileError> {
    let Some((n, first)) = text
        .lines()
        .enumerate()
        .find(|(_, line)| !line.trim().is_empty())
    else {
        return Err(FileError::Empty);
    };
    let line = n + 1;
    let first = first.trim_start_matches('\u{feff}').trim();
    if let Some(map) = first.strip_prefix('{') {
        if map.trim_start().starts_with(':') {
            return Ok(Format::PorcupineKv);
        }
        let format = serde_json::from_str::<serde_json::Value>(first)
            .ok()
            .and_then(|header| header.get("format").cloned());
        if format.as_ref().and_then(|f| f.as_str()) == Some("faultline-watches") {
            return Err(FileError::WatchHistory { line });
        }
        // Any other JSON is read as a Faultline history, whose header check says what is wrong.
        return Ok(Format::Faultline);
    }
    if text.lines().any(|l| l.contains("jepsen.util - ")) {
        return Ok(Format::JepsenEtcd);
    }
    Err(FileError::Unrecognised {
        line,
        text: first.chars().take(QUOTED_CHARS_MAX).collect(),
    })
}

/// Reads a file's bytes as whichever history they hold.
pub fn read(bytes: &[u8]) -> Result<HistoryFile, FileError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        FileError::NotText {
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    let format = detect(text)?;
    let malformed = |message: String| FileError::Malformed { format, message };
    Ok(match format {
        Format::Faultline => HistoryFile::Faultline(
            History::read_from(text.as_bytes()).map_err(|e| malformed(e.to_string()))?,
        ),
        Format::JepsenEtcd => HistoryFile::JepsenEtcd(
            parse_jepsen_register(text).map_err(|e| malformed(e.to_string()))?,
        ),
        Format::PorcupineKv => {
            HistoryFile::PorcupineKv(parse_kv(text).map_err(|e| malformed(e.to_string()))?)
        }
    })
}

/// Judges a history of a corpus format for linearizability against its model (the kv map
/// partitioned by key), within the options' budget. `None` for a Faultline history, which
/// `crate::check::check_history` judges.
pub fn judge_corpus(file: &HistoryFile, options: &CheckOptions) -> Option<RunVerdict> {
    let (verdict, header, model) = match file {
        HistoryFile::Faultline(_) => return None,
        HistoryFile::JepsenEtcd(ops) => (
            linearizable(&Register::<i64>::new(), ops, options),
            header(Format::JepsenEtcd, ops),
            "register (one etcd key: read, write, cas)",
        ),
        HistoryFile::PorcupineKv(ops) => (
            linearizable(&Kv::default(), ops, options),
            header(Format::PorcupineKv, ops),
            "kv map (get, put, append), each key on its own",
        ),
    };
    let mut run = RunVerdict::default();
    run.header.push(header);
    run.push(verdict_result(&verdict, model));
    Some(run)
}

fn linearizable<M: Model>(
    model: &M,
    ops: &[Operation<M::Input, M::Output>],
    options: &CheckOptions,
) -> Verdict {
    linearizability::check(model, ops, &options.budget())
}

/// `Jepsen etcd log: 85 operations (80 returned, 5 of unknown outcome)`.
fn header<I, O>(format: Format, ops: &[Operation<I, O>]) -> String {
    let unknown = ops.iter().filter(|op| op.is_unknown()).count();
    format!(
        "history: {}, {} operations ({} returned, {unknown} of unknown outcome; failed ones \
         dropped)",
        format.name(),
        ops.len(),
        ops.len() - unknown
    )
}

fn verdict_result(verdict: &Verdict, model: &str) -> CheckerResult {
    let status = match verdict {
        Verdict::Linearizable(_) => Status::Pass,
        Verdict::NotLinearizable(_) => Status::Violation(verdict.render()),
        Verdict::Unknown(_) => Status::Unknown(verdict.render()),
    };
    let summary = match verdict {
        Verdict::Linearizable(witness) => format!(
            "{model}: {} partitions, {} states explored",
            witness.order.len(),
            witness.states_explored
        ),
        Verdict::NotLinearizable(violation) => format!(
            "{model}: partition {} of {} fails",
            violation.partition + 1,
            violation.partitions_total
        ),
        Verdict::Unknown(undecided) => format!(
            "{model}: {} of {} partitions decided",
            undecided.partitions_checked, undecided.partitions_total
        ),
    };
    CheckerResult {
        checker: "linearizability",
        status,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_from_the_first_lines() {
        let faultline = "{\"format\":\"faultline-history\",\"version\":1}\n";
        assert_eq!(detect(faultline).unwrap(), Format::Faultline);
        assert_eq!(
            detect(&format!("\n\n{faultline}")).unwrap(),
            Format::Faultline
        );
        let kv = "{:process 0, :type :invoke, :f :get, :key \"1\", :value nil}\n";
        assert_eq!(detect(kv).unwrap(), Format::PorcupineKv);
        let jepsen = "INFO  jepsen.core - starting\nINFO  jepsen.util - 0\t:invoke\t:read\tnil\n";
        assert_eq!(detect(jepsen).unwrap(), Format::JepsenEtcd);
    }

    #[test]
    fn what_is_no_history_is_refused_naming_the_line() {
        assert!(matches!(detect(""), Err(FileError::Empty)));
        assert!(matches!(detect(" \n\t\n"), Err(FileError::Empty)));
        let error = detect("\nhello world\n").unwrap_err();
        assert!(
            matches!(error, FileError::Unrecognised { line: 2, .. }),
            "{error}"
        );
        let watches = "{\"format\":\"faultline-watches\",\"version\":1}\n";
        assert!(matches!(
            detect(watches),
            Err(FileError::WatchHistory { line: 1 })
        ));
        let error = read(b"{:process 0}\n\xff\n").unwrap_err();
        assert!(matches!(error, FileError::NotText { line: 2 }), "{error}");
        let error = read(b"{\"format\":\"faultline-history\",\"version\":9}\n").unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
    }
}
