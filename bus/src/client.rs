//! [`BusClient`]: requests to services through the broker, from async code.
//!
//! One background task owns the DEALER socket; callers talk to it over channels. Every request
//! has a deadline: the caller gets the final answer, the remote error, or [`BusError::Timeout`]
//! when the deadline passes — never a hang, whether or not the broker is alive.

use std::collections::HashMap;
use std::time::Duration;

use ming_schemas::envelope::{now_ms, Envelope, Flow};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::socket::{broker_dealer, AsyncSocket};
use crate::{BusConfig, BusError, BusResult};

enum Cmd {
    Send {
        id: u64,
        frame: Vec<u8>,
        answers: mpsc::UnboundedSender<Envelope>,
    },
    Cancel {
        id: u64,
        frame: Vec<u8>,
        /// Stop listening for the request's frames too.
        forget: bool,
    },
}

/// A connection to the bus for making requests. Cheap to clone; clones share the socket.
#[derive(Clone)]
pub struct BusClient {
    name: String,
    tx: mpsc::UnboundedSender<Cmd>,
    default_timeout: Duration,
    max_frame: usize,
}

impl BusClient {
    /// Connects to the broker as `name` (used as the `sender` of requests). Returns at once:
    /// libzmq connects in the background, and requests made before the broker is up wait for it
    /// until their deadline.
    ///
    /// # Errors
    /// When the socket cannot be created or the endpoint is invalid.
    pub fn connect(cfg: &BusConfig, name: impl Into<String>) -> BusResult<Self> {
        let sock = broker_dealer(cfg)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(socket_task(sock, rx, cfg.max_frame_bytes, cfg.client_spin));
        Ok(Self {
            name: name.into(),
            tx,
            default_timeout: cfg.default_timeout,
            max_frame: cfg.max_frame_bytes,
        })
    }

    /// This client's name on the bus.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The deadline used when a caller passes none.
    pub fn default_timeout(&self) -> Duration {
        self.default_timeout
    }

    /// Sends `body` as a `kind` request to `target` and decodes the final reply as `R`.
    /// Partial frames, if the service streams, are skipped.
    ///
    /// # Errors
    /// [`BusError::Remote`] with the service's or broker's code, [`BusError::Timeout`] when the
    /// deadline passes, [`BusError::Codec`] when the reply is not an `R`.
    pub async fn request<Q: Serialize, R: DeserializeOwned>(
        &self,
        target: &str,
        kind: &str,
        body: &Q,
        timeout: Duration,
    ) -> BusResult<R> {
        let body = ming_schemas::to_body(body).map_err(|e| BusError::Codec(e.to_string()))?;
        let env = self.envelope(target, kind, body, timeout);
        let reply = self.request_envelope(env).await?;
        rmp_serde::from_slice(&reply.body).map_err(|e| {
            BusError::Codec(format!("reply to {kind} from {target} is not valid: {e}"))
        })
    }

    /// A request envelope from this client, expiring `timeout` from now.
    pub fn envelope(&self, target: &str, kind: &str, body: Vec<u8>, timeout: Duration) -> Envelope {
        let deadline = now_ms() + u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX / 2);
        Envelope::request(self.name.clone(), target, kind, body, deadline)
    }

    /// Sends a prepared request envelope and waits for its final reply envelope.
    ///
    /// # Errors
    /// As [`BusClient::request`].
    pub async fn request_envelope(&self, env: Envelope) -> BusResult<Envelope> {
        let mut stream = self.stream(env)?;
        loop {
            match stream.next().await {
                Some(Ok(frame)) if frame.flow == Flow::Reply => return Ok(frame),
                Some(Ok(_partial)) => {}
                Some(Err(e)) => return Err(e),
                None => return Err(BusError::Closed),
            }
        }
    }

    /// Sends a request and returns the stream of its answer frames: partials, then the final
    /// reply (or an error), then `None`.
    ///
    /// # Errors
    /// [`BusError::Remote`] `TooLarge` when the encoded request is over the frame limit;
    /// [`BusError::Closed`] when the client's socket task is gone.
    pub fn stream(&self, env: Envelope) -> BusResult<ReplyStream> {
        let frame = env.encode();
        if frame.len() > self.max_frame {
            return Err(BusError::Remote {
                from: String::new(),
                code: ming_schemas::ErrorCode::TooLarge,
                message: format!(
                    "request of {} bytes is larger than the bus frame limit of {} bytes",
                    frame.len(),
                    self.max_frame
                ),
            });
        }
        let (answers, rx) = mpsc::unbounded_channel();
        self.tx
            .send(Cmd::Send {
                id: env.id,
                frame,
                answers,
            })
            .map_err(|_| BusError::Closed)?;
        let left = env.deadline_ms.saturating_sub(now_ms());
        Ok(ReplyStream {
            id: env.id,
            trace: env.trace,
            sender: self.name.clone(),
            target: env.target,
            rx,
            tx: self.tx.clone(),
            started: Instant::now(),
            deadline: Instant::now() + Duration::from_millis(left),
            done: false,
        })
    }
}

/// The answer frames of one request. Dropping it before the final frame cancels the request.
pub struct ReplyStream {
    id: u64,
    trace: u64,
    sender: String,
    target: String,
    rx: mpsc::UnboundedReceiver<Envelope>,
    tx: mpsc::UnboundedSender<Cmd>,
    started: Instant,
    deadline: Instant,
    done: bool,
}

