//! `ming-config`: MingLLM's typed configuration.
//!
//! The defaults live in `config/default.toml`, which is embedded in every binary; figment layers
//! `/etc/mingllm/config.toml`, the user's `~/.config/mingllm/config.toml`, an explicit `--config`
//! file and `MING_*` environment variables over it. Everything is validated before any socket is
//! bound, and every problem is reported at once, each naming its key.
//!
//! # Layout
//! - [`Config`] and its sections: what can be configured.
//! - [`Config::load`]: layering and validation; [`ConfigError`] lists what is wrong.
//! - [`Paths`]: resolution of the runtime, log, data and model directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod models;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The top-level sections.
const SECTIONS: [&str; 10] = [
    "paths",
    "bus",
    "supervisor",
    "inference",
    "memory",
    "audio",
    "agent",
    "training",
    "cloud",
    "services",
];

/// The embedded default configuration.
pub const DEFAULT_TOML: &str = include_str!("../default.toml");

/// Everything that can be configured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub paths: PathSettings,
    pub bus: BusSettings,
    pub supervisor: SupervisorSettings,
    pub inference: InferenceSettings,
    pub memory: MemorySettings,
    pub audio: AudioSettings,
    pub agent: AgentSettings,
    pub training: TrainingSettings,
    pub cloud: CloudSettings,
    pub services: BTreeMap<String, ServiceSettings>,
}

/// The agent (issue #6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    pub documents_dir: String,
    pub mail: String,
    pub tools: BTreeMap<String, ExternalTool>,
    /// The learned router acts when its calibrated confidence is at least this (0..1).
    pub router_threshold: f32,
    /// The documents folder is indexed into memory at start and then every this many minutes
    /// (only what changed; 0: only when asked).
    pub documents_index_minutes: u64,
    /// A question the agent asked (yes or no before deleting, how long for a timer) waits this
    /// many seconds for the session's next message.
    pub follow_up_s: u64,
    /// A timer or reminder that fires is said aloud (`audio.speak`) as well as published.
    pub speak_reminders: bool,
}

/// The training service (issue #8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSettings {
    /// Threads the training math may use (the voice path keeps the rest).
    pub threads: u32,
    /// The process's nice value (0..19): below the voice path when the CPU is contended.
    pub nice: i32,
    pub epochs: u32,
    pub hidden: u32,
    /// Width of the hashed word n-gram features next to the embedding (0: embedding only).
    pub ngram_buckets: u32,
    pub learning_rate: f64,
    pub batch_size: u32,
    /// Weight of a user's correction relative to an ordinary example.
    pub correction_weight: f32,
    /// Weight of an undone action (trained as `none` for its utterance).
    pub undone_weight: f32,
    /// Train by itself every this many minutes when enough is new and the machine is idle
    /// (0: only on request).
    pub schedule_minutes: u64,
    /// New interactions needed before a scheduled run trains.
    pub schedule_min_new: u32,
    /// A scheduled run waits while the 1-minute load average per core is above this.
    pub idle_load: f32,
}

/// A tool implemented by an external program (JSON on stdin, JSON on stdout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalTool {
    pub description: String,
    /// JSON Schema of the arguments, as JSON text.
    pub parameters: String,
    pub command: Vec<String>,
    #[serde(default = "default_tool_timeout")]
    pub timeout_ms: u64,
}

fn default_tool_timeout() -> u64 {
    5000
}

/// The cloud handoff (issue #7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudSettings {
    pub providers: BTreeMap<String, ProviderSettings>,
    pub allow: Vec<String>,
    pub private_names: Vec<String>,
    pub ticket_ttl_s: u64,
    pub max_answer_bytes: u64,
    pub timeout_ms: u64,
}

/// One cloud provider (an OpenAI-compatible chat completions endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    pub endpoint: String,
    pub model: String,
    /// Environment variable holding the API key; empty: no key is sent.
    #[serde(default)]
    pub api_key_env: String,
}

/// The memory service (issue #4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySettings {
    /// `edge` (embedded qdrant-edge store in `dir`) or `qdrant` (a Qdrant server at `qdrant_url`).
    pub backend: String,
    /// The store's directory; empty: `<data_dir>/memory`.
    pub dir: String,
    /// The embedding model: a name from models/manifest.toml with role `embedding`.
    pub embedding_model: String,
    /// CPU threads for embedding; 0: all cores.
    pub threads: u32,
    /// The longest text one memory may hold, in bytes (longer: `TooLarge`; split it first).
    pub max_text_bytes: u32,
    /// Cosine similarity at or above which a new memory of the same kind updates the old one.
    pub dedup_threshold: f32,
    /// Largest `k` a recall may ask for.
    pub max_k: u32,
    /// How often expired memories are purged from the store, in seconds.
    pub purge_interval_s: u64,
    /// Half-life, in days, of an episode's weight in recall ranking; 0: episodes do not decay.
    pub episode_half_life_days: f32,
    /// Decayed memories whose weight falls below this are forgotten by the purge; 0: never.
    pub forget_below: f32,
    /// The Qdrant server for `backend = "qdrant"` (e.g. `http://qdrant.local:6334`).
    pub qdrant_url: String,
    /// Environment variable holding the Qdrant API key; empty: none.
    pub qdrant_api_key_env: String,
    /// The collection on the Qdrant server.
    pub qdrant_collection: String,
}

