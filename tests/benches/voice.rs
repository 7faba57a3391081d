//! `just bench` — voice to first action, the headline figure: spoken commands synthesised with
//! espeak-ng (several voices and speeds), fed to the audio service's live input at real-time
//! pace (push-to-talk) with the whole system running under mingd, timed from the true end of
//! speech to `agent.action_started`. The same corpus typed (message in → action). Both without a
//! router and with the seed-trained personal router, side by side; the share of each tier,
//! action accuracy (right tool and arguments), and the RSS of all services.
//!
//! The figures are espeak-ng's. As a reference beside them, the same commands spoken by the
//! Piper voice (`piper.py` run once per command with the model dir's ONNX Runtime), with the
//! router: how the system does on speech closer to a person's than formant synthesis.
//!
//! Release binaries (`cargo build --release --workspace --bins`, done by `just bench`). Env:
//! `MING_BENCH_VOICE_N` (commands, default all), `MING_BENCH_VOICE_SKIP_ROUTER=1` (and with it
//! the Piper pass), `MING_BENCH_VOICE_SKIP_PIPER=1`, `MING_BENCH_KEEP=<dir>` (copy the
//! services' logs and the interaction log there at the end), `MING_BENCH_VOICE_AUDIO` (more
//! `[audio]` settings, e.g. `early_decode_ms = 0`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ming_bus::events::EventSubscriber;
use ming_schemas::agent::{ActionStarted, Message};
use ming_schemas::kinds;
use ming_schemas::training::{Train, Trained};
use ming_tests::{espeak_voice, read_wav, Mingd, SERVICES};

/// (spoken text, the tool that should act, a string its arguments must contain).
const CORPUS: [(&str, &str, &str); 54] = [
    ("Set a timer for seven minutes.", "set_timer", "420"),
    ("Start a ten minute timer.", "set_timer", "600"),
    (
        "Remind me in twenty minutes to check the oven.",
        "set_timer",
        "1200",
    ),
    ("Timer for five minutes.", "set_timer", "300"),
    ("Set a timer for one hour.", "set_timer", "3600"),
    ("Give me a shout in fifteen minutes.", "set_timer", "900"),
    ("Wake me up in half an hour.", "set_timer", "1800"),
    ("Count down ninety seconds.", "set_timer", "90"),
    ("Take a note: buy oat milk.", "add_note", "milk"),
    (
        "Note that the plumber comes on Thursday.",
        "add_note",
        "plumber",
    ),
    (
        "Write down that the car needs new brakes.",
        "add_note",
        "brakes",
    ),
    ("Jot down call the bank tomorrow.", "add_note", "bank"),
    ("List my notes.", "list_notes", ""),
    ("Show me my notes.", "list_notes", ""),
    ("Read back everything I noted.", "list_notes", ""),
    ("Search my notes for milk.", "search_notes", "milk"),
    ("Find my note about the plumber.", "search_notes", "plumber"),
    ("What time is it?", "clock", "time"),
    ("What's the date today?", "clock", "date"),
    ("What day is it?", "clock", "date"),
    ("Tell me the time.", "clock", "time"),
    ("What's on my calendar tomorrow?", "list_events", "tomorrow"),
    ("What do I have on Friday?", "list_events", "friday"),
    ("What's my schedule for Monday?", "list_events", "monday"),
    ("When am I free tomorrow?", "free_time", "tomorrow"),
    ("Find me a free hour on Friday.", "free_time", "friday"),
    (
        "Add lunch with Sara tomorrow at one pm.",
        "add_event",
        "tomorrow",
    ),
    (
        "Schedule a dentist appointment on Friday at nine.",
        "add_event",
        "friday",
    ),
    (
        "Search my mail for the flight confirmation.",
        "search_mail",
        "flight",
    ),
    ("Any emails from Anna?", "search_mail", "nna"),
    (
        "Find the document about the lease.",
        "search_documents",
        "lease",
    ),
    (
        "Search my files for the tax return.",
        "search_documents",
        "tax",
    ),
    (
        "Remember that my sister lives in Lyon.",
        "remember",
        "sister",
    ),
    ("Remember that I prefer tea over coffee.", "remember", "tea"),
    ("What do you know about my sister?", "recall", "sister"),
    (
        "Do you remember what I'm allergic to?",
        "recall",
        "allergic",
    ),
    ("Forget that I'm vegetarian.", "forget_memory", "vegetarian"),
    (
        "Ask the cloud to translate this letter into German.",
        "handoff",
        "German",
    ),
    (
        "Set a timer for three minutes for the eggs.",
        "set_timer",
        "180",
    ),
    ("Remind me in an hour to call mum.", "set_timer", "3600"),
    ("Start a countdown of two minutes.", "set_timer", "120"),
    (
        "Take a note: the spare key is under the blue pot.",
        "add_note",
        "key",
    ),
    ("Note down the dentist number.", "add_note", "dentist"),
    ("Show all the notes.", "list_notes", ""),
    ("What's the time now?", "clock", "time"),
    ("What's today's date?", "clock", "date"),
    ("Am I busy on Saturday?", "list_events", "saturday"),
    ("Look for messages from the bank.", "search_mail", "bank"),
    ("Find emails about the job offer.", "search_mail", "job"),
    (
        "Where's the file with the insurance policy?",
        "search_documents",
        "insurance",
    ),
    (
        "Keep in mind that I'm allergic to peanuts.",
        "remember",
        "peanuts",
    ),
    ("What did I tell you about my car?", "recall", "car"),
    ("Set a timer for twenty five minutes.", "set_timer", "1500"),
    (
        "Ping me in two hours about the laundry.",
        "set_timer",
        "7200",
    ),
];

