//! `ming transcribe`, `ming say`, `ming listen`, `ming audio devices`: the audio service from
//! the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ming_bus::events::EventSubscriber;
use ming_schemas::audio::{
    Devices, Listen, ListenState, Speak, Spoken, Transcribe, Transcribed, Transcript, Update,
};
use ming_schemas::envelope::Flow;
use ming_schemas::kinds;

use crate::Cli;

/// `ming audio …`.
#[derive(clap::Subcommand, Debug)]
pub enum AudioCmd {
    /// The capture and playback devices, and what the live input and spoken replies use.
    Devices {
        /// Print the reply as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `ming audio devices`.
pub async fn devices(cli: &Cli, cmd: AudioCmd) -> anyhow::Result<ExitCode> {
    let AudioCmd::Devices { json } = cmd;
    let d: Devices = cli
        .request("audio", kinds::AUDIO_DEVICES, &serde_json::json!({}))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(e) = &d.error {
        println!("no device list: {e}");
    }
    let w = d
        .devices
        .iter()
        .map(|x| x.id.len())
        .max()
        .unwrap_or(2)
        .max(2);
    println!("{:<w$}  {:<7}  DESCRIPTION", "ID", "IN/OUT");
    for x in &d.devices {
        let dir = match (x.input, x.output) {
            (true, true) => "in+out",
            (true, false) => "in",
            (false, true) => "out",
            (false, false) => "?",
        };
        let desc = x.description.lines().next().unwrap_or_default();
        println!("{:<w$}  {dir:<7}  {desc}", x.id);
    }
    println!(
        "\nlive input: {} — {}{}",
        d.input.input,
        d.input.detail,
        if d.input.input_ok { "" } else { " (NO INPUT)" }
    );
    println!("spoken replies: {}", d.output);
    Ok(ExitCode::SUCCESS)
}

fn line(t: &Transcript) -> String {
    format!(
        "[{:>7.2}–{:>7.2} s] {}",
        t.audio_start_ms / 1e3,
        t.audio_end_ms / 1e3,
        t.text
    )
}

/// Stage times relative to the end of speech (the moment that matters for latency).
fn timings(t: &Transcript) -> String {
    let ended = t
        .stages
        .iter()
        .find(|s| s.name == "speech_ended")
        .map(|s| s.at_ms);
    let mut parts = vec![
        format!("ended by {}", t.end_reason),
        format!("decode {:.0} ms (audio_ctx {})", t.decode_ms, t.audio_ctx),
    ];
    if let (Some(e), Some(done)) = (ended, t.stages.iter().find(|s| s.name == "transcript")) {
        parts.push(format!(
            "final {:.0} ms after the turn ended",
            done.at_ms - e
        ));
    }
    parts.join(", ")
}

/// `ming transcribe FILE`: through the service, partials as they come, then every final.
pub async fn transcribe(
    cli: &Cli,
    file: PathBuf,
    realtime: bool,
    to_agent: bool,
    json: bool,
    timeout_ms: Option<u64>,
) -> anyhow::Result<ExitCode> {
    if !cli.runtime_dir.join("bus.sock").exists() {
        return Err(cli.not_running());
    }
    // The service reads the file itself (a long recording would not fit in one frame).
    let path = std::path::absolute(&file).unwrap_or(file.clone());
    std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let req = Transcribe {
        path: Some(path.display().to_string()),
        realtime,
        partials: true,
        to_agent,
        ..Default::default()
    };
    let timeout = Duration::from_millis(timeout_ms.unwrap_or(30 * 60 * 1000));
    let body = ming_schemas::to_body(&req)?;
    let mut stream =
        cli.client.stream(
            cli.client
                .envelope("audio", kinds::AUDIO_TRANSCRIBE, body, timeout),
        )?;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame else { break };
                let frame = frame?;
                if frame.flow == Flow::Partial {
                    let u: Update = frame.body().map_err(|e| anyhow::anyhow!("{e}"))?;
                    if json {
                        continue;
                    }
                    match (u.event.as_str(), &u.boundary, &u.transcript) {
                        ("speech_started", Some(b), _) => eprintln!("  speech from {:.3} s", b.audio_ms / 1e3),
                        ("speech_ended", Some(b), _) => eprintln!("  speech to   {:.3} s", b.audio_ms / 1e3),
                        ("partial", _, Some(t)) => eprintln!("  … {}", t.text),
                        ("final", _, Some(t)) => {
                            println!("{}", line(t));
                            eprintln!("    ({})", timings(t));
                        }
                        _ => {}
                    }
                } else {
                    let r: Transcribed = frame.body().map_err(|e| anyhow::anyhow!("{e}"))?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&r)?);
                    } else {
                        if r.utterances.is_empty() {
                            println!("(no speech found)");
                        }
                        eprintln!(
                            "{} utterance(s) in {:.1} s of audio ({} Hz, {} ch); {:.1} s wall; speech-to-text {:.1} s, real-time factor {:.3}{}",
                            r.utterances.len(), r.audio_ms / 1e3, r.source_rate, r.source_channels,
                            r.elapsed_ms / 1e3, r.stt_ms / 1e3, r.rtf,
                            if to_agent { format!("; {} sent to the agent", r.sent_to_agent) } else { String::new() }
                        );
                    }
                    if let Some(w) = r.warning {
                        eprintln!("warning: {w}");
                    }
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => stream.cancel(),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ming say TEXT`.
pub async fn say(
    cli: &Cli,
    text: String,
    wav: Option<PathBuf>,
    voice: Option<String>,
    rate: Option<u32>,
) -> anyhow::Result<ExitCode> {
    let req = Speak {
        text,
        utterance: None,
        wav_out: wav.map(|p| std::path::absolute(&p).unwrap_or(p).display().to_string()),
        voice,
        rate,
    };
    let r: Spoken = cli
        .request_with("audio", kinds::AUDIO_SPEAK, &req, Duration::from_secs(600))
        .await?;
    println!(
        "{} {:.1} s of speech to {}{}",
        if r.interrupted {
            "interrupted after"
        } else {
            "said"
        },
        if r.interrupted {
            r.played_ms
        } else {
            r.audio_ms
        } / 1e3,
        r.output,
        if r.first_audio_ms > 0.0 {
            format!(" (first audio {:.0} ms after asking)", r.first_audio_ms)
        } else {
            String::new()
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `ming listen`: one push-to-talk turn from the live input; prints the speech events and the
/// transcript, and what the agent did with it.
pub async fn listen(cli: &Cli, stop: bool, status: bool) -> anyhow::Result<ExitCode> {
    let action = if status {
        "status"
    } else if stop {
        "stop"
    } else {
        "start"
    };
    let mut events = if action == "start" {
        Some(EventSubscriber::connect(
            &cli.bus,
            &["audio.", "agent.action_"],
        )?)
    } else {
        None
    };
    let st: ListenState = cli
        .request(
            "audio",
            kinds::AUDIO_LISTEN,
            &Listen {
                action: action.into(),
            },
        )
        .await?;
    println!(
        "{} · mode {} · input {} ({}){}",
        if st.listening {
            "listening"
        } else {
            "not listening"
        },
        st.mode,
        st.input,
        st.detail,
        if st.input_ok { "" } else { " — NO INPUT" }
    );
    let Some(events) = events.as_mut() else {
        return Ok(ExitCode::SUCCESS);
    };
    eprintln!("speak now; Enter ends the turn, Ctrl-C gives up");
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let mut buf = String::new();
    loop {
        use tokio::io::AsyncBufReadExt;
        tokio::select! {
            ev = events.next() => {
                let env = ev?;
                match env.kind.as_str() {
                    kinds::EVENT_SPEECH_STARTED => eprintln!("  (speech)"),
                    kinds::EVENT_PARTIAL => {
                        if let Ok(t) = env.body::<Transcript>() { eprintln!("  … {}", t.text) }
                    }
                    kinds::EVENT_TRANSCRIPT => {
                        if let Ok(t) = env.body::<Transcript>() {
                            if !t.text.is_empty() {
                                println!("{}", t.text);
                                eprintln!("    ({})", timings(&t));
                            }
                        }
                    }
                    kinds::EVENT_ACTION_FINISHED => {
                        if let Ok(a) = env.body::<ming_schemas::agent::ActionFinished>() {
                            println!("  ✓ {} {}", a.tool, a.result);
                            return Ok(ExitCode::SUCCESS);
                        }
                    }
                    _ => {}
                }
            }
            n = stdin.read_line(&mut buf) => {
                if n.unwrap_or(0) == 0 || !buf.trim().is_empty() || buf == "\n" {
                    let _: ListenState = cli.request("audio", kinds::AUDIO_LISTEN, &Listen { action: "stop".into() }).await?;
                    buf.clear();
                }
            }
            _ = tokio::signal::ctrl_c() => {
                let _: Result<ListenState, _> = cli.request("audio", kinds::AUDIO_LISTEN, &Listen { action: "stop".into() }).await;
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}
