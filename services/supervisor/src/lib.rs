//! `mingd`, the MingLLM supervisor: hosts the bus broker, starts every configured service in its
//! sandbox, restarts what dies (backoff, restart-intensity limit), and stops everything cleanly.
//! `ming`, the CLI, talks to it over the bus.
//!
//! # Layout
//! - [`run`]: the supervisor's life: lock the runtime dir, start the broker, the services and the
//!   `supervisor` bus worker; on the shutdown trigger, drain everything and exit.
//! - [`supervise`]: one task per service: spawn, watch, restart policy, stop/hold.
//! - [`control`]: the `supervisor.*` requests (`ming status|start|stop|restart|run`).
//! - [`sandbox`]: the network sandbox applied by `mingd sandbox-exec` before a service runs.
//! - [`logs`]: per-service, size-capped log files.

pub mod control;
pub mod logs;
pub mod sandbox;
pub mod supervise;

use std::collections::BTreeMap;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ming_bus::broker::{BrokerHandle, BrokerNotice};
use ming_bus::events::EventPublisher;
use ming_bus::worker::{run_worker, WorkerOptions};
use ming_bus::{BusClient, BusConfig, BusError};
use ming_config::{Config, Paths};
use ming_schemas::control::{ServiceRow, ServiceState, ServiceStateChanged};
use ming_schemas::kinds;
use tokio::sync::{mpsc, oneshot};

use crate::logs::LogFile;
use crate::supervise::{ServiceSpec, SvcCmd};

/// The supervisor's name on the bus.
pub const SUPERVISOR: &str = "supervisor";

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("another mingd (pid {pid}) is already running with runtime dir {dir}")]
    AlreadyRunning { pid: String, dir: PathBuf },
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type SupervisorResult<T> = Result<T, SupervisorError>;

/// State shared by the service tasks and the control handler.
pub struct Shared {
    pub cfg: Config,
    pub paths: Paths,
    pub bus: BusConfig,
    /// This executable, used as the sandbox launcher (`mingd sandbox-exec`).
    pub mingd_exe: PathBuf,
    /// The `--config` file, passed on to services as `MING_CONFIG`.
    pub config_file: Option<PathBuf>,
    pub broker: BrokerHandle,
    pub client: BusClient,
    pub events: EventPublisher,
    pub started: Instant,
    rows: Mutex<BTreeMap<String, (ServiceRow, Instant)>>,
    cmds: Mutex<BTreeMap<String, mpsc::UnboundedSender<SvcCmd>>>,
}

impl Shared {
    /// Records a service's state (and publishes the change).
    pub fn set_state(&self, service: &str, state: ServiceState, pid: Option<u32>, detail: &str) {
        let (changed, row_error) = {
            let Ok(mut rows) = self.rows.lock() else {
                return;
            };
            let Some((row, since)) = rows.get_mut(service) else {
                return;
            };
            let changed = row.state != state || row.pid != pid;
            if changed {
                *since = Instant::now();
            }
            row.state = state;
            row.pid = pid;
            if !detail.is_empty() {
                row.last_error = detail.to_string();
            }
            (changed, row.last_error.clone())
        };
        if changed {
            // Tell the broker whether a worker may still come, so that callers of a failed or
            // stopped service get an answer now rather than at their deadline.
            match state {
                ServiceState::Failed | ServiceState::Stopped => {
                    let why = if row_error.is_empty() {
                        String::new()
                    } else {
                        format!(": {row_error}")
                    };
                    self.broker
                        .set_down(service, Some(format!("{}{why}", state.as_str())));
                }
                _ => self.broker.set_down(service, None),
            }
            tracing::info!(
                service,
                state = state.as_str(),
                pid,
                detail,
                "service state"
            );
            self.events.publish(
                kinds::EVENT_SERVICE_STATE,
                &ServiceStateChanged {
                    service: service.into(),
                    state,
                    pid,
                    detail: detail.into(),
                },
            );
        }
    }

    /// Updates other fields of a service's row.
    pub fn update_row(&self, service: &str, f: impl FnOnce(&mut ServiceRow)) {
        if let Ok(mut rows) = self.rows.lock() {
            if let Some((row, _)) = rows.get_mut(service) {
                f(row);
            }
        }
    }

