//! Silero VAD, run by our own code: the 16 kHz network of silero-vad 6.2.3 (weights extracted
//! from its ONNX model by `models/silero.py`), one frame of 512 samples (32 ms) at a time with
//! the 64 samples before it as context, the LSTM state carried from frame to frame.
//!
//! The network: reflect-pad 64 on the right → an STFT as a 256-tap convolution with hop 128
//! (129 magnitudes × 4) → four 3-tap convolutions with ReLU (129→128, →64 stride 2, →64 stride 2,
//! →128) → an LSTM cell of 128 → ReLU → a 1×1 convolution → sigmoid. About 0.65 M
//! multiply-adds a frame. `tests/vad.rs` holds it to ONNX Runtime's output on a recording.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Samples per frame at 16 kHz.
pub const FRAME: usize = 512;
const CONTEXT: usize = 64;
const HIDDEN: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum LoadVadError {
    #[error("cannot read the VAD model {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the VAD model {path} is not what the audio service runs: {reason}")]
    Format { path: String, reason: String },
}

struct Conv {
    w: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
    stride: usize,
}

impl Conv {
    /// 3 taps, padding 1; `x` is `[cin][t_in]`, returns `[cout][t_out]` after ReLU.
    fn forward(&self, x: &[f32], t_in: usize) -> (Vec<f32>, usize) {
        let t_out = (t_in + 2 - 3) / self.stride + 1;
        let mut y = vec![0.0f32; self.cout * t_out];
        for o in 0..self.cout {
            for t in 0..t_out {
                let mut acc = self.b[o];
                for i in 0..self.cin {
                    let w = &self.w[(o * self.cin + i) * 3..(o * self.cin + i) * 3 + 3];
                    let row = &x[i * t_in..(i + 1) * t_in];
                    for (k, wk) in w.iter().enumerate() {
                        let pos = (t * self.stride + k) as isize - 1;
                        if pos >= 0 && (pos as usize) < t_in {
                            acc += wk * row[pos as usize];
                        }
                    }
                }
                y[o * t_out + t] = acc.max(0.0);
            }
        }
        (y, t_out)
    }
}

/// The network's weights (shared by every [`Vad`]).
pub struct SileroModel {
    stft: Vec<f32>,
    convs: [Conv; 4],
    w_ih: Vec<f32>,
    w_hh: Vec<f32>,
    bias: Vec<f32>,
    out_w: Vec<f32>,
    out_b: f32,
}

impl SileroModel {
    /// Loads the safetensors file `just models` made.
    ///
    /// # Errors
    /// [`LoadVadError`] when the file is missing, unreadable, or not these tensors.
    pub fn load(path: &Path) -> Result<Arc<Self>, LoadVadError> {
        let bytes = std::fs::read(path).map_err(|e| LoadVadError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes).map_err(|reason| LoadVadError::Format {
            path: path.display().to_string(),
            reason,
        })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Arc<Self>, String> {
        let mut t = read_safetensors(bytes)?;
        let mut take = |name: &str, shape: &[usize]| -> Result<Vec<f32>, String> {
            let (s, v) = t.remove(name).ok_or_else(|| format!("no tensor {name}"))?;
            if s != shape {
                return Err(format!("{name} has shape {s:?}, expected {shape:?}"));
            }
            Ok(v)
        };
        let stft = take("stft.weight", &[258, 1, 256])?;
        let mut conv = |n: usize, cin: usize, cout: usize, stride: usize| -> Result<Conv, String> {
            Ok(Conv {
                w: take(&format!("conv{n}.weight"), &[cout, cin, 3])?,
                b: take(&format!("conv{n}.bias"), &[cout])?,
                cin,
                cout,
                stride,
            })
        };
        let convs = [
            conv(1, 129, 128, 1)?,
            conv(2, 128, 64, 2)?,
            conv(3, 64, 64, 2)?,
            conv(4, 64, 128, 1)?,
        ];
        let w_ih = take("lstm.weight_ih", &[4 * HIDDEN, HIDDEN])?;
        let w_hh = take("lstm.weight_hh", &[4 * HIDDEN, HIDDEN])?;
        let b_ih = take("lstm.bias_ih", &[4 * HIDDEN])?;
        let b_hh = take("lstm.bias_hh", &[4 * HIDDEN])?;
        let bias = b_ih.iter().zip(&b_hh).map(|(a, b)| a + b).collect();
        let out_w = take("out.weight", &[1, HIDDEN, 1])?;
        let out_b = take("out.bias", &[1])?[0];
        Ok(Arc::new(Self {
            stft,
            convs,
            w_ih,
            w_hh,
            bias,
            out_w,
            out_b,
        }))
    }
}

type Tensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn read_safetensors(bytes: &[u8]) -> Result<Tensors, String> {
    if bytes.len() < 8 {
        return Err("shorter than a safetensors header".into());
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| "bad header")?) as usize;
    let body = 8usize
        .checked_add(n)
        .filter(|&e| e <= bytes.len())
        .ok_or("the header runs past the end of the file")?;
    let header: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..body]).map_err(|e| format!("bad header: {e}"))?;
    let data = &bytes[body..];
    let mut out = HashMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        if info["dtype"] != "F32" {
            return Err(format!("{name} is {}, not F32", info["dtype"]));
        }
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone())
            .map_err(|e| format!("{name}: bad shape: {e}"))?;
        let offs: [usize; 2] = serde_json::from_value(info["data_offsets"].clone())
            .map_err(|e| format!("{name}: bad offsets: {e}"))?;
        let raw = data
            .get(offs[0]..offs[1])
            .ok_or_else(|| format!("{name}: data outside the file"))?;
        if raw.len() != shape.iter().product::<usize>() * 4 {
            return Err(format!("{name}: {} bytes for shape {shape:?}", raw.len()));
        }
        let v = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(name, (shape, v));
    }
    Ok(out)
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One stream's detector: the model plus its LSTM state and context.
pub struct Vad {
    model: Arc<SileroModel>,
    h: [f32; HIDDEN],
    c: [f32; HIDDEN],
    context: [f32; CONTEXT],
}

