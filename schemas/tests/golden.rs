//! Golden wire bytes: any change of the encoding of the envelope or of a control body fails
//! here. If the change is intended (and compatible, see docs/wire-protocol.md), regenerate with
//! `MING_BLESS=1 cargo test -p ming-schemas --test golden` and say so in the commit.

use ming_schemas::control::{
    Ack, Drain, Heartbeat, Pong, Register, Registered, ServiceRow, ServiceState,
    ServiceStateChanged, SupervisorStatus,
};
use ming_schemas::envelope::{Envelope, Flow, PROTOCOL_VERSION};
use ming_schemas::{to_body, ErrorBody, ErrorCode};

fn check(name: &str, bytes: &[u8]) {
    let path = format!("{}/tests/golden/{name}.hex", env!("CARGO_MANIFEST_DIR"));
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if std::env::var_os("MING_BLESS").is_some() {
        std::fs::write(&path, format!("{hex}\n")).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(hex, want.trim(), "wire format of `{name}` changed");
}

fn request() -> Envelope {
    Envelope {
        version: PROTOCOL_VERSION,
        id: 0x0123_4567_89ab_cdef,
        correlation: None,
        trace: 42,
        sender: "ming-cli".into(),
        target: "agent".into(),
        deadline_ms: 1_764_000_000_000,
        flow: Flow::Request,
        kind: "control.ping".into(),
        body: to_body(&ming_schemas::control::Empty {}).unwrap(),
    }
}

#[test]
fn envelope_request() {
    let env = request();
    check("envelope_request", &env.encode());
    assert_eq!(Envelope::decode(&env.encode(), 1 << 20).unwrap(), env);
}

#[test]
fn envelope_error_reply() {
    let mut env = Envelope::error(
        "broker",
        Some(0x0123_4567_89ab_cdef),
        42,
        &ErrorBody::new(
            ErrorCode::ServiceUnavailable,
            "no worker of `agent` was available before the deadline",
        ),
    );
    env.id = 7;
    check("envelope_error", &env.encode());
}

#[test]
fn envelope_partial_and_cancel() {
    let mut partial = Envelope::answer(
        "inference",
        9,
        42,
        Flow::Partial,
        "inference.chat",
        vec![0xa2, b'h', b'i'],
    );
    partial.id = 10;
    check("envelope_partial", &partial.encode());
    let mut cancel = Envelope::cancel("agent", 9, 42);
    cancel.id = 11;
    check("envelope_cancel", &cancel.encode());
}

#[test]
fn control_bodies() {
    check(
        "register",
        &to_body(&Register {
            service: "memory".into(),
            instance: "4242".into(),
            pid: 4242,
            version: "0.1.0".into(),
            sandbox: "netns+landlock".into(),
        })
        .unwrap(),
    );
    check(
        "registered",
        &to_body(&Registered {
            heartbeat_ms: 500,
            liveness: 3,
            max_frame_bytes: 4 << 20,
        })
        .unwrap(),
    );
    check("heartbeat", &to_body(&Heartbeat { in_flight: 2 }).unwrap());
    check("drain", &to_body(&Drain { grace_ms: 3000 }).unwrap());
    check(
        "ack",
        &to_body(&Ack {
            message: "ok".into(),
        })
        .unwrap(),
    );
    check(
        "pong",
        &to_body(&Pong {
            service: "agent".into(),
            instance: "1".into(),
            pid: 1,
            version: "0.1.0".into(),
            uptime_ms: 5,
        })
        .unwrap(),
    );
    check(
        "supervisor_status",
        &to_body(&SupervisorStatus {
            pid: 1,
            version: "0.1.0".into(),
            uptime_ms: 1000,
            runtime_dir: "/run/user/1000/mingllm".into(),
            services: vec![ServiceRow {
                name: "audio".into(),
                state: ServiceState::Backoff,
                pid: None,
                restarts: 2,
                uptime_ms: 0,
                last_error: "killed by signal 9".into(),
                sandbox: "netns+landlock".into(),
                log_file: "/home/u/.local/state/mingllm/logs/audio.log".into(),
            }],
        })
        .unwrap(),
    );
    check(
        "service_state_changed",
        &to_body(&ServiceStateChanged {
            service: "audio".into(),
            state: ServiceState::Ready,
            pid: Some(77),
            detail: String::new(),
        })
        .unwrap(),
    );
}

#[test]
fn a_peer_written_elsewhere_decodes() {
    // The bytes a minimal client in another language produces for a ping (fields in another
    // order, no optional fields): see docs/wire-protocol.md.
    let mut map = rmpv::Value::Map(vec![
        ("kind".into(), "control.ping".into()),
        ("flow".into(), "request".into()),
        ("id".into(), 5u64.into()),
        ("trace".into(), 5u64.into()),
        ("sender".into(), "py".into()),
        ("target".into(), "agent".into()),
        ("deadline_ms".into(), 1_764_000_000_000u64.into()),
        (
            "version".into(),
            rmpv::Value::Map(vec![
                ("major".into(), 1u64.into()),
                ("minor".into(), 0u64.into()),
            ]),
        ),
        ("body".into(), rmpv::Value::Binary(vec![0x80])),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &map).unwrap();
    let env = Envelope::decode(&bytes, 1 << 20).unwrap();
    assert_eq!(env.kind, "control.ping");
    assert_eq!(env.correlation, None);
    // A body that is not a byte string is a malformed frame, not a panic.
    if let rmpv::Value::Map(fields) = &mut map {
        fields.last_mut().unwrap().1 = rmpv::Value::from(17u64);
    }
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &map).unwrap();
    assert!(Envelope::decode(&bytes, 1 << 20).is_err());
}

#[test]
fn service_bodies() {
    use ming_schemas::agent::{Action, Message, Reply, Tier};
    use ming_schemas::cloud::{Approve, HandoffRequest};
    use ming_schemas::inference::{ChatMessage, ChatRequest, Tool, ToolChoice};
    let mut chat = ChatRequest::new(vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Set a timer"),
    ]);
    chat.tools = vec![Tool {
        name: "set_timer".into(),
        description: "Start a countdown".into(),
        parameters: r#"{"type":"object"}"#.into(),
    }];
    chat.tool_choice = ToolChoice::Required;
    chat.max_tokens = Some(64);
    chat.stream = true;
    check("inference_chat_request", &to_body(&chat).unwrap());
    check(
        "agent_message",
        &to_body(&Message {
            text: "take a note: milk".into(),
            session: Some("chat-1".into()),
            confirm: false,
            tool: None,
            arguments: None,
            voice: None,
            skip_llm: false,
            skip_router: false,
        })
        .unwrap(),
    );
    check(
        "agent_reply",
        &to_body(&Reply {
            utterance: 9,
            text: "Noted: milk".into(),
            action: Some(Action {
                tool: "add_note".into(),
                arguments: r#"{"text":"milk"}"#.into(),
                tier: Tier::Fast,
                ok: true,
                result: "Noted: milk".into(),
            }),
            decided_ms: 0.25,
            action_started_ms: Some(0.5),
            awaiting: None,
            needs_llm: false,
            hear_again: Vec::new(),
        })
        .unwrap(),
    );
    check(
        "cloud_handoff",
        &to_body(&HandoffRequest {
            task: "Research tea".into(),
            context: vec!["for a talk".into()],
            provider: Some("local".into()),
        })
        .unwrap(),
    );
    check(
        "cloud_approve",
        &to_body(&Approve {
            id: "t-1".into(),
            sha256: "ab".repeat(32),
        })
        .unwrap(),
    );
}

