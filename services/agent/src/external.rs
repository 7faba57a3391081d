//! Tools by config: an external program reads the call's arguments as JSON on stdin and writes
//! `{"ok": bool, "text": "..."}` on stdout. It runs as a child of the agent, so inside the
//! agent's sandbox (its empty network namespace and Landlock rules are inherited).

use std::time::Duration;

use ming_config::ExternalTool;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::tools::Outcome;

/// Runs the tool with `args`, bounded by its timeout. The agent has checked `args` against the
/// tool's declared schema before calling this.
pub async fn run(name: &str, tool: &ExternalTool, args: &Value) -> Outcome {
    let fail = |text: String| Outcome {
        ok: false,
        text,
        needs_confirmation: false,
    };
    let Some((program, rest)) = tool.command.split_first() else {
        return fail(format!("{name}: no command configured"));
    };
    let child = tokio::process::Command::new(program)
        .args(rest)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return fail(format!("{name}: cannot run {program}: {e}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(args.to_string().as_bytes()).await;
    }
    let out = match tokio::time::timeout(
        Duration::from_millis(tool.timeout_ms),
        child.wait_with_output(),
    )
    .await
    {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return fail(format!("{name}: {e}")),
        Err(_) => {
            return fail(format!(
                "{name} did not finish within {} ms",
                tool.timeout_ms
            ))
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<Value>(stdout.trim()) {
        Ok(v) => Outcome {
            needs_confirmation: false,
            ok: v["ok"].as_bool().unwrap_or(out.status.success()),
            text: v["text"]
                .as_str()
                .map_or_else(|| v.to_string(), str::to_owned),
        },
        Err(_) if !out.status.success() => fail(format!(
            "{name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(_) => Outcome {
            needs_confirmation: false,
            ok: true,
            text: stdout.trim().to_string(),
        },
    }
}
