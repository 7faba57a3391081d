//! Audio sources for a transcription request (a WAV file, WAV bytes, raw PCM) and the loop that
//! drives a [`Pipeline`] over one: paced in real time, as a microphone would deliver it, or as
//! fast as possible.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ming_schemas::audio::Transcribe;

use crate::pipeline::{Input, Mode, Output, Pipeline, PipelineConfig};
use crate::stt::Stt;
use crate::vad::SileroModel;
use crate::wav::{Encoding, Format, PcmReader, ReadWavError};

pub type Source = PcmReader<Box<dyn Read + Send>>;

/// Why a request's audio cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenSourceError {
    #[error("give exactly one of `path`, `wav` or `pcm` (got {0})")]
    Sources(usize),
    #[error("cannot open {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("{0}")]
    Wav(#[from] ReadWavError),
}

/// Opens the request's audio.
///
/// # Errors
/// [`OpenSourceError`]: no source or several, an unreadable file, a header that is not WAV.
pub fn open(req: &Transcribe) -> Result<Source, OpenSourceError> {
    let n = usize::from(req.path.is_some())
        + usize::from(req.wav.is_some())
        + usize::from(req.pcm.is_some());
    if n != 1 {
        return Err(OpenSourceError::Sources(n));
    }
    if let Some(path) = &req.path {
        let f = File::open(path).map_err(|e| OpenSourceError::Open {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let r: Box<dyn Read + Send> = Box::new(BufReader::with_capacity(1 << 16, f));
        return Ok(PcmReader::wav(r)?);
    }
    if let Some(wav) = &req.wav {
        let r: Box<dyn Read + Send> = Box::new(Cursor::new(wav.to_vec()));
        return Ok(PcmReader::wav(r)?);
    }
    let pcm = req.pcm.clone().unwrap_or_default().into_vec();
    let format = Format {
        rate: req.pcm_rate.unwrap_or(16_000),
        channels: req.pcm_channels.unwrap_or(1),
        encoding: Encoding::I16,
    };
    let r: Box<dyn Read + Send> = Box::new(Cursor::new(pcm));
    Ok(PcmReader::raw(r, format)?)
}

/// What a run over a source measured.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    pub audio_ms: f64,
    pub stt_ms: f64,
    /// The input ended early (e.g. a truncated file); what came before was transcribed.
    pub warning: Option<String>,
}

/// The models and settings a run needs.
#[derive(Clone)]
pub struct Engine {
    pub vad: Arc<SileroModel>,
    pub stt: Stt,
    /// The model that hears a live turn again when the agent could not act on it
    /// (`audio.stt_second_model`), with its encoder margin.
    pub second: Option<(Stt, u32)>,
    /// The guided hearing of a live turn the agent could not act on without its LLM
    /// (`audio.stt_guide`), by `stt`.
    pub guide: Option<Arc<crate::guide::GuideCache>>,
    pub pipeline: PipelineConfig,
    pub utterances: Arc<std::sync::atomic::AtomicU64>,
}

impl Engine {
    /// A pipeline over these models for audio at `rate` Hz; decodes come back through `tx`.
    pub fn pipeline(&self, mode: Mode, rate: u32, tx: mpsc::Sender<Input>) -> Pipeline {
        Pipeline::new(
            self.pipeline.clone(),
            mode,
            Arc::clone(&self.vad),
            self.stt.clone(),
            rate,
            Arc::clone(&self.utterances),
            tx,
        )
    }
}

/// Reads `source` to its end through a pipeline, calling `emit` for everything it produces.
/// Blocking: run it on a thread of its own.
pub fn run(
    engine: &Engine,
    mut source: Source,
    realtime: bool,
    partials: bool,
    cancel: &AtomicBool,
    mut emit: impl FnMut(Output),
) -> RunStats {
    let rate = source.format.rate;
    let (tx, rx) = mpsc::channel::<Input>();
    let mode = if realtime {
        Mode::Live
    } else {
        Mode::Batch { partials }
    };
    let mut p = engine.pipeline(mode, rate, tx);
    let mut out = Vec::new();
    let mut flush = |out: &mut Vec<Output>| {
        for o in out.drain(..) {
            emit(o);
        }
    };
    // 20 ms blocks in real time (a capture callback's size); larger ones otherwise.
    let block = if realtime {
        rate as usize / 50
    } else {
        rate as usize
    };
    let started = Instant::now();
    let mut fed = 0u64;
    let mut buf = Vec::new();
    let mut warning = None;
    loop {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        match source.read_block(&mut buf, block) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                warning = Some(e.to_string());
                break;
            }
        }
        fed += buf.len() as u64;
        p.handle(Input::Audio(std::mem::take(&mut buf)), &mut out);
        while let Ok(r) = rx.try_recv() {
            p.handle(r, &mut out);
        }
        flush(&mut out);
        if realtime {
            let due = started + Duration::from_secs_f64(fed as f64 / f64::from(rate));
            // Take decode results while waiting for the next block's time.
            while let Some(left) = due.checked_duration_since(Instant::now()) {
                match rx.recv_timeout(left) {
                    Ok(r) => {
                        p.handle(r, &mut out);
                        flush(&mut out);
                    }
                    Err(_) => break,
                }
            }
        }
    }
    p.handle(Input::End, &mut out);
    flush(&mut out);
    // The last final may still be decoding.
    let until = Instant::now() + Duration::from_secs(60);
    while p.in_turn() && !cancel.load(Ordering::Relaxed) {
        let Some(left) = until.checked_duration_since(Instant::now()) else {
            break;
        };
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok(r) => {
                p.handle(r, &mut out);
                flush(&mut out);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    RunStats {
        audio_ms: p.samples as f64 / 16.0,
        stt_ms: p.stt_ms,
        warning,
    }
}
