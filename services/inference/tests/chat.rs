//! The inference service with the real SmolLM2-135M-Instruct model (`just models`), on a real
//! broker and real ipc sockets: determinism, stop strings, streaming, grammar-constrained tool
//! calls, cancellation and deadlines, the prompt cache across a restart, concurrency, bad input.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ming_bus::broker::BrokerHandle;
use ming_bus::{BusClient, BusConfig};
use ming_config::{Config, LoadOptions, Paths};
use ming_schemas::control::Empty;
use ming_schemas::envelope::Flow;
use ming_schemas::inference::{
    ChatChunk, ChatMessage, ChatReply, ChatRequest, FinishReason, ModelInfo, Tool, ToolChoice,
};
use ming_schemas::{kinds, ErrorCode};
use serde_json::Value;
use tokio::sync::oneshot;

fn model_dir() -> PathBuf {
    let cfg = Config::load(&LoadOptions {
        file: None,
        skip_system_and_user: true,
    })
    .unwrap();
    Paths::resolve(&cfg.paths).model_dir
}

struct Svc {
    client: BusClient,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), ming_inference::InferenceError>>,
    _broker: BrokerHandle,
}

fn config(dir: &Path, extra: &str) -> Config {
    let context = if extra.contains("context_tokens") {
        ""
    } else {
        "context_tokens = 2048"
    };
    let model = if extra.contains("model =") {
        ""
    } else {
        "model = \"smollm2-135m-instruct\""
    };
    Config::from_toml_over_defaults(&format!(
        r#"
[paths]
runtime_dir = "{run}"
data_dir = "{data}"
model_dir = "{models}"
[inference]
max_tokens = 64
{model}
{context}
{extra}
"#,
        run = dir.join("run").display(),
        data = dir.join("data").display(),
        models = model_dir().display(),
    ))
    .unwrap()
}

async fn start(dir: &Path, extra: &str) -> Svc {
    let cfg = config(dir, extra);
    ming_bus::runtime_dir::ensure_private_dir(&dir.join("run")).unwrap();
    let bus = BusConfig::from_config(&cfg);
    let broker = BrokerHandle::start(&bus, ["inference".to_string()], None).unwrap();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(ming_inference::run(cfg, async {
        let _ = stop_rx.await;
    }));
    let client = BusClient::connect(&bus, "test").unwrap();
    for _ in 0..300 {
        if client
            .request::<_, ModelInfo>(
                "inference",
                kinds::INFERENCE_INFO,
                &Empty {},
                Duration::from_millis(200),
            )
            .await
            .is_ok()
        {
            return Svc {
                client,
                stop: Some(stop),
                task,
                _broker: broker,
            };
        }
        assert!(
            !task.is_finished(),
            "the service stopped during start-up (is the model fetched? `just models`)"
        );
    }
    panic!("inference never registered");
}

impl Svc {
    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.task.await.unwrap().unwrap();
    }

    /// Sends a chat request and returns its stream of frames.
    fn stream(&self, req: &ChatRequest) -> ming_bus::ReplyStream {
        let body = ming_schemas::to_body(req).unwrap();
        self.client
            .stream(self.client.envelope(
                "inference",
                kinds::INFERENCE_CHAT,
                body,
                Duration::from_secs(60),
            ))
            .unwrap()
    }

    async fn chat(&self, req: &ChatRequest) -> Result<ChatReply, ming_bus::BusError> {
        self.client
            .request(
                "inference",
                kinds::INFERENCE_CHAT,
                req,
                Duration::from_secs(60),
            )
            .await
    }
}

