//! `ming-training`: on-device training with burn — the personal intent router.
//!
//! A job gathers the shipped seed set and the agent's interaction log (over the bus, paged),
//! embeds every utterance with the memory service's model (`memory.embed`; vectors cached on disk
//! per model sha256), trains a small network on [embedding ‖ hashed n-grams] with burn on the CPU,
//! calibrates it, and compares it with the router in use on the same validation set. It is
//! promoted only when it beats that one; promotion announces it and hands its bytes to the agent
//! (`agent.router`), which hot-swaps it.
//!
//! The process runs niced, with the training math on `training.threads` threads, so it never
//! starves the voice path.
//!
//! # Layout
//! - [`data`]: the seed and held-out sets, examples from the log, the splits.
//! - [`train`]: the network, the training loop, temperature scaling, metrics.
//! - [`store`]: versioned router files, promotion history, rollback.
//! - [`TrainingService`]: the request handler; [`run`]: serve until drained.

pub mod data;
pub mod store;
pub mod train;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ming_bus::events::EventPublisher;
use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusClient, BusConfig, BusError, BusResult};
use ming_config::{Config, Paths};
use ming_schemas::agent::{InteractionsPage, InteractionsRequest};
use ming_schemas::control::Ack;
use ming_schemas::envelope::now_ms;
use ming_schemas::memory::{Embed, Embedded};
use ming_schemas::training::{
    text_features, ModelInfo, Promote, Router, RouterFile, RouterMetrics, Train, TrainProgress,
    Trained,
};
use ming_schemas::{kinds, ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Example};
use crate::store::{Store, StoreError};
use crate::train::{FeatureSpec, Params, Row};

/// The name this service registers under (unless `MING_SERVICE` names another).
pub const SERVICE: &str = "training";

/// Texts per `memory.embed` request.
const EMBED_BATCH: usize = 64;

/// Embeddings already computed, for one embedding model (by sha256), kept on disk.
#[derive(Default, Serialize, Deserialize)]
struct EmbedCache {
    sha256: String,
    vectors: HashMap<String, Vec<f32>>,
}

/// The `training` request handler.
pub struct TrainingService {
    cfg: Config,
    dir: PathBuf,
    store: Mutex<Store>,
    bus: BusClient,
    events: EventPublisher,
    /// The running job's cancel flag.
    job: Mutex<Option<Arc<AtomicBool>>>,
    cache: tokio::sync::Mutex<EmbedCache>,
    /// The log's `seq` the last job read up to (for the schedule).
    trained_through: Mutex<u64>,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, message)
}

fn bus_err(what: &str, e: &BusError) -> ErrorBody {
    let code = match e.code() {
        ErrorCode::Timeout => ErrorCode::Timeout,
        ErrorCode::Cancelled => ErrorCode::Cancelled,
        _ => ErrorCode::ServiceUnavailable,
    };
    err(code, format!("{what}: {e}"))
}

fn store_err(e: &StoreError) -> ErrorBody {
    let code = match e {
        StoreError::NotFound(_) | StoreError::NoPrevious => ErrorCode::NotFound,
        StoreError::Corrupt { .. } => ErrorCode::BadRequest,
        StoreError::Io { .. } => ErrorCode::Internal,
    };
    err(code, e.to_string())
}

/// Releases the job slot when the job ends, however it ends.
struct JobSlot<'a>(&'a Mutex<Option<Arc<AtomicBool>>>);

impl Drop for JobSlot<'_> {
    fn drop(&mut self) {
        if let Ok(mut j) = self.0.lock() {
            *j = None;
        }
    }
}

/// One example with its embedding.
struct Embedded1<'a> {
    example: &'a Example,
    embedding: &'a [f32],
}

