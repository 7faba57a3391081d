//! One task per service: spawn it (through the sandbox launcher), watch it, restart it by
//! policy with exponential backoff and a restart-intensity limit, stop or hold it on request.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ming_config::{RestartPolicy, ServiceSettings};
use ming_schemas::control::{Ack, Drain, HoldReply, ServiceState};
use ming_schemas::kinds;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::logs::LogFile;
use crate::Shared;

/// What the supervisor knows about how to run one service.
pub struct ServiceSpec {
    pub name: String,
    /// The service's command line, bare names resolved.
    pub argv: Vec<String>,
    pub settings: ServiceSettings,
    pub log: LogFile,
}

pub type Reply = oneshot::Sender<Result<String, String>>;

/// Commands to a service's task.
pub enum SvcCmd {
    Start(Reply),
    Stop(Reply),
    Restart(Reply),
    Hold(oneshot::Sender<Result<HoldReply, String>>),
    Release(Reply),
    /// The broker saw a worker of this service register.
    Registered {
        pid: u32,
        instance: String,
    },
    /// The broker dropped a worker of this service.
    Lost {
        pid: u32,
        reason: String,
    },
    /// mingd is stopping: stop the service and end the task.
    Shutdown,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Run,
    Stopped,
    Held,
    Failed,
}