fn user(text: &str) -> ChatRequest {
    ChatRequest::new(vec![
        ChatMessage::new("system", "You are a concise assistant."),
        ChatMessage::new("user", text),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_is_deterministic_and_stops_at_stop_strings() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    let req = user("What is the capital of France?");
    let a = svc.chat(&req).await.unwrap();
    let b = svc.chat(&req).await.unwrap();
    assert_eq!(a.text, b.text);
    assert!(a.text.contains("Paris"), "{}", a.text);
    assert!(
        a.usage.generated_tokens > 0 && a.usage.decode_tokens_per_s > 0.0,
        "{:?}",
        a.usage
    );
    // A stop string cuts the answer before it.
    let mut stopped = req.clone();
    stopped.stop = vec!["Paris".into()];
    let c = svc.chat(&stopped).await.unwrap();
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert!(
        !c.text.contains("Paris") && a.text.starts_with(&c.text),
        "{:?} vs {:?}",
        c.text,
        a.text
    );
    // max_tokens.
    let mut short = req.clone();
    short.max_tokens = Some(2);
    let d = svc.chat(&short).await.unwrap();
    assert_eq!(
        (d.finish_reason, d.usage.generated_tokens),
        (FinishReason::Length, 2)
    );
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_chunks_add_up_to_the_reply() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    let mut req = user("Write one sentence about the sea.");
    req.stream = true;
    let mut stream = svc.stream(&req);
    let mut chunks = Vec::new();
    let reply = loop {
        let f = stream.next().await.unwrap().unwrap();
        if f.flow == Flow::Partial {
            chunks.push(f.body::<ChatChunk>().unwrap().text);
        } else {
            break f.body::<ChatReply>().unwrap();
        }
    };
    assert!(chunks.len() > 3, "{chunks:?}");
    assert_eq!(chunks.concat(), reply.text);
    svc.shutdown().await;
}

fn tools() -> Vec<Tool> {
    let tool = |name: &str, description: &str, parameters: &str| Tool {
        name: name.into(),
        description: description.into(),
        parameters: parameters.into(),
    };
    vec![
        tool(
            "set_timer",
            "Start a countdown timer",
            r#"{"type":"object","properties":{"minutes":{"type":"integer"},"label":{"type":"string"}},"required":["minutes"]}"#,
        ),
        tool(
            "add_note",
            "Save a note",
            r#"{"type":"object","properties":{"text":{"type":"string"}},"required":["text"]}"#,
        ),
        tool(
            "get_weather",
            "Weather for a city",
            r#"{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["celsius","fahrenheit"]}},"required":["city"]}"#,
        ),
        tool(
            "send_message",
            "Send a text message",
            r#"{"type":"object","properties":{"to":{"type":"string"},"body":{"type":"string"}},"required":["to","body"]}"#,
        ),
    ]
}

/// The few JSON Schema features the test tools use: required keys, property types, enums.
fn validates(schema: &Value, v: &Value) -> Result<(), String> {
    let obj = v.as_object().ok_or("arguments are not an object")?;
    for r in schema["required"].as_array().into_iter().flatten() {
        let key = r.as_str().unwrap_or_default();
        if !obj.contains_key(key) {
            return Err(format!("missing `{key}`"));
        }
    }
    for (k, val) in obj {
        let Some(prop) = schema["properties"].get(k) else {
            return Err(format!("unknown key `{k}`"));
        };
        let ok = match prop["type"].as_str() {
            Some("integer") => val.is_i64() || val.is_u64(),
            Some("string") => val.is_string(),
            _ => prop["enum"].as_array().is_some_and(|e| e.contains(val)),
        };
        if !ok {
            return Err(format!("`{k}` = {val} does not match {prop}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_always_parse_and_validate() {
    // With the default chat model (Qwen2.5-Coder-0.5B): the tool list is a shared prefix, so the
    // prompt cache keeps the 20 requests quick.
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "model = \"qwen2.5-coder-0.5b-instruct\"").await;
    let asks = [
        "Set a timer for seven minutes.",
        "Remind me in 20 minutes to check the oven.",
        "Start a 3 minute tea timer",
        "Note that the wifi password is on the fridge.",
        "Write down: buy milk and eggs",
        "Save a note saying call mum on Sunday",
        "What's the weather in Berlin?",
        "Is it cold in Oslo right now, in celsius?",
        "weather for Tokyo in fahrenheit please",
        "Text Alice that I'm running late.",
        "Send Bob a message: dinner at eight",
        "Tell Carol via message that the meeting moved",
        "timer 45 minutes for laundry",
        "Please remember my locker number is 113",
        "How hot is it in Cairo?",
        "message dad: happy birthday!",
        "Set an alarm-style timer of one minute",
        "Jot down the idea: a solar powered kettle",
        "Forecast for Lima",
        "Let Eve know by message that I got the tickets",
    ];
    let schemas: std::collections::HashMap<String, Value> = tools()
        .into_iter()
        .map(|t| (t.name.clone(), serde_json::from_str(&t.parameters).unwrap()))
        .collect();
    let (mut jumped, mut generated) = (0, 0);
    for ask in asks {
        let mut req = ChatRequest::new(vec![ChatMessage::new("user", ask)]);
        req.tools = tools();
        req.tool_choice = ToolChoice::Required;
        req.max_tokens = Some(96);
        let reply = svc.chat(&req).await.unwrap();
        // The start every call shares is computed with the prompt, not decoded.
        assert!(reply.text.starts_with("{\"name\": \""), "{}", reply.text);
        let call = reply.tool_call.unwrap_or_else(|| {
            panic!(
                "{ask}: no tool call in {:?} ({:?})",
                reply.text, reply.finish_reason
            )
        });
        let schema = schemas
            .get(&call.name)
            .unwrap_or_else(|| panic!("{ask}: unknown tool {}", call.name));
        let args: Value = serde_json::from_str(&call.arguments).unwrap();
        validates(schema, &args)
            .unwrap_or_else(|e| panic!("{ask}: {} {}: {e}", call.name, call.arguments));
        // Once the tool is named, its keys up to the first argument's value are the only thing
        // the grammar allows: computed in one batch, not decoded (every test tool requires an
        // argument). And the call ends at its closing brace, without an end token to decode.
        assert!(
            reply.usage.jumped_tokens >= 4,
            "{ask}: {:?} {}",
            reply.usage,
            reply.text
        );
        assert!(
            reply.text.ends_with('}') && reply.finish_reason == FinishReason::Stop,
            "{ask}: {:?} {:?}",
            reply.text,
            reply.finish_reason
        );
        jumped += reply.usage.jumped_tokens;
        generated += reply.usage.generated_tokens;
    }
    println!("tool calls: {jumped} of {generated} output tokens computed in a batch, not decoded");
    // One tool forced (the agent's router chose it; the LLM fills its arguments): everything
    // up to the arguments is computed with the prompt, so only the arguments are decoded.
    let mut req = ChatRequest::new(vec![ChatMessage::new(
        "user",
        "timer 45 minutes for laundry",
    )]);
    req.tools = tools();
    req.tool_choice = ToolChoice::Tool("set_timer".into());
    req.max_tokens = Some(96);
    let reply = svc.chat(&req).await.unwrap();
    assert!(
        reply
            .text
            .starts_with("{\"name\": \"set_timer\", \"parameters\": {\"minutes\":"),
        "{}",
        reply.text
    );
    let call = reply.tool_call.expect("a forced call");
    assert_eq!(call.name, "set_timer");
    validates(
        &schemas["set_timer"],
        &serde_json::from_str(&call.arguments).unwrap(),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", call.arguments));
    // A response_format schema constrains a plain answer the same way.
    let mut req = user("Give me a city and its country.");
    req.response_format = Some(r#"{"type":"object","properties":{"city":{"type":"string"},"country":{"type":"string"}},"required":["city","country"]}"#.into());
    let reply = svc.chat(&req).await.unwrap();
    let v: Value =
        serde_json::from_str(&reply.text).unwrap_or_else(|e| panic!("{}: {e}", reply.text));
    assert!(v["city"].is_string() && v["country"].is_string(), "{v}");
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_deadline_stop_generation() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    // The grammar forces a long answer (400 numbers), so only the cancel can end it early.
    let mut req = user("List numbers.");
    req.response_format =
        Some(r#"{"type":"array","items":{"type":"integer"},"minItems":400}"#.into());
    req.stream = true;
    req.max_tokens = Some(1000);
    let mut stream = svc.stream(&req);
    let mut seen = 0;
    while seen < 3 {
        assert_eq!(stream.next().await.unwrap().unwrap().flow, Flow::Partial);
        seen += 1;
    }
    stream.cancel();
    let reply = loop {
        let f = stream.next().await.unwrap().unwrap();
        if f.flow == Flow::Reply {
            break f.body::<ChatReply>().unwrap();
        }
        seen += 1;
    };
    assert_eq!(reply.finish_reason, FinishReason::Cancelled);
    // Stopped within a few tokens of the cancel.
    assert!(
        reply.usage.generated_tokens < 40,
        "{:?} after {seen} partials",
        reply.usage
    );
    // A deadline ends it the same way, with what was generated so far (the grammar makes the
    // answer far longer than 1.5 s of decoding).
    req.stream = false;
    let reply: ChatReply = svc
        .client
        .request(
            "inference",
            kinds::INFERENCE_CHAT,
            &req,
            Duration::from_millis(1500),
        )
        .await
        .unwrap();
    assert_eq!(reply.finish_reason, FinishReason::Deadline);
    assert!(reply.usage.generated_tokens < 1000, "{:?}", reply.usage);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_cache_hits_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let system = "You are Ming, a local assistant. ".repeat(20);
    let req = |q: &str| {
        ChatRequest::new(vec![
            ChatMessage::new("system", system.clone()),
            ChatMessage::new("user", q),
        ])
    };
    let svc = start(dir.path(), "").await;
    let first = svc.chat(&req("Hello!")).await.unwrap();
    assert_eq!(first.usage.cached_prompt_tokens, 0, "{:?}", first.usage);
    let second = svc.chat(&req("How are you?")).await.unwrap();
    assert!(
        second.usage.cached_prompt_tokens > 100,
        "{:?}",
        second.usage
    );
    svc.shutdown().await;
    // A new process (here: a new engine) starts from the saved state.
    let svc = start(dir.path(), "").await;
    let third = svc.chat(&req("What can you do?")).await.unwrap();
    assert!(
        third.usage.cached_prompt_tokens > 100,
        "after restart: {:?}",
        third.usage
    );
    svc.shutdown().await;
    // With the cache off nothing is reused.
    let dir2 = tempfile::tempdir().unwrap();
    let svc = start(dir2.path(), "prompt_cache = false").await;
    svc.chat(&req("Hello!")).await.unwrap();
    let r = svc.chat(&req("Hello!")).await.unwrap();
    assert_eq!(r.usage.cached_prompt_tokens, 0);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_only_request_warms_the_next_prompt_and_gives_way_to_a_real_one() {
    let dir = tempfile::tempdir().unwrap();
    let system = "You are Ming, a local assistant. ".repeat(20);
    let svc = start(dir.path(), "").await;
    // Another conversation fills the cache first: only the system prompt is shared with the next.
    svc.chat(&ChatRequest::new(vec![
        ChatMessage::new("system", system.clone()),
        ChatMessage::new("user", "Hello!"),
    ]))
    .await
    .unwrap();
    // The agent's last exchange, warmed while the user speaks again.
    let exchange = vec![
        ChatMessage::new("system", system.clone()),
        ChatMessage::new(
            "user",
            "Set a timer for seven minutes, and call it the eggs timer.",
        ),
        ChatMessage::new(
            "assistant",
            "Timer `eggs` set for 7 minutes (ends at 12:07).",
        ),
    ];
    let mut warm = ChatRequest::new(exchange.clone());
    warm.prefill_only = true;
    let w = svc.chat(&warm).await.unwrap();
    assert!(w.text.is_empty() && w.tool_call.is_none(), "{w:?}");
    assert_eq!(w.finish_reason, FinishReason::Stop);
    assert_eq!(w.usage.generated_tokens, 0);
    assert!(
        w.usage.prompt_tokens > w.usage.cached_prompt_tokens + 20,
        "the exchange itself was computed: {:?}",
        w.usage
    );
    // The follow-up reuses all of it and computes only its own message.
    let mut next = exchange.clone();
    next.push(ChatMessage::new("user", "Make it ten minutes."));
    let r = svc.chat(&ChatRequest::new(next.clone())).await.unwrap();
    assert!(
        r.usage.cached_prompt_tokens + 1 >= w.usage.prompt_tokens,
        "warmed {} tokens, reused {}",
        w.usage.prompt_tokens,
        r.usage.cached_prompt_tokens
    );
    assert!(r.usage.generated_tokens > 0, "{r:?}");
    // A long warm-up stops for a request that arrives meanwhile, which is then answered.
    let mut long = vec![ChatMessage::new("system", system.clone())];
    for i in 0..40 {
        long.push(ChatMessage::new(
            "user",
            format!("Note {i}: the plants on the balcony need water every second day."),
        ));
        long.push(ChatMessage::new("assistant", format!("Noted ({i}).")));
    }
    let mut warm = ChatRequest::new(long);
    warm.prefill_only = true;
    let mut warming = svc.stream(&warm);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answered = svc.chat(&ChatRequest::new(next)).await.unwrap();
    assert!(answered.usage.generated_tokens > 0, "{answered:?}");
    let mut gave_way = None;
    while let Some(f) = warming.next().await {
        let f = f.unwrap();
        if f.flow == Flow::Reply {
            gave_way = Some(f.body::<ChatReply>().unwrap());
        }
    }
    let gave_way = gave_way.expect("the warm-up's reply");
    assert_eq!(
        gave_way.finish_reason,
        FinishReason::Cancelled,
        "{:?}",
        gave_way.usage
    );
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_get_their_own_answers() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "").await;
    let a = user("What is the capital of France?");
    let b = user("What color is the sky on a clear day?");
    let alone_a = svc.chat(&a).await.unwrap().text;
    let alone_b = svc.chat(&b).await.unwrap().text;
    let (ra, rb) = tokio::join!(svc.chat(&a), svc.chat(&b));
    assert_eq!(ra.unwrap().text, alone_a);
    assert_eq!(rb.unwrap().text, alone_b);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_error() {
    let dir = tempfile::tempdir().unwrap();
    let svc = start(dir.path(), "context_tokens = 512").await;
    let code = |r: Result<ChatReply, ming_bus::BusError>| r.unwrap_err();
    let e = code(svc.chat(&ChatRequest::new(vec![])).await);
    assert_eq!(e.code(), ErrorCode::BadRequest);
    let e = code(
        svc.chat(&ChatRequest::new(vec![ChatMessage::new("wizard", "hi")]))
            .await,
    );
    assert!(
        e.code() == ErrorCode::BadRequest && e.to_string().contains("wizard"),
        "{e}"
    );
    let e = code(svc.chat(&user(&"lorem ipsum ".repeat(600))).await);
    assert!(
        e.code() == ErrorCode::BadRequest && e.to_string().contains("the context holds 512"),
        "{e}"
    );
    let mut req = user("hi");
    req.response_format = Some("{\"type\": ".into());
    let e = code(svc.chat(&req).await);
    assert!(
        e.code() == ErrorCode::BadRequest && e.to_string().contains("response_format"),
        "{e}"
    );
    let mut req = user("hi");
    req.tools = vec![Tool {
        name: "x".into(),
        description: String::new(),
        parameters: "[1,2]".into(),
    }];
    req.tool_choice = ToolChoice::Required;
    let e = code(svc.chat(&req).await);
    assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    // The service is fine afterwards.
    assert!(svc.chat(&user("Say hi.")).await.is_ok());
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_model_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "");
    cfg.paths.model_dir = dir.path().join("empty").display().to_string();
    let err = ming_inference::run(cfg, std::future::pending())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, ming_inference::InferenceError::Model(_)),
        "{text}"
    );
    assert!(
        text.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && text.contains("just models"),
        "{text}"
    );
}
