//! Where memories are kept: the [`Backend`] trait and its embedded implementation over
//! `qdrant-edge` ([`EdgeBackend`]).
//!
//! A backend stores points (a memory's payload, its dense vector, its BM25 sparse vector) and
//! answers the three searches hybrid recall fuses: dense nearest neighbours, BM25 keywords, and
//! exact phrase. Everything above that — deduplication, expiry, decay, fusion, validation — is in
//! [`crate::memories`], the same for every backend.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use ming_schemas::memory::{Memory, MemoryFilter, MemoryKind};
use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};
use qdrant_edge::external::serde_json::{self, json, Value};
use qdrant_edge::external::uuid::Uuid;
use qdrant_edge::{
    CountRequest, EdgeConfigBuilder, EdgeShard, EdgeSparseVectorParamsBuilder,
    EdgeVectorParamsBuilder, Filter, Modifier, NamedQuery, PointId, PointInsertOperations,
    PointOperations, PointStruct, Prefetch, QuantizationConfig, QuantizationSearchParams,
    QueryEnum, QueryRequest, ScoringQuery, ScrollRequest, SearchParams, UpdateOperation, Vector,
    VectorInternal, WithPayloadInterface, WithVector,
};

/// The dense vector's name in the store.
pub const DENSE: &str = "dense";
/// The BM25 sparse vector's name in the store.
pub const SPARSE: &str = "bm25";
/// `expires` of a memory that never expires (year 9999, in ms).
pub const NEVER: i64 = 253_402_300_799_000;

/// A store failure (not the caller's fault).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("memory store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("memory store: {0}")]
    Op(String),
    #[error("memory store holds a point that is not a memory ({id}): {reason}")]
    Corrupt { id: String, reason: String },
}

/// Which memories an operation applies to: the caller's filter, and (when `live_at` is set) only
/// those not expired at that time.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub filter: MemoryFilter,
    pub live_at: Option<i64>,
}

/// A memory with a score from one search.
#[derive(Debug, Clone)]
pub struct Scored {
    pub memory: Memory,
    pub score: f32,
}

