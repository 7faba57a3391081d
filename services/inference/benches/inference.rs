//! `just bench` (inference part): the service through the bus against llama.cpp driven directly
//! in the same run — same library, model, thread count, context and prompt — and time to first
//! token with a cached 500-token system prompt against a cold one; both chat models; the
//! service's RSS; and a tool call (output held to the tools' grammar) against the free decode
//! of the same run, which shows what the grammar costs per token. Prints a table; asserts
//! nothing.
//!
//! Targets (issue #3): service/direct ≥ 0.95x for prefill and decode; cached TTFT ≥ 5x faster.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use ming_bus::broker::BrokerHandle;
use ming_bus::{BusClient, BusConfig};
use ming_config::{Config, LoadOptions, Paths};
use ming_schemas::control::Empty;
use ming_schemas::envelope::Flow;
use ming_schemas::inference::{ChatMessage, ChatReply, ChatRequest, ModelInfo, Tool, ToolChoice};
use ming_schemas::kinds;

const THREADS: i32 = 2;
const N_CTX: u32 = 2048;
const DECODE: usize = 64;

fn system_prompt() -> String {
    // About 500 tokens of fixed instructions, as an agent's system prompt would be.
    let rule = "Ming is a local assistant on the user's own computer; it answers briefly, acts through its tools, and never sends data anywhere without the user's approval. ";
    rule.repeat(14)
}

fn messages(question: &str) -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", system_prompt()),
        ChatMessage::new("user", question),
    ]
}

struct Direct {
    prefill_tps: f64,
    decode_tps: f64,
    prompt_tokens: usize,
}

/// llama.cpp through llama-cpp-2, no bus, no service: the reference.
fn direct(backend: &LlamaBackend, path: &Path, question: &str) -> Direct {
    let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default()).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(N_CTX))
        .with_n_batch(512)
        .with_n_threads(THREADS)
        .with_n_threads_batch(THREADS);
    let mut ctx = model.new_context(backend, params).unwrap();
    let tmpl = model.chat_template(None).unwrap();
    let chat: Vec<LlamaChatMessage> = messages(question)
        .into_iter()
        .map(|m| LlamaChatMessage::new(m.role, m.content).unwrap())
        .collect();
    let prompt = model.apply_chat_template(&tmpl, &chat, true).unwrap();
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, true);
    // Warm-up, as the service does before serving.
    let mut batch = LlamaBatch::new(512, 1);
    batch.add(tokens[0], 0, &[0], true).unwrap();
    ctx.decode(&mut batch).unwrap();
    ctx.clear_kv_cache();
    let t = Instant::now();
    let mut pos = 0;
    while pos < tokens.len() {
        batch.clear();
        let end = (pos + 512).min(tokens.len());
        for (i, tok) in tokens[pos..end].iter().enumerate() {
            batch
                .add(*tok, (pos + i) as i32, &[0], pos + i + 1 == tokens.len())
                .unwrap();
        }
        ctx.decode(&mut batch).unwrap();
        pos = end;
    }
    let prefill = t.elapsed().as_secs_f64();
    let mut sampler = LlamaSampler::greedy();
    let t = Instant::now();
    let mut generated = 0;
    for pos in tokens.len()..tokens.len() + DECODE {
        let tok = sampler.sample(&ctx, -1);
        generated += 1;
        batch.clear();
        batch.add(tok, pos as i32, &[0], true).unwrap();
        ctx.decode(&mut batch).unwrap();
    }
    let decode = t.elapsed().as_secs_f64();
    Direct {
        prefill_tps: tokens.len() as f64 / prefill,
        decode_tps: generated as f64 / decode,
        prompt_tokens: tokens.len(),
    }
}

struct Served {
    reply: ChatReply,
    ttft_ms: f64,
}

async fn served(client: &BusClient, question: &str, max_tokens: u32) -> Served {
    let mut req = ChatRequest::new(messages(question));
    req.stream = true;
    req.max_tokens = Some(max_tokens);
    // A grammar-free, stop-free generation of a fixed length, as in the direct run.
    let body = ming_schemas::to_body(&req).unwrap();
    let started = Instant::now();
    let mut s = client
        .stream(client.envelope(
            "inference",
            kinds::INFERENCE_CHAT,
            body,
            Duration::from_secs(300),
        ))
        .unwrap();
    let mut ttft = None;
    loop {
        let f = s.next().await.unwrap().unwrap();
        // The first frame carrying text (or the reply, if it comes first) is the first token.
        let at = started.elapsed().as_secs_f64() * 1000.0;
        if f.flow == Flow::Partial {
            let chunk: ming_schemas::inference::ChatChunk = f.body().unwrap();
            if !chunk.text.is_empty() {
                ttft.get_or_insert(at);
            }
        } else {
            return Served {
                reply: f.body().unwrap(),
                ttft_ms: ttft.unwrap_or(at),
            };
        }
    }
}

