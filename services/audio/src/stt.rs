//! Speech-to-text: whisper.cpp (whisper-rs) with Whisper tiny.en, on a thread of its own that
//! owns the model and its state.
//!
//! Each job decodes one stretch of 16 kHz audio with an encoder context sized to it
//! (`audio_ctx`: 50 frames a second plus a margin, instead of the full 30 s window), greedy, no
//! temperature fallback (one pass, bounded time), no timestamps, one segment. A job can be
//! aborted (a partial that a final overtook); the abort is seen between graph nodes. Each job
//! runs on as many threads (up to `audio.threads`) as other processes leave CPUs idle.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

use crate::guide::{Alternates, Guide, Guided, Judged, Limits, Vocab, JUDGED};

/// Encoder frames per second of audio (whisper: 1500 for 30 s).
const CTX_PER_SECOND: f64 = 50.0;
/// Shortest input whisper.cpp decodes well; shorter audio is padded with silence.
const MIN_SAMPLES: usize = 16_000;
/// Silence appended to every stretch (0.3 s).
const TAIL_SAMPLES: usize = 4_800;
/// whisper's window (30 s): longer input is decoded window by window by whisper.cpp itself.
const WINDOW_SAMPLES: usize = 30 * 16_000;

/// Whether `n` samples, with the silence appended to them, fit one window.
fn fits_one_window(n: usize) -> bool {
    n + TAIL_SAMPLES <= WINDOW_SAMPLES
}

#[derive(Debug, thiserror::Error)]
pub enum SttError {
    #[error("cannot load the speech-to-text model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("speech-to-text failed: {0}")]
    Decode(String),
    #[error("speech-to-text was aborted")]
    Aborted,
    #[error("the speech-to-text thread is gone")]
    Gone,
}

/// The 16 kHz samples of a job, shared rather than copied: a reading carries the very samples
/// it was decoded from, so that hearing them again can be known to need no new encoding.
/// `Debug` shows their length only.
#[derive(Clone, Default)]
pub struct Samples(pub Arc<Vec<f32>>);

impl Samples {
    pub fn new(samples: Vec<f32>) -> Self {
        Self(Arc::new(samples))
    }

    /// Whether `self` and `other` are the same samples (not merely equal ones).
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Samples {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Samples({})", self.0.len())
    }
}

/// What to decode, and how.
pub struct Job {
    pub samples: Samples,
    /// Extra encoder frames beyond the audio's own length.
    pub ctx_margin: u32,
    pub abort: Arc<AtomicBool>,
    /// When the reading is not a command the guide knows, the same audio is decoded again
    /// under it (see `guide.rs`), into [`Decoded::guided`]. When these samples are the ones the
    /// thread decoded last, their encoder output is still in its state: the job then only
    /// searches, and its reading is the earlier one.
    pub guide: Option<(Arc<Guide>, Limits)>,
    /// The model that heard these samples first, to judge this one's guided readings (see
    /// [`JUDGED`]); `None`: the search takes its own best.
    pub judge: Option<Stt>,
    pub done: Box<dyn FnOnce(Result<Decoded, SttError>) + Send>,
}

/// What the STT thread is asked to do.
enum Work {
    Decode(Job),
    /// The regrets of texts (see [`crate::guide::regrets`]) on samples whose encoder output the
    /// thread still holds; `None` when it holds another's (nothing is encoded for it).
    Judge {
        samples: Samples,
        texts: Vec<String>,
        abort: Arc<AtomicBool>,
        done: mpsc::Sender<Option<Vec<f32>>>,
    },
}

/// How long a guided search waits for its judge (busy with another job, it would answer on
/// another audio's encoder output, i.e. not at all).
const JUDGE_WAIT: std::time::Duration = std::time::Duration::from_millis(400);

/// A decode's result.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub text: String,
    pub audio_ctx: u32,
    pub decode_ms: f64,
    /// When the decode began (`ming_bus::mono_ms`): a reading heard ahead of need began before
    /// the turn took it, and its stages say so.
    pub started_ms: f64,
    /// The decoder's probability for the last word (its least likely token; 1.0 with no
    /// words). A word whisper adds to audio that stops mid-sentence ("set a timer for *it*")
    /// is typically unlikely.
    pub last_word_p: f32,
    /// The probability of the least likely word of the transcript (1.0 with no words): how
    /// sure whisper is of the whole of it. Misheard commands tend to score low.
    pub min_word_p: f32,
    /// The guided reading, when the job asked for one and the text is not already a command
    /// the guide knows (`None` too when the guide found none within its limits).
    pub guided: Option<Guided>,
    /// The samples decoded.
    pub audio: Samples,
}

