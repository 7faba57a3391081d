//! Streaming sample-rate conversion to the 16 kHz the models take: a windowed-sinc
//! interpolator (Blackman window, 16 zero crossings a side, the cutoff below the lower Nyquist
//! frequency), with the kernel tabulated finely and interpolated linearly.
//!
//! Output sample `n` is the input signal at time `n · in_rate / out_rate` exactly (no delay), so
//! positions found at 16 kHz map back to the source.

/// Zero crossings of the kernel on each side.
const HALF: usize = 16;
/// Table points per unit of input time.
const RES: usize = 256;

pub struct Resampler {
    step: f64,
    cutoff: f64,
    table: Vec<f32>,
    buf: Vec<f32>,
    /// Input-time of the next output sample, relative to `buf[0]`.
    pos: f64,
    passthrough: bool,
}

impl Resampler {
    pub fn new(in_rate: u32, out_rate: u32) -> Self {
        let step = f64::from(in_rate) / f64::from(out_rate);
        let cutoff = (f64::from(out_rate) / f64::from(in_rate)).min(1.0) * 0.94;
        // The kernel at x in [0, HALF] (it is even), in input samples.
        let width = HALF as f64 / cutoff;
        let n = (width * RES as f64).ceil() as usize + 2;
        let table = (0..n)
            .map(|i| {
                let x = i as f64 / RES as f64;
                if x >= width {
                    return 0.0;
                }
                let s = if x == 0.0 {
                    1.0
                } else {
                    let a = std::f64::consts::PI * cutoff * x;
                    a.sin() / a
                };
                let w = x / width; // 0..1 from the centre to the edge
                let blackman = 0.42
                    + 0.5 * (std::f64::consts::PI * w).cos()
                    + 0.08 * (2.0 * std::f64::consts::PI * w).cos();
                (cutoff * s * blackman) as f32
            })
            .collect();
        let reach = width.ceil() as usize;
        Self {
            step,
            cutoff,
            table,
            buf: vec![0.0; reach],
            pos: reach as f64,
            passthrough: in_rate == out_rate,
        }
    }

    fn reach(&self) -> usize {
        (HALF as f64 / self.cutoff).ceil() as usize
    }

    fn kernel(&self, x: f64) -> f32 {
        let t = x.abs() * RES as f64;
        let i = t as usize;
        if i + 1 >= self.table.len() {
            return 0.0;
        }
        let f = (t - i as f64) as f32;
        self.table[i] * (1.0 - f) + self.table[i + 1] * f
    }

    /// Converts `input`, appending what can be computed so far to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        if self.passthrough {
            out.extend_from_slice(input);
            return;
        }
        self.buf.extend_from_slice(input);
        let reach = self.reach();
        loop {
            let centre = self.pos.floor() as usize;
            if centre + reach >= self.buf.len() {
                break;
            }
            let lo = centre + 1 - reach;
            let mut acc = 0.0f32;
            for k in lo..=centre + reach {
                acc += self.buf[k] * self.kernel(self.pos - k as f64);
            }
            out.push(acc);
            self.pos += self.step;
        }
        // Keep only the history the next outputs need.
        let keep_from = (self.pos.floor() as usize + 1).saturating_sub(reach);
        if keep_from > 0 {
            self.buf.drain(..keep_from);
            self.pos -= keep_from as f64;
        }
    }

    /// Ends the stream: the outputs that need input past the end (taken as silence), up to
    /// the last one inside the input.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        if self.passthrough {
            return;
        }
        let end = self.buf.len() as f64;
        let wanted = ((end - self.pos) / self.step).ceil().max(0.0) as usize;
        let before = out.len();
        self.push(&vec![0.0; 2 * self.reach() + 1], out);
        out.truncate(before + wanted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, hz: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    #[test]
    fn a_tone_keeps_its_frequency_and_level_and_is_not_delayed() {
        for in_rate in [22_050u32, 44_100, 48_000, 8_000] {
            let input = tone(in_rate, 440.0, in_rate as usize);
            let mut r = Resampler::new(in_rate, 16_000);
            let mut out = Vec::new();
            for block in input.chunks(777) {
                r.push(block, &mut out);
            }
            r.finish(&mut out);
            let want = tone(16_000, 440.0, 16_000);
            assert!(
                (out.len() as i64 - 16_000).abs() <= 40,
                "{in_rate}: {} samples",
                out.len()
            );
            // Away from the edges the output is the same tone, in phase.
            let err = (2_000..14_000)
                .map(|i| (out[i] - want[i]).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 0.01, "{in_rate}: max error {err}");
        }
    }

    #[test]
    fn content_above_the_new_nyquist_is_removed() {
        let input = tone(48_000, 12_000.0, 48_000);
        let mut r = Resampler::new(48_000, 16_000);
        let mut out = Vec::new();
        r.push(&input, &mut out);
        let rms = (out[1000..15000].iter().map(|x| x * x).sum::<f32>() / 14000.0).sqrt();
        assert!(rms < 0.01, "aliased energy {rms}");
    }
}
