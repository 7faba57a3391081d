//! Speech out: espeak-ng or a Piper voice synthesises (each a separate process: espeak-ng's GPL
//! stays out of our binaries, Piper's network runs in ONNX Runtime under Python — the helper is
//! `piper.py`, built into this binary), the [`Speaker`] plays it — to the output device, or, with none, to a sink that
//! takes samples at the device's pace so that speaking lasts as long as it would be heard —
//! and stops within one 10 ms block when told to: by `audio.stop`, or by barge-in (speech on
//! the live input while speaking).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ming_bus::events::EventPublisher;
use ming_config::AudioSettings;
use ming_schemas::audio::{Speak, Speaking, Spoken};
use ming_schemas::{kinds, ErrorCode};

use crate::device::{DeviceError, Playback};
use crate::mono_ms;
use crate::resample::Resampler;
use crate::wav::{write_wav16, PcmReader, ReadWavError};

/// Playback block: how often a stop is looked at.
const BLOCK_MS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum SpeakError {
    #[error(
        "cannot run the text-to-speech engine `{command}`: {reason} (install it: `just setup`)"
    )]
    Engine { command: String, reason: String },
    #[error("the text-to-speech engine failed: {0}")]
    Failed(String),
    #[error("the text-to-speech engine's audio is unreadable: {0}")]
    Audio(#[from] ReadWavError),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error(transparent)]
    Device(#[from] DeviceError),
}

impl SpeakError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Write { .. } => ErrorCode::BadRequest,
            Self::Device(_) => ErrorCode::ServiceUnavailable,
            _ => ErrorCode::Internal,
        }
    }
}

/// The Piper helper, run as `python3 -c`.
const PIPER_PY: &str = include_str!("piper.py");
/// Piper's natural pace, in words per minute (its length scale 1.0).
const PIPER_WPM: f64 = 175.0;
/// The runtime (in the model dir) that runs Piper voices: `[[runtime]]` in models/manifest.toml.
pub const ONNX_RUNTIME_DIR: &str = "onnxruntime";

/// What synthesises speech (`audio.tts_engine`).
#[derive(Debug, Clone)]
pub enum Engine {
    /// espeak-ng: `command` with its voice (`audio.tts_voice`, or the request's).
    Espeak { command: String, voice: String },
    /// A Piper voice (the model and its config), served by a helper process that `python` runs
    /// with ONNX Runtime, started at the first use (or [`Engine::warm`]) and kept.
    Piper {
        python: PathBuf,
        model: PathBuf,
        config: PathBuf,
        helper: Arc<Mutex<Option<PiperHelper>>>,
    },
}

/// The Piper helper process (`piper.py --serve`): the network loaded once, a request per reply.
#[derive(Debug)]
pub struct PiperHelper {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

/// What became of one request to the helper.
enum Asked {
    Wav(Vec<u8>),
    /// The helper answered with an error (it goes on serving).
    Refused(String),
    /// The helper is gone or was stopped for taking too long.
    Gone(String),
}

impl PiperHelper {
    fn start(python: &Path, model: &Path, config: &Path) -> Result<Self, SpeakError> {
        let mut child = Command::new(python)
            .arg("-c")
            .arg(PIPER_PY)
            .arg(model)
            .arg(config)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| SpeakError::Engine {
                command: python.display().to_string(),
                reason: e.to_string(),
            })?;
        match (child.stdin.take(), child.stdout.take()) {
            (Some(stdin), Some(stdout)) => Ok(Self {
                child,
                stdin,
                stdout,
            }),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                Err(SpeakError::Failed("the Piper helper has no pipes".into()))
            }
        }
    }

    /// One request; the helper is killed if it takes longer than `limit`.
    fn ask(&mut self, text: &str, length_scale: f64, limit: Duration) -> Asked {
        let line = serde_json::json!({"text": text, "length_scale": length_scale}).to_string();
        if let Err(e) = writeln!(self.stdin, "{line}").and_then(|()| self.stdin.flush()) {
            return Asked::Gone(e.to_string());
        }
        let pid = self.child.id() as libc::pid_t;
        let (done, watch) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if watch.recv_timeout(limit).is_err() {
                // SAFETY: kill(2) on our own child, not yet reaped (it is reaped only once it
                // is dropped, after this thread has been joined).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                true
            } else {
                false
            }
        });
        let mut head = [0u8; 6];
        let read = self.stdout.read_exact(&mut head).and_then(|()| {
            let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
            let mut body = vec![0u8; len];
            self.stdout.read_exact(&mut body).map(|()| body)
        });
        let _ = done.send(());
        if watchdog.join().unwrap_or(false) {
            return Asked::Gone(format!("took longer than {} s", limit.as_secs()));
        }
        match read {
            Ok(body) if &head[..2] == b"OK" => Asked::Wav(body),
            Ok(body) => Asked::Refused(String::from_utf8_lossy(&body).into_owned()),
            Err(e) => Asked::Gone(format!("its answer broke off: {e}")),
        }
    }
}

