//! `just bench` — the personal router: training time for 1k and 10k examples on this CPU, router
//! inference latency (features + forward pass, the embedding excluded), and accuracy and
//! calibration on the held-out set.
//!
//! Embeddings: the training service's cache (`<data_dir>/training/embeddings.mpk`, written by
//! any `ming train router`; or `MING_BENCH_EMBEDDINGS=path`) when it holds the seed texts; else
//! stand-ins — each text's hashed n-grams through a fixed random projection to 384 values —
//! which keep the timing honest (same widths, same work) but not the accuracy; the report says
//! which it used. The 1k/10k sets are the seed set repeated with noise on the embeddings and a
//! word dropped now and then, so the network sees varied inputs of the real shape.
//!
//! Env: `MING_BENCH_ROUTER_SIZES` (default `1000,10000`), `MING_BENCH_ROUTER_EPOCHS` (default
//! the config's).

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use ming_schemas::training::{text_features, Router};
use ming_training::data::{self, Dataset, Example, Origin};
use ming_training::train::{self, FeatureSpec, Params, Row};

#[derive(serde::Deserialize)]
struct Cache {
    #[allow(dead_code)]
    sha256: String,
    vectors: HashMap<String, Vec<f32>>,
}

fn real_embeddings(texts: &[String]) -> Option<(String, HashMap<String, Vec<f32>>)> {
    let path = std::env::var("MING_BENCH_EMBEDDINGS").map_or_else(
        |_| {
            let cfg = ming_config::Config::load(&ming_config::LoadOptions::default()).ok()?;
            Some(ming_training::data_dir(&cfg).join("embeddings.mpk"))
        },
        |p| Some(p.into()),
    )?;
    let bytes = std::fs::read(&path).ok()?;
    let cache: Cache = rmp_serde::from_slice(&bytes).ok()?;
    texts
        .iter()
        .all(|t| cache.vectors.contains_key(t))
        .then(|| (path.display().to_string(), cache.vectors))
}

fn stand_in(text: &str, projection: &[f32]) -> Vec<f32> {
    let f = text_features(text, 512);
    let mut v = vec![0.0f32; 384];
    for (i, x) in f.iter().enumerate().filter(|(_, x)| **x != 0.0) {
        for (j, vj) in v.iter_mut().enumerate() {
            *vj += x * projection[i * 384 + j];
        }
    }
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let cfg = ming_config::Config::load(&ming_config::LoadOptions::default())
        .unwrap_or_else(|e| panic!("config: {e}"));
    let t = &cfg.training;
    // As the service runs it: `training.threads` threads for the math.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(t.threads as usize)
        .build_global();
    let shipped = data::shipped().unwrap_or_else(|e| panic!("{e}"));
    let dataset = Dataset::assemble(shipped);
    let texts = dataset.texts();
    let mut rng = fastrand::Rng::with_seed(3);
    let (source, vectors) = match real_embeddings(&texts) {
        Some((path, v)) => (format!("real all-MiniLM embeddings from {path}"), v),
        None => {
            let projection: Vec<f32> = (0..512 * 384).map(|_| rng.f32() * 2.0 - 1.0).collect();
            (
                "stand-in embeddings (no cache with the seed texts; run `ming train router` once for real ones)".into(),
                texts.iter().map(|s| (s.clone(), stand_in(s, &projection))).collect(),
            )
        }
    };
    println!(
        "router bench: {source}; {} thread(s) (training.threads)",
        t.threads
    );
    let buckets = t.ngram_buckets as usize;
    let spec = FeatureSpec {
        embedding_model: "bench".into(),
        embedding_sha256: "bench".into(),
        embedding_dims: 384,
        ngram_buckets: t.ngram_buckets,
    };
    let row = |e: &Example, noise: f32, rng: &mut fastrand::Rng| -> Option<Row> {
        let mut text = e.text.clone();
        if noise > 0.0 && rng.f32() < 0.3 {
            let mut w: Vec<&str> = text.split_whitespace().collect();
            if w.len() > 2 {
                w.remove(rng.usize(..w.len()));
            }
            text = w.join(" ");
        }
        let mut x = vectors.get(&e.text)?.clone();
        if noise > 0.0 {
            x.iter_mut().for_each(|v| *v += (rng.f32() - 0.5) * noise);
            let n = x.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-6);
            x.iter_mut().for_each(|v| *v /= n);
        }
        x.extend(text_features(&text, buckets));
        Some(Row {
            x,
            y: dataset.label_index(&e.label)?,
            w: e.weight,
        })
    };
    let calibration: Vec<Row> = dataset
        .calibration
        .iter()
        .filter_map(|e| row(e, 0.0, &mut rng))
        .collect();
    let heldout: Vec<Row> = dataset
        .validation
        .iter()
        .filter(|e| e.origin == Origin::Heldout)
        .filter_map(|e| row(e, 0.0, &mut rng))
        .collect();
    let epochs = std::env::var("MING_BENCH_ROUTER_EPOCHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(t.epochs);
    let sizes: Vec<usize> = std::env::var("MING_BENCH_ROUTER_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let params = Params {
        epochs,
        hidden: t.hidden,
        learning_rate: t.learning_rate,
        batch_size: t.batch_size,
        dropout: 0.1,
        seed: 42,
    };
    // The seed set itself first: what `ming train router --seed-only` does.
    let seed_rows: Vec<Row> = dataset
        .train
        .iter()
        .filter_map(|e| row(e, 0.0, &mut rng))
        .collect();
    let mut runs: Vec<(String, Vec<Row>)> =
        vec![(format!("seed ({})", seed_rows.len()), seed_rows)];
    for &n in &sizes {
        let rows: Vec<Row> = (0..n)
            .filter_map(|i| row(&dataset.train[i % dataset.train.len()], 0.08, &mut rng))
            .collect();
        runs.push((format!("{n}"), rows));
    }
    println!(
        "{:>12} {:>7} {:>10} {:>9} {:>10} {:>8} {:>8}",
        "examples", "epochs", "train s", "ms/epoch", "held-out", "NLL", "ECE"
    );
    let mut last = None;
    for (name, rows) in &runs {
        let started = Instant::now();
        let model = train::train(
            &dataset.labels,
            &spec,
            rows,
            &calibration,
            &params,
            &AtomicBool::new(false),
            |_| {},
        )
        .unwrap_or_else(|e| panic!("training: {e}"));
        let secs = started.elapsed().as_secs_f64();
        let router = Router::new(model).unwrap_or_else(|e| panic!("{e}"));
        let m = train::metrics(&router, &heldout);
        println!(
            "{name:>12} {epochs:>7} {secs:>10.2} {:>9.1} {:>9.1}% {:>8.3} {:>8.3}",
            secs * 1000.0 / f64::from(epochs),
            m.accuracy * 100.0,
            m.nll,
            m.ece
        );
        last = Some(router);
    }
    // Inference: features (hashed n-grams) + forward pass, per utterance.
    let Some(router) = last else { return };
    let embedding = vectors.values().next().cloned().unwrap_or_default();
    let mut times = Vec::new();
    for i in 0..2000 {
        let text = &texts[i % texts.len()];
        let t0 = Instant::now();
        let p = router.predict(&embedding, text);
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(p.ok());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "router inference (features + forward, {} inputs → {} labels): p50 {:.3} ms, p99 {:.3} ms (target < 2 ms)",
        384 + buckets,
        router.model.labels.len(),
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
}