/// A router's metrics on labelled, embedded examples, labels matched by name (so routers with
/// different label sets or feature widths compare on the same examples).
fn evaluate(router: &Router, examples: &[Embedded1<'_>]) -> RouterMetrics {
    train::score(examples.iter().map(|e| {
        let p = router
            .features(e.embedding, &e.example.text)
            .map(|x| router.probabilities(&x))
            .unwrap_or_default();
        let right = router
            .model
            .labels
            .iter()
            .position(|l| *l == e.example.label);
        (p, right, e.example.weight)
    }))
}

/// Whether `candidate` beats `incumbent`: more accurate, or as accurate with a lower NLL.
pub fn beats(candidate: &RouterMetrics, incumbent: &RouterMetrics) -> bool {
    candidate.accuracy > incumbent.accuracy
        || (candidate.accuracy == incumbent.accuracy && candidate.nll < incumbent.nll - 1e-4)
}

impl TrainingService {
    fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The whole interaction log, page by page.
    async fn interactions(&self) -> Result<Vec<ming_schemas::agent::Interaction>, ErrorBody> {
        let mut all = Vec::new();
        let mut since = 0;
        loop {
            let page: InteractionsPage = self
                .bus
                .request(
                    "agent",
                    kinds::AGENT_INTERACTIONS,
                    &InteractionsRequest { since, limit: 1000 },
                    Duration::from_secs(10),
                )
                .await
                .map_err(|e| {
                    bus_err(
                        "cannot read the agent's interaction log (train with --seed-only without it)",
                        &e,
                    )
                })?;
            if page.items.is_empty() || page.next <= since {
                break;
            }
            since = page.next;
            all.extend(page.items);
        }
        Ok(all)
    }

    /// Embeddings of `texts` from the memory service (cached per model), and what model made them.
    async fn embed(
        &self,
        texts: &[String],
    ) -> Result<(FeatureSpec, HashMap<String, Vec<f32>>), ErrorBody> {
        let ask = |batch: Vec<String>| async move {
            self.bus
                .request::<_, Embedded>(
                    "memory",
                    kinds::MEMORY_EMBED,
                    &Embed { texts: batch },
                    Duration::from_secs(60),
                )
                .await
                .map_err(|e| bus_err("cannot embed the examples with the memory service", &e))
        };
        // One small request first: which model serves now (a new one voids the cache).
        let probe = ask(vec!["ping".into()]).await?;
        let spec = FeatureSpec {
            embedding_model: probe.model.clone(),
            embedding_sha256: probe.sha256.clone(),
            embedding_dims: probe.dims,
            ngram_buckets: self.cfg.training.ngram_buckets,
        };
        let mut cache = self.cache.lock().await;
        if cache.sha256 != probe.sha256 {
            *cache = EmbedCache {
                sha256: probe.sha256.clone(),
                vectors: HashMap::new(),
            };
        }
        let missing: Vec<String> = texts
            .iter()
            .filter(|t| !cache.vectors.contains_key(*t))
            .cloned()
            .collect();
        for batch in missing.chunks(EMBED_BATCH) {
            let got = ask(batch.to_vec()).await?;
            if got.vectors.len() != batch.len() || got.sha256 != probe.sha256 {
                return Err(err(
                    ErrorCode::Internal,
                    "the memory service changed model or answered short while embedding",
                ));
            }
            for (t, v) in batch.iter().zip(got.vectors) {
                cache.vectors.insert(t.clone(), v);
            }
        }
        if !missing.is_empty() {
            let bytes = rmp_serde::to_vec_named(&*cache).unwrap_or_default();
            let path = self.dir.join("embeddings.mpk");
            if let Err(e) = std::fs::write(&path, bytes) {
                tracing::warn!(error = %e, path = %path.display(), "embedding cache not saved");
            }
        }
        let vectors = texts
            .iter()
            .filter_map(|t| cache.vectors.get(t).map(|v| (t.clone(), v.clone())))
            .collect();
        Ok((spec, vectors))
    }

    /// Hands the promoted router to the agent; whether it took it.
    async fn announce(&self, info: &ModelInfo) -> bool {
        self.events.publish(kinds::EVENT_ROUTER_PROMOTED, info);
        let file = match self.store().load(info.version) {
            Ok((_, bytes, sha256)) => RouterFile {
                version: info.version,
                sha256,
                bytes,
            },
            Err(e) => {
                tracing::warn!(error = %e, "promoted router does not load");
                return false;
            }
        };
        match self
            .bus
            .request::<_, Ack>("agent", kinds::AGENT_ROUTER, &file, Duration::from_secs(5))
            .await
        {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "the agent did not take the new router (it asks at its start)");
                false
            }
        }
    }

    /// One training job, start to end. Progress goes to `progress`; `cancel` stops it.
    async fn run_job(
        &self,
        job: &Train,
        cancel: Arc<AtomicBool>,
        progress: tokio::sync::mpsc::UnboundedSender<TrainProgress>,
    ) -> Result<Trained, ErrorBody> {
        if job.job != "router" {
            return Err(err(
                ErrorCode::BadRequest,
                format!("unknown training job `{}` (known: router)", job.job),
            ));
        }
        let t = &self.cfg.training;
        let mut examples = data::shipped().map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        let mut read_through = 0;
        if !job.seed_only {
            let log = self.interactions().await?;
            read_through = log.iter().map(|i| i.seq).max().unwrap_or(0);
            examples.extend(data::from_log(&log, t.correction_weight, t.undone_weight));
        }
        let dataset = Dataset::assemble(examples);
        let report = |phase: &str, epoch: u32, epochs: u32, loss: f32, accuracy: f32, eta_ms| {
            let p = TrainProgress {
                job: job.job.clone(),
                phase: phase.into(),
                epoch,
                epochs,
                loss,
                accuracy,
                eta_ms,
                examples: dataset.train.len() as u32,
            };
            self.events.publish(kinds::EVENT_TRAINING_PROGRESS, &p);
            let _ = progress.send(p);
        };
        report("embedding", 0, 0, 0.0, 0.0, 0);
        let (spec, vectors) = self.embed(&dataset.texts()).await?;
        let rows = |part: &[Example]| -> Vec<Row> {
            part.iter()
                .filter_map(|e| {
                    let emb = vectors.get(&e.text)?;
                    let mut x = emb.clone();
                    x.extend(text_features(&e.text, spec.ngram_buckets as usize));
                    Some(Row {
                        x,
                        y: dataset.label_index(&e.label)?,
                        w: e.weight,
                    })
                })
                .collect()
        };
        let (train_rows, calibration_rows) = (rows(&dataset.train), rows(&dataset.calibration));
        let params = Params {
            epochs: job.epochs.unwrap_or(t.epochs).max(1),
            hidden: t.hidden,
            learning_rate: t.learning_rate,
            batch_size: t.batch_size,
            dropout: 0.1,
            seed: 42,
        };
        let epochs = params.epochs;
        let labels = dataset.labels.clone();
        let spec2 = spec.clone();
        let cancel2 = cancel.clone();
        let (epoch_tx, mut epoch_rx) = tokio::sync::mpsc::unbounded_channel();
        let nice = t.nice;
        let work = tokio::task::spawn_blocking(move || {
            nice_this_thread(nice);
            train::train(
                &labels,
                &spec2,
                &train_rows,
                &calibration_rows,
                &params,
                &cancel2,
                |r| {
                    let _ = epoch_tx.send(r);
                },
            )
        });
        let mut work = std::pin::pin!(work);
        let model = loop {
            tokio::select! {
                Some(r) = epoch_rx.recv() => report("training", r.epoch, r.epochs, r.loss, r.accuracy, r.eta_ms),
                done = &mut work => break done,
            }
        };
        let mut model = match model {
            Ok(Ok(m)) => m,
            Ok(Err(train::TrainError::Cancelled)) => {
                return Err(err(ErrorCode::Cancelled, "training was cancelled"))
            }
            Ok(Err(e)) => return Err(err(ErrorCode::Internal, e.to_string())),
            Err(e) => return Err(err(ErrorCode::Internal, format!("training crashed: {e}"))),
        };
        report("validating", epochs, epochs, 0.0, 0.0, 0);
        let validation: Vec<Embedded1<'_>> = dataset
            .validation
            .iter()
            .filter_map(|e| {
                Some(Embedded1 {
                    example: e,
                    embedding: vectors.get(&e.text)?,
                })
            })
            .collect();
        let candidate_router =
            Router::new(model.clone()).map_err(|e| err(ErrorCode::Internal, e.to_string()))?;
        let candidate = evaluate(&candidate_router, &validation);
        let incumbent = {
            let store = self.store();
            store.current().and_then(|v| match store.load(v) {
                Ok((r, _, _)) if r.model.embedding_sha256 == spec.embedding_sha256 => {
                    Some(evaluate(&r, &validation))
                }
                Ok(_) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "the router in use does not load; comparing with none");
                    None
                }
            })
        };
        let (promote, decision, model_info) = {
            let mut store = self.store();
            model.version = store.next_version();
            model.created_ms = now_ms();
            model.provenance.train_size = dataset.train.len() as u32;
            model.provenance.log_examples = dataset.log_examples as u32;
            model.provenance.dataset_sha256 = dataset.sha256();
            model.provenance.metrics = candidate.clone();
            let saved = store.save(&model).map_err(|e| store_err(&e))?;
            let (promote, decision) = match &incumbent {
            _ if job.no_promote => (false, "not promoted: asked not to".to_string()),
            None => (true, "promoted: no usable router was in use".to_string()),
            Some(inc) if beats(&candidate, inc) => (
                true,
                format!(
                    "promoted: accuracy {:.1}% vs {:.1}% (NLL {:.3} vs {:.3}) on the same {} validation examples",
                    candidate.accuracy * 100.0,
                    inc.accuracy * 100.0,
                    candidate.nll,
                    inc.nll,
                    candidate.validation_size
                ),
            ),
            Some(inc) => (
                false,
                format!(
                    "not promoted: accuracy {:.1}% vs {:.1}% in use (NLL {:.3} vs {:.3}) on the same {} validation examples",
                    candidate.accuracy * 100.0,
                    inc.accuracy * 100.0,
                    candidate.nll,
                    inc.nll,
                    candidate.validation_size
                ),
            ),
        };
            let model_info = if promote {
                store.promote(saved.version).map_err(|e| store_err(&e))?
            } else {
                saved
            };
            (promote, decision, model_info)
        };
        if let Ok(mut through) = self.trained_through.lock() {
            *through = (*through).max(read_through);
        }
        let agent_loaded = promote && self.announce(&model_info).await;
        tracing::info!(
            version = model_info.version,
            promote,
            accuracy = candidate.accuracy,
            ece = candidate.ece,
            "router trained"
        );
        Ok(Trained {
            model: model_info,
            promoted: promote,
            decision,
            candidate,
            incumbent,
            agent_loaded,
        })
    }

    /// Claims the job slot (one job at a time).
    fn claim(&self) -> Result<(JobSlot<'_>, Arc<AtomicBool>), ErrorBody> {
        let mut j = self
            .job
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if j.is_some() {
            return Err(err(
                ErrorCode::ServiceUnavailable,
                "a training job is already running (`ming train --cancel` stops it)",
            ));
        }
        let flag = Arc::new(AtomicBool::new(false));
        *j = Some(flag.clone());
        Ok((JobSlot(&self.job), flag))
    }

    async fn handle_train(&self, mut req: Request, mut resp: Responder) {
        let job: Train = match req.body() {
            Ok(j) => j,
            Err(e) => return resp.fail(&e),
        };
        let (_slot, cancel) = match self.claim() {
            Ok(c) => c,
            Err(e) => return resp.fail(&e),
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let work = self.run_job(&job, cancel.clone(), tx);
        let mut work = std::pin::pin!(work);
        let result = loop {
            tokio::select! {
                Some(p) = rx.recv() => resp.partial(&p),
                changed = req.cancelled.changed() => {
                    if changed.is_err() || *req.cancelled.borrow() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
                r = &mut work => break r,
            }
        };
        while let Ok(p) = rx.try_recv() {
            resp.partial(&p);
        }
        match result {
            Ok(t) => resp.reply(&t),
            Err(e) => resp.fail(&e),
        }
    }

    /// A scheduled run: when enough is new in the log and the machine is idle.
    async fn scheduled(&self) {
        let t = &self.cfg.training;
        if let Some(load) = load_per_core() {
            if load > t.idle_load {
                tracing::debug!(load, "not training now: the machine is busy");
                return;
            }
        }
        let since = self.trained_through.lock().map_or(0, |v| *v) + 1;
        let page: Result<InteractionsPage, _> = self
            .bus
            .request(
                "agent",
                kinds::AGENT_INTERACTIONS,
                &InteractionsRequest {
                    since,
                    limit: t.schedule_min_new.max(1),
                },
                Duration::from_secs(5),
            )
            .await;
        let new = page.map_or(0, |p| p.items.len() as u32);
        if new < t.schedule_min_new {
            return;
        }
        let Ok((_slot, cancel)) = self.claim() else {
            return;
        };
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let job = Train {
            job: "router".into(),
            ..Default::default()
        };
        match self.run_job(&job, cancel, tx).await {
            Ok(t) => {
                tracing::info!(version = t.model.version, promoted = t.promoted, decision = %t.decision, "scheduled training done")
            }
            Err(e) => tracing::warn!(error = %e.message, "scheduled training failed"),
        }
    }
}

/// The 1-minute load average per core, from /proc/loadavg.
fn load_per_core() -> Option<f32> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let load: f32 = text.split_whitespace().next()?.parse().ok()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some(load / cores as f32)
}