/// A tool call under the tools' grammar (what the agent's LLM tier asks for), after the system
/// prompt is cached.
async fn tool_call(client: &BusClient) -> ChatReply {
    let mut req = ChatRequest::new(messages("Remind me to water the plants at seven tonight."));
    req.tools = vec![
        Tool {
            name: "set_timer".into(),
            description: "Start a countdown timer.".into(),
            parameters: r#"{"type":"object","properties":{"seconds":{"type":"integer","minimum":1,"maximum":2592000},"label":{"type":"string"}},"required":["seconds"],"additionalProperties":false}"#.into(),
        },
        Tool {
            name: "add_reminder".into(),
            description: "Remind the user of something at a time.".into(),
            parameters: r#"{"type":"object","properties":{"text":{"type":"string"},"at":{"type":"string","description":"local date and time, YYYY-MM-DDTHH:MM"}},"required":["text","at"],"additionalProperties":false}"#.into(),
        },
    ];
    req.tool_choice = ToolChoice::Required;
    req.max_tokens = Some(DECODE as u32);
    client
        .request(
            "inference",
            kinds::INFERENCE_CHAT,
            &req,
            Duration::from_secs(300),
        )
        .await
        .unwrap()
}

fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let cfg = Config::load(&LoadOptions {
        file: None,
        skip_system_and_user: true,
    })
    .unwrap();
    let model_dir = Paths::resolve(&cfg.paths).model_dir;
    let backend = LlamaBackend::init().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("inference benchmark: {THREADS} threads, context {N_CTX}, greedy, {DECODE} decoded tokens, ~500-token system prompt");
    println!(
        "TTFT: at the client, to the first streamed text (in brackets: as the service measured it)"
    );
    println!("| model | prompt tok | prefill direct | prefill service | ratio | decode direct | decode service | ratio | TTFT cold | TTFT cached (reused tok) | speed-up | RSS (peak) |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut tools = Vec::new();
    for (name, file) in [
        ("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        (
            "qwen2.5-coder-0.5b-instruct",
            "Qwen2.5-Coder-0.5B-Instruct-AWQ.Q4_K_M.gguf",
        ),
    ] {
        let path = model_dir.join(file);
        if !path.exists() {
            println!("| {name} | model missing: run `just models` |");
            continue;
        }
        let d = direct(&backend, &path, "What can you do for me today?");

        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        ming_bus::runtime_dir::ensure_private_dir(&run).unwrap();
        let mut bus = BusConfig::in_dir(&run);
        bus.default_timeout = Duration::from_secs(300);
        let _broker = BrokerHandle::start(&bus, ["inference".to_string()], None).unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ming-inference"))
            .env("MING_NO_USER_CONFIG", "1")
            .env("MING_PATHS__RUNTIME_DIR", &run)
            .env("MING_PATHS__DATA_DIR", dir.path().join("data"))
            .env("MING_PATHS__MODEL_DIR", &model_dir)
            .env("MING_INFERENCE__MODEL", name)
            .env("MING_INFERENCE__THREADS", THREADS.to_string())
            .env("MING_INFERENCE__CONTEXT_TOKENS", N_CTX.to_string())
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let (cold, warm, tool) = rt.block_on(async {
            let client = BusClient::connect(&bus, "bench").unwrap();
            while client
                .request::<_, ModelInfo>(
                    "inference",
                    kinds::INFERENCE_INFO,
                    &Empty {},
                    Duration::from_millis(500),
                )
                .await
                .is_err()
            {}
            // Cold: nothing cached. Same question as the direct run, same length.
            let cold = served(&client, "What can you do for me today?", DECODE as u32).await;
            // Cached: the system prompt is reused; another question.
            let warm = served(&client, "And what can't you do?", DECODE as u32).await;
            // Twice: the first computes the tools' description once (a new prompt prefix).
            tool_call(&client).await;
            (cold, warm, tool_call(&client).await)
        });
        let (rss, peak) = rss_kib(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let u = &cold.reply.usage;
        println!(
            "| {name} | {} | {:.0} tok/s | {:.0} tok/s | {:.2}x | {:.1} tok/s | {:.1} tok/s | {:.2}x | {:.0} ms ({:.0}) | {:.0} ms ({:.0}; {}) | {:.1}x | {} MiB ({} MiB) |",
            d.prompt_tokens,
            d.prefill_tps,
            u.prefill_tokens_per_s,
            u.prefill_tokens_per_s / d.prefill_tps,
            d.decode_tps,
            u.decode_tokens_per_s,
            u.decode_tokens_per_s / d.decode_tps,
            cold.ttft_ms,
            u.time_to_first_token_ms,
            warm.ttft_ms,
            warm.reply.usage.time_to_first_token_ms,
            warm.reply.usage.cached_prompt_tokens,
            cold.ttft_ms / warm.ttft_ms.max(0.001),
            rss / 1024,
            peak / 1024,
        );
        let t = &tool.usage;
        tools.push(format!(
            "{name}: tool call under its grammar: {} tokens ({} of them the grammar's only continuation, computed in a batch), {:.1} tok/s out ({:.2}x the free decode above), TTFT {:.0} ms; {:?}",
            t.generated_tokens,
            t.jumped_tokens,
            t.decode_tokens_per_s,
            t.decode_tokens_per_s / u.decode_tokens_per_s.max(0.001),
            t.time_to_first_token_ms,
            tool.tool_call.as_ref().map(|c| format!("{} {}", c.name, c.arguments)),
        ));
        if warm.reply.usage.cached_prompt_tokens == 0 {
            println!("  (warning: the second request reused no cached tokens)");
        }
    }
    for t in tools {
        println!("{t}");
    }
}
