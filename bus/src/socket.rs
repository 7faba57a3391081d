//! A ZeroMQ socket driven by tokio.
//!
//! libzmq exposes a file descriptor (`ZMQ_FD`) that becomes readable when the socket *may* have
//! changed state; the truth is in `ZMQ_EVENTS`. The rule that makes this correct is: check
//! `ZMQ_EVENTS` before every wait, and only wait on the fd when it says nothing is pending. That
//! is only sound when one task owns the socket (a send by someone else could consume the fd's
//! signal), so [`AsyncSocket`] takes `&mut self` and is meant to live inside one task.

use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::{BusError, BusResult};

struct ZmqFd(RawFd);

impl AsRawFd for ZmqFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A DEALER connected to the broker, as clients and workers use it: no linger (exit never
/// blocks), deep queues (bursts and streams are not dropped).
///
/// # Errors
/// When the socket cannot be created or the endpoint is invalid.
pub fn broker_dealer(bus: &crate::BusConfig) -> BusResult<AsyncSocket> {
    let sock = crate::context()
        .socket(zmq::DEALER)
        .map_err(BusError::zmq("create DEALER"))?;
    sock.set_linger(0).map_err(BusError::zmq("set linger"))?;
    sock.set_sndhwm(100_000)
        .map_err(BusError::zmq("set SNDHWM"))?;
    sock.set_rcvhwm(100_000)
        .map_err(BusError::zmq("set RCVHWM"))?;
    sock.connect(&bus.bus_endpoint)
        .map_err(BusError::zmq("connect to broker"))?;
    AsyncSocket::new(sock)
}

/// A ZeroMQ socket with async receive, owned by one task.
pub struct AsyncSocket {
    // Declared first so it is dropped (deregistered) before the socket closes the descriptor.
    fd: AsyncFd<ZmqFd>,
    sock: zmq::Socket,
}

impl AsyncSocket {
    /// Wraps `sock`; must be called inside a tokio runtime.
    ///
    /// # Errors
    /// When `ZMQ_FD` cannot be read or registered with the reactor.
    pub fn new(sock: zmq::Socket) -> BusResult<Self> {
        let raw = sock.get_fd().map_err(BusError::zmq("get ZMQ_FD"))?;
        // SAFETY: ZMQ_FD is owned by `sock`, which lives in the same struct and outlives `fd`
        // (field order), and libzmq never replaces a socket's signalling descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(ZmqFd(raw), Interest::READABLE) }
            .map_err(|e| BusError::Io {
                context: "register ZeroMQ socket with tokio".into(),
                source: e.into(),
            })?;
        Ok(Self { fd, sock })
    }

    /// The wrapped socket, for options and non-blocking sends.
    pub fn socket(&self) -> &zmq::Socket {
        &self.sock
    }

    /// Takes one multipart message if one is waiting; never waits.
    ///
    /// A receive is tried first: when a message is there it costs no system call, where asking
    /// `ZMQ_EVENTS` first costs one every time (libzmq polls its command pipe for it); a
    /// non-blocking receive that finds nothing processes the pending commands itself.
    ///
    /// # Errors
    /// When libzmq reports an error other than "nothing yet".
    pub fn try_recv(&self) -> BusResult<Option<Vec<Vec<u8>>>> {
        match self.sock.recv_multipart(zmq::DONTWAIT) {
            Ok(parts) => Ok(Some(parts)),
            Err(zmq::Error::EAGAIN) => Ok(None),
            Err(e) => Err(BusError::Zmq {
                op: "recv",
                source: e,
            }),
        }
    }

    /// Receives one multipart message. Cancel-safe: nothing is consumed until it returns.
    ///
    /// # Errors
    /// When libzmq reports an error other than "nothing yet".
    pub async fn recv(&mut self) -> BusResult<Vec<Vec<u8>>> {
        loop {
            if let Some(parts) = self.try_recv()? {
                return Ok(parts);
            }
            // Nothing yet: `ZMQ_EVENTS` is the truth before the wait (the rule above).
            let events = self
                .sock
                .get_events()
                .map_err(BusError::zmq("get ZMQ_EVENTS"))?;
            if events.contains(zmq::POLLIN) {
                continue;
            }
            let mut guard = self.fd.readable().await.map_err(|source| BusError::Io {
                context: "wait for ZeroMQ socket".into(),
                source,
            })?;
            guard.clear_ready();
        }
    }

    /// Sends a multipart message, waiting (asynchronously) while the peer's queue is full.
    /// Wrap in a timeout: with no peer connected it waits until one is.
    ///
    /// # Errors
    /// libzmq errors other than "queue full".
    pub async fn send_wait(&mut self, parts: &[&[u8]]) -> BusResult<()> {
        loop {
            match self
                .sock
                .send_multipart(parts.iter().copied(), zmq::DONTWAIT)
            {
                Ok(()) => return Ok(()),
                Err(zmq::Error::EAGAIN) => {}
                Err(e) => {
                    return Err(BusError::Zmq {
                        op: "send",
                        source: e,
                    })
                }
            }
            loop {
                let events = self
                    .sock
                    .get_events()
                    .map_err(BusError::zmq("get ZMQ_EVENTS"))?;
                if events.contains(zmq::POLLOUT) {
                    break;
                }
                let mut guard = self.fd.readable().await.map_err(|source| BusError::Io {
                    context: "wait for ZeroMQ socket".into(),
                    source,
                })?;
                guard.clear_ready();
            }
        }
    }

    /// Sends a multipart message without blocking.
    ///
    /// # Errors
    /// `EAGAIN` (as [`BusError::Zmq`]) when the peer's queue is full (high-water mark) or, on a
    /// DEALER, no peer is connected; other libzmq errors as they come.
    pub fn send(&self, parts: &[&[u8]]) -> BusResult<()> {
        self.sock
            .send_multipart(parts.iter().copied(), zmq::DONTWAIT)
            .map_err(BusError::zmq("send"))
    }
}
