//! The scale-out backend: a Qdrant server or cluster through `qdrant-client` (gRPC), for a user
//! whose memories outgrow one machine. Same points as the embedded store — a named dense vector,
//! a BM25 sparse vector (computed here with qdrant-edge's BM25, so both backends score keywords
//! alike), the payload, and the same payload indexes — and the same [`Backend`] contract.
//!
//! It needs the network, which only cloud-gateway has by default: config must say
//! `[services.memory] network = true` (checked at start).

use std::collections::HashMap;

use ming_schemas::memory::Memory;
use qdrant_client::qdrant::{
    point_id::PointIdOptions, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FieldType, Filter,
    GetPointsBuilder, Modifier, PointId, PointStruct, PointsIdsList, Query, QueryPointsBuilder,
    Range, ScrollPointsBuilder, SearchParamsBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, TextIndexParamsBuilder, TokenizerType, UpsertPointsBuilder,
    Value as QValue, VectorInput, VectorParamsBuilder, VectorsConfigBuilder, VectorsSelector,
};
use qdrant_client::{Payload, Qdrant};
use qdrant_edge::bm25_embed::EdgeBm25;

use crate::store::{
    bm25, memory_from, payload, Backend, Scored, Selection, StoreError, DENSE, SPARSE,
};

/// A collection on a Qdrant server.
pub struct QdrantBackend {
    url: String,
    collection: String,
    client: Qdrant,
    rt: tokio::runtime::Runtime,
    bm25: EdgeBm25,
}

fn op(e: impl std::fmt::Display) -> StoreError {
    StoreError::Op(format!("qdrant: {e}"))
}

fn id_of(p: Option<PointId>) -> String {
    match p.and_then(|p| p.point_id_options) {
        Some(PointIdOptions::Uuid(u)) => u,
        Some(PointIdOptions::Num(n)) => n.to_string(),
        None => String::new(),
    }
}

fn json_payload(p: HashMap<String, QValue>) -> serde_json::Map<String, serde_json::Value> {
    p.into_iter().map(|(k, v)| (k, v.into_json())).collect()
}

/// The selection as a Qdrant (gRPC) filter: the same conditions as `store::filter_json`.
fn filter(sel: &Selection) -> Option<Filter> {
    let f = &sel.filter;
    let mut must = Vec::new();
    if !f.kinds.is_empty() {
        let kinds: Vec<String> = f.kinds.iter().map(|k| k.as_str().to_string()).collect();
        must.push(Condition::matches("kind", kinds));
    }
    if !f.sources.is_empty() {
        must.push(Condition::matches("source", f.sources.clone()));
    }
    if !f.tags.is_empty() {
        must.push(Condition::matches("tags", f.tags.clone()));
    }
    if f.after_ms.is_some() || f.before_ms.is_some() {
        must.push(Condition::range(
            "created",
            Range {
                gte: f.after_ms.map(|a| a as f64),
                lt: f.before_ms.map(|b| b as f64),
                ..Range::default()
            },
        ));
    }
    if let Some(now) = sel.live_at {
        must.push(Condition::range(
            "expires",
            Range {
                gt: Some(now as f64),
                ..Range::default()
            },
        ));
    }
    (!must.is_empty()).then(|| Filter::must(must))
}