impl Handler for TrainingService {
    async fn handle(&self, req: Request, resp: Responder) {
        match req.kind() {
            kinds::TRAINING_TRAIN => self.handle_train(req, resp).await,
            kinds::TRAINING_CANCEL => {
                let running = self.job.lock().ok().and_then(|j| j.clone());
                match running {
                    Some(flag) => {
                        flag.store(true, Ordering::Relaxed);
                        resp.reply(&Ack {
                            message: "cancelling the training job".into(),
                        });
                    }
                    None => resp.error(ErrorCode::NotFound, "no training job is running"),
                }
            }
            kinds::TRAINING_MODELS => resp.reply(&self.store().list()),
            kinds::TRAINING_PROMOTE => {
                let p: Promote = match req.body() {
                    Ok(p) => p,
                    Err(e) => return resp.fail(&e),
                };
                let r = self.store().promote(p.version);
                match r {
                    Ok(info) => {
                        self.announce(&info).await;
                        resp.reply(&info);
                    }
                    Err(e) => resp.fail(&store_err(&e)),
                }
            }
            kinds::TRAINING_ROLLBACK => {
                let r = self.store().rollback();
                match r {
                    Ok(info) => {
                        self.announce(&info).await;
                        resp.reply(&info);
                    }
                    Err(e) => resp.fail(&store_err(&e)),
                }
            }
            kinds::TRAINING_ROUTER => {
                let r = {
                    let store = self.store();
                    store.current().map(|v| (v, store.load(v)))
                };
                match r {
                    Some((version, Ok((_, bytes, sha256)))) => resp.reply(&RouterFile {
                        version,
                        sha256,
                        bytes,
                    }),
                    Some((_, Err(e))) => resp.fail(&store_err(&e)),
                    None => resp.error(
                        ErrorCode::NotFound,
                        "no router has been promoted yet (`ming train router`)",
                    ),
                }
            }
            other => resp.error(
                ErrorCode::Unsupported,
                format!("training does not handle `{other}`"),
            ),
        }
    }