#[test]
fn memory_bodies() {
    use ming_schemas::memory::{MemoryFilter, MemoryKind, NewMemory, Recall, Remember};
    let mut m = NewMemory::new("My sister lives in Lyon", MemoryKind::Fact);
    m.tags = vec!["family".into()];
    m.ttl_s = Some(86_400);
    check(
        "memory_remember",
        &to_body(&Remember { memories: vec![m] }).unwrap(),
    );
    check(
        "memory_recall",
        &to_body(&Recall {
            query: "where does my sister live".into(),
            k: 3,
            filter: MemoryFilter {
                kinds: vec![MemoryKind::Fact, MemoryKind::Preference],
                after_ms: Some(1_767_225_600_000),
                ..MemoryFilter::default()
            },
            min_score: Some(0.25),
        })
        .unwrap(),
    );
}

#[test]
fn training_bodies_and_the_router_file() {
    use ming_schemas::training::{
        float_bytes, Dense, RouterModel, RouterProvenance, Train, NONE_LABEL, ROUTER_FORMAT,
    };
    check(
        "training_train",
        &to_body(&Train {
            job: "router".into(),
            epochs: Some(40),
            seed_only: false,
            no_promote: true,
        })
        .unwrap(),
    );
    // The router file is a wire format too: a stored router must stay readable.
    let model = RouterModel {
        format: ROUTER_FORMAT,
        version: 7,
        created_ms: 1_767_225_600_000,
        labels: vec!["clock".into(), NONE_LABEL.into()],
        embedding_model: "all-minilm-l6-v2".into(),
        embedding_sha256: "ab".repeat(32),
        embedding_dims: 1,
        ngram_buckets: 1,
        layers: vec![Dense {
            inputs: 2,
            outputs: 2,
            weights: float_bytes(&[1.0, -1.0, 0.5, 0.25]),
            bias: float_bytes(&[0.0, 0.125]),
        }],
        temperature: 1.5,
        provenance: RouterProvenance::default(),
    };
    check("router_file", &model.encode());
    let router = RouterModel::decode(&model.encode()).unwrap();
    let p = router.predict(&[1.0], "what time is it").unwrap();
    assert_eq!(router.model, model);
    assert_eq!(p.probabilities.len(), 2);
}

#[test]
fn memory_requests_refuse_unknown_fields() {
    use ming_schemas::memory::Recall;
    #[derive(serde::Serialize)]
    struct Odd {
        query: &'static str,
        filter: std::collections::BTreeMap<&'static str, &'static str>,
    }
    let body = to_body(&Odd {
        query: "x",
        filter: [("colour", "red")].into(),
    })
    .unwrap();
    let e = rmp_serde::from_slice::<Recall>(&body).unwrap_err();
    assert!(e.to_string().contains("colour"), "{e}");
}