    /// Every service's row, uptime filled in.
    pub fn rows(&self) -> Vec<ServiceRow> {
        let Ok(rows) = self.rows.lock() else {
            return Vec::new();
        };
        rows.values()
            .map(|(row, since)| {
                let mut row = row.clone();
                row.uptime_ms = if row.pid.is_some() {
                    since.elapsed().as_millis() as u64
                } else {
                    0
                };
                row
            })
            .collect()
    }

    /// Sends a command to a service's task.
    ///
    /// # Errors
    /// `NotFound` when no such service is configured.
    pub fn command(&self, service: &str, cmd: SvcCmd) -> Result<(), String> {
        let cmds = self
            .cmds
            .lock()
            .map_err(|_| "supervisor state poisoned".to_string())?;
        match cmds.get(service) {
            Some(tx) => tx
                .send(cmd)
                .map_err(|_| format!("the task of `{service}` has stopped")),
            None => Err(format!(
                "no service named `{service}` is configured (configured: {})",
                cmds.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
        }
    }
}

/// Runs the supervisor until `shutdown` resolves, then drains every service and returns.
///
/// # Errors
/// When the runtime dir cannot be prepared or locked, or the broker cannot bind.
pub async fn run(
    cfg: Config,
    config_file: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> SupervisorResult<()> {
    let paths = Paths::resolve(&cfg.paths);
    ming_bus::runtime_dir::ensure_private_dir(&paths.runtime_dir)?;
    let _lock = lock_runtime_dir(&paths.runtime_dir)?;
    let bus = BusConfig::from_config(&cfg);
    let (notice_tx, mut notice_rx) = mpsc::unbounded_channel();
    let names: Vec<String> = cfg
        .services
        .keys()
        .cloned()
        .chain([SUPERVISOR.to_string()])
        .collect();
    let broker = BrokerHandle::start(&bus, names, Some(notice_tx))?;
    let client = BusClient::connect(&bus, "mingd")?;
    let events = EventPublisher::connect(&bus, "mingd")?;
    let mingd_exe = std::env::current_exe().map_err(|source| SupervisorError::Io {
        context: "find the mingd executable".into(),
        source,
    })?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        runtime_dir = %paths.runtime_dir.display(),
        log_dir = %paths.log_dir.display(),
        bus = %bus.bus_endpoint,
        events = %bus.events_out_endpoint,
        "mingd starting"
    );

    let mut specs = Vec::new();
    let mut rows = BTreeMap::new();
    for (name, settings) in &cfg.services {
        let log = LogFile::open(&paths.log_dir, name, cfg.supervisor.log_max_bytes).map_err(
            |source| SupervisorError::Io {
                context: format!("open the log file of {name} in {}", paths.log_dir.display()),
                source,
            },
        )?;
        rows.insert(
            name.clone(),
            (
                ServiceRow {
                    name: name.clone(),
                    state: ServiceState::Stopped,
                    pid: None,
                    restarts: 0,
                    uptime_ms: 0,
                    last_error: String::new(),
                    sandbox: if settings.network {
                        "network".into()
                    } else {
                        "pending".into()
                    },
                    log_file: log.path().display().to_string(),
                },
                Instant::now(),
            ),
        );
        specs.push(ServiceSpec {
            name: name.clone(),
            argv: resolve_command(&settings.command, &cfg.supervisor.bin_dir, &mingd_exe),
            settings: settings.clone(),
            log,
        });
    }
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        paths: paths.clone(),
        bus: bus.clone(),
        mingd_exe,
        config_file,
        broker,
        client,
        events,
        started: Instant::now(),
        rows: Mutex::new(rows),
        cmds: Mutex::new(BTreeMap::new()),
    });

