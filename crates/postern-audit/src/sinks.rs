//! The sinks shipped in the binary besides the state store's table: a JSON Lines file with
//! size and age rotation, and stdout.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use postern_model::{AuditRecord, AuditSink};

fn lines(batch: &[&AuditRecord]) -> String {
    let mut text = String::new();
    for record in batch {
        text.push_str(record.json());
        text.push('\n');
    }
    text
}

/// Appends JSON lines to a file, rotated to `<path>.<UTC time>` when it reaches
/// `max_bytes` or `max_age`, keeping `keep` rotated files.
pub struct JsonlFileSink {
    path: PathBuf,
    max_bytes: u64,
    max_age: Duration,
    keep: usize,
    /// The open file, its size and when it was started; dropped after a failure so the
    /// next write opens it again.
    file: Option<(File, u64, SystemTime)>,
}

impl JsonlFileSink {
    pub fn new(path: PathBuf, max_bytes: u64, max_age: Duration, keep: usize) -> JsonlFileSink {
        JsonlFileSink {
            path,
            max_bytes,
            max_age,
            keep,
            file: None,
        }
    }

    fn open(&self) -> std::io::Result<(File, u64, SystemTime)> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let meta = file.metadata()?;
        let started = meta
            .created()
            .or_else(|_| meta.modified())
            .unwrap_or(SystemTime::now());
        Ok((file, meta.len(), started))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let stamp = postern_model::rfc3339_millis(postern_model::unix_millis(SystemTime::now()))
            .replace(':', "");
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        std::fs::rename(
            &self.path,
            self.path.with_file_name(format!("{name}.{stamp}")),
        )?;
        let Some(dir) = self.path.parent() else {
            return Ok(());
        };
        let dir = if dir.as_os_str().is_empty() {
            std::path::Path::new(".")
        } else {
            dir
        };
        let prefix = format!("{name}.");
        let mut rotated: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        // The stamps sort as text in time order.
        rotated.sort();
        let excess = rotated.len().saturating_sub(self.keep);
        for old in &rotated[..excess] {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }
}

impl AuditSink for JsonlFileSink {
    fn name(&self) -> &str {
        "file"
    }

    fn write(&mut self, batch: &[&AuditRecord]) -> Result<(), String> {
        let path = self.path.clone();
        let failed = |e: std::io::Error| format!("{}: {e}", path.display());
        if let Some((_, size, started)) = &self.file {
            let old = started.elapsed().unwrap_or_default() >= self.max_age;
            if *size >= self.max_bytes || old {
                self.rotate().map_err(failed)?;
            }
        }
        if self.file.is_none() {
            self.file = Some(self.open().map_err(failed)?);
        }
        let text = lines(batch);
        let result = match &mut self.file {
            Some((file, size, _)) => file.write_all(text.as_bytes()).map(|()| {
                *size += text.len() as u64;
            }),
            None => Ok(()),
        };
        if let Err(e) = result {
            self.file = None;
            return Err(failed(e));
        }
        Ok(())
    }
}

/// Writes JSON lines to standard output.
pub struct StdoutSink;

impl AuditSink for StdoutSink {
    fn name(&self) -> &str {
        "stdout"
    }

    fn write(&mut self, batch: &[&AuditRecord]) -> Result<(), String> {
        let mut out = std::io::stdout().lock();
        out.write_all(lines(batch).as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))
    }
}
