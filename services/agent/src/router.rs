//! The learned personal router (trained by the training service): from an utterance's embedding
//! to the tool that should act, with a calibrated confidence. It sits between the rules of the
//! fast path and the LLM: when it is sure enough, the first action goes out at once, its
//! arguments by slot extraction ([`slots`]) or, failing that, a short LLM call for that one tool.
//!
//! The router arrives over the bus (`agent.router`: bytes, version, sha256) and is hot-swapped:
//! requests in flight keep the one they started with. The agent keeps a copy in its own data dir
//! (`<data_dir>/agent/router.bin`) so it has one at start even when training is down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ming_schemas::training::{Router, RouterFile, RouterModel};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::intent;

/// The router in use, swappable while requests run.
pub struct RouterSlot {
    current: RwLock<Option<Arc<Router>>>,
    file: PathBuf,
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The file the agent keeps its copy in: sha256 (64 hex) + newline + the router bytes.
fn decode_copy(bytes: &[u8]) -> Result<Router, String> {
    if bytes.len() < 65 || bytes[64] != b'\n' {
        return Err("not a router copy".into());
    }
    let (sha, body) = (&bytes[..64], &bytes[65..]);
    if sha256(body).as_bytes() != sha {
        return Err("its sha256 does not match (corrupt)".into());
    }
    RouterModel::decode(body).map_err(|e| e.to_string())
}

impl RouterSlot {
    /// The slot, with the copy kept in `dir` when there is a valid one.
    pub fn open(dir: &Path) -> Self {
        let file = dir.join("router.bin");
        let current = match std::fs::read(&file) {
            Ok(bytes) => match decode_copy(&bytes) {
                Ok(r) => {
                    tracing::info!(
                        version = r.model.version,
                        "router loaded from the agent's copy"
                    );
                    Some(Arc::new(r))
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), error = %e, "router copy not used");
                    None
                }
            },
            Err(_) => None,
        };
        Self {
            current: RwLock::new(current),
            file,
        }
    }

    /// The router in use.
    pub fn get(&self) -> Option<Arc<Router>> {
        self.current.read().ok().and_then(|r| r.clone())
    }

    /// The version in use.
    pub fn version(&self) -> Option<u64> {
        self.get().map(|r| r.model.version)
    }

    /// Checks and installs a router from the bus, and keeps a copy. `embedding` is the serving
    /// embedding model (name, sha256) when known: a router pinned to another is refused.
    ///
    /// # Errors
    /// A message saying why the router was refused (the one in use stays).
    pub fn install(
        &self,
        file: &RouterFile,
        embedding: Option<(&str, &str)>,
    ) -> Result<u64, String> {
        let got = sha256(&file.bytes);
        if got != file.sha256 {
            return Err(format!(
                "router v{} has sha256 {got}, announced {}: refused",
                file.version, file.sha256
            ));
        }
        let router =
            RouterModel::decode(&file.bytes).map_err(|e| format!("router refused: {e}"))?;
        if let Some((name, sha)) = embedding {
            router
                .check_embedding(name, sha)
                .map_err(|e| format!("router refused: {e}"))?;
        }
        let version = router.model.version;
        let mut copy = got.into_bytes();
        copy.push(b'\n');
        copy.extend_from_slice(&file.bytes);
        let tmp = self.file.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, &copy).and_then(|()| std::fs::rename(&tmp, &self.file))
        {
            tracing::warn!(error = %e, "router copy not kept (it is used anyway)");
        }
        if let Ok(mut c) = self.current.write() {
            *c = Some(Arc::new(router));
        }
        Ok(version)
    }
}

fn after<'a>(text: &'a str, markers: &[&str]) -> Option<&'a str> {
    // ASCII lowercasing keeps byte positions (full lowercasing does not: "İ"), so the indices
    // found in `lower` are `text`'s too.
    let lower = text.to_ascii_lowercase();
    markers
        .iter()
        .filter_map(|m| lower.rfind(m).map(|i| i + m.len()))
        .max()
        .and_then(|i| text.get(i..))
        .map(|t| t.trim().trim_end_matches(['.', '?', '!']).trim())
        .filter(|s| !s.is_empty())
}

