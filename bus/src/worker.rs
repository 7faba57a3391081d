//! The service side of the bus: register under a name, heartbeat, take requests, answer them,
//! and drain on request or on a shutdown signal.
//!
//! Built-in requests every worker answers without the service's help: `control.ping`,
//! `control.status`, `control.drain`. Everything else goes to the service's [`Handler`], each
//! request in its own task, so a slow request never blocks heartbeats or other requests.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ming_schemas::control::{
    Ack, Drain, Heartbeat, Pong, Register, Registered, ServiceStatus, WorkerState,
};
use ming_schemas::envelope::{Envelope, Flow};
use ming_schemas::{kinds, to_body, ErrorBody, ErrorCode};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::broker::BROKER;
use crate::socket::{broker_dealer, AsyncSocket};
use crate::{BusConfig, BusError, BusResult};

/// A service's request handler.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request. Answer through `resp` (partials, then `reply` or `error`); dropping
    /// it unanswered sends an `Internal` error. Watch `req.cancelled` in long work.
    fn handle(&self, req: Request, resp: Responder) -> impl Future<Output = ()> + Send;

    /// One line for `control.status`: what the service can do right now.
    fn detail(&self) -> String {
        String::new()
    }

    /// Called once, when the worker begins to drain: work only done for later (a warm-up)
    /// should stop now rather than hold the drain for its whole grace period.
    fn draining(&self) {}
}

/// One request, as given to a [`Handler`].
pub struct Request {
    pub envelope: Envelope,
    /// Becomes `true` when the caller cancelled, the deadline passed, or the service is
    /// shutting down past its grace period.
    pub cancelled: watch::Receiver<bool>,
}

impl Request {
    pub fn kind(&self) -> &str {
        &self.envelope.kind
    }

    /// Decodes the body.
    ///
    /// # Errors
    /// A `BadRequest` [`ErrorBody`] ready to send back.
    pub fn body<'a, T: serde::Deserialize<'a>>(&'a self) -> Result<T, ErrorBody> {
        self.envelope.body()
    }
}

enum Out {
    Frame { id: u64, frame: Vec<u8>, last: bool },
}

/// Answers one request. Exactly one final answer is sent, whatever happens.
pub struct Responder {
    id: u64,
    trace: u64,
    kind: String,
    sender: String,
    tx: mpsc::UnboundedSender<Out>,
    done: bool,
}

impl Responder {
    fn send(&mut self, flow: Flow, kind: &str, body: Vec<u8>) {
        let last = flow.is_final();
        let frame =
            Envelope::answer(self.sender.clone(), self.id, self.trace, flow, kind, body).encode();
        let _ = self.tx.send(Out::Frame {
            id: self.id,
            frame,
            last,
        });
        if last {
            self.done = true;
        }
    }

    /// Sends one partial (streamed) frame.
    pub fn partial<T: Serialize>(&mut self, body: &T) {
        let kind = self.kind.clone();
        self.send(Flow::Partial, &kind, to_body(body).unwrap_or_default());
    }

    /// Sends the final reply.
    pub fn reply<T: Serialize>(mut self, body: &T) {
        let kind = self.kind.clone();
        self.send(Flow::Reply, &kind, to_body(body).unwrap_or_default());
    }

    /// Sends the final error.
    pub fn error(self, code: ErrorCode, message: impl Into<String>) {
        self.fail(&ErrorBody::new(code, message));
    }

    /// Sends a prepared error body as the final answer.
    pub fn fail(mut self, error: &ErrorBody) {
        self.send(
            Flow::Error,
            kinds::ERROR,
            to_body(error).unwrap_or_default(),
        );
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.done {
            let e = ErrorBody::new(
                ErrorCode::Internal,
                format!("{} dropped the request without answering", self.sender),
            );
            self.send(Flow::Error, kinds::ERROR, to_body(&e).unwrap_or_default());
        }
    }
}

/// Who the worker is.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub service: String,
    pub instance: String,
    pub version: String,
    /// How the process was sandboxed (from `MING_SANDBOX`), reported at registration.
    pub sandbox: String,
    /// Grace period for in-flight work on a shutdown signal (a `control.drain` brings its own).
    pub drain_grace: Duration,
}

impl WorkerOptions {
    /// Options for `service` in this process: instance = pid, sandbox from `MING_SANDBOX`.
    pub fn for_service(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            instance: std::process::id().to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            sandbox: std::env::var("MING_SANDBOX").unwrap_or_else(|_| "none".into()),
            drain_grace: Duration::from_secs(3),
        }
    }
}

impl WorkerOptions {
    /// Options for a service process started by the supervisor: the name from `MING_SERVICE`
    /// (so one binary can serve under another configured name), else `default_service`.
    pub fn from_env(default_service: &str) -> Self {
        let name = std::env::var("MING_SERVICE")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| default_service.to_string());
        Self::for_service(name)
    }
}

