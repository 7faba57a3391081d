//! Messages of the agent (target `agent`).
//!
//! `agent.message`: a typed (or transcribed) utterance; the agent understands it (fast path
//! first, then the local LLM), acts, and replies. Events `agent.action_started` /
//! `agent.action_finished` let observers see each action as it happens.

use serde::{Deserialize, Serialize};

/// Request body of `agent.message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub text: String,
    /// Conversation this belongs to (follow-ups share it).
    #[serde(default)]
    pub session: Option<String>,
    /// The user confirms a destructive action (delete…).
    #[serde(default)]
    pub confirm: bool,
    /// Act directly with this tool (a button, a script), skipping understanding; `text` is then
    /// only logged.
    #[serde(default)]
    pub tool: Option<String>,
    /// Arguments for `tool`, as JSON text.
    #[serde(default)]
    pub arguments: Option<String>,
    /// A voice turn: the final transcript `text` came from, with its utterance id, audio
    /// position and stage times (absent for typed messages, and then not encoded at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice: Option<crate::audio::Transcript>,
    /// Understand it without the local model: the rules, the answer to a pending question, the
    /// learned router when it needs no LLM for the arguments. When those do not understand it,
    /// nothing is done or logged and the reply says so (`needs_llm`). The audio service sends a
    /// voice turn's first reading so when it can hear the turn again with a second model: the
    /// LLM, given a misheard command, acted on the wrong words far more often than not. Absent
    /// (false): every tier.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_llm: bool,
    /// With `skip_llm`: the learned router is left out too, so that only the rules (and the
    /// answer to a pending question) can act; otherwise the reply says `needs_llm`. The audio
    /// service sends a voice turn's first reading so when it can hear the turn again guided
    /// toward the rules' commands, and asks the router only when that reading does not do: in
    /// the voice bench the router acted on misheard words ("Time at 45 minutes." for "Timer
    /// for five minutes.", a 45-minute timer) that the guided reading set right. Absent
    /// (false): the router is asked whenever the rules do not understand.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skip_router: bool,
}

/// Which tier understood the utterance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// Intent matching and slot extraction, no LLM.
    Fast,
    /// The local LLM with the tool schemas as a grammar.
    Llm,
    /// The caller named the tool itself.
    Direct,
    /// The learned personal router (trained on the device), arguments by slot extraction.
    Router,
    #[serde(other)]
    Unknown,
}

/// One action the agent took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action {
    pub tool: String,
    /// Arguments as JSON text.
    pub arguments: String,
    pub tier: Tier,
    pub ok: bool,
    /// What the tool did or returned, for people.
    pub result: String,
}

/// Reply to `agent.message`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub utterance: u64,
    /// The answer, to be shown or spoken.
    pub text: String,
    #[serde(default)]
    pub action: Option<Action>,
    /// Milliseconds from the message's arrival to the decision, and to the action's start.
    pub decided_ms: f64,
    #[serde(default)]
    pub action_started_ms: Option<f64>,
    /// The answer is a question and the session's next message answers it: `confirmation`
    /// (yes or no to the destructive action just described) or the argument asked for
    /// (`seconds`, `text`, `query`). Absent when nothing waits (and then not encoded at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<String>,
    /// A `skip_llm` message that only the local model could understand: nothing was done, and
    /// `text` says so. Absent (false) otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub needs_llm: bool,
    /// A `skip_llm` voice turn whose look-up (a search, a mail summary, a note to delete) found
    /// nothing where the user's own data (their mail, notes, documents) holds words it might
    /// have been: nothing was done, and these
    /// patterns (as in [`Patterns`]) match the same command with its query in those words, for
    /// the audio service to hear the turn again in them before it asks again without
    /// `skip_llm`. Absent (empty) otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hear_again: Vec<String>,
}

/// Reply to `agent.patterns`: regular expressions (Rust `regex` syntax, each with its own
/// flags, e.g. `(?i)`) that together match the commands the agent's fast path understands, as
/// Whisper writes them. A text that no pattern matches goes to slower tiers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patterns {
    pub patterns: Vec<String>,
}

/// Event `agent.action_started`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionStarted {
    pub utterance: u64,
    pub tool: String,
    pub arguments: String,
    pub tier: Tier,
}

/// Event `agent.action_finished`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionFinished {
    pub utterance: u64,
    pub tool: String,
    pub ok: bool,
    pub result: String,
}

/// Event `agent.timer_fired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerFired {
    pub id: String,
    pub label: String,
    pub due_ms: u64,
}

/// Request body of `agent.handoff_result` (cloud-gateway → agent): the answer to an approved
/// handoff, placeholders already restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffResult {
    pub ticket: String,
    pub task: String,
    pub answer: String,
}

/// One moment in the handling of an utterance, in milliseconds after it arrived.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub at_ms: f64,
}

/// One handled utterance, as the agent logs it: for `ming trace` and for the training service
/// (the agent owns this log; others read it over the bus).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// 1, 2, 3… in the order handled.
    pub seq: u64,
    pub utterance: u64,
    /// Wall clock when it arrived, milliseconds since the Unix epoch.
    pub time_ms: u64,
    pub text: String,
    #[serde(default)]
    pub tier: Option<Tier>,
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(default)]
    pub arguments: String,
    /// `done`, `failed` (the tool could not), `unconfirmed` (needs confirmation), `refused`
    /// (arguments its schema does not allow; nothing ran), `error` (not understood or the LLM
    /// failed).
    pub outcome: String,
    pub stages: Vec<Stage>,
}

/// Request body of `agent.interactions`: a page of the log, from `since` (a `seq`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InteractionsRequest {
    #[serde(default)]
    pub since: u64,
    pub limit: u32,
}

/// Reply to `agent.interactions`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InteractionsPage {
    pub items: Vec<Interaction>,
    /// Pass as `since` for the next page.
    pub next: u64,
}

/// Request body of `agent.feedback`: what should have happened for an utterance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    /// The utterance (its id in the reply and the log); 0 for the latest.
    pub utterance: u64,
    /// The tool that should have acted (a correction).
    #[serde(default)]
    pub tool: Option<String>,
    /// The action should not have happened (the user undid it).
    #[serde(default)]
    pub undone: bool,
}

/// Request body of `agent.trace`: one utterance, or the latest when `utterance` is 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRequest {
    pub utterance: u64,
}
