//! `ming-inference`: local LLM inference on llama.cpp (through `llama-cpp-2`).
//!
//! Loads the configured chat model (a verified GGUF from `just models`) once, memory-mapped,
//! warms it up, restores its prompt cache, and only then registers on the bus. Serves
//! `inference.chat` (streamed tokens, sampling, stop strings, grammar-constrained tool calls and
//! JSON output, cancellation and deadlines, usage figures) and `inference.info`.
//!
//! # Layout
//! - `ming_config::models`: the model manifest and the verified model file.
//! - [`engine`]: the engine thread: prompt cache, prefill, sampling, streaming.
//! - [`tools`]: JSON Schema → grammar for tool calls and JSON answers.
//! - [`run`]: start the engine, then serve.

pub mod engine;
pub mod tools;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusConfig, BusError};
use ming_config::{Config, Paths};
use ming_schemas::envelope::now_ms;
use ming_schemas::inference::{ChatChunk, ChatRequest};
use ming_schemas::{kinds, ErrorCode};

use crate::engine::{Engine, EngineConfig, Job, StartEngineError};
use ming_config::models::{self as model, ResolveModelError};

/// The name this service registers under (unless `MING_SERVICE` names another).
pub const SERVICE: &str = "inference";

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The model cannot be used as configured (missing, unverified, unknown): not worth a
    /// restart (exit status 78).
    #[error(transparent)]
    Model(#[from] ResolveModelError),
    #[error(transparent)]
    Engine(#[from] StartEngineError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// The `inference` request handler.
pub struct InferenceService {
    engine: Engine,
}

impl Handler for InferenceService {
    async fn handle(&self, req: Request, mut resp: Responder) {
        match req.kind() {
            kinds::INFERENCE_INFO => resp.reply(&self.engine.info),
            kinds::INFERENCE_CHAT => {
                let chat: ChatRequest = match req.body() {
                    Ok(c) => c,
                    Err(e) => return resp.fail(&e),
                };
                let constraint = match tools::constraint(&chat) {
                    Ok(c) => c,
                    Err(e) => return resp.fail(&e),
                };
                // Stop a little before the caller's deadline, so that the reply with what was
                // generated (finish reason `deadline`) reaches it before the broker's Timeout.
                let left = req.envelope.deadline_ms.saturating_sub(now_ms());
                let margin = (left / 5).min(250);
                let deadline = Instant::now() + Duration::from_millis(left - margin);
                let stream = chat.stream;
                let ahead = self.engine.queued();
                if stream && ahead > 0 {
                    resp.partial(&ChatChunk {
                        text: String::new(),
                        queue_position: Some(ahead as u32),
                    });
                }
                let job = Job {
                    request: chat,
                    constraint,
                    responder: resp,
                    cancelled: req.cancelled,
                    deadline,
                };
                if let Err(job) = self.engine.submit(job) {
                    job.responder
                        .error(ErrorCode::Internal, "the inference engine has stopped");
                }
            }
            other => resp.error(
                ErrorCode::Unsupported,
                format!("inference does not handle `{other}`"),
            ),
        }
    }

    fn draining(&self) {
        self.engine.drain();
    }

    fn detail(&self) -> String {
        format!(
            "{} ({} parameters, context {} tokens, {} threads)",
            self.engine.info.model,
            self.engine.info.parameters,
            self.engine.info.context_tokens,
            self.engine.info.threads
        )
    }
}

/// Loads the model and serves `inference` on the bus until `shutdown` resolves or the
/// supervisor asks it to drain.
///
/// # Errors
/// [`InferenceError::Model`] when the configured model is not usable (the fix is named),
/// [`InferenceError::Engine`] when llama.cpp cannot load it, [`InferenceError::Bus`] when the bus
/// fails.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), InferenceError> {
    let paths = Paths::resolve(&cfg.paths);
    let (m, path) = model::resolve(&cfg.inference.model, "chat", &paths.model_dir)?;
    let cache_file = cfg.inference.prompt_cache.then(|| {
        paths
            .data_dir
            .join("inference")
            .join(format!("{}-{}.kvcache", m.name, &m.sha256[..12]))
    });
    let started = Instant::now();
    let engine_cfg = EngineConfig {
        model_name: m.name.clone(),
        model_path: path,
        threads: cfg.inference.threads,
        context_tokens: cfg.inference.context_tokens,
        batch_tokens: cfg.inference.batch_tokens,
        max_tokens: cfg.inference.max_tokens,
        cache_file,
    };
    let engine = tokio::task::spawn_blocking(move || Engine::start(engine_cfg))
        .await
        .map_err(|_| StartEngineError::Gone)??;
    tracing::info!(
        model = %engine.info.model,
        file = %engine.info.file,
        context = engine.info.context_tokens,
        threads = engine.info.threads,
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded and warmed up"
    );
    let bus = BusConfig::from_config(&cfg);
    let mut opts = WorkerOptions::from_env(SERVICE);
    opts.drain_grace = Duration::from_millis(cfg.supervisor.drain_grace_ms);
    run_worker(&bus, opts, Arc::new(InferenceService { engine }), shutdown).await?;
    Ok(())
}
