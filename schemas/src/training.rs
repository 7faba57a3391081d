//! Messages of the training service (target `training`), and the router file it writes.
//!
//! | kind | request | reply |
//! |---|---|---|
//! | `training.train` | [`Train`] | partial [`TrainProgress`] frames, then [`Trained`] |
//! | `training.cancel` | empty map | [`crate::control::Ack`] (cancels the running job) |
//! | `training.models` | empty map | [`Models`] |
//! | `training.promote` | [`Promote`] | [`ModelInfo`] |
//! | `training.rollback` | empty map | [`ModelInfo`] (the model now in use) |
//! | `training.router` | empty map | [`RouterFile`] (the promoted router) |
//! | `agent.router` (training → agent) | [`RouterFile`] | [`crate::control::Ack`] |
//!
//! Events: `training.progress` ([`TrainProgress`]), `training.promoted` ([`ModelInfo`]).
//!
//! # The router file
//! A router is a [`RouterModel`] encoded like every body here (MessagePack, named fields). Its
//! interpretation is part of the contract, so it lives here with the messages: the agent serves
//! the exact bytes training validated, and any replacement training service can write one.
//! Features are the utterance's embedding (from `memory.embed`, the model pinned by sha256)
//! followed by hashed word n-grams of its text ([`text_features`]); the network is a stack of
//! dense layers with ReLU between them; probabilities are `softmax(logits / temperature)`.

use serde::{Deserialize, Serialize};

/// The router file format this build reads and writes.
pub const ROUTER_FORMAT: u32 = 1;

/// The label of "no tool of mine: let the LLM decide" (out of scope or unsure).
pub const NONE_LABEL: &str = "none";

/// Request body of `training.train`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Train {
    /// The job: `router` (the only one so far).
    pub job: String,
    /// Passes over the training data (default from config).
    #[serde(default)]
    pub epochs: Option<u32>,
    /// Train on the shipped seed set only, not the agent's interaction log.
    #[serde(default)]
    pub seed_only: bool,
    /// Write the model but do not promote it, even when it beats the current one.
    #[serde(default)]
    pub no_promote: bool,
}

/// A progress report (a partial frame of `training.train`, and the `training.progress` event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainProgress {
    pub job: String,
    /// `embedding`, `training`, `calibrating`, `validating`.
    pub phase: String,
    pub epoch: u32,
    pub epochs: u32,
    /// Mean training loss of the last epoch.
    pub loss: f32,
    /// Accuracy on the calibration split after the last epoch.
    pub accuracy: f32,
    /// Estimated time to the end of training.
    pub eta_ms: u64,
    pub examples: u32,
}

/// How a router did on one validation set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterMetrics {
    /// Share of validation examples whose top label is right.
    pub accuracy: f32,
    /// Mean negative log-likelihood of the right label (calibrated probabilities).
    pub nll: f32,
    /// Expected calibration error over 10 confidence bins.
    pub ece: f32,
    pub validation_size: u32,
}

/// What a router was trained on, and how it did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouterProvenance {
    pub train_size: u32,
    /// Examples that came from the interaction log (the rest are the seed set).
    pub log_examples: u32,
    /// sha256 of the training and validation examples, in order (text, label, weight).
    pub dataset_sha256: String,
    pub epochs: u32,
    pub train_ms: u64,
    /// Its metrics on its own validation set at training time.
    pub metrics: RouterMetrics,
}

/// One dense layer: `y = x · W + b`, `W` row-major `[inputs][outputs]` as little-endian f32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dense {
    pub inputs: u32,
    pub outputs: u32,
    #[serde(with = "serde_bytes")]
    pub weights: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub bias: Vec<u8>,
}

/// A router file (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterModel {
    pub format: u32,
    pub version: u64,
    pub created_ms: u64,
    /// Output labels in order; one of them is [`NONE_LABEL`].
    pub labels: Vec<String>,
    /// The embedding model the features come from: its manifest name, sha256 and width.
    pub embedding_model: String,
    pub embedding_sha256: String,
    pub embedding_dims: u32,
    /// Width of the hashed n-gram part of the features (0: embedding only).
    pub ngram_buckets: u32,
    pub layers: Vec<Dense>,
    pub temperature: f32,
    pub provenance: RouterProvenance,
}

