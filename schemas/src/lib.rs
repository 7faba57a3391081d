//! `ming-schemas`: every message that crosses the MingLLM bus.
//!
//! All messages share one [`Envelope`](envelope::Envelope), encoded as a MessagePack map with named
//! fields (rmp-serde `to_vec_named`), so that a peer that does not know a new optional field simply
//! ignores it. The body of an envelope is itself MessagePack (also named fields), typed per `kind`.
//! The wire format is specified in `docs/wire-protocol.md`; golden bytes in `tests/golden.rs` catch
//! any accidental change of it.
//!
//! # Layout
//! - [`envelope`]: the envelope, its flows, protocol version, encode/decode with size limits.
//! - [`error`]: the stable error codes that cross the bus, and the error body.
//! - [`agent`]: utterances in, actions and replies out, action events.
//! - [`audio`]: transcription, speech boundaries, transcripts, speaking, barge-in, listening.
//! - [`cloud`]: handoffs, consent tickets and the egress report of cloud-gateway.
//! - [`control`]: registration, heartbeats, ping/status, drain, and the broker's and supervisor's
//!   own requests and events.
//! - [`inference`]: chat requests, streamed chunks, replies, tool calls, usage.
//! - [`kinds`]: the `kind` strings, one constant each.
//! - [`training`]: training jobs and their progress, stored router versions, and the router file.

pub mod agent;
pub mod audio;
pub mod cloud;
pub mod control;
pub mod envelope;
pub mod error;
pub mod inference;
pub mod kinds;
pub mod memory;
pub mod training;

pub use envelope::{DecodeFrameError, Envelope, Flow, Version, PROTOCOL_VERSION};
pub use error::{ErrorBody, ErrorCode};

/// Encodes a message body as a MessagePack map with named fields.
///
/// # Errors
/// Fails only if the value cannot be represented in MessagePack (e.g. a map with non-string keys
/// that serde rejects); every type in this crate encodes.
pub fn to_body<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value)
}

/// Decodes a message body.
///
/// # Errors
/// Returns the rmp-serde error when the bytes are not a valid encoding of `T`.
pub fn from_body<'a, T: serde::Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}
