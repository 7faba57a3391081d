//! Shared by the audio tests: the real models `just models` placed, and speech made by
//! espeak-ng at run time.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use ming_audio::source::Engine;
use ming_audio::wav::PcmReader;
use ming_config::{Config, LoadOptions, Paths};

pub fn config() -> Config {
    Config::load(&LoadOptions {
        file: None,
        skip_system_and_user: true,
    })
    .expect("default config")
}

pub fn model(name: &str, role: &str) -> PathBuf {
    let paths = Paths::resolve(&config().paths);
    match ming_config::models::resolve(name, role, &paths.model_dir) {
        Ok((_, p)) => p,
        Err(e) => panic!("{e} (the audio tests use the real models)"),
    }
}

/// One engine for the whole test binary (loading whisper takes a moment).
pub fn engine() -> Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        ming_audio::load_engine(&config()).expect("the audio models (run `just models`)")
    })
    .clone()
}

/// espeak-ng's speech for `text` as (rate, mono samples).
pub fn speech(text: &str, voice: &str, wpm: u32) -> (u32, Vec<f32>) {
    ming_audio::tts::synthesize("espeak-ng", voice, wpm, text)
        .expect("espeak-ng (just setup installs it)")
}

/// Reads a WAV file from tests/data.
pub fn data_wav(name: &str) -> (u32, Vec<f32>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let f = std::fs::File::open(&path).expect("test data");
    let mut r = PcmReader::wav(f).expect("wav");
    let mut all = Vec::new();
    let mut b = Vec::new();
    while r.read_block(&mut b, 4096).expect("read") {
        all.extend_from_slice(&b);
    }
    (r.format.rate, all)
}

/// Speech with `before` and `after` seconds of silence around it, at its own rate.
pub fn padded(rate: u32, speech: &[f32], before: f64, after: f64) -> Vec<f32> {
    let mut v = vec![0.0; (before * f64::from(rate)) as usize];
    v.extend_from_slice(speech);
    v.extend(std::iter::repeat_n(0.0, (after * f64::from(rate)) as usize));
    v
}

/// Where espeak-ng's speech really starts and ends (first and last sample above a small level).
pub fn true_bounds(samples: &[f32]) -> (usize, usize) {
    let loud = |s: &f32| s.abs() > 0.003;
    let a = samples.iter().position(loud).unwrap_or(0);
    let b = samples.iter().rposition(loud).unwrap_or(samples.len());
    (a, b + 1)
}

/// Word error rate: word-level edit distance over the reference length, after lower-casing and
/// dropping punctuation; numbers as digits and as words both count.
pub fn words(s: &str) -> Vec<String> {
    // Times and decimals as their words ("6:30", "6.30" → six thirty), as Whisper's English
    // normaliser does before scoring.
    let mut t = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = i > 0
            && i + 1 < chars.len()
            && chars[i - 1].is_ascii_digit()
            && chars[i + 1].is_ascii_digit();
        t.push(if (c == ':' || c == '.') && between_digits {
            ' '
        } else {
            c
        });
    }
    t.to_lowercase()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                .to_string()
        })
        .filter(|w| !w.is_empty())
        .flat_map(|w| number_words(&w))
        .collect()
}

fn number_words(w: &str) -> Vec<String> {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    match w.parse::<usize>() {
        Ok(n) if n < 20 => vec![ONES[n].to_string()],
        Ok(n) if n < 100 && n % 10 == 0 => vec![TENS[n / 10].to_string()],
        Ok(n) if n < 100 => vec![TENS[n / 10].to_string(), ONES[n % 10].to_string()],
        _ => vec![w.to_string()],
    }
}

pub fn edit_distance(a: &[String], b: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn has_espeak() -> bool {
    Command::new("espeak-ng").arg("--version").output().is_ok()
}