/// Why a router file cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RouterError {
    #[error("not a router file: {0}")]
    Decode(String),
    #[error("router format {0}, this build reads {ROUTER_FORMAT}")]
    Format(u32),
    #[error("router file is inconsistent: {0}")]
    Shape(String),
    #[error("the router was trained on embedding model {trained} ({trained_sha}), not on {serving} ({serving_sha})")]
    EmbeddingModel {
        trained: String,
        trained_sha: String,
        serving: String,
        serving_sha: String,
    },
    #[error("the embedding has {got} values, the router reads {want}")]
    Dims { got: usize, want: usize },
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian f32 bytes, the layout of [`Dense`].
pub fn float_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

impl RouterModel {
    /// Encodes the file.
    pub fn encode(&self) -> Vec<u8> {
        crate::to_body(self).unwrap_or_default()
    }

    /// Decodes and checks a router file into something that predicts.
    ///
    /// # Errors
    /// [`RouterError`] when the bytes are not a router of this format or do not add up.
    pub fn decode(bytes: &[u8]) -> Result<Router, RouterError> {
        let model: RouterModel =
            crate::from_body(bytes).map_err(|e| RouterError::Decode(e.to_string()))?;
        Router::new(model)
    }
}

/// A checked router, ready to predict (weights decoded once).
#[derive(Debug, Clone)]
pub struct Router {
    pub model: RouterModel,
    layers: Vec<(usize, usize, Vec<f32>, Vec<f32>)>,
}

/// A router's answer for one utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: String,
    /// Calibrated probability of `label`.
    pub confidence: f32,
    /// Calibrated probability of every label, in the model's label order.
    pub probabilities: Vec<f32>,
}

impl Router {
    /// Checks `model` (format, shapes, finite weights) and decodes its weights.
    ///
    /// # Errors
    /// [`RouterError`] naming what does not add up.
    pub fn new(model: RouterModel) -> Result<Self, RouterError> {
        if model.format != ROUTER_FORMAT {
            return Err(RouterError::Format(model.format));
        }
        let shape = |m: String| Err(RouterError::Shape(m));
        if model.layers.is_empty() {
            return shape("no layers".into());
        }
        if !model.labels.iter().any(|l| l == NONE_LABEL) {
            return shape(format!("no `{NONE_LABEL}` label"));
        }
        if !(model.temperature.is_finite() && model.temperature > 0.0) {
            return shape(format!("temperature {}", model.temperature));
        }
        let mut want = (model.embedding_dims + model.ngram_buckets) as usize;
        let mut layers = Vec::with_capacity(model.layers.len());
        for (i, d) in model.layers.iter().enumerate() {
            let (n_in, n_out) = (d.inputs as usize, d.outputs as usize);
            if n_in != want {
                return shape(format!("layer {i} reads {n_in} values, gets {want}"));
            }
            if d.weights.len() != n_in * n_out * 4 || d.bias.len() != n_out * 4 {
                return shape(format!(
                    "layer {i} is {n_in}x{n_out} but holds {} weight and {} bias bytes",
                    d.weights.len(),
                    d.bias.len()
                ));
            }
            let (w, b) = (floats(&d.weights), floats(&d.bias));
            if !w.iter().chain(&b).all(|v| v.is_finite()) {
                return shape(format!(
                    "layer {i} has a weight that is not a finite number"
                ));
            }
            layers.push((n_in, n_out, w, b));
            want = n_out;
        }
        if want != model.labels.len() {
            return shape(format!(
                "the last layer gives {want} values for {} labels",
                model.labels.len()
            ));
        }
        Ok(Self { model, layers })
    }

    /// Refuses to serve with an embedding model other than the one it was trained on.
    ///
    /// # Errors
    /// [`RouterError::EmbeddingModel`].
    pub fn check_embedding(&self, name: &str, sha256: &str) -> Result<(), RouterError> {
        if self.model.embedding_sha256 != sha256 {
            return Err(RouterError::EmbeddingModel {
                trained: self.model.embedding_model.clone(),
                trained_sha: self.model.embedding_sha256.clone(),
                serving: name.into(),
                serving_sha: sha256.into(),
            });
        }
        Ok(())
    }