/// How to decode (from `[audio]`).
#[derive(Debug, Clone, Default)]
pub struct SttOptions {
    pub threads: u32,
    /// Beam width; 0 or 1: greedy.
    pub beam: u32,
    /// Text the decoder reads as what came before: words it should expect.
    pub prompt: String,
}

/// Handle to the STT thread.
#[derive(Clone)]
pub struct Stt {
    tx: mpsc::Sender<Work>,
    pub model: String,
}

impl Stt {
    /// Loads the model and starts the thread.
    ///
    /// # Errors
    /// [`SttError::Load`] when whisper.cpp cannot load the file.
    pub fn start(name: &str, path: &Path, opts: SttOptions) -> Result<Self, SttError> {
        let load_err = |reason: String| SttError::Load {
            path: path.display().to_string(),
            reason,
        };
        install_log_hook();
        if !has_tiled_matmul() {
            tracing::warn!(
                "whisper.cpp was built without llamafile's tiled matrix products (a build cached \
                 from before .cargo/config.toml asked for GGML_LLAMAFILE): speech-to-text is about \
                 a third slower; `just build` builds it again"
            );
        }
        // Sampling from now on, so the first decode already knows how busy the machine is.
        let _ = ming_bus::cpu::CpuGauge::shared();
        let mut params = WhisperContextParameters::default();
        params.use_gpu(false);
        let ctx = WhisperContext::new_with_params(path, params).map_err(|e| {
            load_err(format!(
                "{e} (see the service log for whisper.cpp's reason)"
            ))
        })?;
        let mut state = ctx.create_state().map_err(|e| load_err(e.to_string()))?;
        let eot = ctx.token_eot();
        let vocab = Vocab::new(&ctx);
        let (tx, rx) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("stt".into())
            .spawn(move || {
                // The last reading whose encoder output is still in `state`.
                let mut encoded: Option<Decoded> = None;
                for work in rx {
                    let job = match work {
                        Work::Decode(job) => job,
                        Work::Judge {
                            samples,
                            texts,
                            abort,
                            done,
                        } => {
                            let held = encoded.as_ref().is_some_and(|d| d.audio.same(&samples));
                            let r = held
                                .then(|| judge(&ctx, &mut state, &vocab, &texts, &opts, &abort))
                                .flatten();
                            let _ = done.send(r);
                            continue;
                        }
                    };
                    let guide = job.guide.as_ref().map(|(g, l)| (&**g, &vocab, *l));
                    let again = encoded
                        .as_ref()
                        .filter(|d| d.audio.same(&job.samples) && guide.is_some());
                    let result = match (again, guide) {
                        (Some(d), Some((g, vocab, limits))) => {
                            if job.abort.load(Ordering::Relaxed) {
                                Err(SttError::Aborted)
                            } else {
                                let threads =
                                    ming_bus::cpu::CpuGauge::shared().threads(opts.threads);
                                let mut d = d.clone();
                                let whole = fits_one_window(d.audio.0.len());
                                d.guided = guided(
                                    &mut state,
                                    &d.text,
                                    (g, vocab, limits),
                                    threads,
                                    whole,
                                    &job.abort,
                                    job.judge.as_ref().map(|j| (j, &d.audio)),
                                );
                                if job.abort.load(Ordering::Relaxed) {
                                    Err(SttError::Aborted)
                                } else {
                                    Ok(d)
                                }
                            }
                        }
                        _ => {
                            encoded = None;
                            let r = decode(&mut state, eot, &job, &opts, guide);
                            // Only audio of one window: the state holds the last window's
                            // encoder output, and a long file is not kept alive here.
                            if let Some(d) =
                                r.as_ref().ok().filter(|d| fits_one_window(d.audio.0.len()))
                            {
                                encoded = Some(Decoded {
                                    guided: None,
                                    ..d.clone()
                                });
                            }
                            r
                        }
                    };
                    (job.done)(result);
                }
            })
            .map_err(|e| load_err(format!("cannot start its thread: {e}")))?;
        Ok(Self {
            tx,
            model: name.to_string(),
        })
    }

