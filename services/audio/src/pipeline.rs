//! One audio stream → speech boundaries, partial transcripts and final transcripts.
//!
//! Audio at the source's rate is resampled to 16 kHz, cut into 32 ms frames, scored by the VAD
//! and fed to the [`TurnDetector`]. While the user speaks, the growing utterance is re-decoded
//! every `partial_interval_ms` (partials). The moment the voice pauses, the utterance up to the
//! pause is decoded *speculatively*: if the turn then ends at that pause — after the hangover,
//! or sooner because that transcript reads as a complete command — the speculative decode is
//! the final transcript and nothing is left to decode; if the user goes on, it was a partial.
//! Silero's probability falls 15–130 ms after the voice stops, so in real time that decode
//! starts sooner still: once the sound itself has been quiet for `early_decode_ms`; the pause
//! Silero then finds at that spot takes the decode over (and voice coming back aborts it).
//!
//! Decodes run on the STT thread. In real-time use ([`Mode::Live`]) the pipeline never waits
//! for them: results come back as [`Input::Stt`]. Reading a file as fast as possible
//! ([`Mode::Batch`]) waits for each decode where it is asked for, so the result is the same as
//! a live run would give on a machine fast enough.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use ming_schemas::audio::{Boundary, Stage, Transcript};

use crate::guide::{GuideCache, Guided};
use crate::mono_ms;
use crate::resample::Resampler;
use crate::stt::{Decoded, Job, Samples, Stt, SttError};
use crate::turn::{
    reads_complete, strands_a_preposition, Reading, TurnConfig, TurnDetector, TurnEvent,
};
use crate::vad::{SileroModel, Vad, FRAME};

/// The audio of the latest finished turns, kept for hearing them again (see
/// `audio.stt_guide` and `audio.stt_second_model`): utterance id → the 16 kHz samples its final
/// reading was decoded from (its start less the pre-roll, to its end and the little after it
/// the decode saw). Shared between the pipeline's thread, which puts, and whoever takes.
/// With the guide, the guided readings searched ahead of need go here too (see
/// [`Pipeline::with_guide`]).
#[derive(Clone, Default)]
pub struct TurnAudio(Arc<Mutex<Kept>>);

#[derive(Default)]
struct Kept {
    /// Finished turns: utterance id and audio.
    turns: VecDeque<(u64, Samples)>,
    /// Guided searches started ahead of need, by the samples they read, with their abort flags.
    ahead: VecDeque<(Samples, Ahead, Arc<AtomicBool>)>,
    /// Second hearings started ahead of need (after a guided search ahead), by the samples they
    /// read, with their abort flags.
    second: VecDeque<(Samples, AheadSecond, Arc<AtomicBool>)>,
}

/// A second hearing started ahead of need: `None` until it is decided; then `Ok` with the
/// second model's reading (and its own guided reading, when its free one is no command), or
/// `Err` when it did not run to the end (it or the guided search before it was aborted, or it
/// failed): the turn is then heard again as before.
pub type AheadSecond = tokio::sync::watch::Receiver<Option<Result<Decoded, ()>>>;

/// A guided search run ahead of need: `None` while it runs; then `Ok` with its reading (`None`
/// when the guide found none within its limits), or `Err` when it did not finish (aborted for
/// a newer decode, or failed): the reading is then still to be searched.
pub type Ahead = tokio::sync::watch::Receiver<Option<Result<Option<Guided>, ()>>>;

impl TurnAudio {
    /// Turns kept: a turn's audio is taken within seconds of its final, or not at all.
    const KEEP: usize = 4;

    fn put(&self, utterance: u64, samples: Samples) {
        if let Ok(mut k) = self.0.lock() {
            if k.turns.len() == Self::KEEP {
                k.turns.pop_front();
            }
            k.turns.push_back((utterance, samples));
        }
    }

    fn put_ahead(&self, samples: Samples, ahead: Ahead, abort: Arc<AtomicBool>) {
        if let Ok(mut k) = self.0.lock() {
            if k.ahead.len() == Self::KEEP {
                k.ahead.pop_front();
            }
            k.ahead.push_back((samples, ahead, abort));
        }
    }

    fn put_second(&self, samples: Samples, second: AheadSecond, abort: Arc<AtomicBool>) {
        if let Ok(mut k) = self.0.lock() {
            if k.second.len() == Self::KEEP {
                k.second.pop_front();
            }
            k.second.push_back((samples, second, abort));
        }
    }

    /// Takes the second hearing started ahead on these very samples, if there was one.
    pub fn take_second(&self, samples: &Samples) -> Option<AheadSecond> {
        let mut k = self.0.lock().ok()?;
        let i = k.second.iter().position(|(s, _, _)| s.same(samples))?;
        k.second.remove(i).map(|(_, a, _)| a)
    }

    /// Takes the audio of `utterance`, if it is still kept.
    pub fn take(&self, utterance: u64) -> Option<Samples> {
        let mut k = self.0.lock().ok()?;
        let i = k.turns.iter().position(|(u, _)| *u == utterance)?;
        k.turns.remove(i).map(|(_, a)| a)
    }

    /// Takes the guided search started ahead on these very samples, if there was one.
    pub fn take_ahead(&self, samples: &Samples) -> Option<Ahead> {
        let mut k = self.0.lock().ok()?;
        let i = k.ahead.iter().position(|(s, _, _)| s.same(samples))?;
        k.ahead.remove(i).map(|(_, a, _)| a)
    }