    /// The feature vector of an utterance: its embedding, then its hashed n-grams.
    ///
    /// # Errors
    /// [`RouterError::Dims`] when the embedding has the wrong width.
    pub fn features(&self, embedding: &[f32], text: &str) -> Result<Vec<f32>, RouterError> {
        let dims = self.model.embedding_dims as usize;
        if embedding.len() != dims {
            return Err(RouterError::Dims {
                got: embedding.len(),
                want: dims,
            });
        }
        let mut x = embedding.to_vec();
        x.extend(text_features(text, self.model.ngram_buckets as usize));
        Ok(x)
    }

    /// Raw logits (before temperature) of a feature vector.
    pub fn logits(&self, features: &[f32]) -> Vec<f32> {
        let mut x = features.to_vec();
        let last = self.layers.len() - 1;
        for (i, (n_in, n_out, w, b)) in self.layers.iter().enumerate() {
            let mut y = b.clone();
            for (r, &xi) in x.iter().enumerate().take(*n_in) {
                if xi == 0.0 {
                    continue;
                }
                let row = &w[r * n_out..(r + 1) * n_out];
                for (yj, wj) in y.iter_mut().zip(row) {
                    *yj += xi * wj;
                }
            }
            if i < last {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            x = y;
        }
        x
    }

    /// Calibrated probabilities of a feature vector.
    pub fn probabilities(&self, features: &[f32]) -> Vec<f32> {
        softmax(&self.logits(features), self.model.temperature)
    }

    /// The most likely label of an utterance, with its calibrated confidence.
    ///
    /// # Errors
    /// [`RouterError::Dims`] when the embedding has the wrong width.
    pub fn predict(&self, embedding: &[f32], text: &str) -> Result<Prediction, RouterError> {
        let p = self.probabilities(&self.features(embedding, text)?);
        let (best, confidence) = argmax(&p);
        Ok(Prediction {
            label: self.model.labels[best].clone(),
            confidence,
            probabilities: p,
        })
    }
}

/// `softmax(logits / temperature)`.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = temperature.max(1e-3);
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = logits.iter().map(|l| ((l - max) / t).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Index and value of the largest element (the first on ties); `(0, 0.0)` when empty.
pub fn argmax(values: &[f32]) -> (usize, f32) {
    let mut best = (0, 0.0);
    for (i, &v) in values.iter().enumerate() {
        if i == 0 || v > best.1 {
            best = (i, v);
        }
    }
    best
}

/// The words of an utterance as the router sees them: lowercase letters, digits and
/// apostrophes; everything else separates.
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .map(|w| {
            // Digits carry no meaning for the choice of tool ("7 minutes" ~ "20 minutes").
            if w.chars().all(|c| c.is_ascii_digit()) {
                "#".into()
            } else {
                w.to_string()
            }
        })
        .collect()
}

/// Hashed word unigrams and bigrams (FNV-1a, sign from a second bit), L2-normalised; `buckets`
/// values (empty for 0).
pub fn text_features(text: &str, buckets: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; buckets];
    if buckets == 0 {
        return v;
    }
    let w = words(text);
    let mut add = |gram: &str| {
        let h = fnv1a(gram.as_bytes());
        let i = (h % buckets as u64) as usize;
        v[i] += if (h >> 63) & 1 == 0 { 1.0 } else { -1.0 };
    };
    for (i, a) in w.iter().enumerate() {
        add(a);
        if let Some(b) = w.get(i + 1) {
            add(&format!("{a} {b}"));
        }
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Request body of `training.promote`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promote {
    pub version: u64,
}

/// One stored router version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub version: u64,
    pub created_ms: u64,
    pub sha256: String,
    pub size: u64,
    pub embedding_model: String,
    pub embedding_sha256: String,
    pub labels: Vec<String>,
    pub temperature: f32,
    pub provenance: RouterProvenance,
    /// The one the agent uses.
    pub current: bool,
}

/// Reply to `training.models`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Models {
    pub current: Option<u64>,
    /// Oldest first.
    pub models: Vec<ModelInfo>,
}

