//! The consent flow against a real local HTTP server on 127.0.0.1 acting as the provider, with
//! a real broker and the gateway on real ipc sockets.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ming_bus::broker::BrokerHandle;
use ming_bus::{BusClient, BusConfig, BusError};
use ming_config::Config;
use ming_schemas::cloud::{Approve, EgressReport, HandoffRequest, Ticket, TicketId, TicketState};
use ming_schemas::control::Empty;
use ming_schemas::{kinds, ErrorCode};
use ming_tests::provider::Provider;
use tokio::sync::oneshot;

struct Gw {
    client: BusClient,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<ming_bus::BusResult<()>>,
    _broker: BrokerHandle,
}

impl Gw {
    async fn start(dir: &Path, cloud: &str) -> Self {
        let cfg = Config::from_toml_over_defaults(&format!(
            "[paths]\nruntime_dir = \"{}\"\ndata_dir = \"{}\"\n{cloud}",
            dir.join("run").display(),
            dir.join("data").display()
        ))
        .unwrap();
        ming_bus::runtime_dir::ensure_private_dir(&dir.join("run")).unwrap();
        let bus = BusConfig::from_config(&cfg);
        let broker = BrokerHandle::start(&bus, ["cloud-gateway".to_string()], None).unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(ming_cloud_gateway::run(cfg, async {
            let _ = rx.await;
        }));
        let client = BusClient::connect(&bus, "test").unwrap();
        let gw = Self {
            client,
            stop: Some(stop),
            task,
            _broker: broker,
        };
        for _ in 0..200 {
            if gw.tickets().await.is_ok() {
                return gw;
            }
        }
        panic!("cloud-gateway never registered");
    }

    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        self.task.await.unwrap().unwrap();
    }

    async fn tickets(&self) -> Result<ming_schemas::cloud::TicketList, BusError> {
        self.client
            .request(
                "cloud-gateway",
                kinds::CLOUD_TICKETS,
                &Empty {},
                Duration::from_millis(300),
            )
            .await
    }

    async fn call<Q: serde::Serialize>(&self, kind: &str, body: &Q) -> Result<Ticket, BusError> {
        self.client
            .request("cloud-gateway", kind, body, Duration::from_secs(10))
            .await
    }

    async fn handoff(&self, task: &str, context: &[&str]) -> Result<Ticket, BusError> {
        let req = HandoffRequest {
            task: task.into(),
            context: context.iter().map(|s| s.to_string()).collect(),
            provider: None,
        };
        self.call(kinds::CLOUD_HANDOFF, &req).await
    }

    async fn approve(&self, t: &Ticket, sha: &str) -> Result<Ticket, BusError> {
        self.call(
            kinds::CLOUD_APPROVE,
            &Approve {
                id: t.id.clone(),
                sha256: sha.into(),
            },
        )
        .await
    }

    async fn egress(&self) -> EgressReport {
        self.client
            .request(
                "cloud-gateway",
                kinds::CLOUD_EGRESS,
                &Empty {},
                Duration::from_secs(2),
            )
            .await
            .unwrap()
    }
}

fn cloud_cfg(p: &Provider, extra: &str) -> String {
    format!(
        "[cloud]\nallow = [\"http://127.0.0.1:{port}/\"]\nprivate_names = [\"Jane Doe\"]\ntimeout_ms = 1000\n{extra}\n[cloud.providers.test]\nendpoint = \"http://127.0.0.1:{port}/v1/chat/completions\"\nmodel = \"big\"\n",
        port = p.port
    )
}

