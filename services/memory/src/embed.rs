//! Sentence embeddings with llama.cpp: the memory service's own model and context, on a thread of
//! its own, so that a recall never waits behind the chat model.
//!
//! The model is all-MiniLM-L6-v2 converted to GGUF (`models/minilm.py`) with mean pooling; the
//! vectors are L2-normalised here. Requests that arrive while a batch runs are packed into the
//! next one (up to [`BATCH_TOKENS`] tokens, [`MAX_SEQS`] texts), so a burst of remembers costs
//! one encoder pass per batch rather than one per text.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

/// Tokens in one encoder pass (every sequence of a batch must fit in it whole).
pub const BATCH_TOKENS: usize = 2048;
/// Texts in one encoder pass.
pub const MAX_SEQS: usize = 64;

/// Why a text could not be embedded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    #[error("text is empty")]
    Empty,
    #[error("text is {tokens} tokens; the embedding model reads at most {max}: split it")]
    TooLong { tokens: usize, max: usize },
    #[error("the embedding engine stopped")]
    Stopped,
    #[error("embedding failed: {0}")]
    Engine(String),
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartEmbedderError {
    #[error("llama.cpp backend: {0}")]
    Backend(String),
    #[error("cannot load the embedding model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("cannot create the embedding context: {0}")]
    Context(String),
    #[error("the embedding model {path} gives no pooled vectors: {reason}")]
    NotAnEmbeddingModel { path: String, reason: String },
}

type Reply = tokio::sync::oneshot::Receiver<Result<Vec<Vec<f32>>, EmbedError>>;

struct Job {
    texts: Vec<String>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Vec<f32>>, EmbedError>>,
}

/// A handle to the embedding thread; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    tx: mpsc::Sender<Job>,
    pub model: String,
    /// sha256 of the model file, from the manifest (the file was verified against it).
    pub sha256: String,
    pub dims: usize,
    /// The most tokens one text may have (the model's trained context).
    pub max_tokens: usize,
}

impl Embedder {
    /// Loads `path` and starts the embedding thread; returns once a first text has been embedded.
    ///
    /// # Errors
    /// When the model cannot be loaded or gives no pooled embeddings.
    pub fn start(name: &str, path: PathBuf, threads: u32) -> Result<Self, StartEmbedderError> {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("embed".into())
            .spawn(move || engine_thread(path, threads, rx, ready_tx))
            .map_err(|e| StartEmbedderError::Context(e.to_string()))?;
        let (dims, max_tokens) = ready_rx
            .recv()
            .map_err(|_| StartEmbedderError::Context("the embedding thread died".into()))??;
        Ok(Self {
            tx,
            model: name.into(),
            sha256: String::new(),
            dims,
            max_tokens,
        })
    }

    /// Embeds `texts` (in order) into L2-normalised vectors.
    ///
    /// # Errors
    /// [`EmbedError`]: an empty or too long text fails the whole call (say which by index in
    /// the caller), as does a stopped engine.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self.submit(texts)? {
            Some(rx) => rx.await.map_err(|_| EmbedError::Stopped)?,
            None => Ok(Vec::new()),
        }
    }

    /// [`Embedder::embed`] for callers outside the runtime (tests, benches, blocking code).
    ///
    /// # Errors
    /// As [`Embedder::embed`].
    pub fn embed_blocking(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        match self.submit(texts)? {
            Some(rx) => rx.blocking_recv().map_err(|_| EmbedError::Stopped)?,
            None => Ok(Vec::new()),
        }
    }

    /// Queues `texts` for the engine thread; `None` when there is nothing to embed.
    fn submit(&self, texts: Vec<String>) -> Result<Option<Reply>, EmbedError> {
        if texts.is_empty() {
            return Ok(None);
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job { texts, reply })
            .map_err(|_| EmbedError::Stopped)?;
        Ok(Some(rx))
    }
}

fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: std::sync::OnceLock<Result<LlamaBackend, String>> = std::sync::OnceLock::new();
    BACKEND
        .get_or_init(|| {
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

type Ready = Result<(usize, usize), StartEmbedderError>;

fn engine_thread(path: PathBuf, threads: u32, rx: mpsc::Receiver<Job>, ready: mpsc::Sender<Ready>) {
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(StartEmbedderError::Backend(e)));
            return;
        }
    };
    let shown = path.display().to_string();
    let model = match LlamaModel::load_from_file(
        backend,
        &path,
        &LlamaModelParams::default().with_use_mmap(true),
    ) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(StartEmbedderError::Load {
                path: shown,
                reason: e.to_string(),
            }));
            return;
        }
    };
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
    } else {
        threads
    } as i32;
    let params = |threads: i32| {
        LlamaContextParams::default()
            .with_embeddings(true)
            .with_pooling_type(LlamaPoolingType::Mean)
            .with_n_ctx(NonZeroU32::new(BATCH_TOKENS as u32))
            .with_n_batch(BATCH_TOKENS as u32)
            .with_n_ubatch(BATCH_TOKENS as u32)
            .with_n_seq_max(MAX_SEQS as u32)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
    };
    // A context of one thread beside it, for when other processes hold the CPUs (see
    // `one_thread`): llama-cpp-2 does not let a context change its thread count.
    let mut contexts = Vec::new();
    for t in if threads > 1 {
        vec![threads, 1]
    } else {
        vec![1]
    } {
        match model.new_context(backend, params(t)) {
            Ok(c) => contexts.push(c),
            Err(e) => {
                let _ = ready.send(Err(StartEmbedderError::Context(e.to_string())));
                return;
            }
        }
    }
    let dims = usize::try_from(model.n_embd()).unwrap_or(0);
    let max_tokens = (model.n_ctx_train() as usize).min(BATCH_TOKENS);
    let mut engines: Vec<Engine> = contexts
        .iter_mut()
        .map(|ctx| Engine {
            model: &model,
            ctx,
            dims,
            max_tokens,
        })
        .collect();
    // One real pass now: a broken model fails the start, not the first user's request.
    for engine in &mut engines {
        if let Err(e) = engine.embed_all(&["warm up".to_string()]) {
            let _ = ready.send(Err(StartEmbedderError::NotAnEmbeddingModel {
                path: shown,
                reason: e.to_string(),
            }));
            return;
        }
    }
    let _ = ready.send(Ok((dims, max_tokens)));
    while let Ok(first) = rx.recv() {
        // Take whatever else is already waiting into the same round of batches.
        let mut jobs = vec![first];
        while let Ok(more) = rx.try_recv() {
            jobs.push(more);
            if jobs.len() >= MAX_SEQS {
                break;
            }
        }
        let started = Instant::now();
        let texts: Vec<String> = jobs.iter().flat_map(|j| j.texts.iter().cloned()).collect();
        let n = texts.len();
        let one = engines.len() > 1 && one_thread(threads as u32, &texts);
        let engine = if one { engines.len() - 1 } else { 0 };
        let mut results = engines[engine].embed_each(&texts);
        tracing::debug!(
            texts = n,
            jobs = jobs.len(),
            one_thread = one,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "embedded"
        );
        for job in jobs.into_iter().rev() {
            let mine = results.split_off(results.len() - job.texts.len());
            let out: Result<Vec<Vec<f32>>, EmbedError> = mine.into_iter().collect();
            let _ = job.reply.send(out);
        }
    }
}

