//! A run's files, and the order they are written in: everything the run produced (history,
//! watch streams, schedule or faults, trace, config) before any checker starts, the report once
//! the checkers are done. A checker that panics, runs out of memory or is killed then leaves
//! the run on disk to replay and check again with `faultline check`.
//!
//! It must never judge anything itself, nor write the report before the verdict it holds.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::check::RunVerdict;

/// The name of the file that holds the report, the only artifact written after checking.
pub const REPORT_FILE: &str = "report.txt";

/// Writes a run's files into one directory and lists what it wrote.
#[derive(Debug)]
pub struct ArtifactWriter {
    dir: PathBuf,
    written: Vec<PathBuf>,
}

impl ArtifactWriter {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(ArtifactWriter {
            dir: dir.to_path_buf(),
            written: Vec::new(),
        })
    }

    /// `name`, written by `write` (a history or watch streams in JSON Lines).
    pub fn lines(
        &mut self,
        name: &str,
        write: impl FnOnce(std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let path = self.dir.join(name);
        write(std::io::BufWriter::new(std::fs::File::create(&path)?))?;
        self.written.push(path);
        Ok(())
    }

    /// `name` as pretty JSON.
    pub fn json<T: Serialize>(&mut self, name: &str, value: &T) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
        self.text(name, &text)
    }

    pub fn text(&mut self, name: &str, text: &str) -> std::io::Result<()> {
        let path = self.dir.join(name);
        std::fs::write(&path, text)?;
        self.written.push(path);
        Ok(())
    }

    pub fn finish(self) -> Vec<PathBuf> {
        self.written
    }
}

/// A verdict, its report, and what became of the run's files.
#[derive(Debug)]
pub struct Judged {
    pub verdict: RunVerdict,
    pub report: String,
    /// `None` without a directory; else every file written, or why writing stopped (then the
    /// report was not written: a directory without it holds an unjudged run).
    pub written: Option<std::io::Result<Vec<PathBuf>>>,
}

/// Writes the run's output into `dir` (if any) with `write_output`, then judges it, then
/// writes the report as [`REPORT_FILE`]. When writing the output fails, the run is judged all
/// the same (its verdict is printed) and the error is returned in `written`.
pub fn judge_after_writing(
    dir: Option<&Path>,
    write_output: impl FnOnce(&mut ArtifactWriter) -> std::io::Result<()>,
    judge: impl FnOnce() -> RunVerdict,
) -> Judged {
    let writer = dir.map(|dir| {
        let mut writer = ArtifactWriter::new(dir)?;
        write_output(&mut writer)?;
        Ok(writer)
    });
    let verdict = judge();
    let report = verdict.render();
    let written = writer.map(|writer: std::io::Result<ArtifactWriter>| {
        let mut writer = writer?;
        writer.text(REPORT_FILE, &report)?;
        Ok(writer.finish())
    });
    Judged {
        verdict,
        report,
        written,
    }
}