impl Drop for PiperHelper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Engine {
    /// The engine `[audio]` names, its files resolved in `model_dir`.
    ///
    /// # Errors
    /// A message naming what is missing and the command that installs it.
    pub fn from_config(a: &AudioSettings, model_dir: &Path) -> Result<Self, String> {
        if a.tts_engine != "piper" {
            return Ok(Self::Espeak {
                command: a.tts_command.clone(),
                voice: a.tts_voice.clone(),
            });
        }
        let name = &a.tts_piper_voice;
        let (_, model) = ming_config::models::resolve(name, "tts", model_dir)
            .map_err(|e| format!("audio.tts_piper_voice: {e}"))?;
        let (_, config) =
            ming_config::models::resolve(&format!("{name}-config"), "tts-config", model_dir)
                .map_err(|e| format!("audio.tts_piper_voice: {e}"))?;
        let python = model_dir.join(ONNX_RUNTIME_DIR).join("bin/python3");
        if !python.exists() {
            return Err(format!(
                "audio.tts_engine = \"piper\" needs ONNX Runtime in {}: run `just models`",
                python.display()
            ));
        }
        Ok(Self::Piper {
            python,
            model,
            config,
            helper: Arc::new(Mutex::new(None)),
        })
    }

    /// Starts what the engine keeps running (the Piper helper, which loads its network), so that
    /// the first reply does not wait for it.
    ///
    /// # Errors
    /// [`SpeakError`] when the helper cannot start.
    pub fn warm(&self) -> Result<(), SpeakError> {
        if let Self::Piper {
            python,
            model,
            config,
            helper,
        } = self
        {
            let mut h = helper.lock().unwrap_or_else(|p| p.into_inner());
            if h.is_none() {
                *h = Some(PiperHelper::start(python, model, config)?);
            }
        }
        Ok(())
    }

    /// The pid of the running Piper helper, if one runs.
    pub fn helper_pid(&self) -> Option<u32> {
        match self {
            Self::Piper { helper, .. } => helper
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|h| h.child.id()),
            Self::Espeak { .. } => None,
        }
    }

    /// In words, for status lines.
    pub fn describe(&self) -> String {
        match self {
            Self::Espeak { command, voice } => format!("{command} {voice}"),
            Self::Piper { model, .. } => format!(
                "piper {}",
                model.file_name().unwrap_or_default().to_string_lossy()
            ),
        }
    }

    /// Speech for `text` (rate, mono samples) at `wpm`; `voice` overrides espeak-ng's voice
    /// (a Piper model is one voice).
    ///
    /// # Errors
    /// [`SpeakError`] when the engine is missing, fails, or times out.
    pub fn synthesize(
        &self,
        voice: Option<&str>,
        wpm: u32,
        text: &str,
    ) -> Result<(u32, Vec<f32>), SpeakError> {
        match self {
            Self::Espeak {
                command,
                voice: default,
            } => synthesize(command, voice.unwrap_or(default), wpm, text),
            Self::Piper {
                python,
                model,
                config,
                helper,
            } => {
                let limit = Duration::from_secs(20) + Duration::from_millis(text.len() as u64 * 5);
                let length_scale = PIPER_WPM / f64::from(wpm.max(1));
                let mut h = helper.lock().unwrap_or_else(|p| p.into_inner());
                // A helper that died (or hung and was stopped) is started again, once.
                for attempt in 0..2 {
                    let running = match h.as_mut() {
                        Some(running) => running,
                        None => h.insert(PiperHelper::start(python, model, config)?),
                    };
                    match running.ask(text, length_scale, limit) {
                        Asked::Wav(wav) => return read_wav_bytes(&wav),
                        Asked::Refused(why) => return Err(SpeakError::Failed(why)),
                        Asked::Gone(why) => {
                            *h = None;
                            tracing::warn!(attempt, reason = %why, "the Piper helper stopped");
                            if attempt == 1 {
                                return Err(SpeakError::Failed(format!(
                                    "the Piper helper stopped: {why}"
                                )));
                            }
                        }
                    }
                }
                Err(SpeakError::Failed("the Piper helper stopped".into()))
            }
        }
    }
}

