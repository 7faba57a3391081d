//! WAV files and raw PCM: read any common layout (PCM 8/16/24/32-bit, IEEE float 32/64, mono or
//! interleaved channels, WAVE_FORMAT_EXTENSIBLE) as mono `f32` in blocks, without reading a long
//! file into memory; and write 16-bit mono WAV.
//!
//! A streaming writer (espeak-ng's `--stdout`) cannot know the length and leaves the size fields
//! at a placeholder; such a data chunk runs to the end of the input. A size that promises more
//! than the file holds is a truncated file and an error.

use std::io::{Read, Write};

/// Why audio could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadWavError {
    #[error("not a WAV file: {0}")]
    NotWav(String),
    #[error("unsupported WAV format: {0}")]
    Unsupported(String),
    #[error("truncated WAV file: the data chunk promises {promised} bytes, the file holds {got}")]
    Truncated { promised: u64, got: u64 },
    #[error("reading the audio failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Sample encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl Encoding {
    pub fn bytes(self) -> usize {
        match self {
            Self::U8 => 1,
            Self::I16 => 2,
            Self::I24 => 3,
            Self::I32 | Self::F32 => 4,
            Self::F64 => 8,
        }
    }

    fn decode(self, b: &[u8]) -> f32 {
        match self {
            Self::U8 => (f32::from(b[0]) - 128.0) / 128.0,
            Self::I16 => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
            Self::I24 => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
            Self::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
            Self::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Self::F64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
        }
    }
}

/// The layout of the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub rate: u32,
    pub channels: u16,
    pub encoding: Encoding,
}

impl Format {
    fn frame_bytes(&self) -> usize {
        self.encoding.bytes() * usize::from(self.channels)
    }

    fn check(&self) -> Result<(), ReadWavError> {
        if !(4_000..=384_000).contains(&self.rate) {
            return Err(ReadWavError::Unsupported(format!(
                "sample rate {} Hz (4000–384000 are read)",
                self.rate
            )));
        }
        if self.channels == 0 || self.channels > 16 {
            return Err(ReadWavError::Unsupported(format!(
                "{} channels (1–16 are read)",
                self.channels
            )));
        }
        Ok(())
    }
}

/// Reads blocks of mono samples from a WAV stream or raw PCM.
pub struct PcmReader<R> {
    inner: R,
    pub format: Format,
    /// Bytes of sample data still to read (`None`: to the end of the input).
    remaining: Option<u64>,
    promised: Option<u64>,
    read: u64,
    carry: Vec<u8>,
    /// The data ended before its promised size (reported by the next read).
    truncated: bool,
}

