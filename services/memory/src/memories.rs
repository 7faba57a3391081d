//! The memory service's rules, the same over every [`Backend`]: validation, deduplication,
//! expiry and decay, hybrid recall (dense + BM25 + exact phrase, fused by reciprocal rank).
//!
//! Every method blocks (embedding and the store both do); the service calls them from
//! `spawn_blocking`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ming_schemas::memory::{
    Embed, Embedded, Forget, Forgotten, Import, Imported, List, Listed, Memories as MemoryList,
    Memory, MemoryFilter, MemoryIds, MemoryKind, MemoryStats, NewMemory, Recall, RecallHit,
    Recalled, Remember, RememberOutcome, Remembered, Update,
};
use ming_schemas::ErrorCode;
use qdrant_edge::external::uuid::Uuid;

use crate::embed::{dot, EmbedError, Embedder};
use crate::store::{Backend, Scored, Selection, StoreError};

/// The most memories one `remember` or `import` may carry, and texts one `embed`.
pub const MAX_BATCH: usize = 256;
/// Reciprocal-rank-fusion constant (the usual 60).
const RRF_K: f32 = 60.0;
/// Weight of the keyword list against the dense one in the fusion.
const KEYWORD_WEIGHT: f32 = 0.7;
/// Added to a memory's fused score when the query occurs in it as a phrase: it ranks first.
const PHRASE_BONUS: f32 = 1.0;

/// Tunables, from `[memory]` in config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub max_text_bytes: usize,
    pub dedup_threshold: f32,
    pub max_k: u32,
    pub episode_half_life_days: f32,
    pub forget_below: f32,
}

impl Settings {
    pub fn from_config(m: &ming_config::MemorySettings) -> Self {
        Self {
            max_text_bytes: m.max_text_bytes as usize,
            dedup_threshold: m.dedup_threshold,
            max_k: m.max_k,
            episode_half_life_days: m.episode_half_life_days,
            forget_below: m.forget_below,
        }
    }
}

/// Where "now" comes from: the system clock, or a hand-set one in tests.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }
}

/// A clock that moves only when told (tests of expiry and decay).
pub struct ManualClock(pub AtomicI64);

impl ManualClock {
    pub fn new(ms: i64) -> Self {
        Self(AtomicI64::new(ms))
    }
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why a request failed; [`MemoryError::code`] is what crosses the bus.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("embedding: {0}")]
    Embed(EmbedError),
}

impl MemoryError {
    pub fn code(&self) -> ErrorCode {
        match self {
            MemoryError::BadRequest(_) => ErrorCode::BadRequest,
            MemoryError::TooLarge(_) => ErrorCode::TooLarge,
            MemoryError::NotFound(_) => ErrorCode::NotFound,
            MemoryError::Store(_) => ErrorCode::Internal,
            MemoryError::Embed(EmbedError::Empty) => ErrorCode::BadRequest,
            MemoryError::Embed(EmbedError::TooLong { .. }) => ErrorCode::TooLarge,
            MemoryError::Embed(_) => ErrorCode::Internal,
        }
    }
}

