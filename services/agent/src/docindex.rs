//! The documents folder, indexed into memory: each text file is cut into passages that the
//! memory service embeds and keeps (kind `document`, source `documents`, tagged with the file's
//! path), so a question finds the passage that answers it by meaning, not only by its words.
//!
//! Only what changed is redone: `<data>/agent/documents-index.json` holds each indexed file's
//! size and modification time. A changed file's old passages are forgotten before its new ones
//! are kept; a file that went away loses its passages. The folder is only read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ming_bus::BusClient;
use ming_schemas::kinds;
use ming_schemas::memory::{
    Forget, Forgotten, MemoryFilter, MemoryKind, NewMemory, Remember, Remembered,
};
use serde::{Deserialize, Serialize};

/// The memories' source.
pub const SOURCE: &str = "documents";
/// Passage length (characters): well inside the embedding model's 256 tokens.
const CHUNK_CHARS: usize = 700;
/// Memories per `memory.remember` request.
const BATCH: usize = 64;

/// What is known of one indexed file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indexed {
    pub size: u64,
    pub modified_ms: u64,
    pub passages: usize,
}

/// The index's state on disk: relative path → what was indexed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub files: BTreeMap<String, Indexed>,
}

impl State {
    pub fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Written whole, then renamed over the old one.
    fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }
}

/// What an indexing pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub indexed: usize,
    pub passages: usize,
    pub unchanged: usize,
    pub removed: usize,
    /// Files that could not be indexed, with why.
    pub failed: Vec<String>,
}

