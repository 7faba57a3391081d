//! Training the router with burn: a two-layer network over [embedding ‖ hashed n-grams], weighted
//! cross-entropy, Adam, the best epoch by calibration accuracy (then loss), then temperature
//! scaling on the calibration split. The result is exported to a [`RouterModel`] and every metric
//! is computed on that export, so what is validated is exactly what the agent serves.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use ming_schemas::training::{
    argmax, float_bytes, Dense, Router, RouterMetrics, RouterModel, RouterProvenance, ROUTER_FORMAT,
};

/// One example as numbers: features, label index, weight.
#[derive(Debug, Clone)]
pub struct Row {
    pub x: Vec<f32>,
    pub y: usize,
    pub w: f32,
}

/// Hyper-parameters (from `[training]` in config).
#[derive(Debug, Clone)]
pub struct Params {
    pub epochs: u32,
    pub hidden: u32,
    pub learning_rate: f64,
    pub batch_size: u32,
    pub dropout: f64,
    pub seed: u64,
}

/// What the embedding side of the features is, for the file.
#[derive(Debug, Clone)]
pub struct FeatureSpec {
    pub embedding_model: String,
    pub embedding_sha256: String,
    pub embedding_dims: u32,
    pub ngram_buckets: u32,
}

/// A report after each epoch.
#[derive(Debug, Clone, Copy)]
pub struct EpochReport {
    pub epoch: u32,
    pub epochs: u32,
    pub loss: f32,
    pub accuracy: f32,
    pub eta_ms: u64,
}

/// Why training stopped without a model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cancelled")]
    Cancelled,
    #[error("no training examples")]
    Empty,
    #[error("the exported router is inconsistent: {0}")]
    Export(String),
}

#[derive(Module, Debug)]
struct Net {
    hidden: Linear,
    out: Linear,
    dropout: Dropout,
}

impl Net {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.out
            .forward(self.dropout.forward(relu(self.hidden.forward(x))))
    }
}

fn dense(l: &Linear) -> Dense {
    let w = l.weight.val();
    let [inputs, outputs] = w.dims();
    let values = |d: TensorData| d.as_slice::<f32>().map(<[f32]>::to_vec).unwrap_or_default();
    let bias = l
        .bias
        .as_ref()
        .map(|b| values(b.val().into_data()))
        .unwrap_or_else(|| vec![0.0; outputs]);
    Dense {
        inputs: inputs as u32,
        outputs: outputs as u32,
        weights: float_bytes(&values(w.into_data())),
        bias: float_bytes(&bias),
    }
}

#[allow(deprecated)] // burn-ndarray: the backend; `Device::flex()` is the one-line swap
fn device() -> Device {
    Device::ndarray().autodiff()
}

