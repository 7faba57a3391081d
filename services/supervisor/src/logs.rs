//! Per-service log files: each child's stdout and stderr, line by line, size-capped by rotation
//! to `<name>.log.1`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// An append-only log file that rotates once past `max_bytes`.
#[derive(Clone)]
pub struct LogFile {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
}

struct Inner {
    file: Option<File>,
    size: u64,
    max_bytes: u64,
}

impl LogFile {
    /// Opens (appending) `dir/<service>.log`.
    ///
    /// # Errors
    /// When the directory cannot be created or the file opened.
    pub fn open(dir: &Path, service: &str, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{service}.log"));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner {
                file: Some(file),
                size,
                max_bytes,
            })),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line (a newline is added).
    pub fn line(&self, line: &str) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if inner.size + line.len() as u64 + 1 > inner.max_bytes {
            inner.file = None;
            let rotated = self.path.with_extension("log.1");
            let _ = std::fs::rename(&self.path, rotated);
            inner.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .ok();
            inner.size = 0;
        }
        if let Some(f) = inner.file.as_mut() {
            if f.write_all(line.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
                .is_ok()
            {
                inner.size += line.len() as u64 + 1;
            }
        }
    }

    /// Copies `stream` into the log, line by line, until it ends.
    pub async fn pump(self, stream: impl AsyncRead + Unpin) {
        let mut lines = BufReader::new(stream).lines();
        loop {
            match lines.next_line().await {
                Ok(Some(l)) => self.line(&l),
                Ok(None) => return,
                Err(e) => {
                    self.line(&format!("[mingd] log stream error: {e}"));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFile::open(dir.path(), "svc", 4096).unwrap();
        let line = "x".repeat(99);
        for _ in 0..100 {
            log.line(&line);
        }
        let cur = std::fs::metadata(dir.path().join("svc.log")).unwrap().len();
        let old = std::fs::metadata(dir.path().join("svc.log.1"))
            .unwrap()
            .len();
        assert!(cur <= 4096 && old <= 4096 && old > 3000, "{cur} {old}");
    }
}
