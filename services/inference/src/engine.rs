//! The engine: one thread that owns the model and its context and runs generations one at a
//! time, in arrival order (a fair FIFO queue; callers are told their position).
//!
//! Prompt cache: the context keeps the KV state of the previous conversation in sequence 0. A
//! new prompt reuses the longest common prefix of tokens and computes only the rest, so a fixed
//! system prompt (and the tool list, and the history) is never prefilled twice. After each
//! request the state is saved to disk and it is loaded at start, so a restart is warm too.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;
use ming_bus::worker::Responder;
use ming_schemas::inference::{ChatChunk, ChatReply, ChatRequest, FinishReason, ModelInfo, Usage};
use ming_schemas::{ErrorBody, ErrorCode};
use tokio::sync::watch;

use crate::tools::{self, Constraint};

/// The most prompt tokens computed in one llama.cpp call. A 0.5B model computes about 128 tokens
/// in a few hundred ms on 2 cores, so a cancel waits at most that long (seconds under heavy load
/// instead of tens); batches of 128 keep the matrix kernels as efficient as 512 do on a CPU.
const PREFILL_STEP_TOKENS: usize = 128;
/// Prefill step of a `prefill_only` request (a warm-up of the next prompt): shorter, so that a
/// real request that arrives meanwhile waits for one short step at most.
const WARM_STEP_TOKENS: usize = 32;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub model_name: String,
    pub model_path: PathBuf,
    pub threads: u32,
    pub context_tokens: u32,
    pub batch_tokens: u32,
    pub max_tokens: u32,
    /// Where the prompt cache is saved; `None` disables it.
    pub cache_file: Option<PathBuf>,
}

/// One chat request, queued for the engine.
pub struct Job {
    pub request: ChatRequest,
    pub constraint: Constraint,
    pub responder: Responder,
    pub cancelled: watch::Receiver<bool>,
    pub deadline: Instant,
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartEngineError {
    #[error("cannot initialise llama.cpp: {0}")]
    Backend(String),
    #[error("cannot load {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("{path} has no chat template (a base model?); choose an instruction-tuned model")]
    NoChatTemplate { path: String },
    #[error("cannot create a context: {0}")]
    Context(String),
    #[error("the warm-up generation failed: {0}")]
    WarmUp(String),
    #[error("the engine thread ended during start-up")]
    Gone,
}

/// The running engine: a queue into its thread.
pub struct Engine {
    tx: std::sync::mpsc::Sender<Job>,
    queued: Arc<AtomicUsize>,
    /// Set when the service drains: a `prefill_only` job (a warm-up) stops at its next step.
    draining: Arc<AtomicBool>,
    pub info: ModelInfo,
}

impl Engine {
    /// Loads the model (mmap), warms it up and restores the prompt cache, on the engine thread.
    ///
    /// # Errors
    /// A [`StartEngineError`] saying what failed.
    pub fn start(cfg: EngineConfig) -> Result<Self, StartEngineError> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let draining = Arc::new(AtomicBool::new(false));
        let d = draining.clone();
        std::thread::Builder::new()
            .name("inference-engine".into())
            .spawn(move || engine_thread(cfg, rx, ready_tx, q, d))
            .map_err(|e| StartEngineError::Backend(e.to_string()))?;
        let info = ready_rx.recv().map_err(|_| StartEngineError::Gone)??;
        Ok(Self {
            tx,
            queued,
            draining,
            info,
        })
    }

    /// The service is draining: warm-ups (`prefill_only`) stop at their next step, so that
    /// they do not hold the drain; real requests finish within the grace period.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Jobs waiting or running now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Queues a job; returns how many jobs are ahead of it.
    ///
    /// # Errors
    /// Gives the job back when the engine thread is gone.
    pub fn submit(&self, job: Job) -> Result<usize, Box<Job>> {
        let ahead = self.queued.fetch_add(1, Ordering::SeqCst);
        self.tx.send(job).map_err(|e| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            Box::new(e.0)
        })?;
        Ok(ahead)
    }
}

