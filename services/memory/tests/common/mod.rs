//! What the memory tests share: the real embedding model (loaded once per test binary) and
//! stores in temporary directories.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ming_config::models;
use ming_config::{Config, Paths};
use ming_memory::embed::Embedder;
use ming_memory::memories::{ManualClock, Memories, Settings};
use ming_memory::store::{Backend, EdgeBackend};

pub fn config() -> Config {
    Config::from_toml_over_defaults("").expect("default config")
}

pub fn model_dir() -> PathBuf {
    Paths::resolve(&config().paths).model_dir
}

/// The configured all-MiniLM-L6-v2 GGUF (the default, q8_0), as `just models` placed it.
pub fn embedder() -> Embedder {
    static E: OnceLock<Embedder> = OnceLock::new();
    E.get_or_init(|| {
        let (m, path) =
            models::resolve(&config().memory.embedding_model, "embedding", &model_dir())
                .unwrap_or_else(|e| panic!("{e}"));
        Embedder::start(&m.name, path, 2).unwrap_or_else(|e| panic!("{e}"))
    })
    .clone()
}

pub fn settings() -> Settings {
    Settings::from_config(&config().memory)
}

/// Jan 1 2026, 00:00 UTC.
pub const T0: i64 = 1_767_225_600_000;

/// A backend under test, and how to open it again on the same data.
pub trait Harness {
    fn name(&self) -> &'static str;
    fn open(&self) -> Box<dyn Backend>;
}

pub struct Edge {
    pub dir: tempfile::TempDir,
}

impl Edge {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl Harness for Edge {
    fn name(&self) -> &'static str {
        "edge"
    }
    fn open(&self) -> Box<dyn Backend> {
        Box::new(EdgeBackend::open(self.dir.path(), 384).unwrap_or_else(|e| panic!("{e}")))
    }
}

pub fn memories(h: &dyn Harness, clock: Arc<ManualClock>, settings: Settings) -> Memories {
    Memories::new(h.open(), embedder(), settings, clock)
}

/// A fresh collection on the Qdrant server at `QDRANT_URL`.
pub struct QdrantServer {
    pub url: String,
    pub collection: String,
}

impl QdrantServer {
    pub fn from_env() -> Self {
        let url = std::env::var("QDRANT_URL")
            .expect("QDRANT_URL is not set: the Qdrant contract runs need a server");
        Self {
            url,
            collection: format!(
                "ming_contract_{}",
                qdrant_edge::external::uuid::Uuid::new_v4().simple()
            ),
        }
    }
}

impl Harness for QdrantServer {
    fn name(&self) -> &'static str {
        "qdrant"
    }
    fn open(&self) -> Box<dyn Backend> {
        Box::new(
            ming_memory::qdrant::QdrantBackend::open(
                &self.url,
                std::env::var("QDRANT_API_KEY").ok(),
                &self.collection,
                384,
            )
            .unwrap_or_else(|e| panic!("{e}")),
        )
    }
}
