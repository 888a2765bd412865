//! Reading the JSON Lines files the history formats share: a header line naming the format and
//! its version, then one record per line. Blank lines are skipped; every error names its line.

use std::collections::BTreeMap;
use std::io::BufRead;

use serde::Deserialize;

/// The header every format writes first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    format: String,
    version: u32,
    #[serde(default)]
    meta: BTreeMap<String, String>,
}

/// Why a file could not be read; each format turns it into its own error type.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    /// No line at all.
    Empty,
    Line {
        line: usize,
        message: String,
    },
}

/// A file's header meta, and every further non-blank line with its 1-based line number.
pub(crate) type Contents = (BTreeMap<String, String>, Vec<(usize, String)>);

/// Reads the header, checks it names `format` at `version`, and returns the contents after it.
pub(crate) fn read(input: impl BufRead, format: &str, version: u32) -> Result<Contents, ReadError> {
    let mut lines = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(ReadError::Io)?;
        if !line.trim().is_empty() {
            lines.push((n + 1, line));
        }
    }
    let mut lines = lines.into_iter();
    let (n, first) = lines.next().ok_or(ReadError::Empty)?;
    let fail = |message: String| ReadError::Line { line: n, message };
    let header: Header =
        serde_json::from_str(&first).map_err(|e| fail(format!("bad header: {e}")))?;
    if header.format != format {
        return Err(fail(format!(
            "format {:?} is not {format:?}",
            header.format
        )));
    }
    if header.version != version {
        return Err(fail(format!(
            "version {} is not supported (this reads version {version})",
            header.version
        )));
    }
    Ok((header.meta, lines.collect()))
}