/// llama.cpp's backend, initialised once per process (a second `init` is refused) and kept for
/// the life of the process, so that an engine can be started again (tests, reloads).
fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: std::sync::OnceLock<Result<LlamaBackend, String>> = std::sync::OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp's own logging goes through `tracing` (RUST_LOG), not raw stderr.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn engine_thread(
    cfg: EngineConfig,
    rx: std::sync::mpsc::Receiver<Job>,
    ready: std::sync::mpsc::Sender<Result<ModelInfo, StartEngineError>>,
    queued: Arc<AtomicUsize>,
    draining: Arc<AtomicBool>,
) {
    let backend = match backend() {
        Ok(b) => b,
        Err(e) => {
            let _ = ready.send(Err(StartEngineError::Backend(e)));
            return;
        }
    };
    let path = cfg.model_path.display().to_string();
    let params = LlamaModelParams::default().with_use_mmap(true);
    let model = match LlamaModel::load_from_file(backend, &cfg.model_path, &params) {
        Ok(m) => m,
        Err(e) => {
            let _ = ready.send(Err(StartEngineError::Load {
                path,
                reason: e.to_string(),
            }));
            return;
        }
    };
    let Ok(template) = model.chat_template(None) else {
        let _ = ready.send(Err(StartEngineError::NoChatTemplate { path }));
        return;
    };
    let threads = if cfg.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
    } else {
        cfg.threads
    };
    let n_ctx = cfg.context_tokens.min(model.n_ctx_train().max(256));
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(cfg.batch_tokens.min(n_ctx))
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let ctx = match model.new_context(backend, ctx_params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(StartEngineError::Context(e.to_string())));
            return;
        }
    };
    let info = ModelInfo {
        model: cfg.model_name.clone(),
        file: path,
        context_tokens: n_ctx,
        threads,
        chat_template: true,
        parameters: model.n_params(),
    };
    let mut engine = Gen {
        cfg,
        model: &model,
        template,
        ctx,
        cached: Vec::new(),
        queued: queued.clone(),
        draining,
    };
    engine.restore_cache();
    if let Err(e) = engine.warm_up() {
        let _ = ready.send(Err(StartEngineError::WarmUp(e)));
        return;
    }
    let _ = ready.send(Ok(info));
    while let Ok(job) = rx.recv() {
        engine.run(job);
        queued.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Gen<'m> {
    cfg: EngineConfig,
    model: &'m LlamaModel,
    template: LlamaChatTemplate,
    ctx: LlamaContext<'m>,
    /// Tokens whose KV state is in sequence 0, in order.
    cached: Vec<LlamaToken>,
    /// Jobs waiting or running (a `prefill_only` job gives way when it is not alone).
    queued: Arc<AtomicUsize>,
    /// The service drains (a `prefill_only` job gives way then too).
    draining: Arc<AtomicBool>,
}

/// How a generation ended, before the reply is built.
struct Outcome {
    text: String,
    finish: FinishReason,
    usage: Usage,
}

