//! Messages of the audio service (target `audio`): voice in (voice activity, end of turn,
//! streaming speech-to-text) and voice out (text-to-speech, barge-in).
//!
//! Positions in the audio are sample indices at 16 kHz counted from the start of the source
//! (`sample`), with the same in milliseconds (`audio_ms`), so a boundary is exact whatever the
//! source's own rate was. Moments are milliseconds of the machine's monotonic clock
//! (`CLOCK_MONOTONIC`, shared by every process on the machine), so one utterance's stages can be
//! laid side by side across services.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// The sample rate every position refers to.
pub const SAMPLE_RATE: u32 = 16_000;

/// Request body of `audio.transcribe`: give exactly one of `path`, `wav` or `pcm`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transcribe {
    /// A WAV file on this machine, read by the audio service (any length).
    #[serde(default)]
    pub path: Option<String>,
    /// The bytes of a WAV file (bounded by the bus's frame size).
    #[serde(default)]
    pub wav: Option<ByteBuf>,
    /// Raw PCM: signed 16-bit little-endian, interleaved, at `pcm_rate` with `pcm_channels`.
    #[serde(default)]
    pub pcm: Option<ByteBuf>,
    #[serde(default)]
    pub pcm_rate: Option<u32>,
    #[serde(default)]
    pub pcm_channels: Option<u16>,
    /// Feed the audio at real-time pace, as a microphone would, instead of as fast as possible.
    #[serde(default)]
    pub realtime: bool,
    /// Stream speech boundaries and partial transcripts as partial frames ([`Update`]).
    #[serde(default)]
    pub partials: bool,
    /// Hand each final transcript to the agent (`agent.message`), as a voice turn does.
    #[serde(default)]
    pub to_agent: bool,
}

/// Where speech started or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Boundary {
    pub utterance: u64,
    /// 16 kHz sample index from the start of the source.
    pub sample: u64,
    pub audio_ms: f64,
    /// When it was detected (monotonic ms).
    pub at_ms: f64,
}

/// One moment in the handling of an utterance (monotonic ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub at_ms: f64,
}

/// A transcript of one utterance: partial (while the user speaks) or final (end of turn).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub utterance: u64,
    pub text: String,
    pub is_final: bool,
    pub start_sample: u64,
    pub end_sample: u64,
    pub audio_start_ms: f64,
    pub audio_end_ms: f64,
    /// How the turn ended: `silence` (the hangover passed), `complete` (the partial already
    /// read as a complete command, so a shorter silence sufficed), `max_length`, `end_of_input`
    /// or `stopped` (push-to-talk released). Empty on partials.
    #[serde(default)]
    pub end_reason: String,
    /// Milliseconds the speech-to-text took for this transcript.
    pub decode_ms: f64,
    /// The encoder context used (whisper `audio_ctx`; 1500 is the full 30 s window).
    pub audio_ctx: u32,
    /// The decoder's probability for the least likely word (0–1; 1.0 with no words): how sure
    /// the speech-to-text is of the whole transcript. Absent from older senders: 1.0.
    #[serde(default = "sure")]
    pub confidence: f32,
    /// `speech_started`, `speech_ended`, `decode_started`, `transcript` … (monotonic ms). A
    /// reading heard again adds `{hearing}_decode_started` / `{hearing}_transcript` (`guided`,
    /// `second`, `second_guided`, `in_words`): when that hearing ran, which for one run ahead of
    /// need is before the turn took it, and may be before `speech_ended`.
    #[serde(default)]
    pub stages: Vec<Stage>,
}

/// Partial frame of `audio.transcribe`: one of `boundary` or `transcript`, named by `event`
/// (`speech_started`, `speech_ended`, `partial`, `final`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Update {
    pub event: String,
    #[serde(default)]
    pub boundary: Option<Boundary>,
    #[serde(default)]
    pub transcript: Option<Transcript>,
}