/// Runs espeak-ng and returns its speech (rate, mono samples).
///
/// # Errors
/// [`SpeakError`] when the engine is missing, fails, or times out.
pub fn synthesize(
    command: &str,
    voice: &str,
    rate: u32,
    text: &str,
) -> Result<(u32, Vec<f32>), SpeakError> {
    let mut cmd = Command::new(command);
    cmd.args(["--stdout", "--stdin", "-v", voice, "-s", &rate.to_string()]);
    run_engine(cmd, command, text, Duration::from_secs(10))
}

/// Runs a text-to-speech program: `text` on its stdin, a WAV on its stdout, killed when it takes
/// longer than `base` and 5 ms a byte of text.
fn run_engine(
    mut cmd: Command,
    command: &str,
    text: &str,
    base: Duration,
) -> Result<(u32, Vec<f32>), SpeakError> {
    let engine_err = |reason: String| SpeakError::Engine {
        command: command.into(),
        reason,
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| engine_err(e.to_string()))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| engine_err("no stdin".into()))?;
    let text_len = text.len();
    let text = text.to_string();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
        let _ = stdin.write_all(b"\n");
    });
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| engine_err("no stdout".into()))?;
    // A watchdog: an engine that hangs is killed (its output then ends and the read returns).
    let pid = child.id() as libc::pid_t;
    let limit = base + Duration::from_millis(text_len as u64 * 5);
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(limit).is_err() {
            // SAFETY: kill(2) on our own child, not yet reaped: we wait for it only after this
            // thread has been told to stop or has fired.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        } else {
            false
        }
    });
    let mut wav = Vec::new();
    let read = stdout.read_to_end(&mut wav);
    let _ = writer.join();
    let _ = done.send(());
    if watchdog.join().unwrap_or(false) {
        let _ = child.wait();
        return Err(SpeakError::Failed(format!(
            "`{command}` took longer than {} s and was stopped",
            limit.as_secs()
        )));
    }
    let status = child.wait().map_err(|e| engine_err(e.to_string()))?;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    read.map_err(|e| SpeakError::Failed(e.to_string()))?;
    if !status.success() {
        return Err(SpeakError::Failed(format!("{status}: {}", err.trim())));
    }
    read_wav_bytes(&wav)
}

/// A whole WAV in memory → (rate, mono samples).
fn read_wav_bytes(wav: &[u8]) -> Result<(u32, Vec<f32>), SpeakError> {
    let mut r = PcmReader::wav(wav)?;
    let rate = r.format.rate;
    let mut all = Vec::new();
    let mut block = Vec::new();
    while r.read_block(&mut block, 1 << 16)? {
        all.extend_from_slice(&block);
    }
    Ok((rate, all))
}

/// Where speech goes.
enum Sink {
    /// No device: samples are taken at the device's pace and dropped.
    Paced { why: String },
    /// A playback device (opened for each reply, so the sound card is free between them).
    Device { name: String, detail: String },
}

/// How far ahead of the device the queue is kept: enough to ride out a late wake-up of the
/// playback loop, little enough that a stop is heard at once (the queue is dropped anyway).
const LEAD_MS: u64 = 60;

/// Plays one thing at a time and can be stopped.
pub struct Speaker {
    engine: Engine,
    rate: u32,
    sink: Sink,
    /// Serialises playback.
    playing: Mutex<()>,
    speaking: AtomicBool,
    stop: AtomicBool,
    /// Monotonic µs of the speech onset that asked for a stop (0: `audio.stop`).
    barge_at_us: AtomicU64,
}

impl Speaker {
    pub fn new(a: &AudioSettings, engine: Engine) -> Self {
        let sink = match a.output.as_str() {
            "none" => Sink::Paced {
                why: "audio.output = \"none\"".to_string(),
            },
            name => match crate::device::Playback::probe(name) {
                Ok(detail) => Sink::Device {
                    name: name.to_string(),
                    detail,
                },
                Err(e) => {
                    tracing::warn!(output = name, error = %e, "no playback device; replies are paced to none");
                    Sink::Paced { why: e.to_string() }
                }
            },
        };
        Self {
            engine,
            rate: a.tts_rate,
            sink,
            playing: Mutex::new(()),
            speaking: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            barge_at_us: AtomicU64::new(0),
        }
    }

    /// The text-to-speech engine, in words.
    pub fn engine_name(&self) -> String {
        self.engine.describe()
    }

    /// Where playback goes, in words.
    pub fn output_name(&self) -> String {
        match &self.sink {
            Sink::Paced { why } => format!("none ({why})"),
            Sink::Device { detail, .. } => detail.clone(),
        }
    }

    /// Speech began on the live input: if speaking, stop (barge-in); `true` if it was speaking.
    pub fn speech_started(&self, onset_ms: f64) -> bool {
        let speaking = self.speaking.load(Ordering::Acquire);
        if speaking {
            self.barge_at_us
                .store((onset_ms * 1e3).max(1.0) as u64, Ordering::Release);
            self.stop.store(true, Ordering::Release);
        }
        speaking
    }