impl Summary {
    pub fn text(&self) -> String {
        let mut s = format!(
            "Indexed {} document(s) into memory ({} passages); {} unchanged, {} removed.",
            self.indexed, self.passages, self.unchanged, self.removed
        );
        if !self.failed.is_empty() {
            s.push_str(&format!(
                " Not indexed: {}.",
                self.failed
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        s
    }
}

/// Cuts `text` into passages of at most about [`CHUNK_CHARS`] characters: whole paragraphs
/// where they fit, long paragraphs at sentence ends or, failing that, between words.
pub fn passages(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, out: &mut Vec<String>| {
        let t = current.trim();
        if !t.is_empty() {
            out.push(t.to_string());
        }
        current.clear();
    };
    let paragraphs = text
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty());
    for p in paragraphs {
        if current.chars().count() + p.chars().count() < CHUNK_CHARS {
            if !current.is_empty() {
                current.push('\n');
            }
            current.push_str(&p);
            continue;
        }
        flush(&mut current, &mut out);
        if p.chars().count() <= CHUNK_CHARS {
            current = p;
            continue;
        }
        // A long paragraph: sentences, packed; a sentence longer than a passage, by words.
        for sentence in split_sentences(&p) {
            if current.chars().count() + sentence.chars().count() >= CHUNK_CHARS {
                flush(&mut current, &mut out);
            }
            if sentence.chars().count() < CHUNK_CHARS {
                if !current.is_empty() {
                    current.push(' ');
                }
                current.push_str(sentence);
                continue;
            }
            for word in sentence.split(' ') {
                if current.chars().count() + word.chars().count() >= CHUNK_CHARS {
                    flush(&mut current, &mut out);
                }
                if !current.is_empty() {
                    current.push(' ');
                }
                current.extend(word.chars().take(CHUNK_CHARS - 1));
            }
        }
    }
    flush(&mut current, &mut out);
    out
}

/// Sentences of a paragraph (ends: `.`, `!`, `?` followed by a space).
fn split_sentences(p: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let b = p.as_bytes();
    for i in 0..b.len() {
        if matches!(b[i], b'.' | b'!' | b'?') && b.get(i + 1) == Some(&b' ') {
            out.push(p[start..=i].trim());
            start = i + 1;
        }
    }
    if start < p.len() {
        out.push(p[start..].trim());
    }
    out.retain(|s| !s.is_empty());
    out
}

/// The text files of the folder now: relative path → (absolute path, size, modified ms).
fn scan(root: &Path) -> BTreeMap<String, (PathBuf, u64, u64)> {
    let mut files = BTreeMap::new();
    crate::files::walk(root, |path, meta| {
        let rel = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        files.insert(rel, (path.to_path_buf(), meta.len(), modified));
        true
    });
    files
}

/// Forgets the passages of `rel`.
async fn forget(bus: &BusClient, rel: &str) -> Result<u64, String> {
    let req = Forget {
        ids: Vec::new(),
        filter: Some(MemoryFilter {
            kinds: vec![MemoryKind::Document],
            sources: vec![SOURCE.into()],
            tags: vec![rel.into()],
            ..Default::default()
        }),
        all: false,
    };
    bus.request::<_, Forgotten>(
        "memory",
        kinds::MEMORY_FORGET,
        &req,
        Duration::from_secs(10),
    )
    .await
    .map(|f| f.forgotten)
    .map_err(|e| e.to_string())
}

/// Brings memory's passages of the folder `root` up to date. `state_path` keeps what was done.
///
/// # Errors
/// When memory cannot be reached at all (files it fails on are in the summary).
pub async fn index(bus: &BusClient, root: &Path, state_path: &Path) -> Result<Summary, String> {
    let mut state = State::load(state_path);
    let files = {
        let root = root.to_path_buf();
        tokio::task::spawn_blocking(move || scan(&root))
            .await
            .map_err(|e| e.to_string())?
    };
    let mut summary = Summary::default();
    let gone: Vec<String> = state
        .files
        .keys()
        .filter(|k| !files.contains_key(*k))
        .cloned()
        .collect();
    for rel in gone {
        forget(bus, &rel).await?;
        state.files.remove(&rel);
        summary.removed += 1;
    }
    for (rel, (path, size, modified_ms)) in files {
        if state
            .files
            .get(&rel)
            .is_some_and(|i| i.size == size && i.modified_ms == modified_ms)
        {
            summary.unchanged += 1;
            continue;
        }
        let text = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::metadata(&path)
                    .ok()
                    .and_then(|m| crate::files::read_text(&path, &m))
            })
            .await
            .ok()
            .flatten()
        };
        if state.files.contains_key(&rel) {
            forget(bus, &rel).await?;
            state.files.remove(&rel);
        }
        // Not text (or too large): remembered as seen, so it is not read again until it changes.
        let chunks = text.as_deref().map(passages).unwrap_or_default();
        let mut kept = 0;
        let mut failure = None;
        for batch in chunks.chunks(BATCH) {
            let memories = batch
                .iter()
                .map(|c| {
                    let mut m = NewMemory::new(format!("From {rel}: {c}"), MemoryKind::Document);
                    m.source = SOURCE.into();
                    m.tags = vec![rel.clone()];
                    m
                })
                .collect();
            match bus
                .request::<_, Remembered>(
                    "memory",
                    kinds::MEMORY_REMEMBER,
                    &Remember { memories },
                    Duration::from_secs(60),
                )
                .await
            {
                Ok(r) => kept += r.outcomes.len(),
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(why) = failure {
            summary.failed.push(format!("{rel}: {why}"));
            // What was kept of it goes, so that a retry starts clean.
            let _ = forget(bus, &rel).await;
            continue;
        }
        state.files.insert(
            rel,
            Indexed {
                size,
                modified_ms,
                passages: kept,
            },
        );
        if !chunks.is_empty() {
            summary.indexed += 1;
            summary.passages += kept;
        }
    }
    state
        .save(state_path)
        .map_err(|e| format!("cannot save {}: {e}", state_path.display()))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_keep_paragraphs_and_cut_long_ones_at_sentences() {
        let text = "Title\n\nShort paragraph one.\n\nShort paragraph two.";
        assert_eq!(
            passages(text),
            vec!["Title\nShort paragraph one.\nShort paragraph two."]
        );
        let sentence = "The boiler was serviced on the third of March and works well. ";
        let long = sentence.repeat(30);
        let p = passages(&format!("Intro.\n\n{long}\n\nOutro."));
        assert!(p.len() >= 3, "{p:?}");
        for c in &p {
            assert!(c.chars().count() <= CHUNK_CHARS, "{}", c.len());
        }
        // Nothing lost, nothing repeated.
        let words: usize = p.iter().map(|c| c.split_whitespace().count()).sum();
        assert_eq!(words, 1 + long.split_whitespace().count() + 1);
        // A "sentence" with no end at all is cut between words.
        let p = passages(&"word ".repeat(500));
        assert!(p.len() >= 3 && p.iter().all(|c| c.chars().count() <= CHUNK_CHARS));
        assert!(passages("  \n\n  ").is_empty());
    }

    #[test]
    fn the_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("documents-index.json");
        assert_eq!(State::load(&path), State::default());
        let mut s = State::default();
        s.files.insert(
            "a/b.txt".into(),
            Indexed {
                size: 3,
                modified_ms: 4,
                passages: 1,
            },
        );
        s.save(&path).unwrap();
        assert_eq!(State::load(&path), s);
    }
}
