//! The gateway's overhead: an approved handoff through the bus and cloud-gateway (redaction,
//! ticket, two fsync'd egress-log entries, HTTP) against the same request sent directly with
//! reqwest to the same local server, in the same run. Prints medians; asserts nothing.
//! `cargo bench -p ming-cloud-gateway --bench gateway`.

use std::time::{Duration, Instant};

use ming_bus::broker::BrokerHandle;
use ming_bus::{BusClient, BusConfig};
use ming_config::Config;
use ming_schemas::cloud::{Approve, HandoffRequest, Ticket};
use ming_schemas::control::Empty;
use ming_schemas::kinds;
use ming_tests::provider::Provider;

const N: usize = 200;

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn main() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::from_toml_over_defaults(&format!(
        "[paths]\nruntime_dir = \"{run}\"\ndata_dir = \"{data}\"\n[cloud]\nallow = [\"http://127.0.0.1:{port}/\"]\n[cloud.providers.local]\nendpoint = \"http://127.0.0.1:{port}/v1/chat/completions\"\nmodel = \"m\"\n",
        run = dir.path().join("run").display(),
        data = dir.path().join("data").display(),
        port = p.port
    ))
    .unwrap();
    ming_bus::runtime_dir::ensure_private_dir(&dir.path().join("run")).unwrap();
    let bus = BusConfig::from_config(&cfg);
    let _broker = BrokerHandle::start(&bus, ["cloud-gateway".to_string()], None).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::spawn(ming_cloud_gateway::run(cfg, std::future::pending()));
        let client = BusClient::connect(&bus, "bench").unwrap();
        while client
            .request::<_, ming_schemas::cloud::TicketList>("cloud-gateway", kinds::CLOUD_TICKETS, &Empty {}, Duration::from_millis(300))
            .await
            .is_err()
        {}
        let task = "Draft a letter for jane.doe@example.com about card 4111 1111 1111 1111 and the refund.";
        let (mut via_gw, mut approve_only, mut direct) = (Vec::new(), Vec::new(), Vec::new());
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://127.0.0.1:{}/v1/chat/completions", p.port);
        for _ in 0..N {
            let t0 = Instant::now();
            let req = HandoffRequest { task: task.into(), context: vec!["earlier turn".into()], provider: None };
            let t: Ticket = client.request("cloud-gateway", kinds::CLOUD_HANDOFF, &req, Duration::from_secs(5)).await.unwrap();
            let t1 = Instant::now();
            let done: Ticket = client
                .request("cloud-gateway", kinds::CLOUD_APPROVE, &Approve { id: t.id.clone(), sha256: t.body_sha256.clone() }, Duration::from_secs(5))
                .await
                .unwrap();
            assert!(done.answer.is_some(), "{}", done.error);
            via_gw.push(t0.elapsed());
            approve_only.push(t1.elapsed());
            let t2 = Instant::now();
            let r = http.post(&url).header("content-type", "application/json").body(t.body.clone()).send().await.unwrap();
            let _ = r.bytes().await.unwrap();
            direct.push(t2.elapsed());
        }
        let (g, a, d) = (median(via_gw), median(approve_only), median(direct));
        println!("cloud-gateway overhead ({N} requests each, local HTTP server, medians)");
        println!("| path | ms |");
        println!("|---|---:|");
        println!("| direct reqwest POST | {d:.2} |");
        println!("| approve through the bus (log fsync x2 + HTTP) | {a:.2} |");
        println!("| handoff + approve (redaction, ticket, two bus requests) | {g:.2} |");
        println!("overhead of the gateway: {:.2} ms per approved send ({:.2} ms with the handoff)", a - d, g - d);
    });
}
