//! `ming-audio`: voice in and out — voice activity and end of turn (Silero VAD, our own code),
//! streaming speech-to-text (whisper.cpp, Whisper tiny.en), text-to-speech (espeak-ng, as a
//! separate process) with barge-in.
//!
//! # Layout
//! - [`wav`]: WAV and raw PCM in, 16-bit WAV out.
//! - [`resample`]: any rate → 16 kHz, streaming, without delay.
//! - [`vad`]: the Silero network, frame by frame.
//! - [`turn`]: speech boundaries and end of turn (hangover; sooner for a complete command).
//! - [`stt`]: the whisper.cpp thread.
//! - [`pipeline`]: audio → boundaries, partial and final transcripts.
//! - [`source`]: files, bytes and PCM for `audio.transcribe`, paced or as fast as possible.
//! - [`tts`]: speech synthesis and playback with barge-in.
//! - [`device`]: the sound card through cpal (capture, playback).
//! - [`live`]: the live input (push-to-talk, wake phrase, follow-up window).
//! - [`AudioService`] / [`run`]: the bus side.

pub mod device;
pub mod guide;
pub mod live;
pub mod pipeline;
pub mod resample;
pub mod source;
pub mod stt;
pub mod tts;
pub mod turn;
pub mod vad;
pub mod wav;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ming_bus::events::EventPublisher;
use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusClient, BusConfig, BusError};
use ming_config::models::{self, ResolveModelError};
use ming_config::{AudioSettings, Config, Paths};
use ming_schemas::audio::{Feed, Listen, Speak, Transcribe, Transcribed, Transcript, Update};
use ming_schemas::{kinds, ErrorCode};

use crate::pipeline::{Output, PipelineConfig};
use crate::source::Engine;
use crate::stt::{Stt, SttError};
use crate::turn::TurnConfig;
use crate::vad::{LoadVadError, SileroModel};

/// The name this service registers under (unless `MING_SERVICE` names another).
pub const SERVICE: &str = "audio";

