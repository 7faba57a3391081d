//! The audio service as a real process under mingd, with speech synthesised by espeak-ng:
//! transcription over the bus and from the CLI, awkward files (wrong format, truncated, silence
//! only, ten minutes long) answered clearly while the service keeps serving, text-to-speech,
//! barge-in, a push-to-talk voice turn that reaches the agent's first action, and a deletion
//! confirmed by a spoken "yes".

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ming_bus::events::EventSubscriber;
use ming_schemas::audio::{Speak, Speaking, Spoken, Transcribe, Transcribed};
use ming_schemas::{kinds, ErrorCode};
use ming_tests::voice::{feed_realtime, heard_again_before_the_llm, spoken_turn};
use ming_tests::{read_wav, Mingd};

const CONFIG: &str = r#"
[audio]
input = "bus"
output = "none"
"#;

/// espeak-ng's WAV for `text` (22,050 Hz mono, 16-bit).
fn espeak(dir: &Path, name: &str, text: &str) -> PathBuf {
    ming_tests::espeak_voice(dir, name, text, "en-us", 175)
}

fn write_wav(path: &Path, rate: u32, pcm: &[i16]) {
    let data = (pcm.len() * 2) as u32;
    let mut v = Vec::new();
    v.extend_from_slice(b"RIFF");
    v.extend_from_slice(&(36 + data).to_le_bytes());
    v.extend_from_slice(b"WAVEfmt ");
    v.extend_from_slice(&16u32.to_le_bytes());
    for x in [1u16, 1] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&rate.to_le_bytes());
    v.extend_from_slice(&(rate * 2).to_le_bytes());
    for x in [2u16, 16] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(b"data");
    v.extend_from_slice(&data.to_le_bytes());
    for s in pcm {
        v.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, v).unwrap();
}

async fn transcribe(m: &Mingd, path: &Path) -> Result<Transcribed, ming_bus::BusError> {
    m.client
        .request(
            "audio",
            kinds::AUDIO_TRANSCRIBE,
            &Transcribe {
                path: Some(path.display().to_string()),
                ..Default::default()
            },
            Duration::from_secs(240),
        )
        .await
}

