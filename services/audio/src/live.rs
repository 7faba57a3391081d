//! The live input: one pipeline that runs for the life of the service over the configured
//! input — PCM sent with `audio.feed` (`audio.input = "bus"`), or a capture device through
//! cpal ([`crate::device`]) — and
//! decides which turns are for MingLLM:
//!
//! - `push_to_talk`: the turn after `audio.listen start` (it ends by itself at the end of
//!   speech, or at `audio.listen stop`);
//! - `wake`: a turn that starts with the wake phrase, or any turn inside the follow-up window
//!   after an answer.
//!
//! Voice activity runs on the live input all the time — that is what barge-in needs — but
//! speech is only transcribed while a turn can be for MingLLM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use ming_config::AudioSettings;
use ming_schemas::audio::ListenState;

use crate::device::Capture;
use crate::mono_ms;
use crate::pipeline::{Input, Mode, Output, TurnAudio};
use crate::resample::Resampler;
use crate::source::Engine;
use crate::wav::from_i16le;

/// What `audio.listen` can be asked.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("unknown action `{0}`: start, stop or status")]
    Action(String),
    #[error("no live input: {0}")]
    NoInput(String),
    #[error("audio.input is `{0}`: audio.feed needs audio.input = \"bus\"")]
    NotBus(String),
    #[error("bad PCM: {0}")]
    Pcm(String),
}

struct State {
    listening: bool,
    follow_up_until: Option<f64>,
    input_ok: bool,
    detail: String,
}

/// The live input's handle.
pub struct Live {
    settings: AudioSettings,
    tx: Mutex<mpsc::Sender<Input>>,
    armed: Arc<AtomicBool>,
    state: Mutex<State>,
    /// `audio.feed` at another rate than 16 kHz: (rate, resampler).
    feed_resampler: Mutex<Option<(u32, Resampler)>>,
    /// The capture device, when the live input is one (kept open for the service's life).
    capture: Option<Capture>,
    /// The latest turns' audio, when a second model may hear them again.
    turn_audio: Option<TurnAudio>,
}

impl Live {
    /// Starts the live pipeline on its own thread; everything it produces goes to `outputs`.
    pub fn start(
        engine: &Engine,
        settings: &AudioSettings,
        outputs: tokio::sync::mpsc::UnboundedSender<Output>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel::<Input>();
        let wake = settings.mode == "wake";
        let armed = Arc::new(AtomicBool::new(wake));
        let mut p = engine
            .pipeline(Mode::Live, 16_000, tx.clone())
            .with_armed(Arc::clone(&armed));
        // With a second model or the guide, each turn's audio is kept for them a little while.
        let turn_audio =
            (engine.second.is_some() || engine.guide.is_some()).then(TurnAudio::default);
        if let Some(keep) = &turn_audio {
            p = p.with_turn_audio(keep.clone());
            if let Some(guide) = &engine.guide {
                p = p.with_guide(Arc::clone(guide), engine.second.clone());
            }
        }
        let spawned = std::thread::Builder::new()
            .name("live-audio".into())
            .spawn(move || {
                let mut out = Vec::new();
                for input in rx {
                    p.handle(input, &mut out);
                    for o in out.drain(..) {
                        let _ = outputs.send(o);
                    }
                }
            });
        let mut capture = None;
        let (input_ok, detail) = match (settings.input.as_str(), spawned) {
            (_, Err(e)) => (false, format!("cannot start the live pipeline: {e}")),
            ("bus", Ok(_)) => (true, "PCM from audio.feed".to_string()),
            ("none", Ok(_)) => (false, "audio.input = \"none\"".to_string()),
            (device, Ok(_)) => {
                let to_pipeline = tx.clone();
                let want = (settings.capture_rate, settings.capture_channels);
                match Capture::start(device, want, move |samples| {
                    let _ = to_pipeline.send(Input::Audio(samples));
                }) {
                    Ok(c) => {
                        let detail = c.detail.clone();
                        capture = Some(c);
                        (true, detail)
                    }
                    Err(e) => (
                        false,
                        format!(
                            "{e}; the live input can come from the bus instead \
                             (audio.input = \"bus\"), and files through `ming transcribe`"
                        ),
                    ),
                }
            }
        };
        if !input_ok {
            tracing::warn!(input = %settings.input, reason = %detail, "no live input");
        }
        Arc::new(Self {
            settings: settings.clone(),
            tx: Mutex::new(tx),
            armed,
            state: Mutex::new(State {
                listening: wake && input_ok,
                follow_up_until: None,
                input_ok,
                detail,
            }),
            feed_resampler: Mutex::new(None),
            capture,
            turn_audio,
        })
    }

