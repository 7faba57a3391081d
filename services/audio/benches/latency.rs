//! Voice in, measured (`cargo bench -p ming-audio --bench latency`, part of `just bench`).
//!
//! The audio service runs in this process behind a real broker; commands synthesised by
//! espeak-ng are fed to its live input (`audio.feed`) in 20 ms pieces at real-time pace, as a
//! capture device delivers them, and the final transcripts are taken from the event bus.
//!
//! - **End of speech → final transcript on the bus**, p50 and p95, for each end-of-turn setting
//!   (silence hangover, and the shorter one for a transcript that reads as complete). The true
//!   end of speech is the last sample espeak-ng voiced, at the moment the piece holding it was
//!   delivered.
//! - **False cut-offs**: commands with a 350 ms pause in the middle ("Set a timer for … seven
//!   minutes"); a turn that ends in the pause is a cut-off.
//! - **Word error rate** of the same finals, the **real-time factor** of speech-to-text on the
//!   whole set read as fast as possible, and the process's **RSS**.
//!
//! `MING_BENCH_AUDIO_N` limits the commands per setting (default 16); `MING_BENCH_AUDIO_SETTINGS`
//! picks settings by index (e.g. `0,1`); `MING_BENCH_AUDIO_STAGES=1` prints each final's stages
//! relative to the true end of speech.

use std::time::{Duration, Instant};

use ming_bus::broker::BrokerHandle;
use ming_bus::events::EventSubscriber;
use ming_bus::{BusClient, BusConfig};
use ming_config::{Config, LoadOptions};
use ming_schemas::audio::{Feed, ListenState, Transcribe, Transcribed, Transcript};
use ming_schemas::kinds;

// The word error rate is scored as the tests score it.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{edit_distance, words};

const COMMANDS: &[&str] = &[
    "Set a timer for seven minutes.",
    "Remind me to call my sister tomorrow at noon.",
    "What time is it?",
    "Add milk and eggs to my shopping list.",
    "What is on my calendar tomorrow?",
    "Take a note that the meeting moved to Friday.",
    "Stop the music.",
    "Turn the volume down.",
    "Cancel my timer.",
    "What's the weather like today?",
    "Remember that my car is parked on level three.",
    "How long until my next meeting?",
    "Read my latest email.",
    "Schedule lunch with Sam on Thursday.",
    "Start a timer for twenty minutes.",
    "Do I have anything planned this weekend?",
    "Play some quiet music.",
    "Open the shopping list.",
    "Pause the timer.",
    "How many minutes are left on the timer?",
];

const GAPPED: &[(&str, &str)] = &[
    ("Set a timer for", "seven minutes."),
    ("Remind me to call", "my sister tomorrow."),
    ("Add eggs and", "milk to my list."),
    ("What is on my calendar", "for Friday?"),
];

const VOICES: &[(&str, u32)] = &[
    ("en-us", 175),
    ("en-us+m3", 165),
    ("en-us", 150),
    ("en-us+m1", 165),
];

fn speech(text: &str, voice: &str, wpm: u32) -> (u32, Vec<f32>) {
    ming_audio::tts::synthesize("espeak-ng", voice, wpm, text).expect("espeak-ng")
}

fn last_voiced(s: &[f32]) -> usize {
    s.iter()
        .rposition(|x| x.abs() > 0.003)
        .map_or(s.len(), |i| i + 1)
}