const VOICES: [(&str, u32); 4] = [
    ("en-us", 175),
    ("en-gb", 160),
    ("en-us", 200),
    ("en-gb+f3", 180),
];

/// espeak-ng's samples (22,050 Hz mono 16-bit) for `text`, and the sample after the last voiced
/// one (the true end of speech).
fn speak(dir: &Path, i: usize, text: &str) -> (u32, Vec<i16>, usize) {
    let (voice, speed) = VOICES[i % VOICES.len()];
    let path = espeak_voice(dir, &format!("c{i}.wav"), text, voice, speed);
    with_end(&path)
}

/// The Piper voice's samples for `text` (the audio service's helper, run once), with the true
/// end of speech; `None` when the voice or its runtime is not installed (`just models`).
fn piper(dir: &Path, i: usize, text: &str) -> Option<(u32, Vec<i16>, usize)> {
    use std::io::Write;
    let models = ming_tests::model_dir();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../services/audio/src/piper.py"
    );
    let path = dir.join(format!("p{i}.wav"));
    let mut child = std::process::Command::new(models.join("onnxruntime/bin/python3"))
        .arg(script)
        .arg(models.join("en_US-joe-medium.onnx"))
        .arg(models.join("en_US-joe-medium.onnx.json"))
        .arg("1.0")
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(&path).ok()?)
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(text.as_bytes()).ok()?;
    child.wait().ok()?.success().then(|| with_end(&path))
}