pub use ming_bus::mono_ms;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A model is missing, unverified or unknown: not worth a restart (exit 78).
    #[error(transparent)]
    Model(#[from] ResolveModelError),
    #[error(transparent)]
    Vad(#[from] LoadVadError),
    #[error(transparent)]
    Stt(#[from] SttError),
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The configured text-to-speech engine cannot run (a Piper voice or its runtime missing).
    #[error("{0}")]
    Tts(String),
}

/// The pipeline settings of `[audio]`.
pub fn pipeline_config(a: &AudioSettings) -> PipelineConfig {
    PipelineConfig {
        turn: TurnConfig {
            threshold: a.vad_threshold,
            off_threshold: a.vad_off_threshold,
            min_speech_frames: 2,
            hangover_ms: a.hangover_ms,
            early_hangover_ms: a.early_hangover_ms,
            incomplete_hangover_ms: a.incomplete_hangover_ms,
            unsure_hangover_ms: a.unsure_hangover_ms,
            max_utterance_ms: a.max_utterance_ms,
        },
        preroll_ms: a.preroll_ms,
        partial_interval_ms: a.partial_interval_ms,
        early_decode_ms: a.early_decode_ms,
        ctx_margin: a.stt_ctx_margin,
    }
}

/// Loads the VAD and STT models named in config.
///
/// # Errors
/// [`StartError`] naming the model and the command that fixes it.
pub fn load_engine(cfg: &Config) -> Result<Engine, StartError> {
    let paths = Paths::resolve(&cfg.paths);
    let (_, vad_path) = models::resolve(&cfg.audio.vad_model, "vad", &paths.model_dir)?;
    let (stt_model, stt_path) = models::resolve(&cfg.audio.stt_model, "stt", &paths.model_dir)?;
    let vad = SileroModel::load(&vad_path)?;
    let threads = if cfg.audio.threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
    } else {
        cfg.audio.threads
    };
    let opts = stt::SttOptions {
        threads,
        beam: cfg.audio.stt_beam,
        prompt: cfg.audio.stt_prompt.clone(),
    };
    let stt = Stt::start(&stt_model.name, &stt_path, opts.clone())?;
    let second = if cfg.audio.stt_second_model.is_empty() {
        None
    } else {
        let (model, path) = models::resolve(&cfg.audio.stt_second_model, "stt", &paths.model_dir)?;
        let stt = Stt::start(&model.name, &path, opts.clone())?;
        Some((stt, cfg.audio.stt_second_ctx_margin))
    };
    let guide = cfg.audio.stt_guide.then(|| {
        Arc::new(guide::GuideCache::new(guide::Limits {
            max_regret: cfg.audio.stt_guide_max_regret,
            max_calls: GUIDE_MAX_CALLS,
            max_tokens: GUIDE_MAX_TOKENS,
        }))
    });
    Ok(Engine {
        vad,
        stt,
        second,
        guide,
        pipeline: pipeline_config(&cfg.audio),
        utterances: Arc::new(AtomicU64::new(1)),
    })
}

/// The `audio` service's request handler.
pub struct AudioService {
    engine: Engine,
    settings: AudioSettings,
    max_frame: usize,
    events: Arc<EventPublisher>,
    bus: Arc<BusClient>,
    speaker: Arc<tts::Speaker>,
    live: Arc<live::Live>,
}

impl AudioService {
    async fn transcribe(&self, req: Request, mut resp: Responder) {
        let body: Transcribe = match req.body() {
            Ok(b) => b,
            Err(e) => return resp.fail(&e),
        };
        let started = Instant::now();
        let source = match source::open(&body) {
            Ok(s) => s,
            Err(e) => return resp.error(ErrorCode::BadRequest, e.to_string()),
        };
        let (rate, channels) = (source.format.rate, source.format.channels);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Output>();
        let cancel = Arc::new(AtomicBool::new(false));
        let engine = self.engine.clone();
        let (realtime, partials) = (body.realtime, body.partials);
        let flag = Arc::clone(&cancel);
        let worker = tokio::task::spawn_blocking(move || {
            source::run(&engine, source, realtime, partials, &flag, |o| {
                let _ = tx.send(o);
            })
        });
        let mut cancelled = req.cancelled.clone();
        let mut finals: Vec<Transcript> = Vec::new();
        let mut to_agent = Vec::new();
        let mut watching = true;
        loop {
            tokio::select! {
                o = rx.recv() => {
                    let Some(o) = o else { break };
                    let update = self.publish(&o);
                    if let Output::Final(t) = &o {
                        finals.push(t.clone());
                        if body.to_agent && !t.text.is_empty() {
                            to_agent.push(tokio::spawn(send_to_agent(Arc::clone(&self.bus), t.clone())));
                        }
                    }
                    if body.partials {
                        resp.partial(&update);
                    }
                }
                changed = cancelled.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                    } else if *cancelled.borrow() {
                        cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
        let stats = match worker.await {
            Ok(s) => s,
            Err(e) => {
                return resp.error(ErrorCode::Internal, format!("transcription failed: {e}"));
            }
        };
        if cancel.load(Ordering::Relaxed) {
            return resp.error(ErrorCode::Cancelled, "transcription cancelled");
        }
        let mut sent = 0;
        for h in to_agent {
            if matches!(h.await, Ok(true)) {
                sent += 1;
            }
        }
        resp.reply(&Transcribed {
            utterances: finals,
            audio_ms: stats.audio_ms,
            source_rate: rate,
            source_channels: channels,
            elapsed_ms: started.elapsed().as_secs_f64() * 1e3,
            stt_ms: stats.stt_ms,
            rtf: if stats.audio_ms > 0.0 {
                stats.stt_ms / stats.audio_ms
            } else {
                0.0
            },
            sent_to_agent: sent,
            warning: stats.warning,
        });
    }

    fn publish(&self, o: &Output) -> Update {
        publish(&self.events, o)
    }
}

/// Publishes a pipeline output as its event and returns it as a transcription update.
fn publish(events: &EventPublisher, o: &Output) -> Update {
    {
        match o {
            Output::SpeechStarted(b) => {
                events.publish(kinds::EVENT_SPEECH_STARTED, b);
                Update {
                    event: "speech_started".into(),
                    boundary: Some(b.clone()),
                    transcript: None,
                }
            }
            Output::SpeechEnded(b) => {
                events.publish(kinds::EVENT_SPEECH_ENDED, b);
                Update {
                    event: "speech_ended".into(),
                    boundary: Some(b.clone()),
                    transcript: None,
                }
            }
            Output::Partial(t) => {
                events.publish(kinds::EVENT_PARTIAL, t);
                Update {
                    event: "partial".into(),
                    boundary: None,
                    transcript: Some(t.clone()),
                }
            }
            Output::Final(t) => {
                events.publish(kinds::EVENT_TRANSCRIPT, t);
                Update {
                    event: "final".into(),
                    boundary: None,
                    transcript: Some(t.clone()),
                }
            }
        }
    }
}

impl AudioService {
    async fn speak(&self, req: Request, resp: Responder) {
        let body: Speak = match req.body() {
            Ok(b) => b,
            Err(e) => return resp.fail(&e),
        };
        if body.text.trim().is_empty() {
            return resp.error(ErrorCode::BadRequest, "nothing to say: `text` is empty");
        }
        if body.text.len() > self.settings.max_speak_bytes as usize {
            return resp.error(
                ErrorCode::TooLarge,
                format!(
                    "`text` is {} bytes, audio.max_speak_bytes is {}: split it",
                    body.text.len(),
                    self.settings.max_speak_bytes
                ),
            );
        }
        let speaker = Arc::clone(&self.speaker);
        let events = Arc::clone(&self.events);
        match tokio::task::spawn_blocking(move || speaker.speak(&body, &events)).await {
            Ok(Ok(spoken)) => resp.reply(&spoken),
            Ok(Err(e)) => resp.error(e.code(), e.to_string()),
            Err(e) => resp.error(ErrorCode::Internal, format!("speaking failed: {e}")),
        }
    }
}

fn listen_code(e: &live::ListenError) -> ErrorCode {
    match e {
        live::ListenError::NoInput(_) => ErrorCode::ServiceUnavailable,
        _ => ErrorCode::BadRequest,
    }
}

/// Hands a final transcript to the agent as a voice turn; `true` when the agent answered.
async fn send_to_agent(bus: Arc<BusClient>, t: Transcript) -> bool {
    let text = t.text.clone();
    ask_agent(&bus, text, t, Tiers::All).await.is_ok()
}

/// What the user hears when the agent did not act on a voice turn: the agent's own reason
/// ("I heard … and am not sure what you want", "… without the local model, which failed"),
/// or why there was none. `None` for a turn the caller cancelled.
pub fn spoken_error(e: &BusError) -> Option<String> {
    match e {
        BusError::Remote {
            code: ErrorCode::Cancelled,
            ..
        } => None,
        // The broker's answer: the agent is stopped, failed or stopped heartbeating (the
        // agent's own ServiceUnavailable is about a service it needs, and says so).
        BusError::Remote {
            code: ErrorCode::ServiceUnavailable,
            ..
        } if e.from_broker() => Some("The agent is not running, so I cannot act on that.".into()),
        BusError::Remote { message, .. } => Some(message.clone()),
        BusError::Timeout { .. } => Some("The agent did not answer in time.".into()),
        _ => Some("I could not reach the agent.".into()),
    }
}

/// Which of the agent's tiers may act on a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tiers {
    /// The rules and the answer to a pending question (`skip_llm` and `skip_router`).
    Rules,
    /// All but the local model (`skip_llm`).
    NoLlm,
    /// Every tier.
    All,
}

/// Sends `text` (a final transcript, or what followed the wake phrase in it) to the agent.
async fn ask_agent(
    bus: &BusClient,
    text: String,
    t: Transcript,
    tiers: Tiers,
) -> Result<ming_schemas::agent::Reply, BusError> {
    let msg = ming_schemas::agent::Message {
        text,
        session: Some("voice".into()),
        confirm: false,
        tool: None,
        arguments: None,
        voice: Some(t),
        skip_llm: tiers != Tiers::All,
        skip_router: tiers == Tiers::Rules,
    };
    match bus
        .request::<_, ming_schemas::agent::Reply>(
            "agent",
            kinds::AGENT_MESSAGE,
            &msg,
            Duration::from_secs(30),
        )
        .await
    {
        Ok(r) => Ok(r),
        Err(e) => {
            tracing::warn!(error = %e, "the agent did not act on a voice turn");
            Err(e)
        }
    }
}

/// Tokens one guided search may give the decoder (a call of one token takes ~2-3 ms with
/// tiny.en on two cores; one of several, to turn to another reading, not much more).
const GUIDE_MAX_CALLS: u32 = 80;
/// Tokens a guided reading may have.
const GUIDE_MAX_TOKENS: usize = 48;

/// What hears a live turn again when the agent could not act on it: the first model guided
/// toward the agent's commands, and a second model.
#[derive(Clone)]
struct Hearing {
    /// The first model and its encoder margin.
    stt: Stt,
    margin: u32,
    guide: Option<Arc<guide::GuideCache>>,
    second: Option<(Stt, u32)>,
}

impl Hearing {
    fn new(engine: &Engine) -> Self {
        Self {
            stt: engine.stt.clone(),
            margin: engine.pipeline.ctx_margin,
            guide: engine.guide.clone(),
            second: engine.second.clone(),
        }
    }
}

/// The guide, compiled from the agent's `agent.patterns` the first time it is needed.
async fn fetch_guide(bus: &BusClient, cache: &guide::GuideCache) -> Option<Arc<guide::Guide>> {
    if let Some(g) = cache.get() {
        return Some(g);
    }
    let patterns = match bus
        .request::<_, ming_schemas::agent::Patterns>(
            "agent",
            kinds::AGENT_PATTERNS,
            &serde_json::Map::new(),
            Duration::from_secs(2),
        )
        .await
    {
        Ok(p) => p.patterns,
        Err(e) => {
            tracing::warn!(error = %e, "no command patterns from the agent: no guided hearing this turn");
            return None;
        }
    };
    match cache.set(&patterns) {
        Ok(g) => {
            tracing::info!(patterns = g.patterns, "the command guide is compiled");
            Some(g)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the agent's command patterns do not compile: no guided hearing");
            None
        }
    }
}

/// How long a second hearing waits for the one the pipeline started ahead of need before it
/// hears the turn itself (base decodes a command in 250–400 ms on two cores, and searches its
/// guided reading in 30–370 ms more).
const SECOND_AHEAD_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How long a guided hearing waits for the search the pipeline started ahead of need before it
/// searches itself (a search takes 20–250 ms; it is aborted when a newer decode comes).
const AHEAD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The first model's guided reading of a turn's `audio` (see `guide.rs`), if the guide can be
/// had and finds one within its limits. The turn's final reading was most often the first
/// model's last decode: then its encoder output is still there, and only the search runs. A
/// search the pipeline started ahead on these samples is taken instead when it finished.
async fn guided_reading(
    bus: &BusClient,
    live: &live::Live,
    hearing: &Hearing,
    cache: &guide::GuideCache,
    audio: &stt::Samples,
    t: &Transcript,
) -> Option<guide::Guided> {
    // Searched already while the turn waited out its hangover (the pipeline's `with_guide`)?
    if let Some(mut ahead) = live.take_ahead(audio) {
        let done = tokio::time::timeout(AHEAD_WAIT, ahead.wait_for(Option::is_some)).await;
        if let Ok(Ok(r)) = done {
            if let Some(Ok(guided)) = r.clone() {
                tracing::info!(
                    utterance = t.utterance,
                    first = %t.text,
                    guided = ?guided,
                    "a guided hearing, searched ahead, of a turn the agent could not act on"
                );
                return guided;
            }
        }
    }
    let guided = search_guided(bus, &hearing.stt, hearing.margin, cache, audio, None).await;
    tracing::info!(
        utterance = t.utterance,
        first = %t.text,
        guided = ?guided,
        "a guided hearing of a turn the agent could not act on without the LLM or at all"
    );
    guided
}

/// `stt`'s guided reading of `audio` (see `guide.rs`): only the search when its state still
/// holds that audio's encoder output, else it encodes it first; its readings judged by `judge`
/// too, the model that heard the audio first (see [`stt::Job::judge`]). `None` when the guide
/// cannot be had, the search finds nothing within its limits, or it fails (logged).
async fn search_guided(
    bus: &BusClient,
    stt: &Stt,
    margin: u32,
    cache: &guide::GuideCache,
    audio: &stt::Samples,
    judge: Option<Stt>,
) -> Option<guide::Guided> {
    let g = fetch_guide(bus, cache).await?;
    decode_guided(stt, margin, g, cache.limits, audio, judge)
        .await?
        .guided
}

/// `stt`'s free reading of `audio`, with its reading guided by `g` under `limits` (and judged
/// by `judge`) when the free one is not already one `g` accepts; `None` when decoding fails
/// (logged).
async fn decode_guided(
    stt: &Stt,
    margin: u32,
    g: Arc<guide::Guide>,
    limits: guide::Limits,
    audio: &stt::Samples,
    judge: Option<Stt>,
) -> Option<stt::Decoded> {
    let (stt2, samples) = (stt.clone(), audio.clone());
    let decoded = tokio::task::spawn_blocking(move || {
        stt2.decode_judged_blocking(samples, margin, Some((g, limits)), judge)
    })
    .await;
    match decoded {
        Ok(Ok(d)) => Some(d),
        Ok(Err(err)) => {
            tracing::warn!(model = %stt.model, error = %err, "the guided hearing failed");
            None
        }
        Err(_) => None,
    }
}

/// Silence put before a turn's audio to hear it again in the user's words a second time (96 ms
/// at 16 kHz). Whisper's reading moves with the lead-in: offline, espeak-ng's "Look for
/// messages from the bank." read within the mailbox's words reaches "… the bank." at 1.60 nats
/// with 96 ms of silence before the speech and 3.38 with 288, but nothing within the limit
/// with the live pre-roll's 192 — the rescue came and went from run to run.
const IN_WORDS_RETRY_PAD: usize = 1536;

/// The first model's guided reading of a turn within `patterns` (the agent's `hear_again`),
/// under the guide's limits; if it finds none, once more with [`IN_WORDS_RETRY_PAD`] more
/// silence before the speech (another encode, ~100 ms with tiny.en; the turn was going to be
/// acted on as first heard). `None` without a guide (guided hearing is off) or a reading.
async fn hear_in_words(
    hearing: &Hearing,
    patterns: &[String],
    audio: &stt::Samples,
) -> Option<guide::Guided> {
    let limits = hearing.guide.as_ref()?.limits;
    let g = match guide::Guide::new(patterns) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            tracing::warn!(error = %e, "the agent's patterns to hear a turn again in do not compile");
            return None;
        }
    };
    let found = decode_guided(&hearing.stt, hearing.margin, g.clone(), limits, audio, None)
        .await
        .and_then(|d| d.guided);
    if found.is_some() {
        return found;
    }
    let mut padded = vec![0.0f32; IN_WORDS_RETRY_PAD];
    padded.extend_from_slice(&audio.0);
    let padded = stt::Samples::new(padded);
    let d = decode_guided(
        &hearing.stt,
        hearing.margin,
        g.clone(),
        limits,
        &padded,
        None,
    )
    .await?;
    tracing::info!(free = %d.text, guided = ?d.guided, "heard again in the user's words with more silence before the speech");
    // The free reading may already be in the words (the guide then searches nothing).
    d.guided.or_else(|| {
        g.accepts(&d.text).then(|| guide::Guided {
            text: d.text.clone(),
            regret: 0.0,
            overruled: 0,
            calls: 0,
            ms: d.decode_ms,
            started_ms: d.started_ms,
            encoded: true,
            judged: None,
        })
    })
}

