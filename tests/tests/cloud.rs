//! The cloud handoff end to end through mingd and the CLI: cloud-gateway runs with network (it
//! alone), a local HTTP server stands in for the provider; `ming handoff`, `ming consent`,
//! `ming egress log|verify|check`.

use std::time::Duration;

use ming_tests::provider::Provider;
use ming_tests::{Mingd, SERVICES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_consent_and_egress_through_the_cli() {
    let p = Provider::start();
    let m = Mingd::start(&format!(
        "[cloud]\nallow = [\"http://127.0.0.1:{port}/\"]\ntimeout_ms = 2000\n[cloud.providers.local]\nendpoint = \"http://127.0.0.1:{port}/v1/chat/completions\"\nmodel = \"test\"\n",
        port = p.port
    ));
    m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    let (code, out) = m.ming(&[
        "handoff",
        "Write to bob@example.org about the 4111 1111 1111 1111 refund",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Nothing has been sent") && !out.contains("\"bob@example.org"),
        "{out}"
    );
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    let sha = out.split("sha256 ").nth(1).unwrap()[..64].to_string();
    assert!(p.received().is_empty());
    let (code, out) = m.ming(&["consent", "list"]);
    assert!(
        code == 0 && out.contains(&id) && out.contains("pending"),
        "{out}"
    );
    // No terminal, no hash: refused, with the way to do it.
    let (code, out) = m.ming(&["consent", "approve", &id]);
    assert!(code != 0 && out.contains("--sha256"), "{out}");
    assert!(p.received().is_empty());
    let (code, out) = m.ming(&["consent", "approve", &id, "--sha256", &sha]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Answered") && out.contains("bob@example.org"),
        "{out}"
    );
    assert_eq!(p.received().len(), 1);
    let (code, out) = m.ming(&["egress", "verify"]);
    assert!(
        code == 0 && out.contains("ok: 2 entries, chain intact"),
        "{out}"
    );
    let (code, out) = m.ming(&["egress", "log"]);
    assert!(code == 0 && out.contains(&sha), "{out}");
    let (code, out) = m.ming(&["egress", "check"]);
    assert_eq!(code, 0, "{out}");
    for line in out.lines().skip(1) {
        if line.starts_with("cloud-gateway") {
            assert!(line.contains("yes"), "{line}");
        } else {
            assert!(line.contains("no (netns+landlock)"), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_proposes_a_handoff_and_receives_the_answer() {
    use ming_bus::events::EventSubscriber;
    use ming_schemas::agent::HandoffResult;
    let p = Provider::start();
    let m = Mingd::start(&format!(
        "[cloud]\nallow = [\"http://127.0.0.1:{port}/\"]\nprivate_names = [\"Jane Doe\"]\n[cloud.providers.local]\nendpoint = \"http://127.0.0.1:{port}/v1/chat/completions\"\nmodel = \"test\"\n",
        port = p.port
    ));
    m.wait_ready(&["agent", "cloud-gateway"], Duration::from_secs(20))
        .await;
    let (code, out) = m.ming(&["ask", "Ask the cloud to draft a birthday poem for Jane Doe"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Nothing has been sent") && out.contains("1 private value(s) replaced"),
        "{out}"
    );
    assert!(p.received().is_empty());
    let id = out
        .split("ticket ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let (_, shown) = m.ming(&["consent", "show", &id]);
    let sha = shown.split("sha256 ").nth(1).unwrap()[..64].to_string();
    let mut events =
        EventSubscriber::connect(&m.bus, &[ming_schemas::kinds::EVENT_HANDOFF_ANSWER]).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out) = m.ming(&["consent", "approve", &id, "--sha256", &sha]);
    assert_eq!(code, 0, "{out}");
    let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("no answer reached the agent")
        .unwrap();
    let r: HandoffResult = ev.body().unwrap();
    assert_eq!(r.ticket, id);
    // The provider's placeholders came back as the real name.
    assert!(r.answer.contains("jane doe"), "{}", r.answer);
}
