//! The bus end to end inside one process: a real broker thread, real ipc sockets in a temp dir,
//! real workers and clients.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ming_bus::broker::BrokerHandle;
use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusClient, BusConfig, BusError};
use ming_schemas::control::{BrokerStatus, Empty, Pong};
use ming_schemas::envelope::{now_ms, Envelope, Flow};
use ming_schemas::{kinds, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Echo {
    text: String,
    #[serde(default)]
    parts: u32,
    #[serde(default)]
    sleep_ms: u64,
}

struct EchoHandler {
    served: AtomicUsize,
}

impl Handler for EchoHandler {
    async fn handle(&self, mut req: Request, mut resp: Responder) {
        self.served.fetch_add(1, Ordering::SeqCst);
        let echo: Echo = match req.body() {
            Ok(e) => e,
            Err(e) => return resp.fail(&e),
        };
        match req.kind() {
            "test.echo" => {
                for i in 0..echo.parts {
                    resp.partial(&Echo {
                        text: format!("part {i}"),
                        parts: 0,
                        sleep_ms: 0,
                    });
                }
                if echo.sleep_ms > 0 {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(echo.sleep_ms)) => {}
                        _ = req.cancelled.wait_for(|c| *c) => {
                            return resp.error(ErrorCode::Cancelled, "cancelled");
                        }
                    }
                }
                resp.reply(&echo);
            }
            other => resp.error(ErrorCode::Unsupported, format!("no {other}")),
        }
    }
}

struct Bus {
    _dir: tempfile::TempDir,
    cfg: BusConfig,
    broker: Option<BrokerHandle>,
}

fn bus() -> Bus {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BusConfig::in_dir(dir.path());
    cfg.heartbeat = Duration::from_millis(50);
    cfg.max_frame_bytes = 64 * 1024;
    let broker = BrokerHandle::start(&cfg, ["echo".to_string()], None).unwrap();
    Bus {
        _dir: dir,
        cfg,
        broker: Some(broker),
    }
}