impl Gen<'_> {
    fn restore_cache(&mut self) {
        let Some(file) = self.cfg.cache_file.clone() else {
            return;
        };
        if !file.exists() {
            return;
        }
        let max = self.ctx.n_ctx() as usize;
        match self.ctx.state_seq_load_file(&file, 0, max) {
            Ok((tokens, _)) => {
                tracing::info!(tokens = tokens.len(), file = %file.display(), "prompt cache restored");
                self.cached = tokens;
            }
            Err(e) => {
                tracing::warn!(error = %e, file = %file.display(), "prompt cache unusable; starting cold");
                let _ = std::fs::remove_file(&file);
                self.ctx.clear_kv_cache();
                self.cached.clear();
            }
        }
    }

    fn save_cache(&self) {
        let Some(file) = &self.cfg.cache_file else {
            return;
        };
        if self.cached.is_empty() {
            return;
        }
        let tmp = file.with_extension("tmp");
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        match self.ctx.state_seq_save_file(&tmp, 0, &self.cached) {
            Ok(_) => {
                if let Err(e) = std::fs::rename(&tmp, file) {
                    tracing::warn!(error = %e, "cannot move the prompt cache into place");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot save the prompt cache"),
        }
    }

    /// One short generation so that the first user request does not pay for lazy set-up.
    fn warm_up(&mut self) -> Result<(), String> {
        let tokens = self.model.vocab().tokenize(b"Hello", true, false);
        let mut batch = LlamaBatch::new(tokens.len().max(1), 1);
        // Position it after what the restored cache holds, then drop it again.
        let start = self.cached.len();
        for (i, t) in tokens.iter().enumerate() {
            batch
                .add(*t, (start + i) as i32, &[0], i + 1 == tokens.len())
                .map_err(|e| e.to_string())?;
        }
        self.ctx.decode(&mut batch).map_err(|e| e.to_string())?;
        self.ctx
            .kv_cache_seq_rm(0, Some(start as u32), None)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn run(&mut self, job: Job) {
        let Job {
            request,
            constraint,
            responder,
            cancelled,
            deadline,
        } = job;
        let mut responder = responder;
        tracing::info!(
            messages = request.messages.len(),
            tool_call = constraint.expects_tool_call,
            prefill_only = request.prefill_only,
            "generation started"
        );
        match self.generate(&request, &constraint, &mut responder, &cancelled, deadline) {
            Ok(out) => {
                tracing::info!(
                    finish = ?out.finish,
                    prompt_tokens = out.usage.prompt_tokens,
                    cached_prompt_tokens = out.usage.cached_prompt_tokens,
                    generated_tokens = out.usage.generated_tokens,
                    ttft_ms = out.usage.time_to_first_token_ms.round(),
                    "generation ended"
                );
                let tool_call = if constraint.expects_tool_call
                    && out.finish == FinishReason::Stop
                    && !request.prefill_only
                {
                    match tools::parse_call(&out.text) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            tracing::warn!(error = %e, "constrained output did not parse as a tool call");
                            None
                        }
                    }
                } else {
                    None
                };
                responder.reply(&ChatReply {
                    text: out.text,
                    tool_call,
                    finish_reason: out.finish,
                    usage: out.usage,
                    model: self.cfg.model_name.clone(),
                });
            }
            Err(e) => responder.fail(&e),
        }
        self.save_cache();
    }

    fn prompt_text(&self, req: &ChatRequest, constraint: &Constraint) -> Result<String, ErrorBody> {
        if req.messages.is_empty() {
            return Err(ErrorBody::new(ErrorCode::BadRequest, "messages is empty"));
        }
        let mut msgs = Vec::with_capacity(req.messages.len() + 1);
        let mut addendum = constraint.system_addendum.clone();
        if let Some(extra) = &addendum {
            if req.messages[0].role != "system" {
                msgs.push(("system".to_string(), extra.clone()));
                addendum = None;
            }
        }
        for (i, m) in req.messages.iter().enumerate() {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                return Err(ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!(
                        "message {i} has role `{}`; roles are system, user, assistant, tool",
                        m.role
                    ),
                ));
            }
            let mut content = m.content.clone();
            if i == 0 {
                if let Some(extra) = addendum.take() {
                    content = format!("{content}\n\n{extra}");
                }
            }
            msgs.push((m.role.clone(), content));
        }
        let chat: Vec<LlamaChatMessage> = msgs
            .into_iter()
            .map(|(r, c)| LlamaChatMessage::new(r, c))
            .collect::<Result<_, _>>()
            .map_err(|e| {
                ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!("a message contains a NUL byte: {e}"),
                )
            })?;
        // A warm-up stops at the end of the last message: the request it prepares continues
        // with another message, not with the assistant's opening.
        self.model
            .apply_chat_template(&self.template, &chat, !req.prefill_only)
            .map_err(|e| {
                ErrorBody::new(
                    ErrorCode::Internal,
                    format!("cannot apply the chat template: {e}"),
                )
            })
    }

    fn sampler(&self, req: &ChatRequest, constraint: &Constraint) -> Result<Sampler, ErrorBody> {
        let s = &req.sampling;
        let grammar = match &constraint.grammar {
            Some(g) => Some(LlamaSampler::grammar(self.model, g, "root").map_err(|e| {
                ErrorBody::new(
                    ErrorCode::BadRequest,
                    format!("the grammar is invalid: {e}"),
                )
            })?),
            None => None,
        };
        let mut chain = Vec::new();
        if (s.repeat_penalty - 1.0).abs() > f32::EPSILON {
            chain.push(LlamaSampler::penalties(
                self.model.n_vocab(),
                64,
                s.repeat_penalty,
                0.0,
                0.0,
            ));
        }
        if s.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            if s.top_k > 0 {
                chain.push(LlamaSampler::top_k(s.top_k));
            }
            if s.top_p < 1.0 {
                chain.push(LlamaSampler::top_p(s.top_p, 1));
            }
            if s.min_p > 0.0 {
                chain.push(LlamaSampler::min_p(s.min_p, 1));
            }
            chain.push(LlamaSampler::temp(s.temperature));
            chain.push(LlamaSampler::dist(s.seed));
        }
        Ok(Sampler {
            grammar,
            chain: LlamaSampler::chain_simple(chain),
        })
    }

    fn generate(
        &mut self,
        req: &ChatRequest,
        constraint: &Constraint,
        resp: &mut Responder,
        cancelled: &watch::Receiver<bool>,
        deadline: Instant,
    ) -> Result<Outcome, ErrorBody> {
        let started = Instant::now();
        let prompt_text = self.prompt_text(req, constraint)?;
        // Special tokens in the template (<|im_start|> …) are parsed as such.
        let mut prompt = self
            .model
            .vocab()
            .tokenize(prompt_text.as_bytes(), true, true);
        let mut sampler = if req.prefill_only {
            None
        } else {
            Some(self.sampler(req, constraint)?)
        };
        // The start that every allowed output shares is computed with the prompt; the grammar
        // is moved past it. Should the grammar refuse it, the output is decoded from the start.
        let mut forced = String::new();
        if let Some(s) = sampler.as_mut() {
            if !constraint.forced.is_empty() {
                let tokens =
                    self.model
                        .vocab()
                        .tokenize(constraint.forced.as_bytes(), false, false);
                if s.force(&tokens) {
                    prompt.extend_from_slice(&tokens);
                    forced.clone_from(&constraint.forced);
                } else {
                    tracing::warn!(forced = %constraint.forced, "the grammar refuses the forced start; decoding it");
                    sampler = Some(self.sampler(req, constraint)?);
                }
            }
        }
        if prompt.is_empty() {
            return Err(ErrorBody::new(ErrorCode::BadRequest, "the prompt is empty"));
        }
        let n_ctx = self.ctx.n_ctx() as usize;
        if prompt.len() >= n_ctx {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!(
                    "the prompt is {} tokens; the context holds {n_ctx} (inference.context_tokens), with room left to answer",
                    prompt.len()
                ),
            ));
        }
        let internal =
            |what: &str, e: String| ErrorBody::new(ErrorCode::Internal, format!("{what}: {e}"));

        // Reuse the longest common prefix; at least the last prompt token is computed again, for
        // its logits.
        let mut keep = if self.cfg.cache_file.is_some() {
            self.cached
                .iter()
                .zip(&prompt)
                .take_while(|(a, b)| a == b)
                .count()
        } else {
            0 // prompt cache off: every prompt is computed in full
        };
        keep = keep.min(prompt.len() - 1);
        self.ctx
            .kv_cache_seq_rm(0, Some(keep as u32), None)
            .map_err(|e| internal("cannot trim the KV cache", e.to_string()))?;
        self.cached.truncate(keep);

        let n_batch = self.ctx.n_batch() as usize;
        let mut batch = LlamaBatch::new(n_batch.max(1), 1);
        // A cancel or the deadline is seen between prefill steps only (llama.cpp's decode cannot
        // be interrupted through llama-cpp-2), so a step is kept short enough to answer one soon.
        let step = n_batch.clamp(
            1,
            if req.prefill_only {
                WARM_STEP_TOKENS
            } else {
                PREFILL_STEP_TOKENS
            },
        );
        let mut pos = keep;
        while pos < prompt.len() {
            let give_way = req.prefill_only
                && (self.queued.load(Ordering::SeqCst) > 1 || self.draining.load(Ordering::SeqCst));
            if give_way || *cancelled.borrow() || Instant::now() >= deadline {
                let finish = if give_way || *cancelled.borrow() {
                    FinishReason::Cancelled
                } else {
                    FinishReason::Deadline
                };
                return Ok(Outcome {
                    text: String::new(),
                    finish,
                    usage: Usage {
                        prompt_tokens: prompt.len() as u32,
                        cached_prompt_tokens: keep as u32,
                        ..Usage::default()
                    },
                });
            }
            batch.clear();
            let end = (pos + step).min(prompt.len());
            for (i, t) in prompt[pos..end].iter().enumerate() {
                let p = pos + i;
                batch
                    .add(*t, p as i32, &[0], p + 1 == prompt.len())
                    .map_err(|e| internal("batch", e.to_string()))?;
            }
            self.ctx
                .decode(&mut batch)
                .map_err(|e| internal("prefill failed", e.to_string()))?;
            self.cached.extend_from_slice(&prompt[pos..end]);
            pos = end;
        }
        let prefill_done = Instant::now();
        let prefill_s = prefill_done.duration_since(started).as_secs_f64();
        let prefill_tokens_per_s = if prefill_s > 0.0 {
            (prompt.len() - keep) as f64 / prefill_s
        } else {
            0.0
        };
        let Some(mut sampler) = sampler else {
            return Ok(Outcome {
                text: String::new(),
                finish: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: prompt.len() as u32,
                    cached_prompt_tokens: keep as u32,
                    prefill_tokens_per_s,
                    ..Usage::default()
                },
            });
        };

        let max_new = req.max_tokens.unwrap_or(self.cfg.max_tokens).max(1) as usize;
        let max_new = max_new.min(n_ctx - prompt.len());
        let mut text = forced;
        let mut pending = Vec::<u8>::new();
        let mut streamed = 0usize;
        let mut generated = 0usize;
        let mut first_token: Option<Instant> = None;
        let mut jumped_tokens = 0usize;
        let finish = loop {
            let token = sampler.sample(&self.ctx);
            if first_token.is_none() {
                first_token = Some(Instant::now());
            }
            if self.model.vocab().is_eog(token) {
                break FinishReason::Stop;
            }
            generated += 1;
            pending.extend(self.model.vocab().token_to_piece(token, false, None));
            take_utf8(&mut pending, &mut text);
            if let Some(cut) = find_stop(&text, &req.stop) {
                text.truncate(cut);
                break FinishReason::Stop;
            }
            if req.stream {
                let safe = stream_boundary(&text, &req.stop);
                if safe > streamed {
                    resp.partial(&ChatChunk {
                        text: text[streamed..safe].to_string(),
                        queue_position: None,
                    });
                    streamed = safe;
                }
            }
            // A tool call that is whole needs no end-of-generation token to be known as such.
            if constraint.expects_tool_call
                && pending.is_empty()
                && text.trim_end().ends_with('}')
                && serde_json::from_str::<serde_json::Value>(&text).is_ok()
            {
                break FinishReason::Stop;
            }
            if generated >= max_new {
                break FinishReason::Length;
            }
            if *cancelled.borrow() {
                break FinishReason::Cancelled;
            }
            if Instant::now() >= deadline {
                break FinishReason::Deadline;
            }
            // What the grammar allows next may be known: computed with this token, in one batch.
            let jump = if pending.is_empty() {
                constraint
                    .continuation(&text)
                    .map(|rest| self.model.vocab().tokenize(rest.as_bytes(), false, false))
                    .filter(|tokens| tokens.len() < n_batch && sampler.jump(tokens))
            } else {
                None
            };
            batch.clear();
            let jumped = jump.as_deref().unwrap_or_default();
            let pos = self.cached.len();
            batch
                .add(token, pos as i32, &[0], jumped.is_empty())
                .map_err(|e| internal("batch", e.to_string()))?;
            for (i, t) in jumped.iter().enumerate() {
                batch
                    .add(*t, (pos + 1 + i) as i32, &[0], i + 1 == jumped.len())
                    .map_err(|e| internal("batch", e.to_string()))?;
            }
            self.ctx
                .decode(&mut batch)
                .map_err(|e| internal("decode failed", e.to_string()))?;
            self.cached.push(token);
            self.cached.extend_from_slice(jumped);
            for t in jumped {
                pending.extend(self.model.vocab().token_to_piece(*t, false, None));
            }
            take_utf8(&mut pending, &mut text);
            // Output tokens like the others (for max_tokens and the rate), if not decoded.
            generated += jumped.len();
            jumped_tokens += jumped.len();
        };
        if jumped_tokens > 0 {
            tracing::debug!(
                jumped_tokens,
                generated,
                "known continuation computed in a batch"
            );
        }
        if req.stream && text.len() > streamed {
            resp.partial(&ChatChunk {
                text: text[streamed..].to_string(),
                queue_position: None,
            });
        }
        let decode_s = first_token.map_or(0.0, |t| t.elapsed().as_secs_f64());
        Ok(Outcome {
            text,
            finish,
            usage: Usage {
                prompt_tokens: prompt.len() as u32,
                cached_prompt_tokens: keep as u32,
                generated_tokens: generated as u32,
                time_to_first_token_ms: first_token
                    .map_or(0.0, |t| t.duration_since(started).as_secs_f64() * 1000.0),
                prefill_tokens_per_s,
                decode_tokens_per_s: if decode_s > 0.0 && generated > 1 {
                    (generated - 1) as f64 / decode_s
                } else {
                    0.0
                },
                jumped_tokens: jumped_tokens as u32,
            },
        })
    }
}