    /// Stops the guided search and the second hearing started ahead on these samples, if they
    /// still run: the agent acted on a reading of the turn, and the CPU is the next turn's (or
    /// the reply's).
    pub fn drop_ahead(&self, samples: &Samples) {
        let Ok(mut k) = self.0.lock() else { return };
        if let Some(i) = k.ahead.iter().position(|(s, _, _)| s.same(samples)) {
            if let Some((_, _, abort)) = k.ahead.remove(i) {
                abort.store(true, Ordering::Relaxed);
            }
        }
        if let Some(i) = k.second.iter().position(|(s, _, _)| s.same(samples)) {
            if let Some((_, _, abort)) = k.second.remove(i) {
                abort.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// Frames of history kept before the frame being scored beyond the pre-roll, while no turn is
/// open: the frames the VAD needs to call a start plus the look-back of `refine_start`, with room.
const LOOKBACK_FRAMES: u64 = 8;

/// Settings (from `[audio]`).
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub turn: TurnConfig,
    /// Audio kept before the detected start (Silero needs a frame or two to be sure).
    pub preroll_ms: u32,
    /// New audio between two partial decodes while the user speaks (0: no partials).
    pub partial_interval_ms: u32,
    /// Quiet sound (ms) after which the speculative decode starts while Silero still says
    /// speech (live only); 0: at Silero's pause.
    pub early_decode_ms: u32,
    /// Encoder frames added to the audio's own length.
    pub ctx_margin: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            turn: TurnConfig::default(),
            preroll_ms: 192,
            partial_interval_ms: 600,
            early_decode_ms: 48,
            ctx_margin: 96,
        }
    }
}

/// How decodes are scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Real time: never wait for a decode.
    Live,
    /// As fast as possible: wait for each decode; `partials` says whether partials are wanted.
    Batch { partials: bool },
}

/// What the pipeline takes.
pub enum Input {
    /// Samples at the source's rate, mono.
    Audio(Vec<f32>),
    /// A decode finished.
    Stt(JobResult),
    /// Push-to-talk released: close the turn now.
    Stop,
    /// The source ended.
    End,
}

/// What the pipeline gives.
#[derive(Debug, Clone)]
pub enum Output {
    SpeechStarted(Boundary),
    SpeechEnded(Boundary),
    Partial(Transcript),
    Final(Transcript),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Partial,
    /// Up to a pause; becomes the final if the turn ends there.
    Speculative,
    Final,
}

pub struct JobResult {
    id: u64,
    result: Result<Decoded, SttError>,
}

struct InFlight {
    id: u64,
    kind: JobKind,
    utterance: u64,
    end: u64,
    abort: Arc<AtomicBool>,
}

struct Turn {
    utterance: u64,
    start: u64,
    stages: Vec<Stage>,
    /// Audio position the last partial covered.
    last_partial: u64,
    /// A speculative transcript up to a pause at this sample.
    spec: Option<(u64, Decoded)>,
    /// The speculative decode started where the sound stopped, before Silero paused.
    early: Option<Early>,
    /// The turn is over; waiting for the decode that covers `end`.
    ended: Option<(u64, &'static str)>,
}

/// Where the sound of an utterance stopped while Silero still said speech, and the level
/// that counted as voice there (louder audio after it means the user went on).
#[derive(Debug, Clone, Copy)]
struct Early {
    end: u64,
    level: f32,
}

/// How far apart (samples) the sound's end and the end refined from Silero's pause may be for
/// the pause to take over the early decode: three 10 ms windows.
const EARLY_SLACK: u64 = 480;
/// Speech shorter than this (samples) starts no early decode: 160 ms.
const EARLY_MIN_SPEECH: u64 = 2560;
/// Silero's probability at or above which no early decode starts. Through the closure of a
/// stop consonant inside a word it stays on its plateau (≥ 0.9995) though the sound is quiet;
/// where speech really ended it has begun to fall by then (0.51–0.99 in the latency bench's
/// 20 commands, whose quiet stops set off 27 decodes in vain without this check, 6 with it).
const EARLY_MAX_P: f32 = 0.998;
/// How far back (samples) the sound's level is judged: 480 ms.
const EARLY_LOOK: u64 = 7680;

pub struct Pipeline {
    cfg: PipelineConfig,
    mode: Mode,
    vad: Vad,
    turn: TurnDetector,
    stt: Stt,
    resampler: Resampler,
    /// 16 kHz samples not yet scored, starting at `pending_at`.
    pending: Vec<f32>,
    pending_at: u64,
    /// 16 kHz audio kept for decoding, starting at `hist_at`.
    hist: VecDeque<f32>,
    hist_at: u64,
    /// Hands out utterance ids (shared by every pipeline of the service).
    utterances: Arc<AtomicU64>,
    /// The turn being spoken.
    cur: Option<Turn>,
    /// A turn that is over, waiting for its final decode.
    ending: Option<Turn>,
    /// Decodes queued on the STT thread, oldest first.
    inflight: Vec<InFlight>,
    next_job: u64,
    results: mpsc::Sender<Input>,
    /// Whether turns are transcribed at all (live input when nobody listens: boundaries only,
    /// for barge-in, and finals with no text).
    armed: Arc<AtomicBool>,
    /// Where a finished turn's audio goes (live input with a second model), if anywhere.
    turn_audio: Option<TurnAudio>,
    /// The guide, for searching a pause's reading ahead of need (live input, with `turn_audio`).
    guide: Option<Arc<GuideCache>>,
    /// The second model and its margin, for hearing a pause ahead of need when the guided
    /// search ahead found nothing.
    second: Option<(Stt, u32)>,
    /// Guided searches started ahead and maybe still running: a newer decode aborts them.
    ahead: Vec<Arc<AtomicBool>>,
    /// Milliseconds spent decoding (for the real-time factor).
    pub stt_ms: f64,
    /// 16 kHz samples taken in.
    pub samples: u64,
}

impl Pipeline {
    /// A pipeline for a source of `rate` Hz; live decode results are sent to `results`.
    pub fn new(
        cfg: PipelineConfig,
        mode: Mode,
        vad: Arc<SileroModel>,
        stt: Stt,
        rate: u32,
        utterances: Arc<AtomicU64>,
        results: mpsc::Sender<Input>,
    ) -> Self {
        Self {
            turn: TurnDetector::new(cfg.turn.clone()),
            cfg,
            mode,
            vad: Vad::new(vad),
            stt,
            resampler: Resampler::new(rate, 16_000),
            pending: Vec::new(),
            pending_at: 0,
            hist: VecDeque::new(),
            hist_at: 0,
            utterances,
            cur: None,
            ending: None,
            inflight: Vec::new(),
            next_job: 1,
            results,
            armed: Arc::new(AtomicBool::new(true)),
            turn_audio: None,
            guide: None,
            second: None,
            ahead: Vec::new(),
            stt_ms: 0.0,
            samples: 0,
        }
    }

