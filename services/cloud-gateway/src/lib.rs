//! `ming-cloud-gateway`: the only process with network egress (consent tickets, redaction, hash-chained egress log).
//!
//! For now this is the service's bus presence only: it registers as `cloud-gateway`, heartbeats, answers
//! `control.ping` / `control.status` / `control.drain` (built into the worker), drains on request
//! or on SIGTERM, and answers every other kind with a clear `Unsupported` error. Its real work
//! arrives with issue #7.
//!
//! The consent and egress machinery is being built piece by piece: the redactor and the
//! tamper-evident egress log are here and tested; the ticket flow and the HTTP client that use
//! them come next.
//!
//! # Layout
//! - [`redact`]: finds and replaces what must not leave (with a local map to restore answers).
//! - [`egress`]: the append-only, hash-chained, fsync'd egress log and its verification.
//! - [`CloudGatewayService`]: the request handler.
//! - [`run`]: serve on the bus until drained.

pub mod egress;
pub mod redact;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusConfig, BusResult};
use ming_config::Config;
use ming_schemas::ErrorCode;

/// The name this service registers under (unless `MING_SERVICE` names another).
pub const SERVICE: &str = "cloud-gateway";

/// The `cloud-gateway` service's request handler.
pub struct CloudGatewayService;

impl Handler for CloudGatewayService {
    async fn handle(&self, req: Request, resp: Responder) {
        resp.error(
            ErrorCode::Unsupported,
            format!(
                "cloud-gateway does not handle `{}` yet (its work arrives with issue #7)",
                req.kind()
            ),
        );
    }

    fn detail(&self) -> String {
        "control requests only; its work arrives with issue #7".into()
    }
}

/// Serves `cloud-gateway` on the bus until `shutdown` resolves or the supervisor asks it to drain.
///
/// # Errors
/// When the bus socket cannot be created or the broker refuses the registration.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> BusResult<()> {
    let bus = BusConfig::from_config(&cfg);
    let mut opts = WorkerOptions::from_env(SERVICE);
    opts.drain_grace = Duration::from_millis(cfg.supervisor.drain_grace_ms);
    tracing::info!(service = %opts.service, bus = %bus.bus_endpoint, sandbox = %opts.sandbox, "starting");
    run_worker(&bus, opts, Arc::new(CloudGatewayService), shutdown).await
}
