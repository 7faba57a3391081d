//! The supervisor's requests on the bus (target `supervisor`): status, start, stop, restart,
//! hold and release. The `ming` CLI is their main caller; any bus client may use them.

use std::sync::Arc;
use std::time::Duration;

use ming_bus::worker::{Handler, Request, Responder};
use ming_schemas::control::{Ack, ServiceName, SupervisorStatus};
use ming_schemas::{kinds, ErrorCode};
use tokio::sync::oneshot;

use crate::supervise::SvcCmd;
use crate::Shared;

pub struct SupervisorHandler {
    pub shared: Arc<Shared>,
}

impl SupervisorHandler {
    fn status(&self) -> SupervisorStatus {
        SupervisorStatus {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_ms: self.shared.started.elapsed().as_millis() as u64,
            runtime_dir: self.shared.paths.runtime_dir.display().to_string(),
            services: self.shared.rows(),
        }
    }

    /// Time a stop may take: the drain grace, plus margin.
    fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.cfg.supervisor.drain_grace_ms) + Duration::from_secs(2)
    }
}

impl Handler for SupervisorHandler {
    async fn handle(&self, req: Request, resp: Responder) {
        if req.kind() == kinds::SUPERVISOR_STATUS {
            return resp.reply(&self.status());
        }
        let name = match req.body::<ServiceName>() {
            Ok(n) => n.service,
            Err(e) => return resp.fail(&e),
        };
        if req.kind() == kinds::SUPERVISOR_HOLD {
            let (tx, rx) = oneshot::channel();
            if let Err(e) = self.shared.command(&name, SvcCmd::Hold(tx)) {
                return resp.error(ErrorCode::NotFound, e);
            }
            return match tokio::time::timeout(self.op_timeout(), rx).await {
                Ok(Ok(Ok(hold))) => resp.reply(&hold),
                Ok(Ok(Err(e))) => resp.error(ErrorCode::BadRequest, e),
                _ => resp.error(
                    ErrorCode::Internal,
                    format!("no answer from the task of `{name}`"),
                ),
            };
        }
        let (tx, rx) = oneshot::channel();
        let cmd = match req.kind() {
            kinds::SUPERVISOR_START => SvcCmd::Start(tx),
            kinds::SUPERVISOR_STOP => SvcCmd::Stop(tx),
            kinds::SUPERVISOR_RESTART => SvcCmd::Restart(tx),
            kinds::SUPERVISOR_RELEASE => SvcCmd::Release(tx),
            other => {
                return resp.error(
                    ErrorCode::Unsupported,
                    format!("the supervisor does not handle `{other}`"),
                );
            }
        };
        if let Err(e) = self.shared.command(&name, cmd) {
            return resp.error(ErrorCode::NotFound, e);
        }
        match tokio::time::timeout(self.op_timeout(), rx).await {
            Ok(Ok(Ok(message))) => resp.reply(&Ack { message }),
            Ok(Ok(Err(e))) => resp.error(ErrorCode::BadRequest, e),
            _ => resp.error(
                ErrorCode::Internal,
                format!("no answer from the task of `{name}`"),
            ),
        }
    }

    fn detail(&self) -> String {
        let rows = self.shared.rows();
        let ready = rows
            .iter()
            .filter(|r| r.state == ming_schemas::control::ServiceState::Ready)
            .count();
        format!("{ready}/{} services ready", rows.len())
    }
}
