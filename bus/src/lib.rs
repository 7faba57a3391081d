//! `ming-bus`: the MingLLM bus on ZeroMQ (libzmq through the `zmq` crate) over `ipc://` sockets.
//!
//! One broker (hosted by the supervisor, `mingd`) routes requests by service name to registered
//! workers and forwards their (possibly streamed) answers; events travel on a separate XSUB/XPUB
//! pair. Every frame is one [`ming_schemas::Envelope`]. The protocol is specified in
//! `docs/wire-protocol.md`.
//!
//! # Layout
//! - [`broker`]: the broker, a dedicated thread polling its sockets; routing, queueing for
//!   restarting services, deadlines, heartbeats, the event proxy.
//! - [`client`]: [`BusClient`], async requests with deadlines, streaming and cancellation.
//! - [`worker`]: [`worker::run_worker`], the service side: registration, heartbeats, dispatch to a
//!   [`worker::Handler`], built-in ping/status/drain, graceful shutdown.
//! - [`events`]: publishing and subscribing to events.
//! - [`socket`]: a ZeroMQ socket driven by tokio (`AsyncFd` on `ZMQ_FD`), owned by one task.
//! - [`cpu`]: how busy the rest of the machine keeps this process's CPUs (ggml thread counts).
//! - [`process`]: start-up shared by every binary: tracing, config, signals.
//! - [`runtime_dir`]: the private (0700) directory holding the sockets.

pub mod broker;
pub mod client;
pub mod cpu;
pub mod events;
pub mod process;
pub mod runtime_dir;
pub mod socket;
pub mod worker;

pub use client::{BusClient, ReplyStream};
use ming_schemas::{ErrorBody, ErrorCode};

/// The process's one ZeroMQ context (libzmq's I/O thread is shared by every socket).
pub fn context() -> &'static zmq::Context {
    static CTX: std::sync::OnceLock<zmq::Context> = std::sync::OnceLock::new();
    CTX.get_or_init(zmq::Context::new)
}

/// Everything that can go wrong on the bus, from a caller's point of view.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The remote side (broker or service) answered with an error.
    #[error("{code}: {message}")]
    Remote {
        code: ErrorCode,
        message: String,
        /// Who answered: the envelope's sender (`broker`, or the service); empty when the
        /// error was made on this side (a request too large to send).
        from: String,
    },
    /// The deadline passed before a final answer arrived.
    #[error("Timeout: no answer from {target} within {waited_ms} ms")]
    Timeout { target: String, waited_ms: u64 },
    /// The local bus connection was shut down.
    #[error("bus connection closed")]
    Closed,
    /// A ZeroMQ call failed.
    #[error("zeromq {op}: {source}")]
    Zmq {
        op: &'static str,
        #[source]
        source: zmq::Error,
    },
    /// A body could not be encoded or decoded.
    #[error("{0}")]
    Codec(String),
    /// An I/O error (runtime directory, socket registration).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type BusResult<T> = Result<T, BusError>;

impl BusError {
    /// The stable code this error corresponds to on the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Remote { code, .. } => *code,
            Self::Timeout { .. } => ErrorCode::Timeout,
            Self::Closed => ErrorCode::ServiceUnavailable,
            Self::Codec(_) => ErrorCode::BadRequest,
            Self::Zmq { .. } | Self::Io { .. } => ErrorCode::Internal,
        }
    }

    pub(crate) fn zmq(op: &'static str) -> impl FnOnce(zmq::Error) -> Self {
        move |source| Self::Zmq { op, source }
    }
}

impl BusError {
    /// An error answered by `from` (an envelope's sender).
    pub fn remote(from: impl Into<String>, e: ErrorBody) -> Self {
        Self::Remote {
            code: e.code,
            message: e.message,
            from: from.into(),
        }
    }

    /// Whether the broker itself answered (the service is stopped, failed or gone, the request
    /// was refused on the way), rather than the service or this side.
    pub fn from_broker(&self) -> bool {
        matches!(self, Self::Remote { from, .. } if from == broker::BROKER)
    }
}

impl From<ErrorBody> for BusError {
    fn from(e: ErrorBody) -> Self {
        Self::remote(String::new(), e)
    }
}

/// Where the bus lives and how it behaves; built from `ming_config` by the binaries.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// `ipc://…/bus.sock`
    pub bus_endpoint: String,
    /// `ipc://…/events-in.sock`
    pub events_in_endpoint: String,
    /// `ipc://…/events.sock`
    pub events_out_endpoint: String,
    pub max_frame_bytes: usize,
    pub heartbeat: std::time::Duration,
    pub liveness: u32,
    pub default_timeout: std::time::Duration,
    pub queue_limit: usize,
    /// How long the broker keeps polling after a message before it sleeps.
    pub broker_spin: std::time::Duration,
    /// How long a [`BusClient`] keeps polling for an answer after it sent a request.
    pub client_spin: std::time::Duration,
}

impl BusConfig {
    /// The bus in `runtime_dir`, with default timings (for tests and tools).
    pub fn in_dir(runtime_dir: &std::path::Path) -> Self {
        let ipc = |f: &str| format!("ipc://{}", runtime_dir.join(f).display());
        Self {
            bus_endpoint: ipc("bus.sock"),
            events_in_endpoint: ipc("events-in.sock"),
            events_out_endpoint: ipc("events.sock"),
            max_frame_bytes: 4 << 20,
            heartbeat: std::time::Duration::from_millis(500),
            liveness: 3,
            default_timeout: std::time::Duration::from_secs(5),
            queue_limit: 1024,
            broker_spin: std::time::Duration::from_micros(200),
            client_spin: std::time::Duration::ZERO,
        }
    }
}

/// Milliseconds of the monotonic clock (`CLOCK_MONOTONIC`: the same in every process on the
/// machine), for stage times that cross processes (an utterance's timeline).
pub fn mono_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}
