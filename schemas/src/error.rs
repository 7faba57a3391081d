//! Error codes that cross the bus. The set is stable: codes are only ever added, and a peer that
//! receives a code it does not know decodes it as [`ErrorCode::Unknown`] instead of failing.

use serde::{Deserialize, Serialize};

/// What went wrong, in a form any client can act on. Encoded as its name (a string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The deadline passed before a final reply arrived.
    Timeout,
    /// No live worker serves that name (never registered, died, or did not come back in time).
    ServiceUnavailable,
    /// The request is malformed or its arguments are invalid.
    BadRequest,
    /// The frame or a field is larger than the configured limit.
    TooLarge,
    /// A newer protocol major version, an unknown flow, or a kind the service does not handle.
    Unsupported,
    /// The requester cancelled the request.
    Cancelled,
    /// The thing the request names does not exist.
    NotFound,
    /// The service is draining or shutting down and takes no new work.
    ShuttingDown,
    /// A bug or an unexpected failure inside the service.
    Internal,
    /// A code from a newer peer that this build does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// The code's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "Timeout",
            Self::ServiceUnavailable => "ServiceUnavailable",
            Self::BadRequest => "BadRequest",
            Self::TooLarge => "TooLarge",
            Self::Unsupported => "Unsupported",
            Self::Cancelled => "Cancelled",
            Self::NotFound => "NotFound",
            Self::ShuttingDown => "ShuttingDown",
            Self::Internal => "Internal",
            Self::Unknown => "Unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every envelope whose flow is `error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_code_from_a_newer_peer_decodes_as_unknown() {
        let bytes = rmp_serde::to_vec_named(&serde_like("QuotaExceeded")).unwrap();
        let body: ErrorBody = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(body.code, ErrorCode::Unknown);
        assert_eq!(body.message, "m");
    }

    #[derive(Serialize)]
    struct Raw<'a> {
        code: &'a str,
        message: &'a str,
    }

    fn serde_like(code: &str) -> Raw<'_> {
        Raw { code, message: "m" }
    }

    #[test]
    fn codes_are_encoded_by_name() {
        for code in [
            ErrorCode::Timeout,
            ErrorCode::ServiceUnavailable,
            ErrorCode::BadRequest,
            ErrorCode::TooLarge,
            ErrorCode::Unsupported,
            ErrorCode::Cancelled,
            ErrorCode::NotFound,
            ErrorCode::ShuttingDown,
            ErrorCode::Internal,
        ] {
            let bytes = rmp_serde::to_vec_named(&code).unwrap();
            let name: String = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(name, code.as_str());
        }
    }
}