const STREAMING_SIZES: [u32; 3] = [0, 0xFFFF_FFFF, 0x7FFF_F000];

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl<R: Read> PcmReader<R> {
    /// Raw PCM of a known format.
    pub fn raw(inner: R, format: Format) -> Result<Self, ReadWavError> {
        format.check()?;
        Ok(Self {
            inner,
            format,
            remaining: None,
            promised: None,
            read: 0,
            carry: Vec::new(),
            truncated: false,
        })
    }

    /// Parses the RIFF header up to the data chunk.
    ///
    /// # Errors
    /// [`ReadWavError`] for anything that is not a WAV file this reader can decode.
    pub fn wav(mut inner: R) -> Result<Self, ReadWavError> {
        let mut head = [0u8; 12];
        read_exact_or(&mut inner, &mut head, "shorter than a RIFF header")?;
        if &head[0..4] != b"RIFF" || &head[8..12] != b"WAVE" {
            return Err(ReadWavError::NotWav("no RIFF/WAVE header".into()));
        }
        let mut format = None;
        loop {
            let mut ch = [0u8; 8];
            read_exact_or(&mut inner, &mut ch, "no data chunk")?;
            let size = u32_at(&ch, 4);
            match &ch[0..4] {
                b"fmt " => {
                    if !(16..=1024).contains(&size) {
                        return Err(ReadWavError::NotWav(format!("fmt chunk of {size} bytes")));
                    }
                    let mut f = vec![0u8; size as usize + (size as usize & 1)];
                    read_exact_or(&mut inner, &mut f, "truncated fmt chunk")?;
                    format = Some(parse_fmt(&f)?);
                }
                b"data" => {
                    let Some(format) = format else {
                        return Err(ReadWavError::NotWav(
                            "data chunk before the fmt chunk".into(),
                        ));
                    };
                    format.check()?;
                    let promised = (!STREAMING_SIZES.contains(&size)).then_some(u64::from(size));
                    return Ok(Self {
                        inner,
                        format,
                        remaining: promised,
                        promised,
                        read: 0,
                        carry: Vec::new(),
                        truncated: false,
                    });
                }
                _ => {
                    let skip = u64::from(size) + u64::from(size & 1);
                    let got = std::io::copy(&mut (&mut inner).take(skip), &mut std::io::sink())?;
                    if got != skip {
                        return Err(ReadWavError::NotWav(
                            "truncated before the data chunk".into(),
                        ));
                    }
                }
            }
        }
    }

    /// Reads up to `max` mono samples (channels averaged) into `out` (cleared first). Returns
    /// `false` at the end of the data.
    ///
    /// # Errors
    /// I/O errors, and [`ReadWavError::Truncated`] when the data ends before its promised size.
    pub fn read_block(&mut self, out: &mut Vec<f32>, max: usize) -> Result<bool, ReadWavError> {
        out.clear();
        let fb = self.format.frame_bytes();
        let mut want = (max * fb) as u64;
        if let Some(r) = self.remaining {
            want = want.min(r);
        }
        if want == 0 {
            return Ok(false);
        }
        if self.truncated {
            return Err(ReadWavError::Truncated {
                promised: self.promised.unwrap_or(0),
                got: self.read,
            });
        }
        let mut buf = std::mem::take(&mut self.carry);
        let start = buf.len();
        buf.resize(start + want as usize, 0);
        let mut filled = start;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(filled);
        let got = (filled - start) as u64;
        self.read += got;
        if let Some(r) = self.remaining.as_mut() {
            *r -= got;
        }
        let eof = got < want;
        // A short read of a file whose header promised more: give what came, then the error
        // on the next call, so that nothing read is lost.
        self.truncated = eof && self.promised.is_some();
        let whole = buf.len() / fb * fb;
        let ch = usize::from(self.format.channels);
        let bps = self.format.encoding.bytes();
        for frame in buf[..whole].chunks_exact(fb) {
            let mut sum = 0.0;
            for c in 0..ch {
                sum += self.format.encoding.decode(&frame[c * bps..(c + 1) * bps]);
            }
            out.push(sum / ch as f32);
        }
        self.carry = buf[whole..].to_vec();
        if self.truncated && out.is_empty() {
            return Err(ReadWavError::Truncated {
                promised: self.promised.unwrap_or(0),
                got: self.read,
            });
        }
        Ok(!eof || !out.is_empty())
    }
}

fn read_exact_or<R: Read>(r: &mut R, buf: &mut [u8], what: &str) -> Result<(), ReadWavError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ReadWavError::NotWav(what.into())
        } else {
            ReadWavError::Io(e)
        }
    })
}

fn parse_fmt(f: &[u8]) -> Result<Format, ReadWavError> {
    let mut tag = u16_at(f, 0);
    let channels = u16_at(f, 2);
    let rate = u32_at(f, 4);
    let bits = u16_at(f, 14);
    if tag == 0xFFFE {
        if f.len() < 26 {
            return Err(ReadWavError::NotWav(
                "short WAVE_FORMAT_EXTENSIBLE header".into(),
            ));
        }
        tag = u16_at(f, 24); // the sub-format GUID starts with the format tag
    }
    let encoding = match (tag, bits) {
        (1, 8) => Encoding::U8,
        (1, 16) => Encoding::I16,
        (1, 24) => Encoding::I24,
        (1, 32) => Encoding::I32,
        (3, 32) => Encoding::F32,
        (3, 64) => Encoding::F64,
        (1 | 3, b) => {
            return Err(ReadWavError::Unsupported(format!("{b}-bit samples")));
        }
        (t, _) => {
            return Err(ReadWavError::Unsupported(format!(
                "format tag {t:#06x} (compressed audio; PCM and IEEE float are read)"
            )))
        }
    };
    Ok(Format {
        rate,
        channels,
        encoding,
    })
}

