//! The egress log: every byte that leaves the device is recorded *before* it leaves, in an
//! append-only file of JSON lines, each holding the SHA-256 of the line before it, fsync'd on
//! every append. A separate head file holds the last sequence number and hash, so that cutting
//! lines off the end is detected too. [`verify`] finds any edit, removal or reordering.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash that stands before the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// 1, 2, 3… with no gaps.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// `sending` (written before the bytes leave), `received`, `failed`.
    pub event: String,
    pub ticket: String,
    pub destination: String,
    /// SHA-256 of the body sent (for `sending`) or received (for `received`).
    pub body_sha256: String,
    pub body_size: u64,
    /// The approval this send rests on (the approved payload hash), for `sending`.
    #[serde(default)]
    pub approval: String,
    #[serde(default)]
    pub detail: String,
    /// Hash of the previous line ([`GENESIS`] for the first).
    pub prev: String,
    /// SHA-256 over `prev` and every field above, in this order.
    pub hash: String,
}

impl Entry {
    fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.prev.as_str(),
            &self.seq.to_string(),
            &self.time_ms.to_string(),
            &self.event,
            &self.ticket,
            &self.destination,
            &self.body_sha256,
            &self.body_size.to_string(),
            &self.approval,
            &self.detail,
        ] {
            // Length-prefixed, so that moving text between fields changes the hash.
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize())
    }
}

/// What an entry says, before it is chained.
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    pub event: String,
    pub ticket: String,
    pub destination: String,
    pub body_sha256: String,
    pub body_size: u64,
    pub approval: String,
    pub detail: String,
}

/// Why the log cannot be trusted (or read).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyEgressError {
    #[error("line {line}: not a log entry: {reason}")]
    Unreadable { line: usize, reason: String },
    #[error("line {line}: sequence {found}, expected {expected} (a line was removed or moved)")]
    Sequence {
        line: usize,
        expected: u64,
        found: u64,
    },
    #[error(
        "line {line}: does not follow the line before it (a line was removed, moved or edited)"
    )]
    Chain { line: usize },
    #[error("line {line}: its content does not match its hash (the line was edited)")]
    Edited { line: usize },
    #[error("the log ends at sequence {found} but its head says {expected} (lines were cut off the end)")]
    Truncated { expected: u64, found: u64 },
    #[error("{0}")]
    Io(String),
}