/// Storage for memories. Every write returns only once it is durable on disk.
pub trait Backend: Send + Sync {
    /// `edge` or `qdrant`.
    fn name(&self) -> &'static str;
    /// Where the memories live (a directory or a URL).
    fn location(&self) -> String;
    /// Inserts or replaces memories with their dense vectors.
    fn upsert(&self, items: &[(Memory, Vec<f32>)]) -> Result<(), StoreError>;
    /// Deletes memories by id; returns how many existed.
    fn delete(&self, ids: &[String]) -> Result<u64, StoreError>;
    /// The nearest memories to `vector` (cosine).
    fn dense(
        &self,
        vector: &[f32],
        sel: &Selection,
        limit: usize,
    ) -> Result<Vec<Scored>, StoreError>;
    /// The best BM25 matches of `text`'s words.
    fn keyword(&self, text: &str, sel: &Selection, limit: usize)
        -> Result<Vec<Scored>, StoreError>;
    /// Memories in which `text` occurs as a phrase (whole words, in order, any case).
    fn phrase(&self, text: &str, sel: &Selection, limit: usize) -> Result<Vec<Memory>, StoreError>;
    /// Memories by id with their dense vectors (unknown ids are left out).
    fn get(&self, ids: &[String]) -> Result<Vec<(Memory, Vec<f32>)>, StoreError>;
    /// One page in id order, starting after `after`; returns the page and the next start.
    fn scroll(
        &self,
        sel: &Selection,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Memory>, Option<String>), StoreError>;
    /// How many memories match.
    fn count(&self, sel: &Selection) -> Result<u64, StoreError>;
    /// Ids of memories expired at `now` (at most `limit`).
    fn expired(&self, now: i64, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Bytes on disk, when known.
    fn disk_bytes(&self) -> u64;
    /// Background upkeep (building the vector index); returns whether anything changed.
    fn maintain(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// BM25 settings shared by both backends: memories are short, so the average length is too.
pub fn bm25() -> EdgeBm25 {
    let cfg: EdgeBm25Config =
        serde_json::from_value(json!({ "avg_len": 16.0 })).unwrap_or_default();
    // The defaults are valid; a failure here is a programming error caught by the tests.
    EdgeBm25::new(cfg).unwrap_or_else(|e| panic!("BM25 defaults rejected: {e}"))
}

/// The memory's payload in the store.
pub fn payload(m: &Memory) -> Value {
    json!({
        "text": m.text,
        "kind": m.kind.as_str(),
        "source": m.source,
        "tags": m.tags,
        "created": m.created_ms,
        "updated": m.updated_ms,
        "expires": m.expires_ms.unwrap_or(NEVER),
    })
}

/// A memory back from its id and payload.
///
/// # Errors
/// [`StoreError::Corrupt`] when a field is missing or of the wrong type.
pub fn memory_from(id: String, p: &serde_json::Map<String, Value>) -> Result<Memory, StoreError> {
    let bad = |reason: &str| StoreError::Corrupt {
        id: id.clone(),
        reason: reason.into(),
    };
    let text = p
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("no text"))?;
    let kind = p
        .get("kind")
        .and_then(Value::as_str)
        .and_then(MemoryKind::parse)
        .ok_or_else(|| bad("no kind"))?;
    let source = p.get("source").and_then(Value::as_str).unwrap_or_default();
    let tags = p
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let int = |k: &str| p.get(k).and_then(Value::as_i64);
    let created_ms = int("created").ok_or_else(|| bad("no created time"))?;
    let expires = int("expires").unwrap_or(NEVER);
    Ok(Memory {
        id,
        text: text.into(),
        kind,
        source: source.into(),
        tags,
        created_ms,
        updated_ms: int("updated").unwrap_or(created_ms),
        expires_ms: (expires < NEVER).then_some(expires),
    })
}

/// The selection as a Qdrant filter (the JSON shape the REST API and both crates share).
pub fn filter_json(sel: &Selection) -> Option<Value> {
    let f = &sel.filter;
    let mut must = Vec::new();
    if !f.kinds.is_empty() {
        let kinds: Vec<&str> = f.kinds.iter().map(|k| k.as_str()).collect();
        must.push(json!({"key": "kind", "match": {"any": kinds}}));
    }
    if !f.sources.is_empty() {
        must.push(json!({"key": "source", "match": {"any": f.sources}}));
    }
    if !f.tags.is_empty() {
        must.push(json!({"key": "tags", "match": {"any": f.tags}}));
    }
    if f.after_ms.is_some() || f.before_ms.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(a) = f.after_ms {
            range.insert("gte".into(), json!(a));
        }
        if let Some(b) = f.before_ms {
            range.insert("lt".into(), json!(b));
        }
        must.push(json!({"key": "created", "range": range}));
    }
    if let Some(now) = sel.live_at {
        must.push(json!({"key": "expires", "range": {"gt": now}}));
    }
    (!must.is_empty()).then(|| json!({ "must": must }))
}

fn parse_id(id: &str) -> Option<PointId> {
    Uuid::parse_str(id).ok().map(PointId::Uuid)
}

fn id_string(id: &PointId) -> String {
    match id {
        PointId::Uuid(u) => u.to_string(),
        PointId::NumId(n) => n.to_string(),
    }
}

/// The embedded store: one qdrant-edge shard in a directory.
///
/// qdrant-edge's `load` does not replay its write-ahead log, so a write is durable only once the
/// shard is flushed: every write here flushes before it returns (the batch in one `remember` shares
/// one flush). Writes hold the lock exclusively — the shard's own flush asserts that no update runs
/// beside it — and reads share it.
pub struct EdgeBackend {
    dir: PathBuf,
    /// `None` only while the shard is being reopened (under the write lock).
    shard: RwLock<Option<EdgeShard>>,
    /// WAL bytes above which [`Backend::maintain`] compacts it.
    wal_limit: u64,
    bm25: EdgeBm25,
    /// `hnsw_ef` for dense searches once the store has an HNSW index.
    ef: usize,
    /// Whether dense searches walk the graph on the 8-bit copies of the vectors (where the
    /// store has them) and rescore the best with the full ones.
    quantized: bool,
}

impl EdgeBackend {
    /// Opens the store in `dir`, creating it (for `dims`-dimensional vectors) when absent.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the directory cannot be used or holds another kind of store.
    pub fn open(dir: &Path, dims: usize) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let fresh = !dir.join("edge_config.json").exists();
        let config = EdgeConfigBuilder::new()
            .vector(
                DENSE,
                EdgeVectorParamsBuilder::new(dims, qdrant_edge::Distance::Cosine)
                    .quantization_config(scalar_int8())
                    .build(),
            )
            .sparse_vector(
                SPARSE,
                EdgeSparseVectorParamsBuilder::new()
                    .modifier(Modifier::Idf)
                    .build(),
            )
            // qdrant-edge preallocates WAL segments (32 MiB each by default) although `load`
            // never replays them; 8 MiB still holds the largest write (256 memories).
            .wal_options(qdrant_edge::WalOptions {
                segment_capacity: 8 << 20,
                segment_queue_len: 0,
                retain_closed: std::num::NonZeroUsize::MIN,
            })
            .build();
        // A compaction cut short (see `compact_wal`) leaves the set-aside WAL: it holds nothing
        // that is needed (every write was flushed into the segments before it was acknowledged).
        let _ = std::fs::remove_dir_all(dir.join(WAL_OLD));
        let shard = if fresh {
            EdgeShard::new(dir, config).map_err(|e| open_err(e.to_string()))?
        } else {
            EdgeShard::load(dir, None).map_err(|e| open_err(e.to_string()))?
        };
        let have = shard.config().vectors.get(DENSE).map(|v| v.size);
        if have != Some(dims) {
            return Err(open_err(format!(
                "it holds {have:?}-dimensional vectors, the embedding model makes {dims}: \
                 export and import the memories to move them to this model"
            )));
        }
        let me = Self {
            dir: dir.into(),
            shard: RwLock::new(Some(shard)),
            wal_limit: WAL_LIMIT,
            bm25: bm25(),
            ef: HNSW_EF,
            quantized: true,
        };
        if fresh {
            me.create_indexes()?;
        }
        Ok(me)
    }