impl ReplyStream {
    /// The request's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next frame: `Ok(partial)`, `Ok(reply)` (final), `Err` (final), then `None`.
    pub async fn next(&mut self) -> Option<BusResult<Envelope>> {
        if self.done {
            return None;
        }
        match tokio::time::timeout_at(self.deadline, self.rx.recv()).await {
            Ok(Some(env)) => {
                if env.flow.is_final() {
                    self.finish();
                }
                if env.flow == Flow::Error {
                    Some(Err(BusError::remote(env.sender.clone(), env.error_body())))
                } else {
                    Some(Ok(env))
                }
            }
            Ok(None) => {
                self.done = true;
                Some(Err(BusError::Closed))
            }
            Err(_elapsed) => {
                let frame = Envelope::cancel(self.sender.clone(), self.id, self.trace).encode();
                let _ = self.tx.send(Cmd::Cancel {
                    id: self.id,
                    frame,
                    forget: true,
                });
                self.done = true;
                Some(Err(BusError::Timeout {
                    target: self.target.clone(),
                    waited_ms: self.started.elapsed().as_millis() as u64,
                }))
            }
        }
    }

    /// Asks the service to abandon the request. The stream stays open: the frames already on
    /// their way, then the final one (a reply saying how it ended, or a `Cancelled` error),
    /// still arrive through [`ReplyStream::next`].
    pub fn cancel(&mut self) {
        if self.done {
            return;
        }
        let frame = Envelope::cancel(self.sender.clone(), self.id, self.trace).encode();
        let _ = self.tx.send(Cmd::Cancel {
            id: self.id,
            frame,
            forget: false,
        });
    }

    /// The final frame is in. The socket task forgot the request when it passed that frame on
    /// (`Conn::on_frame`), so nothing is sent: a message here would wake that task once more per
    /// request, to no end.
    fn finish(&mut self) {
        self.done = true;
    }
}

impl Drop for ReplyStream {
    fn drop(&mut self) {
        if !self.done {
            let frame = Envelope::cancel(self.sender.clone(), self.id, self.trace).encode();
            let _ = self.tx.send(Cmd::Cancel {
                id: self.id,
                frame,
                forget: true,
            });
        }
    }
}

/// The socket task's state: the DEALER, and where each request's answers go.
struct Conn {
    sock: AsyncSocket,
    pending: HashMap<u64, mpsc::UnboundedSender<Envelope>>,
    max_frame: usize,
}

impl Conn {
    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Send { id, frame, answers } => {
                if let Err(e) = self.sock.send(&[&frame]) {
                    let err = Envelope::error(
                        "bus-client",
                        Some(id),
                        0,
                        &ming_schemas::ErrorBody::new(
                            ming_schemas::ErrorCode::ServiceUnavailable,
                            format!("could not send to the broker: {e}"),
                        ),
                    );
                    let _ = answers.send(err);
                } else {
                    self.pending.insert(id, answers);
                }
            }
            Cmd::Cancel { id, frame, forget } => {
                if forget {
                    self.pending.remove(&id);
                }
                let _ = self.sock.send(&[&frame]);
            }
        }
    }

    fn on_frame(&mut self, parts: &[Vec<u8>]) {
        let Some(frame) = parts.last() else { return };
        match Envelope::decode(frame, self.max_frame) {
            Ok(env) => match env.correlation {
                Some(id) => {
                    let last = env.flow.is_final();
                    let keep = match self.pending.get(&id) {
                        Some(tx) => tx.send(env).is_ok() && !last,
                        None => true,
                    };
                    if !keep {
                        self.pending.remove(&id);
                    }
                }
                None if env.flow == Flow::Error => {
                    tracing::warn!(error = %env.error_body(), "the broker refused a frame it could not correlate");
                }
                None => {}
            },
            Err(e) => tracing::warn!(error = %e, "dropped a bad frame from the broker"),
        }
    }
}

async fn socket_task(
    sock: AsyncSocket,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    max_frame: usize,
    spin: Duration,
) {
    let mut conn = Conn {
        sock,
        pending: HashMap::new(),
        max_frame,
    };
    // After a request goes out, its answer is polled for until then (`bus.client_spin_us`):
    // a quick answer is taken without the wake-up a sleeping thread costs (tens of µs on a VM).
    let mut spin_until: Option<Instant> = None;
    loop {
        // Everything that is ready, in batches: all queued commands, then the frames waiting
        // (bounded, so that a stream cannot starve the callers).
        let mut sent = false;
        loop {
            match rx.try_recv() {
                Ok(cmd) => {
                    sent |= matches!(cmd, Cmd::Send { .. });
                    conn.on_cmd(cmd);
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        let mut got = 0;
        while got < 256 {
            match conn.sock.try_recv() {
                Ok(Some(parts)) => {
                    conn.on_frame(&parts);
                    got += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(error = %e, "bus client socket failed");
                    return;
                }
            }
        }
        if sent && !spin.is_zero() {
            spin_until = Some(Instant::now() + spin);
        }
        if sent || got > 0 {
            // Let the callers take their answers and make their next requests.
            tokio::task::yield_now().await;
            continue;
        }
        if let Some(until) = spin_until {
            if !conn.pending.is_empty() && Instant::now() < until {
                // Leave the core to whoever is answering, and the runtime to its other tasks.
                std::thread::yield_now();
                tokio::task::yield_now().await;
                continue;
            }
            spin_until = None;
        }
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                None => return,
                Some(cmd) => {
                    let sent = matches!(cmd, Cmd::Send { .. });
                    conn.on_cmd(cmd);
                    if sent && !spin.is_zero() {
                        spin_until = Some(Instant::now() + spin);
                    }
                }
            },
            msg = conn.sock.recv() => match msg {
                Ok(parts) => conn.on_frame(&parts),
                Err(e) => {
                    tracing::error!(error = %e, "bus client socket failed");
                    return;
                }
            },
        }
    }
}