/// A WAV's rate and samples, and the sample after the last voiced one.
fn with_end(path: &Path) -> (u32, Vec<i16>, usize) {
    let (rate, pcm) = read_wav(path);
    let end = pcm
        .iter()
        .rposition(|s| s.unsigned_abs() > 300)
        .map_or(0, |p| p + 1);
    (rate, pcm, end)
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Whether `a` is the action the command wants: its tool, with arguments that contain the
/// expected string.
fn is_right(want: (&str, &str, &str), a: &ActionStarted) -> bool {
    a.tool == want.1 && a.arguments.to_lowercase().contains(&want.2.to_lowercase())
}

#[derive(Default)]
struct Run {
    latency: Vec<f64>,
    to_transcript: Vec<f64>,
    transcript_to_action: Vec<f64>,
    /// How long whisper took for the decode that became each final transcript.
    decode: Vec<f64>,
    tiers: BTreeMap<String, usize>,
    /// Latency by tier.
    tier_ms: BTreeMap<String, Vec<f64>>,
    right: usize,
    missed: usize,
    n: usize,
}

impl Run {
    fn add(&mut self, want: (&str, &str, &str), got: Option<(&ActionStarted, f64)>) {
        self.n += 1;
        let Some((a, ms)) = got else {
            self.missed += 1;
            return;
        };
        self.latency.push(ms);
        let tier = format!("{:?}", a.tier).to_lowercase();
        self.tier_ms.entry(tier.clone()).or_default().push(ms);
        *self.tiers.entry(tier).or_default() += 1;
        if is_right(want, a) {
            self.right += 1;
        }
    }

    fn print(&self, name: &str) {
        let tiers: Vec<String> = self
            .tiers
            .iter()
            .map(|(t, n)| format!("{t} {:.0}%", 100.0 * *n as f64 / self.n as f64))
            .collect();
        println!(
            "{name:<28} p50 {:>7.1} ms  p95 {:>7.1} ms  accuracy {:>5.1}%  no action {}  tiers: {}",
            pct(&self.latency, 0.5),
            pct(&self.latency, 0.95),
            100.0 * self.right as f64 / self.n.max(1) as f64,
            self.missed,
            tiers.join(", ")
        );
        let by_tier: Vec<String> = self
            .tier_ms
            .iter()
            .map(|(t, v)| format!("{t} {:.0}/{:.0}", pct(v, 0.5), pct(v, 0.95)))
            .collect();
        println!("{:<28} p50/p95 ms by tier: {}", "", by_tier.join(", "));
        if !self.to_transcript.is_empty() {
            println!(
                "{:<28} end of speech → final transcript p50 {:.1} ms (its decode p50 {:.1} p95 {:.1} ms); transcript → action started p50 {:.1} ms",
                "",
                pct(&self.to_transcript, 0.5),
                pct(&self.decode, 0.5),
                pct(&self.decode, 0.95),
                pct(&self.transcript_to_action, 0.5)
            );
        }
    }
}

/// What the events of one voice turn showed: the first action and the final transcript, each
/// with when it arrived.
#[derive(Default)]
struct Seen {
    action: Option<(ActionStarted, Instant)>,
    /// Text, confidence, arrival, decode time (ms).
    transcript: Option<(String, f32, Instant, f64)>,
}

impl Seen {
    /// Takes the events that arrive until `until`, and once the action is in, its turn's
    /// transcript: the two come on separate subscriptions, so the transcript's event may be
    /// read after the action's (left unread, it was taken for the next turn's).
    async fn watch(
        &mut self,
        until: Instant,
        actions: &mut EventSubscriber,
        transcripts: &mut EventSubscriber,
    ) {
        loop {
            let deadline = match &self.action {
                None => until,
                Some(_) if self.transcript.is_some() => return,
                Some((_, at)) => *at + TRANSCRIPT_AFTER_ACTION,
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::select! {
                biased;
                e = transcripts.next() => if let Ok(e) = e {
                    if let Ok(t) = e.body::<ming_schemas::audio::Transcript>() {
                        self.transcript.get_or_insert((t.text, t.confidence, Instant::now(), t.decode_ms));
                    }
                },
                e = actions.next() => if let Ok(e) = e {
                    if let Ok(a) = e.body::<ActionStarted>() {
                        self.action.get_or_insert((a, Instant::now()));
                    }
                },
                () = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

/// How long a turn's transcript event may come after its action's.
const TRANSCRIPT_AFTER_ACTION: Duration = Duration::from_secs(1);

/// One spoken command: (action started, ms from the true end of speech), the split at the final
/// transcript, and what was heard (text, confidence, decode ms).
async fn voice_turn(
    m: &Mingd,
    rate: u32,
    pcm: &[i16],
    end: usize,
    actions: &mut EventSubscriber,
    transcripts: &mut EventSubscriber,
) -> (Option<(ActionStarted, f64, Option<f64>)>, String, f32, f64) {
    m.listen("start").await;
    let pre = rate as usize / 5;
    let mut turn = vec![0i16; pre];
    turn.extend_from_slice(pcm);
    turn.extend(std::iter::repeat_n(0, rate as usize * 2));
    let eos_offset = Duration::from_secs_f64((pre + end) as f64 / f64::from(rate));
    let step = rate as usize / 50;
    let start = Instant::now();
    let eos = start + eos_offset;
    let mut seen = Seen::default();
    for (i, chunk) in turn.chunks(step).enumerate() {
        let _ = ming_tests::voice::feed(m, rate, chunk).await;
        // Watch the events while pacing the audio.
        let due = start + Duration::from_millis(20 * (i as u64 + 1));
        seen.watch(due, actions, transcripts).await;
        if seen.action.is_some() {
            break;
        }
    }
    // The LLM tier can take seconds.
    seen.watch(
        Instant::now() + Duration::from_secs(30),
        actions,
        transcripts,
    )
    .await;
    let ms = |t: Instant| {
        if t >= eos {
            t.duration_since(eos).as_secs_f64() * 1e3
        } else {
            -(eos.duration_since(t).as_secs_f64() * 1e3)
        }
    };
    let (heard, confidence, decode) = seen
        .transcript
        .as_ref()
        .map_or((String::new(), 0.0, f64::NAN), |(t, c, _, d)| {
            (t.clone(), *c, *d)
        });
    let got = seen.action.map(|(a, at)| {
        (
            a,
            ms(at),
            seen.transcript.as_ref().map(|(_, _, t, _)| ms(*t)),
        )
    });
    (got, heard, confidence, decode)
}

async fn typed(
    m: &Mingd,
    text: &str,
    actions: &mut EventSubscriber,
) -> Option<(ActionStarted, f64)> {
    let msg = Message {
        text: text.into(),
        session: None,
        confirm: false,
        tool: None,
        arguments: None,
        voice: None,
        skip_llm: false,
        skip_router: false,
    };
    let start = Instant::now();
    let req = m.client.request::<_, ming_schemas::agent::Reply>(
        "agent",
        kinds::AGENT_MESSAGE,
        &msg,
        Duration::from_secs(30),
    );
    let mut req = std::pin::pin!(req);
    let mut got = None;
    loop {
        tokio::select! {
            e = actions.next() => if let Ok(e) = e {
                if let Ok(a) = e.body::<ActionStarted>() {
                    got.get_or_insert((a, start.elapsed().as_secs_f64() * 1e3));
                }
            },
            _ = &mut req => break,
        }
    }
    // The event may trail the reply by a moment.
    if got.is_none() {
        if let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), actions.next()).await {
            if let Ok(a) = e.body::<ActionStarted>() {
                got = Some((a, start.elapsed().as_secs_f64() * 1e3));
            }
        }
    }
    got
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

/// One command ready to feed: index, (text, tool, argument), rate, samples, end of speech.
type Spoken = (
    usize,
    (&'static str, &'static str, &'static str),
    u32,
    Vec<i16>,
    usize,
);

async fn pass(m: &Mingd, name: &str, corpus: &[Spoken]) {
    let mut actions =
        EventSubscriber::connect(&m.bus, &[kinds::EVENT_ACTION_STARTED]).expect("events");
    let mut transcripts =
        EventSubscriber::connect(&m.bus, &[kinds::EVENT_TRANSCRIPT]).expect("events");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut voice = Run::default();
    let mut misses = Vec::new();
    // The transcript's confidence for commands that ended in the right action, and the rest.
    let (mut sure_right, mut sure_wrong) = (Vec::new(), Vec::new());
    // Each acted turn's latency, for the slowest few (the p95 is the third or fourth of them).
    let mut slow: Vec<(f64, String)> = Vec::new();
    for (i, want, rate, pcm, end) in corpus {
        let (got, heard, confidence, decode) =
            voice_turn(m, *rate, pcm, *end, &mut actions, &mut transcripts).await;
        if decode.is_finite() {
            voice.decode.push(decode);
        }
        if got.as_ref().is_some_and(|(a, _, _)| is_right(*want, a)) {
            sure_right.push(f64::from(confidence));
        } else {
            sure_wrong.push(f64::from(confidence));
        }
        if let Some((a, ms, t)) = &got {
            slow.push((
                *ms,
                format!(
                    "#{i} {ms:.0} ms: heard {heard:?} → {} ({:?})",
                    a.tool, a.tier
                ),
            ));
            if let Some(t) = t {
                voice.to_transcript.push(*t);
                voice.transcript_to_action.push(ms - t);
            }
            if !is_right(*want, a) {
                misses.push(format!(
                    "#{i} {:?} heard {heard:?} (confidence {confidence:.2}) → {} {} ({:?})",
                    want.0, a.tool, a.arguments, a.tier
                ));
            }
        } else {
            misses.push(format!(
                "#{i} {:?} heard {heard:?} (confidence {confidence:.2}) → no action",
                want.0
            ));
        }
        voice.add(*want, got.as_ref().map(|(a, ms, _)| (a, *ms)));
        // Let the turn's reply and follow-up settle before the next command.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(5), actions.next()).await {
        }
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(5), transcripts.next()).await
        {}
    }
    let mut typed_run = Run::default();
    for (_, want, _, _, _) in corpus {
        let got = typed(m, want.0, &mut actions).await;
        typed_run.add(*want, got.as_ref().map(|(a, ms)| (a, *ms)));
    }
    voice.print(&format!("voice, {name}"));
    typed_run.print(&format!("typed, {name}"));
    println!(
        "{:<28} transcript confidence p10/p50: right actions {:.2}/{:.2}, the rest {:.2}/{:.2}",
        "",
        pct(&sure_right, 0.1),
        pct(&sure_right, 0.5),
        pct(&sure_wrong, 0.1),
        pct(&sure_wrong, 0.5)
    );
    slow.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, s) in slow.iter().take(4) {
        println!("    slowest: {s}");
    }
    for miss in misses {
        println!("    miss: {miss}");
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The product's own chat model and context (the tests use a smaller one).
    // `MING_BENCH_VOICE_AUDIO`: more `[audio]` settings, one `key = value` per line, to compare
    // (the services do not see MING_* variables: each test's mingd has its own config).
    let extra = std::env::var("MING_BENCH_VOICE_AUDIO").unwrap_or_default();
    // The user's mailbox, which the corpus's mail searches look in (the bank, the job offer,
    // Anna, the flight): a search that finds nothing is heard again in its words.
    let files = tempfile::tempdir().expect("temp dir");
    let mail = ming_tests::write_maildir(files.path());
    let m = Mingd::start(&format!(
        "[audio]\ninput = \"bus\"\noutput = \"none\"\n{extra}\n[inference]\nmodel = \"qwen2.5-coder-0.5b-instruct\"\ncontext_tokens = 4096\n[agent]\nmail = \"{}\"\n",
        mail.display()
    ));
    m.wait_ready(&SERVICES, Duration::from_secs(120)).await;
    // Steady state, as after any start but a fresh install's first: the agent computes the
    // beginning every LLM prompt shares at start (~820 tokens; instant from inference's saved
    // prompt cache, which this fresh data dir lacks). Timed from here, the first commands
    // would be decoded while that holds both cores.
    let t = Instant::now();
    m.wait_log_line(
        "agent",
        &["the LLM prompt's beginning is computed"],
        Duration::from_secs(120),
    )
    .await;
    println!(
        "(the LLM prompt's beginning was computed {:.1} s after the services were ready)",
        t.elapsed().as_secs_f64()
    );
    let n = std::env::var("MING_BENCH_VOICE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CORPUS.len())
        .min(CORPUS.len());
    let dir = m.dir.path().join("voice");
    std::fs::create_dir_all(&dir).expect("dir");
    let corpus: Vec<_> = CORPUS[..n]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (rate, pcm, end) = speak(&dir, i, c.0);
            (i, *c, rate, pcm, end)
        })
        .collect();
    println!(
        "voice to first action: {n} spoken commands ({} voices/speeds), real-time push-to-talk through mingd; latency from the true end of speech to agent.action_started",
        VOICES.len()
    );
    pass(&m, "no router", &corpus).await;
    if std::env::var_os("MING_BENCH_VOICE_SKIP_ROUTER").is_none() {
        let t: Trained = m
            .client
            .request(
                "training",
                kinds::TRAINING_TRAIN,
                &Train {
                    job: "router".into(),
                    seed_only: true,
                    ..Default::default()
                },
                Duration::from_secs(600),
            )
            .await
            .expect("train the router");
        println!(
            "router v{} (seed set): held-out accuracy {:.1}%, ECE {:.3}, trained in {:.1} s; agent loaded: {}",
            t.model.version,
            t.candidate.accuracy * 100.0,
            t.candidate.ece,
            t.model.provenance.train_ms as f64 / 1e3,
            t.agent_loaded
        );
        pass(&m, "seed-trained router", &corpus).await;
        if std::env::var_os("MING_BENCH_VOICE_SKIP_PIPER").is_none() {
            let spoken: Option<Vec<Spoken>> = CORPUS[..n]
                .iter()
                .enumerate()
                .map(|(i, c)| piper(&dir, i, c.0).map(|(rate, pcm, end)| (i, *c, rate, pcm, end)))
                .collect();
            match spoken {
                Some(spoken) => {
                    println!("reference: the same commands in the Piper voice (en_US joe), with the router");
                    pass(&m, "Piper voice, router", &spoken).await;
                }
                None => println!(
                    "the Piper voice is not installed (`just models`): its pass is skipped"
                ),
            }
        }
    }
    let st = m.status().await.expect("status");
    let mut total = 0.0;
    let mut parts = Vec::new();
    for r in &st.services {
        if let Some(pid) = r.pid {
            let mib = rss_mib(pid);
            total += mib;
            parts.push(format!("{} {:.0}", r.name, mib));
        }
    }
    println!("RSS of all services: {total:.0} MiB ({})", parts.join(", "));
    // The services' logs (inference's "generation ended" lines say where an LLM turn's time
    // went) and the agent's interaction log, kept for a look afterwards.
    if let Some(keep) = std::env::var_os("MING_BENCH_KEEP") {
        let keep = std::path::PathBuf::from(keep);
        for (from, to) in [("logs", "logs"), ("data/agent", "agent")] {
            let (from, to) = (m.dir.path().join(from), keep.join(to));
            let _ = std::fs::create_dir_all(&to);
            for e in std::fs::read_dir(&from).into_iter().flatten().flatten() {
                if e.path().is_file() {
                    let _ = std::fs::copy(e.path(), to.join(e.file_name()));
                }
            }
        }
        println!("logs kept in {}", keep.display());
    }
}
