//! Peers on the bus sockets are limited to the same user: the runtime dir is 0700, and behind
//! that the broker's socket refuses other users' connections (ZMQ_IPC_FILTER_UID). This test
//! opens the directory and socket to everyone on purpose and shows the filter alone still keeps
//! another user out, while the owner gets through. Switching users needs root (as in CI).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use ming_tests::Mingd;

const PING: &str = r#"
import sys, os, time, random, msgpack, zmq
s = zmq.Context.instance().socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.connect("ipc://" + sys.argv[1])
i = random.getrandbits(63) + 1
env = {"version": {"major": 1, "minor": 0}, "id": i, "trace": i, "sender": "other-user",
       "target": "agent", "deadline_ms": int(time.time() * 1000) + 1500, "flow": "request",
       "kind": "control.ping", "body": msgpack.packb({})}
s.send(msgpack.packb(env, use_bin_type=True))
print("answered" if s.poll(1500) else "no answer")
"#;

fn ping_as(uid: Option<u32>, socket: &std::path::Path) -> String {
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg("/usr/bin/python3");
            c
        }
        None => Command::new("/usr/bin/python3"),
    };
    let out = cmd
        .arg("-c")
        .arg(PING)
        .arg(socket)
        .output()
        .expect("run python3");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_users_cannot_use_the_bus() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: switching to another user needs root (CI runs as root)");
        return;
    }
    let m = Mingd::start("");
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let run = m.dir.path().join("run");
    assert_eq!(
        std::fs::metadata(&run).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // Open everything up, so that only the socket filter stands in the way.
    for dir in [m.dir.path(), run.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let socket = run.join("bus.sock");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let owner = ping_as(None, &socket);
    assert_eq!(owner.trim(), "answered", "{owner}");
    let other = ping_as(Some(65534), &socket);
    assert_eq!(
        other.trim(),
        "no answer",
        "another user reached the bus: {other}"
    );
}
