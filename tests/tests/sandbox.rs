//! Only cloud-gateway has network: every other service runs in an empty network namespace with
//! Landlock denying TCP. Proved twice: a probe program under the very launcher the supervisor
//! uses cannot reach a listener on 127.0.0.1 (and can without it), and the running services'
//! network namespaces are checked in /proc.

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use ming_tests::{bin, Mingd, SERVICES};

fn probe(args: &[&str], addr: &str) -> (bool, String) {
    let out = Command::new(bin("mingd"))
        .arg("sandbox-exec")
        .args(args)
        .arg("--")
        .arg(bin("ming-netprobe"))
        .arg(addr)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_service_sandbox_blocks_loopback_tcp_and_the_gateway_policy_does_not() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (ok, out) = probe(&[], &addr);
    assert!(ok, "without the sandbox the probe must connect: {out}");
    assert!(out.contains("sandbox: network"), "{out}");
    let (ok, out) = probe(&["--deny-net"], &addr);
    assert!(!ok, "the sandboxed probe connected: {out}");
    assert!(out.contains("refused"), "{out}");
    // Both layers are in force on this kernel (root: netns; Landlock ABI ≥ 4).
    assert!(out.contains("sandbox: netns+landlock"), "{out}");
}

#[test]
fn each_layer_alone_blocks_loopback_tcp() {
    // Where no namespace can be made, Landlock alone must hold, and the other way round.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (ok, out) = probe(&["--deny-net", "--only", "landlock"], &addr);
    assert!(!ok, "Landlock alone let the probe connect: {out}");
    assert!(
        out.contains("Permission denied") && out.contains("sandbox: landlock"),
        "{out}"
    );
    let (ok, out) = probe(&["--deny-net", "--only", "netns"], &addr);
    assert!(!ok, "the namespace alone let the probe connect: {out}");
    assert!(
        out.contains("unreachable") && out.contains("sandbox: netns"),
        "{out}"
    );
    // A child of the sandboxed process inherits it.
    let out = Command::new(bin("mingd"))
        .args(["sandbox-exec", "--deny-net", "--", "sh", "-c"])
        .arg(format!("{} {addr}", bin("ming-netprobe").display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_services_are_isolated_except_cloud_gateway() {
    let m = Mingd::start("");
    let rows = m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    let my_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    for row in rows {
        let pid = row.pid.unwrap();
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        if row.name == "cloud-gateway" {
            assert_eq!(ns, my_ns, "cloud-gateway must share the host network");
            assert_eq!(row.sandbox, "network");
        } else {
            assert_ne!(ns, my_ns, "{} shares the host network namespace", row.name);
            assert_eq!(row.sandbox, "netns+landlock", "{}", row.name);
        }
    }
}
