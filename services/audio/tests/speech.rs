//! Speech in, with the real models: the converted Whisper model on a known recording, the
//! Silero network against ONNX Runtime, word error rate and speech boundaries over commands
//! synthesised by espeak-ng at run time (several voices and speeds), and awkward inputs.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard};

use common::*;
use ming_audio::pipeline::Output;
use ming_audio::source;
use ming_audio::vad::{Vad, FRAME};
use ming_audio::wav::write_wav16;
use ming_config::Paths;
use ming_schemas::audio::Transcribe;

/// 32 short commands of the kind MingLLM takes.
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
    "Call the dentist on Monday morning.",
    "Remember that my car is parked on level three.",
    "How long until my next meeting?",
    "Set an alarm for six thirty.",
    "Search my documents for the tax report.",
    "Read my latest email.",
    "Schedule lunch with Sam on Thursday.",
    "What did I note about the garden?",
    "Start a timer for twenty minutes.",
    "Do I have anything planned this weekend?",
    "Forget what I said about the password.",
    "Play some quiet music.",
    "Send a message to my brother.",
    "Find my notes about the project.",
    "Remind me to water the plants tonight.",
    "Open the shopping list.",
    "What day is it today?",
    "Pause the timer.",
    "Book a table for two at seven.",
    "Add a meeting with Anna next Tuesday.",
    "How many minutes are left on the timer?",
    "Tell me a joke.",
];

/// Voices and speeds (words per minute). Whisper tiny.en reads espeak-ng's American voices
/// best; its British voices, the female variants and the regional accents cost it more (the
/// benchmark prints each voice's error rate).
const VOICES: &[(&str, u32)] = &[
    ("en-us", 175),
    ("en-us+m3", 165),
    ("en-us", 150),
    ("en-us+m1", 165),
];

/// ggml's workers meet at a spinning barrier after every operation, and a decode sizes its
/// threads by what *other processes* leave idle, so two decoders in this one test process each
/// take both cores and stall each other (the tiny.en and base tests measured 45 s and 79 s apart,
/// 972 s together). The tests that decode take turns.
fn one_decoder_at_a_time() -> MutexGuard<'static, ()> {
    static DECODER: Mutex<()> = Mutex::new(());
    // A test that failed while holding it leaves nothing behind that the next one needs.
    DECODER.lock().unwrap_or_else(|e| e.into_inner())
}

fn wav_bytes(rate: u32, samples: &[f32]) -> Vec<u8> {
    let mut v = Vec::new();
    write_wav16(&mut v, rate, samples).unwrap();
    v
}

fn transcribe_wav_with(
    engine: &ming_audio::source::Engine,
    wav: Vec<u8>,
    realtime: bool,
) -> (Vec<Output>, source::RunStats) {
    let req = Transcribe {
        wav: Some(serde_bytes::ByteBuf::from(wav)),
        realtime,
        partials: true,
        ..Default::default()
    };
    let src = source::open(&req).expect("open");
    let mut out = Vec::new();
    let stats = source::run(engine, src, realtime, true, &AtomicBool::new(false), |o| {
        out.push(o)
    });
    (out, stats)
}

