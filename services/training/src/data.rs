//! The router's data: the shipped seed set, the held-out set written separately from it, and the
//! agent's interaction log (done, corrected, undone), split into training, calibration and
//! validation examples.
//!
//! Splits are by a hash of the utterance's text, so one phrasing never lands on both sides and a
//! rerun on the same data splits the same way:
//! - seed: 85% training, 15% calibration (early stopping and the temperature);
//! - held-out seed: validation only;
//! - the log's ordinary outcomes: 65% training, 15% calibration, 20% validation;
//! - the user's corrections and undone actions: training *and* validation. They are the user's
//!   own ground truth, and a model that ignores them must not win a comparison; the held-out seed
//!   set keeps the comparison honest about phrasings nobody trained on.

use std::collections::{BTreeMap, BTreeSet};

use ming_schemas::agent::{Interaction, Tier};
use ming_schemas::training::NONE_LABEL;
use sha2::{Digest, Sha256};

/// The seed set, shipped with the service.
pub const SEED: &str = include_str!("../data/seed.tsv");
/// The held-out set, written separately from the seed set.
pub const HELDOUT: &str = include_str!("../data/heldout.tsv");

/// Where an example came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Seed,
    Heldout,
    Log,
    Correction,
    Undone,
}

/// One labelled utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub label: String,
    pub weight: f32,
    pub origin: Origin,
}

/// A line of a data file that is not `label<TAB>utterance`.
#[derive(Debug, thiserror::Error)]
#[error("{file} line {line}: {problem}")]
pub struct DataError {
    pub file: String,
    pub line: usize,
    pub problem: String,
}

/// Parses `label<TAB>utterance` lines (`#` comments and blank lines skipped).
///
/// # Errors
/// [`DataError`] for a line without a tab, or with an empty label or utterance.
pub fn parse_tsv(file: &str, text: &str, origin: Origin) -> Result<Vec<Example>, DataError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |problem: &str| DataError {
            file: file.into(),
            line: i + 1,
            problem: problem.into(),
        };
        let (label, utterance) = line
            .split_once('\t')
            .ok_or_else(|| bad("expected label<TAB>utterance"))?;
        let (label, utterance) = (label.trim(), utterance.trim());
        if label.is_empty() || utterance.is_empty() {
            return Err(bad("empty label or utterance"));
        }
        out.push(Example {
            text: utterance.into(),
            label: label.into(),
            weight: 1.0,
            origin,
        });
    }
    Ok(out)
}

/// Examples from the interaction log. The latest record of an utterance decides; a correction
/// or an undo of a phrasing also overrides earlier ordinary outcomes of the same phrasing.
pub fn from_log(items: &[Interaction], correction_weight: f32, undone_weight: f32) -> Vec<Example> {
    let mut latest: BTreeMap<u64, &Interaction> = BTreeMap::new();
    for i in items {
        latest.insert(i.utterance, i);
    }
    let mut items: Vec<&Interaction> = latest.into_values().collect();
    items.sort_by_key(|i| i.seq);
    let key = |t: &str| ming_schemas::training::words(t).join(" ");
    // Phrasings the user has ruled on, with the latest ruling.
    let mut ruled: BTreeMap<String, u64> = BTreeMap::new();
    for i in &items {
        if matches!(i.outcome.as_str(), "corrected" | "undone") {
            ruled.insert(key(&i.text), i.seq);
        }
    }
    let mut out = Vec::new();
    for i in items {
        let k = key(&i.text);
        if k.is_empty() {
            continue;
        }
        let tool = i.tool.clone().unwrap_or_default();
        let (label, weight, origin) = match i.outcome.as_str() {
            "corrected" if !tool.is_empty() => (tool, correction_weight, Origin::Correction),
            "undone" => (NONE_LABEL.to_string(), undone_weight, Origin::Undone),
            "done"
                if !tool.is_empty()
                    && tool != "reply"
                    && !matches!(i.tier, Some(Tier::Direct) | None)
                    && !ruled.contains_key(&k) =>
            {
                (tool, 1.0, Origin::Log)
            }
            _ => continue,
        };
        // A ruling superseded by a later one for the same phrasing is dropped too.
        if matches!(origin, Origin::Correction | Origin::Undone) && ruled.get(&k) != Some(&i.seq) {
            continue;
        }
        out.push(Example {
            text: i.text.clone(),
            label,
            weight,
            origin,
        });
    }
    out
}

/// Which split an example goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Calibration,
    Validation,
}

fn bucket(text: &str) -> u64 {
    let h = Sha256::digest(ming_schemas::training::words(text).join(" ").as_bytes());
    u64::from(h[0]) * 256 + u64::from(h[1])
}

/// The split of one example (see the module docs).
pub fn split_of(e: &Example) -> Split {
    let b = bucket(&e.text) % 100;
    match e.origin {
        Origin::Heldout => Split::Validation,
        Origin::Seed if b < 15 => Split::Calibration,
        Origin::Seed => Split::Train,
        Origin::Log if b < 15 => Split::Calibration,
        Origin::Log if b < 35 => Split::Validation,
        Origin::Log => Split::Train,
        Origin::Correction | Origin::Undone => Split::Train,
    }
}

/// Examples split three ways, with the label set.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Sorted; [`NONE_LABEL`] among them.
    pub labels: Vec<String>,
    pub train: Vec<Example>,
    pub calibration: Vec<Example>,
    pub validation: Vec<Example>,
    pub log_examples: usize,
}

