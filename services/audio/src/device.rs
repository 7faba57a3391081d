//! The sound card, through cpal (ALSA on Linux): capture for the live input and playback of
//! spoken replies.
//!
//! A device is named as in `audio.input` / `audio.output`: `default`, an ALSA PCM name
//! (`hw:CARD=…`, `plughw:…`, a PCM of the user's `asoundrc`), with or without the `alsa:` prefix,
//! or a device's description; `ming audio devices` lists them. Whatever rate, channel count and
//! sample format the device offers is taken — 16 kHz mono when it offers that — and converted
//! here: downmixed to mono, resampled to 16 kHz for the models (capture), and from the speech's
//! rate to the device's (playback).
//!
//! cpal streams are kept on a thread of their own (a stream is not `Send` on every platform);
//! the data callbacks do no more than convert samples and hand them on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{FromSample, Sample, SampleFormat, SizedSample, StreamConfig};

use crate::resample::Resampler;

/// The rate the models take.
const MODEL_RATE: u32 = 16_000;

/// Capture or playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Input => "capture",
            Self::Output => "playback",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no sound system: {0}")]
    Host(String),
    #[error("no {direction} device `{name}`{known}")]
    NotFound {
        direction: Direction,
        name: String,
        /// What there is, for the message.
        known: String,
    },
    #[error("the {direction} device `{name}` cannot be used: {reason}")]
    Open {
        direction: Direction,
        name: String,
        reason: String,
    },
}

/// One device, for `ming audio devices`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// What `audio.input` / `audio.output` take (the ALSA PCM name).
    pub id: String,
    pub description: String,
    pub input: bool,
    pub output: bool,
}

/// The devices the sound system knows (ALSA's hints and the cards' PCMs).
///
/// # Errors
/// [`DeviceError::Host`] when there is no sound system at all.
pub fn list() -> Result<Vec<DeviceInfo>, DeviceError> {
    let host = cpal::default_host();
    let devices = host
        .devices()
        .map_err(|e| DeviceError::Host(e.to_string()))?;
    Ok(devices
        .map(|d| DeviceInfo {
            id: d
                .id()
                .map(|id| id.id().to_string())
                .unwrap_or_else(|_| "?".into()),
            description: d
                .description()
                .map(|x| x.name().to_string())
                .unwrap_or_default(),
            input: d.supports_input(),
            output: d.supports_output(),
        })
        .collect())
}

