//! Messages of cloud-gateway (target `cloud-gateway`): handoffs, consent tickets, the egress log.
//!
//! `cloud.handoff` creates a consent ticket showing the exact bytes that would leave; nothing is
//! sent until `cloud.approve` names that ticket *and* the SHA-256 of those bytes.

use serde::{Deserialize, Serialize};

/// Request body of `cloud.handoff`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffRequest {
    /// What the cloud model should do.
    pub task: String,
    /// Local context to include (conversation turns, memories, document excerpts).
    #[serde(default)]
    pub context: Vec<String>,
    /// A configured provider; default: the only one, or an error when there are several.
    #[serde(default)]
    pub provider: Option<String>,
}

/// Where a ticket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TicketState {
    /// Waiting for the user's decision; nothing has been sent.
    Pending,
    /// Refused by the user; nothing was sent.
    Denied,
    /// No decision in time; nothing was sent.
    Expired,
    /// Approved; the bytes are on their way.
    Sending,
    /// Sent and answered.
    Answered,
    /// Sent (or tried) and failed; can be retried with the same bytes, without a new approval.
    Failed,
    #[serde(other)]
    Unknown,
}

/// One redacted value, as shown to the user (never to the provider).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedactionView {
    pub kind: String,
    pub placeholder: String,
    pub reason: String,
}

/// A consent ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: String,
    pub state: TicketState,
    pub task: String,
    pub provider: String,
    /// The URL the bytes go to.
    pub destination: String,
    /// The exact request body that would leave (UTF-8 JSON), after redaction.
    pub body: String,
    pub body_sha256: String,
    pub size: u64,
    pub redactions: Vec<RedactionView>,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// The provider's answer with the placeholders restored, once answered.
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub error: String,
}

/// Request body naming a ticket (`cloud.ticket`, `cloud.deny`, `cloud.retry`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketId {
    pub id: String,
}

/// Request body of `cloud.approve`: the approval is bound to these exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approve {
    pub id: String,
    pub sha256: String,
}

/// Reply to `cloud.tickets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketList {
    pub tickets: Vec<Ticket>,
}

/// Reply to `cloud.egress`: the egress log and its verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressReport {
    pub path: String,
    /// The log's lines, as written (JSON).
    pub lines: Vec<String>,
    /// `ok: N entries, chain intact`, or what is wrong.
    pub verdict: String,
    pub intact: bool,
}

/// A partial frame of `cloud.approve` / `cloud.retry`: the provider's answer as it streams in,
/// placeholders already restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerChunk {
    pub text: String,
}
