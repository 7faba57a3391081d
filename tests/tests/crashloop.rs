//! A service that dies on every start is marked failed after the restart-intensity limit, with
//! backoff between tries; the others keep serving, and `ming restart` gives it another chance.

use std::time::{Duration, Instant};

use ming_schemas::control::{Empty, Pong, ServiceState};
use ming_schemas::kinds;
use ming_tests::{eventually, Mingd, SERVICES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_service_ends_failed_and_the_rest_keep_serving() {
    let m = Mingd::start(
        r#"
[supervisor]
backoff_initial_ms = 20
backoff_max_ms = 200
max_restarts = 3
window_s = 60

[services.crasher]
command = ["sh", "-c", "echo boom on purpose >&2; exit 3"]
restart = "always"
"#,
    );
    let started = Instant::now();
    let row = eventually(Duration::from_secs(10), "crasher to be failed", || async {
        m.row("crasher")
            .await
            .filter(|r| r.state == ServiceState::Failed)
    })
    .await;
    assert_eq!(row.restarts, 3, "{row:?}");
    assert!(
        row.last_error.contains("gave up after 3 restarts"),
        "{}",
        row.last_error
    );
    assert!(row.last_error.contains("status 3"), "{}", row.last_error);
    // Backoff: 20 + 40 + 80 ms at least between the four starts.
    assert!(
        started.elapsed() >= Duration::from_millis(140),
        "{:?}",
        started.elapsed()
    );
    // It stays failed: no restart storm.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(m.row("crasher").await.unwrap().restarts, 3);
    let log = std::fs::read_to_string(m.log_dir().join("crasher.log")).unwrap();
    assert_eq!(log.matches("boom on purpose").count(), 4, "{log}");
    assert!(log.contains("gave up"), "{log}");
    // Everyone else serves.
    m.wait_ready(&SERVICES, Duration::from_secs(10)).await;
    for s in SERVICES {
        let pong: Pong = m
            .client
            .request(s, kinds::PING, &Empty {}, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(pong.service, s);
    }
    // `ming status` shows it and exits non-zero while something is failed.
    let (code, out) = m.ming(&["status"]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("crasher") && l.contains("failed")),
        "{out}"
    );
    // A manual restart clears the failed state and tries again (and fails again, 4 more starts).
    let (code, out) = m.ming(&["restart", "crasher"]);
    assert_eq!(code, 0, "{out}");
    eventually(Duration::from_secs(10), "crasher to fail again", || async {
        m.row("crasher")
            .await
            .filter(|r| r.state == ServiceState::Failed && r.restarts == 6)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_cannot_run_as_configured_is_failed_at_once() {
    // Exit status 78 (EX_CONFIG: bad config, missing model, no sandbox possible) is permanent:
    // no restart, no backoff, failed with the reason, the log saying why.
    let m = Mingd::start(
        r#"
[services.misconfigured]
command = ["sh", "-c", "echo 'model file missing: run just models' >&2; exit 78"]
"#,
    );
    let row = eventually(
        Duration::from_secs(10),
        "misconfigured to be failed",
        || async {
            m.row("misconfigured")
                .await
                .filter(|r| r.state == ServiceState::Failed)
        },
    )
    .await;
    assert_eq!(row.restarts, 0, "{row:?}");
    assert!(row.last_error.contains("EX_CONFIG"), "{}", row.last_error);
    let log = std::fs::read_to_string(m.log_dir().join("misconfigured.log")).unwrap();
    assert!(log.contains("model file missing"), "{log}");
    // And the same for a service whose network sandbox cannot be applied.
    let out = std::process::Command::new(ming_tests::bin("mingd"))
        .args(["sandbox-exec", "--deny-net", "--only", "none", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("REFUSING to start true"));
    let out = std::process::Command::new(ming_tests::bin("mingd"))
        .args([
            "sandbox-exec",
            "--deny-net",
            "--only",
            "none",
            "--allow-unsandboxed",
            "--",
            "sh",
            "-c",
            "echo $MING_SANDBOX",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "none");
    assert!(String::from_utf8_lossy(&out.stderr).contains("WITHOUT any network sandbox"));
}