impl QdrantBackend {
    /// Connects to `url` and makes sure `collection` exists with the right vectors and indexes.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the server cannot be reached or the collection does not fit.
    pub fn open(
        url: &str,
        api_key: Option<String>,
        collection: &str,
        dims: usize,
    ) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: format!("{url} collection {collection}"),
            reason,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| open_err(e.to_string()))?;
        let mut builder = Qdrant::from_url(url).timeout(std::time::Duration::from_secs(10));
        if let Some(k) = api_key {
            builder = builder.api_key(k);
        }
        let client = builder.build().map_err(|e| open_err(e.to_string()))?;
        let me = Self {
            url: url.into(),
            collection: collection.into(),
            client,
            rt,
            bm25: bm25(),
        };
        me.rt
            .block_on(me.client.health_check())
            .map_err(|e| open_err(format!("the server does not answer: {e}")))?;
        let exists = me
            .rt
            .block_on(me.client.collection_exists(collection))
            .map_err(|e| open_err(e.to_string()))?;
        if !exists {
            me.create(dims).map_err(|e| open_err(e.to_string()))?;
        }
        Ok(me)
    }

    fn create(&self, dims: usize) -> Result<(), StoreError> {
        let mut vectors = VectorsConfigBuilder::default();
        vectors.add_named_vector_params(
            DENSE,
            VectorParamsBuilder::new(dims as u64, Distance::Cosine),
        );
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            SPARSE,
            SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
        );
        self.rt
            .block_on(
                self.client.create_collection(
                    CreateCollectionBuilder::new(&self.collection)
                        .vectors_config(vectors)
                        .sparse_vectors_config(sparse),
                ),
            )
            .map_err(op)?;
        for (field, kind) in [
            ("kind", FieldType::Keyword),
            ("source", FieldType::Keyword),
            ("tags", FieldType::Keyword),
            ("created", FieldType::Integer),
            ("expires", FieldType::Integer),
        ] {
            self.rt
                .block_on(
                    self.client.create_field_index(
                        CreateFieldIndexCollectionBuilder::new(&self.collection, field, kind)
                            .wait(true),
                    ),
                )
                .map_err(op)?;
        }
        self.rt
            .block_on(
                self.client.create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        &self.collection,
                        "text",
                        FieldType::Text,
                    )
                    .field_index_params(
                        TextIndexParamsBuilder::new(TokenizerType::Word)
                            .lowercase(true)
                            .phrase_matching(true),
                    )
                    .wait(true),
                ),
            )
            .map_err(op)?;
        Ok(())
    }

    fn search(
        &self,
        query: Query,
        using: &str,
        sel: &Selection,
        limit: usize,
    ) -> Result<Vec<Scored>, StoreError> {
        let mut q = QueryPointsBuilder::new(&self.collection)
            .query(query)
            .using(using)
            .limit(limit as u64)
            .with_payload(true)
            .params(SearchParamsBuilder::default().hnsw_ef(256));
        if let Some(f) = filter(sel) {
            q = q.filter(f);
        }
        let r = self.rt.block_on(self.client.query(q)).map_err(op)?;
        r.result
            .into_iter()
            .map(|p| {
                Ok(Scored {
                    memory: memory_from(id_of(p.id), &json_payload(p.payload))?,
                    score: p.score,
                })
            })
            .collect()
    }

    fn scroll_filtered(
        &self,
        f: Option<Filter>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Memory>, Option<String>), StoreError> {
        let mut s = ScrollPointsBuilder::new(&self.collection)
            .limit(limit as u32)
            .with_payload(true);
        if let Some(f) = f {
            s = s.filter(f);
        }
        if let Some(a) = after {
            s = s.offset(PointId::from(a.to_string()));
        }
        let r = self.rt.block_on(self.client.scroll(s)).map_err(op)?;
        let next = r.next_page_offset.map(|p| id_of(Some(p)));
        let memories = r
            .result
            .into_iter()
            .map(|p| memory_from(id_of(p.id), &json_payload(p.payload)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((memories, next))
    }
}

impl Backend for QdrantBackend {
    fn name(&self) -> &'static str {
        "qdrant"
    }

    fn location(&self) -> String {
        format!("{} collection {}", self.url, self.collection)
    }

    fn upsert(&self, items: &[(Memory, Vec<f32>)]) -> Result<(), StoreError> {
        let mut points = Vec::with_capacity(items.len());
        for (m, v) in items {
            let sparse = self.bm25.embed_document(&m.text);
            let vectors: HashMap<String, qdrant_client::qdrant::Vector> = HashMap::from([
                (
                    DENSE.to_string(),
                    qdrant_client::qdrant::Vector::new_dense(v.clone()),
                ),
                (
                    SPARSE.to_string(),
                    qdrant_client::qdrant::Vector::new_sparse(
                        sparse.indices.clone(),
                        sparse.values.clone(),
                    ),
                ),
            ]);
            let p = Payload::try_from(payload(m)).map_err(op)?;
            points.push(PointStruct::new(m.id.clone(), vectors, p));
        }
        // wait = true: acknowledged once applied and in the server's write-ahead log.
        self.rt
            .block_on(
                self.client
                    .upsert_points(UpsertPointsBuilder::new(&self.collection, points).wait(true)),
            )
            .map_err(op)?;
        Ok(())
    }

    fn delete(&self, ids: &[String]) -> Result<u64, StoreError> {
        let existing = self.get(ids)?;
        if existing.is_empty() {
            return Ok(0);
        }
        let pids: Vec<PointId> = existing
            .iter()
            .map(|(m, _)| PointId::from(m.id.clone()))
            .collect();
        self.rt
            .block_on(
                self.client.delete_points(
                    DeletePointsBuilder::new(&self.collection)
                        .points(PointsIdsList { ids: pids })
                        .wait(true),
                ),
            )
            .map_err(op)?;
        Ok(existing.len() as u64)
    }

    fn dense(
        &self,
        vector: &[f32],
        sel: &Selection,
        limit: usize,
    ) -> Result<Vec<Scored>, StoreError> {
        self.search(Query::new_nearest(vector.to_vec()), DENSE, sel, limit)
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
        let input = VectorInput::new_sparse(sparse.indices.clone(), sparse.values.clone());
        self.search(Query::new_nearest(input), SPARSE, sel, limit)
    }

    fn phrase(&self, text: &str, sel: &Selection, limit: usize) -> Result<Vec<Memory>, StoreError> {
        let mut f = filter(sel).unwrap_or_default();
        f.must.push(Condition::matches_phrase("text", text));
        Ok(self.scroll_filtered(Some(f), None, limit)?.0)
    }

    fn get(&self, ids: &[String]) -> Result<Vec<(Memory, Vec<f32>)>, StoreError> {
        let pids: Vec<PointId> = ids.iter().map(|i| PointId::from(i.clone())).collect();
        if pids.is_empty() {
            return Ok(Vec::new());
        }
        let r = self
            .rt
            .block_on(
                self.client.get_points(
                    GetPointsBuilder::new(&self.collection, pids)
                        .with_payload(true)
                        .with_vectors(VectorsSelector {
                            names: vec![DENSE.to_string()],
                        }),
                ),
            )
            .map_err(op)?;
        r.result
            .into_iter()
            .map(|p| {
                let v = p
                    .vectors
                    .as_ref()
                    .and_then(|v| v.get_vector_by_name(DENSE))
                    .and_then(|v| match v {
                        qdrant_client::qdrant::vector_output::Vector::Dense(d) => Some(d.data),
                        _ => None,
                    })
                    .unwrap_or_default();
                Ok((memory_from(id_of(p.id), &json_payload(p.payload))?, v))
            })
            .collect()
    }

    fn scroll(
        &self,
        sel: &Selection,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Memory>, Option<String>), StoreError> {
        self.scroll_filtered(filter(sel), after, limit)
    }

    fn count(&self, sel: &Selection) -> Result<u64, StoreError> {
        let mut c = CountPointsBuilder::new(&self.collection).exact(true);
        if let Some(f) = filter(sel) {
            c = c.filter(f);
        }
        let r = self.rt.block_on(self.client.count(c)).map_err(op)?;
        Ok(r.result.map_or(0, |c| c.count))
    }

    fn expired(&self, now: i64, limit: usize) -> Result<Vec<String>, StoreError> {
        let f = Filter::must([Condition::range(
            "expires",
            Range {
                lte: Some(now as f64),
                ..Range::default()
            },
        )]);
        Ok(self
            .scroll_filtered(Some(f), None, limit)?
            .0
            .into_iter()
            .map(|m| m.id)
            .collect())
    }

    fn disk_bytes(&self) -> u64 {
        0
    }
}
