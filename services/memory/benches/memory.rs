//! `cargo bench -p ming-memory --bench memory` (part of `just bench`).
//!
//! For each store size (env `MING_BENCH_MEMORIES`, default `10000,100000`):
//! - embedding throughput (texts/s) of the real all-MiniLM-L6-v2 GGUF, batched;
//! - bulk load into the qdrant-edge store, then its optimiser (HNSW build) time;
//! - recall@10 of the store's dense search against exact brute force on the same vectors;
//! - recall latency p50/p99 end to end over the bus (client → broker → memory service →
//!   query embedding + dense + BM25 + phrase search + fusion → back), and of the search alone;
//! - `remember` throughput over the bus (batches of 64, each acknowledged only once durable);
//! - the process's RSS (broker, service, embedder and store all live in it).
//!
//! `MING_BENCH_CACHE=<dir>` keeps the corpus vectors between runs (the embedding line is then
//! skipped).
//!
//! The corpus is generated from templates (people, actions, places, times), so it is sentences
//! the model embeds like real memories, not random vectors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ming_bus::broker::BrokerHandle;
use ming_bus::worker::{run_worker, WorkerOptions};
use ming_bus::{BusClient, BusConfig};
use ming_config::{models, Config, Paths};
use ming_memory::embed::{dot, Embedder};
use ming_memory::memories::{Clock, Memories, Settings, SystemClock};
use ming_memory::store::{Backend, EdgeBackend, Selection};
use ming_memory::MemoryService;
use ming_schemas::kinds;
use ming_schemas::memory::{
    Embed, Embedded, Memory, MemoryKind, NewMemory, Recall, Recalled, Remember, Remembered,
};
use qdrant_edge::external::uuid::Uuid;

const PEOPLE: &[&str] = &[
    "my sister",
    "my brother",
    "my manager",
    "the plumber",
    "my neighbour",
    "our landlord",
    "my dentist",
    "my daughter",
    "my son",
    "grandma",
    "the accountant",
    "my friend Tomás",
    "my colleague Priya",
    "the vet",
    "my partner",
    "the electrician",
    "coach Miller",
    "aunt Rosa",
];
const ACTIONS: &[&str] = &[
    "prefers",
    "recommended",
    "borrowed",
    "is allergic to",
    "forgot",
    "asked about",
    "paid for",
    "booked",
    "cancelled",
    "loves",
    "hates",
    "repaired",
    "lost",
    "ordered",
    "returned",
    "complained about",
    "is saving for",
    "painted",
];
const THINGS: &[&str] = &[
    "the red bicycle",
    "oat milk",
    "a table for four",
    "the quarterly report",
    "peanuts",
    "the blue umbrella",
    "a flight to Lisbon",
    "the kitchen tap",
    "tickets for the concert",
    "a new laptop",
    "the garden fence",
    "green tea",
    "the car insurance",
    "a yoga class",
    "the winter tyres",
    "a birthday cake",
    "the spare key",
    "jazz records",
    "the boiler service",
    "a dentist appointment",
];
const WHEN: &[&str] = &[
    "last Monday",
    "on Friday evening",
    "every Sunday",
    "in March",
    "yesterday",
    "next week",
    "at 9 am",
    "after lunch",
    "over the weekend",
    "before Christmas",
    "this morning",
    "twice a month",
    "in the summer",
    "on the 14th",
];
const WHERE: &[&str] = &[
    "at the market",
    "in Leeds",
    "near the station",
    "at the office",
    "online",
    "in the garage",
    "at the gym",
    "downtown",
    "at school",
    "in the garden",
    "at the airport",
    "by the river",
];

fn sentence(i: usize) -> String {
    // A mixed-radix walk through the templates: every i is a different sentence.
    let mut n = i;
    let mut pick = |xs: &[&'static str]| {
        let x = xs[n % xs.len()];
        n /= xs.len();
        x
    };
    let (p, a, t, w, h) = (
        pick(PEOPLE),
        pick(ACTIONS),
        pick(THINGS),
        pick(WHEN),
        pick(WHERE),
    );
    format!("{p} {a} {t} {w} {h} (note {i})")
}

