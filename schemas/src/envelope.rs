//! The envelope every bus message travels in, and its checked decoding.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorBody, ErrorCode};

/// The protocol version this build speaks. A peer with another *major* version is refused with
/// [`ErrorCode::Unsupported`]; a newer *minor* version only adds optional fields and is accepted.
pub const PROTOCOL_VERSION: Version = Version { major: 1, minor: 0 };

/// Protocol version carried by every envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub major: u16,
    pub minor: u16,
}

/// What role a frame plays in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Asks a service for something; carries a deadline. Answered by zero or more `partial` frames
    /// and exactly one final `reply` or `error`.
    Request,
    /// One frame of a streamed answer (`correlation` = the request's id). Not final.
    Partial,
    /// The final, successful answer (`correlation` = the request's id).
    Reply,
    /// The final, failed answer; the body is an [`ErrorBody`].
    Error,
    /// Asks that the request named by `correlation` be abandoned. Answered by its final frame.
    Cancel,
    /// Fire-and-forget: heartbeats to and from the broker, and everything on the event bus.
    Event,
    /// A flow from a newer peer that this build does not know.
    #[serde(other)]
    Unknown,
}

impl Flow {
    /// `reply` and `error` end a request; nothing more is sent for it.
    pub fn is_final(self) -> bool {
        matches!(self, Flow::Reply | Flow::Error)
    }
}

/// One bus message. Encoded as a MessagePack map with these field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Protocol version of the sender.
    pub version: Version,
    /// Unique id of this message (random 64-bit, chosen by the sender).
    pub id: u64,
    /// For replies, partials, errors and cancels: the id of the request they belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation: Option<u64>,
    /// Id shared by every message caused by one user action (an utterance, a typed command).
    pub trace: u64,
    /// Name of the sender (a service name, `broker`, or a client name such as `ming-cli`).
    pub sender: String,
    /// For requests: the service name, or `service@instance` for one particular worker.
    #[serde(default)]
    pub target: String,
    /// Absolute deadline, milliseconds since the Unix epoch; `0` only for frames that have none
    /// (events, replies). A request without one is refused.
    #[serde(default)]
    pub deadline_ms: u64,
    pub flow: Flow,
    /// What the body is, e.g. `control.ping`; decides the body's type.
    pub kind: String,
    /// The MessagePack-encoded body (a `bin`).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
}

/// Why a frame could not be turned into an [`Envelope`]. Carries what could be read of the frame
/// (its id and sender) so that an error reply can still be correlated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeFrameError {
    #[error("frame of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("frame is not a valid envelope: {reason}")]
    Malformed { id: Option<u64>, reason: String },
    #[error("protocol version {major}.{minor} is not supported (this peer speaks {}.x)", PROTOCOL_VERSION.major)]
    UnsupportedVersion {
        id: Option<u64>,
        major: u16,
        minor: u16,
    },
    #[error("flow of message {id} is not one this peer knows")]
    UnknownFlow { id: u64 },
}

impl DecodeFrameError {
    /// The id of the offending message when it could be read.
    pub fn message_id(&self) -> Option<u64> {
        match self {
            Self::TooLarge { .. } => None,
            Self::Malformed { id, .. } | Self::UnsupportedVersion { id, .. } => *id,
            Self::UnknownFlow { id } => Some(*id),
        }
    }

    /// The error code a peer gets for this frame.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::Malformed { .. } => ErrorCode::BadRequest,
            Self::UnsupportedVersion { .. } | Self::UnknownFlow { .. } => ErrorCode::Unsupported,
        }
    }
}

/// The few fields read from a frame that failed full decoding, to answer it.
#[derive(Deserialize)]
struct Head {
    version: Option<Version>,
    id: Option<u64>,
}

impl Envelope {
    /// A new request to `target`, with a fresh id, expiring at `deadline_ms`.
    pub fn request(
        sender: impl Into<String>,
        target: impl Into<String>,
        kind: impl Into<String>,
        body: Vec<u8>,
        deadline_ms: u64,
    ) -> Self {
        let id = fresh_id();
        Self {
            version: PROTOCOL_VERSION,
            id,
            correlation: None,
            trace: id,
            sender: sender.into(),
            target: target.into(),
            deadline_ms,
            flow: Flow::Request,
            kind: kind.into(),
            body,
        }
    }

