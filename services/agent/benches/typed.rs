//! Typed input → first action, fast path: the intent matcher alone, and a message through the
//! bus to the agent until its reply (the action has started and finished by then). Prints
//! p50/p95; asserts nothing. `cargo bench -p ming-agent --bench typed`.

use std::time::{Duration, Instant};

use ming_agent::intent::understand;
use ming_bus::broker::BrokerHandle;
use ming_bus::{BusClient, BusConfig};
use ming_config::Config;
use ming_schemas::agent::{Message, Reply, Tier};
use ming_schemas::kinds;

const COMMANDS: [&str; 10] = [
    "Set a timer for seven minutes",
    "Start a 3 minute tea timer",
    "Remind me in 20 minutes to check the oven",
    "timer 45 minutes for laundry",
    "Take a note: buy milk and eggs",
    "Note that the meeting moved to Friday",
    "search my notes for milk",
    "list my notes",
    "What time is it?",
    "what's the date today",
];

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_millis(500) {
        for c in COMMANDS {
            std::hint::black_box(understand(c));
            n += 1;
        }
    }
    let per_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);

    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml_over_defaults(&format!(
        "[paths]\nruntime_dir = \"{}\"\ndata_dir = \"{}\"\n",
        dir.path().join("run").display(),
        dir.path().join("data").display()
    ))
    .unwrap();
    ming_bus::runtime_dir::ensure_private_dir(&dir.path().join("run")).unwrap();
    let bus = BusConfig::from_config(&cfg);
    let _broker =
        BrokerHandle::start(&bus, ["agent".to_string(), "inference".to_string()], None).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (round_trip, server) = rt.block_on(async {
        tokio::spawn(ming_agent::run(cfg, std::future::pending()));
        let client = BusClient::connect(&bus, "bench").unwrap();
        let msg = |text: &str| Message {
            text: text.into(),
            session: None,
            confirm: false,
            tool: None,
            arguments: None,
            voice: None,
            skip_llm: false,
            skip_router: false,
        };
        while client
            .request::<_, Reply>(
                "agent",
                kinds::AGENT_MESSAGE,
                &msg("what time is it"),
                Duration::from_millis(300),
            )
            .await
            .is_err()
        {}
        let (mut rt_ms, mut srv_ms) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            for c in COMMANDS {
                let t = Instant::now();
                let r: Reply = client
                    .request(
                        "agent",
                        kinds::AGENT_MESSAGE,
                        &msg(c),
                        Duration::from_secs(5),
                    )
                    .await
                    .unwrap();
                rt_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(r.action.as_ref().map(|a| a.tier), Some(Tier::Fast), "{c}");
                srv_ms.push(r.action_started_ms.unwrap_or(0.0));
            }
        }
        (rt_ms, srv_ms)
    });
    println!(
        "typed input, fast path ({} messages of {} kinds)",
        round_trip.len(),
        COMMANDS.len()
    );
    println!("| measure | p50 | p95 |");
    println!("|---|---:|---:|");
    println!("| intent match + slots (in process) | {per_us:.1} µs | |");
    println!(
        "| message in → action started (agent's clock) | {:.3} ms | {:.3} ms |",
        pct(server.clone(), 0.5),
        pct(server, 0.95)
    );
    println!(
        "| message → reply through the bus (action done) | {:.2} ms | {:.2} ms |",
        pct(round_trip.clone(), 0.5),
        pct(round_trip, 0.95)
    );
}