    fn detail(&self) -> String {
        let current = self.store().current();
        let running = self.job.lock().is_ok_and(|j| j.is_some());
        format!(
            "router in use: {}; {}",
            current.map_or("none".into(), |v| format!("v{v}")),
            if running { "training now" } else { "idle" }
        )
    }
}

/// Where the training service keeps its files: `<data_dir>/training`.
pub fn data_dir(cfg: &Config) -> PathBuf {
    Paths::resolve(&cfg.paths).data_dir.join("training")
}

/// Lowers the calling thread's priority to `nice` (on Linux a nice value is per thread).
fn nice_this_thread(nice: i32) {
    // SAFETY: setpriority has no memory effects; PRIO_PROCESS with 0 means the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
        tracing::warn!(nice, error = %std::io::Error::last_os_error(), "cannot lower the priority");
    }
}

/// Lowers every thread of this process to `nice` (threads made later inherit it from the one
/// that makes them) and sizes the math's thread pool.
fn be_background(cfg: &Config) {
    let t = &cfg.training;
    let tids = std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<libc::id_t>().ok())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    for tid in tids {
        // SAFETY: as above, for one thread of this process.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, t.nice) };
    }
    nice_this_thread(t.nice);
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(t.threads as usize)
        .build_global()
    {
        tracing::debug!(error = %e, "thread pool already set");
    }
}

