//! A sink's on-disk buffer: records that could not be written (the sink failed, or its
//! queue was full) are appended as JSON lines and replayed, in order, when the sink works
//! again. All spill files share one byte budget; past it records are dropped and counted.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use postern_model::AuditRecord;

/// Largest chunk replayed at once.
const REPLAY_CHUNK: usize = 1024;

pub(crate) struct Spill {
    path: PathBuf,
    /// Bytes in the file, and how far replay has got.
    len: u64,
    replayed: u64,
    /// Bytes in all spill files, against `budget`.
    total: Arc<AtomicU64>,
    budget: u64,
}

impl Spill {
    /// Opens (or finds) the spill file of one sink; what an earlier run left is replayed.
    pub fn open(path: PathBuf, total: Arc<AtomicU64>, budget: u64) -> Spill {
        let len = std::fs::metadata(&path).map_or(0, |m| m.len());
        total.fetch_add(len, Ordering::Relaxed);
        Spill {
            path,
            len,
            replayed: 0,
            total,
            budget,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.replayed >= self.len
    }

    /// Appends records; returns how many did not fit in the budget (or could not be
    /// written at all) and were dropped.
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = &'a AuditRecord>) -> usize {
        let mut text = String::new();
        let mut dropped = 0;
        let mut room = self
            .budget
            .saturating_sub(self.total.load(Ordering::Relaxed));
        for record in records {
            let line = record.json();
            let size = line.len() as u64 + 1;
            if size > room {
                dropped += 1;
                continue;
            }
            room -= size;
            text.push_str(line);
            text.push('\n');
        }
        if text.is_empty() {
            return dropped;
        }
        let lines = text.lines().count();
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        match written {
            Ok(()) => {
                self.len += text.len() as u64;
                self.total.fetch_add(text.len() as u64, Ordering::Relaxed);
                dropped
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "audit spill file unwritable; events dropped");
                dropped + lines
            }
        }
    }

    /// The next records to replay, and the offset that follows them.
    pub fn next_chunk(&self) -> std::io::Result<(Vec<AuditRecord>, u64)> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.replayed))?;
        let mut reader = BufReader::new(file);
        let mut records = Vec::new();
        let mut offset = self.replayed;
        let mut line = String::new();
        while records.len() < REPLAY_CHUNK {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 || !line.ends_with('\n') {
                break;
            }
            offset += read as u64;
            // A line that does not decode (torn by a crash) is skipped, not replayed.
            if let Ok(record) = AuditRecord::from_json(line.trim_end()) {
                records.push(record);
            }
        }
        Ok((records, offset))
    }

    /// Replay is stuck on a torn last line (a crash mid-append): drop it.
    pub fn skip_rest(&mut self) {
        self.replayed_to(self.len);
    }

    /// Records up to `offset` reached their sink; once all have, the file starts over.
    pub fn replayed_to(&mut self, offset: u64) {
        self.replayed = offset;
        if self.replayed >= self.len {
            if let Err(e) = File::create(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot empty the audit spill file");
                return;
            }
            self.total.fetch_sub(self.len, Ordering::Relaxed);
            self.len = 0;
            self.replayed = 0;
        }
    }
}
