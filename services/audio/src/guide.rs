//! Decoding guided toward the commands the agent knows.
//!
//! Whisper tiny.en mishears espeak-ng's voices ("Think me into hours about the laundry" for
//! "Ping me in two hours …"); the words the agent's rules need are often a close second
//! choice of the decoder. When a final reading is not a command the guide knows, the same
//! audio (its encoder output is still in the whisper state) is decoded again, keeping only
//! texts that can still be a command: a prefix of a match of one of the guide's patterns
//! (regular expressions, the agent's own, fetched over the bus). What each choice costs is
//! its *regret*: the log-probability given up against the decoder's own first choice at that
//! step. The search is best-first on the summed regret (Dijkstra: regret never falls), so the
//! first complete reading it reaches is the command reading the audio supports best; it
//! gives up past `max_regret` or a budget of decoded tokens. A reading with a small regret is
//! one the audio supports nearly as well as the free one; a large regret means the guide
//! forced words the audio does not hold.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::util::start;
use regex_automata::util::syntax;
use regex_automata::Anchored;
use whisper_rs::{WhisperContext, WhisperState, WhisperTokenId};

/// Candidates looked at per step, most likely first.
const TOP_K: usize = 32;
/// Continuations kept per expanded reading.
const BRANCH: usize = 4;
/// First words kept: the first word mostly decides which command a reading can be, and the
/// decoder's likeliest first words are often one misheard word spelt several ways ("Bring",
/// "Think", "Sing", "Thing" for "Ping"); with four, "Ping" was never tried.
const FIRST_BRANCH: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum GuideError {
    #[error("the command patterns do not compile: {0}")]
    Patterns(String),
    #[error("guided decoding failed: {0}")]
    Decode(String),
    #[error("guided decoding was aborted")]
    Aborted,
}

/// The patterns, compiled into one lazy DFA (ASCII, anchored at the start; `$` holds at the
/// end). Its states are built as texts need them, in a cache large enough that one search
/// never clears it (a search that sees it cleared gives up: its state ids would be stale).
pub struct Guide {
    dfa: DFA,
    cache: Mutex<Cache>,
    /// How many patterns (for logs).
    pub patterns: usize,
}

impl Guide {
    /// Compiles `patterns` (Rust regex syntax; compiled for ASCII text).
    ///
    /// # Errors
    /// [`GuideError::Patterns`] when one does not compile or there are none.
    pub fn new<P: AsRef<str>>(patterns: &[P]) -> Result<Self, GuideError> {
        if patterns.is_empty() {
            return Err(GuideError::Patterns("no patterns".into()));
        }
        let dfa = DFA::builder()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .configure(DFA::config().cache_capacity(16 << 20))
            .build_many(patterns)
            .map_err(|e| GuideError::Patterns(e.to_string()))?;
        let cache = Mutex::new(dfa.create_cache());
        Ok(Self {
            dfa,
            cache,
            patterns: patterns.len(),
        })
    }

    fn start(&self, cache: &mut Cache) -> Option<LazyStateID> {
        self.dfa
            .start_state(cache, &start::Config::new().anchored(Anchored::Yes))
            .ok()
    }

    /// The state after `bytes` from `from`; `None` once no pattern can match any more.
    fn feed(&self, cache: &mut Cache, from: LazyStateID, bytes: &[u8]) -> Option<LazyStateID> {
        let mut s = from;
        for &b in bytes {
            s = self.dfa.next_state(cache, s, b).ok()?;
            if s.is_dead() || s.is_quit() {
                return None;
            }
        }
        Some(s)
    }

    /// Whether a text ending in `state` is a whole match.
    fn complete(&self, cache: &mut Cache, state: LazyStateID) -> bool {
        self.dfa
            .next_eoi_state(cache, state)
            .is_ok_and(|s| s.is_match())
    }

    /// Whether `text` (as whisper wrote it, with its leading space or not) is a command the
    /// patterns know.
    pub fn accepts(&self, text: &str) -> bool {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let cache = &mut *cache;
        self.start(cache)
            .and_then(|s| self.feed(cache, s, text.as_bytes()))
            .is_some_and(|s| self.complete(cache, s))
    }
}