impl Dataset {
    /// Splits `examples`; the user's rulings also join validation.
    pub fn assemble(examples: Vec<Example>) -> Self {
        let mut labels: BTreeSet<String> = examples.iter().map(|e| e.label.clone()).collect();
        labels.insert(NONE_LABEL.into());
        let mut d = Dataset {
            labels: labels.into_iter().collect(),
            ..Default::default()
        };
        for e in examples {
            if !matches!(e.origin, Origin::Seed | Origin::Heldout) {
                d.log_examples += 1;
            }
            if matches!(e.origin, Origin::Correction | Origin::Undone) {
                d.validation.push(e.clone());
            }
            match split_of(&e) {
                Split::Train => d.train.push(e),
                Split::Calibration => d.calibration.push(e),
                Split::Validation => d.validation.push(e),
            }
        }
        d
    }

    /// The index of `label` in [`Dataset::labels`].
    pub fn label_index(&self, label: &str) -> Option<usize> {
        self.labels.binary_search_by(|l| l.as_str().cmp(label)).ok()
    }

    /// sha256 over every example (split, text, label, weight) in order.
    pub fn sha256(&self) -> String {
        let mut h = Sha256::new();
        for (name, part) in [
            ("train", &self.train),
            ("calibration", &self.calibration),
            ("validation", &self.validation),
        ] {
            for e in part {
                h.update(format!("{name}\t{}\t{}\t{}\n", e.label, e.text, e.weight).as_bytes());
            }
        }
        hex(&h.finalize())
    }

    /// Every distinct text, for embedding.
    pub fn texts(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self
            .train
            .iter()
            .chain(&self.calibration)
            .chain(&self.validation)
            .map(|e| e.text.as_str())
            .collect();
        set.into_iter().map(String::from).collect()
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shipped seed and held-out sets.
///
/// # Errors
/// [`DataError`] when a shipped file is malformed (a build-time mistake, caught by the tests).
pub fn shipped() -> Result<Vec<Example>, DataError> {
    let mut all = parse_tsv("seed.tsv", SEED, Origin::Seed)?;
    all.extend(parse_tsv("heldout.tsv", HELDOUT, Origin::Heldout)?);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, utterance: u64, text: &str, tool: &str, outcome: &str) -> Interaction {
        Interaction {
            seq,
            utterance,
            time_ms: 0,
            text: text.into(),
            tier: Some(Tier::Llm),
            tool: Some(tool.into()),
            arguments: String::new(),
            outcome: outcome.into(),
            stages: Vec::new(),
        }
    }

    #[test]
    fn the_shipped_sets_parse_and_never_share_a_phrasing() {
        let seed = parse_tsv("seed.tsv", SEED, Origin::Seed).expect("seed parses");
        let held = parse_tsv("heldout.tsv", HELDOUT, Origin::Heldout).expect("heldout parses");
        assert!(
            seed.len() >= 350 && held.len() >= 90,
            "{} {}",
            seed.len(),
            held.len()
        );
        let key = |e: &Example| ming_schemas::training::words(&e.text).join(" ");
        let seen: BTreeSet<String> = seed.iter().map(key).collect();
        for e in &held {
            assert!(
                !seen.contains(&key(e)),
                "held-out phrasing in the seed set: {}",
                e.text
            );
        }
        let labels: BTreeSet<&str> = seed.iter().map(|e| e.label.as_str()).collect();
        for e in &held {
            assert!(
                labels.contains(e.label.as_str()),
                "unknown label {}",
                e.label
            );
        }
        // A few dozen phrasings for every tool.
        for l in &labels {
            let n = seed.iter().filter(|e| e.label == *l).count();
            assert!(n >= 24, "{l}: only {n} seed phrasings");
        }
    }

    #[test]
    fn bad_lines_are_named() {
        let e = parse_tsv("x.tsv", "# c\nset_timer\tok\nno tab here\n", Origin::Seed)
            .expect_err("a line without a tab");
        assert_eq!(e.line, 3);
        assert!(e.to_string().contains("x.tsv line 3"), "{e}");
    }

    #[test]
    fn corrections_override_and_undone_becomes_none() {
        let items = vec![
            item(1, 10, "boil the kettle in 5", "add_note", "done"),
            item(2, 10, "boil the kettle in 5", "set_timer", "corrected"),
            item(3, 11, "Boil the kettle in 9", "add_note", "done"),
            item(4, 12, "what is on", "list_notes", "done"),
            item(5, 12, "what is on", "list_notes", "undone"),
            item(6, 13, "hello", "reply", "done"),
            item(7, 14, "broken", "add_note", "failed"),
        ];
        let ex = from_log(&items, 3.0, 2.0);
        let labels: Vec<(&str, &str, f32)> = ex
            .iter()
            .map(|e| (e.text.as_str(), e.label.as_str(), e.weight))
            .collect();
        // Utterance 11 says the same phrasing (digits aside) as the corrected 10: dropped.
        assert_eq!(
            labels,
            vec![
                ("boil the kettle in 5", "set_timer", 3.0),
                ("what is on", NONE_LABEL, 2.0)
            ]
        );
        let d = Dataset::assemble(ex);
        assert_eq!(d.log_examples, 2);
        assert!(d.train.iter().any(|e| e.origin == Origin::Correction));
        assert!(d.validation.iter().any(|e| e.origin == Origin::Correction));
        assert!(d.label_index(NONE_LABEL).is_some());
    }
}