/// The words of a transcript, without case or punctuation.
fn word_keys(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(stt::word_key)
        .filter(|w| !w.is_empty())
        .collect()
}

/// The same words, without case or punctuation.
fn same_words(a: &str, b: &str) -> bool {
    word_keys(a) == word_keys(b)
}

/// Whether a guided reading leaves out much of what the first reading heard: it fixes misheard
/// words ("Find my note and out of the plumber." → "Find my note about the plumber."), it does
/// not drop half the sentence ("What do I come on Friday?" → "What's the day?", a command the
/// search could end early on, at a pause in whisper's own timestamps).
fn drops_words(first: &str, guided: &str) -> bool {
    let (f, g) = (word_keys(first).len(), word_keys(guided).len());
    g + (f / 4).max(2) < f
}

/// The transcript `t` heard again as `text`, with the stages of that hearing: `began`, when
/// its decoding began, and `ready`, when its reading was in (monotonic ms). A hearing run ahead
/// of need began, and was ready, before the turn took it — often before the turn ended — and
/// the stages say when it actually ran, so that `ming trace` shows where a turn's time went.
fn heard_again(t: &Transcript, text: &str, stage: &str, began: f64, ready: f64) -> Transcript {
    let mut t2 = t.clone();
    t2.text = text.to_string();
    t2.stages.push(ming_schemas::audio::Stage {
        name: format!("{stage}_decode_started"),
        at_ms: began,
    });
    t2.stages.push(ming_schemas::audio::Stage {
        name: format!("{stage}_transcript"),
        at_ms: ready.max(began),
    });
    t2
}

