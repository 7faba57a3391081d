//! Control-plane bodies: registration and heartbeats (worker ↔ broker), ping/status/drain (every
//! service), the broker's and the supervisor's own requests, and their events.

use serde::{Deserialize, Serialize};

/// An empty map body, for requests that take no arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// A plain acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    #[serde(default)]
    pub message: String,
}

/// Worker → broker: serve requests addressed to `service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    pub service: String,
    /// Distinguishes workers of one service; `service@instance` addresses this one. The pid by
    /// convention.
    pub instance: String,
    pub pid: u32,
    /// The worker's software version.
    pub version: String,
    /// How the worker was sandboxed, as its launcher told it (`MING_SANDBOX`), e.g.
    /// `netns+landlock`, or `none`.
    #[serde(default)]
    pub sandbox: String,
}

/// Broker → worker: registration accepted; heartbeat at this interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub heartbeat_ms: u64,
    /// Heartbeats that may be missed before a peer is considered gone.
    pub liveness: u32,
    pub max_frame_bytes: u64,
}

/// Heartbeat, both directions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Requests the sender is working on.
    #[serde(default)]
    pub in_flight: u32,
}

/// Reply to [`crate::kinds::PING`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub service: String,
    pub instance: String,
    pub pid: u32,
    pub version: String,
    pub uptime_ms: u64,
}

/// Reply to [`crate::kinds::STATUS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub service: String,
    pub instance: String,
    pub pid: u32,
    pub version: String,
    pub uptime_ms: u64,
    pub state: WorkerState,
    pub in_flight: u32,
    pub handled: u64,
    pub sandbox: String,
    /// What this service can do now; free text for humans.
    #[serde(default)]
    pub detail: String,
}

/// A worker's own view of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Serving,
    Draining,
    #[serde(other)]
    Unknown,
}

/// Request body of [`crate::kinds::DRAIN`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drain {
    /// How long in-flight work may take before the service cancels it and exits.
    pub grace_ms: u64,
}

/// Reply to [`crate::kinds::BROKER_STATUS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerStatus {
    pub services: Vec<BrokerService>,
}

/// One service name as the broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerService {
    pub name: String,
    pub workers: Vec<BrokerWorker>,
    /// Requests waiting for a worker of this name to (re)appear.
    pub queued: u32,
}

/// One registered worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerWorker {
    pub instance: String,
    pub pid: u32,
    pub in_flight: u32,
    pub registered_ms_ago: u64,
    pub sandbox: String,
}

/// Request body naming one configured service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceName {
    pub service: String,
}

/// Reply to [`crate::kinds::SUPERVISOR_HOLD`]: how the supervisor would have run the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldReply {
    /// The full command line, sandbox launcher included.
    pub argv: Vec<String>,
    /// Extra environment the supervisor sets for the service.
    pub env: Vec<(String, String)>,
}

/// Reply to [`crate::kinds::SUPERVISOR_STATUS`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorStatus {
    pub pid: u32,
    pub version: String,
    pub uptime_ms: u64,
    pub runtime_dir: String,
    pub services: Vec<ServiceRow>,
}

/// One supervised service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRow {
    pub name: String,
    pub state: ServiceState,
    pub pid: Option<u32>,
    /// Restarts since the supervisor started.
    pub restarts: u32,
    /// Time since the current process registered (ready) or was spawned.
    pub uptime_ms: u64,
    #[serde(default)]
    pub last_error: String,
    /// The sandbox the supervisor applied: `netns+landlock`, `netns`, `landlock`, `none`, or
    /// `network` (allowed egress: cloud-gateway).
    pub sandbox: String,
    pub log_file: String,
}

/// A supervised service's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Spawned, not yet registered on the bus.
    Starting,
    /// Registered on the bus: serving.
    Ready,
    /// Exited; waiting out the backoff before the next start.
    Backoff,
    /// Asked to drain; waiting for it to exit.
    Stopping,
    /// Not running, by configuration or by request.
    Stopped,
    /// Stopped and reserved for `ming run`: the supervisor will not start it until released.
    Held,
    /// Gave up: restart intensity exceeded, or it cannot be started safely.
    Failed,
    #[serde(other)]
    Unknown,
}

impl ServiceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Backoff => "backoff",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Held => "held",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        }
    }
}

/// Event [`crate::kinds::EVENT_SERVICE_STATE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStateChanged {
    pub service: String,
    pub state: ServiceState,
    pub pid: Option<u32>,
    #[serde(default)]
    pub detail: String,
}

/// Event [`crate::kinds::EVENT_WORKER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerChanged {
    pub service: String,
    pub instance: String,
    pub pid: u32,
    /// `registered`, `unregistered` or `lost`.
    pub change: String,
}