/// What the decoder needs of the model's vocabulary.
pub struct Vocab {
    bytes: Vec<Vec<u8>>,
    eot: WhisperTokenId,
    beg: WhisperTokenId,
    prompt: Vec<WhisperTokenId>,
    /// The fastest decoder call seen on more than one thread, per token-equivalent
    /// ([`Pace`]), in nanoseconds; kept from search to search.
    fastest: AtomicU64,
}

impl Vocab {
    pub fn new(ctx: &WhisperContext) -> Self {
        let eot = ctx.token_eot();
        let bytes = (0..eot)
            .map(|id| {
                ctx.token_to_bytes(id)
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default()
            })
            .collect();
        let mut prompt = vec![ctx.token_sot()];
        if ctx.is_multilingual() {
            prompt.push(ctx.token_lang(0)); // English
            prompt.push(ctx.token_transcribe());
        }
        // The first timestamp (<|0.00|>): whisper's segments start with one.
        prompt.push(ctx.token_beg());
        Self {
            bytes,
            eot,
            beg: ctx.token_beg(),
            prompt,
            fastest: AtomicU64::new(u64::MAX),
        }
    }
}

/// A guided reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Guided {
    pub text: String,
    /// Log-probability given up against the decoder's own choices (nats, ≥ 0).
    pub regret: f32,
    /// Steps at which the guide overruled the decoder's first choice.
    pub overruled: u32,
    /// Tokens the search gave the decoder (a reading it turns to is brought up to date in one
    /// call of the tokens it lacks).
    pub calls: u32,
    /// How long the search took (ms).
    pub ms: f64,
    /// When the search began (`ming_bus::mono_ms`): one run ahead of need began before the
    /// turn took it.
    pub started_ms: f64,
    /// Whether the audio was encoded for it (`false`: the encoder output of the free reading
    /// just before was still there).
    pub encoded: bool,
    /// When another model judged this search's readings (see [`JUDGED`]): what this
    /// reading cost that model, and the reading this model liked best when that was another.
    pub judged: Option<Judged>,
}

/// The other model's say in a guided reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// The chosen reading's regret under the judging model (nats).
    pub regret: f32,
    /// This model's own first choice, when the judge's sum put another before it.
    pub overruled: Option<String>,
}

/// How far a guided search goes on after its best reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alternates {
    /// Readings in all, the best included, that differ in their words.
    pub readings: usize,
    /// Nats behind the best at most.
    pub within: f32,
    /// Decoder tokens spent after the best was found, at most (within the search's budget).
    pub calls: u32,
    /// Only past a best reading that holds a number ([`has_number`]).
    pub numbers_only: bool,
}

impl Alternates {
    /// The best reading only.
    pub const NONE: Alternates = Alternates {
        readings: 1,
        within: 0.0,
        calls: 0,
        numbers_only: false,
    };
}

/// A second model's guided search, when the first model can judge it and its best reading holds a
/// number, looks at up to three distinct readings within 0.75 nats of its best, found within 16
/// more decoder tokens, and takes the one whose regrets under both models sum lowest. Why (offline
/// over the voice corpus, base q8_0 searching, tiny.en judging, 2026-12-07): base's guided readings
/// of espeak-ng's "Count down ninety seconds." were "Count down 20 seconds." 1.65, "… 30 …" 1.67,
/// "… 90 …" 2.07 nats — base hears "count down" and not the number, tiny.en the other way round
/// ("I'll do seconds."; "90" its second choice at the number, 0.52 nats) — and with tiny.en's
/// regrets added "90" comes first; "Timer for five minutes." went from "timer 45 minutes" (3.06) to
/// "timer for 5 minutes" (3.30). No reading of the corpus that base's search had right was turned
/// wrong. The two that won were 0.24 and 0.42 nats behind; all three of "Count down …" were in by
/// 14 tokens after the first. The cap bounds what the turns that need base pay for it (base's
/// decoder calls take ~2.5 ms a token on two cores).
/// Numbers only: live, the look past the best and the judging took base's guided searches from a
/// median ~60 ms (29–126, bench47–51) to ~140 ms (41–382, bench52–55) on the turns that need base,
/// which are the slowest of a pass, while every reading the judge set right held a number ("90",
/// "5", and live "… on Friday at 9" for "Schedule a dentist appointment on Friday at nine."). A
/// number is where the two models' ears differ most, and a wrong one is a wrong action (a 20-second
/// timer for 90 seconds) that no pattern catches.
pub const JUDGED: Alternates = Alternates {
    readings: 3,
    within: 0.75,
    calls: 16,
    numbers_only: true,
};