    /// The audio of a finished turn (16 kHz, with its pre-roll: the samples of its final
    /// reading), taken: kept only with the guide or a second model, for the latest few turns.
    pub fn take_turn_audio(&self, utterance: u64) -> Option<crate::stt::Samples> {
        self.turn_audio.as_ref()?.take(utterance)
    }

    /// The guided search the pipeline started ahead of need on these samples, taken.
    pub fn take_ahead(&self, samples: &crate::stt::Samples) -> Option<crate::pipeline::Ahead> {
        self.turn_audio.as_ref()?.take_ahead(samples)
    }

    /// The second hearing the pipeline started ahead of need on these samples, taken.
    pub fn take_second(
        &self,
        samples: &crate::stt::Samples,
    ) -> Option<crate::pipeline::AheadSecond> {
        self.turn_audio.as_ref()?.take_second(samples)
    }

    /// Stops the guided search and second hearing started ahead on these samples, if they
    /// still run (see
    /// [`crate::pipeline::TurnAudio::drop_ahead`]).
    pub fn drop_ahead(&self, samples: &crate::stt::Samples) {
        if let Some(t) = &self.turn_audio {
            t.drop_ahead(samples);
        }
    }

    fn send(&self, input: Input) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(input);
        }
    }

    /// The state `audio.listen` reports.
    pub fn status(&self) -> ListenState {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let lost = self.capture.as_ref().and_then(Capture::failure);
        ListenState {
            mode: self.settings.mode.clone(),
            listening: s.listening && lost.is_none(),
            input: self.settings.input.clone(),
            input_ok: s.input_ok && lost.is_none(),
            detail: match lost {
                Some(why) => format!("capture stopped: {why}"),
                None => s.detail.clone(),
            },
            follow_up_until_ms: s.follow_up_until.filter(|t| *t > mono_ms()),
        }
    }

    /// `audio.listen`: start or stop a push-to-talk turn, or report.
    ///
    /// # Errors
    /// [`ListenError`] for an unknown action or when there is no live input.
    pub fn listen(&self, action: &str) -> Result<ListenState, ListenError> {
        match action {
            "status" => return Ok(self.status()),
            "start" | "stop" => {}
            other => return Err(ListenError::Action(other.into())),
        }
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if !s.input_ok {
                return Err(ListenError::NoInput(s.detail.clone()));
            }
            if let Some(why) = self.capture.as_ref().and_then(Capture::failure) {
                return Err(ListenError::NoInput(format!("capture stopped: {why}")));
            }
            if self.settings.mode == "push_to_talk" {
                s.listening = action == "start";
                self.armed.store(s.listening, Ordering::Relaxed);
            }
        }
        if action == "stop" {
            self.send(Input::Stop);
        }
        Ok(self.status())
    }

    /// `audio.feed`: PCM into the live input.
    ///
    /// # Errors
    /// [`ListenError::NotBus`] unless `audio.input = "bus"`; [`ListenError::Pcm`] for an odd
    /// byte count or a rate out of range.
    pub fn feed(&self, pcm: &[u8], rate: u32) -> Result<ListenState, ListenError> {
        if self.settings.input != "bus" {
            return Err(ListenError::NotBus(self.settings.input.clone()));
        }
        if !pcm.len().is_multiple_of(2) {
            return Err(ListenError::Pcm(format!(
                "{} bytes: 16-bit samples come in pairs",
                pcm.len()
            )));
        }
        if !(4_000..=192_000).contains(&rate) {
            return Err(ListenError::Pcm(format!("rate {rate} Hz (4000–192000)")));
        }
        let samples = from_i16le(pcm);
        let samples = if rate == 16_000 {
            samples
        } else {
            let mut r = self
                .feed_resampler
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if r.as_ref().is_none_or(|(had, _)| *had != rate) {
                *r = Some((rate, Resampler::new(rate, 16_000)));
            }
            let mut out = Vec::with_capacity(samples.len());
            if let Some((_, res)) = r.as_mut() {
                res.push(&samples, &mut out);
            }
            out
        };
        self.send(Input::Audio(samples));
        Ok(self.status())
    }

    /// A final transcript of the live input: the text for the agent, if the turn is for
    /// MingLLM (the wake phrase removed), and the listening state updated.
    pub fn route(&self, text: &str) -> Option<String> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if text.trim().is_empty() {
            return None;
        }
        if self.settings.mode == "push_to_talk" {
            if !s.listening {
                return None;
            }
            s.listening = false;
            self.armed.store(false, Ordering::Relaxed);
            return Some(text.trim().to_string());
        }
        if s.follow_up_until.is_some_and(|t| t > mono_ms()) {
            s.follow_up_until = None;
            return Some(
                strip_wake(text, &self.settings.wake_phrase)
                    .unwrap_or_else(|| text.trim().to_string()),
            );
        }
        strip_wake(text, &self.settings.wake_phrase)
    }

    /// Another reading of a turn [`Live::route`] already gave the agent: its text for the
    /// agent (the wake phrase removed, if this reading has it); `None` when it is empty.
    pub fn reroute(&self, text: &str) -> Option<String> {
        if text.trim().is_empty() {
            return None;
        }
        if self.settings.mode == "push_to_talk" {
            return Some(text.trim().to_string());
        }
        Some(
            strip_wake(text, &self.settings.wake_phrase).unwrap_or_else(|| text.trim().to_string()),
        )
    }

    /// The agent answered a voice turn: open the follow-up window (wake mode).
    pub fn answered(&self) {
        if self.settings.mode == "wake" && self.settings.follow_up_s > 0.0 {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.follow_up_until = Some(mono_ms() + f64::from(self.settings.follow_up_s) * 1e3);
        }
    }
}