fn text_of(r: &Transcribed) -> String {
    r.utterances
        .iter()
        .map(|u| u.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcription_over_the_bus_and_awkward_files() {
    let m = Mingd::start(CONFIG);
    m.wait_ready(&["audio"], Duration::from_secs(60)).await;
    let dir = m.dir.path();
    let cmd = espeak(dir, "cmd.wav", "What is on my calendar tomorrow?");

    // A streamed request: boundaries and partials first, then the final.
    let body = ming_schemas::to_body(&Transcribe {
        path: Some(cmd.display().to_string()),
        partials: true,
        ..Default::default()
    })
    .unwrap();
    let mut stream = m
        .client
        .stream(m.client.envelope(
            "audio",
            kinds::AUDIO_TRANSCRIBE,
            body,
            Duration::from_secs(60),
        ))
        .unwrap();
    let mut events = Vec::new();
    let reply: Transcribed = loop {
        let f = stream.next().await.expect("an answer").expect("no error");
        if f.flow == ming_schemas::envelope::Flow::Partial {
            events.push(f.body::<ming_schemas::audio::Update>().unwrap().event);
        } else {
            break f.body().unwrap();
        }
    };
    assert_eq!(
        events.first().map(String::as_str),
        Some("speech_started"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e == "speech_ended") && events.iter().any(|e| e == "final"));
    assert_eq!(text_of(&reply), "what is on my calendar tomorrow?");
    assert_eq!(reply.source_rate, 22_050);
    // Partials and a decode at every pause count too: more than the final alone costs.
    assert!(
        reply.rtf > 0.0 && reply.stt_ms > 0.0,
        "real-time factor {}",
        reply.rtf
    );

    // A WAV of compressed audio: a clear BadRequest.
    let mut mp3ish = std::fs::read(&cmd).unwrap();
    mp3ish[20] = 0x55;
    let bad = dir.join("mp3.wav");
    std::fs::write(&bad, &mp3ish).unwrap();
    let e = transcribe(&m, &bad).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest, "{e}");
    assert!(e.to_string().contains("unsupported WAV format"), "{e}");

    // Not a WAV at all, and a missing file.
    let junk = dir.join("junk.wav");
    std::fs::write(&junk, b"ID3\x04 this is not audio").unwrap();
    assert_eq!(
        transcribe(&m, &junk).await.unwrap_err().code(),
        ErrorCode::BadRequest
    );
    assert_eq!(
        transcribe(&m, &dir.join("nowhere.wav"))
            .await
            .unwrap_err()
            .code(),
        ErrorCode::BadRequest
    );

    // Truncated: what is there is transcribed, and the reply says the file is cut short.
    let (rate, pcm) = read_wav(&cmd);
    let mut padded = vec![0i16; rate as usize / 2];
    padded.extend_from_slice(&pcm);
    padded.extend(std::iter::repeat_n(0, rate as usize));
    let full = dir.join("full.wav");
    write_wav(&full, rate, &padded);
    let mut cut = std::fs::read(&full).unwrap();
    cut.truncate(cut.len() - rate as usize); // half a second of the trailing silence is gone
    let truncated = dir.join("truncated.wav");
    std::fs::write(&truncated, &cut).unwrap();
    let r = transcribe(&m, &truncated).await.unwrap();
    assert!(
        r.warning.as_deref().unwrap_or("").contains("truncated"),
        "{:?}",
        r.warning
    );
    assert_eq!(text_of(&r), "what is on my calendar tomorrow?");

    // Silence only: no utterance, no error.
    let silence = dir.join("silence.wav");
    write_wav(&silence, 16_000, &vec![0i16; 16_000 * 5]);
    let r = transcribe(&m, &silence).await.unwrap();
    assert!(r.utterances.is_empty(), "{:?}", r.utterances);
    assert!((r.audio_ms - 5000.0).abs() < 1.0);

    // Ten minutes: speech at the start, the middle and the end of quiet noise.
    let mut long = Vec::with_capacity(rate as usize * 600);
    let mut seed = 12345u32;
    for _ in 0..(rate as usize * 600) {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        long.push(((seed >> 16) % 21) as i16 - 10);
    }
    for at in [1usize, 300, 595] {
        let o = at * rate as usize;
        long[o..o + pcm.len()].copy_from_slice(&pcm);
    }
    let ten = dir.join("ten-minutes.wav");
    write_wav(&ten, rate, &long);
    let started = Instant::now();
    let r = transcribe(&m, &ten).await.unwrap();
    assert!((r.audio_ms - 600_000.0).abs() < 50.0, "{}", r.audio_ms);
    assert_eq!(r.utterances.len(), 3, "{:?}", r.utterances);
    for (u, at) in r.utterances.iter().zip([1.0, 300.0, 595.0]) {
        assert!(
            (u.audio_start_ms / 1e3 - at).abs() < 0.2,
            "{} s",
            u.audio_start_ms / 1e3
        );
        assert_eq!(u.text.to_lowercase(), "what is on my calendar tomorrow?");
    }
    println!(
        "10 minutes transcribed in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Still serving, and the CLI prints the transcript.
    let (code, out) = m.ming(&["transcribe", cmd.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("What is on my calendar tomorrow?"), "{out}");
    let (code, out) = m.ming(&["transcribe", junk.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("not a WAV file"), "{out}");
}

/// With one speech-to-text model and no guided hearing: a turn the rules do not know goes to the
/// LLM at once, so the barge-in below finds it with the agent (with either it may come while the
/// turn is heard again, before the agent has it: then there is nothing to cancel there, and
/// nothing logged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaking_barge_in_and_a_voice_turn_to_the_agent() {
    let m = Mingd::start(&format!(
        "{CONFIG}stt_second_model = \"\"\nstt_guide = false\n"
    ));
    m.wait_ready(&["audio", "agent"], Duration::from_secs(60))
        .await;
    let dir = m.dir.path();

    // Speech to a WAV file.
    let out = dir.join("hello.wav");
    let (code, text) = m.ming(&[
        "say",
        "Hello, I am MingLLM.",
        "--wav",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let (rate, pcm) = read_wav(&out);
    assert_eq!(rate, 22_050);
    assert!(pcm.len() > rate as usize / 2, "{} samples", pcm.len());
    let e = m
        .client
        .request::<_, Spoken>(
            "audio",
            kinds::AUDIO_SPEAK,
            &Speak::default(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::BadRequest);

    // Barge-in: speech on the live input while a long answer plays stops it.
    let mut events =
        EventSubscriber::connect(&m.bus, &[kinds::EVENT_BARGE_IN, kinds::EVENT_SPEAKING]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // let the subscription reach the broker
    let speaking = m.speak_in_background("This is a long answer that goes on and on, so that there is time to interrupt it before it ends.");
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("speaking")
            .unwrap();
        if ev.kind == kinds::EVENT_SPEAKING && ev.body::<Speaking>().unwrap().state == "started" {
            break;
        }
    }
    let interrupt = espeak(dir, "stop.wav", "Stop.");
    let (irate, ipcm) = read_wav(&interrupt);
    let mut burst = vec![0i16; irate as usize / 5];
    burst.extend_from_slice(&ipcm);
    burst.extend(std::iter::repeat_n(0, irate as usize / 2));
    feed_realtime(&m, irate, &burst).await;
    let spoken = speaking.await.unwrap().expect("spoken");
    assert!(spoken.interrupted, "{spoken:?}");
    assert!(spoken.played_ms < spoken.audio_ms - 1000.0, "{spoken:?}");
    let barge = loop {
        let ev = tokio::time::timeout(Duration::from_secs(15), events.next())
            .await
            .expect("barge-in")
            .unwrap();
        if ev.kind == kinds::EVENT_BARGE_IN {
            break ev.body::<Speaking>().unwrap();
        }
    };
    let latency = barge.stop_latency_ms.unwrap();
    println!("barge-in stopped playback {latency:.1} ms after the speech was detected");
    assert!(latency < 100.0, "{latency} ms");

    // Push-to-talk: the turn's transcript reaches the agent, which acts on it.
    let mut actions = EventSubscriber::connect(&m.bus, &[kinds::EVENT_ACTION_STARTED]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = m.listen("start").await;
    assert!(st.listening && st.input_ok, "{st:?}");
    let cmd = espeak(dir, "timer.wav", "Set a timer for seven minutes.");
    let (crate_, cpcm) = read_wav(&cmd);
    let mut turn = vec![0i16; crate_ as usize / 5];
    turn.extend_from_slice(&cpcm);
    turn.extend(std::iter::repeat_n(0, crate_ as usize));
    feed_realtime(&m, crate_, &turn).await;
    let ev = tokio::time::timeout(Duration::from_secs(60), actions.next())
        .await
        .expect("an action")
        .unwrap();
    let a: ming_schemas::agent::ActionStarted = ev.body().unwrap();
    assert_eq!(a.tool, "set_timer", "{a:?}");
    assert!(a.arguments.contains("420"), "{a:?}");
    let st = m.listen("status").await;
    assert!(!st.listening, "the turn is over: {st:?}");
    // The utterance's timeline holds the voice stages before the agent's own.
    let (code, out) = m.ming(&["trace"]);
    assert_eq!(code, 0, "{out}");
    let speech_end = out
        .find("audio: speech_ended")
        .unwrap_or_else(|| panic!("{out}"));
    let transcript = out
        .find("audio: transcript")
        .unwrap_or_else(|| panic!("{out}"));
    let received = out.find("received").unwrap_or_else(|| panic!("{out}"));
    let started = out
        .find("action started")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        speech_end < transcript && transcript < received && received < started,
        "{out}"
    );

    // Barge-in while the agent still works on a voice turn (this one needs the local model,
    // which first computes its whole prompt: seconds here): the turn is cancelled, the agent
    // logs it so, and nothing is spoken for it.
    let mut barge = EventSubscriber::connect(
        &m.bus,
        &[
            kinds::EVENT_BARGE_IN,
            kinds::EVENT_TRANSCRIPT,
            kinds::EVENT_SPEAKING,
        ],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = m.listen("start").await;
    assert!(st.listening, "{st:?}");
    let poem = espeak(
        dir,
        "poem.wav",
        "Write me a long poem about the sea and the stars.",
    );
    let (prate, ppcm) = read_wav(&poem);
    let mut turn = vec![0i16; prate as usize / 5];
    turn.extend_from_slice(&ppcm);
    turn.extend(std::iter::repeat_n(0, prate as usize * 4 / 5));
    feed_realtime(&m, prate, &turn).await;
    // The deadlines here guard against a hang, not for speed: on two cores shared with another
    // test's models, Whisper's and the LLM's threads can take many seconds.
    let fed = Instant::now();
    let utterance = loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), barge.next())
            .await
            .expect("the poem's transcript")
            .unwrap();
        if ev.kind == kinds::EVENT_TRANSCRIPT {
            let t = ev.body::<ming_schemas::audio::Transcript>().unwrap();
            let first = t.stages.first().map_or(0.0, |s| s.at_ms);
            let stages: Vec<String> = t
                .stages
                .iter()
                .map(|s| format!("{} +{:.0}", s.name, s.at_ms - first))
                .collect();
            println!("the poem's transcript {:?}: {}", t.text, stages.join(", "));
            break t.utterance;
        }
    };
    println!(
        "the poem's transcript came {:.0} ms after its audio was fed",
        fed.elapsed().as_secs_f64() * 1e3
    );
    feed_realtime(&m, irate, &burst).await;
    let cancelled = loop {
        let ev = tokio::time::timeout(Duration::from_secs(30), barge.next())
            .await
            .expect("a barge-in on the waiting turn")
            .unwrap();
        if ev.kind == kinds::EVENT_SPEAKING {
            let s: Speaking = ev.body().unwrap();
            if s.utterance == Some(utterance) {
                panic!(
                    "the cancelled turn was spoken: {s:?}\n{}",
                    interactions(&m).await
                );
            }
        }
        if ev.kind == kinds::EVENT_BARGE_IN {
            break ev.body::<Speaking>().unwrap();
        }
    };
    assert_eq!(cancelled.state, "cancelled", "{cancelled:?}");
    println!(
        "a voice turn still with the agent was cancelled {:.1} ms after the new speech was detected",
        cancelled.stop_latency_ms.unwrap_or(f64::NAN)
    );
    assert_eq!(cancelled.utterance, Some(utterance), "{cancelled:?}");
    let out = ming_tests::eventually(
        Duration::from_secs(30),
        "the cancelled turn in the log",
        || async {
            let (code, out) = m.ming(&["trace"]);
            (code == 0 && out.contains("cancelled by the caller")).then_some(out)
        },
    )
    .await;
    assert!(out.contains("audio: speech_ended"), "{out}");

    // Deleting by voice: the agent says what it would delete and waits; the spoken "Yes." of
    // the next turn runs exactly that call.
    let (code, out) = m.ming(&["ask", "Take a note: buy oat milk"]);
    assert_eq!(code, 0, "{out}");
    let notes = dir.join("data/agent/notes.jsonl");
    let mut speaking = EventSubscriber::connect(&m.bus, &[kinds::EVENT_SPEAKING]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (file, said) in [
        ("delete.wav", "Delete the note containing milk."),
        ("yes.wav", "Yes."),
    ] {
        let st = m.listen("start").await;
        assert!(st.listening, "{st:?}");
        let (rate, pcm) = read_wav(&espeak(dir, file, said));
        let mut turn = vec![0i16; rate as usize / 5];
        turn.extend_from_slice(&pcm);
        turn.extend(std::iter::repeat_n(0, rate as usize));
        feed_realtime(&m, rate, &turn).await;
        let a = loop {
            let ev = tokio::time::timeout(Duration::from_secs(60), actions.next()).await;
            let a = ev.ok().map(|e| {
                e.unwrap()
                    .body::<ming_schemas::agent::ActionStarted>()
                    .unwrap()
            });
            if a.as_ref().is_some_and(|a| a.tool != "delete_note") {
                continue; // (the typed note's action came first)
            }
            break a;
        };
        if a.as_ref().is_none_or(|a| a.tool != "delete_note") {
            panic!("{said:?} did not delete: {a:?}\n{}", interactions(&m).await);
        }
        // The answer is heard to its end before the user answers it.
        next_speaking(&mut speaking, "finished").await;
        let left = std::fs::read_to_string(&notes).unwrap();
        assert_eq!(
            left.contains("buy oat milk"),
            said != "Yes.",
            "after {said:?}: {left}"
        );
    }

    // A voice turn the agent cannot take is answered out loud all the same: with the agent
    // stopped, the user hears that it is not running instead of silence.
    let (code, out) = m.ming(&["stop", "agent"]);
    assert_eq!(code, 0, "{out}");
    let mut said =
        EventSubscriber::connect(&m.bus, &[kinds::EVENT_TRANSCRIPT, kinds::EVENT_SPEAKING])
            .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = m.listen("start").await;
    assert!(st.listening, "{st:?}");
    let ask = espeak(dir, "time.wav", "What time is it?");
    let (arate, apcm) = read_wav(&ask);
    let mut turn = vec![0i16; arate as usize / 5];
    turn.extend_from_slice(&apcm);
    turn.extend(std::iter::repeat_n(0, arate as usize * 4 / 5));
    feed_realtime(&m, arate, &turn).await;
    let mut utterance = None;
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), said.next())
            .await
            .expect("the turn's transcript, then its spoken error")
            .unwrap();
        if ev.kind == kinds::EVENT_TRANSCRIPT {
            utterance = Some(
                ev.body::<ming_schemas::audio::Transcript>()
                    .unwrap()
                    .utterance,
            );
        } else if utterance.is_some() {
            let s: Speaking = ev.body().unwrap();
            if s.utterance == utterance && s.state == "started" {
                break;
            }
        }
    }
}

/// The agent's interaction log, a line an utterance: what it heard, did, and how it ended.
async fn interactions(m: &Mingd) -> String {
    let page = m.interactions(0).await;
    page.items
        .iter()
        .map(|i| {
            format!(
                "{:?} → {:?} {} ({})\n",
                i.text, i.tool, i.arguments, i.outcome
            )
        })
        .collect()
}

/// Waits for an `audio.speaking` event in `state`.
async fn next_speaking(events: &mut EventSubscriber, state: &str) {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .unwrap_or_else(|_| panic!("speaking {state}"))
            .unwrap();
        if ev.body::<Speaking>().unwrap().state == state {
            return;
        }
    }
}

/// `at 16000 Hz, 1 ch, i16` in a device's detail line → (rate, channels, format).
fn device_format(detail: &str) -> (u32, usize, String) {
    let after = |key: &str| {
        detail
            .split(key)
            .nth(1)
            .unwrap_or_else(|| panic!("no `{key}` in {detail}"))
            .trim_start()
    };
    let rate = after(" at ").split(' ').next().unwrap().parse().unwrap();
    let channels = after(" Hz, ").split(' ').next().unwrap().parse().unwrap();
    let format = after(" ch, ")
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap()
        .to_string();
    (rate, channels, format)
}

/// One sample in the device's format, every channel.
fn encode_frame(v: f32, channels: usize, format: &str, out: &mut Vec<u8>) {
    for _ in 0..channels {
        match format {
            "i16" => out.extend_from_slice(&((v.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes()),
            "f32" => out.extend_from_slice(&v.to_le_bytes()),
            other => panic!("the test's device speaks i16 or f32, not {other}"),
        }
    }
}

/// The first channel of interleaved frames in the device's format.
fn decode_frames(bytes: &[u8], channels: usize, format: &str) -> Vec<f32> {
    let width = if format == "i16" { 2 } else { 4 };
    bytes
        .chunks_exact(width * channels)
        .map(|f| match format {
            "i16" => f32::from(i16::from_le_bytes([f[0], f[1]])) / 32768.0,
            _ => f32::from_le_bytes([f[0], f[1], f[2], f[3]]),
        })
        .collect()
}

/// espeak-ng's speech brought to `rate` by sox, as floats.
fn speech_at(dir: &Path, name: &str, text: &str, rate: u32) -> Vec<f32> {
    let wav = espeak(dir, &format!("{name}.wav"), text);
    let out = dir.join(format!("{name}-{rate}.wav"));
    let ok = std::process::Command::new("sox")
        .arg(&wav)
        .args(["-r", &rate.to_string()])
        .arg(&out)
        .status()
        .expect("sox (just setup installs it)");
    assert!(ok.success());
    let (got, pcm) = read_wav(&out);
    assert_eq!(got, rate);
    pcm.iter().map(|s| f32::from(*s) / 32768.0).collect()
}

/// A sound card through cpal, on a machine without one: ALSA PCMs of the test's own (the `file`
/// plugin over `null`) whose samples come from and go to named pipes. The microphone's pipe is
/// written at real-time pace (48 kHz stereo, as `audio.capture_rate` / `capture_channels` ask,
/// so the service downmixes and resamples); the speaker's is read at real-time pace. So the
/// service's real capture and playback code runs: a reply is played to the speaker and what came out is
/// transcribed back; spoken words at the microphone reach the agent's first action; speech at
/// the microphone while a reply plays cuts it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_card_through_alsa_capture_and_playback() {
    use std::collections::VecDeque;
    use std::io::{Read, Write};
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().unwrap();
    let (mic, speaker) = (dir.path().join("mic.fifo"), dir.path().join("speaker.fifo"));
    for fifo in [&mic, &speaker] {
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }
    // Held open read-write, so neither side's open blocks and neither sees an end of file.
    let rw = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap()
    };
    let (mut mic_w, mut speaker_r) = (rw(&mic), rw(&speaker));
    let conf = dir.path().join("asound.conf");
    std::fs::write(
        &conf,
        format!(
            r#"
pcm.ming_mic {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{mic}"
    format "raw"
    hint {{ show on description "MingLLM test microphone" }}
}}
pcm.ming_speaker {{
    type file
    slave.pcm "null"
    file "{speaker}"
    format "raw"
    hint {{ show on description "MingLLM test speaker" }}
}}
"#,
            mic = mic.display(),
            speaker = speaker.display()
        ),
    )
    .unwrap();
    let m = Mingd::start_in(
        dir,
        "[audio]\ninput = \"ming_mic\"\noutput = \"ming_speaker\"\ncapture_rate = 48000\ncapture_channels = 2\n",
        &[(
            "ALSA_CONFIG_PATH",
            format!("/usr/share/alsa/alsa.conf:{}", conf.display()),
        )],
    );
    m.wait_ready(&["audio", "agent"], Duration::from_secs(60))
        .await;
    let dir = m.dir.path();

    let d: ming_schemas::audio::Devices = m
        .client
        .request(
            "audio",
            kinds::AUDIO_DEVICES,
            &serde_json::json!({}),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(d.input.input_ok, "{d:?}");
    assert!(d.input.detail.starts_with("capture"), "{d:?}");
    assert!(d.output.starts_with("device"), "{d:?}");
    for id in ["ming_mic", "ming_speaker"] {
        assert!(d.devices.iter().any(|x| x.id == id), "{id}: {d:?}");
    }
    let (code, out) = m.ming(&["audio", "devices"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("MingLLM test microphone"), "{out}");
    let (in_rate, in_ch, in_fmt) = device_format(&d.input.detail);
    let (out_rate, out_ch, out_fmt) = device_format(&d.output);
    println!(
        "capture {in_rate} Hz {in_ch} ch {in_fmt}; playback {out_rate} Hz {out_ch} ch {out_fmt}"
    );
    assert_eq!((in_rate, in_ch), (48_000, 2), "as configured");
    assert!(d.input.detail.contains("→ 16 kHz mono"), "{d:?}");

    // The microphone: 20 ms blocks at real-time pace, silence when the test has nothing to say.
    let say: Arc<Mutex<VecDeque<f32>>> = Arc::default();
    {
        let say = Arc::clone(&say);
        std::thread::spawn(move || {
            let block = in_rate as usize / 50;
            let start = Instant::now();
            for i in 1u64.. {
                let mut bytes = Vec::new();
                {
                    let mut q = say.lock().unwrap();
                    for _ in 0..block {
                        encode_frame(q.pop_front().unwrap_or(0.0), in_ch, &in_fmt, &mut bytes);
                    }
                }
                if mic_w.write_all(&bytes).is_err() {
                    return;
                }
                if let Some(w) =
                    (start + Duration::from_millis(20 * i)).checked_duration_since(Instant::now())
                {
                    std::thread::sleep(w);
                }
            }
        });
    }
    // The speaker: read at real-time pace (the device is as fast as its reader), kept.
    let heard: Arc<Mutex<Vec<f32>>> = Arc::default();
    {
        let heard = Arc::clone(&heard);
        let (fmt, ch) = (out_fmt.clone(), out_ch);
        std::thread::spawn(move || {
            let width = if fmt == "i16" { 2 } else { 4 };
            let block = out_rate as usize / 50 * width * ch;
            let mut buf = vec![0u8; block];
            let mut clock = Instant::now();
            let mut n = 0u32;
            loop {
                if speaker_r.read_exact(&mut buf).is_err() {
                    return;
                }
                if clock.elapsed()
                    > Duration::from_millis(100) * (n + 1) + Duration::from_millis(100)
                {
                    (clock, n) = (Instant::now(), 0); // a new stream after a pause
                }
                heard.lock().unwrap().extend(decode_frames(&buf, ch, &fmt));
                n += 1;
                if let Some(w) =
                    (clock + Duration::from_millis(20) * n).checked_duration_since(Instant::now())
                {
                    std::thread::sleep(w);
                }
            }
        });
    }

    // A reply, played on the speaker; what came out of it is transcribed back.
    let spoken: Spoken = m
        .client
        .request(
            "audio",
            kinds::AUDIO_SPEAK,
            &Speak {
                text: "Hello from the speaker.".into(),
                ..Default::default()
            },
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(spoken.output.starts_with("device"), "{spoken:?}");
    assert!(!spoken.interrupted, "{spoken:?}");
    assert!(spoken.played_ms > spoken.audio_ms - 50.0, "{spoken:?}");
    let heard_pcm: Vec<i16> = {
        let h = heard.lock().unwrap();
        let loud = h.iter().filter(|v| v.abs() > 0.01).count();
        let expect = spoken.audio_ms / 1e3 * f64::from(out_rate);
        println!(
            "speaker: {} samples, {loud} above the noise floor, speech {expect:.0}",
            h.len()
        );
        assert!(loud as f64 > expect * 0.3, "the speech reached the speaker");
        // Some silence first, as a microphone would have it.
        let mut pcm = vec![0i16; out_rate as usize / 2];
        pcm.extend(h.iter().map(|v| (v * 32767.0) as i16));
        pcm
    };
    let back: Transcribed = m
        .client
        .request(
            "audio",
            kinds::AUDIO_TRANSCRIBE,
            &Transcribe {
                pcm: Some(serde_bytes::ByteBuf::from(
                    heard_pcm
                        .iter()
                        .flat_map(|s| s.to_le_bytes())
                        .collect::<Vec<u8>>(),
                )),
                pcm_rate: Some(out_rate),
                ..Default::default()
            },
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let text = text_of(&back).to_lowercase();
    assert!(text.contains("from the speaker"), "{text}");

    // Spoken words at the microphone, push-to-talk: the agent acts, and its answer is spoken.
    let mut actions = EventSubscriber::connect(&m.bus, &[kinds::EVENT_ACTION_STARTED]).unwrap();
    let mut speaking = EventSubscriber::connect(&m.bus, &[kinds::EVENT_SPEAKING]).unwrap();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = m.listen("start").await;
    assert!(st.listening && st.input_ok, "{st:?}");
    say.lock().unwrap().extend(speech_at(
        dir,
        "timer",
        "Set a timer for seven minutes.",
        in_rate,
    ));
    let ev = tokio::time::timeout(Duration::from_secs(60), actions.next())
        .await
        .expect("an action from the microphone")
        .unwrap();
    let a: ming_schemas::agent::ActionStarted = ev.body().unwrap();
    assert_eq!(a.tool, "set_timer", "{a:?}");
    assert!(a.arguments.contains("420"), "{a:?}");
    next_speaking(&mut speaking, "finished").await;

    // Barge-in from the microphone while a long reply plays on the speaker.
    let long = m.speak_in_background("This is a long answer that goes on and on, so that there is time to interrupt it before it ends.");
    next_speaking(&mut speaking, "started").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    say.lock()
        .unwrap()
        .extend(speech_at(dir, "stop", "Stop.", in_rate));
    let spoken = long.await.unwrap().expect("spoken");
    assert!(spoken.interrupted, "{spoken:?}");
    assert!(spoken.played_ms < spoken.audio_ms - 1000.0, "{spoken:?}");
}

/// Wake mode: speaking over an answer is speaking to MingLLM, so the "yes" said over "Shall I go
/// ahead?" needs no wake phrase — the follow-up window opens at the barge-in, not only once the
/// answer has been spoken to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_wake_mode_an_answer_said_over_the_question_needs_no_wake_phrase() {
    let m = Mingd::start(
        r#"
[audio]
input = "bus"
output = "none"
mode = "wake"
"#,
    );
    m.wait_ready(&["audio", "agent"], Duration::from_secs(60))
        .await;
    let dir = m.dir.path();
    let notes = dir.join("data/agent/notes.jsonl");
    let (code, out) = m.ming(&["ask", "Take a note: buy oat milk"]);
    assert_eq!(code, 0, "{out}");
    // The voice conversation waits for a yes (asked here by text in the voice session, so that
    // the test does not depend on Whisper hearing the wake phrase).
    let (code, out) = m.ming(&[
        "ask",
        "--session",
        "voice",
        "delete the note containing milk",
    ]);
    assert!(code == 5 && out.contains("yes or no"), "{out}");
    let mut events =
        EventSubscriber::connect(&m.bus, &[kinds::EVENT_BARGE_IN, kinds::EVENT_SPEAKING]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let speaking = m.speak_in_background("This would delete one note: buy oat milk. Nothing was deleted yet. Shall I go ahead, yes or no?");
    next_speaking(&mut events, "started").await;
    let (rate, pcm) = read_wav(&espeak(dir, "yes.wav", "Yes."));
    let mut turn = vec![0i16; rate as usize / 5];
    turn.extend_from_slice(&pcm);
    turn.extend(std::iter::repeat_n(0, rate as usize));
    feed_realtime(&m, rate, &turn).await;
    let spoken = speaking.await.unwrap().expect("spoken");
    assert!(spoken.interrupted, "{spoken:?}");
    ming_tests::eventually(
        Duration::from_secs(30),
        "the note deleted by the yes",
        || async {
            (!std::fs::read_to_string(&notes)
                .unwrap_or_default()
                .contains("oat milk"))
            .then_some(())
        },
    )
    .await;
    // The interaction is logged once the reply is made, just after the note file is written.
    let mut log = String::new();
    let answered_yes = |log: &str| {
        log.lines().any(|l| {
            l.to_lowercase().starts_with("\"yes")
                && l.contains("Some(\"delete_note\")")
                && l.ends_with("(done)")
        })
    };
    for _ in 0..50 {
        log = interactions(&m).await;
        if answered_yes(&log) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered_yes(&log), "{log}");
}

/// The Piper voice by config: `ming say` speaks with it through the audio service, and what it
/// said is transcribed back over the bus word for word; the service's status names the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_piper_voice_by_config_speaks_what_whisper_hears() {
    let m = Mingd::start(
        r#"
[audio]
input = "none"
output = "none"
tts_engine = "piper"
"#,
    );
    m.wait_ready(&["audio"], Duration::from_secs(60)).await;
    let st: ming_schemas::control::ServiceStatus = m
        .client
        .request(
            "audio",
            kinds::STATUS,
            &ming_schemas::control::Empty {},
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(
        st.detail.contains("tts piper en_US-joe-medium.onnx"),
        "{}",
        st.detail
    );
    let wav = m.dir.path().join("piper.wav");
    let (code, out) = m.ming(&[
        "say",
        "Your timer for the pasta is done.",
        "--wav",
        wav.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let (rate, pcm) = read_wav(&wav);
    assert_eq!(rate, 22_050);
    assert!(pcm.len() > rate as usize, "{} samples", pcm.len());
    let (code, out) = m.ming(&["transcribe", wav.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // The final transcript: the line "[ start– end s] text". The voice samples noise, so a
    // word may come out differently from run to run ("Your time for the pasta is done."): at
    // most one of the seven, as in the audio service's own Piper test.
    let heard = out
        .lines()
        .find_map(|l| {
            l.trim_start()
                .starts_with('[')
                .then(|| l.split_once("s] "))
                .flatten()
        })
        .map(|(_, t)| t)
        .unwrap_or_else(|| panic!("no final transcript in {out}"));
    let wrong = ming_tests::word_errors("Your timer for the pasta is done.", heard);
    assert!(wrong <= 1, "heard {heard:?}: {wrong} words differ\n{out}");
}

/// Without the guide, the second model (`audio.stt_second_model`, whisper-base-q8 by default)
/// hears the turn again before the LLM is asked; base hears it right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_the_agent_cannot_act_on_is_heard_again_by_the_second_model() {
    let transcripts =
        heard_again_before_the_llm(&format!("{CONFIG}stt_guide = false\n"), "second", false).await;
    let second = &transcripts[1];
    println!(
        "first {:?} ({:.2}), second {:?} ({:.2}) in {:.0} ms",
        transcripts[0].text,
        transcripts[0].confidence,
        second.text,
        second.confidence,
        second.decode_ms
    );
}

/// Whisper tiny.en hears espeak-ng's "Set a timer for one hour." as "… for a while hour" or
/// "… for well-houred": a timer with no length the rules can read. The guided reading, which
/// takes only durations the rules read (`agent.patterns`: "… for a hour", "… for one hour"),
/// goes to the agent in its place and sets the timer. Fed live with the second model off, in
/// two voices: each turn must end in the hour's timer, and at least one of them by its guided
/// reading. (With the seed-trained router, which is sure of "set a timer" in the first reading
/// and so makes the agent ask for how long, `awaiting` "seconds", the guided reading is taken
/// in place of that question: checked by hand and in the voice bench's router pass, not here —
/// training the router beside CI's other tests once lost the training service's heartbeats.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_heard_without_its_length_is_set_from_the_guided_reading() {
    let m = Mingd::start(&format!("{CONFIG}stt_second_model = \"\"\n"));
    m.wait_ready(&["audio", "agent"], Duration::from_secs(60))
        .await;
    let mut events = EventSubscriber::connect(
        &m.bus,
        &[kinds::EVENT_ACTION_STARTED, kinds::EVENT_TRANSCRIPT],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut guided = 0;
    for wpm in [200, 160] {
        let (action, transcripts) = hour_turn(&m, &mut events, wpm).await;
        assert_eq!(action.tool, "set_timer", "{action:?} after {transcripts:?}");
        assert!(action.arguments.contains("3600"), "{action:?}");
        if transcripts.len() > 1 {
            assert!(
                transcripts[1]
                    .stages
                    .iter()
                    .any(|s| s.name == "guided_transcript"),
                "{transcripts:?}"
            );
            guided += 1;
        }
    }
    assert!(guided > 0, "tiny.en heard both right: pick other voices");
}

/// A voice search of the user's mail that finds nothing is heard again in the mailbox's own
/// words before the agent acts: tiny.en hears espeak-ng's en-gb+f3 "Look for messages from the
/// bank." as "… from the mic." and en-us "Find emails about the job offer." as "… the jarm
/// offer." (offline, `guide_probe`); the agent answers those readings with `hear_again`
/// (vocabulary.rs), and the reading within the mailbox's words ("… the bank.", "… the job
/// offer.", stage `in_words_transcript`) is the one searched, and finds the messages. Each turn
/// must end in the right search; at least one of them by its reading in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_search_that_finds_nothing_is_heard_again_in_the_users_words() {
    let files = tempfile::tempdir().unwrap();
    let mail = ming_tests::write_maildir(files.path());
    let m = Mingd::start(&format!(
        "{CONFIG}stt_second_model = \"\"\n[agent]\nmail = \"{}\"\n",
        mail.display()
    ));
    m.wait_ready(&["audio", "agent"], Duration::from_secs(60))
        .await;
    let mut events = EventSubscriber::connect(
        &m.bus,
        &[
            kinds::EVENT_ACTION_STARTED,
            kinds::EVENT_TRANSCRIPT,
            kinds::EVENT_ACTION_FINISHED,
        ],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut in_words = 0;
    for (i, (text, voice, wpm, word, found)) in [
        (
            "Look for messages from the bank.",
            "en-gb+f3",
            180,
            "bank",
            "2 message(s)",
        ),
        (
            "Find emails about the job offer.",
            "en-us",
            175,
            "job offer",
            "1 message(s)",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let st = m.listen("start").await;
        assert!(st.listening && st.input_ok, "{st:?}");
        let wav = ming_tests::espeak_voice(m.dir.path(), &format!("mail{i}.wav"), text, voice, wpm);
        let (action, transcripts) = spoken_turn(&m, &mut events, &wav).await;
        println!(
            "{text:?}: heard {:?}",
            transcripts.iter().map(|t| &t.text).collect::<Vec<_>>()
        );
        assert_eq!(
            action.tool, "search_mail",
            "{action:?} after {transcripts:?}"
        );
        assert!(
            action.arguments.contains(word),
            "{action:?} after {transcripts:?}"
        );
        if transcripts.len() > 1 {
            assert!(
                transcripts[1]
                    .stages
                    .iter()
                    .any(|s| s.name == "in_words_transcript"),
                "{transcripts:?}"
            );
            in_words += 1;
        }
        let finished = loop {
            let ev = tokio::time::timeout(Duration::from_secs(30), events.next())
                .await
                .expect("the search finished")
                .unwrap();
            if ev.kind == kinds::EVENT_ACTION_FINISHED {
                break ev.body::<ming_schemas::agent::ActionFinished>().unwrap();
            }
        };
        assert!(
            finished.ok && finished.result.starts_with(found),
            "{finished:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(in_words > 0, "tiny.en heard both right: pick other voices");
}

/// One push-to-talk turn of espeak-ng's en-us "Set a timer for one hour." at `wpm`, fed live:
/// the first action and the transcripts before it; then the reply is let settle.
async fn hour_turn(
    m: &Mingd,
    events: &mut EventSubscriber,
    wpm: u32,
) -> (
    ming_schemas::agent::ActionStarted,
    Vec<ming_schemas::audio::Transcript>,
) {
    let st = m.listen("start").await;
    assert!(st.listening && st.input_ok, "{st:?}");
    let name = format!("hour{wpm}.wav");
    let wav = ming_tests::espeak_voice(
        m.dir.path(),
        &name,
        "Set a timer for one hour.",
        "en-us",
        wpm,
    );
    let (action, transcripts) = spoken_turn(m, events, &wav).await;
    println!(
        "{wpm} wpm: heard {:?}",
        transcripts.iter().map(|t| &t.text).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    (action, transcripts)
}
