//! `just bench` (bus part): round-trip latency through the broker against a raw ZeroMQ
//! DEALER/ROUTER pair measured in the same run, and throughput. Prints a table; asserts nothing.
//!
//! Targets (issue #2): p50 ≤ 100 µs through the broker (two hops), ≤ 2.5x raw; ≥ 100k msg/s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ming_bus::broker::BrokerHandle;
use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusClient, BusConfig};
use ming_schemas::envelope::{now_ms, Envelope, Flow};

const ROUND_TRIPS: usize = 20_000;
const WARMUP: usize = 2_000;

struct Echo;

impl Handler for Echo {
    async fn handle(&self, req: Request, mut resp: Responder) {
        if req.kind() == "bench.stream" {
            let n: u32 = req.body().unwrap_or(0);
            for i in 0..n {
                resp.partial(&i);
            }
            return resp.reply(&n);
        }
        let body: Vec<u8> = req.body().unwrap_or_default();
        resp.reply(&serde_bytes::ByteBuf::from(body));
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Raw libzmq: DEALER ↔ ROUTER echo over ipc, one hop each way.
fn raw_pair(dir: &std::path::Path, payload: &[u8]) -> (Duration, Duration) {
    // One context (one I/O thread) per side, as two processes would have.
    let ctx = zmq::Context::new();
    let endpoint = format!("ipc://{}/raw.sock", dir.display());
    let router = zmq::Context::new().socket(zmq::ROUTER).unwrap();
    router.bind(&endpoint).unwrap();
    let echo = std::thread::spawn(move || {
        for _ in 0..ROUND_TRIPS + WARMUP {
            let parts = router.recv_multipart(0).unwrap();
            router.send_multipart(parts, 0).unwrap();
        }
    });
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.connect(&endpoint).unwrap();
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + WARMUP {
        let t = Instant::now();
        dealer.send(payload, 0).unwrap();
        let _ = dealer.recv_bytes(0).unwrap();
        if i >= WARMUP {
            times.push(t.elapsed());
        }
    }
    echo.join().unwrap();
    stats(times)
}

/// A `BusClient` on `rt`, once the echo worker answers through the broker.
fn connect(rt: &tokio::runtime::Runtime, cfg: &BusConfig, name: &str) -> BusClient {
    rt.block_on(async {
        let client = BusClient::connect(cfg, name).unwrap();
        // Wait for the worker to register.
        loop {
            let r: Result<serde_bytes::ByteBuf, _> = client
                .request(
                    "echo",
                    "bench.echo",
                    &serde_bytes::ByteBuf::from(vec![1u8]),
                    Duration::from_millis(200),
                )
                .await;
            if r.is_ok() {
                break client;
            }
        }
    })
}

/// Round trips through the broker from two async `BusClient`s on one current-thread runtime: one
/// as `cfg` says, one that polls 200 µs after each request. Four alternating rounds, so that the
/// VM's drift over the run falls on both alike. Returns (configured, polling) timings.
fn async_round_trips(cfg: &BusConfig, payload: &[u8]) -> (Vec<Duration>, Vec<Duration>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = connect(&rt, cfg, "bench");
    let poller = connect(
        &rt,
        &BusConfig {
            client_spin: Duration::from_micros(200),
            ..cfg.clone()
        },
        "bench-polls",
    );

    let round_trips = |client: &BusClient, n: usize| {
        rt.block_on(async {
            let body = serde_bytes::ByteBuf::from(payload.to_vec());
            let mut times = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                let _: serde_bytes::ByteBuf = client
                    .request("echo", "bench.echo", &body, Duration::from_secs(5))
                    .await
                    .unwrap();
                times.push(t.elapsed());
            }
            times
        })
    };
    let (mut configured, mut polling) = (Vec::new(), Vec::new());
    round_trips(&client, WARMUP);
    round_trips(&poller, WARMUP);
    for round in 0..4 {
        if round % 2 == 0 {
            configured.extend(round_trips(&client, ROUND_TRIPS / 4));
            polling.extend(round_trips(&poller, ROUND_TRIPS / 4));
        } else {
            polling.extend(round_trips(&poller, ROUND_TRIPS / 4));
            configured.extend(round_trips(&client, ROUND_TRIPS / 4));
        }
    }
    (configured, polling)
}

fn main() {
    // Re-executed as the worker process: serve `echo` on the given runtime dir until killed.
    if let Ok(dir) = std::env::var("MING_BENCH_WORKER_DIR") {
        let wcfg = BusConfig::in_dir(std::path::Path::new(&dir));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let _ = run_worker(
                &wcfg,
                WorkerOptions::for_service("echo"),
                Arc::new(Echo),
                std::future::pending(),
            )
            .await;
        });
        return;
    }
    // Re-executed as a service's client: the async round trips from a process of its own,
    // printed as nanoseconds (p50 p99 of the configured client, then of the polling one).
    if let Ok(dir) = std::env::var("MING_BENCH_CLIENT_DIR") {
        let mut ccfg = BusConfig::in_dir(std::path::Path::new(&dir));
        if let Some(us) = std::env::var("MING_BENCH_CLIENT_SPIN_US")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            ccfg.client_spin = Duration::from_micros(us);
        }
        let (configured, polling) = async_round_trips(&ccfg, &[7u8; 64]);
        for (p50, p99) in [stats(configured), stats(polling)] {
            println!("{} {}", p50.as_nanos(), p99.as_nanos());
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = BusConfig::in_dir(dir.path());
    // `bus.broker_spin_us` (default 200); `MING_BENCH_BROKER_SPIN_US=0` measures the broker
    // that sleeps as soon as it has nothing to do.
    if let Some(us) = std::env::var("MING_BENCH_BROKER_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.broker_spin = Duration::from_micros(us);
    }
    // `bus.client_spin_us` (default 0: it sleeps as soon as its request is out) for the async
    // BusClient. A second async client that polls 200 µs after each request is measured in the
    // same run: whether the poll pays depends on the VM (ARCHITECTURE.md).
    if let Some(us) = std::env::var("MING_BENCH_CLIENT_SPIN_US")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        cfg.client_spin = Duration::from_micros(us);
    }
    let _broker = BrokerHandle::start(&cfg, ["echo".to_string()], None).unwrap();
    // The worker in its own process, as a service is.
    let mut worker = std::process::Command::new(std::env::current_exe().unwrap())
        .env("MING_BENCH_WORKER_DIR", dir.path())
        .spawn()
        .unwrap();
    let payload = vec![7u8; 64];
    let sample = Envelope::request(
        "bench",
        "echo",
        "bench.echo",
        ming_schemas::to_body(&serde_bytes::ByteBuf::from(payload.clone())).unwrap(),
        now_ms() + 60_000,
    );
    let frame_len = sample.encode().len();
    let (raw50, raw99) = raw_pair(dir.path(), &sample.encode());

    // Through the broker, async client (BusClient) → broker → worker → broker → client: the
    // client as configured and one that polls, in alternating rounds, first in this process
    // (sharing the broker's libzmq context and its I/O thread)...
    let (configured, polling) = async_round_trips(&cfg, &payload);
    // ...then from a process of its own, as a service's client is.
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("MING_BENCH_CLIENT_DIR", dir.path())
        .env(
            "MING_BENCH_CLIENT_SPIN_US",
            cfg.client_spin.as_micros().to_string(),
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut apart = text.lines().map(|l| {
        l.split_whitespace()
            .map(|v| Duration::from_nanos(v.parse().unwrap()))
            .collect::<Vec<_>>()
    });
    let (c50, c99, p50, p99) = match (apart.next(), apart.next()) {
        (Some(c), Some(p)) if c.len() == 2 && p.len() == 2 => (c[0], c[1], p[0], p[1]),
        _ => panic!(
            "the client process said {text:?}, {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    let ((b50, b99), (z50, z99)) = (stats(configured), stats(polling));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = connect(&rt, &cfg, "bench");

    // Through the broker from a plain blocking DEALER (no tokio on the caller's side).
    let ctx = zmq::Context::new();
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.connect(&cfg.bus_endpoint).unwrap();
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS + WARMUP {
        let env = Envelope::request(
            "bench",
            "echo",
            "bench.echo",
            sample.body.clone(),
            now_ms() + 60_000,
        );
        let t = Instant::now();
        dealer.send(env.encode(), 0).unwrap();
        let _ = dealer.recv_bytes(0).unwrap();
        if i >= WARMUP {
            times.push(t.elapsed());
        }
    }
    let (s50, s99) = stats(times);

    // Throughput: a window of requests in flight from one blocking DEALER.
    let total = 200_000usize;
    let window = 512usize;
    let frames: Vec<Vec<u8>> = (0..total)
        .map(|_| {
            Envelope::request(
                "bench",
                "echo",
                "bench.echo",
                sample.body.clone(),
                now_ms() + 120_000,
            )
            .encode()
        })
        .collect();
    let t = Instant::now();
    let (mut sent, mut got) = (0usize, 0usize);
    while got < total {
        while sent < total && sent - got < window {
            dealer.send(&frames[sent], 0).unwrap();
            sent += 1;
        }
        let reply = dealer.recv_bytes(0).unwrap();
        debug_assert!(Envelope::decode(&reply, 1 << 20)
            .map(|e| e.flow == Flow::Reply)
            .unwrap_or(false));
        got += 1;
    }
    let raw_tput = total as f64 / t.elapsed().as_secs_f64();

    // Throughput with the async client: many concurrent requests.
    let async_total = 100_000usize;
    let async_tput = rt.block_on(async {
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let per = async_total / 256;
        for _ in 0..256 {
            let c = client.clone();
            let body = serde_bytes::ByteBuf::from(payload.clone());
            set.spawn(async move {
                for _ in 0..per {
                    let _: serde_bytes::ByteBuf = c
                        .request("echo", "bench.echo", &body, Duration::from_secs(30))
                        .await
                        .unwrap();
                }
            });
        }
        while set.join_next().await.is_some() {}
        (per * 256) as f64 / t.elapsed().as_secs_f64()
    });

    // Streaming: one request answered by many partial frames.
    let stream_n = 50_000u32;
    let stream_tput = rt.block_on(async {
        let body = ming_schemas::to_body(&stream_n).unwrap();
        let t = Instant::now();
        let mut s = client
            .stream(client.envelope("echo", "bench.stream", body, Duration::from_secs(60)))
            .unwrap();
        let mut n = 0u32;
        while let Some(f) = s.next().await {
            if f.unwrap().flow == Flow::Partial {
                n += 1;
            }
        }
        assert_eq!(n, stream_n);
        f64::from(n) / t.elapsed().as_secs_f64()
    });

    println!(
        "bus benchmark (ipc, {frame_len}-byte request frames, {ROUND_TRIPS} round trips each; the broker polls {} µs after each message, the async client {} µs after each request)",
        cfg.broker_spin.as_micros(),
        cfg.client_spin.as_micros()
    );
    println!("| path | p50 µs | p99 µs | p50 vs raw |");
    println!("|---|---:|---:|---:|");
    println!(
        "| raw DEALER/ROUTER echo (1 hop each way) | {:.1} | {:.1} | 1.00x |",
        us(raw50),
        us(raw99)
    );
    for (path, p50, p99) in [
        ("broker, blocking DEALER client", s50, s99),
        ("broker, async BusClient (tokio)", b50, b99),
        (
            "broker, async BusClient that polls (client_spin_us = 200)",
            z50,
            z99,
        ),
        (
            "broker, async BusClient in its own process (as a service's)",
            c50,
            c99,
        ),
        (
            "broker, async BusClient in its own process, polling",
            p50,
            p99,
        ),
    ] {
        println!(
            "| {path} | {:.1} | {:.1} | {:.2}x |",
            us(p50),
            us(p99),
            us(p50) / us(raw50)
        );
    }
    println!();
    println!("| throughput | per second |");
    println!("|---|---:|");
    println!(
        "| requests through the broker, blocking DEALER, {window} in flight | {raw_tput:.0} |"
    );
    println!("| requests through the broker, async BusClient, 256 tasks | {async_tput:.0} |");
    println!("| streamed partial frames, one request | {stream_tput:.0} |");
    let _ = worker.kill();
    let _ = worker.wait();
}
