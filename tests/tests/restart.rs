//! `kill -9` each service in turn: the supervisor restarts it and it re-registers within 1 s; a
//! request sent during the gap either succeeds after re-registration or fails with
//! `ServiceUnavailable` / `Timeout` before its deadline.

use std::time::{Duration, Instant};

use ming_schemas::control::{Empty, Pong};
use ming_schemas::{kinds, ErrorCode};
use ming_tests::{alive, signal, Mingd, SERVICES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_comes_back_after_kill_9() {
    let m = Mingd::start("");
    m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    for service in SERVICES {
        let before = m.row(service).await.unwrap();
        let old_pid = before.pid.unwrap();
        let killed = Instant::now();
        signal(old_pid, libc::SIGKILL);
        // A request sent into the gap, with a 2 s deadline.
        let client = m.client.clone();
        let gap = tokio::spawn(async move {
            let started = Instant::now();
            let r = client
                .request::<_, Pong>(service, kinds::PING, &Empty {}, Duration::from_secs(2))
                .await;
            (r, started.elapsed())
        });
        let row = ming_tests::eventually(
            Duration::from_secs(5),
            &format!("{service} to come back"),
            || async {
                let row = m.row(service).await?;
                (row.state == ming_schemas::control::ServiceState::Ready
                    && row.pid.is_some_and(|p| p != old_pid))
                .then_some(row)
            },
        )
        .await;
        let back_in = killed.elapsed();
        assert!(
            back_in <= Duration::from_secs(1),
            "{service} took {back_in:?} to re-register"
        );
        assert!(!alive(old_pid));
        assert_eq!(row.restarts, before.restarts + 1, "{service}");
        let (result, waited) = gap.await.unwrap();
        match result {
            Ok(pong) => assert_eq!(
                pong.pid,
                row.pid.unwrap(),
                "{service}: answered by the new process"
            ),
            Err(e) => assert!(
                matches!(e.code(), ErrorCode::ServiceUnavailable | ErrorCode::Timeout),
                "{service}: {e}"
            ),
        }
        assert!(
            waited <= Duration::from_millis(2200),
            "{service}: the gap request took {waited:?}"
        );
        println!("{service}: back in {back_in:?}");
    }
}