    fn create_indexes(&self) -> Result<(), StoreError> {
        let schemas = [
            ("kind", json!("keyword")),
            ("source", json!("keyword")),
            ("tags", json!("keyword")),
            ("created", json!("integer")),
            ("expires", json!("integer")),
            (
                "text",
                json!({"type": "text", "tokenizer": "word", "lowercase": true, "phrase_matching": true}),
            ),
        ];
        for (field, schema) in schemas {
            let op: UpdateOperation = serde_json::from_value(json!({
                "create_index": {"field_name": field, "field_schema": schema}
            }))
            .map_err(|e| StoreError::Op(format!("index on {field}: {e}")))?;
            self.write(|s| s.update(op))?;
        }
        self.write(|_| Ok(()))
    }

    /// Runs a write under the exclusive lock, then flushes.
    fn write<T>(
        &self,
        f: impl FnOnce(&EdgeShard) -> qdrant_edge::OperationResult<T>,
    ) -> Result<T, StoreError> {
        let guard = self
            .shard
            .write()
            .map_err(|_| StoreError::Op("store lock poisoned".into()))?;
        let shard = guard.as_ref().ok_or_else(closed)?;
        let out = f(shard).map_err(|e| StoreError::Op(e.to_string()))?;
        shard.flush();
        Ok(out)
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&EdgeShard) -> qdrant_edge::OperationResult<T>,
    ) -> Result<T, StoreError> {
        let guard = self
            .shard
            .read()
            .map_err(|_| StoreError::Op("store lock poisoned".into()))?;
        f(guard.as_ref().ok_or_else(closed)?).map_err(|e| StoreError::Op(e.to_string()))
    }

    /// Segments, points and vectors in an HNSW index (qdrant-edge's estimate).
    ///
    /// # Errors
    /// When the store is closed or its lock poisoned.
    pub fn index_info(&self) -> Result<(usize, usize, usize), StoreError> {
        self.read(|s| {
            let i = s.info();
            Ok((i.segments_count, i.points_count, i.indexed_vectors_count))
        })
    }

    /// Sets `hnsw_ef` (candidates the HNSW search keeps; never below the limit asked for).
    pub fn set_ef(&mut self, ef: usize) {
        self.ef = ef;
    }

    /// Whether dense searches use the 8-bit vectors (on by default; the bench compares).
    pub fn set_quantized(&mut self, quantized: bool) {
        self.quantized = quantized;
    }

    /// Compacts the WAL once it passes this many bytes (tests set it low).
    pub fn set_wal_limit(&mut self, bytes: u64) {
        self.wal_limit = bytes;
    }

    /// The WAL's size on disk.
    pub fn wal_bytes(&self) -> u64 {
        dir_bytes(&self.dir.join(WAL_DIR))
    }

    /// qdrant-edge 0.7 neither replays its WAL on `load` nor truncates it, so it would grow with
    /// every write for the life of the store. Every write here is flushed into the segments
    /// before it is acknowledged, so the WAL holds nothing that is needed: the shard is closed
    /// (which flushes once more), its WAL set aside, the shard opened again with a fresh one, and
    /// the old one deleted. Should reopening fail, the old WAL is put back and the shard opened
    /// as it was. Writes and reads wait meanwhile (tens of milliseconds).
    fn compact_wal(&self) -> Result<(), StoreError> {
        let mut guard = self
            .shard
            .write()
            .map_err(|_| StoreError::Op("store lock poisoned".into()))?;
        let reopen_err = |what: &str, e: String| StoreError::Open {
            path: self.dir.display().to_string(),
            reason: format!("{what}: {e}"),
        };
        drop(guard.take().ok_or_else(closed)?);
        let (wal, old) = (self.dir.join(WAL_DIR), self.dir.join(WAL_OLD));
        let set_aside = std::fs::rename(&wal, &old);
        match (&set_aside, EdgeShard::load(&self.dir, None)) {
            (Ok(()), Ok(shard)) => {
                *guard = Some(shard);
                let _ = std::fs::remove_dir_all(&old);
                Ok(())
            }
            (_, reopened) => {
                // Back as it was: the old WAL in place, the shard open.
                drop(reopened);
                if set_aside.is_ok() {
                    let _ = std::fs::remove_dir_all(&wal);
                    let _ = std::fs::rename(&old, &wal);
                }
                let shard = EdgeShard::load(&self.dir, None).map_err(|e| {
                    reopen_err("reopening after a failed WAL compaction", e.to_string())
                })?;
                *guard = Some(shard);
                Err(reopen_err(
                    "WAL compaction",
                    set_aside
                        .err()
                        .map_or_else(|| "the store did not reopen".into(), |e| e.to_string()),
                ))
            }
        }
    }

    fn filter(sel: &Selection) -> Result<Option<Filter>, StoreError> {
        filter_json(sel)
            .map(|v| serde_json::from_value(v).map_err(|e| StoreError::Op(format!("filter: {e}"))))
            .transpose()
    }

    /// Whether every word of `text` occurs in some stored memory (an estimate from the full-text
    /// index: a deleted memory's words may still count, a live one's always do).
    ///
    /// A phrase with a word that no memory holds cannot match, but qdrant-edge 0.7 does not see
    /// that: its estimate for such a phrase names no index to start from, so the scroll checks
    /// every point (1.2–1.7 ms at 100k memories, on most recalls, since a spoken query nearly
    /// always has a word no memory has). The text index splits on what is not alphanumeric and
    /// lowercases (see `create_indexes`), so each piece here is one of its tokens, and a
    /// one-token text match is estimated exactly by its posting list, without a scan.
    fn all_words_known(&self, text: &str) -> Result<bool, StoreError> {
        let mut seen = std::collections::HashSet::new();
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            let word = word.to_lowercase();
            if word.is_empty() || !seen.insert(word.clone()) {
                continue;
            }
            let filter: Filter = serde_json::from_value(json!({
                "must": [{"key": "text", "match": {"text": word}}]
            }))
            .map_err(|e| StoreError::Op(format!("word filter: {e}")))?;
            let request = CountRequest {
                filter: Some(filter),
                exact: false,
            };
            if self.read(|s| s.count(request))? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn query(
        &self,
        query: QueryEnum,
        sel: &Selection,
        limit: usize,
    ) -> Result<Vec<Scored>, StoreError> {
        let request = QueryRequest {
            prefetches: Vec::<Prefetch>::new(),
            query: Some(ScoringQuery::Vector(query)),
            filter: Self::filter(sel)?,
            score_threshold: None,
            limit,
            offset: 0,
            params: Some(SearchParams {
                hnsw_ef: Some(self.ef),
                quantization: Some(QuantizationSearchParams {
                    ignore: !self.quantized,
                    rescore: Some(true),
                    oversampling: Some(OVERSAMPLING),
                }),
                ..SearchParams::default()
            }),
            with_vector: WithVector::Bool(false),
            with_payload: WithPayloadInterface::Bool(true),
        };
        let points = self.read(|s| s.query(request))?;
        points
            .into_iter()
            .map(|p| {
                let payload = p.payload.map(|p| p.0).unwrap_or_default();
                Ok(Scored {
                    memory: memory_from(id_string(&p.id), &payload)?,
                    score: p.score,
                })
            })
            .collect()
    }
}