/// When a hearing of a turn began and when its reading was in: from `asked`, when the turn
/// asked for it, or earlier when it ran ahead of need (`ran_from`, `took_ms`: its decode's own
/// start and length; a hearing the turn waited on ends now, one run ahead ended earlier).
fn hearing_span(asked: f64, ran_from: f64, took_ms: f64) -> (f64, f64) {
    let now = mono_ms();
    (asked.min(ran_from), (ran_from + took_ms).min(now))
}

/// When the agent answered the reading `text` of the turn `t` with `hear_again` (a look-up that
/// finds nothing, where the user's data holds words it might have been): the turn heard again in
/// those words, and the agent's answer to that reading when it acted on it, else to `text` once
/// more with every tier (the agent acts as first heard). `None` when the agent did not ask.
#[allow(clippy::too_many_arguments)]
async fn in_words(
    bus: &BusClient,
    live: &live::Live,
    events: &EventPublisher,
    hearing: &Hearing,
    audio: &stt::Samples,
    text: &str,
    t: &Transcript,
    answer: &Result<ming_schemas::agent::Reply, BusError>,
) -> Option<Result<ming_schemas::agent::Reply, BusError>> {
    let patterns = match answer {
        Ok(r) if !r.hear_again.is_empty() => &r.hear_again,
        _ => return None,
    };
    live.drop_ahead(audio);
    let started = mono_ms();
    let guided = hear_in_words(hearing, patterns, audio).await;
    tracing::info!(
        utterance = t.utterance,
        first = %t.text,
        guided = ?guided,
        "a hearing in the user's own words of a search that found nothing"
    );
    if let Some(r) = offer_guided(
        bus,
        live,
        events,
        t,
        guided,
        &[&t.text],
        "in_words",
        started,
    )
    .await
    {
        return Some(r);
    }
    Some(ask_agent(bus, text.to_string(), t.clone(), Tiers::All).await)
}

