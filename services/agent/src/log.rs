//! The interaction log: every utterance the agent handled, with the tier, the tool, the outcome
//! and the per-stage timeline, as JSON lines in `<data_dir>/agent/interactions.jsonl`. Written
//! after the reply, so it never slows the answer.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ming_schemas::agent::{Interaction, InteractionsPage};

pub struct InteractionLog {
    path: PathBuf,
    next_seq: Mutex<u64>,
}

impl InteractionLog {
    /// Opens the log in `dir`, continuing its numbering.
    pub fn open(dir: &Path) -> Self {
        let path = dir.join("interactions.jsonl");
        let last = read_all(&path).last().map_or(0, |i| i.seq);
        Self {
            path,
            next_seq: Mutex::new(last + 1),
        }
    }

    /// Appends one interaction (its `seq` is assigned here).
    pub fn append(&self, mut item: Interaction) {
        let Ok(mut next) = self.next_seq.lock() else {
            return;
        };
        item.seq = *next;
        let written = serde_json::to_string(&item)
            .map_err(std::io::Error::other)
            .and_then(|line| {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                writeln!(f, "{line}")
            });
        match written {
            Ok(()) => *next += 1,
            Err(e) => tracing::warn!(error = %e, "cannot write the interaction log"),
        }
    }

    /// A page of interactions with `seq >= since`.
    pub fn page(&self, since: u64, limit: u32) -> InteractionsPage {
        let items: Vec<Interaction> = read_all(&self.path)
            .into_iter()
            .filter(|i| i.seq >= since)
            .take(limit as usize)
            .collect();
        let next = items.last().map_or(since, |i| i.seq + 1);
        InteractionsPage { items, next }
    }

    /// One utterance's record, or the latest for 0.
    pub fn find(&self, utterance: u64) -> Option<Interaction> {
        let all = read_all(&self.path);
        if utterance == 0 {
            return all.into_iter().last();
        }
        all.into_iter().rev().find(|i| i.utterance == utterance)
    }
}

fn read_all(path: &Path) -> Vec<Interaction> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