    let mut tasks = Vec::new();
    for spec in specs {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut cmds) = shared.cmds.lock() {
            cmds.insert(spec.name.clone(), tx);
        }
        tasks.push(tokio::spawn(supervise::supervise(spec, shared.clone(), rx)));
    }

    // Broker notices → the service they concern.
    let sh = shared.clone();
    let notices = tokio::spawn(async move {
        while let Some(n) = notice_rx.recv().await {
            let (service, cmd) = match n {
                BrokerNotice::Registered {
                    service,
                    instance,
                    pid,
                } => (service, SvcCmd::Registered { pid, instance }),
                BrokerNotice::Lost {
                    service,
                    pid,
                    reason,
                    ..
                } => (service, SvcCmd::Lost { pid, reason }),
                BrokerNotice::Unregistered { .. } => continue,
            };
            let _ = sh.command(&service, cmd);
        }
    });

    // The supervisor's own bus worker, for the CLI.
    let (stop_worker_tx, stop_worker_rx) = oneshot::channel::<()>();
    let handler = Arc::new(control::SupervisorHandler {
        shared: shared.clone(),
    });
    let worker_bus = bus.clone();
    let worker = tokio::spawn(async move {
        let mut opts = WorkerOptions::for_service(SUPERVISOR);
        opts.sandbox = "none".into();
        opts.drain_grace = Duration::from_millis(200);
        if let Err(e) = run_worker(&worker_bus, opts, handler, async {
            let _ = stop_worker_rx.await;
        })
        .await
        {
            tracing::error!(error = %e, "the supervisor's bus worker failed");
        }
    });

    shutdown.await;
    tracing::info!("stopping every service");
    if let Ok(cmds) = shared.cmds.lock() {
        for tx in cmds.values() {
            let _ = tx.send(SvcCmd::Shutdown);
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = stop_worker_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(1), worker).await;
    notices.abort();
    tracing::info!("mingd stopped");
    Ok(())
}

/// Bare command names are looked up in `bin_dir` (default: mingd's own directory) before PATH.
pub fn resolve_command(command: &[String], bin_dir: &str, mingd_exe: &Path) -> Vec<String> {
    let mut argv = command.to_vec();
    if let Some(first) = argv.first_mut() {
        if !first.contains('/') {
            let dir = if bin_dir.is_empty() {
                mingd_exe.parent().map(Path::to_path_buf)
            } else {
                Some(PathBuf::from(bin_dir))
            };
            if let Some(candidate) = dir.map(|d| d.join(&*first)) {
                if candidate.is_file() {
                    *first = candidate.display().to_string();
                }
            }
        }
    }
    argv
}

/// An exclusive lock on the runtime dir, so that two supervisors never share one bus.
struct RuntimeLock {
    _file: std::fs::File,
}

fn lock_runtime_dir(dir: &Path) -> SupervisorResult<RuntimeLock> {
    use std::io::{Read, Seek, Write};
    let path = dir.join("mingd.lock");
    let io = |context: String| move |source| SupervisorError::Io { context, source };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(format!("open {}", path.display())))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        return Err(SupervisorError::AlreadyRunning {
            pid: pid.trim().to_string(),
            dir: dir.to_path_buf(),
        });
    }
    file.set_len(0)
        .map_err(io(format!("write {}", path.display())))?;
    file.rewind()
        .map_err(io(format!("write {}", path.display())))?;
    write!(file, "{}", std::process::id()).map_err(io(format!("write {}", path.display())))?;
    Ok(RuntimeLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_resolve_next_to_mingd() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ming-agent"), b"").unwrap();
        let exe = dir.path().join("mingd");
        let argv = resolve_command(&["ming-agent".into(), "-v".into()], "", &exe);
        assert_eq!(argv[0], dir.path().join("ming-agent").display().to_string());
        assert_eq!(argv[1], "-v");
        let argv = resolve_command(&["sh".into()], "", &exe);
        assert_eq!(argv[0], "sh");
        let argv = resolve_command(&["/bin/sh".into()], "", &exe);
        assert_eq!(argv[0], "/bin/sh");
    }

    #[test]
    fn second_lock_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = lock_runtime_dir(dir.path()).unwrap();
        match lock_runtime_dir(dir.path()) {
            Err(SupervisorError::AlreadyRunning { pid, .. }) => {
                assert_eq!(pid, std::process::id().to_string())
            }
            other => panic!("{:?}", other.err()),
        }
    }
}
