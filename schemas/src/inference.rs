//! Messages of the inference service (target `inference`).
//!
//! `inference.chat`: a [`ChatRequest`]; answered by [`ChatChunk`] partial frames while tokens
//! are decoded (when `stream` is set), then one [`ChatReply`]. `inference.info`: empty body;
//! reply [`ModelInfo`].

use serde::{Deserialize, Serialize};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Sampling settings. `temperature = 0` is greedy decoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sampling {
    #[serde(default)]
    pub temperature: f32,
    #[serde(default = "one")]
    pub top_p: f32,
    #[serde(default)]
    pub top_k: i32,
    #[serde(default)]
    pub min_p: f32,
    #[serde(default = "one")]
    pub repeat_penalty: f32,
    #[serde(default)]
    pub seed: u32,
}

fn one() -> f32 {
    1.0
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            seed: 0,
        }
    }
}

/// A tool the model may call; `parameters` is a JSON Schema (as JSON text) of its arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub parameters: String,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// Text, no tool call (the tools are only described).
    None,
    /// A call of one of the tools (constrained by grammar).
    #[default]
    Required,
    /// A call of this tool.
    Tool(String),
}

/// Request body of `inference.chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    /// Tokens to generate at most (default: the service's `inference.max_tokens`).
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub sampling: Sampling,
    /// Generation stops before any of these strings.
    #[serde(default)]
    pub stop: Vec<String>,
    #[serde(default)]
    pub tools: Vec<Tool>,
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// A JSON Schema (JSON text) the whole answer must match.
    #[serde(default)]
    pub response_format: Option<String>,
    /// Send each decoded piece as a partial frame.
    #[serde(default)]
    pub stream: bool,
    /// Compute the messages into the prompt cache and reply without generating (no assistant
    /// opening is added; `text` is empty). A caller that knows how its next request will begin
    /// (the agent, after each exchange of a conversation) warms that prefix while the user is
    /// still speaking. It gives way: the service stops it between prefill steps when another
    /// request is waiting, and replies with what was computed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefill_only: bool,
}

impl ChatRequest {
    /// A greedy, non-streaming request for these messages.
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            max_tokens: None,
            sampling: Sampling::default(),
            stop: Vec::new(),
            tools: Vec::new(),
            tool_choice: ToolChoice::None,
            response_format: None,
            stream: false,
            prefill_only: false,
        }
    }
}

/// A partial frame of `inference.chat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// Newly decoded text (may be empty while queued).
    pub text: String,
    /// Requests ahead of this one, while it waits for the model.
    #[serde(default)]
    pub queue_position: Option<u32>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn, or a stop string was reached.
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// The caller cancelled.
    Cancelled,
    /// The deadline passed.
    Deadline,
    #[serde(other)]
    Unknown,
}

/// A tool call the model made (arguments: JSON text that validates against the tool's schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub name: String,
    pub arguments: String,
}

/// Token counts and speeds of one generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    /// Prompt tokens whose KV state was reused instead of computed.
    pub cached_prompt_tokens: u32,
    pub generated_tokens: u32,
    pub time_to_first_token_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    /// Of `generated_tokens`, those that were the only continuation the grammar allowed (a tool
    /// call's keys once its tool is named): computed in one batch, not decoded one by one.
    #[serde(default)]
    pub jumped_tokens: u32,
}

/// Final reply of `inference.chat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    pub text: String,
    #[serde(default)]
    pub tool_call: Option<ToolCall>,
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub model: String,
}

/// Reply of `inference.info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub model: String,
    pub file: String,
    pub context_tokens: u32,
    pub threads: u32,
    pub chat_template: bool,
    pub parameters: u64,
}
