//! `ming-agent`: the agent: turns an utterance into actions (recall, prompt, inference, tools, memory, speech).
//!
//! For now this is the service's bus presence only: it registers as `agent`, heartbeats, answers
//! `control.ping` / `control.status` / `control.drain` (built into the worker), drains on request
//! or on SIGTERM, and answers every other kind with a clear `Unsupported` error. Its real work
//! arrives with issue #6.
//!
//! # Layout
//! - [`AgentService`]: the request handler.
//! - [`run`]: serve on the bus until drained.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusConfig, BusResult};
use ming_config::Config;
use ming_schemas::ErrorCode;

/// The name this service registers under (unless `MING_SERVICE` names another).
pub const SERVICE: &str = "agent";

/// The `agent` service's request handler.
pub struct AgentService;

impl Handler for AgentService {
    async fn handle(&self, req: Request, resp: Responder) {
        resp.error(
            ErrorCode::Unsupported,
            format!(
                "agent does not handle `{}` yet (its work arrives with issue #6)",
                req.kind()
            ),
        );
    }

    fn detail(&self) -> String {
        "control requests only; its work arrives with issue #6".into()
    }
}

/// Serves `agent` on the bus until `shutdown` resolves or the supervisor asks it to drain.
///
/// # Errors
/// When the bus socket cannot be created or the broker refuses the registration.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> BusResult<()> {
    let bus = BusConfig::from_config(&cfg);
    let mut opts = WorkerOptions::from_env(SERVICE);
    opts.drain_grace = Duration::from_millis(cfg.supervisor.drain_grace_ms);
    tracing::info!(service = %opts.service, bus = %bus.bus_endpoint, sandbox = %opts.sandbox, "starting");
    run_worker(&bus, opts, Arc::new(AgentService), shutdown).await
}