/// The audio service (issue #5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSettings {
    /// Speech-to-text model: a name from models/manifest.toml with role `stt`.
    pub stt_model: String,
    /// Voice activity model (role `vad`).
    pub vad_model: String,
    /// CPU threads for speech-to-text; 0: all cores.
    pub threads: u32,
    /// Beam width of the speech-to-text decoder; 1: greedy.
    pub stt_beam: u32,
    /// Words the speech-to-text decoder is told to expect (whisper's initial prompt).
    pub stt_prompt: String,
    /// Encoder frames (20 ms each) beyond the audio's own length: more is more accurate and
    /// slower.
    pub stt_ctx_margin: u32,
    /// A second speech-to-text model (role `stt`) that hears a live voice turn again when the
    /// agent could not act on the first model's transcript without its LLM or at all; empty:
    /// none.
    pub stt_second_model: String,
    /// `stt_ctx_margin` for the second model.
    pub stt_second_ctx_margin: u32,
    /// Before the second model: a live turn the agent could not act on without its LLM is
    /// decoded again by the first model, guided toward the commands the agent knows
    /// (`agent.patterns`), and that reading goes to the agent's rules if the audio supports
    /// it nearly as well as the free one.
    pub stt_guide: bool,
    /// The most log-probability (nats, summed over the words) a guided reading may give up
    /// against the decoder's own choices.
    pub stt_guide_max_regret: f32,
    /// Live input: `default` (the default capture device), a device name, `bus` (PCM sent with
    /// `audio.feed`), or `none`.
    pub input: String,
    /// The capture device's rate and channel count to open (0: 16 kHz mono when the device
    /// offers it, else its default). The service downmixes and resamples to 16 kHz mono.
    pub capture_rate: u32,
    pub capture_channels: u16,
    /// Speech output: `default`, a device name, or `none` (replies are then not played; a
    /// request may still ask for a WAV file).
    pub output: String,
    /// `push_to_talk` (`ming listen` opens and closes a turn) or `wake` (always listening for
    /// `wake_phrase`).
    pub mode: String,
    pub wake_phrase: String,
    /// After an answer, seconds in which the user may speak again without the wake phrase.
    pub follow_up_s: f32,
    /// Speech probability that starts speech, and below which it pauses.
    pub vad_threshold: f32,
    pub vad_off_threshold: f32,
    /// Silence that ends a turn, and the shorter one that suffices when the transcript so far
    /// reads as a complete command (ms).
    pub hangover_ms: u32,
    pub early_hangover_ms: u32,
    /// The longer silence that ends a turn whose transcript trails off ("set a timer for") (ms).
    pub incomplete_hangover_ms: u32,
    /// The silence that ends a turn whose transcript reads as complete but whose last word
    /// whisper is unsure of (ms).
    pub unsure_hangover_ms: u32,
    /// Quiet sound (ms) after which the speculative decode starts, before Silero pauses; 0: at
    /// Silero's pause.
    pub early_decode_ms: u32,
    /// Audio kept before the detected start of speech (ms).
    pub preroll_ms: u32,
    /// New audio between partial transcripts while the user speaks (ms); 0: none.
    pub partial_interval_ms: u32,
    /// Longest utterance; longer speech is cut into turns of this length (ms).
    pub max_utterance_ms: u32,
    /// Text-to-speech engine: `espeak-ng` or `piper` (each a separate process).
    pub tts_engine: String,
    /// espeak-ng's command and voice.
    pub tts_command: String,
    pub tts_voice: String,
    /// The Piper voice: a manifest model of role `tts` (its config: `<name>-config`).
    pub tts_piper_voice: String,
    /// Speaking rate, words per minute (Piper: 175 is its natural pace).
    pub tts_rate: u32,
    /// Longest text `audio.speak` takes, in bytes.
    pub max_speak_bytes: u32,
}