/// Whether `text` holds a number: a digit, or a number's word ("five", "ninety", "half").
pub fn has_number(text: &str) -> bool {
    const WORDS: &str = "one two three four five six seven eight nine ten eleven twelve \
        thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty \
        sixty seventy eighty ninety hundred half quarter noon midnight";
    text.chars().any(|c| c.is_ascii_digit())
        || word_keys(text)
            .iter()
            .any(|w| WORDS.split_whitespace().any(|n| n == w))
}

/// `audio.stt_guide_max_regret`'s default (`config/default.toml`): over the voice bench's 54
/// commands in espeak-ng's four voices (offline, and one live run), the misheard commands the
/// guide set right cost 0.1–3.7 nats; those it set wrong 1.8 (free text: "Note on the
/// dentist's number." → "Note that this number."), 4.8 and 5.5 ("What's today's made?" →
/// "What is today?", which the agent's rules then read as the calendar and now as the date:
/// right after all, at 4.1 in a later run); none of 12 sentences that were no command found a
/// reading within 8.
pub const DEFAULT_MAX_REGRET: f32 = 4.5;

/// Limits of one guided search.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_regret: f32,
    pub max_calls: u32,
    pub max_tokens: usize,
}

/// The guide as the audio service holds it: compiled once from the agent's patterns (fetched
/// at the first turn that needs it; a failed fetch is tried again at the next), and the
/// limits of each search.
pub struct GuideCache {
    pub limits: Limits,
    guide: Mutex<Option<Arc<Guide>>>,
}

impl GuideCache {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            guide: Mutex::new(None),
        }
    }

    /// The guide, if it has been compiled.
    pub fn get(&self) -> Option<Arc<Guide>> {
        self.guide.lock().ok()?.clone()
    }

    /// Compiles `patterns` and keeps the guide.
    ///
    /// # Errors
    /// [`GuideError::Patterns`] (the old guide, if any, is kept).
    pub fn set<P: AsRef<str>>(&self, patterns: &[P]) -> Result<Arc<Guide>, GuideError> {
        let g = Arc::new(Guide::new(patterns)?);
        if let Ok(mut slot) = self.guide.lock() {
            *slot = Some(Arc::clone(&g));
        }
        Ok(g)
    }
}

/// A reading being searched.
struct Hyp {
    regret: f32,
    tokens: Vec<WhisperTokenId>,
    state: LazyStateID,
    ended: bool,
    overruled: u32,
}

impl PartialEq for Hyp {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Hyp {}
impl PartialOrd for Hyp {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Hyp {
    /// The max-heap pops the least regret first; at equal regret, the longer reading.
    fn cmp(&self, o: &Self) -> Ordering {
        o.regret
            .total_cmp(&self.regret)
            .then(self.tokens.len().cmp(&o.tokens.len()))
    }
}

/// The threads the search's decoder calls run on. The search makes tens of small calls, and
/// ggml's threads wait for each other at every step of each: should another process take one
/// of two CPUs, two threads each wait on a thread that is not running. Offline, with one CPU
/// kept busy, the 31 searches of the voice bench's commands took 988 ms on average on two
/// threads and 124 on one (74 and 113 with both CPUs free). So a call much slower than the
/// fastest seen (this search's or an earlier one's) drops the rest of the search to one
/// thread.
struct Pace<'a> {
    threads: usize,
    /// The fastest call per token-equivalent, in nanoseconds ([`Vocab::fastest`]).
    fastest: &'a AtomicU64,
}

impl<'a> Pace<'a> {
    fn new(threads: usize, fastest: &'a AtomicU64) -> Self {
        Pace {
            threads: threads.max(1),
            fastest,
        }
    }