/// The days a slot may name outright.
pub(crate) const DAYS: [&str; 9] = [
    "today",
    "tomorrow",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

fn day_in(text: &str) -> String {
    let lower = text.to_lowercase();
    for w in ming_schemas::training::words(&lower) {
        if DAYS.contains(&w.as_str()) {
            return w;
        }
    }
    lower
        .split_whitespace()
        .find(|w| crate::tools::resolve_date(w).is_some() && w.len() == 10)
        .map_or_else(|| "today".into(), String::from)
}

/// `add_event` from the words: a day said outright and a time after the last " at " ("lunch
/// with Sarah tomorrow at 1pm", "pencil in the vet on Friday at nine thirty"); the title is what
/// is left without the leading verb. `None` without a day or a time (the LLM then fills it).
fn event_slots(text: &str) -> Option<Value> {
    let clean = text.trim().trim_end_matches(['.', '!', '?']);
    // ASCII lowercasing keeps byte positions, so `at` indexes `clean` too.
    let at = clean.to_ascii_lowercase().rfind(" at ")?;
    let (head, tail) = (&clean[..at], &clean[at + 4..]);
    // The time: the longest run of up to three words that reads as one.
    let words: Vec<&str> = tail.split_whitespace().collect();
    let (time, used) = (1..=words.len().min(3))
        .rev()
        .find_map(|n| intent::parse_time(&words[..n].join(" ")).map(|t| (t, n)))?;
    let rest = words[used..].join(" ");
    let mut title: Vec<&str> = Vec::new();
    let mut day = None;
    for w in head.split_whitespace().chain(rest.split_whitespace()) {
        let lw = w.to_lowercase();
        if day.is_none() && DAYS.contains(&lw.as_str()) {
            day = Some(lw);
            if title.last().is_some_and(|p| p.eq_ignore_ascii_case("on")) {
                title.pop();
            }
            continue;
        }
        title.push(w);
    }
    let day = day?;
    const LEAD: [&str; 14] = [
        "and", "please", "can", "could", "you", "add", "schedule", "book", "put", "plan", "pencil",
        "in", "set", "up",
    ];
    let start = title
        .iter()
        .position(|w| !LEAD.contains(&w.to_lowercase().as_str()))?;
    let mut title = title[start..].join(" ");
    for tail in [
        " to my calendar",
        " in my calendar",
        " on my calendar",
        " to the calendar",
    ] {
        if title.to_ascii_lowercase().ends_with(tail) {
            title.truncate(title.len() - tail.len());
        }
    }
    let title = title.trim_matches(|c: char| c == ',' || c.is_whitespace());
    (!title.is_empty()).then(|| json!({"title": title, "date": day, "time": time, "minutes": 60}))
}

/// What a timer is for, as said ("… to check the oven", "… for the pasta"); empty if nothing.
pub fn timer_label(text: &str) -> String {
    after(text, &[" to ", " for the ", " for my ", " about "])
        .filter(|l| intent::parse_duration(l).is_none())
        .unwrap_or_default()
        .to_string()
}

/// Arguments for `tool` taken from the utterance without the LLM, when the words allow; `None`
/// means ask the LLM for that one tool.
pub fn slots(tool: &str, text: &str) -> Option<Value> {
    if let Some(i) = intent::understand(text) {
        if i.tool == tool {
            return Some(i.args);
        }
    }
    let query = || {
        after(
            text,
            &[
                " about ",
                " for ",
                " mentioning ",
                " containing ",
                " from ",
                " with ",
            ],
        )
    };
    match tool {
        "set_timer" => {
            let seconds = intent::parse_duration(text)?;
            Some(json!({"seconds": seconds, "label": timer_label(text)}))
        }
        "clock" => {
            let w = ming_schemas::training::words(text);
            let date = w
                .iter()
                .any(|w| matches!(w.as_str(), "date" | "day" | "month" | "year" | "today"));
            let what = if date { "date" } else { "time" };
            Some(match after(text, &[" in "]) {
                Some(zone) => json!({"what": what, "zone": zone}),
                None => json!({"what": what}),
            })
        }
        "list_notes" => Some(json!({})),
        "list_events" => Some(json!({"date": day_in(text)})),
        "free_time" => {
            let minutes = intent::parse_duration(text).map_or(30, |s| s / 60);
            Some(json!({"date": day_in(text), "minutes": minutes}))
        }
        "search_notes" | "delete_note" | "search_documents" | "search_mail" | "recall"
        | "forget_memory" => query().map(|q| json!({"query": q})),
        "add_note" => after(
            text,
            &[
                "note that ",
                "note: ",
                "down that ",
                "down ",
                "note saying ",
            ],
        )
        .map(|t| json!({"text": t})),
        "remember" => after(
            text,
            &["remember that ", "keep in mind that ", "know that "],
        )
        .map(|t| {
            let l = t.to_lowercase();
            let pref = ["i prefer", "i like", "i love", "i hate", "i don't"]
                .iter()
                .any(|p| l.starts_with(p));
            json!({"text": t, "kind": if pref { "preference" } else { "fact" }})
        }),
        "add_event" => event_slots(text),
        "handoff" => Some(
            json!({"task": after(text, &["cloud to ", "cloud: ", "cloud, "]).unwrap_or(text.trim())}),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ming_schemas::training::{float_bytes, Dense, RouterProvenance, NONE_LABEL, ROUTER_FORMAT};

    fn file(version: u64) -> RouterFile {
        let m = RouterModel {
            format: ROUTER_FORMAT,
            version,
            created_ms: 0,
            labels: vec!["clock".into(), NONE_LABEL.into()],
            embedding_model: "minilm".into(),
            embedding_sha256: "aa".into(),
            embedding_dims: 1,
            ngram_buckets: 0,
            layers: vec![Dense {
                inputs: 1,
                outputs: 2,
                weights: float_bytes(&[1.0, -1.0]),
                bias: float_bytes(&[0.0, 0.0]),
            }],
            temperature: 1.0,
            provenance: RouterProvenance::default(),
        };
        let bytes = m.encode();
        RouterFile {
            version,
            sha256: sha256(&bytes),
            bytes,
        }
    }

    #[test]
    fn installs_keeps_a_copy_and_refuses_bad_routers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slot = RouterSlot::open(dir.path());
        assert!(slot.get().is_none());
        assert_eq!(slot.install(&file(3), Some(("minilm", "aa"))), Ok(3));
        let mut bad = file(4);
        bad.bytes[10] ^= 1;
        assert!(slot
            .install(&bad, None)
            .expect_err("sha")
            .contains("sha256"));
        let e = slot
            .install(&file(5), Some(("other", "bb")))
            .expect_err("other embedding model");
        assert!(e.contains("embedding model"), "{e}");
        assert_eq!(slot.version(), Some(3));
        // A restart finds the copy; a corrupt copy is not used.
        assert_eq!(RouterSlot::open(dir.path()).version(), Some(3));
        let path = dir.path().join("router.bin");
        let mut b = std::fs::read(&path).expect("copy");
        let last = b.len() - 1;
        b[last] ^= 1;
        std::fs::write(&path, b).expect("write");
        assert_eq!(RouterSlot::open(dir.path()).version(), None);
    }

    #[test]
    fn slots_from_free_phrasing() {
        assert_eq!(
            slots("set_timer", "boil the kettle, give it five minutes"),
            Some(json!({"seconds": 300, "label": ""}))
        );
        assert_eq!(
            slots("set_timer", "in ten minutes tell me to take the bread out"),
            Some(json!({"seconds": 600, "label": "take the bread out"}))
        );
        assert_eq!(
            slots("clock", "got the date"),
            Some(json!({"what": "date"}))
        );
        assert_eq!(
            slots("list_events", "what's happening friday"),
            Some(json!({"date": "friday"}))
        );
        // Heard in the voice bench; "am" once read as "a m(inute)" gave a 1-minute slot.
        assert_eq!(
            slots("free_time", "Where am I free tomorrow?"),
            Some(json!({"date": "tomorrow", "minutes": 30}))
        );
        assert_eq!(
            slots("search_mail", "did I get anything from the landlord"),
            Some(json!({"query": "the landlord"}))
        );
        assert_eq!(slots("add_event", "lunch with Sam at noon"), None);
        assert_eq!(
            slots("add_event", "and lunch with Sarah tomorrow at 1pm."),
            Some(
                json!({"title": "lunch with Sarah", "date": "tomorrow", "time": "13:00", "minutes": 60})
            )
        );
        assert_eq!(
            slots("add_event", "pencil in the vet on Friday at nine thirty"),
            Some(json!({"title": "the vet", "date": "friday", "time": "09:30", "minutes": 60}))
        );
        assert_eq!(slots("add_event", "the vet on Friday at some point"), None);
        assert_eq!(
            slots("add_event", "İstanbul call on Friday AT 9"),
            Some(
                json!({"title": "İstanbul call", "date": "friday", "time": "09:00", "minutes": 60})
            )
        );
    }
}
