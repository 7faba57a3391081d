//! The event bus: publishers connect a PUB socket to the broker's XSUB side, observers a SUB
//! socket to its XPUB side. Each event is two frames: the topic (the event's `kind`, so that
//! subscribers can filter by prefix) and the envelope.
//!
//! Events may be dropped (a slow or late subscriber misses them): nothing that must not be lost
//! travels only as an event.

use std::sync::Mutex;

use ming_schemas::envelope::Envelope;
use ming_schemas::to_body;
use serde::Serialize;

use crate::socket::AsyncSocket;
use crate::{context, BusConfig, BusError, BusResult};

/// Publishes events. Shareable between tasks and threads.
pub struct EventPublisher {
    sender: String,
    sock: Mutex<zmq::Socket>,
}

impl EventPublisher {
    /// Connects a publisher named `sender`.
    ///
    /// # Errors
    /// When the socket cannot be created or connected.
    pub fn connect(cfg: &BusConfig, sender: impl Into<String>) -> BusResult<Self> {
        let sock = context()
            .socket(zmq::PUB)
            .map_err(BusError::zmq("create PUB"))?;
        sock.set_linger(0).map_err(BusError::zmq("set linger"))?;
        sock.connect(&cfg.events_in_endpoint)
            .map_err(BusError::zmq("connect to events"))?;
        Ok(Self {
            sender: sender.into(),
            sock: Mutex::new(sock),
        })
    }

    /// Publishes `body` as an event of `kind`. Never blocks; drops the event when nobody can take
    /// it.
    pub fn publish<T: Serialize>(&self, kind: &str, body: &T) {
        let env = Envelope::event(self.sender.clone(), kind, to_body(body).unwrap_or_default());
        let frame = env.encode();
        if let Ok(sock) = self.sock.lock() {
            let _ = sock.send_multipart([kind.as_bytes(), &frame], zmq::DONTWAIT);
        }
    }
}

/// Receives events whose kind starts with one of the given prefixes.
pub struct EventSubscriber {
    sock: AsyncSocket,
    max_frame: usize,
}

impl EventSubscriber {
    /// Subscribes to `prefixes` (an empty prefix is everything). Must be called in a tokio
    /// runtime.
    ///
    /// # Errors
    /// When the socket cannot be created or connected.
    pub fn connect(cfg: &BusConfig, prefixes: &[&str]) -> BusResult<Self> {
        let sock = context()
            .socket(zmq::SUB)
            .map_err(BusError::zmq("create SUB"))?;
        sock.set_linger(0).map_err(BusError::zmq("set linger"))?;
        for p in prefixes {
            sock.set_subscribe(p.as_bytes())
                .map_err(BusError::zmq("subscribe"))?;
        }
        sock.connect(&cfg.events_out_endpoint)
            .map_err(BusError::zmq("connect to events"))?;
        Ok(Self {
            sock: AsyncSocket::new(sock)?,
            max_frame: cfg.max_frame_bytes,
        })
    }

    /// The next event. Malformed ones are logged and skipped.
    ///
    /// # Errors
    /// When the socket fails.
    pub async fn next(&mut self) -> BusResult<Envelope> {
        loop {
            let parts = self.sock.recv().await?;
            let Some(frame) = parts.last() else { continue };
            match Envelope::decode(frame, self.max_frame) {
                Ok(env) => return Ok(env),
                Err(e) => tracing::warn!(error = %e, "skipped a bad event"),
            }
        }
    }
}