/// The inference service (issue #3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSettings {
    pub model: String,
    pub threads: u32,
    pub context_tokens: u32,
    pub batch_tokens: u32,
    pub max_tokens: u32,
    pub prompt_cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSettings {
    pub runtime_dir: String,
    pub log_dir: String,
    pub data_dir: String,
    pub model_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    pub max_frame_bytes: u64,
    pub heartbeat_ms: u64,
    pub liveness: u32,
    pub default_timeout_ms: u64,
    pub queue_limit: u32,
    pub broker_spin_us: u64,
    pub client_spin_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupervisorSettings {
    pub drain_grace_ms: u64,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub backoff_reset_s: u64,
    pub max_restarts: u32,
    pub window_s: u64,
    pub log_max_bytes: u64,
    pub allow_unsandboxed: bool,
    pub bin_dir: String,
}

/// How one service is run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    #[serde(default = "yes")]
    pub enabled: bool,
    pub command: Vec<String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Whether the service may use the network. Only cloud-gateway should.
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// When the supervisor restarts a service that exited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whatever the exit status.
    #[default]
    Always,
    /// Only after a non-zero exit or a signal.
    OnFailure,
    /// Never; an exit leaves the service stopped (or failed, if it failed).
    Never,
}

/// Where the configuration comes from, beyond the embedded defaults.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// An explicit file (`--config`); it must exist.
    pub file: Option<PathBuf>,
    /// Skip `/etc/mingllm` and the user's config file (tests, reproducible runs).
    pub skip_system_and_user: bool,
}

