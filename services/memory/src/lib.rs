//! `ming-memory`: the agent's long-term memory on the device — an embedded qdrant-edge store,
//! embeddings computed here with all-MiniLM-L6-v2 through llama.cpp, hybrid recall (dense +
//! BM25 + exact phrase), deduplication, expiry and decay.
//!
//! # Layout
//! - [`embed`]: the embedding engine (its own llama.cpp model and context, on its own thread).
//! - [`store`]: the [`store::Backend`] trait and the embedded qdrant-edge backend.
//! - [`qdrant`]: the same trait over a Qdrant server or cluster (qdrant-client, gRPC).
//! - [`memories`]: the rules shared by every backend (validation, dedup, expiry, fusion).
//! - [`MemoryService`] / [`run`]: the bus side: `memory.*` requests, a background purge.

pub mod embed;
pub mod memories;
pub mod qdrant;
pub mod store;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusConfig, BusError};
use ming_config::models::{self, ResolveModelError};
use ming_config::{Config, Paths};
use ming_schemas::{kinds, ErrorCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::embed::{Embedder, StartEmbedderError};
use crate::memories::{Memories, MemoryError, Settings, SystemClock};
use crate::qdrant::QdrantBackend;
use crate::store::{Backend, EdgeBackend, StoreError};

/// The name this service registers under (unless `MING_SERVICE` names another).
pub const SERVICE: &str = "memory";

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The embedding model is missing, unverified or unknown: not worth a restart (exit 78).
    #[error(transparent)]
    Model(#[from] ResolveModelError),
    #[error(transparent)]
    Embedder(#[from] StartEmbedderError),
    /// The store cannot be opened (exit 78: a restart would not help).
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Backend(String),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Where the edge store lives: `memory.dir`, or `<data_dir>/memory`.
pub fn store_dir(cfg: &Config) -> PathBuf {
    if cfg.memory.dir.is_empty() {
        Paths::resolve(&cfg.paths).data_dir.join("memory")
    } else {
        PathBuf::from(&cfg.memory.dir)
    }
}

/// Loads the embedding model and opens the store as configured.
///
/// # Errors
/// [`StartError`] naming what is wrong and how to fix it.
pub fn open(cfg: &Config) -> Result<Memories, StartError> {
    let paths = Paths::resolve(&cfg.paths);
    let (m, path) = models::resolve(&cfg.memory.embedding_model, "embedding", &paths.model_dir)?;
    let mut embedder = Embedder::start(&m.name, path, cfg.memory.threads)?;
    embedder.sha256.clone_from(&m.sha256);
    let backend: Box<dyn Backend> = match cfg.memory.backend.as_str() {
        "edge" => {
            let dir = store_dir(cfg);
            pin_embedding_model(&dir, &m.name)?;
            Box::new(EdgeBackend::open(&dir, embedder.dims)?)
        }
        "qdrant" => {
            if !cfg.services.get(SERVICE).is_some_and(|s| s.network) {
                return Err(StartError::Backend(
                    "memory.backend = \"qdrant\" needs the network: set [services.memory] network = true".into(),
                ));
            }
            let key_env = &cfg.memory.qdrant_api_key_env;
            let key = if key_env.is_empty() {
                None
            } else {
                Some(std::env::var(key_env).map_err(|_| {
                    StartError::Backend(format!(
                        "memory.qdrant_api_key_env names {key_env}, which is not set"
                    ))
                })?)
            };
            Box::new(QdrantBackend::open(
                &cfg.memory.qdrant_url,
                key,
                &cfg.memory.qdrant_collection,
                embedder.dims,
            )?)
        }
        other => {
            return Err(StartError::Backend(format!(
                "unknown memory.backend {other:?}"
            )))
        }
    };
    Ok(Memories::new(
        backend,
        embedder,
        Settings::from_config(&cfg.memory),
        Arc::new(SystemClock),
    ))
}

/// A store's vectors belong to the model that made them: the first start writes the model's
/// name to `<dir>/embedding-model`, and a later start with another model is refused (vectors of
/// two models must not be compared).
///
/// # Errors
/// [`StoreError::Open`] naming both models and the way to move the memories over.
pub fn pin_embedding_model(dir: &std::path::Path, model: &str) -> Result<(), StoreError> {
    let open_err = |reason: String| StoreError::Open {
        path: dir.display().to_string(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
    let pin = dir.join("embedding-model");
    match std::fs::read_to_string(&pin) {
        Ok(had) if had.trim() == model => Ok(()),
        Ok(had) => Err(open_err(format!(
            "its vectors were made by `{}`, and memory.embedding_model is `{model}`: set it back, or \
             `ming memory export`, move the store away, start with the new model and `ming memory import`",
            had.trim()
        ))),
        Err(_) => std::fs::write(&pin, format!("{model}\n")).map_err(|e| open_err(e.to_string())),
    }
}

/// The `memory` service's request handler.
pub struct MemoryService {
    memories: Arc<Memories>,
}

impl MemoryService {
    pub fn new(memories: Arc<Memories>) -> Self {
        Self { memories }
    }
}

/// Decodes the body, runs `f` off the async threads, answers with its result.
async fn serve<B, R>(
    memories: &Arc<Memories>,
    req: &Request,
    resp: Responder,
    f: fn(&Memories, B) -> Result<R, MemoryError>,
) where
    B: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    let body: B = match req.body() {
        Ok(b) => b,
        Err(e) => return resp.fail(&e),
    };
    let m = Arc::clone(memories);
    match tokio::task::spawn_blocking(move || f(&m, body)).await {
        Ok(Ok(reply)) => resp.reply(&reply),
        Ok(Err(e)) => {
            if e.code() == ErrorCode::Internal {
                tracing::error!(kind = req.kind(), error = %e, "request failed");
            }
            resp.error(e.code(), e.to_string());
        }
        Err(e) => resp.error(ErrorCode::Internal, format!("memory worker failed: {e}")),
    }
}

#[derive(serde::Deserialize)]
struct Empty {}

impl Handler for MemoryService {
    async fn handle(&self, req: Request, resp: Responder) {
        let m = &self.memories;
        match req.kind() {
            kinds::MEMORY_REMEMBER => serve(m, &req, resp, Memories::remember).await,
            kinds::MEMORY_RECALL => serve(m, &req, resp, Memories::recall).await,
            kinds::MEMORY_GET => serve(m, &req, resp, Memories::get).await,
            kinds::MEMORY_UPDATE => serve(m, &req, resp, Memories::update).await,
            kinds::MEMORY_FORGET => serve(m, &req, resp, Memories::forget).await,
            kinds::MEMORY_LIST => serve(m, &req, resp, Memories::list).await,
            kinds::MEMORY_IMPORT => serve(m, &req, resp, Memories::import).await,
            kinds::MEMORY_EMBED => serve(m, &req, resp, Memories::embed_texts).await,
            kinds::MEMORY_STATS => serve(m, &req, resp, |m, _: Empty| m.stats()).await,
            other => resp.error(
                ErrorCode::Unsupported,
                format!("memory does not handle `{other}`"),
            ),
        }
    }

    fn detail(&self) -> String {
        let e = self.memories.embedder();
        format!("{} ({} dims)", e.model, e.dims)
    }
}

/// Opens the store and serves `memory` on the bus until `shutdown` resolves or the supervisor
/// asks it to drain; expired memories are purged every `memory.purge_interval_s`.
///
/// # Errors
/// [`StartError`]; `Model`, `Store` and `Backend` mean the configuration must change.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let started = Instant::now();
    let cfg2 = cfg.clone();
    let memories = tokio::task::spawn_blocking(move || open(&cfg2))
        .await
        .map_err(|e| StartError::Backend(format!("startup task failed: {e}")))??;
    let memories = Arc::new(memories);
    tracing::info!(
        model = %memories.embedder().model,
        backend = %cfg.memory.backend,
        dir = %store_dir(&cfg).display(),
        load_ms = started.elapsed().as_millis() as u64,
        "memory store open"
    );
    let purger = {
        let m = Arc::clone(&memories);
        let every = Duration::from_secs(cfg.memory.purge_interval_s);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let m = Arc::clone(&m);
                match tokio::task::spawn_blocking(move || m.purge()).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(purged = n, "forgot expired memories"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "purge failed"),
                    Err(e) => tracing::warn!(error = %e, "purge task failed"),
                }
            }
        })
    };
    let bus = BusConfig::from_config(&cfg);
    let mut opts = WorkerOptions::from_env(SERVICE);
    opts.drain_grace = Duration::from_millis(cfg.supervisor.drain_grace_ms);
    let result = run_worker(&bus, opts, Arc::new(MemoryService::new(memories)), shutdown).await;
    purger.abort();
    result?;
    Ok(())
}