fn finals(out: &[Output]) -> Vec<ming_schemas::audio::Transcript> {
    out.iter()
        .filter_map(|o| match o {
            Output::Final(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// The finals' texts, one after the other.
fn joined(finals: &[ming_schemas::audio::Transcript]) -> String {
    finals
        .iter()
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_converted_model_transcribes_a_known_recording() {
    let _turn = one_decoder_at_a_time();
    // espeak-ng en-us, 175 wpm, resampled to 16 kHz by sox, 0.5 s of silence either side.
    let (rate, samples) = data_wav("calendar-16k.wav");
    assert_eq!(rate, 16_000);
    let d = engine().stt.decode_blocking(samples, 128).expect("decode");
    assert_eq!(d.text, "What is on my calendar tomorrow?");
    // The decoder is sure of the last word of a whole sentence…
    assert!(d.last_word_p > 0.7, "{}", d.last_word_p);
    // …and less sure of one it adds to a sentence cut off after its first second of speech,
    // the cue that keeps a made-up completion from ending the turn early.
    let (_, all) = data_wav("calendar-16k.wav");
    let cut = all[..24_000].to_vec(); // 0.5 s of silence, 1 s of speech
    let c = engine().stt.decode_blocking(cut, 128).expect("decode");
    // (Seen: "What if I'm my calendar?", p 0.48, against 0.98.)
    assert!(
        c.last_word_p < d.last_word_p - 0.2,
        "{:?} {}",
        c.text,
        c.last_word_p
    );
    // The transcript's confidence (its least likely word) is lower for the misheard cut.
    assert!(d.min_word_p <= d.last_word_p && c.min_word_p <= c.last_word_p);
    assert!(
        c.min_word_p < d.min_word_p,
        "cut {:?} {} vs whole {}",
        c.text,
        c.min_word_p,
        d.min_word_p
    );
}

/// Speech from the very first sample of a file (no silence before it) still gives its words:
/// whisper.cpp's own no-speech gate returned nothing at all for this command (seen in the
/// voice bench's corpus, `ming transcribe` on espeak-ng's file), though the VAD had found 1.6 s
/// of speech.
#[test]
fn a_command_from_the_first_sample_is_not_dropped() {
    let _turn = one_decoder_at_a_time();
    let (rate, speech) = speech("Jot down call the bank tomorrow.", "en-gb+f3", 180);
    let (out, _) = transcribe_wav_with(&engine(), wav_bytes(rate, &speech), false);
    let f = finals(&out);
    let got = joined(&f);
    assert!(
        got.to_lowercase().contains("call the bank"),
        "heard {got:?} in {} final(s)",
        f.len()
    );
}

#[test]
fn our_silero_matches_onnx_runtime() {
    let (_, samples) = data_wav("timer-16k.wav");
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/timer-16k.vad.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let want: Vec<f64> = golden["probs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let mut vad = Vad::new(engine().vad);
    let mut worst = 0.0f64;
    for (i, chunk) in samples.chunks_exact(FRAME).enumerate() {
        let p = vad.frame(chunk.try_into().unwrap());
        worst = worst.max((f64::from(p) - want[i]).abs());
    }
    assert_eq!(samples.len() / FRAME, want.len());
    assert!(
        worst < 1e-3,
        "largest difference from ONNX Runtime: {worst}"
    );
}

/// Every command of `COMMANDS` in its voice through the pipeline (as a file, as fast as
/// possible): checks each utterance's boundaries and returns the word error rate.
fn word_error_rate(engine: &ming_audio::source::Engine) -> f64 {
    let _turn = one_decoder_at_a_time();
    assert!(has_espeak(), "espeak-ng is needed (just setup installs it)");
    let (mut errors, mut total) = (0usize, 0usize);
    let mut worst_boundary = 0.0f64;
    let mut n = 0;
    for (i, text) in COMMANDS.iter().enumerate() {
        let (voice, wpm) = VOICES[i % VOICES.len()];
        let (rate, speech) = speech(text, voice, wpm);
        let (a, b) = true_bounds(&speech);
        let audio = padded(rate, &speech, 0.6, 0.8);
        let pad = (0.6 * f64::from(rate)) as usize;
        let true_start_ms = (pad + a) as f64 * 1e3 / f64::from(rate);
        let true_end_ms = (pad + b) as f64 * 1e3 / f64::from(rate);
        let (out, _) = transcribe_wav_with(engine, wav_bytes(rate, &audio), false);
        let f = finals(&out);
        let got = joined(&f);
        let (r, h) = (words(text), words(&got));
        let e = edit_distance(&r, &h);
        errors += e;
        total += r.len();
        let starts: Vec<f64> = out
            .iter()
            .filter_map(|o| match o {
                Output::SpeechStarted(b) => Some(b.audio_ms),
                _ => None,
            })
            .collect();
        let ends: Vec<f64> = out
            .iter()
            .filter_map(|o| match o {
                Output::SpeechEnded(b) => Some(b.audio_ms),
                _ => None,
            })
            .collect();
        let ds = starts
            .first()
            .map_or(f64::INFINITY, |s| (s - true_start_ms).abs());
        let de = ends
            .last()
            .map_or(f64::INFINITY, |s| (s - true_end_ms).abs());
        worst_boundary = worst_boundary.max(ds).max(de);
        println!(
            "{voice:>10} {wpm} wpm  errors {e}  start {:+6.0} ms  end {:+6.0} ms  turns {}  {:?}",
            starts.first().unwrap_or(&f64::NAN) - true_start_ms,
            ends.last().unwrap_or(&f64::NAN) - true_end_ms,
            f.len(),
            got
        );
        assert!(
            ds <= 100.0 && de <= 100.0,
            "{text:?}: boundaries off by {ds:.0} / {de:.0} ms"
        );
        n += 1;
    }
    let wer = errors as f64 / total as f64;
    println!("{n} utterances, {total} words, {errors} errors: WER {:.1}%, worst boundary {worst_boundary:.0} ms", wer * 100.0);
    wer
}

#[test]
fn commands_in_several_voices_transcribe_with_a_low_word_error_rate_and_exact_boundaries() {
    let wer = word_error_rate(&engine());
    // The issue asks for 10%. Whisper tiny.en on espeak-ng's formant speech measured 11.6–15%
    // for these voices whatever the decoding settings, and the reference implementation
    // (faster-whisper over the same CTranslate2 weights, the full 30 s window) 12.7% greedy,
    // 11.6% with beam 5 (see ARCHITECTURE.md): the model's limit, not the pipeline's. This
    // holds the line that is met today; `whisper-base` below meets the 10%.
    assert!(
        wer <= 0.15,
        "word error rate {:.1}% is over 15%",
        wer * 100.0
    );
}

/// `audio.stt_model = "whisper-base"`: the larger model of the registry packages, converted by
/// the same converter from its two-part package, hears espeak-ng's speech within the issue's
/// 10% (its end-of-speech to final transcript is about 3x tiny.en's on two cores: the choice for a
/// machine with cores to spare).
/// Base wants more room after short speech than tiny.en: 128 frames of margin measured 10.1%
/// here, 256 frames 8.5%.
#[test]
fn the_base_model_transcribes_the_commands_within_ten_percent() {
    let mut cfg = config();
    cfg.audio.stt_model = "whisper-base".into();
    cfg.audio.stt_ctx_margin = 256;
    let engine = ming_audio::load_engine(&cfg).expect("the audio models (run `just models`)");
    assert_eq!(engine.stt.model, "whisper-base");
    let wer = word_error_rate(&engine);
    assert!(
        wer <= 0.10,
        "word error rate {:.1}% is over 10%",
        wer * 100.0
    );
}

/// The Piper voice (`audio.tts_engine = "piper"`): the helper turns text into speech that
/// Whisper hears back (espeak-ng's formant speech costs it 13% of the words on these
/// commands; the neural voice is what a listener would expect). The voice samples noise, so
/// a word may differ between runs: at most one in twenty.
#[test]
fn the_piper_voice_is_heard_back_by_whisper() {
    let _turn = one_decoder_at_a_time();
    let cfg = config();
    let mut a = cfg.audio.clone();
    a.tts_engine = "piper".into();
    let tts = ming_audio::tts::Engine::from_config(&a, &Paths::resolve(&cfg.paths).model_dir)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(tts.describe().starts_with("piper"), "{}", tts.describe());
    let (mut n, mut errors) = (0, 0);
    for text in [
        "Remind me to call my sister tomorrow at noon.",
        "Take a note that the meeting moved to Friday.",
        "Search my documents for the tax report.",
        "Forget what I said about the password.",
        "Add a meeting with Anna next Tuesday.",
        "What do you know about my sister?",
    ] {
        let (rate, speech) = tts.synthesize(None, 175, text).expect("piper speaks");
        assert_eq!(rate, 22_050);
        let seconds = speech.len() as f64 / f64::from(rate);
        assert!((1.0..6.0).contains(&seconds), "{text}: {seconds} s");
        let mut r = ming_audio::resample::Resampler::new(rate, 16_000);
        let mut audio = vec![0.0; 8_000];
        r.push(&speech, &mut audio);
        r.finish(&mut audio);
        audio.extend(vec![0.0; 8_000]);
        let heard = engine()
            .stt
            .decode_blocking(audio, engine().pipeline.ctx_margin)
            .expect("decode");
        let e = edit_distance(&words(text), &words(&heard.text));
        println!("{text:?} → {:?} ({e} errors)", heard.text);
        n += words(text).len();
        errors += e;
    }
    assert!(errors * 20 <= n, "{errors} errors in {n} words");
    let started = std::time::Instant::now();
    tts.synthesize(None, 175, "What time is it?")
        .expect("piper");
    println!(
        "a short reply from the running helper: {:?}",
        started.elapsed()
    );
    // A slower rate is longer speech (half the rate: about twice as long; the voice samples
    // its durations, so only by a clear margin).
    let long = "What is on my calendar tomorrow, and when is my next meeting with Anna?";
    let (_, normal) = tts.synthesize(None, 175, long).expect("piper");
    let (_, slow) = tts.synthesize(None, 88, long).expect("piper");
    println!("{} samples at 175 wpm, {} at 88", normal.len(), slow.len());
    assert!(
        slow.len() > normal.len() * 7 / 5,
        "{} vs {}",
        slow.len(),
        normal.len()
    );
    // A request it cannot speak is an error, and the helper goes on serving.
    let pid = tts.helper_pid().expect("the helper runs");
    let e = tts.synthesize(None, 175, " ").unwrap_err();
    assert!(e.to_string().contains("no text"), "{e}");
    assert_eq!(tts.helper_pid(), Some(pid));
    // A helper that dies is started again at the next reply.
    // SAFETY: kill(2) on a process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let (_, again) = tts
        .synthesize(None, 175, "What time is it?")
        .expect("restarted");
    assert!(!again.is_empty());
    assert!(tts.helper_pid().is_some_and(|p| p != pid));
}

/// A Piper voice without its runtime or model is a clear error naming the fix.
#[test]
fn a_missing_piper_voice_is_a_clear_error() {
    let mut a = config().audio.clone();
    a.tts_engine = "piper".into();
    let empty = tempfile::tempdir().unwrap();
    let e = ming_audio::tts::Engine::from_config(&a, empty.path()).unwrap_err();
    assert!(e.contains("just models"), "{e}");
    a.tts_piper_voice = "whisper-tiny.en".into();
    let e = ming_audio::tts::Engine::from_config(&a, empty.path()).unwrap_err();
    assert!(e.contains("role `stt`, not `tts`"), "{e}");
}

/// 16 kHz audio of espeak-ng saying `text`, with 0.2 s of silence before and 0.5 s after.
fn spoken_16k(text: &str, voice: &str, wpm: u32) -> Vec<f32> {
    let (rate, speech) = speech(text, voice, wpm);
    let mut r = ming_audio::resample::Resampler::new(rate, 16_000);
    let mut audio = vec![0.0; 3_200];
    r.push(&speech, &mut audio);
    r.finish(&mut audio);
    audio.extend(vec![0.0; 8_000]);
    audio
}

/// `text` as a live turn's audio holds it: the pre-roll's 192 ms of silence before the speech,
/// and cut where the sound stops (the turn's end; the decoder adds its own silence after).
fn turn_16k(text: &str, voice: &str, wpm: u32) -> Vec<f32> {
    let (rate, speech) = speech(text, voice, wpm);
    let mut r = ming_audio::resample::Resampler::new(rate, 16_000);
    let lead = 3_072;
    let mut audio = vec![0.0; lead];
    r.push(&speech, &mut audio);
    r.finish(&mut audio);
    while audio.len() > lead && audio.last().is_some_and(|s| s.abs() < 0.01) {
        audio.pop();
    }
    audio
}

/// The guided search's limits as the audio service sets them by default.
/// The agent's reminder pattern for "ping me in …" (`agent.patterns`), as it sends it.
const PING_PATTERN: &str = r"(?i)^\s*(?:please\s+)?(?:give me a (?:shout|call|nudge|ping|buzz)|ping me|nudge me|buzz me|wake me(?: up)?|alert me|let me know)\s+in\s+(?P<d>(?:half (?:an? )?hour|(?:\d+\.\d+|(\d+|an?|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?)|to|too|into)(?: and a half)?[ -]?(?:hours?|hrs?|minutes?|mins?|seconds?|secs?)(?:,? (?:and )?(?:\d+\.\d+|(\d+|an?|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?)|to|too|into)(?: and a half)?[ -]?(?:hours?|hrs?|minutes?|mins?|seconds?|secs?))*(?: and a half)?))(?:\s+(?:to|that|about)\s+(?P<what>.+?))?[.!]?\s*$";
/// The agent's timer pattern as it sends it: a word, a duration and a word may come before
/// "timer", so nearly any first word can begin a timer.
const TIMER_PATTERN: &str = r"(?i)^\s*(?:please\s+)?(?:set|start|make|create)?\s*(?:a|an)?\s*(?P<pre>(?:[\w-]+ )?(?:(?:(?:\d+\.\d+|\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?|to|too|into)(?: and a half)?[ -]?(?:hours?|hrs?|minutes?|mins?|seconds?|secs?)|an[ -]?(?:hour|hr)(?: and a half)?|a[ -]?(?:minute|min|second|sec)(?: and a half)?) )?(?:[\w-]+ )?)\s*(?:timer|countdown|count down)\s*(?:for|of|from)?\s*(?:(?P<d>(?:half (?:an? )?hour|(?:(?:\d+\.\d+|\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?|to|too|into)(?: and a half)?[ -]?(?:hours?|hrs?|minutes?|mins?|seconds?|secs?)|an[ -]?(?:hour|hr)(?: and a half)?|a[ -]?(?:minute|min|second|sec)(?: and a half)?)(?:,? (?:and )?(?:(?:\d+\.\d+|\d+|zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety)(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?|to|too|into)(?: and a half)?[ -]?(?:hours?|hrs?|minutes?|mins?|seconds?|secs?)|an[ -]?(?:hour|hr)(?: and a half)?|a[ -]?(?:minute|min|second|sec)(?: and a half)?))*(?: and a half)?))(?:\s+(?:for|called|named)\s+(?P<label>[\w ]+))?)?[.!]?\s*$";

fn guide_limits() -> ming_audio::guide::Limits {
    ming_audio::guide::Limits {
        max_regret: ming_audio::guide::DEFAULT_MAX_REGRET,
        max_calls: 80,
        max_tokens: 48,
    }
}

/// The guided reading (`guide.rs`) with the real tiny.en: misheard commands come back as the
/// command the patterns know, at a small cost in log-probability; speech that is no command
/// gets no guided reading within the default limit; a command heard right is left alone.
#[test]
fn a_guided_reading_finds_the_command_in_misheard_audio() {
    use ming_audio::guide::Guide;
    use ming_audio::stt::Samples;
    let _turn = one_decoder_at_a_time();
    // Three of the agent's own patterns (`agent.patterns`), as it sends them.
    let guide = std::sync::Arc::new(
        Guide::new(&[
            r"(?i)^\s*(?:search|find|look for)(?: in)?(?: my)? notes? (?:for|about|with|containing) (?P<q>.+?)[.?!]?\s*$",
            r"(?i)^\s*(?:am i busy|do i have anything|have i got anything|is there anything|what do i have|what have i got)(?: on)?\s*(?P<day>today|tomorrow|(?:on\s+)?(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)|\d{4}-\d{2}-\d{2})[?.!]?\s*$",
            r"(?i)^\s*(?:please\s+)?(?:what(?:'s| is) the time|what time is it|(?:tell|give) me the time|do you (?:know|have) the time)(?: now| right now| please)?[?.!]?\s*$",
        ])
        .expect("the patterns compile"),
    );
    let limits = guide_limits();
    let engine = engine();
    let (stt, margin) = (engine.stt, engine.pipeline.ctx_margin);
    let decode = |audio: &Samples, guided: bool| {
        stt.decode_guided_blocking(
            audio.clone(),
            margin,
            guided.then(|| (std::sync::Arc::clone(&guide), limits)),
        )
        .expect("decode")
    };
    let hear = |text: &str, voice: &str, wpm: u32| {
        decode(&Samples::new(spoken_16k(text, voice, wpm)), true)
    };
    for (said, voice, wpm) in [
        ("Search my notes for milk.", "en-gb+f3", 180),
        ("What do I have on Friday?", "en-us", 200),
    ] {
        let audio = Samples::new(spoken_16k(said, voice, wpm));
        let d = decode(&audio, true);
        let g = d
            .guided
            .as_ref()
            .unwrap_or_else(|| panic!("{said:?} heard as {:?}, no guided reading", d.text));
        println!("{said:?}: {:?} → {:?}", d.text, g);
        assert_ne!(
            words(&d.text),
            words(said),
            "no longer misheard: pick another case"
        );
        assert_eq!(words(&g.text), words(said));
        assert!(g.regret > 0.0 && g.regret <= limits.max_regret, "{g:?}");
        assert!(g.encoded, "{g:?}");
        // Guided right after its free reading (as a live turn is): the encoder output of the
        // same samples is still there, and the search finds the same reading without it.
        let free = decode(&audio, false);
        assert_eq!(free.text, d.text);
        assert!(free.guided.is_none());
        let again = decode(&audio, true);
        let g2 = again.guided.expect("the same guided reading");
        assert!(!g2.encoded, "{g2:?}");
        assert_eq!(again.text, d.text);
        assert_eq!(g2.text, g.text);
        assert!((g2.regret - g.regret).abs() < 0.05, "{g2:?} against {g:?}");
    }
    for said in [
        "Tell me a joke about penguins.",
        "Play some relaxing music.",
    ] {
        let d = hear(said, "en-us", 175);
        assert!(
            d.guided.is_none(),
            "{said:?}: {:?} → {:?}",
            d.text,
            d.guided
        );
    }
    // Heard right: already a command the guide knows, so there is nothing to search.
    let d = hear("What time is it?", "en-us", 175);
    assert_eq!(d.text, "What time is it?");
    assert!(d.guided.is_none(), "{:?}", d.guided);
}

/// The first word of a guided reading is searched wider than the rest: with the timer pattern
/// letting nearly any word begin a command, the decoder's likeliest first words for "Ping"
/// ("Bring", "bring", "Think", "Sing" — one of them twice, in two cases) had taken every place,
/// and no command reading was found. Now a word in another case takes no place, and eight
/// first words are tried.
#[test]
fn a_misheard_first_word_is_searched_wide() {
    use ming_audio::guide::Guide;
    use ming_audio::stt::Samples;
    let _turn = one_decoder_at_a_time();
    let guide = std::sync::Arc::new(
        Guide::new(&[TIMER_PATTERN, PING_PATTERN]).expect("the patterns compile"),
    );
    let limits = guide_limits();
    let engine = engine();
    let (stt, margin) = (engine.stt, engine.pipeline.ctx_margin);
    let said = "Ping me in two hours about the laundry.";
    let audio = Samples::new(spoken_16k(said, "en-gb", 160));
    let d = stt
        .decode_guided_blocking(audio, margin, Some((guide, limits)))
        .expect("decode");
    println!("{said:?}: {:?} → {:?}", d.text, d.guided);
    assert!(
        !d.text.to_lowercase().starts_with("ping me"),
        "heard right ({:?}): pick another case",
        d.text
    );
    let g = d
        .guided
        .unwrap_or_else(|| panic!("{said:?} heard as {:?}, no guided reading", d.text));
    let text = g.text.to_lowercase();
    assert!(text.starts_with("ping me in"), "{g:?}");
    assert!(text.ends_with("hours about the laundry."), "{g:?}");
    assert!(g.regret <= limits.max_regret, "{g:?}");
}

/// The second model's own guided reading (`lib.rs`, `guided_reading_again`): when whisper base,
/// hearing a turn again, still writes no command the rules know, the guide searches base's own
/// encoder output as it does tiny.en's, without encoding again. Of the commands below (as the
/// voice bench speaks them), those base mishears are checked (at least one must be).
#[test]
fn the_second_model_has_a_guided_reading_of_its_own() {
    use ming_audio::guide::Guide;
    use ming_audio::stt::Samples;
    let _turn = one_decoder_at_a_time();
    // Two of the agent's own patterns (`agent.patterns`), as it sends them.
    let guide = std::sync::Arc::new(
        Guide::new(&[
            PING_PATTERN,
            r"(?i)^\s*(?:please\s+)?(?:what(?:'s| is) (?:the date|today's date|the day|today)|what day is (?:it|today)|(?:tell|give) me (?:the date|today's date|what day it is))(?: today)?[?.!]?\s*$",
        ])
        .expect("the patterns compile"),
    );
    let limits = guide_limits();
    let mut cfg = config();
    cfg.audio.stt_model = cfg.audio.stt_second_model.clone();
    cfg.audio.stt_ctx_margin = cfg.audio.stt_second_ctx_margin;
    let engine = ming_audio::load_engine(&cfg).expect("the audio models (run `just models`)");
    let (stt, margin) = (engine.stt, engine.pipeline.ctx_margin);
    let decode = |audio: &Samples, guided: bool| {
        stt.decode_guided_blocking(
            audio.clone(),
            margin,
            guided.then(|| (std::sync::Arc::clone(&guide), limits)),
        )
        .expect("decode")
    };
    let mut misheard = 0;
    for (said, voice, wpm) in [
        ("Ping me in two hours about the laundry.", "en-gb", 160),
        ("What's today's date?", "en-gb", 160),
    ] {
        let audio = Samples::new(spoken_16k(said, voice, wpm));
        // As live: the second model's free reading first, then its guided one.
        let free = decode(&audio, false);
        if words(&free.text) == words(said) {
            println!("{said:?}: heard right");
            continue;
        }
        misheard += 1;
        let d = decode(&audio, true);
        assert_eq!(d.text, free.text);
        let g = d
            .guided
            .as_ref()
            .unwrap_or_else(|| panic!("{said:?} heard as {:?}, no guided reading", d.text));
        println!("{said:?}: {:?} → {g:?}", d.text);
        assert_eq!(words(&g.text), words(said));
        assert!(g.regret <= limits.max_regret, "{g:?}");
        assert!(!g.encoded, "{g:?}");
    }
    assert!(misheard > 0, "base heard every command right: pick others");
}

/// The first model judges the second's guided readings (`stt::Job::judge`): whisper base hears
/// espeak-ng's "Count down ninety seconds." as "Count down an de-second." and its guided search
/// likes "Count down 20 seconds." best, "… 90 …" ~0.4 nats behind; tiny.en, which heard
/// "I'll do seconds.", has "90" as its second choice at the number. Summed, "90" comes first.
/// The judge speaks only for the audio it holds: once it has decoded other speech, base's own
/// first choice stands.
#[test]
fn the_first_model_judges_the_second_models_guided_readings() {
    use ming_audio::guide::Guide;
    use ming_audio::stt::{Samples, Stt};
    let _turn = one_decoder_at_a_time();
    let guide = std::sync::Arc::new(Guide::new(&[TIMER_PATTERN]).expect("the pattern compiles"));
    let limits = guide_limits();
    let first = engine();
    let (tiny, tiny_margin) = (first.stt, first.pipeline.ctx_margin);
    let mut cfg = config();
    cfg.audio.stt_model = cfg.audio.stt_second_model.clone();
    cfg.audio.stt_ctx_margin = cfg.audio.stt_second_ctx_margin;
    let second = ming_audio::load_engine(&cfg).expect("the audio models (run `just models`)");
    let (base, base_margin) = (second.stt, second.pipeline.ctx_margin);
    let said = "Count down ninety seconds.";
    let audio = Samples::new(turn_16k(said, "en-gb+f3", 180));
    let heard_first = tiny
        .decode_blocking(audio.0.to_vec(), tiny_margin)
        .expect("decode");
    // As live: the first model's decode of these very samples (its state holds them)...
    let first_free = tiny
        .decode_guided_blocking(audio.clone(), tiny_margin, None)
        .expect("decode");
    assert_eq!(first_free.text, heard_first.text);
    // ...then the second model's free reading, and its guided one, alone and judged.
    let second_free = base
        .decode_guided_blocking(audio.clone(), base_margin, None)
        .expect("decode");
    // Base's decode of `audio` guided by `guide`, judged by `judge`.
    let base_guided = |audio: &Samples, guide: &std::sync::Arc<Guide>, judge: Option<&Stt>| {
        base.decode_judged_blocking(
            audio.clone(),
            base_margin,
            Some((std::sync::Arc::clone(guide), limits)),
            judge.cloned(),
        )
        .expect("decode")
    };
    let g = |judge: Option<&Stt>| base_guided(&audio, &guide, judge).guided;
    println!("tiny.en {:?}, base {:?}", first_free.text, second_free.text);
    let alone = g(None).expect("base has a guided reading of its own");
    let judged = g(Some(&tiny)).expect("a judged guided reading");
    println!(
        "{said:?}: tiny.en {:?}, base {:?}; base's guided reading {alone:?}, judged {judged:?}",
        first_free.text, second_free.text
    );
    assert!(alone.judged.is_none(), "{alone:?}");
    assert_eq!(
        words(&judged.text),
        words("Count down 90 seconds."),
        "{judged:?}"
    );
    let j = judged.judged.as_ref().expect("judged");
    assert!(j.regret.is_finite() && j.regret >= 0.0, "{j:?}");
    assert!(judged.regret <= limits.max_regret, "{judged:?}");
    // Looking past the best costs a bounded number of decoder tokens.
    assert!(
        judged.calls <= alone.calls + ming_audio::guide::JUDGED.calls,
        "{judged:?} after {alone:?}"
    );
    if words(&alone.text) != words(&judged.text) {
        assert_eq!(j.overruled.as_deref(), Some(alone.text.as_str()));
    }
    // A reading without a number is not looked past: nothing to judge, nothing to wait for.
    let note = std::sync::Arc::new(
        Guide::new(&[
            r"(?i)^\s*(?:please\s+)?(?:(?:write|right|jot|note) down(?: that\b)?|note (?:that|on)\b)\s*:?\s*(?P<text>.+?)\s*$",
        ])
        .expect("the pattern compiles"),
    );
    let mut looked = 0;
    for (said, voice, wpm) in [
        ("Note down the dentist number.", "en-us", 200),
        ("Write down that the car needs new brakes.", "en-us", 175),
    ] {
        let heard = Samples::new(turn_16k(said, voice, wpm));
        tiny.decode_guided_blocking(heard.clone(), tiny_margin, None)
            .expect("decode");
        let (a, j) = (
            base_guided(&heard, &note, None),
            base_guided(&heard, &note, Some(&tiny)),
        );
        println!("{said:?}: base {:?}, guided {:?}", a.text, a.guided);
        if let (Some(a), Some(j)) = (&a.guided, &j.guided) {
            assert!(!ming_audio::guide::has_number(&a.text), "{a:?}");
            assert_eq!((a.text.as_str(), a.calls), (j.text.as_str(), j.calls));
            assert!(j.judged.is_none(), "{j:?}");
            looked += 1;
        }
    }
    assert!(looked > 0, "base heard every note right: pick others");
    // The first model moves on to other speech: it can no longer judge these samples.
    tiny.decode_blocking(spoken_16k("Stop the music.", "en-us", 175), tiny_margin)
        .expect("decode");
    let unjudged = g(Some(&tiny)).expect("a guided reading");
    assert!(unjudged.judged.is_none(), "{unjudged:?}");
    assert_eq!(unjudged.text, alone.text);
}

/// Live, with the guide: the guided reading of a pause's transcript is searched while the turn
/// waits out its hangover, on the samples of the speculative decode that becomes the final, and
/// is waiting there when the agent cannot act on the first reading (`TurnAudio::take_ahead`);
/// the second model's hearing of the same samples follows (`TurnAudio::take_second`). Real models and espeak-ng speech fed in 20 ms blocks at
/// real-time pace; of the commands below, those tiny.en mishears live are checked (one the
/// guide sets right and one it cannot, at least).
#[test]
fn a_live_turn_has_its_guided_reading_searched_ahead() {
    use ming_audio::guide::{GuideCache, Limits};
    use ming_audio::pipeline::{Input, Mode, TurnAudio};
    use std::time::{Duration, Instant};
    let _turn = one_decoder_at_a_time();
    let cache = std::sync::Arc::new(GuideCache::new(Limits {
        max_regret: ming_audio::guide::DEFAULT_MAX_REGRET,
        max_calls: 80,
        max_tokens: 48,
    }));
    cache
        .set(&[
            r"(?i)^\s*(?:search|find|look for)(?: in)?(?: my)? notes? (?:for|about|with|containing) (?P<q>.+?)[.?!]?\s*$",
            r"(?i)^\s*what(?:'s| is) (?:the |today's )?(?:date|day)(?: today)?[?.!]?\s*$",
            r"(?i)^\s*(?:set|start) a timer for (?P<d>[\w ]+?)[.!]?\s*$",
        ])
        .expect("the patterns compile");
    let engine = engine();
    assert!(
        engine.second.is_some(),
        "the default config has a second model"
    );
    let wait = |what: &str, poll: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !poll() {
            assert!(Instant::now() < deadline, "{what} never finished");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let (mut checked, mut found_nothing) = (0, 0);
    for (said, voice, wpm) in [
        ("Search my notes for milk.", "en-gb+f3", 180),
        ("Find my note about the plumber.", "en-us", 175),
        ("What's the date today?", "en-us", 200),
        ("Set a timer for one hour.", "en-us", 175),
        ("What's today's date?", "en-gb", 160),
    ] {
        let keep = TurnAudio::default();
        let (tx, rx) = std::sync::mpsc::channel::<Input>();
        let mut p = engine
            .pipeline(Mode::Live, 16_000, tx)
            .with_turn_audio(keep.clone())
            .with_guide(std::sync::Arc::clone(&cache), engine.second.clone());
        let mut audio = spoken_16k(said, voice, wpm);
        audio.extend(vec![0.0; 16_000]);
        let mut out = Vec::new();
        let t0 = Instant::now();
        let t0_mono = ming_bus::mono_ms();
        for (i, c) in audio.chunks(320).enumerate() {
            p.handle(Input::Audio(c.to_vec()), &mut out);
            while let Ok(input) = rx.try_recv() {
                p.handle(input, &mut out);
            }
            let due = t0 + Duration::from_millis(20 * (i as u64 + 1));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while !out.iter().any(|o| matches!(o, Output::Final(_))) && Instant::now() < deadline {
            if let Ok(input) = rx.recv_timeout(Duration::from_millis(200)) {
                p.handle(input, &mut out);
            }
        }
        let f = finals(&out);
        assert_eq!(f.len(), 1, "{said:?}: {f:?}");
        if words(&f[0].text) == words(said) {
            println!("{said:?} ({voice}, {wpm}): heard right, nothing to search");
            continue;
        }
        let samples = keep.take(f[0].utterance).expect("the turn's audio is kept");
        let mut ahead = keep
            .take_ahead(&samples)
            .unwrap_or_else(|| panic!("{said:?}: no search ahead for {:?}", f[0].text));
        let mut second = keep
            .take_second(&samples)
            .unwrap_or_else(|| panic!("{said:?}: no second hearing decided ahead"));
        let mut found = None;
        wait("the search ahead", &mut || {
            found = ahead.borrow_and_update().clone();
            found.is_some()
        });
        let mut heard = None;
        wait("the second hearing ahead", &mut || {
            heard = second.borrow_and_update().clone();
            heard.is_some()
        });
        let g = found.and_then(Result::ok).expect("the search finished");
        // The second model heard the turn ahead whether or not the search found a reading (the
        // agent may not take the one it found).
        let d = heard
            .expect("decided")
            .expect("the second model heard the turn ahead");
        assert!(d.audio.same(&samples), "the same samples");
        assert!(!d.text.is_empty());
        println!(
            "    the second model, ahead: {:?} in {:.0} ms, guided {:?}",
            d.text, d.decode_ms, d.guided
        );
        println!(
            "{said:?} ({voice}, {wpm}) heard as {:?}, searched ahead: {g:?}",
            f[0].text
        );
        // What ran ahead says when it ran (the stages of a reading heard again come from it):
        // the second model after the search, both after the speech began and before now.
        let (spoke, now) = (t0_mono, ming_bus::mono_ms());
        assert!(
            spoke < d.started_ms && d.started_ms + d.decode_ms <= now,
            "the second hearing ran at {} ms for {} ms, speech from {spoke}, now {now}",
            d.started_ms,
            d.decode_ms
        );
        if let Some(g) = &g {
            assert!(
                spoke < g.started_ms && g.started_ms + g.ms <= d.started_ms + 1.0,
                "the search ran at {} ms for {} ms, the second hearing from {}",
                g.started_ms,
                g.ms,
                d.started_ms
            );
        }
        match g {
            Some(g) => {
                assert!(
                    !g.encoded,
                    "the search reused the speculative decode's encoding: {g:?}"
                );
                assert_eq!(words(&g.text), words(said));
                checked += 1;
            }
            None => found_nothing += 1,
        }
    }
    assert!(
        checked > 0,
        "no command was misheard and set right: pick other cases"
    );
    assert!(
        found_nothing > 0,
        "no search found nothing: pick other cases"
    );
}