/// Whether a round of `texts` runs on the one-thread context rather than on all `threads`:
/// when other processes hold the CPUs and the round is short. ggml's threads meet at a spinning
/// barrier after every operation, so two threads beside another process's computation on two
/// CPUs wait on each other: in the voice bench, the agent's router embedding one utterance
/// while the audio service's guided search ran took ~300 ms where it takes a few. A long
/// round (indexing documents) keeps all threads: it is not what anyone waits on at once.
fn one_thread(threads: u32, texts: &[String]) -> bool {
    const SHORT_BYTES: usize = 1000;
    texts.iter().map(String::len).sum::<usize>() <= SHORT_BYTES
        && ming_bus::cpu::CpuGauge::shared().threads(threads) == 1
}

struct Engine<'m, 'c> {
    model: &'m LlamaModel,
    ctx: &'c mut llama_cpp_2::context::LlamaContext<'m>,
    dims: usize,
    max_tokens: usize,
}

impl Engine<'_, '_> {
    fn embed_all(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.embed_each(texts).into_iter().collect()
    }

    /// One result per text: texts that cannot be embedded fail alone.
    fn embed_each(&mut self, texts: &[String]) -> Vec<Result<Vec<f32>, EmbedError>> {
        let mut out: Vec<Option<Result<Vec<f32>, EmbedError>>> = vec![None; texts.len()];
        let mut pending: Vec<(usize, Vec<LlamaToken>)> = Vec::new();
        let mut pending_tokens = 0;
        for (i, text) in texts.iter().enumerate() {
            if text.trim().is_empty() {
                out[i] = Some(Err(EmbedError::Empty));
                continue;
            }
            let tokens = self.model.vocab().tokenize(text.as_bytes(), true, false);
            if tokens.len() > self.max_tokens {
                out[i] = Some(Err(EmbedError::TooLong {
                    tokens: tokens.len(),
                    max: self.max_tokens,
                }));
                continue;
            }
            if pending.len() == MAX_SEQS || pending_tokens + tokens.len() > BATCH_TOKENS {
                self.run(&mut pending, &mut out);
                pending_tokens = 0;
            }
            pending_tokens += tokens.len();
            pending.push((i, tokens));
        }
        self.run(&mut pending, &mut out);
        out.into_iter()
            .map(|r| r.unwrap_or(Err(EmbedError::Engine("not embedded".into()))))
            .collect()
    }

    fn run(
        &mut self,
        pending: &mut Vec<(usize, Vec<LlamaToken>)>,
        out: &mut [Option<Result<Vec<f32>, EmbedError>>],
    ) {
        if pending.is_empty() {
            return;
        }
        let result = self.encode(pending);
        for (seq, (i, _)) in pending.iter().enumerate() {
            out[*i] = Some(match &result {
                Ok(vectors) => Ok(vectors[seq].clone()),
                Err(e) => Err(e.clone()),
            });
        }
        pending.clear();
    }

    fn encode(&mut self, seqs: &[(usize, Vec<LlamaToken>)]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let total: usize = seqs.iter().map(|(_, t)| t.len()).sum();
        let mut batch = LlamaBatch::new(total.max(1), seqs.len() as i32);
        for (seq, (_, tokens)) in seqs.iter().enumerate() {
            batch
                .add_sequence(tokens, seq as i32, false)
                .map_err(|e| EmbedError::Engine(e.to_string()))?;
        }
        self.ctx.clear_kv_cache();
        self.ctx
            .encode(&mut batch)
            .map_err(|e| EmbedError::Engine(e.to_string()))?;
        let mut vectors = Vec::with_capacity(seqs.len());
        for seq in 0..seqs.len() {
            let v = self
                .ctx
                .embeddings_seq_ith(seq as i32)
                .map_err(|e| EmbedError::Engine(e.to_string()))?;
            if v.len() != self.dims {
                return Err(EmbedError::Engine(format!(
                    "pooled vector has {} values, the model {}",
                    v.len(),
                    self.dims
                )));
            }
            vectors.push(normalised(v));
        }
        Ok(vectors)
    }
}

/// `v / |v|` (a zero vector stays zero).
pub fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| x / norm).collect()
}

/// Cosine similarity of two normalised vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
