//! `ming-cloud-gateway`: the only process with network egress (consent tickets, redaction, hash-chained egress log).
//!
//! A handoff becomes a consent ticket with the exact outbound bytes (after redaction), their
//! SHA-256 and an expiry; only `cloud.approve` with that ticket and that hash sends them, after
//! the egress log has recorded them. With no provider configured the handoff is disabled and no
//! HTTP client is ever built.
//!
//! # Layout
//! - [`redact`]: finds and replaces what must not leave (with a local map to restore answers).
//! - [`egress`]: the append-only, hash-chained, fsync'd egress log and its verification.
//! - [`gateway`]: tickets, approval bound to the payload hash, sending, retries.
//! - [`CloudGatewayService`]: the request handler.
//! - [`run`]: serve on the bus until drained.

pub mod egress;
pub mod gateway;
pub mod redact;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusConfig, BusResult};
use ming_config::{Config, Paths};
use ming_schemas::cloud::{AnswerChunk, Approve, HandoffRequest, TicketId, TicketList};
use ming_schemas::{kinds, ErrorCode};

use crate::gateway::Gateway;

/// The name this service registers under (unless `MING_SERVICE` names another).
pub const SERVICE: &str = "cloud-gateway";

/// The `cloud-gateway` request handler.
pub struct CloudGatewayService {
    gateway: Gateway,
}

impl Handler for CloudGatewayService {
    async fn handle(&self, req: Request, mut resp: Responder) {
        let g = &self.gateway;
        let result = match req.kind() {
            kinds::CLOUD_HANDOFF => match req.body::<HandoffRequest>() {
                Ok(h) => g.handoff(&h),
                Err(e) => Err(e),
            },
            kinds::CLOUD_TICKETS => {
                return resp.reply(&TicketList {
                    tickets: g.tickets(),
                })
            }
            kinds::CLOUD_TICKET => req.body::<TicketId>().and_then(|t| g.ticket(&t.id)),
            kinds::CLOUD_DENY => req.body::<TicketId>().and_then(|t| g.deny(&t.id)),
            kinds::CLOUD_APPROVE => match req.body::<Approve>() {
                Ok(a) => {
                    g.approve(&a.id, &a.sha256, &mut |text| {
                        resp.partial(&AnswerChunk { text })
                    })
                    .await
                }
                Err(e) => Err(e),
            },
            kinds::CLOUD_RETRY => match req.body::<TicketId>() {
                Ok(t) => {
                    g.retry(&t.id, &mut |text| resp.partial(&AnswerChunk { text }))
                        .await
                }
                Err(e) => Err(e),
            },
            kinds::CLOUD_EGRESS => return resp.reply(&g.egress_report()),
            other => {
                return resp.error(
                    ErrorCode::Unsupported,
                    format!("cloud-gateway does not handle `{other}`"),
                )
            }
        };
        match result {
            Ok(ticket) => resp.reply(&ticket),
            Err(e) => resp.fail(&e),
        }
    }

    fn detail(&self) -> String {
        if self.gateway.enabled() {
            format!(
                "{} ticket(s); handoff enabled",
                self.gateway.tickets().len()
            )
        } else {
            "cloud handoff not configured (disabled)".into()
        }
    }
}

/// Serves `cloud-gateway` on the bus until `shutdown` resolves or the supervisor asks it to drain.
///
/// # Errors
/// When the bus socket cannot be created or the broker refuses the registration.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> BusResult<()> {
    let bus = BusConfig::from_config(&cfg);
    let paths = Paths::resolve(&cfg.paths);
    let mut opts = WorkerOptions::from_env(SERVICE);
    let gateway = Gateway::new(cfg.cloud.clone(), paths.data_dir.clone())
        .with_bus(ming_bus::BusClient::connect(&bus, opts.service.clone())?);
    opts.drain_grace = Duration::from_millis(cfg.supervisor.drain_grace_ms);
    tracing::info!(service = %opts.service, bus = %bus.bus_endpoint, enabled = gateway.enabled(), "starting");
    run_worker(
        &bus,
        opts,
        Arc::new(CloudGatewayService { gateway }),
        shutdown,
    )
    .await
}
