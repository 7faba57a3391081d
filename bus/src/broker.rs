//! The broker: routes requests by service name to registered workers, and answers back to the
//! caller; proxies the event bus. Runs on its own thread, polling its sockets with libzmq's poll
//! (no async runtime in the routing path).
//!
//! Invariants:
//! - every accepted request ends in exactly one final frame to its caller (the worker's reply or
//!   error, or the broker's own `Timeout` / `ServiceUnavailable` / `Cancelled`), unless the caller
//!   itself is gone;
//! - a request for a known service with no live worker waits (up to its deadline) for one to
//!   register, so that requests sent while a service restarts are served once it is back;
//! - bad frames are answered with an error where there is someone to answer, logged, and
//!   otherwise ignored: the broker never stops serving because of a peer.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::mpsc as std_mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ming_schemas::control::{
    BrokerService, BrokerStatus, BrokerWorker, Heartbeat, Pong, Register, Registered, WorkerChanged,
};
use ming_schemas::envelope::{now_ms, Envelope, Flow};
use ming_schemas::{kinds, to_body, ErrorBody, ErrorCode};
use tokio::sync::mpsc::UnboundedSender;

use crate::runtime_dir::restrict_ipc_to_same_user;
use crate::{BusConfig, BusError, BusResult};

/// The broker's name on the bus (the `target` of its own requests, the `sender` of its frames).
pub const BROKER: &str = "broker";

/// What the broker tells its host (the supervisor) about workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerNotice {
    Registered {
        service: String,
        instance: String,
        pid: u32,
    },
    /// The worker asked to stop receiving requests (draining).
    Unregistered {
        service: String,
        instance: String,
        pid: u32,
    },
    /// The worker was dropped: missed heartbeats, or its process exited.
    Lost {
        service: String,
        instance: String,
        pid: u32,
        reason: String,
    },
}

enum Ctl {
    Stop,
    DropPid {
        pid: u32,
        reason: String,
    },
    Down {
        service: String,
        reason: Option<String>,
    },
}

/// A running broker. Dropping it stops the broker thread.
pub struct BrokerHandle {
    ctl_tx: std_mpsc::Sender<Ctl>,
    wake: Mutex<zmq::Socket>,
    thread: Option<JoinHandle<()>>,
}

