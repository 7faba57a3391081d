//! Helpers for the cross-process tests: a real `mingd` with its services in a temporary runtime
//! dir, waited on for readiness (never a fixed sleep), killed when dropped.
//!
//! The binaries are the workspace's own, found next to the test executable's directory
//! (`target/<profile>/`); `just test` builds them first.

pub mod provider;
pub mod voice;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ming_bus::{BusClient, BusConfig};
use ming_schemas::control::{Empty, ServiceRow, ServiceState, SupervisorStatus};
use ming_schemas::kinds;

/// The built-in services.
pub const SERVICES: [&str; 6] = [
    "agent",
    "audio",
    "cloud-gateway",
    "inference",
    "memory",
    "training",
];

/// The directory holding the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// A workspace binary, checked to exist.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.is_file(), "{} is missing: build the workspace binaries first (`cargo build --workspace --bins`, done by `just test`)", p.display());
    p
}

/// Where `just models` put the verified models (`MING_PATHS__MODEL_DIR` or the default).
pub fn model_dir() -> PathBuf {
    let cfg = ming_config::Config::load(&ming_config::LoadOptions {
        file: None,
        skip_system_and_user: true,
    })
    .expect("default config");
    ming_config::Paths::resolve(&cfg.paths).model_dir
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// A running mingd in a temp dir.
pub struct Mingd {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub bus: BusConfig,
    pub client: BusClient,
}

impl Mingd {
    /// Test timings (fast heartbeats and backoff) with `extra` TOML merged over them.
    pub fn config_text(dir: &Path, extra: &str) -> String {
        let base = format!(
            r#"
[paths]
runtime_dir = "{run}"
log_dir = "{logs}"
data_dir = "{data}"
model_dir = "{models}"

[inference]
model = "smollm2-135m-instruct"
# The system prompt and the tools' schemas are ~1,000 tokens of SmolLM2's: room for a turn.
context_tokens = 2048
# Tests run two mingd at once on two cores: two local models on two threads each wait at
# ggml's spinning barriers for each other's descheduled threads (a summary of 118 tokens took
# a minute that way in CI, ~45x its pace alone). One thread each never waits.
threads = 1

[bus]
heartbeat_ms = 100

[supervisor]
drain_grace_ms = 1500
backoff_initial_ms = 50
backoff_max_ms = 400
bin_dir = "{bin}"
"#,
            run = dir.join("run").display(),
            logs = dir.join("logs").display(),
            data = dir.join("data").display(),
            models = model_dir().display(),
            bin = bin_dir().display(),
        );
        let mut base: toml::Table = base.parse().expect("base test config");
        let extra: toml::Table = extra.parse().expect("extra test config");
        merge(&mut base, extra);
        toml::to_string(&base).expect("serialize test config")
    }

    /// Starts mingd with the test config and `extra` TOML. Must run inside a tokio runtime.
    pub fn start(extra: &str) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), extra, &[])
    }

    /// As [`Mingd::start`], in `dir` (which the test may have prepared), with more environment
    /// for mingd and its services.
    pub fn start_in(dir: tempfile::TempDir, extra: &str, env: &[(&str, String)]) -> Self {
        let config = dir.path().join("ming.toml");
        std::fs::write(&config, Self::config_text(dir.path(), extra)).expect("write config");
        let out = std::fs::File::create(dir.path().join("mingd.out")).expect("mingd.out");
        let err = out.try_clone().expect("clone");
        let child = Self::command(&bin("mingd"), &config)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn mingd");
        let mut bus = BusConfig::in_dir(&dir.path().join("run"));
        bus.heartbeat = Duration::from_millis(100);
        let client = BusClient::connect(&bus, "test").expect("client");
        Self {
            dir,
            config,
            child: Some(child),
            bus,
            client,
        }
    }

    /// A command for a workspace binary with this test's isolated environment.
    pub fn command(program: &Path, config: &Path) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("MING_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--config")
            .arg(config)
            .env("MING_NO_USER_CONFIG", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// `ming <args>` against this mingd; returns (exit code, stdout + stderr).
    pub fn ming(&self, args: &[&str]) -> (i32, String) {
        let out = Self::command(&bin("ming"), &self.config)
            .args(args)
            .output()
            .expect("run ming");
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// The agent's interaction log from `since` (up to 100 entries).
    pub async fn interactions(&self, since: u64) -> ming_schemas::agent::InteractionsPage {
        self.client
            .request(
                "agent",
                kinds::AGENT_INTERACTIONS,
                &ming_schemas::agent::InteractionsRequest { since, limit: 100 },
                Duration::from_secs(2),
            )
            .await
            .unwrap_or_else(|e| panic!("agent.interactions: {e}"))
    }

    /// `audio.speak` of `text` in the background (it returns when the speech ends or is
    /// interrupted).
    pub fn speak_in_background(
        &self,
        text: &str,
    ) -> tokio::task::JoinHandle<Result<ming_schemas::audio::Spoken, ming_bus::BusError>> {
        let client = self.client.clone();
        let req = ming_schemas::audio::Speak {
            text: text.into(),
            ..Default::default()
        };
        tokio::spawn(async move {
            client
                .request("audio", kinds::AUDIO_SPEAK, &req, Duration::from_secs(60))
                .await
        })
    }

    /// `audio.listen` with `action` (`start`, `stop`, `status`): the live input's state.
    pub async fn listen(&self, action: &str) -> ming_schemas::audio::ListenState {
        self.client
            .request(
                "audio",
                kinds::AUDIO_LISTEN,
                &ming_schemas::audio::Listen {
                    action: action.into(),
                },
                Duration::from_secs(5),
            )
            .await
            .unwrap_or_else(|e| panic!("audio.listen {action}: {e}"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    /// Prints the last `lines` lines of mingd's output and of every service's log to stderr
    /// (a failed test shows what the processes said, in CI too).
    pub fn print_log_tails(&self, lines: usize) {
        let mut files = vec![self.dir.path().join("mingd.out")];
        if let Ok(dir) = std::fs::read_dir(self.log_dir()) {
            let mut logs: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
            logs.sort();
            files.extend(logs);
        }
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let tail = &all[all.len().saturating_sub(lines)..];
            eprintln!("---- the last {} lines of {} ----", tail.len(), f.display());
            for l in tail {
                eprintln!("{l}");
            }
        }
    }

    /// Waits until one line of `service`'s log holds every one of `needles`, and returns it;
    /// panics after `timeout` (a guard against a hang, not a speed check).
    pub async fn wait_log_line(
        &self,
        service: &str,
        needles: &[&str],
        timeout: Duration,
    ) -> String {
        let log = self.log_dir().join(format!("{service}.log"));
        let what = format!("a line with {needles:?} in {}", log.display());
        eventually(timeout, &what, || async {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .map(str::to_string)
        })
        .await
    }

    pub fn mingd_output(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mingd.out")).unwrap_or_default()
    }

    pub async fn status(&self) -> Option<SupervisorStatus> {
        self.client
            .request(
                "supervisor",
                kinds::SUPERVISOR_STATUS,
                &Empty {},
                Duration::from_millis(500),
            )
            .await
            .ok()
    }

    pub async fn row(&self, service: &str) -> Option<ServiceRow> {
        self.status()
            .await?
            .services
            .into_iter()
            .find(|r| r.name == service)
    }

    /// Waits until every named service is ready; returns their rows.
    pub async fn wait_ready(&self, services: &[&str], timeout: Duration) -> Vec<ServiceRow> {
        let what = format!(
            "{services:?} to be ready; mingd said:\n{}",
            self.mingd_output()
        );
        eventually(timeout, &what, || async {
            let st = self.status().await?;
            let rows: Vec<ServiceRow> = services
                .iter()
                .filter_map(|s| {
                    st.services
                        .iter()
                        .find(|r| r.name == *s && r.state == ServiceState::Ready)
                        .cloned()
                })
                .collect();
            (rows.len() == services.len()).then_some(rows)
        })
        .await
    }
}

impl Drop for Mingd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log_tails(40);
        }
        if let Some(mut child) = self.child.take() {
            // SIGKILL: the children die with it (PR_SET_PDEATHSIG).
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether process `pid` still exists (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we own; failure (already gone) is fine.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// espeak-ng's WAV (22,050 Hz mono, 16-bit) of `text` in `voice` at `speed` words per minute,
/// written to `dir/name`.
pub fn espeak_voice(dir: &Path, name: &str, text: &str, voice: &str, speed: u32) -> PathBuf {
    let path = dir.join(name);
    let ok = Command::new("espeak-ng")
        .args(["-v", voice, "-s", &speed.to_string(), "-w"])
        .arg(&path)
        .arg(text)
        .status()
        .expect("espeak-ng (just setup installs it)");
    assert!(ok.success(), "espeak-ng failed for {text:?}");
    path
}

/// A user's mailbox as a Maildir under `dir` (`Mail/{cur,new,tmp}`): twenty messages of an
/// ordinary month — a bank, a job offer, family, a flight, the dentist, the landlord, bills,
/// school — for the voice tests and bench to search. Returns the Maildir's path.
pub fn write_maildir(dir: &Path) -> PathBuf {
    const MAILS: [(&str, &str, &str); 20] = [
        (
            "Northwind Bank <alerts@northwindbank.example>",
            "Your November statement is ready",
            "Your statement for November is ready to view in online banking.",
        ),
        (
            "Northwind Bank <alerts@northwindbank.example>",
            "A new device signed in to your account",
            "If this was not you, call us on the number on your card.",
        ),
        (
            "Priya Raman <priya.raman@acmerobotics.example>",
            "Job offer: Senior Engineer at Acme Robotics",
            "We are delighted to offer you the position. The contract is attached.",
        ),
        (
            "Priya Raman <priya.raman@acmerobotics.example>",
            "Re: Start date and relocation",
            "A start on 4 January works for us.",
        ),
        (
            "Anna Moreau <anna.moreau@example.org>",
            "Sunday lunch?",
            "Shall we meet at noon at the usual place?",
        ),
        (
            "Anna Moreau <anna.moreau@example.org>",
            "Photos from Lyon",
            "Here are the photos from the weekend.",
        ),
        (
            "SkyWays <booking@skyways.example>",
            "Flight confirmation: London to Lyon on 18 December",
            "Booking reference QX7K2P. Check-in opens 24 hours before departure.",
        ),
        (
            "City Dental Care <reception@citydental.example>",
            "Appointment reminder",
            "Your check-up is on Friday at 9:00.",
        ),
        (
            "Greenfield Lettings <office@greenfieldlettings.example>",
            "Lease renewal for 14 Elm Road",
            "Please sign and return the renewal by the end of the month.",
        ),
        (
            "Tom Becker <tom@becker.example>",
            "Plumber's invoice",
            "The invoice for the boiler repair, 240 EUR.",
        ),
        (
            "Evergreen Energy <billing@evergreen-energy.example>",
            "Your electricity bill for November",
            "Amount due: 86.40 EUR, paid by direct debit on 12 December.",
        ),
        (
            "Oakwood Primary School <office@oakwood-school.example>",
            "Christmas concert on Thursday",
            "Doors open at 5 pm in the main hall.",
        ),
        (
            "Maria Lopez <maria.lopez@example.net>",
            "Book club: next title",
            "Next month we read The Remains of the Day.",
        ),
        (
            "GitHub <noreply@github.example>",
            "New issue: voice wake word",
            "A new issue was opened in mingllm.",
        ),
        (
            "Tax Office <notices@taxoffice.example>",
            "Your tax return is due by 31 January",
            "File online before the deadline to avoid a penalty.",
        ),
        (
            "Parcelwise <tracking@parcelwise.example>",
            "Your parcel is out for delivery",
            "Expected between 10:00 and 12:00 today.",
        ),
        (
            "Riverside Surgery <appointments@riverside-surgery.example>",
            "Blood test results",
            "Your results are normal; no follow-up is needed.",
        ),
        (
            "Mum <mum@family.example>",
            "Christmas plans",
            "Are you coming on the 24th or the 25th?",
        ),
        (
            "FitHub Gym <members@fithub.example>",
            "Your membership renews soon",
            "Your yearly membership renews on 1 January.",
        ),
        (
            "Harbor Insurance <service@harborinsurance.example>",
            "Your home insurance policy documents",
            "Your policy documents for the coming year are attached.",
        ),
    ];
    let md = dir.join("Mail");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).expect("Maildir");
    }
    for (i, (from, subject, body)) in MAILS.iter().enumerate() {
        let day = 1 + i % 28;
        std::fs::write(
            md.join("cur").join(format!("{:04}.mingtest:2,S", i + 1)),
            format!("From: {from}\nTo: me@example.org\nSubject: {subject}\nDate: {day} Nov 2026 09:00:00 +0000\n\n{body}\n"),
        )
        .expect("write a message");
    }
    md
}

/// The 16-bit samples and rate of a plain PCM WAV.
pub fn read_wav(path: &Path) -> (u32, Vec<i16>) {
    let b = std::fs::read(path).expect("read the WAV");
    let rate = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    let mut i = 12;
    while &b[i..i + 4] != b"data" {
        i += 8 + u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
    }
    let pcm = b[i + 8..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    (rate, pcm)
}

/// Words that differ between `said` and `heard` (word-level edit distance), compared
/// lower-case without punctuation: how far a transcript is from what was spoken.
pub fn word_errors(said: &str, heard: &str) -> usize {
    let words = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .map(|w| {
                w.trim_matches(|c: char| !c.is_alphanumeric())
                    .to_lowercase()
            })
            .collect()
    };
    let (a, b) = (words(said), words(heard));
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for x in &a {
        let mut diag = row[0];
        row[0] += 1;
        for (j, y) in b.iter().enumerate() {
            let next = (diag + usize::from(x != y))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