/// Stops the guided search and second hearing started ahead on a turn's audio when dropped:
/// the turn has its answer, and the CPU is the reply's and the next turn's.
struct StopAhead<'a>(&'a live::Live, stt::Samples);

impl Drop for StopAhead<'_> {
    fn drop(&mut self) {
        self.0.drop_ahead(&self.1);
    }
}

/// Asks the agent to act on a live turn's transcript, hearing the turn again when it could not.
/// The first reading goes with `skip_llm` (and with the guide, `skip_router` too: only the rules
/// may act on it). When only the learned router or the local model could understand it, or the
/// agent cannot act on it (it did not understand, refused what it understood, or its local model
/// failed on it):
///
/// 1. *guided* (`audio.stt_guide`): the first model decodes the turn's audio again keeping only
///    texts that can still be one of the agent's commands (`guide.rs`); a reading that differs
///    and gave up at most `stt_guide_max_regret` nats goes to the agent, again with `skip_llm`
///    (stages `guided_decode_started` / `guided_transcript`); if the agent acts on it, done;
///    if not, the first reading goes to the router (`skip_llm` alone), and if it acts, done;
/// 2. *second model* (`audio.stt_second_model`): it hears the audio again — with the guide most
///    often already done, started ahead of need during the hangover (`Pipeline::with_guide`; its
///    stages then say when it ran, before the turn took it) — and a reading that
///    differs goes to the agent in its place, to every tier (`second_decode_started` /
///    `second_transcript`);
///    With the guide, that reading goes with `skip_llm` first, and when the rules cannot act on
///    it, the second model's own guided reading goes (`second_guided_decode_started` /
///    `second_guided_transcript`), with `skip_llm`; if neither is acted on, the second reading
///    goes to every tier;
/// 3. otherwise the first reading goes to the LLM after all.
///
/// When the rules knew the first reading's command but asked for its key argument (`awaiting`
/// a slot, no action), a guided reading that differs goes to the agent too, with `skip_llm`; if
/// it is acted on, that answer is returned, else the question (after the second model's readings
/// when there is one).
///
/// Why the guided reading before the router: in ten voice bench runs (30–39) the router acted
/// on "Time at 45 minutes." (a 45-minute timer, for "Timer for five minutes.") six times and on
/// "What's the next today?" (the day's events, for "What's the date today?") three times; the
/// passes without a router, where those turns are heard again, got both right every time.
///
/// Each reading is published as a transcript event too. The answer to the last reading is
/// returned.
///
/// Why before the LLM: in the voice bench, the LLM tier acted on the wrong words for 11 of the
/// 13 voice turns the rules did not understand (misheard commands, which it took literally),
/// and a reading heard again is often one the rules know.
async fn ask_agent_twice(
    bus: &BusClient,
    live: &live::Live,
    events: &EventPublisher,
    hearing: Hearing,
    text: String,
    t: Transcript,
) -> Result<ming_schemas::agent::Reply, BusError> {
    // Kept only with a second model or the guide; taken now, so that it does not outlive the
    // turn.
    let audio = live.take_turn_audio(t.utterance);
    let Some(audio) = audio.filter(|_| hearing.guide.is_some() || hearing.second.is_some()) else {
        return ask_agent(bus, text, t, Tiers::All).await;
    };
    // However the turn ends, what still runs ahead on its audio stops then.
    let _ahead = StopAhead(live, audio.clone());
    // With the guide, the router waits for the guided reading: it acted on misheard words that
    // the guided reading set right.
    let rules_first = hearing.guide.is_some();
    let tiers = if rules_first {
        Tiers::Rules
    } else {
        Tiers::NoLlm
    };
    let mut first = ask_agent(bus, text.clone(), t.clone(), tiers).await;
    if let Some(r) = in_words(bus, live, events, &hearing, &audio, &text, &t, &first).await {
        return r;
    }
    if acted(&first) && !asks_argument(&first) {
        return first;
    }
    if let Some(cache) = &hearing.guide {
        let started = mono_ms();
        let guided = guided_reading(bus, live, &hearing, cache, &audio, &t).await;
        if let Some(r) =
            offer_guided(bus, live, events, &t, guided, &[&t.text], "guided", started).await
        {
            return r;
        }
    }
    // The guided reading did not do: the router has the first reading now.
    if rules_first && matches!(&first, Ok(r) if r.needs_llm) {
        first = ask_agent(bus, text.clone(), t.clone(), Tiers::NoLlm).await;
        if let Some(r) = in_words(bus, live, events, &hearing, &audio, &text, &t, &first).await {
            return r;
        }
        if acted(&first) && !asks_argument(&first) {
            return first;
        }
    }
    let deferred = matches!(&first, Ok(r) if r.needs_llm);
    // The rules or the router knew the command but not its key argument, and asked for it
    // ("Set a timer for a while hour": for how long?). A reading heard again that has it ("…
    // for one hour") is a command of its own, which the agent takes in place of the answer it
    // waits for.
    let asks_for_argument = asks_argument(&first);
    // The question stands unless the second model's hearing has the argument: base's guided
    // reading of espeak's "Count down ninety seconds." was "Count down 90 seconds." where
    // tiny.en heard "I'll do seconds." (the router's set_timer, "For how long?"). Without the
    // guide there is no such reading to wait for.
    if asks_for_argument && hearing.guide.is_none() {
        return first;
    }
    // Without a different reading: the first goes to the LLM if it has not been yet (a
    // question asked stays the answer).
    async fn fallback(
        bus: &BusClient,
        first: Result<ming_schemas::agent::Reply, BusError>,
        deferred: bool,
        text: String,
        t: Transcript,
    ) -> Result<ming_schemas::agent::Reply, BusError> {
        if deferred {
            ask_agent(bus, text, t, Tiers::All).await
        } else {
            first
        }
    }
    let Some((stt, margin)) = hearing.second else {
        return fallback(bus, first, deferred, text, t).await;
    };
    let started = mono_ms();
    // Heard already while the turn waited out its hangover (after the guided search ahead),
    // with its own guided reading when its free one is no command?
    let ahead = match live.take_second(&audio) {
        Some(mut rx) => {
            match tokio::time::timeout(SECOND_AHEAD_WAIT, rx.wait_for(Option::is_some)).await {
                Ok(Ok(r)) => r.clone().and_then(Result::ok),
                _ => None,
            }
        }
        None => None,
    };
    let heard_ahead = ahead.is_some();
    let decoded = match ahead {
        Some(d) => Ok(Ok(d)),
        None => {
            let (stt2, audio2) = (stt.clone(), audio.clone());
            tokio::task::spawn_blocking(move || stt2.decode_guided_blocking(audio2, margin, None))
                .await
        }
    };
    let d = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "the second model could not hear the turn again");
            return fallback(bus, first, deferred, text, t).await;
        }
        Err(_) => return fallback(bus, first, deferred, text, t).await,
    };
    tracing::info!(
        utterance = t.utterance,
        first = %t.text,
        second = %d.text,
        decode_ms = d.decode_ms,
        ahead = heard_ahead,
        before_llm = deferred,
        "a second hearing of a turn the agent could not act on without the LLM or at all"
    );
    let reading = (!same_words(&d.text, &t.text))
        .then(|| live.reroute(&d.text))
        .flatten();
    let (began, ready) = hearing_span(started, d.started_ms, d.decode_ms);
    let mut t2 = heard_again(&t, &d.text, "second", began, ready);
    t2.confidence = d.min_word_p;
    t2.decode_ms = d.decode_ms;
    t2.audio_ctx = d.audio_ctx;
    if let Some(cache) = &hearing.guide {
        // With the guide, the second reading goes to the rules first too, and when they cannot
        // act on it, the second model's own guided reading is tried before the LLM.
        // A reading that is again a command without its argument ("Count down anty seconds."
        // after "I'll do seconds.") is asked about only if the guided reading has none either.
        let mut asked = None;
        if let Some(text2) = &reading {
            events.publish(kinds::EVENT_TRANSCRIPT, &t2);
            let r = ask_agent(bus, text2.clone(), t2.clone(), Tiers::NoLlm).await;
            if asks_argument(&r) {
                asked = Some(r);
            } else if acted(&r) {
                return r;
            }
        }
        let started = mono_ms();
        let guided = if heard_ahead {
            d.guided.clone()
        } else {
            search_guided(bus, &stt, margin, cache, &audio, Some(hearing.stt.clone())).await
        };
        tracing::info!(
            utterance = t.utterance,
            first = %t.text,
            guided = ?guided,
            "the second model's guided hearing of a turn the agent could not act on"
        );
        let heard = [d.text.as_str(), t.text.as_str()];
        if let Some(r) = offer_guided(
            bus,
            live,
            events,
            &t,
            guided,
            &heard,
            "second_guided",
            started,
        )
        .await
        {
            return r;
        }
        if let Some(asked) = asked {
            return asked;
        }
        return match reading {
            Some(text2) if !asks_for_argument => ask_agent(bus, text2, t2, Tiers::All).await,
            _ => fallback(bus, first, deferred, text, t).await,
        };
    }
    let Some(text2) = reading else {
        return fallback(bus, first, deferred, text, t).await;
    };
    events.publish(kinds::EVENT_TRANSCRIPT, &t2);
    ask_agent(bus, text2, t2, Tiers::All).await
}

