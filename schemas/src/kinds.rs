//! Every `kind` string, in one place. A kind names the body type; `<area>.<verb>`.

/// The body of any `error` frame: [`crate::ErrorBody`].
pub const ERROR: &str = "error";

/// A `cancel` frame (no body): stop working on the request named by `correlation`.
pub const CANCEL: &str = "control.cancel";

// -- between a worker and the broker -------------------------------------------------------
/// Worker → broker request: [`crate::control::Register`]; reply [`crate::control::Registered`].
pub const REGISTER: &str = "control.register";
/// Worker → broker event: stop routing new requests to me (draining). Empty map body.
pub const UNREGISTER: &str = "control.unregister";
/// Both ways, event: [`crate::control::Heartbeat`].
pub const HEARTBEAT: &str = "control.heartbeat";
/// Broker → worker event: the broker does not know you (it restarted); register again.
pub const RECONNECT: &str = "control.reconnect";

// -- every service answers these -----------------------------------------------------------
/// Request: empty map body; reply [`crate::control::Pong`].
pub const PING: &str = "control.ping";
/// Request: empty map body; reply [`crate::control::ServiceStatus`].
pub const STATUS: &str = "control.status";
/// Request: [`crate::control::Drain`]; reply [`crate::control::Ack`], then the service stops
/// taking work, finishes what is in flight within the grace period and exits.
pub const DRAIN: &str = "control.drain";

// -- the broker's own requests (target `broker`) -------------------------------------------
/// Request: empty map body; reply [`crate::control::BrokerStatus`].
pub const BROKER_STATUS: &str = "broker.status";

// -- the supervisor's requests (target `supervisor`) ---------------------------------------
/// Request: empty map body; reply [`crate::control::SupervisorStatus`].
pub const SUPERVISOR_STATUS: &str = "supervisor.status";
/// Request: [`crate::control::ServiceName`]; reply [`crate::control::Ack`].
pub const SUPERVISOR_START: &str = "supervisor.start";
/// Request: [`crate::control::ServiceName`]; reply [`crate::control::Ack`].
pub const SUPERVISOR_STOP: &str = "supervisor.stop";
/// Request: [`crate::control::ServiceName`]; reply [`crate::control::Ack`].
pub const SUPERVISOR_RESTART: &str = "supervisor.restart";
/// Request: [`crate::control::ServiceName`]; stop the service and keep it stopped so that it can be
/// run by hand (`ming run`); reply [`crate::control::HoldReply`] with the command line to run.
pub const SUPERVISOR_HOLD: &str = "supervisor.hold";
/// Request: [`crate::control::ServiceName`]; end a hold and start the service again; reply
/// [`crate::control::Ack`].
pub const SUPERVISOR_RELEASE: &str = "supervisor.release";

// -- events (event bus; the topic is the kind) ---------------------------------------------
/// A service changed state under the supervisor: [`crate::control::ServiceStateChanged`].
pub const EVENT_SERVICE_STATE: &str = "supervisor.service_state";
/// A worker registered with or was dropped by the broker: [`crate::control::WorkerChanged`].
pub const EVENT_WORKER: &str = "broker.worker";

// -- inference (target `inference`) ---------------------------------------------------------
/// Request: [`crate::inference::ChatRequest`]; partials [`crate::inference::ChatChunk`]; reply
/// [`crate::inference::ChatReply`].
pub const INFERENCE_CHAT: &str = "inference.chat";
/// Request: empty map body; reply [`crate::inference::ModelInfo`].
pub const INFERENCE_INFO: &str = "inference.info";