/// The device `name` for `direction`.
fn find(name: &str, direction: Direction) -> Result<cpal::Device, DeviceError> {
    let host = cpal::default_host();
    let pcm = name.strip_prefix("alsa:").unwrap_or(name);
    if pcm == "default" {
        let d = match direction {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return d.ok_or_else(|| DeviceError::NotFound {
            direction,
            name: name.into(),
            known: String::new(),
        });
    }
    if let Some(d) = host.device_by_id(&cpal::DeviceId::new(host.id(), pcm)) {
        return Ok(d);
    }
    let devices: Vec<cpal::Device> = host
        .devices()
        .map_err(|e| DeviceError::Host(e.to_string()))?
        .collect();
    let description = |d: &cpal::Device| {
        d.description()
            .map(|x| x.name().to_string())
            .unwrap_or_default()
    };
    if let Some(d) = devices
        .iter()
        .find(|d| description(d).eq_ignore_ascii_case(name))
    {
        return Ok(d.clone());
    }
    let ids: Vec<String> = devices
        .iter()
        .filter(|d| match direction {
            Direction::Input => d.supports_input(),
            Direction::Output => d.supports_output(),
        })
        .filter_map(|d| d.id().ok().map(|id| id.id().to_string()))
        .take(12)
        .collect();
    Err(DeviceError::NotFound {
        direction,
        name: name.into(),
        known: if ids.is_empty() {
            String::new()
        } else {
            format!(" (there are: {}; see `ming audio devices`)", ids.join(", "))
        },
    })
}

/// The formats the conversion below handles, best first.
const FORMATS: [SampleFormat; 6] = [
    SampleFormat::I16,
    SampleFormat::F32,
    SampleFormat::I32,
    SampleFormat::U16,
    SampleFormat::U8,
    SampleFormat::F64,
];

/// The stream configuration to open `device` with: 16 kHz mono in a format handled here when the
/// device offers it (no conversion at all), else the device's default, else its first
/// configuration in a handled format at the rate nearest 48 kHz.
///
/// `want` (rate, channels; 0: no preference) asks for a configuration instead; an error when the
/// device does not offer it.
fn pick_config(
    device: &cpal::Device,
    name: &str,
    direction: Direction,
    want: (u32, u16),
) -> Result<(StreamConfig, SampleFormat), DeviceError> {
    let open = |reason: String| DeviceError::Open {
        direction,
        name: name.into(),
        reason,
    };
    let ranges: Vec<cpal::SupportedStreamConfigRange> = match direction {
        Direction::Input => device
            .supported_input_configs()
            .map(|r| r.collect())
            .map_err(|e| open(e.to_string()))?,
        Direction::Output => device
            .supported_output_configs()
            .map(|r| r.collect())
            .map_err(|e| open(e.to_string()))?,
    };
    let handled = |f: SampleFormat| FORMATS.contains(&f);
    let rank = |f: SampleFormat| FORMATS.iter().position(|x| *x == f).unwrap_or(usize::MAX);
    let (want_rate, want_channels) = want;
    if want_rate > 0 || want_channels > 0 {
        let rate_ok = |r: &cpal::SupportedStreamConfigRange| {
            want_rate == 0 || (r.min_sample_rate() <= want_rate && want_rate <= r.max_sample_rate())
        };
        let r = ranges
            .iter()
            .filter(|r| handled(r.sample_format()) && rate_ok(r))
            .filter(|r| want_channels == 0 || r.channels() == want_channels)
            .min_by_key(|r| (rank(r.sample_format()), r.channels()))
            .ok_or_else(|| {
                open(format!(
                    "it does not offer {} Hz, {} channel(s) in a sample format this build handles",
                    want_rate, want_channels
                ))
            })?;
        let rate = if want_rate > 0 {
            want_rate
        } else {
            MODEL_RATE.clamp(r.min_sample_rate(), r.max_sample_rate())
        };
        let c = r.with_sample_rate(rate);
        return Ok((c.config(), c.sample_format()));
    }
    if direction == Direction::Input {
        if let Some(r) = ranges
            .iter()
            .filter(|r| r.channels() == 1 && handled(r.sample_format()))
            .filter(|r| r.min_sample_rate() <= MODEL_RATE && MODEL_RATE <= r.max_sample_rate())
            .min_by_key(|r| rank(r.sample_format()))
        {
            let c = r.with_sample_rate(MODEL_RATE);
            return Ok((c.config(), c.sample_format()));
        }
    }
    let default = match direction {
        Direction::Input => device.default_input_config(),
        Direction::Output => device.default_output_config(),
    };
    if let Ok(c) = default {
        if handled(c.sample_format()) {
            return Ok((c.config(), c.sample_format()));
        }
    }
    let r = ranges
        .iter()
        .filter(|r| handled(r.sample_format()) && r.channels() > 0)
        .min_by_key(|r| (rank(r.sample_format()), r.channels()))
        .ok_or_else(|| open("it offers no sample format this build handles".into()))?;
    let rate = 48_000.clamp(r.min_sample_rate(), r.max_sample_rate());
    let c = r.with_sample_rate(rate);
    Ok((c.config(), c.sample_format()))
}

/// Opens a stream on its own thread and keeps it until `stop` is set; `Ok` once it plays.
fn hold_stream(
    thread_name: &str,
    build: impl FnOnce() -> Result<cpal::Stream, String> + Send + 'static,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, String> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let held = Arc::clone(&stop);
    let handle = std::thread::Builder::new()
        .name(thread_name.into())
        .spawn(move || {
            let stream = match build() {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = stream.play() {
                let _ = ready_tx.send(Err(e.to_string()));
                return;
            }
            let _ = ready_tx.send(Ok(()));
            while !held.load(Ordering::Acquire) {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            drop(stream);
        })
        .map_err(|e| e.to_string())?;
    match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            stop.store(true, Ordering::Release);
            Err("the device did not start within 5 s".into())
        }
    }
}

/// Mono from interleaved frames of `channels` (the mean of the channels).
fn downmix<T>(data: &[T], channels: usize, out: &mut Vec<f32>)
where
    T: Sample,
    f32: FromSample<T>,
{
    out.clear();
    if channels <= 1 {
        out.extend(data.iter().map(|s| f32::from_sample(*s)));
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(
        data.chunks_exact(channels)
            .map(|frame| frame.iter().map(|s| f32::from_sample(*s)).sum::<f32>() * scale),
    );
}

/// The stream's error callback.
type OnError = Box<dyn FnMut(cpal::Error) + Send>;

/// A running stream: what was opened, what its error callback reported, and the thread that
/// holds it (dropping this stops the stream).
struct Held {
    detail: String,
    failed: Arc<Mutex<Option<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Held {
    /// Opens `name` for `direction` (at `want`, see [`pick_config`]) with the stream `make`
    /// builds, on a thread of its own; returns it with the configuration it runs at.
    fn open(
        name: &str,
        direction: Direction,
        want: (u32, u16),
        make: impl FnOnce(
                cpal::Device,
                StreamConfig,
                SampleFormat,
                OnError,
            ) -> Result<cpal::Stream, String>
            + Send
            + 'static,
    ) -> Result<(Self, StreamConfig), DeviceError> {
        let device = find(name, direction)?;
        let (config, format) = pick_config(&device, name, direction, want)?;
        let detail = format!(
            "`{}` at {} Hz, {} ch, {format}",
            device
                .description()
                .map(|d| d.name().to_string())
                .unwrap_or_else(|_| name.to_string()),
            config.sample_rate,
            config.channels,
        );
        let failed = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let on_error: OnError = {
            let failed = Arc::clone(&failed);
            Box::new(move |e: cpal::Error| {
                tracing::warn!(%direction, error = %e, "sound device error");
                let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
                if f.is_none() {
                    *f = Some(e.to_string());
                }
            })
        };
        let running = config;
        let thread = hold_stream(
            &format!("audio-{direction}"),
            move || make(device, running, format, on_error),
            Arc::clone(&stop),
        )
        .map_err(|reason| DeviceError::Open {
            direction,
            name: name.into(),
            reason,
        })?;
        let held = Self {
            detail,
            failed,
            stop,
            thread: Some(thread),
        };
        Ok((held, config))
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// `$stream!(T)` for the sample type of `$format` (the formats of [`FORMATS`]).
macro_rules! by_format {
    ($format:expr, $stream:ident) => {
        match $format {
            SampleFormat::I16 => $stream!(i16),
            SampleFormat::F32 => $stream!(f32),
            SampleFormat::I32 => $stream!(i32),
            SampleFormat::U16 => $stream!(u16),
            SampleFormat::U8 => $stream!(u8),
            SampleFormat::F64 => $stream!(f64),
            other => return Err(format!("sample format {other} is not handled")),
        }
    };
}

/// Live capture: 16 kHz mono blocks to `sink` for as long as this lives.
pub struct Capture {
    /// What was opened, in words (for `ming listen --status`).
    pub detail: String,
    held: Held,
}

impl Capture {
    /// Opens the capture device `name` (at `want` = rate, channels when not 0) and starts it.
    ///
    /// # Errors
    /// [`DeviceError`] when it is missing or cannot be opened in a format handled here.
    pub fn start(
        name: &str,
        want: (u32, u16),
        sink: impl FnMut(Vec<f32>) + Send + 'static,
    ) -> Result<Self, DeviceError> {
        let (held, config) = Held::open(
            name,
            Direction::Input,
            want,
            move |device, config, format, on_error| {
                let channels = usize::from(config.channels.max(1));
                let mut resampler = Resampler::new(config.sample_rate, MODEL_RATE);
                let mut sink = sink;
                let mut mono = Vec::new();
                let mut take = move |mono: &[f32]| {
                    let mut out = Vec::with_capacity(mono.len());
                    resampler.push(mono, &mut out);
                    if !out.is_empty() {
                        sink(out);
                    }
                };
                macro_rules! input_stream {
                    ($t:ty) => {
                        device.build_input_stream::<$t, _, _>(
                            config,
                            move |data: &[$t], _: &cpal::InputCallbackInfo| {
                                downmix(data, channels, &mut mono);
                                take(&mono);
                            },
                            on_error,
                            None,
                        )
                    };
                }
                by_format!(format, input_stream).map_err(|e| e.to_string())
            },
        )?;
        let converted = config.sample_rate != MODEL_RATE || config.channels != 1;
        let detail = format!(
            "capture {}{}",
            held.detail,
            if converted { " → 16 kHz mono" } else { "" }
        );
        tracing::info!(%detail, "capture started");
        Ok(Self { detail, held })
    }

    /// Why capture stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.held.failure()
    }
}

/// The samples waiting for the device, shared with its callback.
#[derive(Default)]
struct Queue {
    samples: VecDeque<f32>,
    /// Samples the device has taken from the queue (not counting silence it was given).
    played: u64,
}

/// One playback stream: mono samples at [`Playback::rate`] pushed in, played in order, with
/// silence when there are none; [`Playback::clear`] drops what has not been played yet.
pub struct Playback {
    pub rate: u32,
    pub detail: String,
    queue: Arc<Mutex<Queue>>,
    held: Held,
}

/// Fills an output buffer of interleaved frames from the queue (silence when it runs dry).
fn fill<T>(out: &mut [T], channels: usize, queue: &Mutex<Queue>)
where
    T: SizedSample + FromSample<f32>,
{
    let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
    for frame in out.chunks_mut(channels.max(1)) {
        let v = match q.samples.pop_front() {
            Some(v) => {
                q.played += 1;
                v
            }
            None => 0.0,
        };
        frame.fill(T::from_sample(v));
    }
}

impl Playback {
    /// Checks that the playback device `name` exists and can be configured, without holding it;
    /// says what it would be opened as.
    ///
    /// # Errors
    /// [`DeviceError`].
    pub fn probe(name: &str) -> Result<String, DeviceError> {
        let device = find(name, Direction::Output)?;
        let (config, format) = pick_config(&device, name, Direction::Output, (0, 0))?;
        Ok(format!(
            "device `{}` at {} Hz, {} ch, {format}",
            device
                .description()
                .map(|d| d.name().to_string())
                .unwrap_or_else(|_| name.to_string()),
            config.sample_rate,
            config.channels
        ))
    }

    /// Opens the playback device `name` and starts it (playing silence until samples come).
    ///
    /// # Errors
    /// [`DeviceError`].
    pub fn start(name: &str) -> Result<Self, DeviceError> {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let q = Arc::clone(&queue);
        let (held, config) = Held::open(
            name,
            Direction::Output,
            (0, 0),
            move |device, config, format, on_error| {
                let channels = usize::from(config.channels.max(1));
                macro_rules! output_stream {
                    ($t:ty) => {
                        device.build_output_stream::<$t, _, _>(
                            config,
                            move |data: &mut [$t], _: &cpal::OutputCallbackInfo| {
                                fill(data, channels, &q)
                            },
                            on_error,
                            None,
                        )
                    };
                }
                by_format!(format, output_stream).map_err(|e| e.to_string())
            },
        )?;
        Ok(Self {
            rate: config.sample_rate,
            detail: format!("device {}", held.detail),
            queue,
            held,
        })
    }

    /// Queues mono samples at [`Playback::rate`].
    pub fn push(&self, samples: &[f32]) {
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        q.samples.extend(samples.iter().map(|s| s.clamp(-1.0, 1.0)));
    }

    /// Samples queued and not yet played.
    pub fn queued(&self) -> usize {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .samples
            .len()
    }

    /// Samples the device has played since it started.
    pub fn played(&self) -> u64 {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).played
    }

    /// Drops what has not been played; the device goes silent at its next callback.
    pub fn clear(&self) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .samples
            .clear();
    }

    /// Why playback stopped, if it did.
    pub fn failure(&self) -> Option<String> {
        self.held.failure()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmix_averages_channels_and_converts_formats() {
        let mut out = Vec::new();
        downmix(&[i16::MAX, 0, i16::MIN, i16::MIN], 2, &mut out);
        assert_eq!(out.len(), 2);
        assert!((out[0] - 0.5).abs() < 1e-3, "{out:?}");
        assert!((out[1] + 1.0).abs() < 1e-3, "{out:?}");
        downmix(&[0.25f32, -0.5], 1, &mut out);
        assert_eq!(out, vec![0.25, -0.5]);
        downmix(&[128u8, 255], 1, &mut out);
        assert!(out[0].abs() < 1e-6 && out[1] > 0.99, "{out:?}");
    }

    #[test]
    fn fill_plays_the_queue_in_order_then_silence_on_every_channel() {
        let q = Mutex::new(Queue::default());
        q.lock().unwrap().samples.extend([0.5f32, -0.5]);
        let mut out = [1.0f32; 6];
        fill(&mut out, 2, &q);
        assert_eq!(out, [0.5, 0.5, -0.5, -0.5, 0.0, 0.0]);
        assert_eq!(q.lock().unwrap().played, 2);
        let mut out = [7i16; 2];
        q.lock().unwrap().samples.push_back(1.0);
        fill(&mut out, 1, &q);
        assert_eq!(out, [i16::MAX, 0]);
    }
}