/// The text after the wake phrase, if the transcript starts with it (case, punctuation and a
/// leading "hey"/"ok" ignored); `None` otherwise or when nothing follows it.
pub fn strip_wake(text: &str, phrase: &str) -> Option<String> {
    let norm = crate::stt::word_key;
    let want: Vec<String> = phrase
        .split_whitespace()
        .map(norm)
        .filter(|w| !w.is_empty())
        .collect();
    let words: Vec<&str> = text.split_whitespace().collect();
    if want.is_empty() {
        return None;
    }
    let filler = words
        .first()
        .is_some_and(|w| matches!(norm(w).as_str(), "hey" | "ok" | "okay" | "hi"));
    let at = [0, usize::from(filler)].into_iter().find(|&i| {
        words.len() >= i + want.len()
            && words[i..i + want.len()]
                .iter()
                .map(|w| norm(w))
                .eq(want.iter().cloned())
    })?;
    let rest = words[at + want.len()..].join(" ");
    let rest = rest
        .trim_start_matches(|c: char| !c.is_alphanumeric())
        .trim();
    if rest.is_empty() {
        None
    } else {
        Some(rest.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::strip_wake;

    #[test]
    fn the_wake_phrase_is_found_and_removed() {
        assert_eq!(
            strip_wake("Ming, set a timer.", "ming").as_deref(),
            Some("set a timer.")
        );
        assert_eq!(
            strip_wake("Hey Ming set a timer", "ming").as_deref(),
            Some("set a timer")
        );
        assert_eq!(
            strip_wake("Hey, ming. What time is it?", "ming").as_deref(),
            Some("What time is it?")
        );
        assert_eq!(
            strip_wake("Okay computer, stop", "okay computer").as_deref(),
            Some("stop")
        );
        assert_eq!(strip_wake("Set a timer", "ming"), None);
        assert_eq!(strip_wake("Ming.", "ming"), None);
        assert_eq!(strip_wake("Mingle with people", "ming"), None);
    }
}