/// Offers `guided`, a guided reading of the turn `t`, to the agent with `skip_llm` (published
/// as a transcript with the stages `{stage}_decode_started`, from `started`, and
/// `{stage}_transcript`): not when it is the words of a reading already `heard`, nor when it
/// leaves out much of the first of them ([`drops_words`]). The agent's answer when it acted on
/// it (or asked about it); `None` when it did not, or nothing was offered.
///
/// Why the second model's guided reading too: offline over the voice corpus (`guide_probe`,
/// base q8_0, margin 256), it set right two commands neither tiny.en's readings nor base's own
/// free one had: "What's the names made?" → "What's today's date?" (0.43 nats) and "Bing me in
/// two hours about the laundry." → "Ping me …" (0.35), in 48 and 117 ms; none of the 12
/// sentences that are no command got one.
#[allow(clippy::too_many_arguments)]
async fn offer_guided(
    bus: &BusClient,
    live: &live::Live,
    events: &EventPublisher,
    t: &Transcript,
    guided: Option<guide::Guided>,
    heard: &[&str],
    stage: &str,
    started: f64,
) -> Option<Result<ming_schemas::agent::Reply, BusError>> {
    let g = guided?;
    if heard.iter().any(|h| same_words(&g.text, h)) {
        return None;
    }
    if heard.first().is_some_and(|h| drops_words(h, &g.text)) {
        tracing::info!(first = %t.text, guided = %g.text, "a guided reading that leaves out much of what was heard is not taken");
        return None;
    }
    let text = live.reroute(&g.text)?;
    let (began, ready) = hearing_span(started, g.started_ms, g.ms);
    let tg = heard_again(t, &g.text, stage, began, ready);
    events.publish(kinds::EVENT_TRANSCRIPT, &tg);
    let r = ask_agent(bus, text, tg, Tiers::NoLlm).await;
    acted(&r).then_some(r)
}

/// Whether the agent answered a reading with a question for a command's missing argument ("For
/// how long?"), not with an action.
fn asks_argument(r: &Result<ming_schemas::agent::Reply, BusError>) -> bool {
    matches!(r, Ok(r) if r.action.is_none()
        && r.awaiting.as_deref().is_some_and(|a| a != "confirmation"))
}