fn spawn_worker(
    cfg: &BusConfig,
    instance: &str,
) -> (
    Arc<EchoHandler>,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let handler = Arc::new(EchoHandler {
        served: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut opts = WorkerOptions::for_service("echo");
    opts.instance = instance.into();
    let cfg = cfg.clone();
    let h = handler.clone();
    let task = tokio::spawn(async move {
        run_worker(&cfg, opts, h, async {
            let _ = stop_rx.await;
        })
        .await
        .unwrap();
    });
    (handler, stop_tx, task)
}

async fn wait_registered(client: &BusClient, n: usize) {
    for _ in 0..200 {
        let st: BrokerStatus = client
            .request(
                "broker",
                kinds::BROKER_STATUS,
                &Empty {},
                Duration::from_secs(1),
            )
            .await
            .unwrap();
        if st
            .services
            .iter()
            .any(|s| s.name == "echo" && s.workers.len() == n)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{n} echo workers never registered");
}

fn echo(text: &str) -> Echo {
    Echo {
        text: text.into(),
        parts: 0,
        sleep_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_and_builtin_ping() {
    let b = bus();
    let (_h, _stop, _t) = spawn_worker(&b.cfg, "1");
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    wait_registered(&client, 1).await;
    let out: Echo = client
        .request("echo", "test.echo", &echo("hi"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(out, echo("hi"));
    let pong: Pong = client
        .request("echo", kinds::PING, &Empty {}, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(pong.service, "echo");
    let err = client
        .request::<_, Echo>("echo", "test.nope", &echo("x"), Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unsupported);
    // The service said so, not the broker.
    assert!(
        matches!(&err, ming_bus::BusError::Remote { from, .. } if from == "echo")
            && !err.from_broker(),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_delivers_partials_then_final() {
    let b = bus();
    let (_h, _stop, _t) = spawn_worker(&b.cfg, "1");
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    wait_registered(&client, 1).await;
    let body = ming_schemas::to_body(&Echo {
        text: "s".into(),
        parts: 5,
        sleep_ms: 0,
    })
    .unwrap();
    let mut stream = client
        .stream(client.envelope("echo", "test.echo", body, Duration::from_secs(2)))
        .unwrap();
    let mut partials = Vec::new();
    loop {
        let frame = stream.next().await.unwrap().unwrap();
        if frame.flow == Flow::Partial {
            partials.push(frame.body::<Echo>().unwrap().text);
        } else {
            assert_eq!(frame.flow, Flow::Reply);
            break;
        }
    }
    assert_eq!(
        partials,
        (0..5).map(|i| format!("part {i}")).collect::<Vec<_>>()
    );
    assert!(stream.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_gives_timeout_and_cancels_the_work() {
    let b = bus();
    let (_h, _stop, _t) = spawn_worker(&b.cfg, "1");
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    wait_registered(&client, 1).await;
    let started = std::time::Instant::now();
    let err = client
        .request::<_, Echo>(
            "echo",
            "test.echo",
            &Echo {
                text: "slow".into(),
                parts: 0,
                sleep_ms: 10_000,
            },
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Timeout, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The worker was told to stop: it is free again and serves the next request.
    let out: Echo = client
        .request("echo", "test.echo", &echo("next"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(out.text, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_cancel_ends_the_request() {
    let b = bus();
    let (_h, _stop, _t) = spawn_worker(&b.cfg, "1");
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    wait_registered(&client, 1).await;
    let body = ming_schemas::to_body(&Echo {
        text: "c".into(),
        parts: 1,
        sleep_ms: 10_000,
    })
    .unwrap();
    let mut stream = client
        .stream(client.envelope("echo", "test.echo", body, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().flow, Flow::Partial);
    stream.cancel();
    // The request ends with the worker's own final answer to the cancel.
    let end = stream.next().await.unwrap().unwrap_err();
    assert_eq!(end.code(), ErrorCode::Cancelled, "{end}");
    assert!(stream.next().await.is_none());
    // The handler saw the cancel and answered; only the status request itself stays in flight.
    let mut st = None;
    for _ in 0..100 {
        let s: ming_schemas::control::ServiceStatus = client
            .request("echo", kinds::STATUS, &Empty {}, Duration::from_secs(2))
            .await
            .unwrap();
        if s.in_flight == 0 && s.handled >= 1 {
            st = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(st.is_some(), "the cancelled request never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_unavailable_at_once() {
    let b = bus();
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    let started = std::time::Instant::now();
    let err = client
        .request::<_, Echo>("nobody", "test.echo", &echo("x"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable, "{err}");
    assert!(err.from_broker(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_waits_for_a_worker_to_register() {
    let b = bus();
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    let c2 = client.clone();
    let pending = tokio::spawn(async move {
        c2.request::<_, Echo>("echo", "test.echo", &echo("early"), Duration::from_secs(5))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_h, _stop, _t) = spawn_worker(&b.cfg, "1");
    assert_eq!(pending.await.unwrap().unwrap().text, "early");
    // And with no worker coming, it fails at the deadline, not later.
    let b2 = bus();
    let client = BusClient::connect(&b2.cfg, "test").unwrap();
    let started = std::time::Instant::now();
    let err = client
        .request::<_, Echo>("echo", "test.echo", &echo("x"), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            ErrorCode::ServiceUnavailable | ErrorCode::Timeout
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_workers_share_the_load() {
    let b = bus();
    let (h1, _s1, _t1) = spawn_worker(&b.cfg, "1");
    let (h2, _s2, _t2) = spawn_worker(&b.cfg, "2");
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    wait_registered(&client, 2).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.request::<_, Echo>(
                "echo",
                "test.echo",
                &Echo {
                    text: i.to_string(),
                    parts: 0,
                    sleep_ms: 5,
                },
                Duration::from_secs(5),
            )
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let (a, b_) = (
        h1.served.load(Ordering::SeqCst),
        h2.served.load(Ordering::SeqCst),
    );
    assert_eq!(a + b_, 40);
    assert!(a >= 10 && b_ >= 10, "unbalanced: {a} vs {b_}");
    // A particular worker can be addressed.
    let before = h2.served.load(Ordering::SeqCst);
    let _: Echo = client
        .request("echo@2", "test.echo", &echo("to 2"), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(h2.served.load(Ordering::SeqCst), before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_worker_is_dropped_and_its_requests_fail() {
    let b = bus();
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    // A raw "worker" that registers, takes a request and then goes silent.
    let raw = zmq::Context::new().socket(zmq::DEALER).unwrap();
    raw.connect(&b.cfg.bus_endpoint).unwrap();
    let reg = ming_schemas::control::Register {
        service: "echo".into(),
        instance: "silent".into(),
        pid: 1,
        version: "0".into(),
        sandbox: "none".into(),
    };
    let env = Envelope::request(
        "echo",
        "broker",
        kinds::REGISTER,
        ming_schemas::to_body(&reg).unwrap(),
        now_ms() + 5000,
    );
    raw.send(env.encode(), 0).unwrap();
    let _registered = raw.recv_bytes(0).unwrap();
    let started = std::time::Instant::now();
    let err = client
        .request::<_, Echo>("echo", "test.echo", &echo("lost"), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable, "{err}");
    // Dropped within about three heartbeat intervals (50 ms each here), far before the deadline.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("heartbeat"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_broker_goes_on() {
    let b = bus();
    let (_h, _stop, _t) = spawn_worker(&b.cfg, "1");
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    wait_registered(&client, 1).await;
    let raw = zmq::Context::new().socket(zmq::DEALER).unwrap();
    raw.set_rcvtimeo(2000).unwrap();
    raw.connect(&b.cfg.bus_endpoint).unwrap();
    let good = Envelope::request(
        "raw",
        "echo",
        "test.echo",
        ming_schemas::to_body(&echo("ok")).unwrap(),
        now_ms() + 2000,
    );
    let mut newer = good.clone();
    newer.version.major = 9;
    newer.id += 1;
    let encoded = good.encode();
    let big = vec![0x90u8; b.cfg.max_frame_bytes + 1];
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        (
            "garbage",
            b"\xff\x00not msgpack".to_vec(),
            ErrorCode::BadRequest,
        ),
        (
            "truncated",
            encoded[..encoded.len() / 2].to_vec(),
            ErrorCode::BadRequest,
        ),
        ("newer major", newer.encode(), ErrorCode::Unsupported),
        ("oversized", big, ErrorCode::TooLarge),
    ];
    for (name, bytes, code) in cases {
        raw.send(bytes, 0).unwrap();
        let reply = raw
            .recv_bytes(0)
            .unwrap_or_else(|e| panic!("{name}: no error reply: {e}"));
        let env = Envelope::decode(&reply, 1 << 20).unwrap();
        assert_eq!(env.flow, Flow::Error, "{name}");
        assert_eq!(env.error_body().code, code, "{name}: {}", env.error_body());
    }
    assert_eq!(
        Envelope::decode(
            &{
                raw.send(newer.encode(), 0).unwrap();
                raw.recv_bytes(0).unwrap()
            },
            1 << 20
        )
        .unwrap()
        .correlation,
        Some(newer.id),
        "the unsupported-version error is correlated to the request"
    );
    raw.send(encoded, 0).unwrap();
    let reply = Envelope::decode(&raw.recv_bytes(0).unwrap(), 1 << 20).unwrap();
    assert_eq!(reply.flow, Flow::Reply);
    assert_eq!(reply.body::<Echo>().unwrap().text, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_finishes_in_flight_work_then_stops() {
    let b = bus();
    let (_h, _stop, task) = spawn_worker(&b.cfg, "1");
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    wait_registered(&client, 1).await;
    let c2 = client.clone();
    let slow = tokio::spawn(async move {
        c2.request::<_, Echo>(
            "echo",
            "test.echo",
            &Echo {
                text: "slow".into(),
                parts: 0,
                sleep_ms: 300,
            },
            Duration::from_secs(5),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _: ming_schemas::control::Ack = client
        .request(
            "echo",
            kinds::DRAIN,
            &ming_schemas::control::Drain { grace_ms: 3000 },
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert_eq!(slow.await.unwrap().unwrap().text, "slow");
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_never_hangs_without_a_broker() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = BusConfig::in_dir(dir.path());
    let client = BusClient::connect(&cfg, "test").unwrap();
    let started = std::time::Instant::now();
    let err = client
        .request::<_, Pong>("echo", kinds::PING, &Empty {}, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_re_registers_after_the_broker_restarts() {
    let mut b = bus();
    let (_h, _stop, _t) = spawn_worker(&b.cfg, "1");
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    wait_registered(&client, 1).await;
    b.broker.take().unwrap().stop();
    b.broker = Some(BrokerHandle::start(&b.cfg, ["echo".to_string()], None).unwrap());
    // A request written while the client's connection to the old broker was going down is lost
    // with that connection (it times out, as it must); the worker itself comes back.
    let mut last = None;
    for _ in 0..20 {
        match client
            .request::<_, Echo>(
                "echo",
                "test.echo",
                &echo("again"),
                Duration::from_millis(500),
            )
            .await
        {
            Ok(out) => {
                assert_eq!(out.text, "again");
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    panic!("the worker never came back: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_marked_down_fails_at_once_and_waiting_requests_are_released() {
    let b = bus();
    let client = BusClient::connect(&b.cfg, "test").unwrap();
    let c2 = client.clone();
    let waiting = tokio::spawn(async move {
        let started = std::time::Instant::now();
        let r = c2
            .request::<_, Echo>("echo", "test.echo", &echo("x"), Duration::from_secs(10))
            .await;
        (r, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let broker = b.broker.as_ref().unwrap();
    broker.set_down("echo", Some("failed: model missing".into()));
    let (r, waited) = waiting.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.code(), ErrorCode::ServiceUnavailable);
    assert!(e.to_string().contains("failed: model missing"), "{e}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
    let started = std::time::Instant::now();
    let e = client
        .request::<_, Echo>("echo", "test.echo", &echo("y"), Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("failed: model missing")
            && started.elapsed() < Duration::from_secs(1),
        "{e}"
    );
    // Up again: requests wait for a worker and are served. (The broker takes the change
    // between two polls: wait until it no longer refuses at once.)
    broker.set_down("echo", None);
    for _ in 0..200 {
        match client
            .request::<_, Echo>(
                "echo",
                "test.echo",
                &echo("probe"),
                Duration::from_millis(30),
            )
            .await
        {
            Err(e) if e.to_string().contains("is failed") => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            _ => break,
        }
    }
    let c3 = client.clone();
    let served = tokio::spawn(async move {
        c3.request::<_, Echo>("echo", "test.echo", &echo("z"), Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_h, _stop, _t) = spawn_worker(&b.cfg, "1");
    assert_eq!(served.await.unwrap().unwrap().text, "z");
}

/// A client that polls for its answers after each request (`bus.client_spin_us`) gets exactly
/// what one that sleeps at once gets: quick answers (taken while it polls), answers that come
/// after the poll has given up, streams, and several requests in flight at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_client_and_a_sleeping_one_get_the_same_answers() {
    let bus = bus();
    let (_h, _stop, _task) = spawn_worker(&bus.cfg, "w1");
    for spin in [
        Duration::ZERO,
        Duration::from_micros(200),
        Duration::from_millis(10),
    ] {
        let mut cfg = bus.cfg.clone();
        cfg.client_spin = spin;
        let client = BusClient::connect(&cfg, format!("poll-{}", spin.as_micros())).unwrap();
        wait_registered(&client, 1).await;
        let ask = |text: &str, parts: u32, sleep_ms: u64| {
            let client = client.clone();
            let e = Echo {
                text: text.into(),
                parts,
                sleep_ms,
            };
            async move {
                let body = ming_schemas::to_body(&e).unwrap();
                let env = client.envelope("echo", "test.echo", body, Duration::from_secs(5));
                let mut s = client.stream(env).unwrap();
                let mut frames = Vec::new();
                while let Some(f) = s.next().await {
                    let f = f.unwrap();
                    frames.push((f.flow, f.body::<Echo>().unwrap().text));
                }
                frames
            }
        };
        // Quick, after the poll window (30 ms), within a 10 ms window (5 ms), and a stream.
        let (quick, late, mid, stream) = tokio::join!(
            ask("quick", 0, 0),
            ask("late", 0, 30),
            ask("mid", 0, 5),
            ask("stream", 3, 30)
        );
        let reply = |t: &str| vec![(Flow::Reply, t.to_string())];
        assert_eq!(quick, reply("quick"), "spin {spin:?}");
        assert_eq!(late, reply("late"), "spin {spin:?}");
        assert_eq!(mid, reply("mid"), "spin {spin:?}");
        let mut want: Vec<(Flow, String)> = (0..3)
            .map(|i| (Flow::Partial, format!("part {i}")))
            .collect();
        want.push((Flow::Reply, "stream".into()));
        assert_eq!(stream, want, "spin {spin:?}");
        // One after another, each quick: every one answered while the client polls.
        for i in 0..50 {
            let e: Echo = client
                .request(
                    "echo",
                    "test.echo",
                    &echo(&format!("n{i}")),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            assert_eq!(e.text, format!("n{i}"));
        }
    }
}