// -- memory (target `memory`); bodies in [`crate::memory`] --------------------------------
/// Request: [`crate::memory::Remember`]; reply [`crate::memory::Remembered`] once durable.
pub const MEMORY_REMEMBER: &str = "memory.remember";
/// Request: [`crate::memory::Recall`]; reply [`crate::memory::Recalled`].
pub const MEMORY_RECALL: &str = "memory.recall";
/// Request: [`crate::memory::MemoryIds`]; reply [`crate::memory::Memories`].
pub const MEMORY_GET: &str = "memory.get";
/// Request: [`crate::memory::Update`]; reply [`crate::memory::Memory`].
pub const MEMORY_UPDATE: &str = "memory.update";
/// Request: [`crate::memory::Forget`]; reply [`crate::memory::Forgotten`].
pub const MEMORY_FORGET: &str = "memory.forget";
/// Request: [`crate::memory::List`]; reply [`crate::memory::Listed`].
pub const MEMORY_LIST: &str = "memory.list";
/// Request: [`crate::memory::Import`]; reply [`crate::memory::Imported`].
pub const MEMORY_IMPORT: &str = "memory.import";
/// Request: empty map body; reply [`crate::memory::MemoryStats`].
pub const MEMORY_STATS: &str = "memory.stats";
/// Request: [`crate::memory::Embed`]; reply [`crate::memory::Embedded`].
pub const MEMORY_EMBED: &str = "memory.embed";

// -- cloud-gateway (target `cloud-gateway`) ------------------------------------------------
/// Request: [`crate::cloud::HandoffRequest`]; reply [`crate::cloud::Ticket`] (pending).
pub const CLOUD_HANDOFF: &str = "cloud.handoff";
/// Request: empty map body; reply [`crate::cloud::TicketList`].
pub const CLOUD_TICKETS: &str = "cloud.tickets";
/// Request: [`crate::cloud::TicketId`]; reply [`crate::cloud::Ticket`].
pub const CLOUD_TICKET: &str = "cloud.ticket";
/// Request: [`crate::cloud::Approve`]; sends, then replies [`crate::cloud::Ticket`] (answered
/// or failed).
pub const CLOUD_APPROVE: &str = "cloud.approve";
/// Request: [`crate::cloud::TicketId`]; reply [`crate::cloud::Ticket`] (denied).
pub const CLOUD_DENY: &str = "cloud.deny";
/// Request: [`crate::cloud::TicketId`]; sends a failed ticket's unchanged bytes again on its
/// earlier approval; reply [`crate::cloud::Ticket`].
pub const CLOUD_RETRY: &str = "cloud.retry";
/// Request: empty map body; reply [`crate::cloud::EgressReport`].
pub const CLOUD_EGRESS: &str = "cloud.egress";

// -- agent (target `agent`) -----------------------------------------------------------------
/// Request: [`crate::agent::Message`]; reply [`crate::agent::Reply`].
pub const AGENT_MESSAGE: &str = "agent.message";
/// Event: [`crate::agent::ActionStarted`].
pub const EVENT_ACTION_STARTED: &str = "agent.action_started";
/// Event: [`crate::agent::ActionFinished`].
pub const EVENT_ACTION_FINISHED: &str = "agent.action_finished";
/// Event: [`crate::agent::TimerFired`].
pub const EVENT_TIMER_FIRED: &str = "agent.timer_fired";
/// Request (cloud-gateway → agent): [`crate::agent::HandoffResult`]; reply
/// [`crate::control::Ack`].
pub const AGENT_HANDOFF_RESULT: &str = "agent.handoff_result";
/// Event: [`crate::agent::HandoffResult`], when the agent has received a cloud answer.
pub const EVENT_HANDOFF_ANSWER: &str = "agent.handoff_answer";
/// Request: [`crate::agent::InteractionsRequest`]; reply [`crate::agent::InteractionsPage`].
pub const AGENT_INTERACTIONS: &str = "agent.interactions";
/// Request: [`crate::agent::TraceRequest`]; reply [`crate::agent::Interaction`].
pub const AGENT_TRACE: &str = "agent.trace";
/// Request: [`crate::agent::Feedback`] (the user corrects or undoes an utterance's action); reply
/// [`crate::control::Ack`].
pub const AGENT_FEEDBACK: &str = "agent.feedback";
/// Request (training → agent): [`crate::training::RouterFile`], a newly promoted router to
/// hot-swap; reply [`crate::control::Ack`].
pub const AGENT_ROUTER: &str = "agent.router";
/// Request: empty map body; reply [`crate::agent::Patterns`] (the fast path's command
/// patterns, which the audio service uses to guide a second decode of a misheard turn).
pub const AGENT_PATTERNS: &str = "agent.patterns";