    /// Queues a job; its `done` is called on the STT thread.
    ///
    /// # Errors
    /// [`SttError::Gone`] if the thread died (its `done` is then not called).
    pub fn submit(&self, job: Job) -> Result<(), SttError> {
        self.tx.send(Work::Decode(job)).map_err(|_| SttError::Gone)
    }

    /// The regrets of `texts` as this model would read `samples`, if its state still holds their
    /// encoder output (it decoded them last); `None` otherwise, or when it does not answer
    /// within [`JUDGE_WAIT`]. Blocks: called from another model's STT thread.
    fn judge_blocking(
        &self,
        samples: &Samples,
        texts: Vec<String>,
        abort: &Arc<AtomicBool>,
    ) -> Option<Vec<f32>> {
        let (done, rx) = mpsc::channel();
        self.tx
            .send(Work::Judge {
                samples: samples.clone(),
                texts,
                abort: Arc::clone(abort),
                done,
            })
            .ok()?;
        rx.recv_timeout(JUDGE_WAIT).ok().flatten()
    }

    /// Decodes and waits (for tests, tools and the fast-as-possible path).
    ///
    /// # Errors
    /// [`SttError`] from the decode.
    pub fn decode_blocking(&self, samples: Vec<f32>, ctx_margin: u32) -> Result<Decoded, SttError> {
        self.decode_guided_blocking(Samples::new(samples), ctx_margin, None)
    }

    /// [`Stt::decode_blocking`], with a guided reading as well when `guide` is given and the
    /// text is not a command it knows. Samples that this model decoded last (the same
    /// [`Samples`], e.g. a final reading's [`Decoded::audio`]) are not encoded again.
    ///
    /// # Errors
    /// [`SttError`] from the decode (a failed guided search is logged, and no guided reading).
    pub fn decode_guided_blocking(
        &self,
        samples: Samples,
        ctx_margin: u32,
        guide: Option<(Arc<Guide>, Limits)>,
    ) -> Result<Decoded, SttError> {
        self.decode_judged_blocking(samples, ctx_margin, guide, None)
    }

    /// [`Stt::decode_guided_blocking`], the guided readings judged by `judge` too (see
    /// [`Job::judge`]).
    ///
    /// # Errors
    /// [`SttError`] from the decode.
    pub fn decode_judged_blocking(
        &self,
        samples: Samples,
        ctx_margin: u32,
        guide: Option<(Arc<Guide>, Limits)>,
        judge: Option<Stt>,
    ) -> Result<Decoded, SttError> {
        let (tx, rx) = mpsc::channel();
        self.submit(Job {
            samples,
            ctx_margin,
            abort: Arc::new(AtomicBool::new(false)),
            guide,
            judge,
            done: Box::new(move |r| {
                let _ = tx.send(r);
            }),
        })?;
        rx.recv().map_err(|_| SttError::Gone)?
    }
}

/// whisper.cpp's (and ggml's) log lines into `tracing`, as whisper-rs's own hooks put them,
/// except that whisper.cpp's own line for a decode stopped on purpose goes to debug (see
/// [`whisper_line`]).
fn install_log_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    whisper_rs::install_logging_hooks();
    // SAFETY: `whisper_log` does not unwind (it formats and logs only) and ignores its user
    // data; whisper.cpp keeps the callback for the life of the process.
    ONCE.call_once(|| unsafe {
        whisper_rs::set_log_callback(Some(whisper_log), std::ptr::null_mut());
    });
}

/// The level a line of whisper.cpp's log is logged at: its own, except for "failed to encode"
/// / "failed to decode" (`whisper_full_with_state`), which it also writes, at error level,
/// for every decode aborted on purpose — a partial overtaken by newer speech, a search ahead
/// that a newer decode stopped: 78 such lines in one voice bench run, not one a fault. A
/// decode that does fail is reported by its caller ("decode failed", with whisper's code).
fn whisper_line(level: whisper_rs::GGMLLogLevel, text: &str) -> tracing::Level {
    use whisper_rs::GGMLLogLevel as L;
    match level {
        L::Error if text.ends_with("failed to encode") || text.ends_with("failed to decode") => {
            tracing::Level::DEBUG
        }
        L::Error => tracing::Level::ERROR,
        L::Warn => tracing::Level::WARN,
        L::Info => tracing::Level::INFO,
        L::Debug => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    }
}