/// The open log.
pub struct EgressLog {
    path: PathBuf,
    file: File,
    last_seq: u64,
    last_hash: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn head_path(path: &Path) -> PathBuf {
    path.with_extension("head")
}

impl EgressLog {
    /// Opens (or creates) the log, verifying what is there first: appending to a log that was
    /// tampered with would hide it.
    ///
    /// # Errors
    /// The verification error, or an I/O error.
    pub fn open(path: &Path) -> Result<Self, VerifyEgressError> {
        let (last_seq, last_hash) = if path.exists() {
            verify(path)?
        } else {
            (0, GENESIS.to_string())
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| VerifyEgressError::Io(e.to_string()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| VerifyEgressError::Io(format!("open {}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            last_seq,
            last_hash,
        })
    }

    /// Appends an entry and makes it durable (fsync of the log, then of the head) before
    /// returning it.
    ///
    /// # Errors
    /// I/O errors: then nothing must be sent.
    pub fn append(&mut self, new: NewEntry, time_ms: u64) -> std::io::Result<Entry> {
        let mut e = Entry {
            seq: self.last_seq + 1,
            time_ms,
            event: new.event,
            ticket: new.ticket,
            destination: new.destination,
            body_sha256: new.body_sha256,
            body_size: new.body_size,
            approval: new.approval,
            detail: new.detail,
            prev: self.last_hash.clone(),
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        let mut line = serde_json::to_string(&e).map_err(std::io::Error::other)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        let head = head_path(&self.path);
        let tmp = head.with_extension("head.tmp");
        {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{} {}", e.seq, e.hash)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &head)?;
        self.last_seq = e.seq;
        self.last_hash = e.hash.clone();
        Ok(e)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every entry (for `ming egress log`), without verifying.
///
/// # Errors
/// I/O errors and unreadable lines.
pub fn read(path: &Path) -> Result<Vec<Entry>, VerifyEgressError> {
    let f = File::open(path)
        .map_err(|e| VerifyEgressError::Io(format!("open {}: {e}", path.display())))?;
    BufReader::new(f)
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let l = l.map_err(|e| VerifyEgressError::Io(e.to_string()))?;
            serde_json::from_str(&l).map_err(|e| VerifyEgressError::Unreadable {
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}

/// Checks the whole chain and the head; returns the last sequence number and hash.
///
/// # Errors
/// The first problem found, with its line number.
pub fn verify(path: &Path) -> Result<(u64, String), VerifyEgressError> {
    let entries = read(path)?;
    let mut prev = GENESIS.to_string();
    for (i, e) in entries.iter().enumerate() {
        let line = i + 1;
        if e.seq != line as u64 {
            return Err(VerifyEgressError::Sequence {
                line,
                expected: line as u64,
                found: e.seq,
            });
        }
        if e.prev != prev {
            return Err(VerifyEgressError::Chain { line });
        }
        if e.compute_hash() != e.hash {
            return Err(VerifyEgressError::Edited { line });
        }
        prev = e.hash.clone();
    }
    let found = entries.len() as u64;
    if let Ok(head) = std::fs::read_to_string(head_path(path)) {
        let mut it = head.split_whitespace();
        let seq: u64 = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let hash = it.next().unwrap_or_default();
        if seq != found || (found > 0 && hash != prev) {
            return Err(VerifyEgressError::Truncated {
                expected: seq,
                found,
            });
        }
    } else if found > 0 {
        return Err(VerifyEgressError::Io(format!(
            "{} is missing",
            head_path(path).display()
        )));
    }
    Ok((found, prev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> NewEntry {
        NewEntry {
            event: "sending".into(),
            ticket: format!("t{i}"),
            destination: "https://api.example.com/v1/chat/completions".into(),
            body_sha256: sha256_hex(format!("body {i}").as_bytes()),
            body_size: 100 + i,
            approval: sha256_hex(format!("body {i}").as_bytes()),
            detail: String::new(),
        }
    }

    fn log_of(n: u64) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("egress.jsonl");
        let mut log = EgressLog::open(&path).unwrap();
        for i in 0..n {
            log.append(entry(i), 1_764_000_000_000 + i).unwrap();
        }
        (dir, path)
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write(path: &Path, lines: &[String]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn intact_log_verifies_and_reopens_where_it_ended() {
        let (_d, path) = log_of(5);
        assert_eq!(verify(&path).unwrap().0, 5);
        let mut log = EgressLog::open(&path).unwrap();
        assert_eq!(log.append(entry(9), 1).unwrap().seq, 6);
        assert_eq!(verify(&path).unwrap().0, 6);
    }

    #[test]
    fn an_edit_is_detected() {
        let (_d, path) = log_of(5);
        let mut l = lines(&path);
        l[2] = l[2].replace("\"body_size\":102", "\"body_size\":1");
        write(&path, &l);
        assert_eq!(
            verify(&path).unwrap_err(),
            VerifyEgressError::Edited { line: 3 }
        );
    }

    #[test]
    fn a_removed_line_is_detected() {
        let (_d, path) = log_of(5);
        let mut l = lines(&path);
        l.remove(1);
        write(&path, &l);
        assert!(matches!(
            verify(&path).unwrap_err(),
            VerifyEgressError::Sequence { line: 2, .. }
        ));
    }

    #[test]
    fn reordering_is_detected() {
        let (_d, path) = log_of(5);
        let mut l = lines(&path);
        l.swap(1, 3);
        write(&path, &l);
        assert!(verify(&path).is_err());
    }

    #[test]
    fn a_cut_tail_is_seen_and_a_tampered_log_is_not_appended_to() {
        let (_d, path) = log_of(5);
        let l = lines(&path);
        write(&path, &l[..4]);
        assert_eq!(
            verify(&path).unwrap_err(),
            VerifyEgressError::Truncated {
                expected: 5,
                found: 4
            }
        );
        assert!(EgressLog::open(&path).is_err());
    }

    #[test]
    fn garbage_is_reported_with_its_line() {
        let (_d, path) = log_of(2);
        let mut l = lines(&path);
        l.push("not json".into());
        write(&path, &l);
        assert!(matches!(
            verify(&path).unwrap_err(),
            VerifyEgressError::Unreadable { line: 3, .. }
        ));
    }
}