fn to_i16(s: &[f32]) -> Vec<u8> {
    s.iter()
        .flat_map(|x| ming_audio::wav::to_i16(*x).to_le_bytes())
        .collect()
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Setting {
    model: &'static str,
    margin: u32,
    hangover_ms: u32,
    early_ms: u32,
    /// `audio.early_decode_ms`: the decode starts after this much quiet sound (0: at Silero's
    /// pause).
    early_decode_ms: u32,
}

impl Setting {
    fn name(&self) -> String {
        format!(
            "{}-m{}-h{}-e{}-d{}",
            self.model, self.margin, self.hangover_ms, self.early_ms, self.early_decode_ms
        )
    }
}

/// Feeds `audio` in real time and collects the final transcripts (with their arrival times)
/// until 2 s after the last piece went in; returns (when each piece went in, the finals).
async fn feed_and_collect(
    client: &BusClient,
    events: &mut EventSubscriber,
    rate: u32,
    audio: Vec<f32>,
) -> (Vec<Instant>, Vec<(Instant, Transcript)>) {
    let mut feeding = tokio::spawn(feed(client.clone(), rate, audio));
    let mut sent = None;
    let mut finals = Vec::new();
    let far = tokio::time::Instant::now() + Duration::from_secs(3600);
    let mut until = far;
    loop {
        tokio::select! {
            r = &mut feeding, if sent.is_none() => {
                sent = Some(r.expect("feeder"));
                until = tokio::time::Instant::now() + Duration::from_secs(2);
            }
            ev = events.next() => {
                let got = Instant::now();
                if let Ok(t) = ev.expect("events").body::<Transcript>() {
                    finals.push((got, t));
                }
            }
            _ = tokio::time::sleep_until(until), if until != far => break,
        }
    }
    (sent.unwrap_or_default(), finals)
}

/// Starts broker + audio service for one setting; returns its bus.
fn start(rt: &tokio::runtime::Runtime, dir: &std::path::Path, s: &Setting) -> BusConfig {
    let run = dir.join(format!("run-{}", s.name()));
    std::fs::create_dir_all(&run).unwrap();
    let file = dir.join(format!("cfg-{}.toml", s.name()));
    std::fs::write(
        &file,
        format!(
            "[paths]\nruntime_dir = \"{}\"\n[audio]\ninput = \"bus\"\noutput = \"none\"\nmode = \"wake\"\nstt_model = \"{}\"\nstt_ctx_margin = {}\nhangover_ms = {}\nearly_hangover_ms = {}\nearly_decode_ms = {}\n",
            run.display(),
            s.model,
            s.margin,
            s.hangover_ms,
            s.early_ms,
            s.early_decode_ms
        ),
    )
    .unwrap();
    let cfg = Config::load(&LoadOptions {
        file: Some(file),
        skip_system_and_user: true,
    })
    .expect("config");
    let bus = BusConfig::from_config(&cfg);
    let broker = BrokerHandle::start(&bus, ["audio".to_string()], None).expect("broker");
    std::mem::forget(broker); // lives for the bench
    rt.spawn(async move {
        if let Err(e) = ming_audio::run(cfg, std::future::pending()).await {
            eprintln!("audio service: {e}");
        }
    });
    bus
}

async fn feed(client: BusClient, rate: u32, samples: Vec<f32>) -> Vec<Instant> {
    let step = rate as usize / 50;
    let start = Instant::now();
    let mut sent = Vec::new();
    for (i, chunk) in samples.chunks(step).enumerate() {
        let due = start + Duration::from_millis(20 * (i as u64 + 1));
        tokio::time::sleep_until(due.into()).await;
        let _: ListenState = client
            .request(
                "audio",
                kinds::AUDIO_FEED,
                &Feed {
                    pcm: serde_bytes::ByteBuf::from(to_i16(chunk)),
                    rate,
                },
                Duration::from_secs(5),
            )
            .await
            .expect("feed");
        sent.push(Instant::now());
    }
    sent
}

fn main() {
    let n: usize = std::env::var("MING_BENCH_AUDIO_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
        .min(COMMANDS.len());
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let clips: Vec<(String, u32, Vec<f32>)> = COMMANDS[..n]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (v, w) = VOICES[i % VOICES.len()];
            let (rate, s) = speech(t, v, w);
            (t.to_string(), rate, s)
        })
        .collect();
    let gapped: Vec<(String, u32, Vec<f32>)> = GAPPED
        .iter()
        .map(|(a, b)| {
            let (rate, mut s) = speech(a, "en-us", 175);
            s.truncate(last_voiced(&s));
            s.extend(std::iter::repeat_n(0.0, rate as usize * 350 / 1000));
            let (_, t) = speech(b, "en-us", 175);
            let lead = t.iter().position(|x| x.abs() > 0.003).unwrap_or(0);
            s.extend_from_slice(&t[lead..]);
            (format!("{a} … {b}"), rate, s)
        })
        .collect();
    println!(
        "audio bench: {n} commands fed in real time per setting, {} with a 350 ms pause",
        gapped.len()
    );
    let only = std::env::var("MING_BENCH_AUDIO_SETTINGS").unwrap_or_default();
    let setting = |model, margin, hangover_ms, early_ms, early_decode_ms| Setting {
        model,
        margin,
        hangover_ms,
        early_ms,
        early_decode_ms,
    };
    let all = [
        // The defaults: tiny.en's 8-bit weights, 96 frames of margin.
        setting("whisper-tiny.en-q8", 96, 200, 96, 48),
        setting("whisper-tiny.en-q8", 96, 200, 200, 48),
        setting("whisper-tiny.en-q8", 96, 150, 64, 48),
        setting("whisper-tiny.en-q8", 96, 300, 96, 48),
        // The defaults, with the decode started at Silero's pause (as before early_decode_ms).
        setting("whisper-tiny.en-q8", 96, 200, 96, 0),
        // The f16 weights with the margin they had as the default (until 2026-12-06).
        setting("whisper-tiny.en", 128, 200, 96, 48),
        // The larger model, f16 and 8-bit, with the margin its test uses (256 frames).
        setting("whisper-base", 256, 200, 96, 48),
        setting("whisper-base-q8", 256, 200, 96, 48),
        // The defaults, with the early decode after 32 ms of quiet sound instead of 48.
        setting("whisper-tiny.en-q8", 96, 200, 96, 32),
    ];
    let settings: Vec<&Setting> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| only.is_empty() || only.split(',').any(|k| k == i.to_string()))
        .map(|(_, s)| s)
        .collect();
    let mut rss_one = 0.0;
    for (k, s) in settings.iter().enumerate() {
        let bus = start(&rt, dir.path(), s);
        rt.block_on(async {
            let client = BusClient::connect(&bus, "bench").unwrap();
            let mut events = EventSubscriber::connect(&bus, &[kinds::EVENT_TRANSCRIPT]).unwrap();
            // Ready when it answers.
            for _ in 0..600 {
                let r: Result<ListenState, _> = client
                    .request("audio", kinds::AUDIO_LISTEN, &ming_schemas::audio::Listen { action: "status".into() }, Duration::from_millis(500))
                    .await;
                if r.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let mut lat = Vec::new();
            let (mut errs, mut total) = (0, 0);
            let mut reasons = std::collections::BTreeMap::<String, usize>::new();
            for (text, rate, s) in &clips {
                let mut audio = vec![0.0; *rate as usize * 3 / 10];
                let end = audio.len() + last_voiced(s);
                audio.extend_from_slice(s);
                audio.extend(std::iter::repeat_n(0.0, *rate as usize));
                let step = *rate as usize / 50;
                let (sent, finals) = feed_and_collect(&client, &mut events, *rate, audio).await;
                // The piece holding the last voiced sample, and where in it that sample lies.
                let piece = (end - 1) / step;
                let after = ((piece + 1) * step - end) as f64 / f64::from(*rate);
                let true_end = sent[piece.min(sent.len() - 1)] - Duration::from_secs_f64(after);
                let text_got = finals.iter().map(|(_, t)| t.text.as_str()).collect::<Vec<_>>().join(" ");
                errs += edit_distance(&words(text), &words(&text_got));
                total += words(text).len();
                if std::env::var_os("MING_BENCH_AUDIO_STAGES").is_some() {
                    // Stage times relative to the true end of speech.
                    let now_i = Instant::now();
                    let now_m = ming_audio::mono_ms();
                    let end_m = now_m - now_i.duration_since(true_end).as_secs_f64() * 1e3;
                    for (_, t) in &finals {
                        let st: Vec<String> = t.stages.iter().map(|s| format!("{} {:+.0}", s.name, s.at_ms - end_m)).collect();
                        println!("    {:?}: {}", t.text, st.join(", "));
                    }
                }
                if let Some((at, t)) = finals.last() {
                    let ms = match at.checked_duration_since(true_end) {
                        Some(d) => d.as_secs_f64() * 1e3,
                        None => -(true_end.duration_since(*at).as_secs_f64() * 1e3),
                    };
                    lat.push(ms);
                    *reasons.entry(t.end_reason.clone()).or_default() += 1;
                }
            }
            let mut cut = 0;
            for (_, rate, s) in &gapped {
                let mut audio = vec![0.0; *rate as usize * 3 / 10];
                audio.extend_from_slice(s);
                audio.extend(std::iter::repeat_n(0.0, *rate as usize));
                let (_, finals) = feed_and_collect(&client, &mut events, *rate, audio).await;
                let turns = finals.iter().filter(|(_, t)| !t.text.is_empty()).count();
                if std::env::var_os("MING_BENCH_AUDIO_STAGES").is_some() {
                    let got: Vec<String> = finals.iter().map(|(_, t)| format!("{:?} ({})", t.text, t.end_reason)).collect();
                    println!("    with a pause: {}", got.join(" | "));
                }
                if turns > 1 {
                    cut += 1;
                }
            }
            println!(
                "{:<18} margin {:>3}, hangover {:>3} ms, early {:>3} ms, early decode {:>2} ms: end of speech → final transcript p50 {:>4.0} ms, p95 {:>4.0} ms ({} turns; ended by {:?}); WER {:.1}%; false cut-offs {}/{}",
                s.model,
                s.margin,
                s.hangover_ms,
                s.early_ms,
                s.early_decode_ms,
                pct(&lat, 0.5),
                pct(&lat, 0.95),
                lat.len(),
                reasons,
                100.0 * errs as f64 / total.max(1) as f64,
                cut,
                gapped.len()
            );
        });
        if k == 0 {
            rss_one = rss_mib();
        }
    }
    // Real-time factor: the whole set in one file, as fast as possible.
    let bus = BusConfig::from_config(
        &Config::load(&LoadOptions {
            file: Some(dir.path().join(format!("cfg-{}.toml", settings[0].name()))),
            skip_system_and_user: true,
        })
        .unwrap(),
    );
    rt.block_on(async {
        let client = BusClient::connect(&bus, "bench-rtf").unwrap();
        let rate = 16_000u32;
        let mut all = Vec::new();
        for (_, r, s) in &clips {
            let mut res = ming_audio::resample::Resampler::new(*r, rate);
            let mut o = Vec::new();
            res.push(s, &mut o);
            res.finish(&mut o);
            all.extend(std::iter::repeat_n(0.0, 8_000));
            all.extend_from_slice(&o);
        }
        all.extend(std::iter::repeat_n(0.0, 16_000));
        let r: Transcribed = client
            .request(
                "audio",
                kinds::AUDIO_TRANSCRIBE,
                &Transcribe {
                    pcm: Some(serde_bytes::ByteBuf::from(to_i16(&all))),
                    pcm_rate: Some(rate),
                    ..Default::default()
                },
                Duration::from_secs(300),
            )
            .await
            .expect("transcribe");
        println!(
            "speech-to-text real-time factor {:.3} ({:.1} s of audio, {:.1} s decoding, {} utterances, {:.1} s wall)",
            r.rtf,
            r.audio_ms / 1e3,
            r.stt_ms / 1e3,
            r.utterances.len(),
            r.elapsed_ms / 1e3
        );
    });
    println!("rss {rss_one:.0} MiB (this process with the broker and one audio service, after its first setting)");
}