// -- audio (target `audio`); bodies in [`crate::audio`] ------------------------------------
/// Request: [`crate::audio::Transcribe`]; partials [`crate::audio::Update`] (when asked); reply
/// [`crate::audio::Transcribed`].
pub const AUDIO_TRANSCRIBE: &str = "audio.transcribe";
/// Request: [`crate::audio::Speak`]; reply [`crate::audio::Spoken`] when playback ends.
pub const AUDIO_SPEAK: &str = "audio.speak";
/// Request: empty map body; stops what is being spoken; reply [`crate::control::Ack`].
pub const AUDIO_STOP: &str = "audio.stop";
/// Request: [`crate::audio::Listen`]; reply [`crate::audio::ListenState`].
pub const AUDIO_LISTEN: &str = "audio.listen";
/// Request: [`crate::audio::Feed`]; reply [`crate::audio::ListenState`].
pub const AUDIO_FEED: &str = "audio.feed";
/// Request: empty map body; reply [`crate::audio::Devices`] (the sound cards' PCMs, and what
/// the live input and spoken replies use).
pub const AUDIO_DEVICES: &str = "audio.devices";
/// Event: [`crate::audio::Boundary`].
pub const EVENT_SPEECH_STARTED: &str = "audio.speech_started";
/// Event: [`crate::audio::Boundary`].
pub const EVENT_SPEECH_ENDED: &str = "audio.speech_ended";
/// Event: [`crate::audio::Transcript`] (partial).
pub const EVENT_PARTIAL: &str = "audio.partial";
/// Event: [`crate::audio::Transcript`] (final).
pub const EVENT_TRANSCRIPT: &str = "audio.transcript";
/// Event: [`crate::audio::Speaking`] (started, finished, interrupted).
pub const EVENT_SPEAKING: &str = "audio.speaking";
/// Event: [`crate::audio::Speaking`]: speech while speaking stopped playback (`interrupted`),
/// or speech while a voice turn waited for the agent cancelled that turn (`cancelled`).
pub const EVENT_BARGE_IN: &str = "audio.barge_in";

// -- training (target `training`); bodies in [`crate::training`] ----------------------------
/// Request: [`crate::training::Train`]; partials [`crate::training::TrainProgress`]; reply
/// [`crate::training::Trained`].
pub const TRAINING_TRAIN: &str = "training.train";
/// Request: empty map; reply [`crate::control::Ack`]: cancels the running job.
pub const TRAINING_CANCEL: &str = "training.cancel";
/// Request: empty map; reply [`crate::training::Models`].
pub const TRAINING_MODELS: &str = "training.models";
/// Request: [`crate::training::Promote`]; reply [`crate::training::ModelInfo`].
pub const TRAINING_PROMOTE: &str = "training.promote";
/// Request: empty map; reply [`crate::training::ModelInfo`] (the one now in use).
pub const TRAINING_ROLLBACK: &str = "training.rollback";
/// Request: empty map; reply [`crate::training::RouterFile`] (the promoted router).
pub const TRAINING_ROUTER: &str = "training.router";
/// Event: [`crate::training::TrainProgress`].
pub const EVENT_TRAINING_PROGRESS: &str = "training.progress";
/// Event: [`crate::training::ModelInfo`]: a router was promoted (or rolled back to).
pub const EVENT_ROUTER_PROMOTED: &str = "training.promoted";
