//! The memory service as a real process under mingd: requests over the bus, bad input refused,
//! `kill -9` in the middle of a burst of writes loses no acknowledged memory, the CLI.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ming_schemas::control::ServiceState;
use ming_schemas::memory::{
    Memories, MemoryIds, MemoryKind, MemoryStats, NewMemory, Recall, Recalled, Remember, Remembered,
};
use ming_schemas::{kinds, ErrorCode};
use ming_tests::{eventually, signal, Mingd};

const T: Duration = Duration::from_secs(10);

fn remember(texts: &[String]) -> Remember {
    Remember {
        memories: texts
            .iter()
            .map(|t| NewMemory::new(t.clone(), MemoryKind::Fact))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remember_recall_and_bad_input_over_the_bus() {
    let m = Mingd::start("");
    m.wait_ready(&["memory"], Duration::from_secs(30)).await;
    let c = &m.client;
    let r: Remembered = c
        .request(
            "memory",
            kinds::MEMORY_REMEMBER,
            &remember(&[
                "My bike lock code is 4471.".into(),
                "Grandma's birthday is on June 3rd.".into(),
            ]),
            T,
        )
        .await
        .unwrap();
    assert_eq!(r.outcomes.len(), 2);
    let got: Recalled = c
        .request(
            "memory",
            kinds::MEMORY_RECALL,
            &Recall {
                query: "when was my grandmother born".into(),
                k: 1,
                filter: Default::default(),
                min_score: None,
            },
            T,
        )
        .await
        .unwrap();
    assert_eq!(
        got.hits[0].memory.text,
        "Grandma's birthday is on June 3rd."
    );

    // A misspelt filter field is refused, not ignored (it would match everything).
    #[derive(serde::Serialize)]
    struct Odd {
        query: String,
        filter: std::collections::BTreeMap<String, String>,
    }
    let odd = Odd {
        query: "bike".into(),
        filter: [("colour".to_string(), "red".to_string())].into(),
    };
    let e = c
        .request::<_, Recalled>("memory", kinds::MEMORY_RECALL, &odd, T)
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    assert!(e.to_string().contains("colour"), "{e}");
    // Oversized text: TooLarge with the fix; empty text and k out of range: BadRequest.
    let e = c
        .request::<_, Remembered>(
            "memory",
            kinds::MEMORY_REMEMBER,
            &remember(&["x".repeat(5000)]),
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::TooLarge, "{e}");
    let e = c
        .request::<_, Remembered>(
            "memory",
            kinds::MEMORY_REMEMBER,
            &remember(&[" ".into()]),
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    let e = c
        .request::<_, Recalled>(
            "memory",
            kinds::MEMORY_RECALL,
            &Recall {
                query: "bike".into(),
                k: 5000,
                filter: Default::default(),
                min_score: None,
            },
            T,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    let s: MemoryStats = c
        .request(
            "memory",
            kinds::MEMORY_STATS,
            &ming_schemas::control::Empty {},
            T,
        )
        .await
        .unwrap();
    assert_eq!(s.memories, 2, "{s:?}");

    // The CLI: add, search (a table), export → forget all → import → the same memories.
    let (code, out) = m.ming(&[
        "memory",
        "add",
        "The recycling goes out on Wednesdays.",
        "--tag",
        "home",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = m.ming(&[
        "memory",
        "search",
        "which day is recycling collected",
        "-k",
        "1",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("The recycling goes out on Wednesdays."),
        "{out}"
    );
    let file = m.log_dir().join("export.jsonl");
    let f = file.to_str().unwrap();
    let (code, out) = m.ming(&["memory", "export", f]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);
    let (code, out) = m.ming(&["memory", "forget", "--all"]);
    assert!(code == 0 && out.contains("forgot 3"), "{out}");
    let (code, out) = m.ming(&["memory", "import", f]);
    assert!(code == 0 && out.contains("imported 3"), "{out}");
    let (code, out) = m.ming(&["memory", "stats"]);
    assert!(code == 0 && out.contains("memories   3"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_acknowledged_memory() {
    // Every write a new memory (the notes are alike; dedup would fold them).
    let m = Mingd::start("[memory]\ndedup_threshold = 1.0\n");
    let row = m.wait_ready(&["memory"], Duration::from_secs(30)).await;
    let first_pid = row[0].pid.unwrap();
    let acked: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let c = m.client.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let texts: Vec<String> = (0..4)
                    .map(|i| {
                        format!(
                            "writer {w} note {n}-{i}: the meeting room code is {}",
                            n * 10 + i
                        )
                    })
                    .collect();
                n += 1;
                // Errors are expected while the service is down; only acks count.
                if let Ok(r) = c
                    .request::<_, Remembered>(
                        "memory",
                        kinds::MEMORY_REMEMBER,
                        &remember(&texts),
                        Duration::from_secs(3),
                    )
                    .await
                {
                    let mut a = acked.lock().unwrap();
                    a.extend(r.outcomes.into_iter().map(|o| o.id));
                }
            }
        }));
    }
    // Let some writes land, kill it in the middle of the burst, let writes resume.
    eventually(T, "a few acknowledged writes", || async {
        (acked.lock().unwrap().len() >= 24).then_some(())
    })
    .await;
    signal(first_pid, libc::SIGKILL);
    eventually(Duration::from_secs(20), "memory to come back", || async {
        let r = m.row("memory").await?;
        (r.state == ServiceState::Ready && r.pid.is_some_and(|p| p != first_pid)).then_some(())
    })
    .await;
    let before_resume = acked.lock().unwrap().len();
    eventually(T, "writes to resume after the restart", || async {
        (acked.lock().unwrap().len() >= before_resume + 12).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    let ids: Vec<String> = acked.lock().unwrap().iter().cloned().collect();
    for chunk in ids.chunks(200) {
        let got: Memories = m
            .client
            .request(
                "memory",
                kinds::MEMORY_GET,
                &MemoryIds {
                    ids: chunk.to_vec(),
                },
                T,
            )
            .await
            .unwrap_or_else(|e| panic!("acknowledged memories lost after kill -9: {e}"));
        assert_eq!(got.memories.len(), chunk.len());
    }
    assert!(ids.len() >= 36, "{}", ids.len());
}
