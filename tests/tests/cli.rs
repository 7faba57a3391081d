//! The `ming` CLI against a live mingd: status, ping, stop/start/restart, logs, events, `run`
//! (one service in the foreground while the supervisor holds its own copy), and the clear
//! messages when mingd is not running or the config is bad.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use ming_bus::events::EventSubscriber;
use ming_schemas::control::{BrokerStatus, Empty, ServiceState, ServiceStateChanged};
use ming_schemas::kinds;
use ming_tests::{bin, eventually, signal, Mingd, SERVICES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_ping_stop_start_logs_and_events() {
    let m = Mingd::start("");
    m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    let (code, out) = m.ming(&["status"]);
    assert_eq!(code, 0, "{out}");
    for s in SERVICES {
        let line = out
            .lines()
            .find(|l| l.starts_with(s))
            .unwrap_or_else(|| panic!("{s} missing:\n{out}"));
        assert!(line.contains("ready"), "{line}");
    }
    let (code, out) = m.ming(&["ping", "inference"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("pong from inference"), "{out}");

    let mut events = EventSubscriber::connect(&m.bus, &[kinds::EVENT_SERVICE_STATE]).unwrap();
    // Let the subscription reach the broker before anything happens (events are lossy).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out) = m.ming(&["stop", "audio"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(m.row("audio").await.unwrap().state, ServiceState::Stopped);
    let (code, out) = m.ming(&["ping", "audio", "--timeout-ms", "300"]);
    assert_ne!(code, 0);
    assert!(
        out.contains("ServiceUnavailable") || out.contains("Timeout"),
        "{out}"
    );
    let (code, out) = m.ming(&["start", "audio"]);
    assert_eq!(code, 0, "{out}");
    m.wait_ready(&["audio"], Duration::from_secs(10)).await;
    let mut seen = Vec::new();
    while !seen.contains(&ServiceState::Ready) {
        let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("state events")
            .unwrap();
        let change: ServiceStateChanged = ev.body().unwrap();
        if change.service == "audio" {
            seen.push(change.state);
        }
    }
    assert_eq!(
        &seen[..2],
        [ServiceState::Stopping, ServiceState::Stopped],
        "{seen:?}"
    );

    let (code, out) = m.ming(&["logs", "audio", "-n", "300"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("registered with the broker"), "{out}");
    assert!(out.contains("[mingd] stopped: exited cleanly"), "{out}");

    // The local model through the inference service, streamed.
    let (code, out) = m.ming(&[
        "generate",
        "--system",
        "You are a concise assistant.",
        "--max-tokens",
        "24",
        "What is the capital of France?",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Paris") && out.contains("smollm2-135m-instruct"),
        "{out}"
    );

    let (code, out) = m.ming(&["stop", "nosuch"]);
    assert_ne!(code, 0);
    assert!(out.contains("no service named `nosuch`"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_holds_the_service_and_hands_it_back() {
    let m = Mingd::start("");
    let before = m.wait_ready(&["agent"], Duration::from_secs(20)).await[0]
        .pid
        .unwrap();
    let run = Mingd::command(&bin("ming"), &m.config)
        .args(["run", "agent"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    // The supervisor holds its copy; the foreground one registers on the live bus.
    let fg_pid = eventually(
        Duration::from_secs(10),
        "the foreground agent to register",
        || async {
            let row = m.row("agent").await?;
            if row.state != ServiceState::Held {
                return None;
            }
            let st: BrokerStatus = m
                .client
                .request(
                    "broker",
                    kinds::BROKER_STATUS,
                    &Empty {},
                    Duration::from_secs(1),
                )
                .await
                .ok()?;
            st.services
                .into_iter()
                .find(|s| s.name == "agent")?
                .workers
                .first()
                .map(|w| w.pid)
        },
    )
    .await;
    assert_ne!(fg_pid, before);
    let pong: ming_schemas::control::Pong = m
        .client
        .request("agent", kinds::PING, &Empty {}, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(pong.pid, fg_pid, "requests reach the foreground copy");
    // Ctrl-C in the terminal: the whole foreground group gets SIGINT.
    signal(run.id(), 0); // still there
                         // SAFETY: killpg on the group we created for `ming run`.
    unsafe { libc::killpg(run.id() as libc::pid_t, libc::SIGINT) };
    let status = tokio::task::spawn_blocking(move || run.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(err.contains("released agent"), "{err}");
    let after = m.wait_ready(&["agent"], Duration::from_secs(10)).await[0]
        .pid
        .unwrap();
    assert_ne!(after, fg_pid);
}

#[test]
fn clear_message_when_mingd_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ming.toml");
    std::fs::write(&config, Mingd::config_text(dir.path(), "")).unwrap();
    let out = Mingd::command(&bin("ming"), &config)
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mingd is not running"), "{err}");
}

#[test]
fn bad_config_names_key_value_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ming.toml");
    std::fs::write(&config, "[bus]\nheartbeat_ms = \"often\"\nliveness = 0\n[services.agent]\nrestart = \"sometimes\"\n").unwrap();
    let out = Mingd::command(&bin("mingd"), &config).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bus.heartbeat_ms") && err.contains("often"),
        "{err}"
    );
    assert!(
        err.contains("services.agent.restart") && err.contains("on-failure"),
        "{err}"
    );
    let out = Mingd::command(&bin("mingd"), &dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}
