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
