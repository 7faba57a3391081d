//! The network sandbox for services that must not reach the network.
//!
//! Applied by `mingd sandbox-exec`, a launcher the supervisor runs in place of each service: it
//! is a fresh single-threaded process (a user namespace cannot be entered from a multi-threaded
//! one, and a forked copy of the multi-threaded supervisor must not allocate), so it can take its
//! time, then `exec`s the real service with the sandbox in force. Two layers:
//! 1. an empty network namespace (`unshare(CLONE_NEWNET)`; with `CLONE_NEWUSER` when not root):
//!    only a loopback that is down, so every connect, 127.0.0.1 included, fails;
//! 2. Landlock (ABI ≥ 4): TCP bind and connect denied, in case the namespace was not available.
//!
//! Unix sockets (the ipc:// bus) work under both.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;

/// What was applied, as the `MING_SANDBOX` label the service reports (`netns+landlock`,
/// `netns`, `landlock`, `none`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxOutcome {
    pub netns: Result<(), String>,
    pub landlock: Result<(), String>,
}

impl SandboxOutcome {
    pub fn label(&self) -> &'static str {
        match (self.netns.is_ok(), self.landlock.is_ok()) {
            (true, true) => "netns+landlock",
            (true, false) => "netns",
            (false, true) => "landlock",
            (false, false) => "none",
        }
    }
}

/// Which layers to apply; both unless a test or a diagnosis asks for fewer (`None` stands in
/// for a kernel that offers neither, to exercise the refusal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    Both,
    NetnsOnly,
    LandlockOnly,
    None,
}

/// Puts the calling process into an empty network namespace and denies it TCP with Landlock.
/// Call only in a single-threaded process.
pub fn deny_network(layers: Layers) -> SandboxOutcome {
    let skipped = || Err("not requested".to_string());
    SandboxOutcome {
        netns: if matches!(layers, Layers::LandlockOnly | Layers::None) {
            skipped()
        } else {
            enter_empty_netns()
        },
        landlock: if matches!(layers, Layers::NetnsOnly | Layers::None) {
            skipped()
        } else {
            landlock_deny_tcp()
        },
    }
}

fn enter_empty_netns() -> Result<(), String> {
    // SAFETY: unshare has no memory-safety preconditions.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
        return Ok(());
    }
    let as_root = std::io::Error::last_os_error();
    // Not privileged: a user namespace gives us the right to make a network namespace.
    // SAFETY: as above; getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "unshare(CLONE_NEWNET): {as_root}; with a user namespace: {e}"
        ));
    }
    // Keep our own uid and gid inside the namespace.
    let write = |path: &str, text: String| {
        std::fs::write(path, text).map_err(|e| format!("write {path}: {e}"))
    };
    write("/proc/self/setgroups", "deny".into())?;
    write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    write("/proc/self/gid_map", format!("{gid} {gid} 1"))?;
    Ok(())
}

fn landlock_deny_tcp() -> Result<(), String> {
    use landlock::{AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetStatus};
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("landlock: {e}"))?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        RulesetStatus::PartiallyEnforced => {
            Err("landlock: only partially enforced (kernel ABI < 4 has no network rules)".into())
        }
        RulesetStatus::NotEnforced => Err("landlock: not supported by this kernel".into()),
    }
}

/// `mingd sandbox-exec`: applies the sandbox (when `deny_net`) and execs `argv`. Returns only on
/// failure, with the exit code to use (78, EX_CONFIG, when the sandbox is required and could not
/// be applied; 127 when the program cannot be executed).
pub fn sandbox_exec(
    deny_net: bool,
    layers: Layers,
    allow_unsandboxed: bool,
    argv: &[OsString],
) -> i32 {
    let Some((program, args)) = argv.split_first() else {
        eprintln!("mingd sandbox-exec: no command given");
        return 64;
    };
    let label = if deny_net {
        let outcome = deny_network(layers);
        if let Err(e) = &outcome.netns {
            eprintln!("mingd sandbox-exec: network namespace not applied: {e}");
        }
        if let Err(e) = &outcome.landlock {
            eprintln!("mingd sandbox-exec: Landlock not applied: {e}");
        }
        if outcome.label() == "none" {
            if !allow_unsandboxed {
                eprintln!(
                    "mingd sandbox-exec: REFUSING to start {}: no network sandbox could be applied and \
                     supervisor.allow_unsandboxed is false",
                    program.to_string_lossy()
                );
                return crate::supervise::EX_CONFIG;
            }
            eprintln!(
                "mingd sandbox-exec: WARNING: starting {} WITHOUT any network sandbox \
                 (supervisor.allow_unsandboxed = true)",
                program.to_string_lossy()
            );
        }
        outcome.label()
    } else {
        "network"
    };
    let err = std::process::Command::new(program)
        .args(args)
        .env("MING_SANDBOX", label)
        .exec();
    eprintln!(
        "mingd sandbox-exec: cannot execute {}: {err}",
        program.to_string_lossy()
    );
    127
}