/// The full command line the supervisor runs for a service, sandbox launcher included, and the
/// environment it adds.
pub fn launch_line(spec: &ServiceSpec, sh: &Shared) -> (Vec<String>, Vec<(String, String)>) {
    let mut argv = vec![
        sh.mingd_exe.display().to_string(),
        "sandbox-exec".to_string(),
    ];
    if !spec.settings.network {
        argv.push("--deny-net".into());
    }
    if sh.cfg.supervisor.allow_unsandboxed {
        argv.push("--allow-unsandboxed".into());
    }
    argv.push("--".into());
    argv.extend(spec.argv.iter().cloned());
    let mut env = vec![
        ("MING_SERVICE".to_string(), spec.name.clone()),
        (
            "MING_PATHS__RUNTIME_DIR".to_string(),
            sh.paths.runtime_dir.display().to_string(),
        ),
    ];
    if let Some(f) = &sh.config_file {
        env.push(("MING_CONFIG".into(), f.display().to_string()));
    }
    env.extend(
        spec.settings
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    (argv, env)
}

fn spawn(spec: &ServiceSpec, sh: &Shared) -> Result<Child, String> {
    let (argv, env) = launch_line(spec, sh);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls (prctl, getppid, _exit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The child dies with the supervisor, even on SIGKILL.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor may have died before prctl took effect.
            if libc::getppid() != parent as libc::pid_t {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", spec.argv.join(" ")))?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(spec.log.clone().pump(out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(spec.log.clone().pump(err));
    }
    Ok(child)
}

/// Exit status meaning "cannot run as configured" (sysexits.h): a missing model, bad config, or a
/// network sandbox that cannot be applied. Restarting would not help, so the service is marked
/// failed at once instead of crash-looping.
pub const EX_CONFIG: i32 = ming_bus::process::EX_CONFIG;

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(0), _) => "exited cleanly (status 0)".into(),
        (Some(EX_CONFIG), _) => {
            "exited with status 78 (EX_CONFIG): it cannot run as configured, see its log; not restarted".into()
        }
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// Asks the child to drain (over the bus when it is registered, by SIGTERM otherwise), waits
/// for the grace period, then kills its whole process group.
async fn stop_child(spec: &ServiceSpec, sh: &Shared, child: &mut Child, instance: Option<&str>) {
    let grace = Duration::from_millis(sh.cfg.supervisor.drain_grace_ms);
    let pid = child.id();
    let asked = match instance {
        Some(inst) => sh
            .client
            .request::<_, Ack>(
                &format!("{}@{inst}", spec.name),
                kinds::DRAIN,
                &Drain {
                    grace_ms: sh.cfg.supervisor.drain_grace_ms,
                },
                Duration::from_millis(500),
            )
            .await
            .is_ok(),
        None => false,
    };
    if !asked {
        if let Some(pid) = pid {
            // SAFETY: plain kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    // A little beyond the service's own grace, for it to answer its last requests and exit.
    match tokio::time::timeout(grace + Duration::from_millis(500), child.wait()).await {
        Ok(status) => {
            let how = status.map(describe).unwrap_or_else(|e| e.to_string());
            spec.log.line(&format!("[mingd] stopped: {how}"));
        }
        Err(_) => {
            spec.log
                .line("[mingd] did not stop within the grace period: SIGKILL");
            tracing::warn!(service = %spec.name, "did not stop within the grace period; killing it");
            if let Some(pid) = pid {
                // SAFETY: the group is the child's own (process_group(0)); not reaped yet.
                unsafe { libc::killpg(pid as libc::pid_t, libc::SIGKILL) };
            }
            let _ = child.wait().await;
        }
    }
    if let Some(pid) = pid {
        sh.broker.drop_pid(pid, "stopped by the supervisor");
    }
}

/// The task supervising one service, until mingd shuts down.
pub async fn supervise(
    spec: ServiceSpec,
    sh: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<SvcCmd>,
) {
    let s = &sh.cfg.supervisor;
    let initial = Duration::from_millis(s.backoff_initial_ms);
    let max = Duration::from_millis(s.backoff_max_ms);
    let window = Duration::from_secs(s.window_s);
    let mut backoff = initial;
    let mut recent: VecDeque<Instant> = VecDeque::new();
    let mut want = if spec.settings.enabled {
        Want::Run
    } else {
        Want::Stopped
    };
    let name = spec.name.clone();

    loop {
        if want != Want::Run {
            let state = match want {
                Want::Held => ServiceState::Held,
                Want::Failed => ServiceState::Failed,
                _ => ServiceState::Stopped,
            };
            sh.set_state(&name, state, None, "");
            match rx.recv().await {
                None | Some(SvcCmd::Shutdown) => return,
                Some(SvcCmd::Start(tx)) | Some(SvcCmd::Restart(tx)) => {
                    if want == Want::Held {
                        let _ = tx.send(Err(format!(
                            "`{name}` is held by `ming run`; end that first"
                        )));
                        continue;
                    }
                    want = Want::Run;
                    recent.clear();
                    backoff = initial;
                    let _ = tx.send(Ok(format!("starting {name}")));
                }
                Some(SvcCmd::Release(tx)) => {
                    if want == Want::Held {
                        want = Want::Run;
                        let _ = tx.send(Ok(format!("released {name}; starting it")));
                    } else {
                        let _ = tx.send(Err(format!("`{name}` is not held")));
                    }
                }
                Some(SvcCmd::Stop(tx)) => {
                    if want == Want::Failed {
                        want = Want::Stopped;
                    }
                    let _ = tx.send(Ok(format!("{name} is not running")));
                }
                Some(SvcCmd::Hold(tx)) => {
                    if want == Want::Held {
                        let _ = tx.send(Err(format!("`{name}` is already held")));
                    } else {
                        want = Want::Held;
                        let (argv, env) = launch_line(&spec, &sh);
                        let _ = tx.send(Ok(HoldReply { argv, env }));
                    }
                }
                Some(SvcCmd::Registered { .. } | SvcCmd::Lost { .. }) => {}
            }
            continue;
        }

        let mut child = match spawn(&spec, &sh) {
            Ok(c) => c,
            Err(e) => {
                spec.log.line(&format!("[mingd] {e}"));
                tracing::error!(service = %name, error = %e, "cannot start service");
                sh.set_state(&name, ServiceState::Failed, None, &e);
                want = Want::Failed;
                continue;
            }
        };
        let pid = child.id();
        let spawned = Instant::now();
        spec.log
            .line(&format!("[mingd] started pid {}", pid.unwrap_or(0)));
        sh.set_state(&name, ServiceState::Starting, pid, "");
        let mut instance: Option<String> = None;

        // Watch it until it exits or we are told to stop it.
        let exited: Option<ExitStatus> = loop {
            tokio::select! {
                status = child.wait() => break Some(status.unwrap_or_else(|_| ExitStatus::from_raw(1 << 8))),
                cmd = rx.recv() => match cmd {
                    None | Some(SvcCmd::Shutdown) => {
                        sh.set_state(&name, ServiceState::Stopping, pid, "");
                        stop_child(&spec, &sh, &mut child, instance.as_deref()).await;
                        sh.set_state(&name, ServiceState::Stopped, None, "");
                        return;
                    }
                    Some(SvcCmd::Stop(tx)) => {
                        sh.set_state(&name, ServiceState::Stopping, pid, "");
                        stop_child(&spec, &sh, &mut child, instance.as_deref()).await;
                        want = Want::Stopped;
                        let _ = tx.send(Ok(format!("stopped {name}")));
                        break None;
                    }
                    Some(SvcCmd::Restart(tx)) => {
                        sh.set_state(&name, ServiceState::Stopping, pid, "");
                        stop_child(&spec, &sh, &mut child, instance.as_deref()).await;
                        recent.clear();
                        backoff = initial;
                        sh.update_row(&name, |r| r.restarts += 1);
                        let _ = tx.send(Ok(format!("restarting {name}")));
                        break None;
                    }
                    Some(SvcCmd::Hold(tx)) => {
                        sh.set_state(&name, ServiceState::Stopping, pid, "");
                        stop_child(&spec, &sh, &mut child, instance.as_deref()).await;
                        want = Want::Held;
                        let (argv, env) = launch_line(&spec, &sh);
                        let _ = tx.send(Ok(HoldReply { argv, env }));
                        break None;
                    }
                    Some(SvcCmd::Start(tx)) => {
                        let _ = tx.send(Ok(format!("{name} is already running")));
                    }
                    Some(SvcCmd::Release(tx)) => {
                        let _ = tx.send(Err(format!("`{name}` is not held")));
                    }
                    Some(SvcCmd::Registered { pid: p, instance: i }) if Some(p) == pid => {
                        instance = Some(i);
                        let sandbox = verify_sandbox(&spec, p);
                        let detail = if sandbox.starts_with("NOT") { sandbox.clone() } else { String::new() };
                        sh.update_row(&name, |r| r.sandbox = sandbox);
                        sh.set_state(&name, ServiceState::Ready, pid, &detail);
                    }
                    Some(SvcCmd::Lost { pid: p, reason }) if Some(p) == pid => {
                        instance = None;
                        sh.set_state(&name, ServiceState::Starting, pid, &format!("left the bus: {reason}"));
                    }
                    Some(SvcCmd::Registered { .. } | SvcCmd::Lost { .. }) => {}
                },
            }
        };

        let Some(status) = exited else { continue };
        if let Some(pid) = pid {
            sh.broker
                .drop_pid(pid, format!("process {}", describe(status)));
        }
        let how = describe(status);
        spec.log
            .line(&format!("[mingd] pid {} {how}", pid.unwrap_or(0)));
        let failed = !status.success();
        if status.code() == Some(EX_CONFIG) {
            tracing::error!(service = %name, "{how}");
            sh.set_state(&name, ServiceState::Failed, None, &how);
            want = Want::Failed;
            continue;
        }
        match spec.settings.restart {
            RestartPolicy::Never => {
                want = if failed { Want::Failed } else { Want::Stopped };
                sh.update_row(&name, |r| r.last_error = how.clone());
                continue;
            }
            RestartPolicy::OnFailure if !failed => {
                want = Want::Stopped;
                sh.update_row(&name, |r| r.last_error = how.clone());
                continue;
            }
            _ => {}
        }
        // Restart intensity: more than max_restarts restarts within the window → give up.
        let now = Instant::now();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            recent.pop_front();
        }
        if recent.len() > s.max_restarts as usize {
            let msg = format!(
                "gave up after {} restarts within {} s (last: {how}); `ming restart {name}` tries again",
                s.max_restarts, s.window_s
            );
            spec.log.line(&format!("[mingd] {msg}"));
            tracing::error!(service = %name, "{msg}");
            sh.set_state(&name, ServiceState::Failed, None, &msg);
            want = Want::Failed;
            continue;
        }
        if spawned.elapsed() >= Duration::from_secs(s.backoff_reset_s) {
            backoff = initial;
        }
        let delay = backoff;
        backoff = (backoff * 2).min(max);
        sh.update_row(&name, |r| r.restarts += 1);
        sh.set_state(
            &name,
            ServiceState::Backoff,
            None,
            &format!("{how}; restarting in {} ms", delay.as_millis()),
        );
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                cmd = rx.recv() => match cmd {
                    None | Some(SvcCmd::Shutdown) => return,
                    Some(SvcCmd::Stop(tx)) => {
                        want = Want::Stopped;
                        let _ = tx.send(Ok(format!("stopped {name}")));
                        break;
                    }
                    Some(SvcCmd::Hold(tx)) => {
                        want = Want::Held;
                        let (argv, env) = launch_line(&spec, &sh);
                        let _ = tx.send(Ok(HoldReply { argv, env }));
                        break;
                    }
                    Some(SvcCmd::Start(tx) | SvcCmd::Restart(tx)) => {
                        let _ = tx.send(Ok(format!("starting {name} now")));
                        break;
                    }
                    Some(SvcCmd::Release(tx)) => {
                        let _ = tx.send(Err(format!("`{name}` is not held")));
                    }
                    Some(SvcCmd::Registered { .. } | SvcCmd::Lost { .. }) => {}
                },
            }
        }
    }
}

/// The sandbox actually in force for a registered service: its own network namespace is checked
/// against the supervisor's in /proc, so a service that claims isolation but shares the host
/// network is reported loudly.
fn verify_sandbox(spec: &ServiceSpec, pid: u32) -> String {
    if spec.settings.network {
        return "network".into();
    }
    let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/net")).ok();
    let mine = ns("self");
    let theirs = ns(&pid.to_string());
    let label = std::fs::read(format!("/proc/{pid}/environ"))
        .ok()
        .and_then(|env| {
            env.split(|b| *b == 0).find_map(|kv| {
                kv.strip_prefix(b"MING_SANDBOX=")
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    match (mine, theirs) {
        (Some(a), Some(b)) if a == b && label.contains("netns") => {
            tracing::error!(service = %spec.name, pid, "service shares the host network namespace despite its sandbox");
            "NOT ISOLATED: shares the host network namespace".into()
        }
        _ => label,
    }
}