/// Serves `training` on the bus until `shutdown` resolves or the supervisor asks it to drain.
///
/// # Errors
/// When the data dir cannot be used, the bus socket cannot be created or the broker refuses the
/// registration.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> BusResult<()> {
    be_background(&cfg);
    let bus = BusConfig::from_config(&cfg);
    let mut opts = WorkerOptions::from_env(SERVICE);
    opts.drain_grace = Duration::from_millis(cfg.supervisor.drain_grace_ms);
    let dir = data_dir(&cfg);
    let store = Store::open(&dir.join("router")).map_err(|e| BusError::Io {
        context: format!("open the router store in {}", dir.display()),
        source: std::io::Error::other(e.to_string()),
    })?;
    let cache = std::fs::read(dir.join("embeddings.mpk"))
        .ok()
        .and_then(|b| rmp_serde::from_slice::<EmbedCache>(&b).ok())
        .unwrap_or_default();
    let service = Arc::new(TrainingService {
        bus: BusClient::connect(&bus, opts.service.clone())?,
        events: EventPublisher::connect(&bus, opts.service.clone())?,
        dir,
        store: Mutex::new(store),
        job: Mutex::new(None),
        cache: tokio::sync::Mutex::new(cache),
        trained_through: Mutex::new(0),
        cfg,
    });
    let minutes = service.cfg.training.schedule_minutes;
    let scheduler = (minutes > 0).then(|| {
        let s = service.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(minutes * 60));
            tick.tick().await;
            loop {
                tick.tick().await;
                s.scheduled().await;
            }
        })
    });
    tracing::info!(service = %opts.service, bus = %bus.bus_endpoint, sandbox = %opts.sandbox, "starting");
    let result = run_worker(&bus, opts, service, shutdown).await;
    if let Some(s) = scheduler {
        s.abort();
    }
    result
}
