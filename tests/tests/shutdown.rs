//! SIGTERM to mingd drains every service and exits 0 within the grace period, leaving no
//! process behind; SIGKILL to mingd takes its children with it (PR_SET_PDEATHSIG).

use std::time::{Duration, Instant};

use ming_tests::{alive, eventually, signal, Mingd, SERVICES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_everything_cleanly() {
    let mut m = Mingd::start("");
    let rows = m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    let pids: Vec<u32> = rows.iter().filter_map(|r| r.pid).collect();
    assert_eq!(pids.len(), SERVICES.len());
    let started = Instant::now();
    signal(m.pid(), libc::SIGTERM);
    let mut child = m.child.take().unwrap();
    let status = eventually(Duration::from_secs(5), "mingd to exit", || {
        let s = child.try_wait().unwrap();
        async move { s }
    })
    .await;
    let took = started.elapsed();
    assert!(
        status.success(),
        "mingd exited with {status}:\n{}",
        m.mingd_output()
    );
    // Grace period is 1.5 s in the test config; idle services drain at once.
    assert!(took < Duration::from_millis(1500), "shutdown took {took:?}");
    for pid in pids {
        assert!(!alive(pid), "service pid {pid} outlived mingd");
    }
    let log = std::fs::read_to_string(m.log_dir().join("agent.log")).unwrap();
    assert!(log.contains("asked to drain"), "{log}");
    assert!(log.contains("stopped: exited cleanly"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_die_with_a_killed_supervisor() {
    let mut m = Mingd::start("");
    let rows = m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    let mut child = m.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    for row in rows {
        let pid = row.pid.unwrap();
        eventually(
            Duration::from_secs(3),
            &format!("{} (pid {pid}) to die", row.name),
            || async move { (!alive(pid)).then_some(()) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_mingd_on_the_same_runtime_dir_is_refused() {
    let m = Mingd::start("");
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let out = Mingd::command(&ming_tests::bin("mingd"), &m.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
}