const TASK: &str = "Draft a complaint letter for Jane Doe (jane.doe@example.com) about a double charge on card 4111 1111 1111 1111.";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_leaves_before_approval_and_exactly_the_approved_bytes_do() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), &cloud_cfg(&p, "")).await;
    let t = gw
        .handoff(
            TASK,
            &["Earlier, the bank said to write to complaints@bank.example."],
        )
        .await
        .unwrap();
    assert_eq!(t.state, TicketState::Pending);
    assert!(
        p.received().is_empty(),
        "something was sent before approval"
    );
    for secret in [
        "jane.doe@example.com",
        "4111 1111 1111 1111",
        "Jane Doe",
        "complaints@bank.example",
    ] {
        assert!(
            !t.body.contains(secret),
            "{secret} is in the payload: {}",
            t.body
        );
    }
    let kinds: Vec<&str> = t.redactions.iter().map(|r| r.kind.as_str()).collect();
    assert!(
        kinds.contains(&"EMAIL") && kinds.contains(&"CARD") && kinds.contains(&"NAME"),
        "{kinds:?}"
    );
    // An approval for other bytes is refused, and sends nothing.
    let e = gw.approve(&t, &"0".repeat(64)).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert!(e.to_string().contains("nothing was sent"), "{e}");
    assert!(p.received().is_empty());
    // The right one sends exactly the shown bytes.
    let done = gw.approve(&t, &t.body_sha256).await.unwrap();
    assert_eq!(done.state, TicketState::Answered, "{}", done.error);
    let got = p.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0],
        t.body.as_bytes(),
        "the provider received other bytes than were approved"
    );
    let sent = String::from_utf8_lossy(&got[0]);
    assert!(
        !sent.contains("jane.doe@example.com") && !sent.contains("4111"),
        "{sent}"
    );
    // Placeholders come back restored.
    assert_eq!(
        done.answer.as_deref(),
        Some("Done: I wrote to jane.doe@example.com about card 4111 1111 1111 1111 for jane doe.")
    );
    // A changed payload (another handoff, other context) is another ticket: the approval of the
    // first does not carry over.
    let changed = gw
        .handoff(TASK, &["and mention the late fee"])
        .await
        .unwrap();
    assert_ne!(changed.body_sha256, t.body_sha256);
    let e = gw.approve(&changed, &t.body_sha256).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert_eq!(p.received().len(), 1);
    // Approving once does not approve again.
    let e = gw.approve(&t, &t.body_sha256).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);
    assert_eq!(p.received().len(), 1);
    // The egress log recorded it before it left, and the answer after.
    let report = gw.egress().await;
    assert!(report.intact, "{}", report.verdict);
    assert_eq!(report.lines.len(), 2);
    assert!(
        report.lines[0].contains("\"event\":\"sending\"")
            && report.lines[0].contains(&t.body_sha256)
    );
    assert!(report.lines[1].contains("\"event\":\"received\""));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_and_expiry_send_nothing() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), &cloud_cfg(&p, "ticket_ttl_s = 1")).await;
    let t = gw
        .handoff("Summarise the history of tea.", &[])
        .await
        .unwrap();
    let denied = gw
        .call(kinds::CLOUD_DENY, &TicketId { id: t.id.clone() })
        .await
        .unwrap();
    assert_eq!(denied.state, TicketState::Denied);
    assert!(gw.approve(&t, &t.body_sha256).await.is_err());
    let t2 = gw
        .handoff("Summarise the history of coffee.", &[])
        .await
        .unwrap();
    // The ticket lives one second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = gw.approve(&t2, &t2.body_sha256).await.unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
    let listed = gw.tickets().await.unwrap().tickets;
    assert_eq!(
        listed.iter().map(|t| t.state).collect::<Vec<_>>(),
        [TicketState::Denied, TicketState::Expired]
    );
    assert!(p.received().is_empty());
    assert_eq!(gw.egress().await.lines.len(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_are_clear_and_a_failed_ticket_retries_the_same_bytes() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), &cloud_cfg(&p, "")).await;
    // 500.
    p.set(|b| b.status = 500);
    let t = gw.handoff("Plan a week of meals.", &[]).await.unwrap();
    let failed = gw.approve(&t, &t.body_sha256).await.unwrap();
    assert_eq!(failed.state, TicketState::Failed);
    assert!(failed.error.contains("HTTP 500"), "{}", failed.error);
    // Retried without a new approval, with the same bytes: now it works.
    p.set(|b| b.status = 200);
    let ok = gw
        .call(kinds::CLOUD_RETRY, &TicketId { id: t.id.clone() })
        .await
        .unwrap();
    assert_eq!(ok.state, TicketState::Answered, "{}", ok.error);
    let got = p.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], got[1]);
    // Slow: past cloud.timeout_ms.
    p.set(|b| b.delay_ms = 2000);
    let t = gw.handoff("Plan a trip.", &[]).await.unwrap();
    let slow = gw.approve(&t, &t.body_sha256).await.unwrap();
    assert_eq!(slow.state, TicketState::Failed);
    assert!(
        slow.error.contains("did not answer in time"),
        "{}",
        slow.error
    );
    // Every attempt is in the log, and the chain holds.
    let report = gw.egress().await;
    assert!(report.intact, "{}", report.verdict);
    assert_eq!(
        report
            .lines
            .iter()
            .filter(|l| l.contains("\"event\":\"sending\""))
            .count(),
        3
    );
    assert!(report
        .lines
        .iter()
        .any(|l| l.contains("\"event\":\"failed\"")));
    gw.stop().await;

    // An answer over cloud.max_answer_bytes is refused.
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), &cloud_cfg(&p, "max_answer_bytes = 64")).await;
    p.set(|b| b.delay_ms = 0);
    let t = gw.handoff("Plan a garden.", &[]).await.unwrap();
    let big = gw.approve(&t, &t.body_sha256).await.unwrap();
    assert_eq!(big.state, TicketState::Failed);
    assert!(
        big.error.contains("larger than cloud.max_answer_bytes"),
        "{}",
        big.error
    );
    gw.stop().await;

    // Down: nothing listens on the port.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let down = Provider {
        port: closed,
        received: Arc::default(),
        behaviour: p.behaviour.clone(),
    };
    let gw = Gw::start(dir.path(), &cloud_cfg(&down, "")).await;
    let t = gw.handoff("Anything.", &[]).await.unwrap();
    let failed = gw.approve(&t, &t.body_sha256).await.unwrap();
    assert_eq!(failed.state, TicketState::Failed);
    assert!(
        failed.error.contains("cannot reach the provider"),
        "{}",
        failed.error
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_outside_the_allow_list_and_a_disabled_gateway_are_refused() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[cloud]\nallow = [\"https://api.example.com/\"]\n[cloud.providers.test]\nendpoint = \"http://127.0.0.1:{}/v1/chat/completions\"\nmodel = \"m\"\n",
        p.port
    );
    let gw = Gw::start(dir.path(), &cfg).await;
    let e = gw.handoff("Anything.", &[]).await.unwrap_err();
    assert!(
        e.code() == ErrorCode::BadRequest && e.to_string().contains("not in cloud.allow"),
        "{e}"
    );
    gw.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), "").await;
    let e = gw.handoff("Anything.", &[]).await.unwrap_err();
    assert!(
        e.code() == ErrorCode::Unsupported && e.to_string().contains("not configured"),
        "{e}"
    );
    gw.stop().await;
    assert!(p.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_egress_log_is_reported_and_stops_all_sending() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), &cloud_cfg(&p, "")).await;
    let t = gw.handoff("Write a haiku.", &[]).await.unwrap();
    gw.approve(&t, &t.body_sha256).await.unwrap();
    gw.stop().await;
    let log = dir.path().join("data/cloud/egress.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    std::fs::write(
        &log,
        text.replacen("\"event\":\"sending\"", "\"event\":\"sendinG\"", 1),
    )
    .unwrap();
    let gw = Gw::start(dir.path(), &cloud_cfg(&p, "")).await;
    let report = gw.egress().await;
    assert!(
        !report.intact && report.verdict.contains("line 1"),
        "{}",
        report.verdict
    );
    let t = gw.handoff("Write another haiku.", &[]).await.unwrap();
    let e = gw.approve(&t, &t.body_sha256).await.unwrap_err();
    assert!(e.to_string().contains("failed verification"), "{e}");
    assert_eq!(
        p.received().len(),
        1,
        "a tampered log must stop all sending"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_survive_a_gateway_restart() {
    let p = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), &cloud_cfg(&p, "")).await;
    let t = gw.handoff(TASK, &[]).await.unwrap();
    gw.stop().await;
    let saved = std::fs::read_dir(dir.path().join("data/cloud/tickets"))
        .unwrap()
        .count();
    assert_eq!(saved, 1);
    let gw = Gw::start(dir.path(), &cloud_cfg(&p, "")).await;
    let again = gw
        .call(kinds::CLOUD_TICKET, &TicketId { id: t.id.clone() })
        .await
        .unwrap();
    assert_eq!(
        (again.state, &again.body_sha256),
        (TicketState::Pending, &t.body_sha256)
    );
    assert!(p.received().is_empty());
    // Approved after the restart: the same bytes leave, and the answer is restored with the
    // placeholder map that was saved with the ticket.
    let done = gw.approve(&t, &t.body_sha256).await.unwrap();
    assert_eq!(done.state, TicketState::Answered, "{}", done.error);
    assert_eq!(p.received()[0], t.body.as_bytes());
    assert!(done.answer.unwrap().contains("jane.doe@example.com"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_arrives_in_pieces_with_placeholders_restored() {
    use ming_schemas::cloud::AnswerChunk;
    use ming_schemas::envelope::Flow;
    let p = Provider::start();
    p.set(|b| b.sse = true);
    let dir = tempfile::tempdir().unwrap();
    let gw = Gw::start(dir.path(), &cloud_cfg(&p, "")).await;
    let t = gw.handoff(TASK, &[]).await.unwrap();
    assert!(t.body.contains("\"stream\":true"), "{}", t.body);
    let body = ming_schemas::to_body(&Approve {
        id: t.id.clone(),
        sha256: t.body_sha256.clone(),
    })
    .unwrap();
    let mut stream = gw
        .client
        .stream(gw.client.envelope(
            "cloud-gateway",
            kinds::CLOUD_APPROVE,
            body,
            Duration::from_secs(10),
        ))
        .unwrap();
    let mut pieces = Vec::new();
    let done: Ticket = loop {
        let f = stream.next().await.unwrap().unwrap();
        if f.flow == Flow::Partial {
            pieces.push(f.body::<AnswerChunk>().unwrap().text);
        } else {
            break f.body().unwrap();
        }
    };
    assert_eq!(done.state, TicketState::Answered, "{}", done.error);
    assert!(pieces.len() > 3, "{pieces:?}");
    let answer = done.answer.unwrap();
    assert_eq!(pieces.concat(), answer);
    assert_eq!(
        answer,
        "Done: I wrote to jane.doe@example.com about card 4111 1111 1111 1111 for jane doe."
    );
    assert!(gw.egress().await.intact);
    gw.stop().await;
}