unsafe extern "C" fn whisper_log(
    level: std::ffi::c_uint,
    text: *const std::ffi::c_char,
    _: *mut std::ffi::c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: whisper.cpp passes a NUL-terminated string that lives for the call.
    let text = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy();
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    const T: &str = "whisper_rs::whisper_logging_hook";
    match whisper_line(whisper_rs::GGMLLogLevel::from(level), text) {
        tracing::Level::ERROR => tracing::error!(target: T, "{text}"),
        tracing::Level::WARN => tracing::warn!(target: T, "{text}"),
        tracing::Level::INFO => tracing::info!(target: T, "{text}"),
        tracing::Level::DEBUG => tracing::debug!(target: T, "{text}"),
        _ => tracing::trace!(target: T, "{text}"),
    }
}

/// Whether whisper.cpp has llamafile's tiled matrix products (tinyBLAS; see `audio_ctx_for`).
pub fn has_tiled_matmul() -> bool {
    whisper_rs::print_system_info().contains("LLAMAFILE = 1")
}

/// The encoder context for `n` samples, rounded up to a multiple of 8 frames.
///
/// Why 8: ggml's tiled matrix products (llamafile's tinyBLAS, built in by `.cargo/config.toml`)
/// take the encoder's attention only when its inner dimension, the context, is a multiple of
/// 8; otherwise ggml falls back to one f16 dot product per output value, which was 39% of
/// tiny.en's encoding. Measured on a 2.7 s command (`whisper-tiny.en-q8`, two threads,
/// 2026-12-07, alternating builds): 180 ms to encode at 237 or 240 frames without tinyBLAS,
/// 152 ms at 237 with it, 117 ms at 240. The few more frames are silence after the speech.
pub fn audio_ctx_for(n: usize, margin: u32) -> u32 {
    let secs = n.max(MIN_SAMPLES) as f64 / 16_000.0;
    let ctx = (secs * CTX_PER_SECOND).ceil() as u32 + margin;
    ctx.next_multiple_of(8).min(1500)
}

