//! The Python client (pyzmq + msgpack), written from docs/wire-protocol.md alone, talks to a
//! live mingd: a request through the broker and its reply, and the typed errors.

use std::process::Command;
use std::time::Duration;

use ming_tests::Mingd;

fn python() -> String {
    // Debian's interpreter, where `just setup` installs python3-zmq and python3-msgpack.
    std::env::var("MING_PYTHON").unwrap_or_else(|_| "/usr/bin/python3".into())
}

fn client(m: &Mingd, args: &[&str]) -> (i32, String) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../clients/python/ming_client.py"
    );
    let out = Command::new(python())
        .arg(script)
        .arg("--runtime-dir")
        .arg(m.dir.path().join("run"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e} (run `just setup`)", python()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("ModuleNotFoundError"),
        "python3-zmq / python3-msgpack are missing (run `just setup`): {text}"
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_round_trip() {
    let m = Mingd::start("");
    let rows = m
        .wait_ready(&["agent", "memory"], Duration::from_secs(20))
        .await;
    let (code, out) = client(&m, &["ping", "agent"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"service\": \"agent\""), "{out}");
    assert!(
        out.contains(&format!("\"pid\": {}", rows[0].pid.unwrap())),
        "{out}"
    );
    // The supervisor's own status, a nested reply, decodes too.
    let (code, out) = client(&m, &["request", "supervisor", "supervisor.status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"name\": \"memory\"") && out.contains("\"state\": \"ready\""),
        "{out}"
    );
    // Typed errors.
    let (code, out) = client(&m, &["request", "nobody", "control.ping"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("ServiceUnavailable:"), "{out}");
    // A real service request from Python: recall over an empty memory.
    let (code, out) = client(
        &m,
        &["request", "memory", "memory.recall", "{\"query\": \"x\"}"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"hits\": []"), "{out}");
    let (code, out) = client(
        &m,
        &[
            "request",
            "memory",
            "memory.recall",
            "{\"query\": \"x\", \"k\": 0}",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("BadRequest:"), "{out}");
    let (code, out) = client(&m, &["request", "memory", "memory.nonsense"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("Unsupported:"), "{out}");
    let (code, out) = client(
        &m,
        &[
            "request",
            "supervisor",
            "supervisor.stop",
            "{\"service\": 5}",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("BadRequest:"), "{out}");
}