    /// An event (heartbeat or event-bus message) from `sender`.
    pub fn event(sender: impl Into<String>, kind: impl Into<String>, body: Vec<u8>) -> Self {
        let id = fresh_id();
        Self {
            version: PROTOCOL_VERSION,
            id,
            correlation: None,
            trace: id,
            sender: sender.into(),
            target: String::new(),
            deadline_ms: 0,
            flow: Flow::Event,
            kind: kind.into(),
            body,
        }
    }

    /// A frame answering request `request_id` (flow `partial`, `reply` or `error`), keeping its
    /// trace id.
    pub fn answer(
        sender: impl Into<String>,
        request_id: u64,
        trace: u64,
        flow: Flow,
        kind: impl Into<String>,
        body: Vec<u8>,
    ) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            id: fresh_id(),
            correlation: Some(request_id),
            trace,
            sender: sender.into(),
            target: String::new(),
            deadline_ms: 0,
            flow,
            kind: kind.into(),
            body,
        }
    }

    /// The final error frame for request `request_id` (or uncorrelated, when the request's id
    /// could not be read).
    pub fn error(
        sender: impl Into<String>,
        request_id: Option<u64>,
        trace: u64,
        error: &ErrorBody,
    ) -> Self {
        let mut env = Self::answer(
            sender,
            0,
            trace,
            Flow::Error,
            crate::kinds::ERROR,
            encode_error_body(error),
        );
        env.correlation = request_id;
        env
    }

    /// Asks that request `request_id` be abandoned.
    pub fn cancel(sender: impl Into<String>, request_id: u64, trace: u64) -> Self {
        Self::answer(
            sender,
            request_id,
            trace,
            Flow::Cancel,
            crate::kinds::CANCEL,
            Vec::new(),
        )
    }

    /// The reply frame for this request.
    pub fn reply_to(&self, sender: impl Into<String>, body: Vec<u8>) -> Self {
        Self::answer(
            sender,
            self.id,
            self.trace,
            Flow::Reply,
            self.kind.clone(),
            body,
        )
    }

    /// The error frame for this request.
    pub fn error_to(
        &self,
        sender: impl Into<String>,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Self {
        Self::error(
            sender,
            Some(self.id),
            self.trace,
            &ErrorBody::new(code, message),
        )
    }

    /// Encodes the envelope as a MessagePack map.
    pub fn encode(&self) -> Vec<u8> {
        // Every field is a plain string, integer, bool or byte string: encoding cannot fail.
        rmp_serde::to_vec_named(self).unwrap_or_default()
    }

    /// Decodes a frame, refusing frames over `limit` bytes, malformed MessagePack, other major
    /// versions and unknown flows.
    ///
    /// # Errors
    /// A [`DecodeFrameError`] saying which check failed, with the message id when readable.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Self, DecodeFrameError> {
        if bytes.len() > limit {
            return Err(DecodeFrameError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        match rmp_serde::from_slice::<Envelope>(bytes) {
            Ok(env) if env.version.major != PROTOCOL_VERSION.major => {
                Err(DecodeFrameError::UnsupportedVersion {
                    id: Some(env.id),
                    major: env.version.major,
                    minor: env.version.minor,
                })
            }
            Ok(env) if env.flow == Flow::Unknown => {
                Err(DecodeFrameError::UnknownFlow { id: env.id })
            }
            Ok(env) => Ok(env),
            Err(full) => {
                // A newer major version may have changed the envelope itself: read what we can.
                let head = rmp_serde::from_slice::<Head>(bytes).ok();
                let id = head.as_ref().and_then(|h| h.id);
                match head.and_then(|h| h.version) {
                    Some(v) if v.major != PROTOCOL_VERSION.major => {
                        Err(DecodeFrameError::UnsupportedVersion {
                            id,
                            major: v.major,
                            minor: v.minor,
                        })
                    }
                    _ => Err(DecodeFrameError::Malformed {
                        id,
                        reason: full.to_string(),
                    }),
                }
            }
        }
    }

    /// Decodes the body as `T`.
    ///
    /// # Errors
    /// [`ErrorBody`] with [`ErrorCode::BadRequest`] naming the kind, ready to send back.
    pub fn body<'a, T: Deserialize<'a>>(&'a self) -> Result<T, ErrorBody> {
        rmp_serde::from_slice(&self.body).map_err(|e| {
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!("body of {} is not valid: {e}", self.kind),
            )
        })
    }

    /// For an `error` frame, its error body (a malformed one becomes an `Internal` error).
    pub fn error_body(&self) -> ErrorBody {
        rmp_serde::from_slice(&self.body).unwrap_or_else(|e| {
            ErrorBody::new(
                ErrorCode::Internal,
                format!(
                    "error frame from {} has an unreadable body: {e}",
                    self.sender
                ),
            )
        })
    }
}