/// Reply of `audio.transcribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcribed {
    /// The final transcript of every utterance, in order.
    pub utterances: Vec<Transcript>,
    /// Length of the input.
    pub audio_ms: f64,
    /// The input's own format.
    pub source_rate: u32,
    pub source_channels: u16,
    /// Wall time of the whole request.
    pub elapsed_ms: f64,
    /// Time spent in speech-to-text (partials and finals) and its real-time factor
    /// (`stt_ms / audio_ms`).
    pub stt_ms: f64,
    pub rtf: f64,
    /// Utterances the agent accepted, when `to_agent` was set.
    #[serde(default)]
    pub sent_to_agent: u32,
    /// Set when the input ended early (a truncated file): what was read is transcribed.
    #[serde(default)]
    pub warning: Option<String>,
}

/// Request body of `audio.speak`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Speak {
    pub text: String,
    /// The utterance this answers, for the events.
    #[serde(default)]
    pub utterance: Option<u64>,
    /// Write the speech to this WAV file instead of the output device.
    #[serde(default)]
    pub wav_out: Option<String>,
    /// espeak-ng voice (default `audio.tts_voice`).
    #[serde(default)]
    pub voice: Option<String>,
    /// Words per minute (default `audio.tts_rate`).
    #[serde(default)]
    pub rate: Option<u32>,
}

/// Reply of `audio.speak`, when playback finished or was cut off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spoken {
    /// Length of the synthesised speech.
    pub audio_ms: f64,
    /// How much of it was played.
    pub played_ms: f64,
    /// Barge-in (or `audio.stop`) cut it off.
    pub interrupted: bool,
    /// Where it went: `device NAME`, `wav PATH`, or `none`.
    pub output: String,
    /// From the request to the first sample handed to the output.
    pub first_audio_ms: f64,
}

/// Event `audio.speaking` (started / finished) and `audio.barge_in`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Speaking {
    #[serde(default)]
    pub utterance: Option<u64>,
    pub at_ms: f64,
    /// `started`, `finished`, `interrupted`; for a barge-in, `interrupted` (playback stopped)
    /// or `cancelled` (the voice turn was still with the agent, and was cancelled).
    pub state: String,
    /// For a barge-in: from the speech onset that caused it to playback stopping (or to the
    /// turn being cancelled).
    #[serde(default)]
    pub stop_latency_ms: Option<f64>,
}

/// Request body of `audio.listen`: `start` or `stop` a push-to-talk turn, or `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub action: String,
}

/// Reply of `audio.listen` (and `audio.feed`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListenState {
    /// `push_to_talk` or `wake`.
    pub mode: String,
    /// A push-to-talk turn is open, or the wake listener runs.
    pub listening: bool,
    /// The configured input and whether it works (`default`, a device name, `bus`, `none`).
    pub input: String,
    pub input_ok: bool,
    /// Why not, or what it is.
    pub detail: String,
    /// Follow-up window open until (monotonic ms), when in wake mode after an answer.
    #[serde(default)]
    pub follow_up_until_ms: Option<f64>,
}

/// One capture or playback device (an ALSA PCM on Linux).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AudioDevice {
    /// What `audio.input` / `audio.output` take.
    pub id: String,
    pub description: String,
    pub input: bool,
    pub output: bool,
}

/// Reply of `audio.devices`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    pub devices: Vec<AudioDevice>,
    /// Why there is no list (no sound system), if so.
    #[serde(default)]
    pub error: Option<String>,
    /// The live input as `audio.listen status` reports it.
    pub input: ListenState,
    /// Where spoken replies go, in words.
    pub output: String,
}

/// Request body of `audio.feed`: PCM for the live input when `audio.input = "bus"` (signed
/// 16-bit little-endian mono at `rate`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feed {
    pub pcm: ByteBuf,
    #[serde(default = "default_rate")]
    pub rate: u32,
}

fn sure() -> f32 {
    1.0
}

fn default_rate() -> u32 {
    SAMPLE_RATE
}