/// A request's sampler: the grammar of a constrained output (tool call, JSON answer) apart from
/// the rest of the chain, so that it is checked against the chosen token first and applied to the
/// whole vocabulary only when that token breaks it (as llama.cpp's own `common_sampler` does).
/// Filtering the whole vocabulary (152k tokens for Qwen2.5) through the grammar before every
/// token costs more than the model's forward pass on this CPU; a greedy pick that the grammar
/// accepts is what happens on almost every token of a tool call.
struct Sampler {
    grammar: Option<LlamaSampler>,
    chain: LlamaSampler,
}

impl Sampler {
    /// Moves the grammar past `tokens` (a start that every output it allows shares); false
    /// when it refuses one of them (the sampler is then spent: make another).
    fn force(&mut self, tokens: &[LlamaToken]) -> bool {
        let Some(grammar) = &mut self.grammar else {
            return false;
        };
        tokens.iter().all(|t| grammar.try_accept(*t).is_ok())
    }

    /// Moves the grammar past `tokens` if it allows all of them (a continuation known from the
    /// output so far); otherwise leaves it as it was and says no.
    fn jump(&mut self, tokens: &[LlamaToken]) -> bool {
        let Some(grammar) = &mut self.grammar else {
            return false;
        };
        let mut trial = grammar.clone();
        if !tokens.iter().all(|t| trial.try_accept(*t).is_ok()) {
            return false;
        }
        *grammar = trial;
        for t in tokens {
            self.chain.accept(*t);
        }
        true
    }