/// Writes 16-bit mono PCM as a WAV file.
///
/// # Errors
/// I/O errors.
pub fn write_wav16(mut w: impl Write, rate: u32, samples: &[f32]) -> std::io::Result<()> {
    let data = (samples.len() * 2) as u32;
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&(36 + data).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&(rate * 2).to_le_bytes());
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&16u16.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data.to_le_bytes());
    w.write_all(&h)?;
    let mut body = Vec::with_capacity(samples.len() * 2);
    for s in samples {
        body.extend_from_slice(&to_i16(*s).to_le_bytes());
    }
    w.write_all(&body)
}

/// One `f32` sample as 16-bit PCM (clipped).
pub fn to_i16(s: f32) -> i16 {
    (s.clamp(-1.0, 1.0) * 32767.0).round() as i16
}

/// Decodes 16-bit little-endian mono PCM.
pub fn from_i16le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(r: &mut PcmReader<&[u8]>) -> Result<Vec<f32>, ReadWavError> {
        let mut out = Vec::new();
        let mut block = Vec::new();
        while r.read_block(&mut block, 1000)? {
            out.extend_from_slice(&block);
        }
        Ok(out)
    }

    #[test]
    fn round_trip_16_bit() {
        let samples: Vec<f32> = (0..3000).map(|i| ((i as f32) * 0.01).sin() * 0.5).collect();
        let mut file = Vec::new();
        write_wav16(&mut file, 16_000, &samples).unwrap();
        let mut r = PcmReader::wav(&file[..]).unwrap();
        assert_eq!(r.format.rate, 16_000);
        let back = all(&mut r).unwrap();
        assert_eq!(back.len(), samples.len());
        assert!(back.iter().zip(&samples).all(|(a, b)| (a - b).abs() < 1e-4));
    }

    #[test]
    fn stereo_is_averaged_and_streaming_size_runs_to_the_end() {
        let mut file = Vec::new();
        write_wav16(&mut file, 8_000, &[0.0; 4]).unwrap();
        // Make it stereo with a placeholder size, as a streaming writer leaves it.
        file[22] = 2;
        file[40..44].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        file.truncate(44);
        for (l, r) in [(1000i16, 3000i16), (-2000, 0)] {
            file.extend_from_slice(&l.to_le_bytes());
            file.extend_from_slice(&r.to_le_bytes());
        }
        let mut r = PcmReader::wav(&file[..]).unwrap();
        let back = all(&mut r).unwrap();
        assert_eq!(back.len(), 2);
        assert!((back[0] - 2000.0 / 32768.0).abs() < 1e-6);
        assert!((back[1] + 1000.0 / 32768.0).abs() < 1e-6);
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let mut file = Vec::new();
        write_wav16(&mut file, 16_000, &[0.1; 1000]).unwrap();
        file.truncate(1000);
        let mut r = PcmReader::wav(&file[..]).unwrap();
        assert!(matches!(
            all(&mut r),
            Err(ReadWavError::Truncated { promised: 2000, .. })
        ));

        assert!(matches!(
            PcmReader::wav(&b"ID3\x03garbage"[..]),
            Err(ReadWavError::NotWav(_))
        ));
        let mut mp3ish = Vec::new();
        write_wav16(&mut mp3ish, 16_000, &[0.0; 10]).unwrap();
        mp3ish[20] = 0x55; // MPEG layer 3 format tag
        assert!(matches!(
            PcmReader::wav(&mp3ish[..]),
            Err(ReadWavError::Unsupported(_))
        ));
        let mut odd_rate = Vec::new();
        write_wav16(&mut odd_rate, 100, &[0.0; 10]).unwrap();
        assert!(matches!(
            PcmReader::wav(&odd_rate[..]),
            Err(ReadWavError::Unsupported(_))
        ));
    }
}