fn decode(
    state: &mut whisper_rs::WhisperState,
    eot: whisper_rs::WhisperTokenId,
    job: &Job,
    opts: &SttOptions,
    guide: Option<(&Guide, &Vocab, Limits)>,
) -> Result<Decoded, SttError> {
    let (audio, margin, abort) = (&job.samples, job.ctx_margin, &job.abort);
    let started = Instant::now();
    let started_ms = ming_bus::mono_ms();
    if abort.load(Ordering::Relaxed) {
        return Err(SttError::Aborted);
    }
    // Silence after the speech: without it whisper, seeing speech up to the end of its
    // window, tends to repeat the utterance until its token limit.
    let samples = &audio.0[..];
    let mut padded = samples.to_vec();
    padded.resize((samples.len() + TAIL_SAMPLES).max(MIN_SAMPLES), 0.0);
    let input = &padded[..];
    // whisper's 30 s window: longer stretches are decoded in windows by whisper.cpp itself.
    let audio_ctx = audio_ctx_for(input.len(), margin);
    let strategy = if opts.beam > 1 {
        SamplingStrategy::BeamSearch {
            beam_size: opts.beam as i32,
            patience: -1.0,
        }
    } else {
        SamplingStrategy::Greedy { best_of: 1 }
    };
    let mut p = FullParams::new(strategy);
    // As many threads as the rest of the machine leaves free (see `ming_bus::cpu`): with the
    // cores taken (the LLM generating), two spinning threads would wait at every barrier.
    let threads = ming_bus::cpu::CpuGauge::shared().threads(opts.threads);
    if threads < opts.threads {
        tracing::debug!(
            threads,
            of = opts.threads,
            "the CPUs are busy: fewer decode threads"
        );
    }
    p.set_n_threads(threads as i32);
    if !opts.prompt.is_empty() {
        p.set_initial_prompt(&opts.prompt);
    }
    p.set_language(Some("en"));
    p.set_translate(false);
    p.set_no_context(true);
    // With timestamps on, whisper ends the segment with a timestamp token and stops; without,
    // short windows (a small `audio_ctx`) often loop on the utterance (measured).
    p.set_no_timestamps(false);
    p.set_single_segment(input.len() <= WINDOW_SAMPLES);
    p.set_print_special(false);
    p.set_print_progress(false);
    p.set_print_realtime(false);
    p.set_print_timestamps(false);
    p.set_suppress_blank(true);
    p.set_suppress_nst(true);
    p.set_temperature(0.0);
    // The VAD has already said this is speech. whisper.cpp's own no-speech gate (probability
    // of its no-speech token > 0.6 with an average log-probability < -1) dropped whole
    // commands without a word: "Jot down call the bank tomorrow." in espeak-ng's voice came
    // back empty when the file began with it. Never drop: a doubtful reading still comes
    // back with its low confidence, and the agent says what it heard.
    p.set_no_speech_thold(1.0);
    p.set_temperature_inc(0.0);
    if input.len() <= WINDOW_SAMPLES {
        p.set_audio_ctx(audio_ctx as i32);
    }
    // Tokens a second of speech can hold (fast speech is ~4): a bound on repetition loops.
    p.set_max_tokens((input.len() as f64 / 16_000.0 * 8.0) as i32 + 16);
    // whisper-rs 0.16's `set_abort_callback_safe` hands whisper.cpp a pointer to a boxed trait
    // object but reads it back as the closure itself (undefined behaviour: random aborts, seen
    // as error -6); so the flag goes in as plain user data.
    // SAFETY: `abort` outlives `state.full` below, and the callback only reads the flag.
    unsafe {
        p.set_abort_callback(Some(abort_requested));
        p.set_abort_callback_user_data(Arc::as_ptr(abort) as *mut std::ffi::c_void);
    }
    let r = state.full(p, input);
    if abort.load(Ordering::Relaxed) {
        return Err(SttError::Aborted);
    }
    r.map_err(|e| SttError::Decode(e.to_string()))?;
    let mut text = String::new();
    let mut last_word_p = 1.0f32;
    let mut min_word_p = 1.0f32;
    for i in 0..state.full_n_segments() {
        if let Some(seg) = state.get_segment(i) {
            if let Ok(s) = seg.to_str_lossy() {
                text.push_str(&s);
            }
            for k in 0..seg.n_tokens() {
                let Some(tok) = seg.get_token(k) else {
                    continue;
                };
                if tok.token_id() >= eot {
                    continue; // timestamps and other special tokens
                }
                let piece = tok.to_str_lossy().unwrap_or_default();
                if !piece.chars().any(char::is_alphanumeric) {
                    continue; // punctuation
                }
                let p = tok.token_probability();
                // A token that starts with a space starts a new word.
                if piece.starts_with(' ') {
                    min_word_p = min_word_p.min(last_word_p);
                    last_word_p = p;
                } else {
                    last_word_p = last_word_p.min(p);
                }
            }
        }
    }
    let min_word_p = min_word_p.min(last_word_p);
    tracing::debug!(raw = %text, audio_ctx, "whisper's text");
    let decode_ms = started.elapsed().as_secs_f64() * 1e3;
    let text = clean(&text);
    let guided = guide.and_then(|g| {
        let long = input.len() > WINDOW_SAMPLES;
        guided(
            state,
            &text,
            g,
            threads,
            !long,
            abort,
            job.judge.as_ref().map(|j| (j, audio)),
        )
        .map(|f| Guided { encoded: true, ..f })
    });
    if abort.load(Ordering::Relaxed) {
        return Err(SttError::Aborted);
    }
    Ok(Decoded {
        last_word_p,
        min_word_p,
        guided,
        audio: audio.clone(),
        text,
        audio_ctx: if input.len() <= WINDOW_SAMPLES {
            audio_ctx
        } else {
            1500
        },
        decode_ms,
        started_ms,
    })
}