impl Backend for EdgeBackend {
    fn name(&self) -> &'static str {
        "edge"
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn upsert(&self, items: &[(Memory, Vec<f32>)]) -> Result<(), StoreError> {
        let mut points = Vec::with_capacity(items.len());
        for (m, v) in items {
            let id = parse_id(&m.id).ok_or_else(|| StoreError::Op(format!("bad id {}", m.id)))?;
            let sparse = self.bm25.embed_document(&m.text);
            let vectors = qdrant_edge::Vectors::new_named([
                (DENSE, Vector::new_dense(v.clone())),
                (SPARSE, Vector(VectorInternal::Sparse(sparse))),
            ]);
            points.push(PointStruct::new(id, vectors, payload(m)).into());
        }
        self.write(|s| {
            s.update(UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
            ))
        })
    }

    fn delete(&self, ids: &[String]) -> Result<u64, StoreError> {
        let ids: Vec<PointId> = ids.iter().filter_map(|i| parse_id(i)).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let existing =
            self.read(|s| s.retrieve(&ids, Some(WithPayloadInterface::Bool(false)), None))?;
        if existing.is_empty() {
            return Ok(0);
        }
        let gone: Vec<PointId> = existing.into_iter().map(|r| r.id).collect();
        let n = gone.len() as u64;
        self.write(|s| {
            s.update(UpdateOperation::PointOperation(
                PointOperations::DeletePoints { ids: gone },
            ))
        })?;
        Ok(n)
    }

    fn dense(
        &self,
        vector: &[f32],
        sel: &Selection,
        limit: usize,
    ) -> Result<Vec<Scored>, StoreError> {
        let q = QueryEnum::Nearest(NamedQuery {
            query: VectorInternal::Dense(vector.to_vec()),
            using: Some(DENSE.into()),
        });
        self.query(q, sel, limit)
    }

    fn keyword(
        &self,
        text: &str,
        sel: &Selection,
        limit: usize,
    ) -> Result<Vec<Scored>, StoreError> {
        let sparse = self.bm25.embed_query(text);
        if sparse.indices.is_empty() {
            return Ok(Vec::new());
        }
        let q = QueryEnum::Nearest(NamedQuery {
            query: VectorInternal::Sparse(sparse),
            using: Some(SPARSE.into()),
        });
        self.query(q, sel, limit)
    }

    fn phrase(&self, text: &str, sel: &Selection, limit: usize) -> Result<Vec<Memory>, StoreError> {
        if !self.all_words_known(text)? {
            return Ok(Vec::new());
        }
        let mut f = filter_json(sel).unwrap_or_else(|| json!({"must": []}));
        if let Some(must) = f.get_mut("must").and_then(Value::as_array_mut) {
            must.push(json!({"key": "text", "match": {"phrase": text}}));
        }
        let filter: Filter =
            serde_json::from_value(f).map_err(|e| StoreError::Op(format!("phrase filter: {e}")))?;
        let request = ScrollRequest {
            offset: None,
            limit: Some(limit),
            filter: Some(filter),
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: WithVector::Bool(false),
            order_by: None,
        };
        let (records, _) = self.read(|s| s.scroll(request))?;
        records
            .into_iter()
            .map(|r| {
                memory_from(
                    id_string(&r.id),
                    &r.payload.map(|p| p.0).unwrap_or_default(),
                )
            })
            .collect()
    }

    fn get(&self, ids: &[String]) -> Result<Vec<(Memory, Vec<f32>)>, StoreError> {
        let pids: Vec<PointId> = ids.iter().filter_map(|i| parse_id(i)).collect();
        if pids.is_empty() {
            return Ok(Vec::new());
        }
        let records = self.read(|s| {
            s.retrieve(
                &pids,
                Some(WithPayloadInterface::Bool(true)),
                Some(WithVector::Selector(vec![DENSE.into()])),
            )
        })?;
        records
            .into_iter()
            .map(|r| {
                let id = id_string(&r.id);
                let vector = match r.vector {
                    Some(qdrant_edge::VectorStructInternal::Named(mut named)) => {
                        match named.remove(DENSE) {
                            Some(VectorInternal::Dense(v)) => v,
                            _ => Vec::new(),
                        }
                    }
                    Some(qdrant_edge::VectorStructInternal::Single(v)) => v,
                    _ => Vec::new(),
                };
                let m = memory_from(id, &r.payload.map(|p| p.0).unwrap_or_default())?;
                Ok((m, vector))
            })
            .collect()
    }

    fn scroll(
        &self,
        sel: &Selection,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Memory>, Option<String>), StoreError> {
        let request = ScrollRequest {
            offset: after.and_then(parse_id),
            limit: Some(limit),
            filter: Self::filter(sel)?,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: WithVector::Bool(false),
            order_by: None,
        };
        let (records, next) = self.read(|s| s.scroll(request))?;
        let memories = records
            .into_iter()
            .map(|r| {
                memory_from(
                    id_string(&r.id),
                    &r.payload.map(|p| p.0).unwrap_or_default(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((memories, next.map(|n| id_string(&n))))
    }

    fn count(&self, sel: &Selection) -> Result<u64, StoreError> {
        let request = CountRequest {
            filter: Self::filter(sel)?,
            exact: true,
        };
        self.read(|s| s.count(request)).map(|n| n as u64)
    }

    fn expired(&self, now: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let filter: Filter = serde_json::from_value(json!({
            "must": [{"key": "expires", "range": {"lte": now}}]
        }))
        .map_err(|e| StoreError::Op(e.to_string()))?;
        let request = ScrollRequest {
            offset: None,
            limit: Some(limit),
            filter: Some(filter),
            with_payload: Some(WithPayloadInterface::Bool(false)),
            with_vector: WithVector::Bool(false),
            order_by: None,
        };
        let (records, _) = self.read(|s| s.scroll(request))?;
        Ok(records.iter().map(|r| id_string(&r.id)).collect())
    }

    /// Runs qdrant-edge's optimizers (HNSW index build, merges, vacuum) when they have a plan.
    /// Reads go on meanwhile; writes wait (they need the exclusive lock for their flush).
    /// Also compacts the WAL when it has passed its limit (see `compact_wal`).
    fn maintain(&self) -> Result<bool, StoreError> {
        let mut changed = self.read(|s| s.optimize())?;
        if changed {
            self.write(|_| Ok(()))?;
        }
        let wal = self.wal_bytes();
        if wal > self.wal_limit {
            let t = std::time::Instant::now();
            self.compact_wal()?;
            tracing::info!(
                before_mib = wal >> 20,
                after_mib = self.wal_bytes() >> 20,
                ms = t.elapsed().as_millis() as u64,
                "memory store's WAL compacted"
            );
            changed = true;
        }
        Ok(changed)
    }

    fn disk_bytes(&self) -> u64 {
        dir_bytes(&self.dir)
    }
}

/// `hnsw_ef` of dense searches. The memory bench measures 64/128/256 against exact search in
/// one run: at 100k memories (2026-12-03) recall@10 was 0.999/1.000/1.000 and a 40-deep search
/// took 0.48/0.57/0.97 ms, so 128 keeps exact-search recall at ~60% of 256's time.
const HNSW_EF: usize = 128;

/// Candidates a quantized dense search takes per result asked for, rescored with the full
/// vectors.
const OVERSAMPLING: f64 = 2.0;

/// Dense vectors also kept as 8-bit scalars (a quarter of the bytes, always in RAM): the HNSW
/// walk at 100k memories is bound by cache misses once the query embedding has run through the
/// caches, and a quarter of the bytes misses less. The 0.99 quantile clips the rare outlying
/// components instead of spending the 256 levels on them.
fn scalar_int8() -> QuantizationConfig {
    // qdrant-edge 0.7 re-exports the config's parts but not the `ScalarQuantization` wrapper.
    serde_json::from_value(json!({
        "scalar": {"type": "int8", "quantile": 0.99, "always_ram": true}
    }))
    .expect("a valid scalar quantization config")
}

/// qdrant-edge's WAL directory in a shard, and where compaction sets it aside.
const WAL_DIR: &str = "wal";
const WAL_OLD: &str = "wal.old";
/// Four of our 8 MiB WAL segments (a new WAL is two).
const WAL_LIMIT: u64 = 32 << 20;

fn closed() -> StoreError {
    StoreError::Op("the store is closed (a reopen failed; see the log)".into())
}

/// Bytes of the files under `p`.
fn dir_bytes(p: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(p) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(i: usize) -> (Memory, Vec<f32>) {
        let m = Memory {
            id: qdrant_edge::external::uuid::Uuid::new_v4().to_string(),
            // Long texts fill the WAL quickly.
            text: format!(
                "memory number {i}: {}",
                "lorem ipsum dolor sit amet ".repeat(60)
            ),
            kind: ming_schemas::memory::MemoryKind::Fact,
            source: "test".into(),
            tags: vec![format!("t{}", i % 7)],
            created_ms: 1_000 + i as i64,
            updated_ms: 1_000 + i as i64,
            expires_ms: None,
        };
        let v = (0..8)
            .map(|d| ((i * 31 + d * 7) % 13) as f32 + 1.0)
            .collect();
        (m, v)
    }

    #[test]
    fn a_new_store_keeps_8_bit_copies_of_its_dense_vectors_and_they_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let quantization = |b: &EdgeBackend| {
            b.read(|s| {
                Ok(s.config()
                    .vectors
                    .get(DENSE)
                    .and_then(|v| v.quantization_config.clone()))
            })
            .unwrap()
        };
        let b = EdgeBackend::open(dir.path(), 8).unwrap();
        assert_eq!(quantization(&b), Some(scalar_int8()));
        let (m, v) = memory(1);
        b.upsert(&[(m.clone(), v.clone())]).unwrap();
        drop(b);
        let b = EdgeBackend::open(dir.path(), 8).unwrap();
        assert_eq!(quantization(&b), Some(scalar_int8()));
        let sel = Selection::default();
        assert_eq!(b.dense(&v, &sel, 1).unwrap()[0].memory.id, m.id);
    }

    #[test]
    fn a_phrase_is_found_in_any_case_and_punctuation_and_a_word_no_memory_has_finds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = EdgeBackend::open(dir.path(), 8).unwrap();
        let texts = [
            "The BLUE notebook is in the Café, by the window.",
            "Call Zoë about the blue-green tiles",
            "notebook blue (not in order)",
        ];
        let items: Vec<_> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let (mut m, v) = memory(i);
                m.text = (*t).into();
                (m, v)
            })
            .collect();
        b.upsert(&items).unwrap();
        let sel = Selection::default();
        let found = |b: &EdgeBackend, q: &str| -> Vec<String> {
            let mut t: Vec<String> = b
                .phrase(q, &sel, 10)
                .unwrap()
                .into_iter()
                .map(|m| m.text)
                .collect();
            t.sort();
            t
        };
        let check = |b: &EdgeBackend| {
            assert_eq!(found(b, "blue notebook"), vec![texts[0]]);
            assert_eq!(found(b, "  Blue, NOTEBOOK!  "), vec![texts[0]]);
            assert_eq!(found(b, "the café"), vec![texts[0]]);
            assert_eq!(found(b, "CALL ZOË"), vec![texts[1]]);
            assert_eq!(found(b, "blue green"), vec![texts[1]]);
            assert_eq!(found(b, "blue"), vec![texts[1], texts[0], texts[2]]);
            // Every word known, not in this order: nothing.
            assert!(found(b, "notebook window").is_empty());
            // A word no memory has: nothing, and no scan.
            assert!(!b.all_words_known("blue notebook 4711").unwrap());
            assert!(found(b, "blue notebook 4711").is_empty());
            assert!(b.all_words_known("Blue, NOTEBOOK!").unwrap());
        };
        check(&b);
        drop(b);
        let b = EdgeBackend::open(dir.path(), 8).unwrap();
        check(&b);
        // A deleted memory's words may still be known; it is not found.
        b.delete(std::slice::from_ref(&items[1].0.id)).unwrap();
        assert!(found(&b, "call zoë").is_empty());
    }

    #[test]
    fn the_wal_is_compacted_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = EdgeBackend::open(dir.path(), 8).unwrap();
        // A new WAL is already two preallocated segments.
        let fresh = b.wal_bytes();
        let limit = fresh + (8 << 20);
        b.set_wal_limit(limit);
        let all = Selection::default();
        let mut n = 0;
        while b.wal_bytes() <= limit {
            let batch: Vec<_> = (n..n + 200).map(memory).collect();
            b.upsert(&batch).unwrap();
            n += 200;
            assert!(n < 100_000, "the WAL never passed {limit} bytes");
        }
        let before = b.wal_bytes();
        assert!(b.maintain().unwrap(), "compaction counts as a change");
        let after = b.wal_bytes();
        assert!(after < before && after <= fresh, "{before} → {after}");
        assert!(!dir.path().join(WAL_OLD).exists());
        assert_eq!(b.count(&all).unwrap(), n as u64);
        // Writes and reads go on, and everything is there after a reopen.
        b.upsert(&[memory(n)]).unwrap();
        let (m, v) = memory(n + 1);
        b.upsert(&[(m.clone(), v.clone())]).unwrap();
        assert_eq!(b.get(std::slice::from_ref(&m.id)).unwrap()[0].1.len(), 8);
        drop(b);
        let b = EdgeBackend::open(dir.path(), 8).unwrap();
        assert_eq!(b.count(&all).unwrap(), n as u64 + 2);
        assert_eq!(b.get(&[m.id]).unwrap()[0].0.text, m.text);
        // Below the limit, the WAL is left alone.
        let wal = b.wal_bytes();
        b.maintain().unwrap();
        assert_eq!(b.wal_bytes(), wal);
    }
}
