//! Messages of the memory service (target `memory`).
//!
//! | kind | request | reply |
//! |---|---|---|
//! | `memory.remember` | [`Remember`] | [`Remembered`] |
//! | `memory.recall` | [`Recall`] | [`Recalled`] |
//! | `memory.get` | [`MemoryIds`] | [`Memories`] |
//! | `memory.update` | [`Update`] | [`Memory`] |
//! | `memory.forget` | [`Forget`] | [`Forgotten`] |
//! | `memory.list` | [`List`] | [`Listed`] (one page; `export` is `list` until `next` is empty) |
//! | `memory.import` | [`Import`] | [`Imported`] |
//! | `memory.stats` | empty map | [`MemoryStats`] |
//! | `memory.embed` | [`Embed`] | [`Embedded`] |
//!
//! Times are milliseconds since the Unix epoch. Ids are UUIDs in their text form. Requests with
//! fields this version does not know are refused with `BadRequest` (a misspelt filter must not
//! silently match everything).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// Something true about the user or the world ("my sister lives in Lyon").
    Fact,
    /// How the user likes things ("I prefer short answers").
    Preference,
    /// Something that happened ("booked the dentist for Tuesday"); fades with time.
    Episode,
    /// A chunk of a document indexed for search.
    Document,
}

impl MemoryKind {
    pub const ALL: [MemoryKind; 4] = [
        MemoryKind::Fact,
        MemoryKind::Preference,
        MemoryKind::Episode,
        MemoryKind::Document,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemoryKind::Fact => "fact",
            MemoryKind::Preference => "preference",
            MemoryKind::Episode => "episode",
            MemoryKind::Document => "document",
        }
    }

    /// Parses the wire name (`fact`, `preference`, `episode`, `document`).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for MemoryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn default_kind() -> MemoryKind {
    MemoryKind::Fact
}

fn default_source() -> String {
    "user".into()
}

/// A memory to keep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMemory {
    pub text: String,
    #[serde(default = "default_kind")]
    pub kind: MemoryKind,
    /// Who or what said it: `user`, `agent`, `documents`, a tool's name.
    #[serde(default = "default_source")]
    pub source: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Forget it this many seconds from now; none: keep until forgotten (or decayed).
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

impl NewMemory {
    pub fn new(text: impl Into<String>, kind: MemoryKind) -> Self {
        Self {
            text: text.into(),
            kind,
            source: default_source(),
            tags: Vec::new(),
            ttl_s: None,
        }
    }
}

/// `memory.remember`: one or more memories, embedded in one batch and made durable together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remember {
    pub memories: Vec<NewMemory>,
}

/// One stored memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    pub id: String,
    pub text: String,
    pub kind: MemoryKind,
    pub source: String,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// When it expires; none: never.
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

/// What happened to one [`NewMemory`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RememberOutcome {
    pub id: String,
    /// True when it matched an existing memory (cosine ≥ `dedup_threshold`) which was updated
    /// instead of adding a copy; `id` is then that memory's.
    pub deduplicated: bool,
}

/// Reply to `memory.remember`, sent only once every memory in it is durable on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    pub outcomes: Vec<RememberOutcome>,
    pub embed_ms: f64,
    pub store_ms: f64,
}

/// Which memories a recall, list or forget applies to. Every set field must hold; within a list,
/// any value may match (`kinds = [fact, preference]`: either). Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<MemoryKind>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Memories with any of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Created at or after (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_ms: Option<i64>,
    /// Created before (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_ms: Option<i64>,
}

impl MemoryFilter {
    pub fn is_empty(&self) -> bool {
        self == &MemoryFilter::default()
    }
}

/// `memory.recall`: the memories most relevant to `query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recall {
    pub query: String,
    #[serde(default = "default_k")]
    pub k: u32,
    #[serde(default)]
    pub filter: MemoryFilter,
    /// Leave out hits whose dense similarity is below this (exact-phrase hits always pass).
    #[serde(default)]
    pub min_score: Option<f32>,
}

fn default_k() -> u32 {
    5
}

/// One recalled memory and why it was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecallHit {
    pub memory: Memory,
    /// The fused rank score (reciprocal rank fusion of the dense, keyword and phrase lists,
    /// times the memory's decay weight); only its order means something.
    pub score: f32,
    /// Cosine similarity of the query's and the memory's embeddings.
    pub dense: f32,
    /// BM25 score of the query's words in the memory (0: none of them).
    pub keyword: f32,
    /// The query occurs in the memory as a phrase.
    pub phrase: bool,
}

/// Reply to `memory.recall`, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recalled {
    pub hits: Vec<RecallHit>,
    pub embed_ms: f64,
    pub search_ms: f64,
}

/// `memory.get`: memories by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryIds {
    pub ids: Vec<String>,
}

/// Memories, in the order asked for (`get`) or stored (`list`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memories {
    pub memories: Vec<Memory>,
}

/// `memory.update`: change a memory; fields left out stay as they are.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    pub id: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub kind: Option<MemoryKind>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Seconds from now; `Some(0)` removes the expiry.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

/// `memory.forget`: by ids, or by a filter (an empty filter forgets nothing unless `all`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Forget {
    #[serde(default)]
    pub ids: Vec<String>,
    #[serde(default)]
    pub filter: Option<MemoryFilter>,
    /// With an empty filter: forget every memory.
    #[serde(default)]
    pub all: bool,
}

/// Reply to `memory.forget`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Forgotten {
    pub forgotten: u64,
}

/// `memory.list`: one page of memories in id order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct List {
    #[serde(default)]
    pub filter: MemoryFilter,
    /// Page size (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// The `next` of the previous page.
    #[serde(default)]
    pub after: Option<String>,
}

/// Reply to `memory.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    pub memories: Vec<Memory>,
    /// Where the next page starts; none: this was the last.
    pub next: Option<String>,
}

/// `memory.import`: memories as exported (ids and times kept; vectors are computed again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Import {
    pub memories: Vec<Memory>,
}

/// Reply to `memory.import`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Imported {
    pub imported: u64,
    /// Already expired, so not stored.
    pub expired: u64,
}

/// Reply to `memory.stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    pub backend: String,
    pub location: String,
    pub memories: u64,
    pub by_kind: BTreeMap<String, u64>,
    pub embedding_model: String,
    pub dims: u32,
    /// Bytes the store takes on disk (edge backend; 0 when unknown).
    pub disk_bytes: u64,
    /// Memories purged since the service started (expired or decayed).
    pub purged: u64,
}

/// `memory.embed`: texts → L2-normalised vectors of the memory's embedding model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Embed {
    pub texts: Vec<String>,
}

/// Reply to `memory.embed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedded {
    pub model: String,
    /// sha256 of the model file (what a router trained on these vectors pins).
    #[serde(default)]
    pub sha256: String,
    pub dims: u32,
    pub vectors: Vec<Vec<f32>>,
    pub embed_ms: f64,
}