/// One problem with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The dotted key, e.g. `bus.heartbeat_ms`.
    pub key: String,
    /// What was found, when known.
    pub value: Option<String>,
    /// What was expected.
    pub expected: String,
    /// Which layer it came from, when known.
    pub source: Option<String>,
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`", self.key)?;
        if let Some(v) = &self.value {
            write!(f, " = {v}")?;
        }
        write!(f, ": expected {}", self.expected)?;
        if let Some(s) = &self.source {
            write!(f, " (from {s})")?;
        }
        Ok(())
    }
}

/// The configuration could not be used. Lists every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:\n{}", .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<ConfigProblem>,
}

pub type ConfigResult<T> = Result<T, ConfigError>;

impl Config {
    /// Loads and validates the layered configuration.
    ///
    /// # Errors
    /// A [`ConfigError`] listing every problem: unreadable or invalid TOML, unknown keys, wrong
    /// types, values out of range, a `--config` file that does not exist.
    pub fn load(opts: &LoadOptions) -> ConfigResult<Self> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if !opts.skip_system_and_user {
            fig = fig.merge(Toml::file("/etc/mingllm/config.toml"));
            if let Some(dir) = config_home() {
                fig = fig.merge(Toml::file(dir.join("mingllm/config.toml")));
            }
        }
        if let Some(file) = &opts.file {
            if !file.is_file() {
                return Err(ConfigError {
                    problems: vec![ConfigProblem {
                        key: "--config".into(),
                        value: Some(file.display().to_string()),
                        expected: "an existing, readable TOML file".into(),
                        source: None,
                    }],
                });
            }
            fig = fig.merge(Toml::file(file));
        }
        fig = fig.merge(
            Env::prefixed("MING_")
                .split("__")
                // Only the config sections: other MING_* variables (MING_CONFIG, MING_SERVICE,
                // MING_SANDBOX) are not settings.
                .filter(|k| {
                    let first = k
                        .as_str()
                        .split(['.', '_'])
                        .next()
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    SECTIONS.contains(&first.as_str())
                }),
        );
        Self::from_figment(&fig)
    }

    /// Parses and validates a configuration from TOML text layered over the defaults (no files,
    /// no environment).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml_over_defaults(text: &str) -> ConfigResult<Self> {
        let fig = Figment::from(Toml::string(DEFAULT_TOML)).merge(Toml::string(text));
        Self::from_figment(&fig)
    }

    fn from_figment(fig: &Figment) -> ConfigResult<Self> {
        // Section by section (and service by service), so that one bad value does not hide the
        // next: serde stops at the first error inside one struct.
        let mut problems = Vec::new();
        let mut section = |key: &str| -> Option<figment::value::Value> {
            match fig.find_value(key) {
                Ok(v) => Some(v),
                Err(e) => {
                    problems.extend(e.into_iter().map(|e| figment_problem(fig, e)));
                    None
                }
            }
        };
        let root = section("");
        let paths = section("paths");
        let bus = section("bus");
        let supervisor = section("supervisor");
        let services = section("services");
        let inference = section("inference");
        let memory = section("memory");
        let audio = section("audio");
        let cloud = section("cloud");
        let agent = section("agent");
        let training = section("training");
        if let Some(figment::value::Value::Dict(_, root)) = &root {
            for key in root.keys() {
                if !SECTIONS.contains(&key.as_str()) {
                    problems.push(ConfigProblem {
                        key: key.clone(),
                        value: Some(format!("unknown key `{key}`")),
                        expected: format!("one of: {}", SECTIONS.join(", ")),
                        source: fig.find_metadata(key).map(|m| m.name.to_string()),
                    });
                }
            }
        }
        let paths = paths.and_then(|_| take::<PathSettings>(fig, "paths", &mut problems));
        let bus = bus.and_then(|_| take::<BusSettings>(fig, "bus", &mut problems));
        let supervisor =
            supervisor.and_then(|_| take::<SupervisorSettings>(fig, "supervisor", &mut problems));
        let inference =
            inference.and_then(|_| take::<InferenceSettings>(fig, "inference", &mut problems));
        let memory = memory.and_then(|_| take::<MemorySettings>(fig, "memory", &mut problems));
        let audio = audio.and_then(|_| take::<AudioSettings>(fig, "audio", &mut problems));
        let cloud = cloud.and_then(|_| take::<CloudSettings>(fig, "cloud", &mut problems));
        let agent = agent.and_then(|_| take::<AgentSettings>(fig, "agent", &mut problems));
        let training =
            training.and_then(|_| take::<TrainingSettings>(fig, "training", &mut problems));
        let mut service_map = BTreeMap::new();
        if let Some(figment::value::Value::Dict(_, dict)) = &services {
            for name in dict.keys() {
                if let Some(svc) =
                    take::<ServiceSettings>(fig, &format!("services.{name}"), &mut problems)
                {
                    service_map.insert(name.clone(), svc);
                }
            }
        } else if services.is_some() {
            problems.push(ConfigProblem {
                key: "services".into(),
                value: None,
                expected: "a table of services".into(),
                source: None,
            });
        }
        let (
            Some(paths),
            Some(bus),
            Some(supervisor),
            Some(inference),
            Some(memory),
            Some(audio),
            Some(agent),
            Some(training),
            Some(cloud),
            true,
        ) = (
            paths,
            bus,
            supervisor,
            inference,
            memory,
            audio,
            agent,
            training,
            cloud,
            problems.is_empty(),
        )
        else {
            return Err(ConfigError { problems });
        };
        let cfg = Config {
            paths,
            bus,
            supervisor,
            inference,
            memory,
            audio,
            agent,
            training,
            cloud,
            services: service_map,
        };
        let problems = cfg.validate();
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError { problems })
        }
    }

    /// Range and consistency checks that types alone cannot express.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut check = |ok: bool, key: &str, value: String, expected: &str| {
            if !ok {
                out.push(ConfigProblem {
                    key: key.into(),
                    value: Some(value),
                    expected: expected.into(),
                    source: None,
                });
            }
        };
        let b = &self.bus;
        check(
            (1024..=1 << 30).contains(&b.max_frame_bytes),
            "bus.max_frame_bytes",
            b.max_frame_bytes.to_string(),
            "between 1024 and 1073741824",
        );
        check(
            (10..=60_000).contains(&b.heartbeat_ms),
            "bus.heartbeat_ms",
            b.heartbeat_ms.to_string(),
            "between 10 and 60000",
        );
        check(
            (1..=100).contains(&b.liveness),
            "bus.liveness",
            b.liveness.to_string(),
            "between 1 and 100",
        );
        check(
            b.default_timeout_ms > 0,
            "bus.default_timeout_ms",
            b.default_timeout_ms.to_string(),
            "more than 0",
        );
        check(
            b.broker_spin_us <= 10_000,
            "bus.broker_spin_us",
            b.broker_spin_us.to_string(),
            "between 0 and 10000",
        );
        check(
            b.client_spin_us <= 10_000,
            "bus.client_spin_us",
            b.client_spin_us.to_string(),
            "between 0 and 10000",
        );
        let s = &self.supervisor;
        check(
            s.backoff_initial_ms <= s.backoff_max_ms,
            "supervisor.backoff_initial_ms",
            s.backoff_initial_ms.to_string(),
            "at most supervisor.backoff_max_ms",
        );
        check(
            s.window_s > 0,
            "supervisor.window_s",
            s.window_s.to_string(),
            "more than 0",
        );
        check(
            s.log_max_bytes >= 4096,
            "supervisor.log_max_bytes",
            s.log_max_bytes.to_string(),
            "at least 4096",
        );
        let i = &self.inference;
        check(
            (256..=1 << 20).contains(&i.context_tokens),
            "inference.context_tokens",
            i.context_tokens.to_string(),
            "between 256 and 1048576",
        );
        check(
            (1..=i.context_tokens.max(1)).contains(&i.batch_tokens),
            "inference.batch_tokens",
            i.batch_tokens.to_string(),
            "between 1 and inference.context_tokens",
        );
        check(
            i.max_tokens >= 1,
            "inference.max_tokens",
            i.max_tokens.to_string(),
            "at least 1",
        );
        let t = &self.training;
        check(
            (1..=256).contains(&t.threads),
            "training.threads",
            t.threads.to_string(),
            "between 1 and 256",
        );
        check(
            (0..=19).contains(&t.nice),
            "training.nice",
            t.nice.to_string(),
            "between 0 and 19",
        );
        check(
            (1..=10_000).contains(&t.epochs),
            "training.epochs",
            t.epochs.to_string(),
            "between 1 and 10000",
        );
        check(
            (4..=4096).contains(&t.hidden),
            "training.hidden",
            t.hidden.to_string(),
            "between 4 and 4096",
        );
        check(
            t.ngram_buckets <= 65_536,
            "training.ngram_buckets",
            t.ngram_buckets.to_string(),
            "at most 65536",
        );
        check(
            t.learning_rate > 0.0 && t.learning_rate < 1.0,
            "training.learning_rate",
            t.learning_rate.to_string(),
            "between 0 and 1",
        );
        check(
            (1..=65_536).contains(&t.batch_size),
            "training.batch_size",
            t.batch_size.to_string(),
            "between 1 and 65536",
        );
        check(
            t.correction_weight > 0.0 && t.undone_weight > 0.0,
            "training.correction_weight",
            format!(
                "{} / undone_weight {}",
                t.correction_weight, t.undone_weight
            ),
            "more than 0 (both weights)",
        );
        check(
            self.agent.documents_index_minutes <= 7 * 24 * 60,
            "agent.documents_index_minutes",
            self.agent.documents_index_minutes.to_string(),
            "at most 10080 (a week); 0: only when asked",
        );
        check(
            (1..=3600).contains(&self.agent.follow_up_s),
            "agent.follow_up_s",
            self.agent.follow_up_s.to_string(),
            "between 1 and 3600 (seconds)",
        );
        check(
            (0.0..=1.0).contains(&self.agent.router_threshold),
            "agent.router_threshold",
            self.agent.router_threshold.to_string(),
            "between 0 and 1",
        );
        let m = &self.memory;
        check(
            m.backend == "edge" || m.backend == "qdrant",
            "memory.backend",
            format!("{:?}", m.backend),
            "\"edge\" or \"qdrant\"",
        );
        check(
            m.backend != "qdrant" || !m.qdrant_url.is_empty(),
            "memory.qdrant_url",
            format!("{:?}", m.qdrant_url),
            "a URL such as http://qdrant.local:6334 when memory.backend = \"qdrant\"",
        );
        check(
            m.backend != "qdrant" || self.services.get("memory").is_some_and(|s| s.network),
            "services.memory.network",
            "false".into(),
            "true when memory.backend = \"qdrant\" (a Qdrant server is reached over the network; only what config allows may use it)",
        );
        check(
            m.dedup_threshold > 0.0 && m.dedup_threshold <= 1.0,
            "memory.dedup_threshold",
            m.dedup_threshold.to_string(),
            "more than 0 and at most 1 (1: only exact duplicates)",
        );
        check(
            (1..=1000).contains(&m.max_k),
            "memory.max_k",
            m.max_k.to_string(),
            "between 1 and 1000",
        );
        check(
            (16..=1 << 20).contains(&m.max_text_bytes),
            "memory.max_text_bytes",
            m.max_text_bytes.to_string(),
            "between 16 and 1048576",
        );
        check(
            m.purge_interval_s >= 1,
            "memory.purge_interval_s",
            m.purge_interval_s.to_string(),
            "at least 1",
        );
        check(
            m.episode_half_life_days >= 0.0 && (0.0..1.0).contains(&m.forget_below),
            "memory.episode_half_life_days",
            format!(
                "{} (forget_below {})",
                m.episode_half_life_days, m.forget_below
            ),
            "a half-life of 0 or more days and forget_below in [0, 1)",
        );
        let a = &self.audio;
        check(
            a.stt_ctx_margin <= 1500,
            "audio.stt_ctx_margin",
            a.stt_ctx_margin.to_string(),
            "at most 1500 (whisper's whole window)",
        );
        check(
            a.stt_second_ctx_margin <= 1500,
            "audio.stt_second_ctx_margin",
            a.stt_second_ctx_margin.to_string(),
            "at most 1500 (whisper's whole window)",
        );
        check(
            a.stt_guide_max_regret.is_finite() && (0.0..=50.0).contains(&a.stt_guide_max_regret),
            "audio.stt_guide_max_regret",
            a.stt_guide_max_regret.to_string(),
            "a number of nats from 0 to 50",
        );
        check(
            (1..=8).contains(&a.stt_beam),
            "audio.stt_beam",
            a.stt_beam.to_string(),
            "between 1 (greedy) and 8",
        );
        check(
            a.mode == "push_to_talk" || a.mode == "wake",
            "audio.mode",
            format!("{:?}", a.mode),
            "\"push_to_talk\" or \"wake\"",
        );
        check(
            a.mode != "wake" || !a.wake_phrase.trim().is_empty(),
            "audio.wake_phrase",
            format!("{:?}", a.wake_phrase),
            "a word or two when audio.mode = \"wake\"",
        );
        check(
            0.0 < a.vad_off_threshold
                && a.vad_off_threshold <= a.vad_threshold
                && a.vad_threshold < 1.0,
            "audio.vad_threshold",
            format!("{} (off {})", a.vad_threshold, a.vad_off_threshold),
            "0 < vad_off_threshold <= vad_threshold < 1",
        );
        check(
            (64..=3000).contains(&a.hangover_ms)
                && (32..=a.hangover_ms).contains(&a.early_hangover_ms),
            "audio.hangover_ms",
            format!("{} (early {})", a.hangover_ms, a.early_hangover_ms),
            "hangover_ms between 64 and 3000, early_hangover_ms between 32 and hangover_ms",
        );
        check(
            a.early_decode_ms == 0 || (32..=a.hangover_ms).contains(&a.early_decode_ms),
            "audio.early_decode_ms",
            a.early_decode_ms.to_string(),
            "0 (off) or between 32 and hangover_ms",
        );
        check(
            (a.hangover_ms..=5000).contains(&a.incomplete_hangover_ms),
            "audio.incomplete_hangover_ms",
            a.incomplete_hangover_ms.to_string(),
            "between hangover_ms and 5000",
        );
        check(
            (a.hangover_ms..=a.incomplete_hangover_ms).contains(&a.unsure_hangover_ms),
            "audio.unsure_hangover_ms",
            a.unsure_hangover_ms.to_string(),
            "between hangover_ms and incomplete_hangover_ms",
        );
        check(
            a.preroll_ms <= 1000 && a.partial_interval_ms <= 10_000,
            "audio.preroll_ms",
            format!(
                "{} (partial_interval_ms {})",
                a.preroll_ms, a.partial_interval_ms
            ),
            "preroll_ms at most 1000 and partial_interval_ms at most 10000",
        );
        check(
            (1_000..=30_000).contains(&a.max_utterance_ms),
            "audio.max_utterance_ms",
            a.max_utterance_ms.to_string(),
            "between 1000 and 30000 (whisper's window is 30 s)",
        );
        check(
            (0.0..=600.0).contains(&a.follow_up_s),
            "audio.follow_up_s",
            a.follow_up_s.to_string(),
            "between 0 and 600",
        );
        check(
            matches!(a.tts_engine.as_str(), "espeak-ng" | "piper"),
            "audio.tts_engine",
            a.tts_engine.clone(),
            "\"espeak-ng\" or \"piper\"",
        );
        check(
            (80..=500).contains(&a.tts_rate),
            "audio.tts_rate",
            a.tts_rate.to_string(),
            "between 80 and 500 words per minute",
        );
        check(
            a.capture_rate == 0 || (4_000..=384_000).contains(&a.capture_rate),
            "audio.capture_rate",
            a.capture_rate.to_string(),
            "0 (automatic) or a rate between 4000 and 384000 Hz",
        );
        check(
            a.capture_channels <= 32,
            "audio.capture_channels",
            a.capture_channels.to_string(),
            "0 (automatic) or 1 to 32",
        );
        check(
            (16..=1 << 20).contains(&a.max_speak_bytes),
            "audio.max_speak_bytes",
            a.max_speak_bytes.to_string(),
            "between 16 and 1048576",
        );
        for (name, svc) in &self.services {
            check(
                valid_service_name(name),
                &format!("services.{name}"),
                format!("{name:?}"),
                "a service name of lowercase letters, digits and '-' (not `broker` or `supervisor`)",
            );
            if svc.enabled {
                check(
                    svc.command.first().is_some_and(|c| !c.is_empty()),
                    &format!("services.{name}.command"),
                    format!("{:?}", svc.command),
                    "a non-empty list: the program, then its arguments",
                );
            }
        }
        out
    }
}

/// Whether `name` can be a service name on the bus.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name != "broker"
        && name != "supervisor"
}

fn take<T: serde::de::DeserializeOwned>(
    fig: &Figment,
    key: &str,
    problems: &mut Vec<ConfigProblem>,
) -> Option<T> {
    match fig.extract_inner::<T>(key) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.extend(e.into_iter().map(|mut e| {
                // figment reports the inner key after the field; put it first: `bus.heartbeat_ms`.
                let parts: Vec<&str> = key.split('.').collect();
                if e.path
                    .ends_with(&parts.iter().map(|p| p.to_string()).collect::<Vec<_>>())
                {
                    e.path.truncate(e.path.len() - parts.len());
                } else if e.path.last().map(String::as_str) == Some(key) {
                    e.path.pop();
                }
                e.path.insert(0, key.to_string());
                figment_problem(fig, e)
            }));
            None
        }
    }
}

fn figment_problem(fig: &Figment, e: figment::Error) -> ConfigProblem {
    use figment::error::Kind;
    let key = if e.path.is_empty() {
        "(top level)".to_string()
    } else {
        e.path.join(".")
    };
    let source = e
        .metadata
        .as_ref()
        .map(|m| match &m.source {
            Some(src) => format!("{} {src}", m.name),
            None => m.name.to_string(),
        })
        .or_else(|| fig.find_metadata(&key).map(|m| m.name.to_string()));
    let (value, expected) = match &e.kind {
        Kind::InvalidType(actual, exp) => (Some(actual.to_string()), exp.clone()),
        Kind::InvalidValue(actual, exp) => (Some(actual.to_string()), exp.clone()),
        Kind::UnknownField(field, known) => (
            Some(format!("unknown key `{field}`")),
            format!("one of: {}", known.join(", ")),
        ),
        Kind::UnknownVariant(v, known) => (
            Some(format!("{v:?}")),
            format!("one of: {}", known.join(", ")),
        ),
        Kind::MissingField(f) => (None, format!("the key `{f}` to be set")),
        Kind::Message(m) => (None, m.clone()),
        other => (None, other.to_string()),
    };
    ConfigProblem {
        key,
        value,
        expected,
        source,
    }
}

fn config_home() -> Option<PathBuf> {
    env_dir("XDG_CONFIG_HOME").or_else(|| home().map(|h| h.join(".config")))
}

fn env_dir(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

fn home() -> Option<PathBuf> {
    env_dir("HOME")
}

/// Resolved directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub runtime_dir: PathBuf,
    pub log_dir: PathBuf,
    pub data_dir: PathBuf,
    pub model_dir: PathBuf,
}

impl Paths {
    /// Resolves the configured directories, filling in the XDG defaults for empty ones.
    pub fn resolve(p: &PathSettings) -> Self {
        let uid = current_uid();
        let runtime_dir =
            non_empty(&p.runtime_dir).unwrap_or_else(|| match env_dir("XDG_RUNTIME_DIR") {
                Some(d) => d.join("mingllm"),
                None => PathBuf::from(format!("/tmp/mingllm-{uid}")),
            });
        let state = env_dir("XDG_STATE_HOME")
            .or_else(|| home().map(|h| h.join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        let log_dir = non_empty(&p.log_dir).unwrap_or_else(|| state.join("mingllm/logs"));
        let data = env_dir("XDG_DATA_HOME")
            .or_else(|| home().map(|h| h.join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        let data_dir = non_empty(&p.data_dir).unwrap_or_else(|| data.join("mingllm"));
        let model_dir = non_empty(&p.model_dir).unwrap_or_else(|| data_dir.join("models"));
        Self {
            runtime_dir,
            log_dir,
            data_dir,
            model_dir,
        }
    }

    /// The broker's request/reply socket.
    pub fn bus_endpoint(&self) -> String {
        ipc(&self.runtime_dir, "bus.sock")
    }

    /// Where publishers send events (the broker's XSUB side).
    pub fn events_in_endpoint(&self) -> String {
        ipc(&self.runtime_dir, "events-in.sock")
    }

    /// Where observers subscribe to events (the broker's XPUB side).
    pub fn events_out_endpoint(&self) -> String {
        ipc(&self.runtime_dir, "events.sock")
    }
}

fn ipc(dir: &Path, file: &str) -> String {
    format!("ipc://{}", dir.join(file).display())
}

fn non_empty(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

fn current_uid() -> u32 {
    // Read from /proc rather than link libc here: the uid only names a fallback directory.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().next().map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let cfg = Config::from_toml_over_defaults("").unwrap();
        assert_eq!(cfg.bus.heartbeat_ms, 500);
        assert_eq!(cfg.services.len(), 6);
        assert!(cfg.services["cloud-gateway"].network);
        assert!(cfg
            .services
            .iter()
            .filter(|(n, _)| *n != "cloud-gateway")
            .all(|(_, s)| !s.network));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = Config::from_toml_over_defaults(
            "[bus]\nheartbeat_ms = 1\nliveness = 0\nbroker_spin_us = 20000\nclient_spin_us = 10001\n[supervisor]\nbackoff_initial_ms = 9000\n",
        )
        .unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "bus.heartbeat_ms",
                "bus.liveness",
                "bus.broker_spin_us",
                "bus.client_spin_us",
                "supervisor.backoff_initial_ms"
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("`bus.heartbeat_ms` = 1: expected between 10 and 60000"),
            "{text}"
        );
    }

    #[test]
    fn a_qdrant_memory_backend_needs_a_url_and_the_network() {
        let err = Config::from_toml_over_defaults("[memory]\nbackend = \"qdrant\"\n").unwrap_err();
        let keys: Vec<_> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["memory.qdrant_url", "services.memory.network"],
            "{err}"
        );
        let cfg = Config::from_toml_over_defaults(
            "[memory]\nbackend = \"qdrant\"\nqdrant_url = \"http://qdrant.lan:6334\"\n[services.memory]\nnetwork = true\n",
        )
        .unwrap();
        assert!(cfg.services["memory"].network);
        let err = Config::from_toml_over_defaults("[memory]\nbackend = \"chroma\"\n").unwrap_err();
        assert_eq!(err.problems[0].key, "memory.backend");
    }

    #[test]
    fn wrong_type_names_key_value_and_expectation() {
        let err = Config::from_toml_over_defaults("[bus]\nheartbeat_ms = \"fast\"\n").unwrap_err();
        let p = &err.problems[0];
        assert_eq!(p.key, "bus.heartbeat_ms");
        assert!(p.value.as_deref().unwrap().contains("fast"), "{p}");
        assert!(p.expected.contains("u64"), "{p}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let err = Config::from_toml_over_defaults("[bus]\nheartbeat = 5\n").unwrap_err();
        assert_eq!(err.problems[0].key, "bus.heartbeat");
        assert!(err.problems[0].expected.contains("heartbeat_ms"));
    }

    #[test]
    fn bad_restart_policy_lists_the_choices() {
        let err = Config::from_toml_over_defaults("[services.agent]\nrestart = \"sometimes\"\n")
            .unwrap_err();
        assert_eq!(err.problems[0].key, "services.agent.restart");
        assert!(err.problems[0].expected.contains("on-failure"), "{}", err);
    }

    #[test]
    fn an_early_decode_longer_than_the_hangover_is_refused_and_zero_turns_it_off() {
        let err = Config::from_toml_over_defaults("[audio]\nearly_decode_ms = 500\n").unwrap_err();
        assert_eq!(err.problems[0].key, "audio.early_decode_ms");
        assert!(
            err.to_string().contains(
                "`audio.early_decode_ms` = 500: expected 0 (off) or between 32 and hangover_ms"
            ),
            "{err}"
        );
        let cfg = Config::from_toml_over_defaults("[audio]\nearly_decode_ms = 0\n").unwrap();
        assert_eq!(cfg.audio.early_decode_ms, 0);
    }

    #[test]
    fn an_unknown_speech_engine_names_the_two() {
        let err =
            Config::from_toml_over_defaults("[audio]\ntts_engine = \"festival\"\n").unwrap_err();
        assert_eq!(err.problems[0].key, "audio.tts_engine");
        assert!(err.problems[0].expected.contains("piper"), "{err}");
        let cfg = Config::from_toml_over_defaults("[audio]\ntts_engine = \"piper\"\n").unwrap();
        assert_eq!(cfg.audio.tts_piper_voice, "piper-joe-us");
    }

    #[test]
    fn a_new_service_can_be_added_and_checked() {
        let cfg =
            Config::from_toml_over_defaults("[services.echo]\ncommand = [\"/bin/echo\", \"hi\"]\n")
                .unwrap();
        assert_eq!(cfg.services["echo"].restart, RestartPolicy::Always);
        assert!(!cfg.services["echo"].network);
        let err = Config::from_toml_over_defaults("[services.Bad_Name]\ncommand = [\"x\"]\n")
            .unwrap_err();
        assert!(err.problems[0].key.contains("Bad_Name"));
    }

    #[test]
    fn missing_config_file_is_an_error() {
        let err = Config::load(&LoadOptions {
            file: Some("/nonexistent/ming.toml".into()),
            skip_system_and_user: true,
        })
        .unwrap_err();
        assert_eq!(err.problems[0].key, "--config");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn explicit_file_layers_over_defaults() {
        // Inside a Jail: it serialises the tests that read or set MING_* variables.
        figment::Jail::expect_with(|jail| {
            let file = jail.directory().join("c.toml");
            std::fs::write(&file, "[bus]\nqueue_limit = 7\n").map_err(|e| e.to_string())?;
            let cfg = Config::load(&LoadOptions {
                file: Some(file),
                skip_system_and_user: true,
            })
            .map_err(|e| e.to_string())?;
            assert_eq!(cfg.bus.queue_limit, 7);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure signature, not ours
    fn env_vars_override_nested_keys_and_others_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("MING_BUS__HEARTBEAT_MS", "250");
            jail.set_env("MING_SERVICES__AUDIO__ENABLED", "false");
            jail.set_env("MING_PATHS__RUNTIME_DIR", "/run/ming-test");
            jail.set_env("MING_SANDBOX", "netns");
            jail.set_env("MING_CONFIG", "");
            let cfg = Config::load(&LoadOptions {
                file: None,
                skip_system_and_user: true,
            })
            .map_err(|e| e.to_string())?;
            assert_eq!(cfg.bus.heartbeat_ms, 250);
            assert!(!cfg.services["audio"].enabled);
            assert_eq!(cfg.paths.runtime_dir, "/run/ming-test");
            jail.set_env("MING_BUS__HEARTBEAT_MS", "soon");
            let err = Config::load(&LoadOptions {
                file: None,
                skip_system_and_user: true,
            })
            .unwrap_err();
            assert_eq!(err.problems[0].key, "bus.heartbeat_ms");
            Ok(())
        });
    }

    #[test]
    fn endpoints_live_in_the_runtime_dir() {
        let cfg = Config::from_toml_over_defaults("[paths]\nruntime_dir = \"/run/x\"\n").unwrap();
        let p = Paths::resolve(&cfg.paths);
        assert_eq!(p.bus_endpoint(), "ipc:///run/x/bus.sock");
        assert_eq!(p.model_dir, p.data_dir.join("models"));
    }
}