    fn decode(
        &mut self,
        state: &mut WhisperState,
        tokens: &[WhisperTokenId],
        past: usize,
    ) -> Result<(), whisper_rs::WhisperError> {
        let t = std::time::Instant::now();
        state.decode(tokens, past, self.threads)?;
        if self.threads > 1 {
            let took = t.elapsed().as_nanos() as f64;
            let size = call_size(tokens.len());
            let fastest = self.fastest.load(AtomicOrdering::Relaxed);
            if fastest != u64::MAX && slowed(fastest as f64 * size, took) {
                tracing::debug!(
                    took_ms = took / 1e6,
                    fastest_ms = fastest as f64 * size / 1e6,
                    "another process holds a CPU: the guided search goes on on one thread"
                );
                self.threads = 1;
            } else {
                self.fastest
                    .fetch_min((took / size) as u64, AtomicOrdering::Relaxed);
            }
        }
        Ok(())
    }
}

/// What a call of `n` tokens costs against one of one token: measured on tiny.en, two
/// threads, a median 2.0 ms for one token, 2.4 for two, 3.9 for three, 4.2 for five.
fn call_size(n: usize) -> f64 {
    1.0 + n.saturating_sub(1) as f64 / 2.0
}

/// Whether a call that took `took` ns, where the fastest such took `expected`, ran while
/// another process held a CPU (then it takes ~20 times as long; with the CPUs free, at most
/// 3.6 times the fastest was seen, and that by under 5 ms).
fn slowed(expected: f64, took: f64) -> bool {
    took > expected * 3.0 && took > expected + 8e6
}

/// A reading's words, as the agent's patterns see them (case and punctuation aside).
fn word_keys(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(crate::stt::word_key)
        .filter(|w| !w.is_empty())
        .collect()
}

/// Decodes the audio whose encoder output is in `state` (right after `full`) under the
/// guide: its best command reading, and after it as far as `more` says the next ones that
/// differ in their words, best first. Empty when no command reading is found within `limits`.
///
/// # Errors
/// [`GuideError::Decode`] when whisper.cpp's decoder fails; [`GuideError::Aborted`].
#[allow(clippy::too_many_arguments)]
pub fn decode(
    state: &mut WhisperState,
    vocab: &Vocab,
    guide: &Guide,
    threads: usize,
    limits: Limits,
    abort: &AtomicBool,
    more: Alternates,
) -> Result<Vec<Guided>, GuideError> {
    let mut found: Vec<Guided> = Vec::new();
    let started_ms = ming_bus::mono_ms();
    let err = |e: whisper_rs::WhisperError| GuideError::Decode(e.to_string());
    let mut cache = guide
        .cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cache = &mut *cache;
    let clears = cache.clear_count();
    let Some(start) = guide.start(cache) else {
        return Ok(Vec::new());
    };
    let p = vocab.prompt.len();
    let mut pace = Pace::new(threads, &vocab.fastest);
    pace.decode(state, &vocab.prompt, 0).map_err(err)?;
    // Tokens given to the decoder so far (the budget counts tokens, not calls: bringing the
    // decoder to another reading decodes all the tokens it lacks in one call), and how many
    // the last call had (its last row holds the logits).
    let mut calls = p as u32;
    let mut last_call = p;
    // The tokens after the prompt now in the decoder's cache; the logits are those of its
    // last token (of the prompt's when empty).
    let mut decoded: Vec<WhisperTokenId> = Vec::new();
    let eot = vocab.eot as usize;
    let beg = vocab.beg as usize;
    let mut heap = BinaryHeap::new();
    heap.push(Hyp {
        regret: 0.0,
        tokens: Vec::new(),
        state: start,
        ended: false,
        overruled: 0,
    });
    while let Some(h) = heap.pop() {
        // A search run ahead of need gives way to the next decode at once.
        if abort.load(AtomicOrdering::Relaxed) {
            return Err(GuideError::Aborted);
        }
        if cache.clear_count() != clears {
            tracing::debug!("the guide's DFA cache was cleared: guided decoding gives up");
            return Ok(found);
        }
        if found
            .first()
            .is_some_and(|b| h.regret > b.regret + more.within)
        {
            return Ok(found);
        }
        if h.ended {
            let text: Vec<u8> = h
                .tokens
                .iter()
                .flat_map(|&t| vocab.bytes[t as usize].iter().copied())
                .collect();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            // "Count down 90 seconds" after "Count down 90 seconds." is no other reading.
            let words = word_keys(&text);
            if found.iter().any(|f| word_keys(&f.text) == words) {
                continue;
            }
            found.push(Guided {
                text,
                regret: h.regret,
                overruled: h.overruled,
                calls,
                ms: 0.0,
                started_ms,
                encoded: false,
                judged: None,
            });
            if found.len() >= more.readings.max(1)
                || (more.numbers_only && !has_number(&found[0].text))
            {
                return Ok(found);
            }
            continue;
        }
        if h.tokens.len() >= limits.max_tokens {
            continue;
        }
        // Bring the decoder to this reading.
        if decoded != h.tokens {
            let mut same = decoded
                .iter()
                .zip(&h.tokens)
                .take_while(|(a, b)| a == b)
                .count();
            if same == h.tokens.len() {
                // A prefix of what is decoded: its last token again, for its logits.
                same = same.saturating_sub(1);
                if h.tokens.is_empty() {
                    pace.decode(state, &[vocab.beg], p - 1).map_err(err)?;
                    calls += 1;
                    last_call = 1;
                }
            }
            decoded.truncate(same);
            let todo = &h.tokens[same..];
            if !todo.is_empty() {
                // Looking past the best: only as far as `more.calls` more tokens.
                if let Some(b) = found.first() {
                    if calls as usize + todo.len() > (b.calls + more.calls) as usize {
                        return Ok(found);
                    }
                }
                if calls as usize + todo.len() > limits.max_calls as usize {
                    // Which limit ended a search says whether a larger budget would help.
                    tracing::info!(
                        calls,
                        regret = h.regret,
                        "the guided search spent its budget of tokens"
                    );
                    return Ok(found);
                }
                pace.decode(state, todo, p + same).map_err(err)?;
                decoded.extend_from_slice(todo);
                calls += todo.len() as u32;
                last_call = todo.len();
            }
        }
        let logits = last_row(state, last_call).map_err(err)?;
        let n = logits.len();
        if n <= beg {
            return Err(GuideError::Decode(format!(
                "{n} logits for a vocabulary with timestamps from {beg}"
            )));
        }
        // The end (end of text or a timestamp) against the likeliest text token.
        let end_score = end_score(logits, eot, beg);
        let mut order: Vec<usize> = (0..eot).collect();
        let k = TOP_K.min(order.len());
        order.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
        order.truncate(k);
        order.sort_unstable_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let end_at = order.partition_point(|&c| logits[c] > end_score);
        order.insert(end_at, eot);
        let score = |c: usize| if c == eot { end_score } else { logits[c] };
        let best = score(order[0]);
        let branch = if h.tokens.is_empty() {
            FIRST_BRANCH
        } else {
            BRANCH
        };
        let mut kept = 0;
        let mut kept_pieces: Vec<&[u8]> = Vec::with_capacity(BRANCH);
        for &c in &order {
            let regret = h.regret + best - score(c);
            if regret > limits.max_regret || kept == branch {
                break;
            }
            let overruled = h.overruled + u32::from(c != order[0]);
            if c == eot {
                if !h.tokens.is_empty() && guide.complete(cache, h.state) {
                    heap.push(Hyp {
                        regret,
                        tokens: h.tokens.clone(),
                        state: h.state,
                        ended: true,
                        overruled,
                    });
                    kept += 1;
                }
                continue;
            }
            let piece = &vocab.bytes[c];
            if piece.is_empty() || piece.starts_with(b"[") || piece.starts_with(b" [") {
                continue;
            }
            // The patterns ignore case: " Bring" after " bring" is the same reading at a
            // higher regret, and would take a place of another word.
            if kept_pieces
                .iter()
                .any(|k: &&[u8]| k.eq_ignore_ascii_case(piece))
            {
                continue;
            }
            if let Some(next) = guide.feed(cache, h.state, piece) {
                kept_pieces.push(piece);
                let mut tokens = h.tokens.clone();
                tokens.push(c as WhisperTokenId);
                heap.push(Hyp {
                    regret,
                    tokens,
                    state: next,
                    ended: false,
                    overruled,
                });
                kept += 1;
            }
        }
    }
    if found.is_empty() {
        tracing::info!(
            calls,
            "the guided search found no reading within its regret"
        );
    }
    Ok(found)
}

/// What each of `readings` (token ids of this model, text only) costs against the decoder's
/// own choices on the audio whose encoder output is in `state`, from where they part: the
/// regret the search would give each after the beginning all of them share (that beginning
/// costs them all the same), its ending included. The shared beginning is decoded in one call;
/// each reading's rest one token at a time (the decoder gives the logits of a call's last token
/// only).
///
/// # Errors
/// [`GuideError::Decode`] when whisper.cpp's decoder fails; [`GuideError::Aborted`].
pub fn regrets(
    state: &mut WhisperState,
    vocab: &Vocab,
    readings: &[Vec<WhisperTokenId>],
    threads: usize,
    abort: &AtomicBool,
) -> Result<Vec<f32>, GuideError> {
    let err = |e: whisper_rs::WhisperError| GuideError::Decode(e.to_string());
    let Some(first) = readings.first() else {
        return Ok(Vec::new());
    };
    let shared = readings.iter().skip(1).fold(first.len(), |n, r| {
        n.min(first.iter().zip(r).take_while(|(a, b)| a == b).count())
    });
    let p = vocab.prompt.len();
    let mut pace = Pace::new(threads, &vocab.fastest);
    let mut call = vocab.prompt.clone();
    call.extend_from_slice(&first[..shared]);
    pace.decode(state, &call, 0).map_err(err)?;
    let parted = last_row(state, call.len()).map_err(err)?.to_vec();
    let mut out = Vec::with_capacity(readings.len());
    for tokens in readings {
        let mut regret = 0.0f32;
        for i in shared..=tokens.len() {
            if abort.load(AtomicOrdering::Relaxed) {
                return Err(GuideError::Aborted);
            }
            let logits = if i == shared {
                &parted[..]
            } else {
                pace.decode(state, &tokens[i - 1..i], p + i - 1)
                    .map_err(err)?;
                last_row(state, 1).map_err(err)?
            };
            regret += step_regret(logits, vocab, tokens.get(i).copied())?;
        }
        out.push(regret);
    }
    Ok(out)
}

/// The regret of choosing `token` (`None`: the end) at a step with these `logits`, as the search
/// counts it: against the likeliest choice, the end being end of text or any timestamp.
fn step_regret(
    logits: &[f32],
    vocab: &Vocab,
    token: Option<WhisperTokenId>,
) -> Result<f32, GuideError> {
    let (eot, beg) = (vocab.eot as usize, vocab.beg as usize);
    if logits.len() <= beg {
        return Err(GuideError::Decode(format!(
            "{} logits for a vocabulary with timestamps from {beg}",
            logits.len()
        )));
    }
    let end = end_score(logits, eot, beg);
    let best = logits[..eot].iter().copied().fold(end, f32::max);
    let chosen = match token {
        Some(t) => logits
            .get(t as usize)
            .copied()
            .filter(|_| (t as usize) < eot)
            .unwrap_or(f32::NEG_INFINITY),
        None => end,
    };
    Ok(best - chosen)
}

/// The score of ending here: end of text, or a timestamp — as in whisper.cpp, the timestamps
/// together (their probabilities summed).
fn end_score(logits: &[f32], eot: usize, beg: usize) -> f32 {
    let ts = &logits[beg..];
    let ts_max = ts.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let ts_lse = ts_max + ts.iter().map(|&l| (l - ts_max).exp()).sum::<f32>().ln();
    logits[eot].max(ts_lse)
}

/// The logits of the last token of the decoder's last call of `n` tokens.
fn last_row(state: &WhisperState, n: usize) -> Result<&[f32], whisper_rs::WhisperError> {
    let first = state.get_logits()?;
    if n <= 1 {
        return Ok(first);
    }
    let vocab = first.len();
    // SAFETY: `get_logits` points at the start of the state's logits buffer, which whisper.cpp
    // (whisper_decode_internal, whisper-rs-sys 0.15) sizes to `n × n_vocab` for a call of `n`
    // tokens and fills at the last token's row; `n` is that call's length, so the row is inside
    // it. The buffer lives in the state, which the returned slice borrows.
    Ok(unsafe { std::slice::from_raw_parts(first.as_ptr().add((n - 1) * vocab), vocab) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guide_knows_whole_commands_and_their_beginnings() {
        let g = Guide::new(&[
            r"(?i)^\s*set a timer for (?P<d>[\w ]+?)[.!]?\s*$",
            r"(?i)^\s*take a note:?\s*(?P<t>.+?)\s*$",
        ])
        .expect("compiles");
        assert!(g.accepts(" Set a timer for 7 minutes."));
        assert!(g.accepts("take a note: buy milk"));
        assert!(!g.accepts(" Set a timer for"));
        assert!(!g.accepts(" Tell me a joke."));
        let mut cache = g.cache.lock().expect("not poisoned");
        let start = g.start(&mut cache).expect("a start");
        let s = g
            .feed(&mut cache, start, b" Set a ti")
            .expect("a beginning");
        assert!(!g.complete(&mut cache, s));
        assert!(g.feed(&mut cache, s, b"ger").is_none());
    }

    /// The default speech-to-text model (real, from `just models`) with espeak-ng's "Set a timer
    /// for seven minutes." decoded: its state holds that audio's encoder output.
    fn heard_timer_command() -> (WhisperContext, WhisperState) {
        use ming_config::{Config, LoadOptions, Paths};
        use whisper_rs::{FullParams, SamplingStrategy, WhisperContextParameters};
        let cfg = Config::load(&LoadOptions {
            file: None,
            skip_system_and_user: true,
        })
        .expect("default config");
        let dir = Paths::resolve(&cfg.paths).model_dir;
        let (_, path) = ming_config::models::resolve(&cfg.audio.stt_model, "stt", &dir)
            .expect("the audio models (run `just models`)");
        let mut params = WhisperContextParameters::default();
        params.use_gpu(false);
        let ctx = WhisperContext::new_with_params(&path, params).expect("loads");
        let mut state = ctx.create_state().expect("a state");
        let (rate, speech) =
            crate::tts::synthesize("espeak-ng", "en-us", 175, "Set a timer for seven minutes.")
                .expect("espeak-ng");
        let mut audio = Vec::new();
        let mut r = crate::resample::Resampler::new(rate, 16_000);
        r.push(&speech, &mut audio);
        r.finish(&mut audio);
        audio.resize(audio.len() + 16_000, 0.0);
        let mut fp = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        fp.set_n_threads(2);
        fp.set_audio_ctx(crate::stt::audio_ctx_for(audio.len(), 96) as i32);
        state.full(fp, &audio).expect("decodes");
        (ctx, state)
    }

    /// The search brings the decoder to another reading with one call of all the tokens it
    /// lacks, and reads the logits of that call's last row: they must be those of decoding the
    /// tokens one call at a time. Real model, on espeak-ng speech.
    #[test]
    fn one_call_of_several_tokens_ends_on_the_logits_of_one_call_per_token() {
        let (ctx, mut state) = heard_timer_command();
        let vocab = Vocab::new(&ctx);
        let mut tokens = vocab.prompt.clone();
        tokens.extend(ctx.tokenize(" Set a timer for", 16).expect("tokenizes"));
        for (i, &t) in tokens.iter().enumerate() {
            state.decode(&[t], i, 2).expect("decodes a token");
        }
        let one = last_row(&state, 1).expect("logits").to_vec();
        // A call of one token leaves the logits after it in the first row...
        state.decode(&tokens[..1], 0, 2).expect("decodes");
        let after_first = state.get_logits().expect("logits").to_vec();
        // ...which a call of the rest at once does not overwrite: only its last row is filled.
        state
            .decode(&tokens[1..], 1, 2)
            .expect("decodes the rest at once");
        let all = last_row(&state, tokens.len() - 1).expect("logits").to_vec();
        assert_eq!(one.len(), all.len());
        let argmax = |v: &[f32]| (0..v.len()).max_by(|&a, &b| v[a].total_cmp(&v[b]));
        assert_eq!(argmax(&one), argmax(&all));
        let worst = one
            .iter()
            .zip(&all)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 0.05, "logits differ by up to {worst}");
        // Reading the first row would have been wrong.
        assert_ne!(argmax(&after_first), argmax(&all));
    }

    /// `regrets` decodes the readings' shared beginning in one call and each one's rest a token
    /// at a time: its figures must be those of decoding every reading a token at a time from
    /// the start, summed from where they part. Whisper's own greedy reading costs (nearly)
    /// nothing; another number at the same place costs more. Real model, espeak-ng speech.
    #[test]
    fn the_regrets_of_readings_are_counted_from_where_they_part() {
        let (ctx, mut state) = heard_timer_command();
        let vocab = Vocab::new(&ctx);
        let texts = [
            " Set a timer for 7 minutes.",
            " Set a timer for 17 minutes.",
            " Set a timer for seven minutes",
        ];
        let readings: Vec<Vec<WhisperTokenId>> = texts
            .iter()
            .map(|t| ctx.tokenize(t, 32).expect("tokenizes"))
            .collect();
        let shared = readings[0]
            .iter()
            .zip(&readings[1])
            .take_while(|(a, b)| a == b)
            .count()
            .min(
                readings[0]
                    .iter()
                    .zip(&readings[2])
                    .take_while(|(a, b)| a == b)
                    .count(),
            );
        assert!(shared > 0, "the readings share their beginning");
        let never = AtomicBool::new(false);
        let got = regrets(&mut state, &vocab, &readings, 2, &never).expect("regrets");
        let p = vocab.prompt.len();
        for (tokens, got) in readings.iter().zip(&got) {
            state.decode(&vocab.prompt, 0, 2).expect("decodes");
            let mut n = p;
            let mut want = 0.0f32;
            for i in 0..=tokens.len() {
                let logits = last_row(&state, n).expect("logits");
                let step = step_regret(logits, &vocab, tokens.get(i).copied()).expect("a step");
                if i >= shared {
                    want += step;
                }
                if i < tokens.len() {
                    state.decode(&tokens[i..=i], p + i, 2).expect("decodes");
                    n = 1;
                }
            }
            assert!((got - want).abs() < 0.05, "{got} against {want}");
        }
        println!("{texts:?}: {got:?}");
        assert!(got[0] < 0.5, "whisper's own reading costs {}", got[0]);
        assert!(got[1] > got[0] + 1.0, "{got:?}");
        // Nothing to judge, nothing decoded.
        assert!(regrets(&mut state, &vocab, &[], 2, &never)
            .expect("no readings")
            .is_empty());
    }

    #[test]
    fn only_a_call_far_slower_than_the_fastest_counts_as_slowed() {
        let ms = |m: f64| m * 1e6;
        // tiny.en on two free CPUs: one token 1.6-5.9 ms, five tokens up to 5.0 ms.
        let one = ms(1.62);
        assert!(!slowed(one, ms(5.85)));
        assert!(!slowed(one * call_size(5), ms(5.04)));
        // One CPU held by another process: a call of one token took 11-135 ms.
        assert!(slowed(one, ms(11.5)));
        assert!(slowed(one * call_size(2), ms(83.4)));
        // A slower model's calls are judged against its own fastest.
        assert!(!slowed(ms(9.0), ms(20.0)));
    }

    #[test]
    fn numbers_are_found_in_digits_and_words() {
        assert!(has_number("Count down 90 seconds."));
        assert!(has_number(
            "schedule event is to appointment on Friday at 9."
        ));
        assert!(has_number("Set a timer for one hour."));
        assert!(has_number("Remind me in half an hour"));
        assert!(has_number("Wake me at noon"));
        assert!(!has_number("What's today's date?"));
        assert!(!has_number("Note down the dentist number."));
        assert!(
            !has_number("Someone said it"),
            "a number's word is a whole word"
        );
    }

    #[test]
    fn bad_patterns_are_a_clear_error() {
        let none: [&str; 0] = [];
        assert!(matches!(Guide::new(&none), Err(GuideError::Patterns(_))));
        assert!(matches!(
            Guide::new(&["(unclosed"]),
            Err(GuideError::Patterns(_))
        ));
    }
}