/// Whether the agent answered a reading without needing the LLM, and not with an error of its
/// own (not understood, refused, or the local model failed on it); a cancel, a timeout or a
/// stopped agent count as an answer.
fn acted(r: &Result<ming_schemas::agent::Reply, BusError>) -> bool {
    match r {
        Ok(r) => !r.needs_llm && r.hear_again.is_empty(),
        Err(e @ BusError::Remote { code, .. }) => *code == ErrorCode::Cancelled || e.from_broker(),
        Err(_) => true,
    }
}

/// The live input's outputs: events, barge-in, and voice turns for the agent, whose answers
/// are spoken.
///
/// Barge-in: speech that starts while an answer plays stops the playback ([`tts::Speaker`]);
/// speech that starts while a voice turn still waits for the agent cancels that request — the
/// bus cancel reaches the agent, which stops its work (and the local model's generation) — and
/// its answer, should it come, is not spoken. Both publish `audio.barge_in`.
async fn serve_live(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Output>,
    live: Arc<live::Live>,
    events: Arc<EventPublisher>,
    bus: Arc<BusClient>,
    speaker: Arc<tts::Speaker>,
    hearing: Hearing,
) {
    // Speech onsets on the live input (monotonic ms of the latest), for the turns in flight.
    let (onsets, _) = tokio::sync::watch::channel(0.0f64);
    while let Some(o) = rx.recv().await {
        if let Output::SpeechStarted(b) = &o {
            // Speaking over an answer is speaking to MingLLM (wake mode): the follow-up window
            // opens now, so the "yes" said over "Shall I go ahead?" needs no wake phrase.
            if speaker.speech_started(b.at_ms) {
                live.answered();
            }
            onsets.send_replace(b.at_ms);
        }
        publish(&events, &o);
        let Output::Final(t) = o else { continue };
        let Some(text) = live.route(&t.text) else {
            continue;
        };
        let (live, events, bus, speaker) = (
            Arc::clone(&live),
            Arc::clone(&events),
            Arc::clone(&bus),
            Arc::clone(&speaker),
        );
        let mut barge = onsets.subscribe();
        barge.mark_unchanged();
        let hearing = hearing.clone();
        tokio::spawn(async move {
            let utterance = t.utterance;
            let reply = tokio::select! {
                r = ask_agent_twice(&bus, &live, &events, hearing, text, t) => r,
                Ok(()) = barge.changed() => {
                    // Dropping the request cancels it on the bus.
                    let onset = *barge.borrow();
                    let now = mono_ms();
                    tracing::info!(utterance, "speech while the agent was working: turn cancelled");
                    events.publish(
                        kinds::EVENT_BARGE_IN,
                        &ming_schemas::audio::Speaking {
                            utterance: Some(utterance),
                            at_ms: now,
                            state: "cancelled".into(),
                            stop_latency_ms: Some(now - onset),
                        },
                    );
                    return;
                }
            };
            // An error is said too (a misheard command gets "say it again", a dead agent a
            // sentence), and opens the follow-up window like an answer.
            let answer = match reply {
                Ok(r) => r.text,
                Err(e) => match spoken_error(&e) {
                    Some(text) => text,
                    None => return,
                },
            };
            if !answer.trim().is_empty() {
                let say = Speak {
                    text: answer,
                    utterance: Some(utterance),
                    ..Default::default()
                };
                let r = tokio::task::spawn_blocking(move || speaker.speak(&say, &events)).await;
                if let Ok(Err(e)) = r {
                    tracing::warn!(error = %e, "could not speak the answer");
                }
            }
            live.answered();
        });
    }
}

impl Handler for AudioService {
    async fn handle(&self, req: Request, resp: Responder) {
        match req.kind() {
            kinds::AUDIO_TRANSCRIBE => self.transcribe(req, resp).await,
            kinds::AUDIO_SPEAK => self.speak(req, resp).await,
            kinds::AUDIO_STOP => {
                let stopped = self.speaker.stop();
                resp.reply(&ming_schemas::control::Ack {
                    message: if stopped {
                        "stopped speaking".into()
                    } else {
                        "was not speaking".into()
                    },
                });
            }
            kinds::AUDIO_LISTEN => match req.body::<Listen>() {
                Ok(l) => match self.live.listen(&l.action) {
                    Ok(state) => resp.reply(&state),
                    Err(e) => resp.error(listen_code(&e), e.to_string()),
                },
                Err(e) => resp.fail(&e),
            },
            kinds::AUDIO_DEVICES => {
                // Enumerating asks the sound system (ALSA opens its configuration): off the
                // async threads.
                let listed = tokio::task::spawn_blocking(device::list).await;
                let (devices, error) = match listed {
                    Ok(Ok(d)) => (d, None),
                    Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
                    Err(e) => (Vec::new(), Some(e.to_string())),
                };
                resp.reply(&ming_schemas::audio::Devices {
                    devices: devices
                        .into_iter()
                        .map(|d| ming_schemas::audio::AudioDevice {
                            id: d.id,
                            description: d.description,
                            input: d.input,
                            output: d.output,
                        })
                        .collect(),
                    error,
                    input: self.live.status(),
                    output: self.speaker.output_name(),
                });
            }
            kinds::AUDIO_FEED => match req.body::<Feed>() {
                Ok(f) => match self.live.feed(&f.pcm, f.rate) {
                    Ok(state) => resp.reply(&state),
                    Err(e) => resp.error(listen_code(&e), e.to_string()),
                },
                Err(e) => resp.fail(&e),
            },
            other => resp.error(
                ErrorCode::Unsupported,
                format!("audio does not handle `{other}`"),
            ),
        }
    }

    fn detail(&self) -> String {
        format!(
            "stt {} · vad silero · tts {} · output {} · frame limit {} B",
            self.engine.stt.model,
            self.speaker.engine_name(),
            self.speaker.output_name(),
            self.max_frame
        )
    }
}