impl BrokerHandle {
    /// Binds the broker's sockets and starts its thread. `known_services` are names that may
    /// receive requests before their first worker registers (the supervisor's configured ones).
    ///
    /// # Errors
    /// When a socket cannot be created or bound (e.g. the runtime dir is missing).
    pub fn start(
        cfg: &BusConfig,
        known_services: impl IntoIterator<Item = String>,
        notices: Option<UnboundedSender<BrokerNotice>>,
    ) -> BusResult<Self> {
        // Its own context, hence its own libzmq I/O thread: routing never queues behind the
        // host process's other sockets.
        let ctx = zmq::Context::new();
        let mut router = ctx
            .socket(zmq::ROUTER)
            .map_err(BusError::zmq("create ROUTER"))?;
        router.set_linger(0).map_err(BusError::zmq("set linger"))?;
        router
            .set_router_mandatory(true)
            .map_err(BusError::zmq("set ROUTER_MANDATORY"))?;
        // libzmq drops the connection of a peer that sends more than this; between the configured
        // limit and this hard cap the broker answers TooLarge itself.
        router
            .set_maxmsgsize(
                i64::try_from(cfg.max_frame_bytes.saturating_mul(2)).unwrap_or(i64::MAX),
            )
            .map_err(BusError::zmq("set MAXMSGSIZE"))?;
        router
            .set_sndhwm(100_000)
            .map_err(BusError::zmq("set SNDHWM"))?;
        router
            .set_rcvhwm(100_000)
            .map_err(BusError::zmq("set RCVHWM"))?;
        let filtered = restrict_ipc_to_same_user(&mut router);
        router
            .bind(&cfg.bus_endpoint)
            .map_err(BusError::zmq("bind bus endpoint"))?;
        let mut xsub = ctx
            .socket(zmq::XSUB)
            .map_err(BusError::zmq("create XSUB"))?;
        let filtered = restrict_ipc_to_same_user(&mut xsub) && filtered;
        xsub.set_linger(0).map_err(BusError::zmq("set linger"))?;
        xsub.bind(&cfg.events_in_endpoint)
            .map_err(BusError::zmq("bind events-in endpoint"))?;
        let mut xpub = ctx
            .socket(zmq::XPUB)
            .map_err(BusError::zmq("create XPUB"))?;
        let filtered = restrict_ipc_to_same_user(&mut xpub) && filtered;
        xpub.set_linger(0).map_err(BusError::zmq("set linger"))?;
        xpub.bind(&cfg.events_out_endpoint)
            .map_err(BusError::zmq("bind events endpoint"))?;
        let wake_addr = format!("inproc://broker-ctl-{}", ming_schemas::envelope::fresh_id());
        let wake_rx = ctx
            .socket(zmq::PAIR)
            .map_err(BusError::zmq("create PAIR"))?;
        wake_rx
            .bind(&wake_addr)
            .map_err(BusError::zmq("bind ctl"))?;
        let wake_tx = ctx
            .socket(zmq::PAIR)
            .map_err(BusError::zmq("create PAIR"))?;
        wake_tx.set_linger(0).map_err(BusError::zmq("set linger"))?;
        wake_tx
            .connect(&wake_addr)
            .map_err(BusError::zmq("connect ctl"))?;
        if !filtered {
            tracing::warn!("libzmq cannot filter ipc peers by uid here; the 0700 runtime dir is the only guard");
        }
        tracing::info!(
            bus = %cfg.bus_endpoint,
            events_in = %cfg.events_in_endpoint,
            events = %cfg.events_out_endpoint,
            same_user_filter = filtered,
            "broker listening"
        );
        let (ctl_tx, ctl_rx) = std_mpsc::channel();
        let mut broker = Broker {
            router,
            xsub,
            xpub,
            wake: wake_rx,
            ctl: ctl_rx,
            notices,
            max_frame: cfg.max_frame_bytes,
            heartbeat: cfg.heartbeat,
            liveness: cfg.liveness,
            queue_limit: cfg.queue_limit,
            spin: cfg.broker_spin,
            known: known_services.into_iter().collect(),
            down: HashMap::new(),
            workers: HashMap::new(),
            pending: HashMap::new(),
            queues: HashMap::new(),
            deadlines: BinaryHeap::new(),
            rr: 0,
        };
        let thread = std::thread::Builder::new()
            .name("ming-broker".into())
            .spawn(move || broker.run())
            .map_err(|source| BusError::Io {
                context: "spawn broker thread".into(),
                source,
            })?;
        Ok(Self {
            ctl_tx,
            wake: Mutex::new(wake_tx),
            thread: Some(thread),
        })
    }

    fn send_ctl(&self, ctl: Ctl) {
        if self.ctl_tx.send(ctl).is_ok() {
            if let Ok(wake) = self.wake.lock() {
                let _ = wake.send(&b"!"[..], zmq::DONTWAIT);
            }
        }
    }

    /// Drops every worker of process `pid` at once (the supervisor saw it exit): its in-flight
    /// requests fail with `ServiceUnavailable` and new ones wait for a replacement.
    pub fn drop_pid(&self, pid: u32, reason: impl Into<String>) {
        self.send_ctl(Ctl::DropPid {
            pid,
            reason: reason.into(),
        });
    }

    /// Marks a service as down (failed or stopped: no worker is coming) or up again. While it is
    /// down, requests for it with no live worker fail at once with `ServiceUnavailable` and this
    /// reason instead of waiting for their deadline; those already waiting fail now.
    pub fn set_down(&self, service: &str, reason: Option<String>) {
        self.send_ctl(Ctl::Down {
            service: service.to_string(),
            reason,
        });
    }