struct Stats {
    handled: AtomicU64,
}

/// Runs a worker until it has drained (after `control.drain` or `shutdown` resolving).
///
/// # Errors
/// When the bus socket cannot be created, or the broker refuses the registration.
pub async fn run_worker<H: Handler>(
    bus: &BusConfig,
    opts: WorkerOptions,
    handler: Arc<H>,
    shutdown: impl Future<Output = ()>,
) -> BusResult<()> {
    let started = Instant::now();
    let stats = Arc::new(Stats {
        handled: AtomicU64::new(0),
    });
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Out>();
    let mut sock = broker_dealer(bus)?;
    let mut register_id = send_register(&sock, &opts)?;
    let mut register_sent = Instant::now();
    let mut registered = false;
    let mut heartbeat = bus.heartbeat;
    let mut liveness = bus.liveness;
    let mut last_seen = Instant::now();
    let mut in_flight: HashMap<u64, watch::Sender<bool>> = HashMap::new();
    let mut drain_deadline: Option<Instant> = None;
    let mut tick = tokio::time::interval(heartbeat / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_heartbeat = Instant::now();
    tokio::pin!(shutdown);
    let mut shutdown_seen = false;

    loop {
        if let Some(deadline) = drain_deadline {
            if in_flight.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    in_flight = in_flight.len(),
                    "drain grace period ran out; cancelling what is left"
                );
                break;
            }
        }
        tokio::select! {
            biased;
            () = &mut shutdown, if !shutdown_seen => {
                shutdown_seen = true;
                if drain_deadline.is_none() {
                    tracing::info!(grace_ms = opts.drain_grace.as_millis() as u64, "shutdown signal: draining");
                    drain_deadline = Some(begin_drain(&sock, &opts, opts.drain_grace));
                    handler.draining();
                }
            }
            out = out_rx.recv() => {
                let Some(Out::Frame { id, frame, last }) = out else { continue };
                if last {
                    if in_flight.remove(&id).is_none() {
                        continue; // already answered (cancelled by the broker, or after a reconnect)
                    }
                    stats.handled.fetch_add(1, Ordering::Relaxed);
                } else if !in_flight.contains_key(&id) {
                    continue;
                }
                // Back-pressure: a fast stream waits for the broker to take its frames rather
                // than dropping them; a broker that takes nothing for the liveness period is
                // gone, and the frame goes with it.
                match tokio::time::timeout(heartbeat * liveness, sock.send_wait(&[&frame])).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, request = id, "could not send an answer"),
                    Err(_) => tracing::warn!(request = id, "the broker took no frame for the liveness period; answer dropped"),
                }
            }
            msg = sock.recv() => {
                let parts = msg?;
                let Some(frame) = parts.last() else { continue };
                let env = match Envelope::decode(frame, bus.max_frame_bytes) {
                    Ok(env) => env,
                    Err(e) => {
                        tracing::warn!(error = %e, "dropped a bad frame from the broker");
                        continue;
                    }
                };
                last_seen = Instant::now();
                match env.flow {
                    Flow::Reply if env.correlation == Some(register_id) => {
                        let reg: Registered = env.body().map_err(BusError::from)?;
                        heartbeat = Duration::from_millis(reg.heartbeat_ms.max(10));
                        liveness = reg.liveness.max(1);
                        tick = tokio::time::interval(heartbeat / 2);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        registered = true;
                        tracing::info!(service = %opts.service, instance = %opts.instance, "registered with the broker");
                        if drain_deadline.is_some() {
                            send_event(&sock, &opts, kinds::UNREGISTER, &ming_schemas::control::Empty {});
                        }
                    }
                    Flow::Error if env.correlation == Some(register_id) => {
                        return Err(env.error_body().into());
                    }
                    Flow::Event if env.kind == kinds::RECONNECT => {
                        tracing::info!("the broker does not know this worker (it restarted): registering again");
                        registered = false;
                        register_id = send_register(&sock, &opts)?;
                        register_sent = Instant::now();
                    }
                    Flow::Event => {}
                    Flow::Cancel => {
                        if let Some(flag) = env.correlation.and_then(|id| in_flight.get(&id)) {
                            let _ = flag.send(true);
                        }
                    }
                    Flow::Request => {
                        let id = env.id;
                        let responder = Responder {
                            id,
                            trace: env.trace,
                            kind: env.kind.clone(),
                            sender: opts.service.clone(),
                            tx: out_tx.clone(),
                            done: false,
                        };
                        let (cancel_tx, cancel_rx) = watch::channel(false);
                        in_flight.insert(id, cancel_tx);
                        match env.kind.as_str() {
                            kinds::PING => responder.reply(&Pong {
                                service: opts.service.clone(),
                                instance: opts.instance.clone(),
                                pid: std::process::id(),
                                version: opts.version.clone(),
                                uptime_ms: started.elapsed().as_millis() as u64,
                            }),
                            kinds::STATUS => responder.reply(&ServiceStatus {
                                service: opts.service.clone(),
                                instance: opts.instance.clone(),
                                pid: std::process::id(),
                                version: opts.version.clone(),
                                uptime_ms: started.elapsed().as_millis() as u64,
                                state: if drain_deadline.is_some() { WorkerState::Draining } else { WorkerState::Serving },
                                in_flight: in_flight.len().saturating_sub(1) as u32,
                                handled: stats.handled.load(Ordering::Relaxed),
                                sandbox: opts.sandbox.clone(),
                                detail: handler.detail(),
                            }),
                            kinds::DRAIN => match env.body::<Drain>() {
                                Ok(d) => {
                                    responder.reply(&Ack { message: format!("draining, grace {} ms", d.grace_ms) });
                                    if drain_deadline.is_none() {
                                        tracing::info!(grace_ms = d.grace_ms, "asked to drain");
                                        drain_deadline = Some(begin_drain(&sock, &opts, Duration::from_millis(d.grace_ms)));
                                        handler.draining();
                                    }
                                }
                                Err(e) => responder.fail(&e),
                            },
                            _ if drain_deadline.is_some() => {
                                responder.error(ErrorCode::ShuttingDown, format!("{} is draining and takes no new work", opts.service));
                            }
                            _ => {
                                let handler = handler.clone();
                                let req = Request { envelope: env, cancelled: cancel_rx };
                                tokio::spawn(async move { handler.handle(req, responder).await });
                            }
                        }
                    }
                    Flow::Partial | Flow::Reply | Flow::Error | Flow::Unknown => {}
                }
            }
            _ = tick.tick() => {
                if !registered {
                    if register_sent.elapsed() >= heartbeat {
                        register_id = send_register(&sock, &opts)?;
                        register_sent = Instant::now();
                    }
                } else if Instant::now() >= next_heartbeat {
                    send_event(&sock, &opts, kinds::HEARTBEAT, &Heartbeat { in_flight: in_flight.len() as u32 });
                    next_heartbeat = Instant::now() + heartbeat;
                }
                if last_seen.elapsed() > heartbeat * liveness {
                    tracing::warn!(silent_ms = last_seen.elapsed().as_millis() as u64, "lost the broker; reconnecting");
                    sock = broker_dealer(bus)?;
                    registered = false;
                    register_id = send_register(&sock, &opts)?;
                    register_sent = Instant::now();
                    last_seen = Instant::now();
                }
            }
        }
    }
    // Whatever is still in flight is told to stop and its caller gets a final answer.
    for (id, flag) in in_flight.drain() {
        let _ = flag.send(true);
        let e = ErrorBody::new(
            ErrorCode::ShuttingDown,
            format!("{} shut down before finishing", opts.service),
        );
        let frame = Envelope::error(opts.service.clone(), Some(id), 0, &e).encode();
        let _ = sock.send(&[&frame]);
    }
    // Give libzmq a moment to flush the last frames (linger is 0 to never block exit).
    tokio::time::sleep(Duration::from_millis(20)).await;
    tracing::info!(service = %opts.service, "drained; exiting");
    Ok(())
}