fn bad(msg: impl Into<String>) -> MemoryError {
    MemoryError::BadRequest(msg.into())
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Long-term memory over one backend.
pub struct Memories {
    backend: Box<dyn Backend>,
    embedder: Embedder,
    settings: Settings,
    clock: Arc<dyn Clock>,
    purged: AtomicU64,
}

impl Memories {
    pub fn new(
        backend: Box<dyn Backend>,
        embedder: Embedder,
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            backend,
            embedder,
            settings,
            clock,
            purged: AtomicU64::new(0),
        }
    }

    pub fn embedder(&self) -> &Embedder {
        &self.embedder
    }

    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn check_text(&self, what: &str, text: &str) -> Result<(), MemoryError> {
        if text.trim().is_empty() {
            return Err(bad(format!("{what} is empty")));
        }
        if text.len() > self.settings.max_text_bytes {
            return Err(MemoryError::TooLarge(format!(
                "{what} is {} bytes; at most {} (memory.max_text_bytes): split it into smaller memories",
                text.len(),
                self.settings.max_text_bytes
            )));
        }
        Ok(())
    }

    fn check_new(&self, i: usize, m: &NewMemory) -> Result<(), MemoryError> {
        self.check_text(&format!("memories[{i}].text"), &m.text)?;
        if m.source.trim().is_empty() || m.source.len() > 64 {
            return Err(bad(format!("memories[{i}].source must be 1 to 64 bytes")));
        }
        check_tags(&format!("memories[{i}].tags"), &m.tags)?;
        if m.ttl_s == Some(0) {
            return Err(bad(format!(
                "memories[{i}].ttl_s is 0: leave it out to keep the memory, or give seconds"
            )));
        }
        Ok(())
    }

    fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, MemoryError> {
        self.embedder
            .embed_blocking(texts)
            .map_err(MemoryError::Embed)
    }

    fn expires(&self, now: i64, ttl_s: Option<u64>) -> Option<i64> {
        ttl_s.map(|s| now.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)))
    }

    /// `memory.remember`. Durable when it returns.
    ///
    /// # Errors
    /// `BadRequest` / `TooLarge` naming the bad memory; store or engine failures.
    pub fn remember(&self, req: Remember) -> Result<Remembered, MemoryError> {
        if req.memories.is_empty() {
            return Err(bad("memories is empty"));
        }
        if req.memories.len() > MAX_BATCH {
            return Err(MemoryError::TooLarge(format!(
                "{} memories in one request; at most {MAX_BATCH}",
                req.memories.len()
            )));
        }
        for (i, m) in req.memories.iter().enumerate() {
            self.check_new(i, m)?;
        }
        let t = Instant::now();
        let vectors = self.embed(req.memories.iter().map(|m| m.text.clone()).collect())?;
        let embed_ms = ms_since(t);
        let t = Instant::now();
        let now = self.now();
        let mut batch: Vec<(Memory, Vec<f32>)> = Vec::new();
        let mut outcomes = Vec::new();
        for (new, vector) in req.memories.into_iter().zip(vectors) {
            let tags = dedup_tags(new.tags);
            // A near-copy earlier in this same batch?
            if let Some((old, _)) = batch.iter_mut().find(|(m, v)| {
                m.kind == new.kind && dot(v, &vector) >= self.settings.dedup_threshold
            }) {
                merge_into(old, new.text, tags, now, self.expires(now, new.ttl_s));
                outcomes.push(RememberOutcome {
                    id: old.id.clone(),
                    deduplicated: true,
                });
                continue;
            }
            let same_kind = Selection {
                filter: MemoryFilter {
                    kinds: vec![new.kind],
                    ..MemoryFilter::default()
                },
                live_at: Some(now),
            };
            let nearest = self.backend.dense(&vector, &same_kind, 1)?;
            if let Some(hit) = nearest
                .into_iter()
                .find(|h| h.score >= self.settings.dedup_threshold)
            {
                let mut old = hit.memory;
                merge_into(&mut old, new.text, tags, now, self.expires(now, new.ttl_s));
                outcomes.push(RememberOutcome {
                    id: old.id.clone(),
                    deduplicated: true,
                });
                batch.push((old, vector));
                continue;
            }
            let m = Memory {
                id: Uuid::new_v4().to_string(),
                text: new.text,
                kind: new.kind,
                source: new.source,
                tags,
                created_ms: now,
                updated_ms: now,
                expires_ms: self.expires(now, new.ttl_s),
            };
            outcomes.push(RememberOutcome {
                id: m.id.clone(),
                deduplicated: false,
            });
            batch.push((m, vector));
        }
        self.backend.upsert(&batch)?;
        Ok(Remembered {
            outcomes,
            embed_ms,
            store_ms: ms_since(t),
        })
    }

    /// The weight of a memory in ranking at `now`: episodes fade with their half-life.
    fn weight(&self, m: &Memory, now: i64) -> f32 {
        let hl = self.settings.episode_half_life_days;
        if m.kind != MemoryKind::Episode || hl <= 0.0 {
            return 1.0;
        }
        let age_days = (now - m.updated_ms).max(0) as f32 / 86_400_000.0;
        0.5f32.powf(age_days / hl)
    }

    /// `memory.recall`: hybrid search, fused, decayed, best first.
    ///
    /// # Errors
    /// `BadRequest` for an empty query, `k` out of range or a bad filter.
    pub fn recall(&self, req: Recall) -> Result<Recalled, MemoryError> {
        // Running the keyword and phrase searches beside another step lost at the median:
        // overlapping the query embedding 0.94x at 10k (the embedder uses every core), beside
        // the dense search 0.92x at 100k and 0.83–0.89x at 10k (the searches take about a
        // millisecond, little more than starting a thread), though p99 fell in most runs.
        // The bench compares them each run.
        self.recall_with(req, false)
    }

    /// [`Memories::recall`], with the keyword and phrase searches beside the dense search
    /// (`beside`) or after it (the bench compares both).
    ///
    /// # Errors
    /// As [`Memories::recall`].
    pub fn recall_with(&self, req: Recall, beside: bool) -> Result<Recalled, MemoryError> {
        self.check_text("query", &req.query)?;
        if req.k == 0 || req.k > self.settings.max_k {
            return Err(bad(format!(
                "k is {}; it must be between 1 and {} (memory.max_k)",
                req.k, self.settings.max_k
            )));
        }
        if let Some(s) = req.min_score {
            if !(-1.0..=1.0).contains(&s) {
                return Err(bad(format!(
                    "min_score is {s}; it must be between -1 and 1"
                )));
            }
        }
        check_filter(&req.filter)?;
        let started = Instant::now();
        let now = self.now();
        let sel = Selection {
            filter: req.filter,
            live_at: Some(now),
        };
        let depth = (req.k as usize * 4).max(20);
        let t = Instant::now();
        let (query_vec, embed_ms) = self
            .embed(vec![req.query.clone()])
            .map(|mut v| (v.pop(), ms_since(t)))?;
        let query_vec = query_vec.ok_or(MemoryError::Embed(EmbedError::Stopped))?;
        // Expiry is checked here, not by the store: qdrant checks a filter on every point a
        // search visits, and this one (`expires` after now) cost 0.25 ms of a 40-deep dense
        // search and 0.18 ms of a BM25 search at 100k. Expired memories are purged in the
        // background, so one is rarely among the results; a list that holds one is searched
        // again with the filter, so what comes back is what a filtered search gives.
        let open = Selection {
            filter: sel.filter.clone(),
            live_at: None,
        };
        let dense = || {
            unless_expired(
                self.backend.dense(&query_vec, &open, depth)?,
                |s: &Scored| &s.memory,
                now,
                || self.backend.dense(&query_vec, &sel, depth),
            )
        };
        // The keyword and phrase searches need no embedding: they can run beside the dense
        // search.
        let lexical = || {
            let keyword = unless_expired(
                self.backend.keyword(&req.query, &open, depth)?,
                |s: &Scored| &s.memory,
                now,
                || self.backend.keyword(&req.query, &sel, depth),
            )?;
            let phrase = unless_expired(
                self.backend.phrase(req.query.trim(), &open, depth)?,
                |m: &Memory| m,
                now,
                || self.backend.phrase(req.query.trim(), &sel, depth),
            )?;
            Ok::<_, StoreError>((keyword, phrase))
        };
        let (dense, lexical) = if beside {
            std::thread::scope(|s| {
                let lexical = s.spawn(lexical);
                (dense(), joined(lexical))
            })
        } else {
            (dense(), lexical())
        };
        let (dense, (keyword, phrase)) = (dense?, lexical?);

        let mut cands: HashMap<String, Cand> = HashMap::new();
        for (rank, s) in dense.into_iter().enumerate() {
            let c = Cand::entry(&mut cands, s.memory);
            c.dense = Some(s.score);
            c.fused += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
        for (rank, s) in keyword.into_iter().enumerate() {
            let c = Cand::entry(&mut cands, s.memory);
            c.keyword = s.score;
            c.fused += KEYWORD_WEIGHT / (RRF_K + rank as f32 + 1.0);
        }
        for m in phrase {
            let c = Cand::entry(&mut cands, m);
            if !c.phrase {
                c.phrase = true;
                c.fused += PHRASE_BONUS;
            }
        }
        // Keyword- or phrase-only candidates still get their true dense similarity.
        let missing: Vec<String> = cands
            .values()
            .filter(|c| c.dense.is_none())
            .map(|c| c.memory.id.clone())
            .collect();
        if !missing.is_empty() {
            for (m, v) in self.backend.get(&missing)? {
                if let Some(c) = cands.get_mut(&m.id) {
                    c.dense = Some(dot(&v, &query_vec));
                }
            }
        }
        let mut hits: Vec<RecallHit> = cands
            .into_values()
            .filter(|c| c.phrase || req.min_score.is_none_or(|s| c.dense.unwrap_or(-1.0) >= s))
            .map(|c| {
                let w = self.weight(&c.memory, now);
                RecallHit {
                    score: c.fused * w,
                    dense: c.dense.unwrap_or(0.0),
                    keyword: c.keyword,
                    phrase: c.phrase,
                    memory: c.memory,
                }
            })
            .collect();
        hits.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(b.dense.total_cmp(&a.dense))
                .then(a.memory.id.cmp(&b.memory.id))
        });
        hits.truncate(req.k as usize);
        Ok(Recalled {
            hits,
            embed_ms,
            // Searching and fusing beyond the embedding.
            search_ms: (ms_since(started) - embed_ms).max(0.0),
        })
    }

    /// `memory.get`: unknown or expired ids are `NotFound`.
    ///
    /// # Errors
    /// `BadRequest` for a malformed id, `NotFound` naming the missing ones.
    pub fn get(&self, req: MemoryIds) -> Result<MemoryList, MemoryError> {
        check_ids(&req.ids)?;
        let now = self.now();
        let found = self.backend.get(&req.ids)?;
        let mut by_id: HashMap<String, Memory> = found
            .into_iter()
            .filter(|(m, _)| m.expires_ms.is_none_or(|e| e > now))
            .map(|(m, _)| (m.id.clone(), m))
            .collect();
        let missing: Vec<&String> = req.ids.iter().filter(|i| !by_id.contains_key(*i)).collect();
        if !missing.is_empty() {
            return Err(MemoryError::NotFound(format!(
                "no memory with id {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(MemoryList {
            memories: req.ids.iter().filter_map(|i| by_id.remove(i)).collect(),
        })
    }

    /// `memory.update`.
    ///
    /// # Errors
    /// `NotFound` for an unknown id; `BadRequest`/`TooLarge` for bad fields.
    pub fn update(&self, req: Update) -> Result<Memory, MemoryError> {
        check_ids(std::slice::from_ref(&req.id))?;
        // The memory and its vector in one read; an expired memory is as good as gone.
        let now = self.now();
        let (mut m, mut vector) = self
            .backend
            .get(std::slice::from_ref(&req.id))?
            .pop()
            .filter(|(m, _)| m.expires_ms.is_none_or(|e| e > now))
            .ok_or_else(|| MemoryError::NotFound(format!("no memory with id {}", req.id)))?;
        if let Some(text) = req.text {
            self.check_text("text", &text)?;
            vector = self.embed(vec![text.clone()])?.pop().unwrap_or_default();
            m.text = text;
        }
        if let Some(k) = req.kind {
            m.kind = k;
        }
        if let Some(s) = req.source {
            if s.trim().is_empty() || s.len() > 64 {
                return Err(bad("source must be 1 to 64 bytes"));
            }
            m.source = s;
        }
        if let Some(tags) = req.tags {
            check_tags("tags", &tags)?;
            m.tags = dedup_tags(tags);
        }
        match req.ttl_s {
            Some(0) => m.expires_ms = None,
            Some(s) => m.expires_ms = self.expires(now, Some(s)),
            None => {}
        }
        m.updated_ms = now;
        self.backend.upsert(&[(m.clone(), vector)])?;
        Ok(m)
    }

    /// `memory.forget`.
    ///
    /// # Errors
    /// `BadRequest` when neither ids nor a filter is given, or an empty filter without `all`.
    pub fn forget(&self, req: Forget) -> Result<Forgotten, MemoryError> {
        if !req.ids.is_empty() {
            if req.filter.is_some() || req.all {
                return Err(bad("give ids or a filter, not both"));
            }
            check_ids(&req.ids)?;
            return Ok(Forgotten {
                forgotten: self.backend.delete(&req.ids)?,
            });
        }
        let filter = req.filter.unwrap_or_default();
        if filter.is_empty() && !req.all {
            return Err(bad(
                "nothing to forget: give ids, a filter, or all = true (with an empty filter) to forget everything",
            ));
        }
        check_filter(&filter)?;
        let sel = Selection {
            filter,
            live_at: None,
        };
        let mut forgotten = 0;
        loop {
            let (page, _) = self.backend.scroll(&sel, None, 1000)?;
            if page.is_empty() {
                break;
            }
            let ids: Vec<String> = page.into_iter().map(|m| m.id).collect();
            forgotten += self.backend.delete(&ids)?;
        }
        Ok(Forgotten { forgotten })
    }

    /// `memory.list`: one page of live memories in id order.
    ///
    /// # Errors
    /// `BadRequest` for a bad filter, limit or cursor.
    pub fn list(&self, req: List) -> Result<Listed, MemoryError> {
        check_filter(&req.filter)?;
        let limit = req.limit.unwrap_or(100);
        if limit == 0 || limit > 1000 {
            return Err(bad(format!(
                "limit is {limit}; it must be between 1 and 1000"
            )));
        }
        if let Some(a) = &req.after {
            check_ids(std::slice::from_ref(a))?;
        }
        let sel = Selection {
            filter: req.filter,
            live_at: Some(self.now()),
        };
        let (memories, next) = self
            .backend
            .scroll(&sel, req.after.as_deref(), limit as usize)?;
        Ok(Listed { memories, next })
    }

    /// `memory.import`: memories as exported, ids and times kept, vectors computed again.
    ///
    /// # Errors
    /// `BadRequest` / `TooLarge` naming the bad memory.
    pub fn import(&self, req: Import) -> Result<Imported, MemoryError> {
        if req.memories.len() > MAX_BATCH {
            return Err(MemoryError::TooLarge(format!(
                "{} memories in one import request; at most {MAX_BATCH}",
                req.memories.len()
            )));
        }
        let now = self.now();
        let mut keep = Vec::new();
        let mut expired = 0;
        for (i, m) in req.memories.into_iter().enumerate() {
            check_ids(std::slice::from_ref(&m.id))
                .map_err(|e| bad(format!("memories[{i}]: {e}")))?;
            self.check_text(&format!("memories[{i}].text"), &m.text)?;
            check_tags(&format!("memories[{i}].tags"), &m.tags)?;
            if m.expires_ms.is_some_and(|e| e <= now) {
                expired += 1;
                continue;
            }
            keep.push(m);
        }
        let vectors = self.embed(keep.iter().map(|m| m.text.clone()).collect())?;
        let n = keep.len() as u64;
        let items: Vec<(Memory, Vec<f32>)> = keep.into_iter().zip(vectors).collect();
        if !items.is_empty() {
            self.backend.upsert(&items)?;
        }
        Ok(Imported {
            imported: n,
            expired,
        })
    }

    /// `memory.stats`.
    ///
    /// # Errors
    /// Store failures.
    pub fn stats(&self) -> Result<MemoryStats, MemoryError> {
        let now = self.now();
        let mut by_kind = std::collections::BTreeMap::new();
        let mut total = 0;
        for k in MemoryKind::ALL {
            let n = self.backend.count(&Selection {
                filter: MemoryFilter {
                    kinds: vec![k],
                    ..MemoryFilter::default()
                },
                live_at: Some(now),
            })?;
            total += n;
            by_kind.insert(k.as_str().to_string(), n);
        }
        Ok(MemoryStats {
            backend: self.backend.name().into(),
            location: self.backend.location(),
            memories: total,
            by_kind,
            embedding_model: self.embedder.model.clone(),
            dims: self.embedder.dims as u32,
            disk_bytes: self.backend.disk_bytes(),
            purged: self.purged.load(Ordering::Relaxed),
        })
    }

    /// `memory.embed`.
    ///
    /// # Errors
    /// `BadRequest` for no or empty texts, `TooLarge` for too many or too long.
    pub fn embed_texts(&self, req: Embed) -> Result<Embedded, MemoryError> {
        if req.texts.is_empty() {
            return Err(bad("texts is empty"));
        }
        if req.texts.len() > MAX_BATCH {
            return Err(MemoryError::TooLarge(format!(
                "{} texts; at most {MAX_BATCH} per request",
                req.texts.len()
            )));
        }
        for (i, t) in req.texts.iter().enumerate() {
            self.check_text(&format!("texts[{i}]"), t)?;
        }
        let t = Instant::now();
        let vectors = self.embed(req.texts)?;
        Ok(Embedded {
            model: self.embedder.model.clone(),
            sha256: self.embedder.sha256.clone(),
            dims: self.embedder.dims as u32,
            vectors,
            embed_ms: ms_since(t),
        })
    }

    /// Deletes expired memories and, with `forget_below` set, episodes decayed below it.
    /// Returns how many went.
    ///
    /// # Errors
    /// Store failures.
    pub fn purge(&self) -> Result<u64, MemoryError> {
        let now = self.now();
        let mut gone = 0;
        loop {
            let ids = self.backend.expired(now, 1000)?;
            if ids.is_empty() {
                break;
            }
            gone += self.backend.delete(&ids)?;
        }
        let (hl, fb) = (
            self.settings.episode_half_life_days,
            self.settings.forget_below,
        );
        if hl > 0.0 && fb > 0.0 {
            // weight < fb  <=>  age > hl * log2(1 / fb) days (age from the last update).
            let max_age_ms = (f64::from(hl) * (1.0 / f64::from(fb)).log2() * 86_400_000.0) as i64;
            let sel = Selection {
                filter: MemoryFilter {
                    kinds: vec![MemoryKind::Episode],
                    before_ms: Some(now - max_age_ms),
                    ..MemoryFilter::default()
                },
                live_at: None,
            };
            let mut after: Option<String> = None;
            let mut faded = Vec::new();
            loop {
                let (page, next) = self.backend.scroll(&sel, after.as_deref(), 1000)?;
                faded.extend(
                    page.into_iter()
                        .filter(|m| self.weight(m, now) < fb)
                        .map(|m| m.id),
                );
                match next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            if !faded.is_empty() {
                gone += self.backend.delete(&faded)?;
            }
        }
        self.purged.fetch_add(gone, Ordering::Relaxed);
        let t = Instant::now();
        if self.backend.maintain()? {
            tracing::info!(
                ms = ms_since(t),
                "memory store optimised (vector index built)"
            );
        }
        Ok(gone)
    }
}

/// A search thread's result (a panic there becomes an error, not a crash).
/// `found`, unless it holds a memory expired at `now`: then the same search with the store's
/// expiry filter (`filtered`).
fn unless_expired<T>(
    found: Vec<T>,
    memory: impl Fn(&T) -> &Memory,
    now: i64,
    filtered: impl FnOnce() -> Result<Vec<T>, StoreError>,
) -> Result<Vec<T>, StoreError> {
    if found
        .iter()
        .all(|x| memory(x).expires_ms.is_none_or(|e| e > now))
    {
        Ok(found)
    } else {
        filtered()
    }
}

fn joined<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, StoreError>>) -> Result<T, StoreError> {
    h.join()
        .unwrap_or_else(|_| Err(StoreError::Op("a search thread panicked".into())))
}

/// A recall candidate while the lists are fused.
struct Cand {
    memory: Memory,
    fused: f32,
    dense: Option<f32>,
    keyword: f32,
    phrase: bool,
}

impl Cand {
    fn entry(cands: &mut HashMap<String, Cand>, m: Memory) -> &mut Cand {
        cands.entry(m.id.clone()).or_insert(Cand {
            memory: m,
            fused: 0.0,
            dense: None,
            keyword: 0.0,
            phrase: false,
        })
    }
}

fn merge_into(old: &mut Memory, text: String, tags: Vec<String>, now: i64, expires: Option<i64>) {
    old.text = text;
    for t in tags {
        if !old.tags.contains(&t) {
            old.tags.push(t);
        }
    }
    old.updated_ms = now;
    if expires.is_some() {
        old.expires_ms = expires;
    }
}

fn dedup_tags(tags: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tags {
        let t = t.trim().to_string();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

fn check_tags(what: &str, tags: &[String]) -> Result<(), MemoryError> {
    if tags.len() > 32 {
        return Err(bad(format!("{what}: {} tags; at most 32", tags.len())));
    }
    if let Some(t) = tags.iter().find(|t| t.trim().is_empty() || t.len() > 64) {
        return Err(bad(format!("{what}: tag {t:?} must be 1 to 64 bytes")));
    }
    Ok(())
}

fn check_ids(ids: &[String]) -> Result<(), MemoryError> {
    if ids.is_empty() {
        return Err(bad("ids is empty"));
    }
    if let Some(bad_id) = ids.iter().find(|i| Uuid::parse_str(i).is_err()) {
        return Err(bad(format!("{bad_id:?} is not a memory id (a UUID)")));
    }
    Ok(())
}

fn check_filter(f: &MemoryFilter) -> Result<(), MemoryError> {
    check_tags("filter.tags", &f.tags)?;
    if let (Some(a), Some(b)) = (f.after_ms, f.before_ms) {
        if a >= b {
            return Err(bad(format!(
                "filter.after_ms ({a}) must be before filter.before_ms ({b})"
            )));
        }
    }
    Ok(())
}