fn encode_error_body(error: &ErrorBody) -> Vec<u8> {
    rmp_serde::to_vec_named(error).unwrap_or_default()
}

/// A fresh message id, never 0.
///
/// A per-process counter mixed with the time and the pid through SplitMix64: distinct within a
/// process by construction and, in practice, across processes. Ids correlate; they are no secret.
pub fn fresh_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut z = (nanos ^ (u64::from(std::process::id()) << 40))
        .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z.max(1)
}

/// Milliseconds since the Unix epoch, the clock deadlines are expressed in.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope::request(
            "ming-cli",
            "agent",
            "control.ping",
            vec![0x80],
            now_ms() + 1000,
        )
    }

    #[test]
    fn round_trip() {
        let env = sample();
        let bytes = env.encode();
        assert_eq!(Envelope::decode(&bytes, 1 << 20).unwrap(), env);
    }

    #[test]
    fn oversized_frame_is_refused_before_decoding() {
        let bytes = sample().encode();
        let err = Envelope::decode(&bytes, bytes.len() - 1).unwrap_err();
        assert_eq!(err.code(), ErrorCode::TooLarge);
    }

    #[test]
    fn garbage_and_truncated_frames_are_malformed() {
        let err = Envelope::decode(b"\xc1\xc1garbage", 1 << 20).unwrap_err();
        assert_eq!(err.code(), ErrorCode::BadRequest);
        let bytes = sample().encode();
        for cut in [1, bytes.len() / 2, bytes.len() - 1] {
            let err = Envelope::decode(&bytes[..cut], 1 << 20).unwrap_err();
            assert_eq!(err.code(), ErrorCode::BadRequest, "cut at {cut}");
        }
    }

    #[test]
    fn newer_major_version_is_unsupported_and_keeps_the_id() {
        let mut env = sample();
        env.version.major = 2;
        let err = Envelope::decode(&env.encode(), 1 << 20).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unsupported);
        assert_eq!(err.message_id(), Some(env.id));
    }

    #[test]
    fn newer_minor_version_with_extra_fields_is_accepted() {
        #[derive(Serialize)]
        struct Newer<'a> {
            #[serde(flatten)]
            env: &'a Envelope,
            priority: u8,
        }
        let mut env = sample();
        env.version.minor = 7;
        let bytes = rmp_serde::to_vec_named(&Newer {
            env: &env,
            priority: 3,
        })
        .unwrap();
        assert_eq!(Envelope::decode(&bytes, 1 << 20).unwrap(), env);
    }

    #[test]
    fn unknown_flow_is_unsupported() {
        let bytes = sample().encode();
        // Replace the flow string "request" with another 7-letter one.
        let pos = bytes.windows(7).position(|w| w == b"request").unwrap();
        let mut bytes = bytes.clone();
        bytes[pos..pos + 7].copy_from_slice(b"publish");
        let err = Envelope::decode(&bytes, 1 << 20).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unsupported);
    }

    #[test]
    fn ids_are_distinct() {
        let ids: std::collections::HashSet<u64> = (0..10_000).map(|_| fresh_id()).collect();
        assert_eq!(ids.len(), 10_000);
    }
}
