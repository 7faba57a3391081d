//! `ming`: the MingLLM command line. Talks to `mingd` over the bus.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

mod audio;
mod memory;
mod train;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ming_bus::events::EventSubscriber;
use ming_bus::{BusClient, BusConfig, BusError};
use ming_config::Paths;
use ming_schemas::cloud::{Approve, EgressReport, Ticket, TicketId, TicketList};
use ming_schemas::control::{Ack, Empty, HoldReply, Pong, ServiceName, SupervisorStatus};
use ming_schemas::kinds;

#[derive(Parser)]
#[command(name = "ming", version, about = "MingLLM command line")]
struct Args {
    /// A config file layered over the defaults (to find the runtime dir).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Deadline for each request, in milliseconds (default: bus.default_timeout_ms).
    #[arg(long, global = true)]
    timeout_ms: Option<u64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every service: state, pid, restarts, uptime, sandbox, last error.
    Status,
    /// Start a stopped or failed service.
    Start { service: String },
    /// Stop a service (drain, then kill after the grace period).
    Stop { service: String },
    /// Restart a service (also clears a failed state).
    Restart { service: String },
    /// Run one service in the foreground against the live bus, while the supervisor holds its
    /// own copy stopped; the supervisor takes it back when this ends.
    Run { service: String },
    /// Show a service's log.
    Logs {
        service: String,
        /// Keep printing new lines.
        #[arg(short, long)]
        follow: bool,
        /// Lines to show from the end.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Round trip to a service (or `broker`, `supervisor`) through the broker.
    Ping { service: String },
    /// Print events from the bus (all, or those whose kind starts with a prefix).
    Events { prefixes: Vec<String> },
    /// The per-stage timeline of one utterance (its id, as `ming ask` prints it; default: the
    /// latest).
    Trace { utterance: Option<u64> },
    /// Talk to the agent: one message per line; actions are shown as they happen. Ctrl-D ends.
    Chat,
    /// Ask the agent to do something, once (for scripts: exit status 0 when it acted, 5 when it
    /// did not: a question, a deletion waiting for a yes, a refusal).
    Ask {
        text: String,
        /// Confirm a destructive action (deleting notes…).
        #[arg(long)]
        yes: bool,
        /// Print the whole reply as JSON.
        #[arg(long)]
        json: bool,
        /// Call this tool directly instead of having the text understood.
        #[arg(long)]
        tool: Option<String>,
        /// Arguments for --tool, as JSON.
        #[arg(long)]
        args: Option<String>,
        /// A conversation to take part in: a question the agent asks ("For how long?", "Shall I
        /// go ahead?") is answered by the next `ming ask` with the same session.
        #[arg(long)]
        session: Option<String>,
    },
    /// Propose a cloud handoff: creates a consent ticket showing the exact bytes that would leave.
    Handoff {
        task: String,
        /// Local context to include (repeatable).
        #[arg(long)]
        context: Vec<String>,
        /// A configured provider (default: the only one).
        #[arg(long)]
        provider: Option<String>,
    },
    /// Consent tickets: list, show, approve, deny, retry.
    Consent {
        #[command(subcommand)]
        cmd: ConsentCmd,
    },
    /// The egress log: what left the device, and whether the log is intact.
    Egress {
        #[command(subcommand)]
        cmd: EgressCmd,
    },
    /// Long-term memory: add, search, get, forget, export, import, stats.
    Memory {
        #[command(subcommand)]
        cmd: memory::MemoryCmd,
    },
    /// Transcribe a WAV file through the audio service: speech boundaries and partial
    /// transcripts as they come, then each utterance's final transcript with its timings.
    Transcribe {
        file: PathBuf,
        /// Feed it at real-time pace, as a microphone would (default: as fast as possible).
        #[arg(long)]
        realtime: bool,
        /// Hand each utterance to the agent, as a voice turn.
        #[arg(long)]
        to_agent: bool,
        /// Print the whole reply as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Say something through the audio service (text-to-speech).
    Say {
        text: String,
        /// Write the speech to this WAV file instead of playing it.
        #[arg(long)]
        wav: Option<PathBuf>,
        /// espeak-ng voice (e.g. en-us, en-gb).
        #[arg(long)]
        voice: Option<String>,
        /// Words per minute.
        #[arg(long)]
        rate: Option<u32>,
    },
    /// Sound devices: `ming audio devices` lists the capture and playback devices (the names
    /// `audio.input` / `audio.output` take) and what the service uses now.
    Audio {
        #[command(subcommand)]
        cmd: audio::AudioCmd,
    },
    /// Push-to-talk: open a turn on the live input; the transcript goes to the agent.
    Listen {
        /// End the open turn now.
        #[arg(long)]
        stop: bool,
        /// Only report the input and listening state.
        #[arg(long)]
        status: bool,
    },
    /// Train the personal intent router on the seed set and your interaction log (progress as
    /// it goes; promoted only if it beats the router in use). Ctrl-C cancels.
    Train {
        /// The job: `router`.
        #[arg(default_value = "router")]
        job: String,
        /// Passes over the data (default: training.epochs).
        #[arg(long)]
        epochs: Option<u32>,
        /// Train on the shipped seed set only.
        #[arg(long)]
        seed_only: bool,
        /// Keep the new model but do not promote it.
        #[arg(long)]
        no_promote: bool,
        /// Cancel the running job instead.
        #[arg(long)]
        cancel: bool,
        #[arg(long)]
        json: bool,
    },
    /// The router versions: list, promote, rollback.
    Models {
        #[command(subcommand)]
        cmd: train::ModelsCmd,
    },
    /// Tell the agent what an utterance should have done (default: the latest), so the router
    /// learns it: `--tool` the right tool, or `--undone`.
    Feedback {
        utterance: Option<u64>,
        #[arg(long)]
        tool: Option<String>,
        #[arg(long)]
        undone: bool,
    },
    /// Ask the local model directly (through the inference service), streaming the answer.
    Generate {
        prompt: String,
        /// A system prompt.
        #[arg(long)]
        system: Option<String>,
        /// Tokens to generate at most.
        #[arg(long)]
        max_tokens: Option<u32>,
        /// Sampling temperature (0: greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
    },
}

#[derive(Subcommand)]
enum ConsentCmd {
    /// Every ticket and its state.
    List,
    /// One ticket in full: destination, the exact body, what was redacted and why, its SHA-256.
    Show { id: String },
    /// Approve the ticket's exact payload and send it. Asks on a terminal; scripts pass the
    /// SHA-256 that `show` printed.
    Approve {
        id: String,
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Refuse: nothing is sent.
    Deny { id: String },
    /// Send a failed ticket again (same bytes, same approval).
    Retry { id: String },
}

#[derive(Subcommand)]
enum EgressCmd {
    /// Print the egress log.
    Log,
    /// Check the log's hash chain: any edit, removal or reordering is reported.
    Verify,
    /// Which services can reach the network, as the supervisor applied it.
    Check,
}

struct Cli {
    client: BusClient,
    bus: BusConfig,
    runtime_dir: PathBuf,
    timeout: Duration,
    /// `--timeout-ms` was given: it wins over a command's own default.
    explicit_timeout: bool,
}

impl Cli {
    fn not_running(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "mingd is not running (no bus at {}): start it with `just up` (or `mingd`)",
            self.runtime_dir.display()
        )
    }

    async fn request<Q: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        target: &str,
        kind: &str,
        body: &Q,
    ) -> anyhow::Result<R> {
        self.request_with(target, kind, body, self.timeout).await
    }

    /// [`Cli::request`] with its own deadline (for work that takes long: speaking, …), unless
    /// `--timeout-ms` set one.
    async fn request_with<Q: serde::Serialize, R: serde::de::DeserializeOwned>(
        &self,
        target: &str,
        kind: &str,
        body: &Q,
        timeout: Duration,
    ) -> anyhow::Result<R> {
        if !self.runtime_dir.join("bus.sock").exists() {
            return Err(self.not_running());
        }
        let timeout = if self.explicit_timeout {
            self.timeout
        } else {
            timeout
        };
        match self.client.request(target, kind, body, timeout).await {
            Ok(r) => Ok(r),
            Err(BusError::Timeout { .. }) if target == "supervisor" => Err(anyhow::anyhow!(
                "mingd is not answering at {} (is it running? a stale socket?)",
                self.runtime_dir.display()
            )),
            Err(e) => Err(e.into()),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ming: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ming: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if std::env::var_os("RUST_LOG").is_some() {
        ming_bus::process::init_tracing();
    }
    let config_file = args
        .config
        .clone()
        .map(|p| std::path::absolute(&p).unwrap_or(p));
    let cfg = ming_bus::process::load_config(config_file)?;
    let bus = BusConfig::from_config(&cfg);
    let cli = Cli {
        client: BusClient::connect(&bus, "ming-cli")?,
        runtime_dir: Paths::resolve(&cfg.paths).runtime_dir,
        timeout: args
            .timeout_ms
            .map_or(bus.default_timeout, Duration::from_millis),
        explicit_timeout: args.timeout_ms.is_some(),
        bus,
    };
    let svc = |s: &str| ServiceName {
        service: s.to_string(),
    };
    match args.cmd {
        Cmd::Status => {
            let st: SupervisorStatus = cli
                .request("supervisor", kinds::SUPERVISOR_STATUS, &Empty {})
                .await?;
            print_status(&st);
            let unhealthy = st
                .services
                .iter()
                .any(|s| s.state == ming_schemas::control::ServiceState::Failed);
            return Ok(if unhealthy {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            });
        }
        Cmd::Start { service } => ack(cli
            .request("supervisor", kinds::SUPERVISOR_START, &svc(&service))
            .await?),
        Cmd::Stop { service } => ack(cli
            .request("supervisor", kinds::SUPERVISOR_STOP, &svc(&service))
            .await?),
        Cmd::Restart { service } => ack(cli
            .request("supervisor", kinds::SUPERVISOR_RESTART, &svc(&service))
            .await?),
        Cmd::Run { service } => return run_foreground(&cli, &service).await,
        Cmd::Logs {
            service,
            follow,
            lines,
        } => {
            let st: SupervisorStatus = cli
                .request("supervisor", kinds::SUPERVISOR_STATUS, &Empty {})
                .await?;
            let Some(row) = st.services.iter().find(|r| r.name == service) else {
                bail!("no service named `{service}` (known: {})", names(&st));
            };
            show_log(Path::new(&row.log_file), lines, follow).await?;
        }
        Cmd::Ping { service } => {
            let started = Instant::now();
            let pong: Pong = cli.request(&service, kinds::PING, &Empty {}).await?;
            println!(
                "pong from {} (instance {}, pid {}, version {}, up {}) in {:.2} ms",
                pong.service,
                pong.instance,
                pong.pid,
                pong.version,
                human(pong.uptime_ms),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        Cmd::Chat => return chat(&cli, args.timeout_ms).await,
        Cmd::Trace { utterance } => {
            let req = ming_schemas::agent::TraceRequest {
                utterance: utterance.unwrap_or(0),
            };
            let i: ming_schemas::agent::Interaction =
                cli.request("agent", kinds::AGENT_TRACE, &req).await?;
            println!("utterance {} (#{}): {:?}", i.utterance, i.seq, i.text);
            if let Some(tool) = &i.tool {
                println!(
                    "tool {tool} {} via {:?} tier: {}",
                    i.arguments,
                    i.tier.unwrap_or(ming_schemas::agent::Tier::Unknown),
                    i.outcome
                );
            } else {
                println!("outcome: {}", i.outcome);
            }
            // Times are from the moment the agent received the message (voice stages before it
            // are negative: the speech ended, the transcript was final, then it arrived).
            let mut last = i.stages.first().map_or(0.0, |s| s.at_ms);
            for st in &i.stages {
                println!(
                    "  {:>9.3} ms  (+{:>8.3})  {}",
                    st.at_ms,
                    st.at_ms - last,
                    st.name
                );
                last = st.at_ms;
            }
        }
        Cmd::Ask {
            text,
            yes,
            json,
            tool,
            args: tool_args,
            session,
        } => {
            let msg = ming_schemas::agent::Message {
                text,
                session,
                confirm: yes,
                tool,
                arguments: tool_args,
                voice: None,
                skip_llm: false,
                skip_router: false,
            };
            // Understanding may need the local model: a minute unless told otherwise.
            let timeout = args
                .timeout_ms
                .map_or(Duration::from_secs(60), Duration::from_millis);
            if !cli.runtime_dir.join("bus.sock").exists() {
                return Err(cli.not_running());
            }
            // Ctrl-C cancels the request (the agent stops before acting, the local model's
            // generation too) and waits for the agent to say so.
            let mut stream = cli.client.stream(cli.client.envelope(
                "agent",
                kinds::AGENT_MESSAGE,
                ming_schemas::to_body(&msg)?,
                timeout,
            ))?;
            let frame = loop {
                tokio::select! {
                    f = stream.next() => break f,
                    _ = tokio::signal::ctrl_c() => stream.cancel(),
                }
            };
            let frame = frame.ok_or_else(|| {
                anyhow::anyhow!("the agent closed the request without an answer")
            })??;
            let reply: ming_schemas::agent::Reply =
                frame.body().map_err(|e| anyhow::anyhow!("{e}"))?;
            let acted = reply.action.as_ref().is_some_and(|a| a.ok);
            if json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            } else {
                println!("{}", reply.text);
                if let Some(a) = &reply.action {
                    eprintln!(
                        "[{} {} via {:?}, decided in {:.1} ms; utterance {}]",
                        a.tool, a.arguments, a.tier, reply.decided_ms, reply.utterance
                    );
                }
            }
            return Ok(if acted {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(5)
            });
        }
        Cmd::Handoff {
            task,
            context,
            provider,
        } => {
            let req = ming_schemas::cloud::HandoffRequest {
                task,
                context,
                provider,
            };
            let t: Ticket = cli
                .request("cloud-gateway", kinds::CLOUD_HANDOFF, &req)
                .await?;
            print_ticket(&t, true);
            println!(
                "\nNothing has been sent. Approve with: ming consent approve {} (or deny it).",
                t.id
            );
        }
        Cmd::Consent { cmd } => return consent(&cli, cmd).await,
        Cmd::Memory { cmd } => return memory::run(&cli, cmd).await,
        Cmd::Train {
            job,
            epochs,
            seed_only,
            no_promote,
            cancel,
            json,
        } => {
            if cancel {
                return train::cancel(&cli).await;
            }
            let job = ming_schemas::training::Train {
                job,
                epochs,
                seed_only,
                no_promote,
            };
            return train::train(&cli, job, json).await;
        }
        Cmd::Models { cmd } => return train::models(&cli, cmd).await,
        Cmd::Feedback {
            utterance,
            tool,
            undone,
        } => return train::feedback(&cli, utterance, tool, undone).await,
        Cmd::Transcribe {
            file,
            realtime,
            to_agent,
            json,
        } => return audio::transcribe(&cli, file, realtime, to_agent, json, args.timeout_ms).await,
        Cmd::Say {
            text,
            wav,
            voice,
            rate,
        } => return audio::say(&cli, text, wav, voice, rate).await,
        Cmd::Listen { stop, status } => return audio::listen(&cli, stop, status).await,
        Cmd::Audio { cmd } => return audio::devices(&cli, cmd).await,
        Cmd::Egress { cmd } => return egress(&cli, cmd).await,
        Cmd::Generate {
            prompt,
            system,
            max_tokens,
            temperature,
        } => {
            return generate(
                &cli,
                args.timeout_ms,
                prompt,
                system,
                max_tokens,
                temperature,
            )
            .await;
        }
        Cmd::Events { prefixes } => {
            if !cli.runtime_dir.join("events.sock").exists() {
                return Err(cli.not_running());
            }
            let prefixes: Vec<&str> = if prefixes.is_empty() {
                vec![""]
            } else {
                prefixes.iter().map(String::as_str).collect()
            };
            let mut sub = EventSubscriber::connect(&cli.bus, &prefixes)?;
            loop {
                tokio::select! {
                    ev = sub.next() => {
                        let ev = ev?;
                        let body = rmpv::decode::read_value(&mut ev.body.as_slice())
                            .map(|v| v.to_string())
                            .unwrap_or_else(|_| format!("<{} bytes>", ev.body.len()));
                        println!("{} {:<28} {:<14} {body}", ming_schemas::envelope::now_ms(), ev.kind, ev.sender);
                    }
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ack(a: Ack) {
    println!("{}", a.message);
}

fn names(st: &SupervisorStatus) -> String {
    st.services
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn print_status(st: &SupervisorStatus) {
    println!(
        "mingd pid {} (version {}, up {}), runtime dir {}",
        st.pid,
        st.version,
        human(st.uptime_ms),
        st.runtime_dir
    );
    println!(
        "{:<15} {:<9} {:>8} {:>8} {:>8}  {:<15} LAST ERROR",
        "SERVICE", "STATE", "PID", "RESTARTS", "UPTIME", "SANDBOX"
    );
    for s in &st.services {
        println!(
            "{:<15} {:<9} {:>8} {:>8} {:>8}  {:<15} {}",
            s.name,
            s.state.as_str(),
            s.pid.map_or("-".into(), |p| p.to_string()),
            s.restarts,
            if s.pid.is_some() {
                human(s.uptime_ms)
            } else {
                "-".into()
            },
            s.sandbox,
            s.last_error
        );
    }
}

async fn generate(
    cli: &Cli,
    timeout_ms: Option<u64>,
    prompt: String,
    system: Option<String>,
    max_tokens: Option<u32>,
    temperature: f32,
) -> anyhow::Result<ExitCode> {
    use ming_schemas::inference::{ChatChunk, ChatMessage, ChatReply, ChatRequest};
    use std::io::Write;
    if !cli.runtime_dir.join("bus.sock").exists() {
        return Err(cli.not_running());
    }
    let mut messages = Vec::new();
    if let Some(s) = system {
        messages.push(ChatMessage::new("system", s));
    }
    messages.push(ChatMessage::new("user", prompt));
    let mut req = ChatRequest::new(messages);
    req.max_tokens = max_tokens;
    req.sampling.temperature = temperature;
    req.stream = true;
    // Generation takes longer than a control request: two minutes unless told otherwise.
    let timeout = Duration::from_millis(timeout_ms.unwrap_or(120_000));
    let body = ming_schemas::to_body(&req)?;
    let mut stream = cli.client.stream(cli.client.envelope(
        "inference",
        kinds::INFERENCE_CHAT,
        body,
        timeout,
    ))?;
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame else { break };
                let frame = frame?;
                if frame.flow == ming_schemas::envelope::Flow::Partial {
                    let chunk: ChatChunk = frame.body().map_err(|e| anyhow::anyhow!("{e}"))?;
                    if let Some(n) = chunk.queue_position {
                        eprintln!("(waiting: {n} ahead)");
                    }
                    write!(out, "{}", chunk.text)?;
                    out.flush()?;
                } else {
                    let reply: ChatReply = frame.body().map_err(|e| anyhow::anyhow!("{e}"))?;
                    let u = reply.usage;
                    println!();
                    eprintln!(
                        "[{}: {:?}; {} prompt tokens ({} cached), {} generated; first token {:.0} ms; prefill {:.0} tok/s, decode {:.1} tok/s]",
                        reply.model, reply.finish_reason, u.prompt_tokens, u.cached_prompt_tokens, u.generated_tokens,
                        u.time_to_first_token_ms, u.prefill_tokens_per_s, u.decode_tokens_per_s
                    );
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => {
                stream.cancel();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn chat(cli: &Cli, timeout_ms: Option<u64>) -> anyhow::Result<ExitCode> {
    use ming_schemas::agent::{ActionFinished, ActionStarted, Message, Reply};
    use std::io::{IsTerminal, Write};
    use tokio::io::AsyncBufReadExt;
    if !cli.runtime_dir.join("bus.sock").exists() {
        return Err(cli.not_running());
    }
    let timeout = timeout_ms.map_or(Duration::from_secs(60), Duration::from_millis);
    let mut events = EventSubscriber::connect(&cli.bus, &["agent."])?;
    let interactive = std::io::stdin().is_terminal();
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    if interactive {
        eprintln!("Talk to Ming (Ctrl-D to leave; add \"!\" at the end to confirm a deletion).");
    }
    // Utterances whose action start and end have been shown.
    let (mut started, mut finished) = (
        std::collections::HashSet::new(),
        std::collections::HashSet::new(),
    );
    loop {
        if interactive {
            eprint!("you> ");
            std::io::stderr().flush()?;
        }
        let Some(line) = lines.next_line().await? else {
            break;
        };
        let mut text = line.trim().to_string();
        if text.is_empty() {
            continue;
        }
        if matches!(text.as_str(), "quit" | "exit" | "/quit") {
            break;
        }
        // "yes" after a deletion was described is the agent's to take (it runs exactly the
        // call it described); "!" confirms in the same breath.
        let mut confirm = false;
        if let Some(stripped) = text.strip_suffix('!') {
            text = stripped.trim().to_string();
            confirm = true;
        }
        let msg = Message {
            text: text.clone(),
            session: Some(format!("chat-{}", std::process::id())),
            confirm,
            tool: None,
            arguments: None,
            voice: None,
            skip_llm: false,
            skip_router: false,
        };
        let body = ming_schemas::to_body(&msg)?;
        let mut stream =
            cli.client.stream(
                cli.client
                    .envelope("agent", kinds::AGENT_MESSAGE, body, timeout),
            )?;
        loop {
            tokio::select! {
                ev = events.next() => {
                    let Ok(ev) = ev else { continue };
                    match ev.kind.as_str() {
                        kinds::EVENT_ACTION_STARTED => {
                            if let Some(a) = ev.body::<ActionStarted>().ok().filter(|a| started.insert(a.utterance)) {
                                println!("  ⋯ {} {} ({:?})", a.tool, a.arguments, a.tier);
                            }
                        }
                        kinds::EVENT_ACTION_FINISHED => {
                            if let Ok(a) = ev.body::<ActionFinished>() {
                                if started.contains(&a.utterance) && finished.insert(a.utterance) {
                                    println!("  {} {}", if a.ok { "✓" } else { "✗" }, a.tool);
                                }
                            }
                        }
                        kinds::EVENT_HANDOFF_ANSWER => {
                            if let Ok(r) = ev.body::<ming_schemas::agent::HandoffResult>() {
                                println!("  ☁ answer to \"{}\":\n{}", r.task, r.answer);
                            }
                        }
                        kinds::EVENT_TIMER_FIRED => {
                            if let Ok(t) = ev.body::<ming_schemas::agent::TimerFired>() {
                                println!("  ⏰ timer {}", if t.label.is_empty() { "done" } else { &t.label });
                            }
                        }
                        _ => {}
                    }
                }
                frame = stream.next() => {
                    match frame {
                        Some(Ok(f)) => {
                            let reply: Reply = f.body().map_err(|e| anyhow::anyhow!("{e}"))?;
                            // Events are lossy (a subscriber joining late misses the first ones):
                            // an action not yet shown is shown from the reply itself.
                            if let Some(a) = &reply.action {
                                if started.insert(reply.utterance) {
                                    println!("  ⋯ {} {} ({:?})", a.tool, a.arguments, a.tier);
                                }
                                if finished.insert(reply.utterance) {
                                    println!("  {} {}", if a.ok { "✓" } else { "✗" }, a.tool);
                                }
                            }
                            println!("ming> {}", reply.text);
                            if reply.awaiting.as_deref() == Some("confirmation") {
                                println!("      (answer \"yes\" to confirm)");
                            }
                        }
                        Some(Err(e)) => println!("ming> sorry: {e}"),
                        None => {}
                    }
                    break;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends an approve/retry and prints the answer as it streams in; returns the final ticket.
async fn stream_answer(cli: &Cli, kind: &str, body: Vec<u8>) -> anyhow::Result<Ticket> {
    use std::io::Write;
    let mut stream = cli.client.stream(cli.client.envelope(
        "cloud-gateway",
        kind,
        body,
        Duration::from_secs(300),
    ))?;
    let mut streamed = false;
    loop {
        match stream.next().await {
            Some(Ok(f)) if f.flow == ming_schemas::envelope::Flow::Partial => {
                let chunk: ming_schemas::cloud::AnswerChunk =
                    f.body().map_err(|e| anyhow::anyhow!("{e}"))?;
                if !streamed {
                    println!("answer (streaming):");
                    streamed = true;
                }
                print!("{}", chunk.text);
                std::io::stdout().flush()?;
            }
            Some(Ok(f)) => {
                let mut t: Ticket = f.body().map_err(|e| anyhow::anyhow!("{e}"))?;
                if streamed {
                    println!();
                    t.answer = None; // already shown
                }
                return Ok(t);
            }
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the gateway closed the request without an answer"),
        }
    }
}

fn print_ticket(t: &Ticket, full: bool) {
    println!(
        "ticket {}  [{:?}]  provider {}  -> {}",
        t.id, t.state, t.provider, t.destination
    );
    println!("task: {}", t.task);
    if !t.redactions.is_empty() {
        println!("redacted before sending (the provider sees only the placeholders):");
        for r in &t.redactions {
            println!("  {:<12} {}", r.placeholder, r.reason);
        }
    }
    if full {
        // Shown indented for reading; what leaves is the compact form these figures describe.
        println!(
            "body that would leave ({} bytes, sha256 {}), laid out for reading:",
            t.size, t.body_sha256
        );
        match serde_json::from_str::<serde_json::Value>(&t.body)
            .and_then(|v| serde_json::to_string_pretty(&v))
        {
            Ok(pretty) => println!("{pretty}"),
            Err(_) => println!("{}", t.body),
        }
        println!("exact bytes:\n{}", t.body);
    }
    if let Some(a) = &t.answer {
        println!("answer:\n{a}");
    }
    if !t.error.is_empty() {
        println!("error: {}", t.error);
    }
}

async fn consent(cli: &Cli, cmd: ConsentCmd) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let id_body = |id: &str| TicketId { id: id.to_string() };
    match cmd {
        ConsentCmd::List => {
            let list: TicketList = cli
                .request("cloud-gateway", kinds::CLOUD_TICKETS, &Empty {})
                .await?;
            if list.tickets.is_empty() {
                println!("no tickets");
            }
            for t in &list.tickets {
                println!(
                    "{}  {:<9} {:>7} bytes  {}",
                    t.id,
                    format!("{:?}", t.state).to_lowercase(),
                    t.size,
                    t.task
                );
            }
        }
        ConsentCmd::Show { id } => {
            let t: Ticket = cli
                .request("cloud-gateway", kinds::CLOUD_TICKET, &id_body(&id))
                .await?;
            print_ticket(&t, true);
        }
        ConsentCmd::Approve { id, sha256 } => {
            let sha = match sha256 {
                Some(s) => s,
                None => {
                    let t: Ticket = cli
                        .request("cloud-gateway", kinds::CLOUD_TICKET, &id_body(&id))
                        .await?;
                    if !std::io::stdin().is_terminal() {
                        bail!("not a terminal: pass --sha256 {} after reading `ming consent show {id}`", t.body_sha256);
                    }
                    print_ticket(&t, true);
                    eprint!(
                        "\nSend exactly these {} bytes to {}? [y/N] ",
                        t.size, t.destination
                    );
                    let mut answer = String::new();
                    std::io::stdin().read_line(&mut answer)?;
                    if !answer.trim().eq_ignore_ascii_case("y") {
                        println!("not approved; nothing was sent");
                        return Ok(ExitCode::FAILURE);
                    }
                    t.body_sha256
                }
            };
            let body = ming_schemas::to_body(&Approve { id, sha256: sha })?;
            let t = stream_answer(cli, kinds::CLOUD_APPROVE, body).await?;
            print_ticket(&t, false);
        }
        ConsentCmd::Deny { id } => {
            let t: Ticket = cli
                .request("cloud-gateway", kinds::CLOUD_DENY, &id_body(&id))
                .await?;
            println!("ticket {} denied; nothing was sent", t.id);
        }
        ConsentCmd::Retry { id } => {
            let body = ming_schemas::to_body(&id_body(&id))?;
            let t = stream_answer(cli, kinds::CLOUD_RETRY, body).await?;
            print_ticket(&t, false);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn egress(cli: &Cli, cmd: EgressCmd) -> anyhow::Result<ExitCode> {
    if let EgressCmd::Check = cmd {
        let st: SupervisorStatus = cli
            .request("supervisor", kinds::SUPERVISOR_STATUS, &Empty {})
            .await?;
        println!("{:<15} {:<9} NETWORK", "SERVICE", "STATE");
        for s in &st.services {
            let net = match s.sandbox.as_str() {
                "network" => "yes (allowed by config)".to_string(),
                "pending" => "not started yet".to_string(),
                other => format!("no ({other})"),
            };
            println!("{:<15} {:<9} {}", s.name, s.state.as_str(), net);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report: EgressReport = cli
        .request("cloud-gateway", kinds::CLOUD_EGRESS, &Empty {})
        .await?;
    if let EgressCmd::Log = cmd {
        println!("{}", report.path);
        for l in &report.lines {
            println!("{l}");
        }
    }
    println!("{}", report.verdict);
    Ok(if report.intact {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(4)
    })
}

async fn run_foreground(cli: &Cli, service: &str) -> anyhow::Result<ExitCode> {
    let body = ServiceName {
        service: service.to_string(),
    };
    let hold: HoldReply = cli
        .request("supervisor", kinds::SUPERVISOR_HOLD, &body)
        .await?;
    eprintln!(
        "ming: the supervisor holds `{service}` stopped; running it here (Ctrl-C to end, then the supervisor takes it back):\n  {}",
        hold.argv.join(" ")
    );
    // The terminal's Ctrl-C reaches the service too (same process group); ming only waits.
    let ignore_int = tokio::spawn(async {
        loop {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
        }
    });
    let status = tokio::process::Command::new(&hold.argv[0])
        .args(&hold.argv[1..])
        .envs(hold.env.iter().cloned())
        .status()
        .await
        .with_context(|| format!("cannot run {}", hold.argv[0]));
    ignore_int.abort();
    let released: Result<Ack, _> = cli
        .request("supervisor", kinds::SUPERVISOR_RELEASE, &body)
        .await;
    match &released {
        Ok(a) => eprintln!("ming: {}", a.message),
        Err(e) => eprintln!("ming: could not hand `{service}` back to the supervisor: {e:#} (run `ming start {service}`)"),
    }
    let status = status?;
    eprintln!("ming: `{service}` ended: {status}");
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn show_log(path: &Path, lines: usize, follow: bool) -> anyhow::Result<()> {
    let mut text = String::new();
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    f.read_to_string(&mut text)?;
    let all: Vec<&str> = text.lines().collect();
    for l in &all[all.len().saturating_sub(lines)..] {
        println!("{l}");
    }
    if !follow {
        return Ok(());
    }
    let mut pos = text.len() as u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            // Rotated: start over on the new file.
            f = std::fs::File::open(path)?;
            pos = 0;
        }
        if len > pos {
            f.seek(SeekFrom::Start(pos))?;
            let mut chunk = String::new();
            f.read_to_string(&mut chunk)?;
            pos += chunk.len() as u64;
            print!("{chunk}");
        }
    }
}