/// The guided reading of the audio whose encoder output is in `state` (see `guide.rs`), when
/// `text`, its free reading, is not already a command the guide knows. `whole`: the audio fit
/// one 30 s window (the state holds the encoder output of the last window only; no command is
/// longer). `abort` stops the search (the caller then answers `Aborted`). With `judge` (the
/// model that heard these samples first), the search goes on past its best as far as
/// [`JUDGED`] says, and the reading whose regrets under both models sum lowest is taken; when
/// the judge cannot say (it holds another audio's encoder output), the best.
fn guided(
    state: &mut whisper_rs::WhisperState,
    text: &str,
    (guide, vocab, limits): (&Guide, &Vocab, Limits),
    threads: u32,
    whole: bool,
    abort: &Arc<AtomicBool>,
    judge: Option<(&Stt, &Samples)>,
) -> Option<Guided> {
    if text.is_empty() || !whole || guide.accepts(text) {
        return None;
    }
    let t0 = Instant::now();
    let more = if judge.is_some() {
        JUDGED
    } else {
        Alternates::NONE
    };
    let found = crate::guide::decode(state, vocab, guide, threads as usize, limits, abort, more);
    let found = match found {
        Ok(found) => found,
        Err(crate::guide::GuideError::Aborted) => return None,
        Err(e) => {
            tracing::warn!(error = %e, "the guided reading failed");
            return None;
        }
    };
    let chosen = match judge {
        Some((judge, samples)) if found.len() > 1 => {
            let texts = found.iter().map(|g| format!(" {}", g.text)).collect();
            match judge.judge_blocking(samples, texts, abort) {
                Some(theirs) => {
                    tracing::info!(
                        readings = ?found.iter().map(|g| (&g.text, g.regret)).collect::<Vec<_>>(),
                        judge = %judge.model,
                        theirs = ?theirs,
                        "guided readings judged by the first model"
                    );
                    choose(found, &theirs)
                }
                None => {
                    tracing::debug!(
                        judge = %judge.model,
                        "the first model could not judge the guided readings (it holds other audio)"
                    );
                    found.into_iter().next()
                }
            }
        }
        _ => found.into_iter().next(),
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    match &chosen {
        Some(g) => tracing::debug!(heard = %text, guided = ?g, ms, "guided reading"),
        None => tracing::info!(heard = %text, ms, "no command reading within the guide's limits"),
    }
    chosen.map(|g| Guided { ms, ..g })
}

/// Of `found` (best first), the reading whose own regret and the judge's (`theirs`, in the same
/// order) sum lowest; the first at a tie.
fn choose(found: Vec<Guided>, theirs: &[f32]) -> Option<Guided> {
    let own = found.first()?.text.clone();
    // `min_by` keeps the first of equal sums.
    let (i, _) = found
        .iter()
        .zip(theirs)
        .map(|(g, t)| g.regret + t)
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    let mut g = found.into_iter().nth(i)?;
    g.judged = Some(Judged {
        regret: theirs[i],
        overruled: (i > 0).then_some(own),
    });
    Some(g)
}

/// The regrets of `texts` on the encoder output in `state` (see [`Work::Judge`]); `None` when
/// one does not tokenize or the decoder fails (logged) or `abort` is set.
fn judge(
    ctx: &WhisperContext,
    state: &mut whisper_rs::WhisperState,
    vocab: &Vocab,
    texts: &[String],
    opts: &SttOptions,
    abort: &AtomicBool,
) -> Option<Vec<f32>> {
    let readings = texts
        .iter()
        .map(|t| ctx.tokenize(t, 128).ok())
        .collect::<Option<Vec<_>>>()?;
    let threads = ming_bus::cpu::CpuGauge::shared().threads(opts.threads);
    match crate::guide::regrets(state, vocab, &readings, threads as usize, abort) {
        Ok(r) => Some(r),
        Err(crate::guide::GuideError::Aborted) => None,
        Err(e) => {
            tracing::warn!(error = %e, "judging guided readings failed");
            None
        }
    }
}

unsafe extern "C" fn abort_requested(flag: *mut std::ffi::c_void) -> bool {
    // SAFETY: the user data is the `AtomicBool` of the job being decoded (see `decode`).
    unsafe { (*(flag as *const AtomicBool)).load(Ordering::Relaxed) }
}

/// Whisper's text without the markers it writes for non-speech.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0usize;
    for ch in text.chars() {
        match ch {
            '[' | '(' => depth += 1,
            ']' | ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(ch),
            _ => {}
        }
    }
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    collapse_repeats(&text)
}

/// A word as compared between transcripts: without case or the punctuation around it.
pub fn word_key(w: &str) -> String {
    w.trim_matches(|c: char| !c.is_alphanumeric())
        .to_lowercase()
}