/// How long `f` takes, in milliseconds.
fn ms<T>(f: impl FnOnce() -> T) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e3
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn du(p: &std::path::Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|es| es.flatten().map(|e| du(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// With `MING_BENCH_CACHE` set to a folder, the corpus's vectors are kept there between runs
/// (embedding 100k memories takes ~12 minutes on 2 cores), named by the model file and a hash
/// of the texts, so a changed corpus or model is embedded afresh.
fn vector_cache(embedder: &Embedder, texts: &[String]) -> Option<std::path::PathBuf> {
    let dir = std::path::PathBuf::from(std::env::var_os("MING_BENCH_CACHE")?);
    // FNV-1a over the texts and the model's name: stable across runs and toolchains.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in embedder
        .model
        .bytes()
        .chain(texts.iter().flat_map(|t| t.bytes().chain([0])))
    {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir.join(format!(
        "vectors-{}-{}-{h:016x}.f32",
        embedder.model,
        texts.len()
    )))
}

fn read_vectors(path: &std::path::Path, n: usize, dims: usize) -> Option<Vec<Vec<f32>>> {
    let bytes = std::fs::read(path).ok()?;
    if bytes.len() != n * dims * 4 {
        return None;
    }
    Some(
        bytes
            .chunks_exact(dims * 4)
            .map(|row| {
                row.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            })
            .collect(),
    )
}

fn write_vectors(path: &std::path::Path, vectors: &[Vec<f32>]) {
    let bytes: Vec<u8> = vectors
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .is_err()
    {
        eprintln!("could not keep the vectors in {}", path.display());
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("MING_BENCH_MEMORIES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let cfg = Config::from_toml_over_defaults("").expect("config");
    let (m, path) = models::resolve(
        &cfg.memory.embedding_model,
        "embedding",
        &Paths::resolve(&cfg.paths).model_dir,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let embedder = Embedder::start(&m.name, path.clone(), 0).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "memory bench: {} ({} dims), sizes {sizes:?}",
        embedder.model, embedder.dims
    );
    if cfg!(debug_assertions) {
        // 2026-12-03: at 100k a debug build searched 10x slower (40 deep at ef 128: 8.1 ms).
        println!(
            "(a debug build: qdrant-edge is not optimised in it, so only the embedding lines mean \
             anything; `cargo bench` builds the release profile)"
        );
    }
    // Embedding latency by batch size (a recall embeds one short query).
    for batch in [1usize, 4, 16, 64] {
        let mut per = Vec::new();
        for r in 0..(64 / batch).max(8) {
            let texts: Vec<String> = (0..batch).map(|i| sentence(r * 1000 + i)).collect();
            let t = Instant::now();
            embedder.embed_blocking(texts).expect("embed");
            per.push(t.elapsed().as_secs_f64() * 1e3);
        }
        per.sort_by(f64::total_cmp);
        let p50 = pct(&per, 0.5);
        println!(
            "embed batch {batch:>3}: p50 {p50:>7.2} ms per call, {:>6.2} ms per text",
            p50 / batch as f64
        );
    }
    // A recall embeds one short query: on all cores against one, in the same run (is a
    // 10-token pass worth the threads' meeting after every operation? 2026-12-03: yes, 0.56x).
    match Embedder::start(&m.name, path, 1) {
        Ok(single) => {
            let (mut all, mut one) = (Vec::new(), Vec::new());
            for r in 0..64 {
                let text = vec![sentence(r * 7919 + 11)];
                for (e, out) in [(&embedder, &mut all), (&single, &mut one)] {
                    out.push(ms(|| e.embed_blocking(text.clone()).expect("embed")));
                }
            }
            all.sort_by(f64::total_cmp);
            one.sort_by(f64::total_cmp);
            println!(
                "embed 1 text: p50 {:.2} ms on all cores, {:.2} ms on one thread ({:.2}x)",
                pct(&all, 0.5),
                pct(&one, 0.5),
                pct(&all, 0.5) / pct(&one, 0.5)
            );
        }
        Err(e) => println!("embed 1 text: no one-thread embedder: {e}"),
    }
    if std::env::var_os("MING_BENCH_EMBED_ONLY").is_some() {
        return;
    }
    for n in sizes {
        bench_size(&embedder, n);
    }
}

fn bench_size(embedder: &Embedder, n: usize) {
    println!("\n== {n} memories ==");
    let dir = tempfile::tempdir().expect("temp dir");
    let store_dir = dir.path().join("store");
    // 1. Embedding throughput over the whole corpus (kept for the brute-force reference).
    let texts: Vec<String> = (0..n).map(sentence).collect();
    let cache = vector_cache(embedder, &texts);
    let vectors = match cache
        .as_ref()
        .and_then(|p| read_vectors(p, n, embedder.dims))
    {
        Some(v) => {
            println!(
                "embed        skipped: {n} vectors read from {} (unset MING_BENCH_CACHE to measure)",
                cache.as_ref().map_or(String::new(), |p| p.display().to_string())
            );
            v
        }
        None => {
            let t = Instant::now();
            let mut vectors = Vec::with_capacity(n);
            for chunk in texts.chunks(256) {
                vectors.extend(embedder.embed_blocking(chunk.to_vec()).expect("embed"));
            }
            let embed_s = t.elapsed().as_secs_f64();
            println!(
                "embed        {:>9.0} texts/s  ({n} texts in {embed_s:.1} s)",
                n as f64 / embed_s
            );
            if let Some(p) = &cache {
                write_vectors(p, &vectors);
            }
            vectors
        }
    };

    // 2. Bulk load (the import path: no dedup search), then the optimiser.
    let backend = EdgeBackend::open(&store_dir, embedder.dims).expect("store");
    let now = SystemClock.now_ms();
    let t = Instant::now();
    let items: Vec<(Memory, Vec<f32>)> = texts
        .iter()
        .zip(&vectors)
        .map(|(text, v)| {
            (
                Memory {
                    id: Uuid::new_v4().to_string(),
                    text: text.clone(),
                    kind: MemoryKind::Fact,
                    source: "bench".into(),
                    tags: vec![],
                    created_ms: now,
                    updated_ms: now,
                    expires_ms: None,
                },
                v.clone(),
            )
        })
        .collect();
    for chunk in items.chunks(1000) {
        backend.upsert(chunk).expect("upsert");
    }
    let load_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let optimised = backend.maintain().expect("optimise");
    let opt_s = t.elapsed().as_secs_f64();
    println!(
        "store load   {:>9.0} memories/s (1000 per durable write); optimise {opt_s:.1} s (index built: {optimised}); {:.1} MiB on disk",
        n as f64 / load_s,
        backend.disk_bytes() as f64 / (1024.0 * 1024.0)
    );

    // Where the disk space goes (top-level parts of the store).
    let parts: Vec<String> = std::fs::read_dir(&store_dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    format!(
                        "{} {:.1} MiB",
                        e.file_name().to_string_lossy(),
                        du(&e.path()) as f64 / 1048576.0
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!("on disk      {}", parts.join(", "));
    let built = backend.index_info().expect("info");

    // 3. recall@10 of the dense search against brute force.
    let queries: Vec<String> = (0..200).map(|i| sentence(n * 7 + i * 13 + 3)).collect();
    let qv = embedder
        .embed_blocking(queries.clone())
        .expect("embed queries");
    let sel = Selection {
        filter: Default::default(),
        live_at: Some(now),
    };
    // The exact top 10 of each query, once.
    let truths: Vec<std::collections::HashSet<&str>> = qv
        .iter()
        .map(|q| {
            let mut exact: Vec<(f32, usize)> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| (dot(q, v), i))
                .collect();
            exact.sort_by(|a, b| b.0.total_cmp(&a.0));
            exact[..10]
                .iter()
                .map(|(_, i)| items[*i].0.id.as_str())
                .collect()
        })
        .collect();
    // hnsw_ef against recall@10 and search time, on the full vectors and on their 8-bit copies
    // (rescored), in the same run (the service uses 128, quantized). In a recall the search comes
    // right after the query embedding, which runs the model's weights through the CPU caches:
    // "after an embedding" times that (each query embedded, then searched).
    let mut backend = backend;
    for ef in [64usize, 128, 256] {
        backend.set_ef(ef);
        for quantized in [false, true] {
            backend.set_quantized(quantized);
            let mut found = 0;
            let mut search_ms = Vec::new();
            for (q, truth) in qv.iter().zip(&truths) {
                let mut got = Vec::new();
                search_ms.push(ms(|| got = backend.dense(q, &sel, 10).expect("search")));
                found += got
                    .iter()
                    .filter(|s| truth.contains(s.memory.id.as_str()))
                    .count();
            }
            search_ms.sort_by(f64::total_cmp);
            // A recall fetches 40 (k = 10 times four) for the fusion.
            let mut deep_ms: Vec<f64> = qv
                .iter()
                .map(|q| ms(|| backend.dense(q, &sel, 40).expect("search")))
                .collect();
            deep_ms.sort_by(f64::total_cmp);
            let mut cold_ms: Vec<f64> = queries
                .iter()
                .zip(&qv)
                .map(|(text, q)| {
                    embedder.embed_blocking(vec![text.clone()]).expect("embed");
                    ms(|| backend.dense(q, &sel, 40).expect("search"))
                })
                .collect();
            cold_ms.sort_by(f64::total_cmp);
            println!(
                "recall@10    {:>9.3}  (hnsw_ef {ef}, {}: vs exact brute force, 200 queries; search alone p50 {:.2} ms p99 {:.2} ms; 40 deep p50 {:.2} ms, after an embedding {:.2} ms)",
                found as f64 / (qv.len() * 10) as f64,
                if quantized { "8-bit, rescored" } else { "full vectors   " },
                pct(&search_ms, 0.5),
                pct(&search_ms, 0.99),
                pct(&deep_ms, 0.5),
                pct(&cold_ms, 0.5)
            );
        }
    }
    drop(backend);

    // 4. End to end over the bus: broker + memory service in this process.
    let cfg = Config::from_toml_over_defaults("").expect("config");
    let reopened = EdgeBackend::open(&store_dir, embedder.dims).expect("reopen");
    println!(
        "segments     (segments, points, indexed vectors) {built:?} after the optimiser, {:?} reopened",
        reopened.index_info().expect("info")
    );
    let memories = Arc::new(Memories::new(
        Box::new(reopened),
        embedder.clone(),
        Settings::from_config(&cfg.memory),
        Arc::new(SystemClock),
    ));
    // Each stage of a recall alone, on the same queries (where the time goes).
    let b = memories.backend();
    // Each is also run a second time at once ("again"): the difference is what a stage loses
    // to the others' use of the CPU caches (a recall comes alone, so its first run is the real one).
    let mut stages: [Vec<f64>; 10] = Default::default();
    // A recall checks expiry itself (see `Memories::recall_with`): its searches go without it.
    let open = Selection {
        filter: Default::default(),
        live_at: None,
    };
    for (q, v) in queries.iter().zip(&qv) {
        let embed = || embedder.embed_blocking(vec![q.clone()]).expect("embed");
        let dense = || b.dense(v, &sel, 40).expect("dense");
        let mut keyword = Vec::new();
        stages[0].push(ms(embed));
        stages[1].push(ms(dense));
        stages[2].push(ms(|| keyword = b.keyword(q, &sel, 40).expect("keyword")));
        stages[3].push(ms(|| b.phrase(q, &sel, 40).expect("phrase")));
        // Recall fetches the vectors of keyword-only candidates: here, all 40 keyword hits.
        let ids: Vec<String> = keyword.into_iter().map(|s| s.memory.id).collect();
        stages[4].push(ms(|| b.get(&ids).expect("get")));
        stages[5].push(ms(embed));
        stages[6].push(ms(dense));
        // Each query ends in a number no memory has, which settles its phrase search at once;
        // the words before it are in thousands of memories, which it has to intersect.
        let known = q.split(" (note").next().unwrap_or(q);
        stages[7].push(ms(|| b.phrase(known, &sel, 40).expect("phrase")));
        embed();
        stages[8].push(ms(|| b.dense(v, &open, 40).expect("dense")));
        stages[9].push(ms(|| b.keyword(q, &open, 40).expect("keyword")));
    }
    for st in &mut stages {
        st.sort_by(f64::total_cmp);
    }
    println!(
        "stages p50   embed {:.2} ms, dense {:.2} ms, bm25 {:.2} ms, phrase {:.2} ms, get {:.2} ms (depth 40); again at once: embed {:.2} ms, dense {:.2} ms; phrase of known words {:.2} ms; without the expiry filter (as a recall runs them): dense {:.2} ms, bm25 {:.2} ms",
        pct(&stages[0], 0.5),
        pct(&stages[1], 0.5),
        pct(&stages[2], 0.5),
        pct(&stages[3], 0.5),
        pct(&stages[4], 0.5),
        pct(&stages[5], 0.5),
        pct(&stages[6], 0.5),
        pct(&stages[7], 0.5),
        pct(&stages[8], 0.5),
        pct(&stages[9], 0.5)
    );

    // In process (no bus): the keyword and phrase searches beside the dense search, or after
    // it, alternating on the same queries.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for q in &queries {
        for beside in [true, false] {
            let t = Instant::now();
            memories
                .recall_with(
                    Recall {
                        query: q.clone(),
                        k: 10,
                        filter: Default::default(),
                        min_score: None,
                    },
                    beside,
                )
                .expect("recall");
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if beside {
                with.push(ms)
            } else {
                without.push(ms)
            }
        }
    }
    with.sort_by(f64::total_cmp);
    without.sort_by(f64::total_cmp);
    println!(
        "recall here  p50 {:>6.2} ms keyword beside dense / {:>6.2} ms one after another ({:.2}x); p99 {:.2} / {:.2} ms",
        pct(&with, 0.5),
        pct(&without, 0.5),
        pct(&without, 0.5) / pct(&with, 0.5),
        pct(&with, 0.99),
        pct(&without, 0.99)
    );
    let bus = BusConfig::in_dir(dir.path());
    let _broker = BrokerHandle::start(&bus, ["memory".to_string()], None).expect("broker");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let service = MemoryService::new(Arc::clone(&memories));
    let wbus = bus.clone();
    rt.spawn(async move {
        let _ = run_worker(
            &wbus,
            WorkerOptions::for_service("memory"),
            Arc::new(service),
            std::future::pending(),
        )
        .await;
    });
    let (recall_ms, remember_rate) = rt.block_on(async {
        let client = BusClient::connect(&bus, "bench").expect("client");
        let recall = |q: &str| Recall {
            query: q.into(),
            k: 10,
            filter: Default::default(),
            min_score: None,
        };
        loop {
            let r: Result<Recalled, _> = client
                .request(
                    "memory",
                    kinds::MEMORY_RECALL,
                    &recall("warm up"),
                    Duration::from_millis(2000),
                )
                .await;
            if r.is_ok() {
                break;
            }
        }
        let mut times = Vec::new();
        for q in &queries {
            let t = Instant::now();
            let _: Recalled = client
                .request(
                    "memory",
                    kinds::MEMORY_RECALL,
                    &recall(q),
                    Duration::from_secs(5),
                )
                .await
                .expect("recall");
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        // Where the bus's share goes: the same recall in this process, the query's embedding
        // alone over the bus, and a request that does no work (`memory.embed` of no text),
        // alternating on the same queries.
        let mut parts: [Vec<f64>; 3] = Default::default();
        for q in &queries {
            parts[0].push(tokio::task::block_in_place(|| {
                ms(|| memories.recall(recall(q)).expect("recall"))
            }));
            let t = Instant::now();
            let _: Embedded = client
                .request(
                    "memory",
                    kinds::MEMORY_EMBED,
                    &Embed {
                        texts: vec![q.clone()],
                    },
                    Duration::from_secs(5),
                )
                .await
                .expect("embed");
            parts[1].push(t.elapsed().as_secs_f64() * 1e3);
            // No texts: answered at once (with whatever the service says about it).
            let t = Instant::now();
            let _: Result<Embedded, _> = client
                .request(
                    "memory",
                    kinds::MEMORY_EMBED,
                    &Embed { texts: vec![] },
                    Duration::from_secs(5),
                )
                .await;
            parts[2].push(t.elapsed().as_secs_f64() * 1e3);
        }
        for p in &mut parts {
            p.sort_by(f64::total_cmp);
        }
        println!(
            "bus share    p50 recall in this process {:.2} ms; over the bus: embedding alone {:.2} ms, a request doing nothing (embed no text) {:.2} ms",
            pct(&parts[0], 0.5),
            pct(&parts[1], 0.5),
            pct(&parts[2], 0.5)
        );
        let t = Instant::now();
        let mut stored = 0;
        for b in 0..10 {
            let batch = Remember {
                memories: (0..64)
                    .map(|i| NewMemory::new(sentence(n * 3 + b * 64 + i), MemoryKind::Fact))
                    .collect(),
            };
            let r: Remembered = client
                .request(
                    "memory",
                    kinds::MEMORY_REMEMBER,
                    &batch,
                    Duration::from_secs(60),
                )
                .await
                .expect("remember");
            stored += r.outcomes.len();
        }
        (times, stored as f64 / t.elapsed().as_secs_f64())
    });
    println!(
        "recall       p50 {:>6.2} ms  p99 {:>6.2} ms  (over the bus, k=10, hybrid, including the query embedding)",
        pct(&recall_ms, 0.5),
        pct(&recall_ms, 0.99)
    );
    println!("remember     {remember_rate:>9.0} memories/s over the bus (batches of 64: embed, dedup search, durable write)");
    println!(
        "rss          {:>9.0} MiB (this process: broker, service, embedder, store)",
        rss_mib()
    );
}