fn send_register(sock: &AsyncSocket, opts: &WorkerOptions) -> BusResult<u64> {
    let body = to_body(&Register {
        service: opts.service.clone(),
        instance: opts.instance.clone(),
        pid: std::process::id(),
        version: opts.version.clone(),
        sandbox: opts.sandbox.clone(),
    })
    .map_err(|e| BusError::Codec(e.to_string()))?;
    // Registration is retried every heartbeat until answered; each try has its own short deadline.
    let env = Envelope::request(
        opts.service.clone(),
        BROKER,
        kinds::REGISTER,
        body,
        ming_schemas::envelope::now_ms() + 60_000,
    );
    let id = env.id;
    if let Err(e) = sock.send(&[&env.encode()]) {
        tracing::debug!(error = %e, "registration not sent yet; will retry");
    }
    Ok(id)
}

fn send_event<T: Serialize>(sock: &AsyncSocket, opts: &WorkerOptions, kind: &str, body: &T) {
    let env = Envelope::event(
        opts.service.clone(),
        kind,
        to_body(body).unwrap_or_default(),
    );
    let _ = sock.send(&[&env.encode()]);
}

fn begin_drain(sock: &AsyncSocket, opts: &WorkerOptions, grace: Duration) -> Instant {
    send_event(
        sock,
        opts,
        kinds::UNREGISTER,
        &ming_schemas::control::Empty {},
    );
    Instant::now() + grace
}