    /// Stops the broker and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.send_ctl(Ctl::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

type Identity = Vec<u8>;

struct Worker {
    service: String,
    instance: String,
    pid: u32,
    sandbox: String,
    in_flight: HashSet<u64>,
    last_seen: Instant,
    registered_at: Instant,
    draining: bool,
}

struct Pending {
    client: Identity,
    service: String,
    /// `None` while queued waiting for a worker.
    worker: Option<Identity>,
    trace: u64,
    deadline_ms: u64,
}

struct Broker {
    router: zmq::Socket,
    xsub: zmq::Socket,
    xpub: zmq::Socket,
    wake: zmq::Socket,
    ctl: std_mpsc::Receiver<Ctl>,
    notices: Option<UnboundedSender<BrokerNotice>>,
    max_frame: usize,
    heartbeat: Duration,
    liveness: u32,
    queue_limit: usize,
    /// Poll without sleeping for this long after a message (see `bus.broker_spin_us`).
    spin: Duration,
    known: HashSet<String>,
    /// Services that are failed or stopped, with why: no worker is coming.
    down: HashMap<String, String>,
    workers: HashMap<Identity, Worker>,
    pending: HashMap<u64, Pending>,
    queues: HashMap<String, VecDeque<(u64, Vec<u8>)>>,
    deadlines: BinaryHeap<Reverse<(u64, u64)>>,
    rr: usize,
}

impl Broker {
    fn run(&mut self) {
        let mut next_heartbeat = Instant::now() + self.heartbeat;
        // When the last request or reply went through: for `spin` after it the poll does not
        // sleep, so the answer to what was just forwarded is taken without a wake-up (each
        // costs tens of µs on a VM, and a round trip through the broker has four).
        let mut last_message: Option<Instant> = None;
        loop {
            let now = Instant::now();
            let mut wait = next_heartbeat.saturating_duration_since(now);
            if let Some(Reverse((deadline, _))) = self.deadlines.peek() {
                let until = Duration::from_millis(deadline.saturating_sub(now_ms()));
                wait = wait.min(until);
            }
            let spinning = last_message.is_some_and(|t| now.duration_since(t) < self.spin);
            let timeout = if spinning {
                // Leave the core to any thread that wants it (a worker answering, a client):
                // polling must not slow down what it waits for.
                std::thread::yield_now();
                0
            } else {
                i64::try_from(wait.as_millis()).unwrap_or(i64::MAX)
            };
            let (router_in, xsub_in, xpub_in, ctl_in) = {
                let mut items = [
                    self.router.as_poll_item(zmq::POLLIN),
                    self.xsub.as_poll_item(zmq::POLLIN),
                    self.xpub.as_poll_item(zmq::POLLIN),
                    self.wake.as_poll_item(zmq::POLLIN),
                ];
                if let Err(e) = zmq::poll(&mut items, timeout) {
                    tracing::error!(error = %e, "broker poll failed");
                    if e == zmq::Error::ETERM {
                        return;
                    }
                    continue;
                }
                (
                    items[0].is_readable(),
                    items[1].is_readable(),
                    items[2].is_readable(),
                    items[3].is_readable(),
                )
            };
            if ctl_in && self.handle_ctl() {
                return;
            }
            if router_in {
                last_message = Some(Instant::now());
                // Bounded batch, so that timers and events are not starved under load.
                for _ in 0..256 {
                    match self.router.recv_multipart(zmq::DONTWAIT) {
                        Ok(parts) => self.handle_frame(parts),
                        Err(zmq::Error::EAGAIN) => break,
                        Err(e) => {
                            tracing::error!(error = %e, "broker receive failed");
                            break;
                        }
                    }
                }
            }
            if xsub_in {
                forward(&self.xsub, &self.xpub);
            }
            if xpub_in {
                forward(&self.xpub, &self.xsub);
            }
            self.expire_deadlines();
            if Instant::now() >= next_heartbeat {
                self.heartbeat_tick();
                next_heartbeat = Instant::now() + self.heartbeat;
            }
        }
    }

    /// Returns true when asked to stop.
    fn handle_ctl(&mut self) -> bool {
        while self.wake.recv_bytes(zmq::DONTWAIT).is_ok() {}
        while let Ok(ctl) = self.ctl.try_recv() {
            match ctl {
                Ctl::Stop => {
                    tracing::info!("broker stopping");
                    return true;
                }
                Ctl::Down {
                    service,
                    reason: Some(reason),
                } => {
                    let waiting: Vec<u64> = self
                        .queues
                        .get_mut(&service)
                        .map(|q| q.drain(..).map(|(id, _)| id).collect())
                        .unwrap_or_default();
                    for id in waiting {
                        self.finish_with_error(
                            id,
                            ErrorCode::ServiceUnavailable,
                            format!("`{service}` is {reason}"),
                        );
                    }
                    self.down.insert(service, reason);
                }
                Ctl::Down {
                    service,
                    reason: None,
                } => {
                    self.down.remove(&service);
                }
                Ctl::DropPid { pid, reason } => {
                    let ids: Vec<Identity> = self
                        .workers
                        .iter()
                        .filter(|(_, w)| w.pid == pid)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in ids {
                        self.remove_worker(&id, &reason);
                    }
                }
            }
        }
        false
    }