    /// Shares the switch that says whether turns are transcribed.
    pub fn with_armed(mut self, armed: Arc<AtomicBool>) -> Self {
        self.armed = armed;
        self
    }

    /// Keeps each finished turn's audio in `turn_audio`.
    pub fn with_turn_audio(mut self, turn_audio: TurnAudio) -> Self {
        self.turn_audio = Some(turn_audio);
        self
    }

    /// Searches the guided reading of a pause's speculative transcript as soon as it is in, when
    /// the guide (once compiled) does not know it as a command: the search runs while the turn
    /// waits out its hangover, and its result goes to `turn_audio` (see
    /// [`TurnAudio::take_ahead`]) for when the agent cannot act on the first reading. A newer
    /// decode aborts it. With `second` (the second model and its margin), the search goes on to
    /// the second model's hearing of the same samples — its free reading and, when that is no
    /// command, its guided one — kept the same way ([`TurnAudio::take_second`]): when the search
    /// finds nothing, and also when it finds a reading, which the agent may still not take ("Note
    /// on November 10, December" for "Note down the dentist number." is free text never heard).
    pub fn with_guide(mut self, guide: Arc<GuideCache>, second: Option<(Stt, u32)>) -> Self {
        self.guide = Some(guide);
        self.second = second;
        self
    }

    /// Starts the guided search of `d`'s samples, whose encoder output the STT thread has just
    /// left in its state (see `with_guide`).
    fn search_ahead(&mut self, d: &Decoded) {
        let (Some(cache), Some(keep)) = (&self.guide, &self.turn_audio) else {
            return;
        };
        let Some(guide) = cache.get() else { return };
        if d.text.is_empty() || guide.accepts(&d.text) {
            return;
        }
        let (tx, rx) = tokio::sync::watch::channel(None);
        let abort = Arc::new(AtomicBool::new(false));
        // The second hearing, decided when the search is done (on the STT thread).
        let (tx2, rx2) = tokio::sync::watch::channel(None);
        let abort2 = Arc::new(AtomicBool::new(false));
        let first = self.stt.clone();
        let then = self.second.clone().map(|(stt, margin)| {
            (
                stt,
                margin,
                Arc::clone(&guide),
                cache.limits,
                Arc::clone(&abort2),
            )
        });
        let chained = then.is_some();
        let job = Job {
            samples: d.audio.clone(),
            ctx_margin: self.cfg.ctx_margin,
            abort: Arc::clone(&abort),
            guide: Some((guide, cache.limits)),
            judge: None,
            done: Box::new(move |r| {
                let found = r.map(|d| (d.guided.clone(), d));
                if let Some((stt, margin, guide, limits, abort2)) = then {
                    match &found {
                        Ok((_, d)) => {
                            let tx3 = tx2.clone();
                            let job = Job {
                                samples: d.audio.clone(),
                                ctx_margin: margin,
                                abort: abort2,
                                guide: Some((guide, limits)),
                                // The first model has just searched these samples: its
                                // state holds their encoder output to judge with.
                                judge: Some(first),
                                done: Box::new(move |r| {
                                    let _ = tx3.send(Some(r.map_err(|_| ())));
                                }),
                            };
                            if stt.submit(job).is_err() {
                                let _ = tx2.send(Some(Err(())));
                            }
                        }
                        _ => {
                            let _ = tx2.send(Some(Err(())));
                        }
                    }
                }
                let _ = tx.send(Some(found.map(|(g, _)| g).map_err(|_| ())));
            }),
        };
        if self.stt.submit(job).is_ok() {
            self.ahead.push(Arc::clone(&abort));
            keep.put_ahead(d.audio.clone(), rx, abort);
            if chained {
                self.ahead.push(Arc::clone(&abort2));
                keep.put_second(d.audio.clone(), rx2, abort2);
            }
        }
    }