    /// Picks the next token from the last decoded position's logits and accepts it.
    fn sample(&mut self, ctx: &LlamaContext<'_>) -> LlamaToken {
        let mut cur = ctx.token_data_array_ith(-1);
        cur.apply_sampler(&mut self.chain);
        let mut token = picked(&cur);
        if let Some(grammar) = &mut self.grammar {
            let mut one =
                LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 0.0, 0.0)], false);
            one.apply_sampler(grammar);
            if one
                .data
                .first()
                .is_none_or(|d| d.logit() == f32::NEG_INFINITY)
            {
                // The grammar refuses it: filter every candidate, then pick again.
                cur = ctx.token_data_array_ith(-1);
                cur.apply_sampler(grammar);
                cur.apply_sampler(&mut self.chain);
                token = picked(&cur);
            }
            grammar.accept(token);
        }
        self.chain.accept(token);
        token
    }
}

/// The token a sampler chain selected (the chain always ends in greedy or dist, which select).
fn picked(cur: &LlamaTokenDataArray) -> LlamaToken {
    cur.selected_token()
        .or_else(|| cur.data.first().map(LlamaTokenData::id))
        .unwrap_or(LlamaToken(0))
}

/// Moves the complete UTF-8 characters of `pending` into `text` (a token may end mid-character).
fn take_utf8(pending: &mut Vec<u8>, text: &mut String) {
    match std::str::from_utf8(pending) {
        Ok(s) => {
            text.push_str(s);
            pending.clear();
        }
        Err(e) => {
            let valid = e.valid_up_to();
            // Safe: `valid` bytes were just checked.
            text.push_str(std::str::from_utf8(&pending[..valid]).unwrap_or_default());
            if e.error_len().is_some() {
                // Not a truncated character but invalid bytes: replace them.
                text.push_str(&String::from_utf8_lossy(&pending[valid..]));
                pending.clear();
            } else {
                pending.drain(..valid);
            }
        }
    }
}

/// Where the first stop string starts in `text`, if any.
fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// How much of `text` can be streamed: all but a tail that could still become a stop string.
fn stream_boundary(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for s in stops.iter().filter(|s| !s.is_empty()) {
        for k in (1..s.len()).rev() {
            if s.is_char_boundary(k) && text.ends_with(&s[..k]) {
                hold = hold.max(k);
                break;
            }
        }
    }
    let mut cut = text.len() - hold;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens_is_joined() {
        let mut pending = Vec::new();
        let mut text = String::new();
        let bytes = "é!".as_bytes();
        pending.push(bytes[0]);
        take_utf8(&mut pending, &mut text);
        assert_eq!(text, "");
        pending.extend_from_slice(&bytes[1..]);
        take_utf8(&mut pending, &mut text);
        assert_eq!(text, "é!");
    }

    #[test]
    fn stop_strings_are_found_and_held_back_while_streaming() {
        let stops = vec!["\nUser:".to_string()];
        assert_eq!(find_stop("hello\nUser: x", &stops), Some(5));
        assert_eq!(stream_boundary("hello\nUs", &stops), 5);
        assert_eq!(stream_boundary("hello", &stops), 5);
    }
}