/// Reply to `training.train`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trained {
    pub model: ModelInfo,
    pub promoted: bool,
    /// Why it was (or was not) promoted, for people.
    pub decision: String,
    /// The new model and the one in use, on the same validation set (the one in use: absent
    /// when there was none).
    pub candidate: RouterMetrics,
    #[serde(default)]
    pub incumbent: Option<RouterMetrics>,
    /// Whether the agent took the new router (when promoted).
    #[serde(default)]
    pub agent_loaded: bool,
}

/// A router on the bus: `training.router` reply and `agent.router` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterFile {
    pub version: u64,
    /// sha256 of `bytes`, hex.
    pub sha256: String,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> RouterModel {
        // 2 embedding dims + 0 buckets → 2 labels, identity weights.
        RouterModel {
            format: ROUTER_FORMAT,
            version: 1,
            created_ms: 0,
            labels: vec!["set_timer".into(), NONE_LABEL.into()],
            embedding_model: "e".into(),
            embedding_sha256: "abc".into(),
            embedding_dims: 2,
            ngram_buckets: 0,
            layers: vec![Dense {
                inputs: 2,
                outputs: 2,
                weights: float_bytes(&[1.0, 0.0, 0.0, 1.0]),
                bias: float_bytes(&[0.0, 0.0]),
            }],
            temperature: 1.0,
            provenance: RouterProvenance::default(),
        }
    }

    #[test]
    fn predicts_through_the_layers_and_the_temperature() {
        let r = RouterModel::decode(&tiny().encode()).expect("valid");
        let p = r.predict(&[2.0, 0.0], "x").expect("dims");
        assert_eq!(p.label, "set_timer");
        let want = 1.0 / (1.0 + (-2.0f32).exp());
        assert!((p.confidence - want).abs() < 1e-6, "{}", p.confidence);
        let mut hot = tiny();
        hot.temperature = 2.0;
        let p2 = Router::new(hot).expect("valid").predict(&[2.0, 0.0], "x");
        assert!(p2.expect("dims").confidence < p.confidence);
        assert!(matches!(
            r.predict(&[1.0], "x"),
            Err(RouterError::Dims { got: 1, want: 2 })
        ));
    }

    #[test]
    fn refuses_files_that_do_not_add_up() {
        assert!(matches!(
            RouterModel::decode(b"\x93garbage"),
            Err(RouterError::Decode(_))
        ));
        let mut m = tiny();
        m.format = 9;
        assert_eq!(Router::new(m).err(), Some(RouterError::Format(9)));
        let mut m = tiny();
        m.layers[0].weights.pop();
        assert!(matches!(Router::new(m), Err(RouterError::Shape(_))));
        let mut m = tiny();
        m.layers[0].bias = float_bytes(&[f32::NAN, 0.0]);
        assert!(matches!(Router::new(m), Err(RouterError::Shape(_))));
        let mut m = tiny();
        m.labels = vec!["a".into(), "b".into()];
        assert!(matches!(Router::new(m), Err(RouterError::Shape(_))));
        let r = Router::new(tiny()).expect("valid");
        assert!(r.check_embedding("e", "abc").is_ok());
        assert!(matches!(
            r.check_embedding("e", "def"),
            Err(RouterError::EmbeddingModel { .. })
        ));
    }

    #[test]
    fn text_features_are_stable_normalised_and_ignore_digits() {
        let a = text_features("Set a timer for 7 minutes!", 64);
        let b = text_features("set a timer for 20 minutes", 64);
        assert_eq!(a, b);
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_ne!(a, text_features("what time is it", 64));
        assert!(text_features("", 8).iter().all(|v| *v == 0.0));
        assert!(text_features("anything", 0).is_empty());
        // Pinned: a change of hashing silently breaks every stored router.
        assert_eq!(fnv1a(b"timer"), 0x2933_8b6c_3928_6b02);
    }
}