    fn send(&self, to: &[u8], frame: &[u8]) {
        if let Err(e) = self.router.send_multipart([to, frame], zmq::DONTWAIT) {
            // EHOSTUNREACH: the peer disconnected; EAGAIN: its queue is full.
            tracing::debug!(error = %e, "dropped a frame for a peer that cannot take it");
        }
    }

    fn send_error(
        &self,
        to: &[u8],
        request_id: Option<u64>,
        trace: u64,
        code: ErrorCode,
        message: String,
    ) {
        let env = Envelope::error(BROKER, request_id, trace, &ErrorBody::new(code, message));
        self.send(to, &env.encode());
    }

    fn handle_frame(&mut self, parts: Vec<Vec<u8>>) {
        let Some(identity) = parts.first().cloned() else {
            return;
        };
        if parts.len() != 2 {
            tracing::warn!(
                frames = parts.len() - 1,
                "refused a message that is not exactly one frame"
            );
            self.send_error(
                &identity,
                None,
                0,
                ErrorCode::BadRequest,
                format!(
                    "expected exactly one frame per message, got {}",
                    parts.len() - 1
                ),
            );
            return;
        }
        let frame = &parts[1];
        let env = match Envelope::decode(frame, self.max_frame) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(error = %e, "refused a bad frame");
                self.send_error(&identity, e.message_id(), 0, e.code(), e.to_string());
                return;
            }
        };
        if let Some(w) = self.workers.get_mut(&identity) {
            w.last_seen = Instant::now();
        }
        match env.flow {
            Flow::Request if env.target == BROKER => self.handle_broker_request(&identity, &env),
            Flow::Request => self.route(identity, env, frame),
            Flow::Event => self.handle_event(&identity, &env),
            Flow::Partial | Flow::Reply | Flow::Error => self.handle_answer(&identity, &env, frame),
            Flow::Cancel => self.handle_cancel(&identity, &env),
            Flow::Unknown => {}
        }
    }

    fn handle_broker_request(&mut self, identity: &[u8], env: &Envelope) {
        let reply = match env.kind.as_str() {
            kinds::REGISTER => match env.body::<Register>() {
                Ok(reg) => self.register(identity, reg),
                Err(e) => Err(e),
            },
            kinds::BROKER_STATUS => Ok(encode(&self.status())),
            kinds::PING => Ok(encode(&Pong {
                service: BROKER.into(),
                instance: std::process::id().to_string(),
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").into(),
                uptime_ms: 0,
            })),
            other => Err(ErrorBody::new(
                ErrorCode::Unsupported,
                format!("the broker does not handle `{other}`"),
            )),
        };
        match reply {
            Ok(body) => self.send(identity, &env.reply_to(BROKER, body).encode()),
            Err(e) => self.send(
                identity,
                &Envelope::error(BROKER, Some(env.id), env.trace, &e).encode(),
            ),
        }
        if env.kind == kinds::REGISTER {
            if let Some(service) = self.workers.get(identity).map(|w| w.service.clone()) {
                self.dispatch_queued(&service);
            }
        }
    }

    fn register(&mut self, identity: &[u8], reg: Register) -> Result<Vec<u8>, ErrorBody> {
        if reg.service.is_empty() || reg.service == BROKER || reg.service.contains('@') {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("`{}` cannot be a service name", reg.service),
            ));
        }
        let now = Instant::now();
        tracing::info!(service = %reg.service, instance = %reg.instance, pid = reg.pid, "worker registered");
        self.known.insert(reg.service.clone());
        self.notify(BrokerNotice::Registered {
            service: reg.service.clone(),
            instance: reg.instance.clone(),
            pid: reg.pid,
        });
        self.publish_worker(&reg.service, &reg.instance, reg.pid, "registered");
        let old = self.workers.insert(
            identity.to_vec(),
            Worker {
                service: reg.service,
                instance: reg.instance,
                pid: reg.pid,
                sandbox: reg.sandbox,
                in_flight: HashSet::new(),
                last_seen: now,
                registered_at: now,
                draining: false,
            },
        );
        if let Some(old) = old {
            // Re-registration on the same connection: what it had in flight is lost to it.
            self.fail_requests(
                old.in_flight,
                ErrorCode::ServiceUnavailable,
                "the worker re-registered",
            );
        }
        Ok(encode(&Registered {
            heartbeat_ms: u64::try_from(self.heartbeat.as_millis()).unwrap_or(u64::MAX),
            liveness: self.liveness,
            max_frame_bytes: self.max_frame as u64,
        }))
    }

    fn status(&self) -> BrokerStatus {
        let mut names: Vec<&String> = self.known.iter().collect();
        names.sort();
        BrokerStatus {
            services: names
                .into_iter()
                .map(|name| {
                    let mut workers: Vec<BrokerWorker> = self
                        .workers
                        .values()
                        .filter(|w| &w.service == name)
                        .map(|w| BrokerWorker {
                            instance: w.instance.clone(),
                            pid: w.pid,
                            in_flight: w.in_flight.len() as u32,
                            registered_ms_ago: w.registered_at.elapsed().as_millis() as u64,
                            sandbox: w.sandbox.clone(),
                        })
                        .collect();
                    workers.sort_by(|a, b| a.instance.cmp(&b.instance));
                    BrokerService {
                        name: name.clone(),
                        workers,
                        queued: self.queues.get(name).map_or(0, |q| {
                            q.iter()
                                .filter(|(id, _)| self.pending.contains_key(id))
                                .count() as u32
                        }),
                    }
                })
                .collect(),
        }
    }

    fn route(&mut self, client: Identity, env: Envelope, frame: &[u8]) {
        if env.deadline_ms == 0 {
            self.send_error(
                &client,
                Some(env.id),
                env.trace,
                ErrorCode::BadRequest,
                "a request must carry a deadline (deadline_ms)".into(),
            );
            return;
        }
        if env.deadline_ms <= now_ms() {
            self.send_error(
                &client,
                Some(env.id),
                env.trace,
                ErrorCode::Timeout,
                "the request's deadline had already passed when the broker received it".into(),
            );
            return;
        }
        if self.pending.contains_key(&env.id) {
            self.send_error(
                &client,
                Some(env.id),
                env.trace,
                ErrorCode::BadRequest,
                format!("request id {} is already in flight", env.id),
            );
            return;
        }
        let (service, instance) = match env.target.split_once('@') {
            Some((s, i)) => (s.to_string(), Some(i.to_string())),
            None => (env.target.clone(), None),
        };
        if !self.known.contains(&service) {
            let mut known: Vec<&String> = self.known.iter().collect();
            known.sort();
            self.send_error(
                &client,
                Some(env.id),
                env.trace,
                ErrorCode::ServiceUnavailable,
                format!("no service named `{service}` is known to the broker (known: {known:?})"),
            );
            return;
        }
        self.deadlines.push(Reverse((env.deadline_ms, env.id)));
        self.pending.insert(
            env.id,
            Pending {
                client,
                service: service.clone(),
                worker: None,
                trace: env.trace,
                deadline_ms: env.deadline_ms,
            },
        );
        if let Some(worker) = self.pick_worker(&service, instance.as_deref()) {
            self.assign(env.id, worker, frame);
            return;
        }
        if let Some(reason) = self.down.get(&service) {
            let message = format!("`{service}` is {reason}");
            self.finish_with_error(env.id, ErrorCode::ServiceUnavailable, message);
            return;
        }
        if instance.is_some() {
            // A particular worker that is not there will not appear by waiting.
            self.finish_with_error(
                env.id,
                ErrorCode::ServiceUnavailable,
                format!("no worker `{}` is registered", env.target),
            );
            return;
        }
        let queue = self.queues.entry(service.clone()).or_default();
        queue.retain(|(id, _)| self.pending.contains_key(id));
        if queue.len() >= self.queue_limit {
            self.finish_with_error(
                env.id,
                ErrorCode::ServiceUnavailable,
                format!(
                    "`{service}` has no live worker and {} requests are already waiting for one",
                    self.queue_limit
                ),
            );
            return;
        }
        queue.push_back((env.id, frame.to_vec()));
    }

    /// The eligible worker with the fewest requests in flight (round-robin among equals).
    fn pick_worker(&mut self, service: &str, instance: Option<&str>) -> Option<Identity> {
        let mut candidates: Vec<(&Identity, &Worker)> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.service == service && !w.draining && instance.is_none_or(|i| w.instance == i)
            })
            .collect();
        if candidates.is_empty() {
            return None;
        }
        candidates.sort_by(|a, b| a.0.cmp(b.0));
        let least = candidates.iter().map(|(_, w)| w.in_flight.len()).min()?;
        let best: Vec<&Identity> = candidates
            .into_iter()
            .filter(|(_, w)| w.in_flight.len() == least)
            .map(|(id, _)| id)
            .collect();
        self.rr = self.rr.wrapping_add(1);
        Some(best[self.rr % best.len()].clone())
    }

    fn assign(&mut self, id: u64, worker: Identity, frame: &[u8]) {
        if let Some(p) = self.pending.get_mut(&id) {
            p.worker = Some(worker.clone());
        }
        if let Some(w) = self.workers.get_mut(&worker) {
            w.in_flight.insert(id);
        }
        self.send(&worker, frame);
    }

    fn dispatch_queued(&mut self, service: &str) {
        loop {
            let Some(queue) = self.queues.get_mut(service) else {
                return;
            };
            let Some((id, _)) = queue.front() else { return };
            let id = *id;
            if !self.pending.contains_key(&id) {
                queue.pop_front();
                continue;
            }
            let Some(worker) = self.pick_worker(service, None) else {
                return;
            };
            let Some((_, frame)) = self.queues.get_mut(service).and_then(VecDeque::pop_front)
            else {
                return;
            };
            self.assign(id, worker, &frame);
        }
    }

    fn handle_event(&mut self, identity: &[u8], env: &Envelope) {
        match env.kind.as_str() {
            kinds::HEARTBEAT => {
                if !self.workers.contains_key(identity) {
                    // A worker of a previous broker (mingd restarted): have it register again.
                    let ev = Envelope::event(
                        BROKER,
                        kinds::RECONNECT,
                        encode(&ming_schemas::control::Empty {}),
                    );
                    self.send(identity, &ev.encode());
                }
            }
            kinds::UNREGISTER => {
                if let Some(w) = self.workers.get_mut(identity) {
                    w.draining = true;
                    tracing::info!(service = %w.service, instance = %w.instance, "worker draining");
                    let (service, instance, pid) = (w.service.clone(), w.instance.clone(), w.pid);
                    self.notify(BrokerNotice::Unregistered {
                        service: service.clone(),
                        instance: instance.clone(),
                        pid,
                    });
                    self.publish_worker(&service, &instance, pid, "unregistered");
                }
            }
            other => tracing::debug!(kind = other, "ignored an event sent to the broker"),
        }
    }

    fn handle_answer(&mut self, identity: &[u8], env: &Envelope, frame: &[u8]) {
        let Some(id) = env.correlation else {
            tracing::warn!(kind = %env.kind, "dropped an answer without a correlation id");
            return;
        };
        let Some(p) = self.pending.get(&id) else {
            if !self.workers.contains_key(identity) {
                let ev = Envelope::event(
                    BROKER,
                    kinds::RECONNECT,
                    encode(&ming_schemas::control::Empty {}),
                );
                self.send(identity, &ev.encode());
            }
            tracing::debug!(
                request = id,
                "dropped a late answer (request already finished)"
            );
            return;
        };
        if p.worker.as_deref() != Some(identity) {
            tracing::warn!(
                request = id,
                "dropped an answer from a worker that does not hold the request"
            );
            return;
        }
        let client = p.client.clone();
        if env.flow.is_final() {
            self.pending.remove(&id);
            if let Some(w) = self.workers.get_mut(identity) {
                w.in_flight.remove(&id);
            }
        }
        self.send(&client, frame);
    }

    fn handle_cancel(&mut self, identity: &[u8], env: &Envelope) {
        let Some(id) = env.correlation else { return };
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        if p.client != identity {
            return;
        }
        match p.worker.clone() {
            Some(worker) => self.send(&worker, &env.encode()),
            None => self.finish_with_error(
                id,
                ErrorCode::Cancelled,
                "cancelled while waiting for a worker".into(),
            ),
        }
    }

    /// Ends request `id` with an error from the broker; tells its worker to stop, if it had one.
    fn finish_with_error(&mut self, id: u64, code: ErrorCode, message: String) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        if let Some(worker) = &p.worker {
            if let Some(w) = self.workers.get_mut(worker) {
                w.in_flight.remove(&id);
            }
            self.send(worker, &Envelope::cancel(BROKER, id, p.trace).encode());
        }
        self.send_error(&p.client, Some(id), p.trace, code, message);
    }

    fn fail_requests(&mut self, ids: HashSet<u64>, code: ErrorCode, message: &str) {
        for id in ids {
            if let Some(p) = self.pending.remove(&id) {
                self.send_error(
                    &p.client,
                    Some(id),
                    p.trace,
                    code,
                    format!("{message} (service `{}`)", p.service),
                );
            }
        }
    }

    fn expire_deadlines(&mut self) {
        let now = now_ms();
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            let Some(p) = self.pending.get(&id) else {
                continue;
            };
            if p.deadline_ms != deadline {
                continue;
            }
            let (code, message) = match &p.worker {
                Some(_) => (
                    ErrorCode::Timeout,
                    format!("`{}` did not answer before the deadline", p.service),
                ),
                None => (
                    ErrorCode::ServiceUnavailable,
                    format!(
                        "no worker of `{}` was available before the deadline",
                        p.service
                    ),
                ),
            };
            self.finish_with_error(id, code, message);
        }
    }

    fn heartbeat_tick(&mut self) {
        let limit = self.heartbeat * self.liveness;
        let dead: Vec<Identity> = self
            .workers
            .iter()
            .filter(|(_, w)| w.last_seen.elapsed() > limit)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            self.remove_worker(&id, "stopped answering heartbeats");
        }
        for (id, w) in &self.workers {
            let hb = Envelope::event(
                BROKER,
                kinds::HEARTBEAT,
                encode(&Heartbeat {
                    in_flight: w.in_flight.len() as u32,
                }),
            );
            self.send(id, &hb.encode());
        }
    }

    fn remove_worker(&mut self, identity: &[u8], reason: &str) {
        let Some(w) = self.workers.remove(identity) else {
            return;
        };
        tracing::warn!(service = %w.service, instance = %w.instance, pid = w.pid, reason, "worker dropped");
        self.notify(BrokerNotice::Lost {
            service: w.service.clone(),
            instance: w.instance.clone(),
            pid: w.pid,
            reason: reason.into(),
        });
        self.publish_worker(&w.service, &w.instance, w.pid, "lost");
        let message = format!("worker {} (pid {}) {reason}", w.instance, w.pid);
        self.fail_requests(w.in_flight, ErrorCode::ServiceUnavailable, &message);
    }

    fn notify(&self, n: BrokerNotice) {
        if let Some(tx) = &self.notices {
            let _ = tx.send(n);
        }
    }

    fn publish_worker(&self, service: &str, instance: &str, pid: u32, change: &str) {
        let body = encode(&WorkerChanged {
            service: service.into(),
            instance: instance.into(),
            pid,
            change: change.into(),
        });
        let ev = Envelope::event(BROKER, kinds::EVENT_WORKER, body);
        let _ = self.xpub.send_multipart(
            [kinds::EVENT_WORKER.as_bytes(), &ev.encode()],
            zmq::DONTWAIT,
        );
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    to_body(v).unwrap_or_default()
}

fn forward(from: &zmq::Socket, to: &zmq::Socket) {
    for _ in 0..256 {
        match from.recv_multipart(zmq::DONTWAIT) {
            Ok(parts) => {
                let _ = to.send_multipart(parts, zmq::DONTWAIT);
            }
            Err(_) => break,
        }
    }
}
