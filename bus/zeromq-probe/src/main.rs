//! See Cargo.toml.

use std::time::{Duration, Instant};
use zeromq::{DealerSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

const N: usize = 20000;
const WARM: usize = 2000;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    (p(0.5), p(0.99))
}

/// N timed round trips (after WARM untimed ones) from a DEALER on its own thread and runtime.
fn round_trips(endpoint: String, payload: Vec<u8>) -> Vec<Duration> {
    std::thread::spawn(move || {
        rt().block_on(async move {
            let mut d = DealerSocket::new();
            d.connect(&endpoint).await.unwrap();
            let mut t = Vec::new();
            for i in 0..N + WARM {
                let s = Instant::now();
                d.send(ZmqMessage::from(payload.clone())).await.unwrap();
                let _ = d.recv().await.unwrap();
                if i >= WARM {
                    t.push(s.elapsed());
                }
            }
            t
        })
    })
    .join()
    .unwrap()
}

fn main() {
    let dir = std::env::temp_dir().join(format!("zmqx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let payload = vec![7u8; 199];
    // 1. raw pair: ROUTER echo in its own thread/runtime, DEALER client in another.
    let ep = format!("ipc://{}/raw.sock", dir.display());
    let ep2 = ep.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let mut r = RouterSocket::new();
            r.bind(&ep2).await.unwrap();
            tx.send(()).unwrap();
            loop {
                let m = r.recv().await.unwrap();
                r.send(m).await.unwrap();
            }
        })
    });
    rx.recv().unwrap();
    let (a, b) = stats(round_trips(ep, payload.clone()));
    println!(
        "zeromq raw DEALER/ROUTER echo (2 threads, own runtimes): p50 {a:.1} us p99 {b:.1} us"
    );

    // 2. through a relay "broker": client DEALER -> broker ROUTER(front) ; broker ROUTER(back) <- worker DEALER
    let front = format!("ipc://{}/front.sock", dir.display());
    let back = format!("ipc://{}/back.sock", dir.display());
    let (f2, b2) = (front.clone(), back.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let mut fr = RouterSocket::new();
            fr.bind(&f2).await.unwrap();
            let mut br = RouterSocket::new();
            br.bind(&b2).await.unwrap();
            tx.send(()).unwrap();
            // the worker announces itself first
            let hello = br.recv().await.unwrap();
            let worker_id = hello.get(0).unwrap().clone();
            let spin_us: u64 = std::env::var("SPIN")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut last = Instant::now();
            loop {
                let spinning = (last.elapsed().as_micros() as u64) < spin_us;
                tokio::select! {
                    biased;
                    _ = tokio::task::yield_now(), if spinning => { continue; }
                    m = fr.recv() => {
                        last = Instant::now();
                        let m = m.unwrap();
                        // [client_id, payload] -> [worker_id, client_id, payload]
                        let mut out = ZmqMessage::from(worker_id.clone());
                        for f in m.into_vec() { out.push_back(f); }
                        br.send(out).await.unwrap();
                    }
                    m = br.recv() => {
                        last = Instant::now();
                        let m = m.unwrap();
                        // [worker_id, client_id, payload] -> [client_id, payload]
                        let mut v = m.into_vec();
                        v.remove(0);
                        let out = ZmqMessage::try_from(v).unwrap();
                        fr.send(out).await.unwrap();
                    }
                }
            }
        })
    });
    rx.recv().unwrap();
    std::thread::spawn(move || {
        rt().block_on(async move {
            let mut w = DealerSocket::new();
            w.connect(&back).await.unwrap();
            w.send(ZmqMessage::from("hello")).await.unwrap();
            loop {
                let m = w.recv().await.unwrap();
                w.send(m).await.unwrap();
            }
        })
    });
    std::thread::sleep(Duration::from_millis(200));
    let (c, d) = stats(round_trips(front, payload));
    println!("zeromq through a relay broker (client, broker, worker: 3 threads, own runtimes): p50 {c:.1} us p99 {d:.1} us ({:.2}x raw)", c / a);
    let _ = std::fs::remove_dir_all(&dir);
}