/// Trains a router on `train`, picks the epoch by `calibration`, fits its temperature there.
/// `cancel` is checked between batches; `report` is called after every epoch.
///
/// # Errors
/// [`TrainError::Cancelled`] when `cancel` was set; [`TrainError::Empty`] with no examples.
pub fn train(
    labels: &[String],
    spec: &FeatureSpec,
    train: &[Row],
    calibration: &[Row],
    p: &Params,
    cancel: &AtomicBool,
    mut report: impl FnMut(EpochReport),
) -> Result<RouterModel, TrainError> {
    let Some(first) = train.first() else {
        return Err(TrainError::Empty);
    };
    let n_in = first.x.len();
    let n_out = labels.len();
    let dev = device();
    dev.seed(p.seed);
    let mut net = Net {
        hidden: LinearConfig::new(n_in, p.hidden as usize).init(&dev),
        out: LinearConfig::new(p.hidden as usize, n_out).init(&dev),
        dropout: DropoutConfig::new(p.dropout).init(),
    };
    let mut optim = AdamConfig::new().init();
    let mut rng = fastrand::Rng::with_seed(p.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let batch = (p.batch_size as usize).max(1);
    let started = Instant::now();
    let mut best: Option<(f32, f32, RouterModel)> = None;
    let check = if calibration.is_empty() {
        train
    } else {
        calibration
    };
    for epoch in 1..=p.epochs {
        rng.shuffle(&mut order);
        let mut loss_sum = 0.0f64;
        let mut batches = 0u32;
        for chunk in order.chunks(batch) {
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let n = chunk.len();
            let mut xs = Vec::with_capacity(n * n_in);
            let mut ys = Vec::with_capacity(n);
            let mut ws = Vec::with_capacity(n);
            for &i in chunk {
                xs.extend_from_slice(&train[i].x);
                ys.push(train[i].y as i64);
                ws.push(train[i].w);
            }
            let wsum: f32 = ws.iter().sum::<f32>().max(1e-6);
            let x = Tensor::<2>::from_data(TensorData::new(xs, [n, n_in]), &dev);
            let y = Tensor::<2, Int>::from_data(TensorData::new(ys, [n, 1]), &dev);
            let w = Tensor::<2>::from_data(TensorData::new(ws, [n, 1]), &dev);
            let logp = log_softmax(net.forward(x), 1);
            let loss = (logp.gather(1, y) * w).sum().neg() / wsum;
            loss_sum += f64::from(loss.clone().into_scalar::<f32>());
            batches += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = optim.step(p.learning_rate, net, grads);
        }
        let model = export(&net, labels, spec, 1.0);
        let router = Router::new(model.clone()).map_err(|e| TrainError::Export(e.to_string()))?;
        let m = metrics(&router, check);
        let loss = (loss_sum / f64::from(batches.max(1))) as f32;
        let better = best
            .as_ref()
            .is_none_or(|(acc, nll, _)| m.accuracy > *acc || (m.accuracy == *acc && m.nll < *nll));
        if better {
            best = Some((m.accuracy, m.nll, model));
        }
        let per_epoch = started.elapsed().as_millis() as u64 / u64::from(epoch);
        report(EpochReport {
            epoch,
            epochs: p.epochs,
            loss,
            accuracy: m.accuracy,
            eta_ms: per_epoch * u64::from(p.epochs - epoch),
        });
    }
    let Some((_, _, mut model)) = best else {
        return Err(TrainError::Empty);
    };
    model.temperature = fit_temperature(&model, check)?;
    model.provenance.epochs = p.epochs;
    model.provenance.train_ms = started.elapsed().as_millis() as u64;
    Ok(model)
}

fn export(net: &Net, labels: &[String], spec: &FeatureSpec, temperature: f32) -> RouterModel {
    RouterModel {
        format: ROUTER_FORMAT,
        version: 0,
        created_ms: 0,
        labels: labels.to_vec(),
        embedding_model: spec.embedding_model.clone(),
        embedding_sha256: spec.embedding_sha256.clone(),
        embedding_dims: spec.embedding_dims,
        ngram_buckets: spec.ngram_buckets,
        layers: vec![dense(&net.hidden), dense(&net.out)],
        temperature,
        provenance: RouterProvenance::default(),
    }
}

/// The temperature that minimises the weighted negative log-likelihood on `rows` (a log-spaced
/// grid from 0.2 to 10, then a finer one around the best).
fn fit_temperature(model: &RouterModel, rows: &[Row]) -> Result<f32, TrainError> {
    let router = Router::new(model.clone()).map_err(|e| TrainError::Export(e.to_string()))?;
    let logits: Vec<(Vec<f32>, usize, f32)> = rows
        .iter()
        .map(|r| (router.logits(&r.x), r.y, r.w))
        .collect();
    let nll = |t: f32| {
        let (mut sum, mut wsum) = (0.0f64, 0.0f64);
        for (l, y, w) in &logits {
            let p = ming_schemas::training::softmax(l, t);
            sum += f64::from(*w) * -f64::from(p[*y].max(1e-12).ln());
            wsum += f64::from(*w);
        }
        sum / wsum.max(1e-12)
    };
    let grid = |lo: f32, hi: f32, n: usize| -> f32 {
        (0..n)
            .map(|i| lo * (hi / lo).powf(i as f32 / (n - 1) as f32))
            .min_by(|a, b| nll(*a).total_cmp(&nll(*b)))
            .unwrap_or(1.0)
    };
    let coarse = grid(0.2, 10.0, 40);
    Ok(grid(coarse / 1.15, coarse * 1.15, 15))
}

/// Accuracy, weighted negative log-likelihood and expected calibration error (10 bins) of a
/// router on `rows`.
pub fn metrics(router: &Router, rows: &[Row]) -> RouterMetrics {
    score(
        rows.iter()
            .map(|r| (router.probabilities(&r.x), Some(r.y), r.w)),
    )
}

/// The metrics of predictions: (probabilities, the right label's index if the router has it,
/// weight) each. Accuracy and NLL are weighted (a correction counts as much as its weight);
/// calibration error counts examples.
pub fn score(items: impl Iterator<Item = (Vec<f32>, Option<usize>, f32)>) -> RouterMetrics {
    let mut bins = [(0.0f64, 0.0f64, 0u32); 10];
    let (mut n, mut right, mut nll, mut wsum) = (0usize, 0.0f64, 0.0f64, 0.0f64);
    for (p, y, w) in items {
        n += 1;
        let (best, conf) = argmax(&p);
        let ok = y == Some(best) && !p.is_empty();
        if ok {
            right += f64::from(w);
        }
        let py = y.and_then(|y| p.get(y).copied()).unwrap_or(0.0);
        nll += f64::from(w) * -f64::from(py.max(1e-12).ln());
        wsum += f64::from(w);
        let b = ((conf * 10.0) as usize).min(9);
        bins[b].0 += f64::from(conf);
        bins[b].1 += if ok { 1.0 } else { 0.0 };
        bins[b].2 += 1;
    }
    if n == 0 {
        return RouterMetrics::default();
    }
    let ece = bins
        .iter()
        .filter(|b| b.2 > 0)
        .map(|(conf, acc, count)| {
            let c = f64::from(*count);
            (c / n as f64) * ((conf / c) - (acc / c)).abs()
        })
        .sum::<f64>();
    RouterMetrics {
        accuracy: (right / wsum.max(1e-12)) as f32,
        nll: (nll / wsum.max(1e-12)) as f32,
        ece: ece as f32,
        validation_size: n as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, rng: &mut fastrand::Rng) -> Vec<Row> {
        // Three separable clusters in 8 dimensions.
        (0..n)
            .map(|i| {
                let y = i % 3;
                let mut x: Vec<f32> = (0..8).map(|_| rng.f32() * 0.3).collect();
                x[y] += 1.0;
                Row { x, y, w: 1.0 }
            })
            .collect()
    }

    #[test]
    fn learns_separable_clusters_and_honours_cancel() {
        let mut rng = fastrand::Rng::with_seed(7);
        let labels: Vec<String> = ["a", "b", "none"].iter().map(|s| s.to_string()).collect();
        let spec = FeatureSpec {
            embedding_model: "t".into(),
            embedding_sha256: "0".into(),
            embedding_dims: 8,
            ngram_buckets: 0,
        };
        let p = Params {
            epochs: 30,
            hidden: 16,
            learning_rate: 0.01,
            batch_size: 16,
            dropout: 0.0,
            seed: 1,
        };
        let (train_rows, check) = (rows(150, &mut rng), rows(60, &mut rng));
        let mut reports = 0;
        let model = train(
            &labels,
            &spec,
            &train_rows,
            &check,
            &p,
            &AtomicBool::new(false),
            |_| reports += 1,
        )
        .expect("trains");
        assert_eq!(reports, 30);
        let router = Router::new(model).expect("valid export");
        let m = metrics(&router, &check);
        assert!(m.accuracy > 0.95, "{m:?}");
        assert!(m.ece < 0.2, "{m:?}");
        let cancelled = train(
            &labels,
            &spec,
            &train_rows,
            &check,
            &p,
            &AtomicBool::new(true),
            |_| {},
        );
        assert!(matches!(cancelled, Err(TrainError::Cancelled)));
    }
}