/// Whisper's known failure on short windows: the utterance again and again until the token
/// limit ("Open the list. Open the list. Open the"). Keeps the first of consecutive repeated
/// phrases (compared without case or punctuation), and drops a trailing piece that only
/// starts the phrase once more.
pub fn collapse_repeats(text: &str) -> String {
    let key = word_key;
    let words: Vec<&str> = text.split_whitespace().collect();
    let keys: Vec<String> = words.iter().map(|w| key(w)).collect();
    let n = words.len();
    // The shortest phrase length p (≥ 2 words) such that the text is the phrase repeated,
    // the last copy possibly cut short.
    for p in 2..=n / 2 {
        if (p..n).all(|i| keys[i] == keys[i % p]) {
            return words[..p].join(" ");
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(text: &str, regret: f32) -> Guided {
        Guided {
            text: text.into(),
            regret,
            overruled: 1,
            calls: 20,
            ms: 0.0,
            started_ms: 0.0,
            encoded: false,
            judged: None,
        }
    }

    /// whisper.cpp's lines for an aborted decode are no error in the log; its other errors are.
    #[test]
    fn an_aborted_decode_is_not_logged_as_an_error() {
        use whisper_rs::GGMLLogLevel as L;
        let level = |l, t| whisper_line(l, t);
        assert_eq!(
            level(L::Error, "whisper_full_with_state: failed to encode"),
            tracing::Level::DEBUG
        );
        assert_eq!(
            level(L::Error, "whisper_full_with_state: failed to decode"),
            tracing::Level::DEBUG
        );
        assert_eq!(
            level(
                L::Error,
                "whisper_init_from_file_with_params_no_state: failed to open 'x'"
            ),
            tracing::Level::ERROR
        );
        assert_eq!(level(L::Warn, "failed to encode"), tracing::Level::WARN);
        assert_eq!(
            level(L::Info, "whisper_model_load: loading"),
            tracing::Level::INFO
        );
    }

    /// The judged choice sums both models' regrets: the second model's best stands unless the
    /// judge's figures put another first, and a tie keeps the earlier (the searching model's
    /// better) reading.
    #[test]
    fn a_judged_reading_is_the_one_both_models_find_likeliest() {
        let found = || {
            vec![
                reading("Count down 20 seconds.", 1.65),
                reading("Count down 30 seconds.", 1.67),
                reading("Count down 90 seconds.", 2.07),
            ]
        };
        // tiny.en's regrets from where the readings part (offline, 2026-12-07).
        let g = choose(found(), &[3.45, 3.41, 0.52]).expect("a reading");
        assert_eq!(g.text, "Count down 90 seconds.");
        assert_eq!(g.regret, 2.07);
        assert_eq!(
            g.judged,
            Some(Judged {
                regret: 0.52,
                overruled: Some("Count down 20 seconds.".into()),
            })
        );
        let g = choose(found(), &[0.5, 0.5, 0.5]).expect("a reading");
        assert_eq!(g.text, "Count down 20 seconds.");
        assert_eq!(g.judged.and_then(|j| j.overruled), None);
        let g = choose(found(), &[0.5, 0.49, 4.0]).expect("a reading");
        assert_eq!(
            g.text, "Count down 20 seconds.",
            "1.65 + 0.5 against 1.67 + 0.49"
        );
        let tied = vec![
            reading("Pause the timer", 1.0),
            reading("Pause the time", 1.0),
        ];
        let g = choose(tied, &[0.25, 0.25]).expect("a reading");
        assert_eq!(g.text, "Pause the timer");
        assert!(choose(Vec::new(), &[]).is_none());
    }

    #[test]
    fn non_speech_markers_are_dropped() {
        assert_eq!(clean(" [BLANK_AUDIO]"), "");
        assert_eq!(
            clean(" Set a timer (music) for  five minutes."),
            "Set a timer for five minutes."
        );
        assert_eq!(
            clean("Open the list. Open the list. open the list, Open the"),
            "Open the list."
        );
        assert_eq!(clean("Stop. Stop. Stop."), "Stop. Stop. Stop.");
        assert_eq!(clean("I said no no no"), "I said no no no");
    }

    #[test]
    fn whisper_is_built_with_tiled_matrix_products() {
        assert!(
            has_tiled_matmul(),
            "GGML_LLAMAFILE did not reach whisper.cpp's build: {}",
            whisper_rs::print_system_info()
        );
    }

    #[test]
    fn the_encoder_context_follows_the_length() {
        assert_eq!(audio_ctx_for(8_000, 0), 56); // padded to 1 s, 50 frames, rounded up
        assert_eq!(audio_ctx_for(48_000, 32), 184); // 3 s + 32 = 182, rounded up
        assert_eq!(audio_ctx_for(48_000, 34), 184); // already a multiple of 8
        assert_eq!(audio_ctx_for(16_000 * 40, 32), 1500);
    }
}