    /// Aborts the guided searches started ahead (a newer decode needs the STT thread).
    fn abort_ahead(&mut self) {
        for a in self.ahead.drain(..) {
            a.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a turn is open (speech, or a pause inside the hangover, or a pending final).
    pub fn in_turn(&self) -> bool {
        self.cur.is_some() || self.ending.is_some()
    }

    /// Takes one input; what it produced is appended to `out`.
    pub fn handle(&mut self, input: Input, out: &mut Vec<Output>) {
        match input {
            Input::Audio(samples) => {
                let mut s16 = Vec::with_capacity(samples.len());
                self.resampler.push(&samples, &mut s16);
                self.take(&s16, out);
            }
            Input::Stt(r) => self.on_result(r, out),
            Input::Stop => {
                let at = self.pending_at;
                if let Some(ev) = self.turn.stop(at) {
                    self.on_turn(ev, at, out);
                }
            }
            Input::End => {
                let mut s16 = Vec::new();
                self.resampler.finish(&mut s16);
                self.take(&s16, out);
                // Score the last partial frame, padded with silence.
                if !self.pending.is_empty() {
                    let n = self.pending.len();
                    let mut frame = [0.0f32; FRAME];
                    frame[..n].copy_from_slice(&self.pending);
                    let at = self.pending_at;
                    self.pending.clear();
                    self.pending_at += n as u64;
                    let p = self.vad.frame(&frame);
                    let reading = self.complete_hint();
                    if let Some(ev) = self.turn.frame(at, p, reading) {
                        self.on_turn(ev, at + FRAME as u64, out);
                    }
                }
                let at = self.pending_at;
                if let Some(ev) = self.turn.finish(at) {
                    self.on_turn(ev, at, out);
                }
            }
        }
    }

    fn take(&mut self, s16: &[f32], out: &mut Vec<Output>) {
        self.samples += s16.len() as u64;
        self.hist.extend(s16.iter().copied());
        self.pending.extend_from_slice(s16);
        let mut off = 0;
        while self.pending.len() - off >= FRAME {
            let mut frame = [0.0f32; FRAME];
            frame.copy_from_slice(&self.pending[off..off + FRAME]);
            off += FRAME;
            let at = self.pending_at;
            self.pending_at += FRAME as u64;
            let p = self.vad.frame(&frame);
            let reading = self.complete_hint();
            if let Some(ev) = self.turn.frame(at, p, reading) {
                self.on_turn(ev, at + FRAME as u64, out);
            }
            self.maybe_early(at + FRAME as u64, out);
            self.maybe_partial(out);
        }
        self.pending.drain(..off);
        // The sound's level is known to the last sample received, not only to the last whole
        // VAD frame (32 ms): the early decode need not wait for the next frame to start.
        if !self.pending.is_empty() {
            self.maybe_early(self.pending_at + self.pending.len() as u64, out);
        }
        self.trim_history();
    }

    /// What the speculative transcript up to the current pause says about the turn's end.
    fn complete_hint(&self) -> Reading {
        let spec = match (&self.cur, self.turn.paused_at()) {
            (Some(t), Some(pause)) => t.spec.as_ref().filter(|(end, _)| *end == pause),
            _ => None,
        };
        let pending = || {
            let (Some(t), Some(pause)) = (&self.cur, self.turn.paused_at()) else {
                return false;
            };
            self.inflight.iter().any(|j| {
                j.kind == JobKind::Speculative && j.utterance == t.utterance && j.end == pause
            })
        };
        match spec {
            None if pending() => Reading::Pending,
            None => Reading::Unknown,
            // A last word whisper is unsure of is often one it made up for audio that stops
            // mid-sentence ("add eggs and …" read as "I'll be accent", p 0.11) — and as often
            // the true last word of a voice whisper hears badly: a wait between the two.
            Some((_, d)) if reads_complete(&d.text) => {
                if d.last_word_p >= SURE_LAST_WORD {
                    Reading::Complete
                } else {
                    Reading::Unsure
                }
            }
            // "Do you remember what I'm allergic to": whole, or a pause before "… my car".
            Some((_, d)) if strands_a_preposition(&d.text) => Reading::Unsure,
            Some(_) => Reading::Unfinished,
        }
    }

    fn preroll(&self) -> u64 {
        u64::from(self.cfg.preroll_ms) * 16
    }

    fn trim_history(&mut self) {
        // A turn whose final is still pending keeps its audio too: should the speculative
        // decode it waits on be aborted, the final is decoded from it (trimming it made that
        // final empty — seen once in CI's barge-in test).
        let keep_from = match self.ending.as_ref().or(self.cur.as_ref()) {
            Some(t) => t.start.saturating_sub(self.preroll()),
            // No turn yet: one may start in the frames already scored, and its start is then
            // moved back to where the sound begins (up to three frames) — its pre-roll must
            // still be here. Trimming at the pre-roll alone cut 28 ms of the 192 off a live
            // turn's lead-in, and whisper reads a command differently for less ("What do I
            // have on Friday?" heard as "… come …" by base).
            None => self
                .pending_at
                .saturating_sub(self.preroll() + LOOKBACK_FRAMES * FRAME as u64),
        };
        while self.hist_at < keep_from && !self.hist.is_empty() {
            self.hist.pop_front();
            self.hist_at += 1;
        }
    }

    fn audio(&self, from: u64, to: u64) -> Vec<f32> {
        let a = from.max(self.hist_at).saturating_sub(self.hist_at) as usize;
        let b = (to.saturating_sub(self.hist_at) as usize).min(self.hist.len());
        self.hist.range(a.min(b)..b).copied().collect()
    }

    /// Levels (RMS) of the 10 ms windows in `[from, to)`, with their starts.
    fn levels(&self, from: u64, to: u64) -> Vec<(u64, f32)> {
        const HOP: u64 = 160;
        let from = from.max(self.hist_at);
        (0..)
            .map(|i| from + i * HOP)
            .take_while(|&a| a + HOP <= to)
            .map(|a| {
                let w = self.audio(a, a + HOP);
                let e = (w.iter().map(|x| x * x).sum::<f32>() / w.len().max(1) as f32).sqrt();
                (a, e)
            })
            .collect()
    }

    /// The level that counts as voice near a boundary: 30 dB under the loudest window there,
    /// and well above the quietest (the noise floor).
    fn voice_level(levels: &[(u64, f32)]) -> f32 {
        let peak = levels.iter().map(|r| r.1).fold(0.0f32, f32::max);
        let floor = levels.iter().map(|r| r.1).fold(f32::INFINITY, f32::min);
        (peak * 0.03).max(floor * 4.0).max(1e-4)
    }

    /// Silero's probability rises a frame or so after the voice starts and falls a frame or
    /// three after it stops; the sound itself says where: the first (last) 10 ms window loud
    /// enough to be voice near the frame the VAD named.
    fn refine_start(&self, start: u64) -> u64 {
        let f = FRAME as u64;
        let levels = self.levels(start.saturating_sub(3 * f), start + 2 * f);
        let thr = Self::voice_level(&levels);
        levels.iter().find(|r| r.1 >= thr).map_or(start, |r| r.0)
    }

    fn refine_end(&self, pause: u64) -> u64 {
        let f = FRAME as u64;
        let levels = self.levels(pause.saturating_sub(5 * f), pause + f);
        let thr = Self::voice_level(&levels);
        levels
            .iter()
            .rev()
            .find(|r| r.1 >= thr)
            .map_or(pause, |r| (r.0 + 160).min(pause + f))
    }

    fn boundary(&self, utterance: u64, sample: u64) -> Boundary {
        Boundary {
            utterance,
            sample,
            audio_ms: sample as f64 / 16.0,
            at_ms: mono_ms(),
        }
    }

    fn on_turn(&mut self, ev: TurnEvent, now: u64, out: &mut Vec<Output>) {
        match ev {
            TurnEvent::Started { sample } => {
                let sample = self.refine_start(sample);
                let utterance = self.utterances.fetch_add(1, Ordering::Relaxed);
                let b = self.boundary(utterance, sample);
                self.cur = Some(Turn {
                    utterance,
                    start: sample,
                    stages: vec![Stage {
                        name: "speech_started".into(),
                        at_ms: b.at_ms,
                    }],
                    last_partial: sample,
                    spec: None,
                    early: None,
                    ended: None,
                });
                out.push(Output::SpeechStarted(b));
            }
            TurnEvent::Paused { sample } => {
                let sample = self.refine_end(sample);
                let early = self.cur.as_ref().and_then(|t| t.early).map(|e| e.end);
                match early.filter(|e| e.abs_diff(sample) <= EARLY_SLACK) {
                    // The decode that started where the sound stopped covers this pause.
                    Some(end) => self.turn.set_pause(end),
                    None => {
                        self.drop_early();
                        self.turn.set_pause(sample);
                        // Decode what was said up to here, in case this pause ends the turn.
                        self.submit(JobKind::Speculative, sample, now, out);
                    }
                }
            }
            TurnEvent::Resumed => {
                self.abort_ahead();
                if let Some(t) = self.cur.as_mut() {
                    t.spec = None;
                    t.early = None;
                }
            }
            TurnEvent::Ended { sample, reason } => {
                let Some(mut t) = self.cur.take() else { return };
                t.ended = Some((sample, reason));
                let b = self.boundary(t.utterance, sample);
                t.stages.push(Stage {
                    name: "speech_ended".into(),
                    at_ms: b.at_ms,
                });
                out.push(Output::SpeechEnded(b));
                let covered = self.inflight.iter().any(|j| {
                    j.utterance == t.utterance && j.kind == JobKind::Speculative && j.end == sample
                });
                match t.spec.take() {
                    Some((end, d)) if end == sample => {
                        self.ending = Some(t);
                        self.finish_turn(d, out);
                    }
                    _ if covered => self.ending = Some(t),
                    _ => {
                        let samples = self.utterance_audio(t.start, now);
                        self.ending = Some(t);
                        self.submit_samples(JobKind::Final, sample, samples, out);
                    }
                }
            }
        }
    }

    /// In real time, while Silero still says speech: starts the speculative decode once the
    /// sound has been quiet for `early_decode_ms`, and aborts it if the voice comes back.
    fn maybe_early(&mut self, now: u64, out: &mut Vec<Output>) {
        let quiet = u64::from(self.cfg.early_decode_ms) * 16;
        if quiet == 0 || self.mode != Mode::Live || !self.turn.speaking() {
            return;
        }
        let Some(t) = self.cur.as_ref().filter(|t| t.ended.is_none()) else {
            return;
        };
        if let Some(e) = t.early {
            if self.levels(e.end, now).iter().any(|r| r.1 >= e.level) {
                self.drop_early();
            }
            return;
        }
        if now < t.start + EARLY_MIN_SPEECH || self.turn.last_p() >= EARLY_MAX_P {
            return;
        }
        let levels = self.levels(now.saturating_sub(EARLY_LOOK).max(t.start), now);
        let level = Self::voice_level(&levels);
        let Some(last) = levels.iter().rev().find(|r| r.1 >= level) else {
            return;
        };
        let end = last.0 + 160;
        if now.saturating_sub(end) < quiet {
            return;
        }
        if let Some(t) = self.cur.as_mut() {
            t.early = Some(Early { end, level });
        }
        self.submit(JobKind::Speculative, end, now, out);
    }

    /// Forgets the early decode of the turn being spoken, aborting it if it still runs.
    fn drop_early(&mut self) {
        let Some(t) = self.cur.as_mut() else { return };
        let Some(e) = t.early.take() else { return };
        if t.spec.as_ref().is_some_and(|(end, _)| *end == e.end) {
            t.spec = None;
        }
        let utterance = t.utterance;
        for j in &self.inflight {
            if j.utterance == utterance && j.kind == JobKind::Speculative && j.end == e.end {
                j.abort.store(true, Ordering::Relaxed);
            }
        }
    }

    fn maybe_partial(&mut self, out: &mut Vec<Output>) {
        let interval = u64::from(self.cfg.partial_interval_ms) * 16;
        let wanted = match self.mode {
            Mode::Live => true,
            Mode::Batch { partials } => partials,
        };
        if interval == 0 || !wanted || !self.inflight.is_empty() || self.turn.paused_at().is_some()
        {
            return;
        }
        let Some(t) = &self.cur else { return };
        if t.ended.is_some() || self.pending_at < t.last_partial + interval {
            return;
        }
        let now = self.pending_at;
        if let Some(t) = self.cur.as_mut() {
            t.last_partial = now;
        }
        self.submit(JobKind::Partial, now, now, out);
    }

    /// Decodes the current utterance from its start (less the pre-roll) to `end`, with audio
    /// up to `upto` (a little silence after a pause helps).
    fn submit(&mut self, kind: JobKind, end: u64, upto: u64, out: &mut Vec<Output>) {
        let Some(t) = &self.cur else { return };
        let samples = self.utterance_audio(t.start, upto.max(end));
        self.submit_samples(kind, end, samples, out);
    }

    /// The audio of an utterance from `start` less the pre-roll; speech at the very start of
    /// the source gets the pre-roll as silence (whisper misreads a first word with no lead-in).
    fn utterance_audio(&self, start: u64, to: u64) -> Vec<f32> {
        let preroll = self.preroll();
        let mut v = vec![0.0; preroll.saturating_sub(start) as usize];
        v.extend(self.audio(start.saturating_sub(preroll), to));
        v
    }

    /// Queues a decode for the turn being spoken (partials, speculative) or the one ending
    /// (final). Partials still queued are aborted: a newer decode makes them stale.
    fn submit_samples(
        &mut self,
        kind: JobKind,
        end: u64,
        samples: Vec<f32>,
        out: &mut Vec<Output>,
    ) {
        let turn = if kind == JobKind::Final {
            self.ending.as_mut()
        } else {
            self.cur.as_mut()
        };
        let Some(t) = turn else { return };
        let utterance = t.utterance;
        if !self.armed.load(Ordering::Relaxed) {
            if kind == JobKind::Final {
                self.finish_turn(empty(), out);
            }
            return;
        }
        t.stages.push(Stage {
            name: format!("decode_started:{}", kind_name(kind)),
            at_ms: mono_ms(),
        });
        self.abort_ahead();
        for j in &self.inflight {
            if j.kind == JobKind::Partial
                || (j.kind == JobKind::Speculative
                    && j.utterance == utterance
                    && kind != JobKind::Partial)
            {
                j.abort.store(true, Ordering::Relaxed);
            }
        }
        if samples.is_empty() {
            if kind == JobKind::Final {
                self.finish_turn(empty(), out);
            }
            return;
        }
        let id = self.next_job;
        self.next_job += 1;
        let abort = Arc::new(AtomicBool::new(false));
        self.inflight.push(InFlight {
            id,
            kind,
            utterance,
            end,
            abort: Arc::clone(&abort),
        });
        match self.mode {
            Mode::Batch { .. } => {
                let result = self.stt.decode_blocking(samples, self.cfg.ctx_margin);
                self.on_result(JobResult { id, result }, out);
            }
            Mode::Live => {
                let tx = self.results.clone();
                let job = Job {
                    samples: Samples::new(samples),
                    ctx_margin: self.cfg.ctx_margin,
                    abort,
                    guide: None,
                    judge: None,
                    done: Box::new(move |result| {
                        let _ = tx.send(Input::Stt(JobResult { id, result }));
                    }),
                };
                if let Err(e) = self.stt.submit(job) {
                    self.on_result(JobResult { id, result: Err(e) }, out);
                }
            }
        }
    }

    fn on_result(&mut self, r: JobResult, out: &mut Vec<Output>) {
        let Some(i) = self.inflight.iter().position(|j| j.id == r.id) else {
            return;
        };
        let job = self.inflight.remove(i);
        let decoded = match r.result {
            Ok(d) => {
                self.stt_ms += d.decode_ms;
                Some(d)
            }
            Err(SttError::Aborted) => None,
            Err(e) => {
                tracing::warn!(error = %e, utterance = job.utterance, "decode failed");
                None
            }
        };
        let ends_turn = self.ending.as_ref().is_some_and(|t| {
            t.utterance == job.utterance && t.ended.is_some_and(|(end, _)| end == job.end)
        });
        if ends_turn {
            match decoded {
                Some(d) => self.finish_turn(d, out),
                // A speculative decode aborted or failed: decode the final after all.
                None if job.kind != JobKind::Final => {
                    let samples = self
                        .ending
                        .as_ref()
                        .map_or_else(Vec::new, |t| self.utterance_audio(t.start, job.end));
                    self.submit_samples(JobKind::Final, job.end, samples, out);
                }
                // The final itself failed: an empty transcript rather than a turn that never ends.
                None => self.finish_turn(empty(), out),
            }
            return;
        }
        let Some(d) = decoded else { return };
        let Some(t) = self.cur.as_ref().filter(|t| t.utterance == job.utterance) else {
            return;
        };
        out.push(Output::Partial(self.transcript(t, &d, job.end, false, "")));
        if job.kind != JobKind::Speculative {
            return;
        }
        let paused_here = self.turn.paused_at() == Some(job.end);
        // An early decode that finishes before Silero pauses is kept for that pause.
        let early_here = t.early.is_some_and(|e| e.end == job.end);
        if !(paused_here || early_here) {
            return;
        }
        if self.mode == Mode::Live {
            self.search_ahead(&d);
        }
        if let Some(t) = self.cur.as_mut() {
            t.spec = Some((job.end, d));
        }
        if paused_here {
            let reading = self.complete_hint();
            if let Some(ev) = self.turn.recheck(reading) {
                let now = self.pending_at;
                self.on_turn(ev, now, out);
            }
        }
    }

    fn transcript(
        &self,
        t: &Turn,
        d: &Decoded,
        end: u64,
        is_final: bool,
        reason: &str,
    ) -> Transcript {
        Transcript {
            utterance: t.utterance,
            text: d.text.clone(),
            is_final,
            start_sample: t.start,
            end_sample: end,
            audio_start_ms: t.start as f64 / 16.0,
            audio_end_ms: end as f64 / 16.0,
            end_reason: reason.into(),
            decode_ms: d.decode_ms,
            audio_ctx: d.audio_ctx,
            confidence: d.min_word_p,
            stages: t.stages.clone(),
        }
    }

    fn finish_turn(&mut self, d: Decoded, out: &mut Vec<Output>) {
        let Some(mut t) = self.ending.take() else {
            return;
        };
        let Some((end, reason)) = t.ended else { return };
        t.stages.push(Stage {
            name: "transcript".into(),
            at_ms: mono_ms(),
        });
        for j in self.inflight.iter().filter(|j| j.utterance == t.utterance) {
            j.abort.store(true, Ordering::Relaxed);
        }
        if let Some(keep) = &self.turn_audio {
            if !d.text.is_empty() {
                keep.put(t.utterance, d.audio.clone());
            }
        }
        out.push(Output::Final(self.transcript(&t, &d, end, true, reason)));
        self.trim_history();
    }
}

/// The decoder's probability for the last word below which a transcript that reads as
/// complete is not taken as an early end of the turn (measured with `cargo bench -p ming-audio
/// --bench latency`: made-up completions at a pause scored 0.11–0.37; most real ends 0.7–0.99 —
/// but 13 of the voice bench's 54 in espeak-ng's four voices scored under 0.5: such a reading
/// waits `unsure_hangover_ms`).
const SURE_LAST_WORD: f32 = 0.5;

fn empty() -> Decoded {
    Decoded {
        text: String::new(),
        audio_ctx: 0,
        decode_ms: 0.0,
        started_ms: 0.0,
        last_word_p: 1.0,
        min_word_p: 1.0,
        guided: None,
        audio: Samples::default(),
    }
}

fn kind_name(k: JobKind) -> &'static str {
    match k {
        JobKind::Partial => "partial",
        JobKind::Speculative => "speculative",
        JobKind::Final => "final",
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use ming_config::{Config, LoadOptions};

    use super::*;

    /// A search and a second hearing run ahead on a turn the agent acted on are stopped and
    /// forgotten; those on other samples are left alone.
    #[test]
    fn a_search_ahead_is_stopped_when_its_turn_needs_it_no_more() {
        let keep = TurnAudio::default();
        let (a, b) = (Samples::new(vec![0.1; 160]), Samples::new(vec![0.1; 160]));
        let flag = || Arc::new(AtomicBool::new(false));
        let (flag_a, flag_b, second_a, second_b) = (flag(), flag(), flag(), flag());
        let (_tx_a, rx_a) = tokio::sync::watch::channel(None);
        let (_tx_b, rx_b) = tokio::sync::watch::channel(None);
        let (_tx2_a, rx2_a) = tokio::sync::watch::channel(None);
        let (_tx2_b, rx2_b) = tokio::sync::watch::channel(None);
        keep.put_ahead(a.clone(), rx_a, Arc::clone(&flag_a));
        keep.put_ahead(b.clone(), rx_b, Arc::clone(&flag_b));
        keep.put_second(a.clone(), rx2_a, Arc::clone(&second_a));
        keep.put_second(b.clone(), rx2_b, Arc::clone(&second_b));
        keep.drop_ahead(&a);
        assert!(flag_a.load(Ordering::Relaxed));
        assert!(second_a.load(Ordering::Relaxed));
        assert!(!flag_b.load(Ordering::Relaxed));
        assert!(!second_b.load(Ordering::Relaxed));
        assert!(keep.take_ahead(&a).is_none());
        assert!(keep.take_second(&a).is_none());
        assert!(keep.take_ahead(&b).is_some());
        // The search taken, its turn's second hearing is still there to be stopped (the turn
        // was answered by the guided reading).
        keep.drop_ahead(&b);
        assert!(second_b.load(Ordering::Relaxed));
        assert!(keep.take_second(&b).is_none());
    }

    /// In real time the speculative decode starts where the sound stops, not where Silero's
    /// probability falls (15–130 ms later), and the pause Silero then finds takes it over:
    /// one decode, started within `early_decode_ms` and a block of input of the true end of
    /// speech, makes the final. Real models, espeak-ng speech fed in 20 ms blocks.
    #[test]
    fn the_speculative_decode_starts_where_the_sound_stops_and_becomes_the_final() {
        let cfg = Config::load(&LoadOptions {
            file: None,
            skip_system_and_user: true,
        })
        .expect("default config");
        let engine = crate::load_engine(&cfg).expect("the audio models (run `just models`)");
        let early_ms = u64::from(cfg.audio.early_decode_ms);
        assert!(early_ms > 0, "early decoding is on by default");
        let mut before_silero = 0;
        let phrases = [
            ("Set a timer for seven minutes.", "timer"),
            ("What is on my calendar tomorrow?", "calendar"),
            ("Remember that my car is parked on level three.", "level"),
        ];
        for (text, word) in phrases {
            let (rate, speech) =
                crate::tts::synthesize("espeak-ng", "en-us", 175, text).expect("espeak-ng");
            let lead = rate as usize / 2;
            let voiced = speech
                .iter()
                .rposition(|x| x.abs() > 0.003)
                .map_or(speech.len(), |i| i + 1);
            let true_end = ((lead + voiced) as u64) * 16_000 / u64::from(rate);
            let mut audio = vec![0.0f32; lead];
            audio.extend_from_slice(&speech);
            audio.extend(vec![0.0f32; rate as usize * 2]);

            let (tx, rx) = mpsc::channel::<Input>();
            let mut p = engine.pipeline(Mode::Live, rate, tx);
            let mut out = Vec::new();
            // Each speculative decode: (audio fed when it was queued, whether Silero still
            // said speech, the end it decodes up to).
            let mut specs: Vec<(u64, u64, bool, u64)> = Vec::new();
            for c in audio.chunks(rate as usize / 50) {
                p.handle(Input::Audio(c.to_vec()), &mut out);
                for j in p.inflight.iter().filter(|j| j.kind == JobKind::Speculative) {
                    if !specs.iter().any(|s| s.0 == j.id) {
                        let fed = p.pending_at + p.pending.len() as u64;
                        specs.push((j.id, fed, p.turn.speaking(), j.end));
                    }
                }
            }
            p.handle(Input::End, &mut out);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !out.iter().any(|o| matches!(o, Output::Final(_))) && Instant::now() < deadline {
                if let Ok(input) = rx.recv_timeout(Duration::from_millis(500)) {
                    p.handle(input, &mut out);
                }
            }
            let finals: Vec<&Transcript> = out
                .iter()
                .filter_map(|o| match o {
                    Output::Final(t) => Some(t),
                    _ => None,
                })
                .collect();
            assert_eq!(finals.len(), 1, "{text}: {finals:?}");
            let f = finals[0];
            // The decode the final came from: the last one up to its end.
            let &(_, queued_at, speaking, end) = specs
                .iter()
                .rev()
                .find(|s| s.3 == f.end_sample)
                .unwrap_or_else(|| panic!("{text}: no speculative decode made the final"));
            eprintln!(
                "{text}: decode queued {:+} ms from the true end ({}), up to {:+} ms; {} speculative decodes in all",
                (queued_at as i64 - true_end as i64) / 16,
                if speaking { "before Silero paused" } else { "at Silero's pause" },
                (end as i64 - true_end as i64) / 16,
                specs.len()
            );
            // Checked as each 20 ms block comes in, on 10 ms windows of the sound's level.
            assert!(
                queued_at <= true_end + (early_ms + 20 + 10) * 16,
                "{text}: decode queued {} ms after the true end",
                (queued_at as i64 - true_end as i64) / 16
            );
            assert!(
                end.abs_diff(true_end) <= 480,
                "{text}: decoded up to {} ms from the true end",
                (end as i64 - true_end as i64) / 16
            );
            before_silero += usize::from(speaking);
            assert!(
                f.text.to_lowercase().contains(word),
                "{text}: heard {:?}",
                f.text
            );
            assert!(
                !f.stages.iter().any(|s| s.name == "decode_started:final"),
                "{text}: the speculative decode was the final, nothing else was decoded: {:?}",
                f.stages
            );
        }
        assert!(
            before_silero > 0,
            "Silero paused first on every phrase: nothing here shows the early start"
        );
    }

    /// The race CI's barge-in test once lost: a turn ends while its speculative decode is still
    /// running, the next turn starts, and then that decode comes back aborted (or failed). The
    /// final must then be decoded from the first turn's own audio — which trimming the history
    /// to the turn being spoken had already dropped, so the final came out empty in 0 ms.
    /// Real models and espeak-ng speech; only the decode's outcome is replaced by an abort.
    #[test]
    fn a_final_whose_speculative_decode_is_aborted_after_the_next_turn_began_keeps_its_words() {
        let cfg = Config::load(&LoadOptions {
            file: None,
            skip_system_and_user: true,
        })
        .expect("default config");
        let engine = crate::load_engine(&cfg).expect("the audio models (run `just models`)");
        let (rate, first) = crate::tts::synthesize(
            "espeak-ng",
            "en-us",
            175,
            "Set a timer for five minutes and call it tea.",
        )
        .expect("espeak-ng (just setup installs it)");
        let (rate2, second) = crate::tts::synthesize("espeak-ng", "en-us", 175, "What time is it?")
            .expect("espeak-ng");
        assert_eq!(rate, rate2);
        let silence = |s: f64| vec![0.0f32; (s * f64::from(rate)) as usize];
        let mut audio = silence(0.5);
        audio.extend_from_slice(&first);
        // Longer than the longest hangover, so the first turn ends on silence.
        audio.extend(silence(1.5));
        audio.extend_from_slice(&second);
        audio.extend(silence(1.5));

        let (tx, rx) = mpsc::channel::<Input>();
        let mut p = engine.pipeline(Mode::Live, rate, tx);
        let mut out = Vec::new();
        // Feed in 20 ms blocks, handing back no decode, until the second turn has begun.
        let block = rate as usize / 50;
        let mut chunks = audio.chunks(block);
        let mut first_turn = None;
        let mut spec = None;
        for c in chunks.by_ref() {
            p.handle(Input::Audio(c.to_vec()), &mut out);
            if first_turn.is_none() {
                first_turn = out.iter().find_map(|o| match o {
                    Output::SpeechEnded(b) => Some(b.utterance),
                    _ => None,
                });
                // The speculative decode the ended turn waits on.
                spec = first_turn.and_then(|u| {
                    p.inflight
                        .iter()
                        .find(|j| j.utterance == u && j.kind == JobKind::Speculative)
                        .map(|j| j.id)
                });
            }
            if first_turn.is_some_and(|u| p.cur.as_ref().is_some_and(|t| t.utterance != u)) {
                break;
            }
        }
        let first_turn = first_turn.expect("the first turn ended");
        let spec = spec.expect("the first turn ended waiting on its speculative decode");
        assert!(p.cur.is_some(), "the second turn began");
        assert!(out.iter().all(|o| !matches!(o, Output::Final(_))));
        assert!(
            p.hist_at <= p.ending.as_ref().map_or(0, |t| t.start),
            "the ending turn's audio is still kept"
        );

        // The speculative decode comes back aborted; everything else as the STT thread gives it.
        p.handle(
            Input::Stt(JobResult {
                id: spec,
                result: Err(SttError::Aborted),
            }),
            &mut out,
        );
        let finals = |out: &[Output]| {
            out.iter()
                .filter_map(|o| match o {
                    Output::Final(t) => Some(t.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        // Hand back what the STT thread gives until `n` finals are out. The first turn's
        // final comes before the rest of the second turn is fed, as in real time, where that
        // turn goes on for longer than a decode takes.
        let wait = |p: &mut Pipeline, out: &mut Vec<Output>, n: usize| {
            let deadline = Instant::now() + Duration::from_secs(60);
            while finals(out).len() < n && Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(500)) {
                    // The real outcome of the decode that was replaced by an abort.
                    Ok(Input::Stt(r)) if r.id == spec => {}
                    Ok(input) => p.handle(input, out),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(e) => panic!("the STT thread went away: {e}"),
                }
            }
        };
        wait(&mut p, &mut out, 1);
        for c in chunks {
            p.handle(Input::Audio(c.to_vec()), &mut out);
        }
        p.handle(Input::End, &mut out);
        wait(&mut p, &mut out, 2);
        let finals = finals(&out);
        let first = finals
            .iter()
            .find(|t| t.utterance == first_turn)
            .expect("the first turn's final");
        let text = first.text.to_lowercase();
        assert!(
            text.contains("timer") && first.decode_ms > 0.0,
            "the final was decoded from the turn's audio: {first:?}"
        );
        let second = finals
            .iter()
            .find(|t| t.utterance != first_turn)
            .expect("the second turn's final");
        assert!(second.text.to_lowercase().contains("time"), "{second:?}");
    }
}