impl Vad {
    pub fn new(model: Arc<SileroModel>) -> Self {
        Self {
            model,
            h: [0.0; HIDDEN],
            c: [0.0; HIDDEN],
            context: [0.0; CONTEXT],
        }
    }

    /// Forgets the stream (a new source).
    pub fn reset(&mut self) {
        self.h = [0.0; HIDDEN];
        self.c = [0.0; HIDDEN];
        self.context = [0.0; CONTEXT];
    }

    /// The probability that `frame` (512 samples at 16 kHz) holds speech.
    pub fn frame(&mut self, frame: &[f32; FRAME]) -> f32 {
        let m = &*self.model;
        // Context, frame, then 64 samples reflected about the last one.
        let mut x = [0.0f32; CONTEXT + FRAME + 64];
        x[..CONTEXT].copy_from_slice(&self.context);
        x[CONTEXT..CONTEXT + FRAME].copy_from_slice(frame);
        let n = CONTEXT + FRAME;
        for j in 0..64 {
            x[n + j] = x[n - 2 - j];
        }
        self.context.copy_from_slice(&frame[FRAME - CONTEXT..]);

        // STFT: 258 outputs (real then imaginary) × 4 hops of 128.
        const T: usize = 4;
        let mut mag = vec![0.0f32; 129 * T];
        for t in 0..T {
            let win = &x[t * 128..t * 128 + 256];
            for f in 0..129 {
                let re: f32 = m.stft[f * 256..(f + 1) * 256]
                    .iter()
                    .zip(win)
                    .map(|(a, b)| a * b)
                    .sum();
                let im: f32 = m.stft[(f + 129) * 256..(f + 130) * 256]
                    .iter()
                    .zip(win)
                    .map(|(a, b)| a * b)
                    .sum();
                mag[f * T + t] = (re * re + im * im).sqrt();
            }
        }
        let (mut y, mut t) = (mag, T);
        for conv in &m.convs {
            (y, t) = conv.forward(&y, t);
        }
        // [128][t] → the first time step.
        let xt: Vec<f32> = (0..HIDDEN).map(|i| y[i * t]).collect();

        let mut gates = m.bias.clone();
        for (g, gate) in gates.iter_mut().enumerate() {
            let wi = &m.w_ih[g * HIDDEN..(g + 1) * HIDDEN];
            let wh = &m.w_hh[g * HIDDEN..(g + 1) * HIDDEN];
            let mut acc = 0.0;
            for k in 0..HIDDEN {
                acc += wi[k] * xt[k] + wh[k] * self.h[k];
            }
            *gate += acc;
        }
        let mut out = m.out_b;
        for k in 0..HIDDEN {
            let i = sigmoid(gates[k]);
            let f = sigmoid(gates[HIDDEN + k]);
            let g = gates[2 * HIDDEN + k].tanh();
            let o = sigmoid(gates[3 * HIDDEN + k]);
            self.c[k] = f * self.c[k] + i * g;
            self.h[k] = o * self.c[k].tanh();
            out += m.out_w[k] * self.h[k].max(0.0);
        }
        sigmoid(out)
    }
}