/// Loads the models and serves `audio` on the bus until `shutdown` resolves or the supervisor
/// asks it to drain.
///
/// # Errors
/// [`StartError`]; `Model`, `Vad` and `Stt` mean the configuration or models must change.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    let started = Instant::now();
    let cfg2 = cfg.clone();
    let engine = tokio::task::spawn_blocking(move || load_engine(&cfg2))
        .await
        .map_err(|e| {
            StartError::Stt(SttError::Load {
                path: String::new(),
                reason: format!("startup task failed: {e}"),
            })
        })??;
    let bus = BusConfig::from_config(&cfg);
    let mut opts = WorkerOptions::from_env(SERVICE);
    opts.drain_grace = Duration::from_millis(cfg.supervisor.drain_grace_ms);
    let events = Arc::new(EventPublisher::connect(&bus, opts.service.clone())?);
    let client = Arc::new(BusClient::connect(&bus, opts.service.clone())?);
    let tts_engine = tts::Engine::from_config(&cfg.audio, &Paths::resolve(&cfg.paths).model_dir)
        .map_err(StartError::Tts)?;
    // A Piper voice loads its network in a helper process: start it now, not at the first reply.
    let warming = tts_engine.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = warming.warm() {
            tracing::warn!(error = %e, "the text-to-speech engine could not start; replies will try again");
        }
    });
    let speaker = Arc::new(tts::Speaker::new(&cfg.audio, tts_engine));
    let (live_tx, live_rx) = tokio::sync::mpsc::unbounded_channel();
    let live = live::Live::start(&engine, &cfg.audio, live_tx);
    let live_task = tokio::spawn(serve_live(
        live_rx,
        Arc::clone(&live),
        Arc::clone(&events),
        Arc::clone(&client),
        Arc::clone(&speaker),
        Hearing::new(&engine),
    ));
    tracing::info!(
        service = %opts.service,
        bus = %bus.bus_endpoint,
        sandbox = %opts.sandbox,
        stt = %engine.stt.model,
        output = %speaker.output_name(),
        load_ms = started.elapsed().as_millis() as u64,
        "starting"
    );
    let service = AudioService {
        engine,
        settings: cfg.audio.clone(),
        max_frame: cfg.bus.max_frame_bytes as usize,
        events,
        bus: client,
        speaker,
        live,
    };
    let result = run_worker(&bus, opts, Arc::new(service), shutdown).await;
    live_task.abort();
    result?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guided_reading_may_fix_words_but_not_drop_half_of_them() {
        // Rescues seen in the voice bench.
        for (first, guided) in [
            (
                "Find my note and out of the plumber.",
                "Find my note about the plumber.",
            ),
            (
                "Where's the file within shore and policy?",
                "Where's the file with insurance policy?",
            ),
            (
                "Reminds me of how it's a call, mom.",
                "Reminds me of how to call mom.",
            ),
            ("What's today's made?", "What is today?"),
            ("Time at 45 minutes.", "timer for 5 minutes"),
        ] {
            assert!(!drops_words(first, guided), "{guided}");
        }
        assert!(drops_words("What do I come on Friday?", "What's the day?"));
        assert!(drops_words(
            "Remind me to water the plants tonight at nine",
            "Remind me to water"
        ));
    }

    #[test]
    fn a_hearing_run_ahead_is_timed_when_it_ran_not_when_it_was_taken() {
        let now = mono_ms();
        // Ran ahead: began 500 ms before the turn asked, in 300 ms.
        let (began, ready) = hearing_span(now, now - 500.0, 300.0);
        assert_eq!((began, ready), (now - 500.0, now - 200.0));
        // Asked for, then run: from the ask to its reading.
        let (began, ready) = hearing_span(now - 400.0, now - 390.0, 350.0);
        assert_eq!((began, ready), (now - 400.0, now - 40.0));
        let t = Transcript {
            utterance: 7,
            text: "What's today's made?".into(),
            is_final: true,
            start_sample: 0,
            end_sample: 32_000,
            audio_start_ms: 0.0,
            audio_end_ms: 2000.0,
            end_reason: "complete".into(),
            decode_ms: 120.0,
            audio_ctx: 200,
            confidence: 0.3,
            stages: vec![],
        };
        let t2 = heard_again(&t, "What's today's date?", "second", began, ready);
        let stages: Vec<_> = t2
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.at_ms))
            .collect();
        assert_eq!(
            stages,
            [
                ("second_decode_started", now - 400.0),
                ("second_transcript", now - 40.0)
            ]
        );
        assert_eq!(t2.text, "What's today's date?");
    }

    #[test]
    fn what_is_said_when_the_agent_does_not_act() {
        let remote = |code, message: &str| BusError::Remote {
            code,
            message: message.into(),
            from: "agent".into(),
        };
        let unsure = "I heard \u{201c}What's the maze made?\u{201d} and am not sure what you want";
        assert_eq!(
            spoken_error(&remote(ErrorCode::BadRequest, unsure)).as_deref(),
            Some(unsure)
        );
        let no_llm = "I could not understand that without the local model, which failed: x";
        assert_eq!(
            spoken_error(&remote(ErrorCode::ServiceUnavailable, no_llm)).as_deref(),
            Some(no_llm)
        );
        for down in [
            "`agent` is stopped",
            "worker a1 (pid 7) stopped heartbeating",
        ] {
            let from_broker = BusError::Remote {
                code: ErrorCode::ServiceUnavailable,
                message: down.into(),
                from: "broker".into(),
            };
            assert_eq!(
                spoken_error(&from_broker).as_deref(),
                Some("The agent is not running, so I cannot act on that."),
                "{down}"
            );
        }
        assert_eq!(
            spoken_error(&remote(ErrorCode::Cancelled, "cancelled")),
            None
        );
        let late = BusError::Timeout {
            target: "agent".into(),
            waited_ms: 30_000,
        };
        assert!(spoken_error(&late).is_some_and(|t| t.contains("in time")));
    }
}
