//! `ming train`, `ming models`, `ming feedback`: the personal router's training, its versions,
//! and the corrections it learns from.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use ming_schemas::agent::Feedback;
use ming_schemas::control::{Ack, Empty};
use ming_schemas::envelope::Flow;
use ming_schemas::kinds;
use ming_schemas::training::{
    ModelInfo, Models, Promote, RouterMetrics, Train, TrainProgress, Trained,
};

use crate::Cli;

#[derive(Subcommand)]
pub enum ModelsCmd {
    /// Every stored router version: metrics, data, which one is in use.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Put a stored version in use (the agent hot-swaps to it).
    Promote { version: u64 },
    /// Go back to the version in use before the current one.
    Rollback,
}

fn metrics(m: &RouterMetrics) -> String {
    format!(
        "accuracy {:.1}%, NLL {:.3}, ECE {:.3} on {} examples",
        m.accuracy * 100.0,
        m.nll,
        m.ece,
        m.validation_size
    )
}

fn model_line(m: &ModelInfo) -> String {
    let p = &m.provenance;
    format!(
        "{} v{:<3} {}; trained on {} examples ({} from your log) in {:.1} s; T={:.2}; sha256 {}",
        if m.current { "*" } else { " " },
        m.version,
        metrics(&p.metrics),
        p.train_size,
        p.log_examples,
        p.train_ms as f64 / 1e3,
        m.temperature,
        &m.sha256[..12.min(m.sha256.len())]
    )
}

fn bar(p: &TrainProgress) -> String {
    let width = 30usize;
    let done = if p.epochs == 0 {
        0
    } else {
        (p.epoch as usize * width) / p.epochs as usize
    };
    format!(
        "\r[{}{}] epoch {}/{} loss {:.3} accuracy {:.1}% eta {:.0} s   ",
        "#".repeat(done),
        "-".repeat(width - done),
        p.epoch,
        p.epochs,
        p.loss,
        p.accuracy * 100.0,
        p.eta_ms as f64 / 1e3
    )
}

/// `ming train router`: streams progress (a bar on a terminal), then the decision.
pub async fn train(cli: &Cli, job: Train, json: bool) -> anyhow::Result<ExitCode> {
    if !cli.runtime_dir.join("bus.sock").exists() {
        return Err(cli.not_running());
    }
    let timeout = if cli.explicit_timeout {
        cli.timeout
    } else {
        Duration::from_secs(60 * 60)
    };
    let body = ming_schemas::to_body(&job)?;
    let mut stream =
        cli.client.stream(
            cli.client
                .envelope("training", kinds::TRAINING_TRAIN, body, timeout),
        )?;
    let mut drew = false;
    loop {
        tokio::select! {
            frame = stream.next() => {
                let Some(frame) = frame else { break };
                let frame = match frame {
                    Ok(f) => f,
                    Err(e) => {
                        if drew { eprintln!(); }
                        return Err(e.into());
                    }
                };
                if frame.flow == Flow::Partial {
                    let p: TrainProgress = frame.body().map_err(|e| anyhow::anyhow!("{e}"))?;
                    if json { continue; }
                    if p.phase == "training" {
                        eprint!("{}", bar(&p));
                        let _ = std::io::stderr().flush();
                        drew = true;
                    } else {
                        if drew { eprintln!(); drew = false; }
                        eprintln!("{} ({} training examples)…", p.phase, p.examples);
                    }
                    continue;
                }
                if drew { eprintln!(); }
                let t: Trained = frame.body().map_err(|e| anyhow::anyhow!("{e}"))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&t)?);
                } else {
                    println!("router v{}: {}", t.model.version, metrics(&t.candidate));
                    if let Some(i) = &t.incumbent {
                        println!("in use before:  {}", metrics(i));
                    }
                    println!("{}", t.decision);
                    if t.promoted {
                        println!(
                            "{}",
                            if t.agent_loaded { "the agent uses it now" } else { "the agent will load it when it next starts" }
                        );
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            _ = tokio::signal::ctrl_c() => stream.cancel(),
        }
    }
    anyhow::bail!("the training service closed the request without an answer")
}

/// `ming train --cancel`.
pub async fn cancel(cli: &Cli) -> anyhow::Result<ExitCode> {
    let a: Ack = cli
        .request("training", kinds::TRAINING_CANCEL, &Empty {})
        .await?;
    println!("{}", a.message);
    Ok(ExitCode::SUCCESS)
}

/// `ming models …`.
pub async fn models(cli: &Cli, cmd: ModelsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        ModelsCmd::List { json } => {
            let m: Models = cli
                .request("training", kinds::TRAINING_MODELS, &Empty {})
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&m)?);
            } else if m.models.is_empty() {
                println!("no router yet: `ming train router` makes one");
            } else {
                for info in &m.models {
                    println!("{}", model_line(info));
                }
            }
        }
        ModelsCmd::Promote { version } => {
            let m: ModelInfo = cli
                .request("training", kinds::TRAINING_PROMOTE, &Promote { version })
                .await?;
            println!("in use: {}", model_line(&m));
        }
        ModelsCmd::Rollback => {
            let m: ModelInfo = cli
                .request("training", kinds::TRAINING_ROLLBACK, &Empty {})
                .await?;
            println!("rolled back; in use: {}", model_line(&m));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ming feedback [UTTERANCE] --tool T | --undone`.
pub async fn feedback(
    cli: &Cli,
    utterance: Option<u64>,
    tool: Option<String>,
    undone: bool,
) -> anyhow::Result<ExitCode> {
    let a: Ack = cli
        .request(
            "agent",
            kinds::AGENT_FEEDBACK,
            &Feedback {
                utterance: utterance.unwrap_or(0),
                tool,
                undone,
            },
        )
        .await?;
    println!("{}", a.message);
    Ok(ExitCode::SUCCESS)
}