    /// Stops what is being spoken; `true` if something was.
    pub fn stop(&self) -> bool {
        let was = self.speaking.load(Ordering::Acquire);
        if was {
            self.barge_at_us.store(0, Ordering::Release);
            self.stop.store(true, Ordering::Release);
        }
        was
    }

    /// Synthesises and plays (or writes) one reply. Blocking.
    ///
    /// # Errors
    /// [`SpeakError`].
    pub fn speak(&self, req: &Speak, events: &EventPublisher) -> Result<Spoken, SpeakError> {
        let asked = Instant::now();
        let (rate, samples) = self.engine.synthesize(
            req.voice.as_deref(),
            req.rate.unwrap_or(self.rate),
            &req.text,
        )?;
        let audio_ms = samples.len() as f64 * 1e3 / f64::from(rate);
        if let Some(path) = &req.wav_out {
            let write = |path: &str| -> std::io::Result<()> {
                let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
                write_wav16(&mut f, rate, &samples)?;
                f.flush()
            };
            write(path).map_err(|e| SpeakError::Write {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            return Ok(Spoken {
                audio_ms,
                played_ms: 0.0,
                interrupted: false,
                output: format!("wav {path}"),
                first_audio_ms: asked.elapsed().as_secs_f64() * 1e3,
            });
        }
        let _turn = self.playing.lock().unwrap_or_else(|p| p.into_inner());
        // A device is opened for this reply; the speech is brought to its rate.
        let device = match &self.sink {
            Sink::Paced { .. } => None,
            Sink::Device { name, .. } => Some(Playback::start(name)?),
        };
        let (rate, samples) = match &device {
            Some(d) if d.rate != rate => {
                let mut r = Resampler::new(rate, d.rate);
                let mut out = Vec::with_capacity(samples.len() * d.rate as usize / rate as usize);
                r.push(&samples, &mut out);
                r.finish(&mut out);
                (d.rate, out)
            }
            _ => (rate, samples),
        };
        self.stop.store(false, Ordering::Release);
        self.speaking.store(true, Ordering::Release);
        let event = |state: &str, stop_latency_ms: Option<f64>| Speaking {
            utterance: req.utterance,
            at_ms: mono_ms(),
            state: state.into(),
            stop_latency_ms,
        };
        let first_audio_ms = asked.elapsed().as_secs_f64() * 1e3;
        events.publish(kinds::EVENT_SPEAKING, &event("started", None));
        let block = (rate as usize * BLOCK_MS as usize / 1000).max(1);
        let lead = Duration::from_millis(if device.is_some() { LEAD_MS } else { 0 });
        let start = Instant::now();
        let mut played = 0usize;
        let mut interrupted = false;
        while played < samples.len() {
            if self.stop.load(Ordering::Acquire) {
                interrupted = true;
                break;
            }
            let n = block.min(samples.len() - played);
            if let Some(d) = &device {
                d.push(&samples[played..played + n]);
            }
            played += n;
            let due = start + Duration::from_secs_f64(played as f64 / f64::from(rate));
            if let Some(wait) = due
                .checked_sub(lead)
                .and_then(|due| due.checked_duration_since(Instant::now()))
            {
                std::thread::sleep(wait);
            }
        }
        if let Some(d) = &device {
            // The rest of the queue is played, unless a stop comes first; what was queued and
            // not played was not heard.
            let until = Instant::now() + lead * 4 + Duration::from_millis(200);
            while d.queued() > 0 && Instant::now() < until {
                if self.stop.load(Ordering::Acquire) {
                    interrupted = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            played = played.saturating_sub(d.queued());
            d.clear();
            if let Some(why) = d.failure() {
                tracing::warn!(error = %why, "playback device failed");
            }
        }
        self.speaking.store(false, Ordering::Release);
        let played_ms = played as f64 * 1e3 / f64::from(rate);
        if interrupted {
            let onset_us = self.barge_at_us.swap(0, Ordering::AcqRel);
            if onset_us > 0 {
                let latency = mono_ms() - onset_us as f64 / 1e3;
                events.publish(kinds::EVENT_BARGE_IN, &event("interrupted", Some(latency)));
            }
            events.publish(kinds::EVENT_SPEAKING, &event("interrupted", None));
        } else {
            events.publish(kinds::EVENT_SPEAKING, &event("finished", None));
        }
        Ok(Spoken {
            audio_ms,
            played_ms,
            interrupted,
            output: self.output_name(),
            first_audio_ms,
        })
    }
}
