//! Voice activity → turns: where speech starts and ends, and when the user's turn is over.
//!
//! Speech starts at the first of `min_speech` consecutive frames whose probability reaches
//! `threshold`. A pause begins at the first frame below `threshold` (early, so that the
//! speculative decode of the utterance starts at once), but only frames below
//! `off_threshold` count toward ending the turn (hysteresis, so a soft consonant does not end
//! it). Speech ends at the end of the last voiced frame. The turn is
//! over after `hangover_ms` of silence; after only `early_hangover_ms` when the transcript of
//! everything said so far already reads as a complete command ([`reads_complete`]); after
//! `incomplete_hangover_ms` when it trails off ("set a timer for …"); after
//! `unsure_hangover_ms` when it reads as complete but whisper is unsure of its last word, or
//! ends on a preposition a wh-word took the object of ([`strands_a_preposition`]).

use crate::vad::FRAME;

/// Settings (from `[audio]` in config).
#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub threshold: f32,
    pub off_threshold: f32,
    pub min_speech_frames: usize,
    pub hangover_ms: u32,
    pub early_hangover_ms: u32,
    /// The longer silence needed when the transcript so far reads as unfinished ("set a
    /// timer for …"): a hesitation is not the end of the turn.
    pub incomplete_hangover_ms: u32,
    /// The silence needed when the transcript reads as complete but whisper is unsure of its
    /// last word ([`Reading::Unsure`]).
    pub unsure_hangover_ms: u32,
    pub max_utterance_ms: u32,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            off_threshold: 0.35,
            min_speech_frames: 2,
            hangover_ms: 200,
            early_hangover_ms: 96,
            incomplete_hangover_ms: 600,
            unsure_hangover_ms: 400,
            max_utterance_ms: 30_000,
        }
    }
}

/// What the transcript of the turn so far (up to the pause) says about its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// No transcript of it yet.
    Unknown,
    /// Reads as a complete command: a short silence ends the turn.
    Complete,
    /// Reads as a complete command, but whisper is unsure of its last word (often one it made
    /// up for audio that stops mid-sentence, as often the true last word of a hard voice): a
    /// silence between the ordinary and the unfinished one ends the turn. Also a clause that
    /// ends on a preposition a wh-word took ("what I'm allergic to"): whole, or a pause.
    Unsure,
    /// Trails off: wait longer.
    Unfinished,
    /// Being decoded: the final cannot come before that decode anyway, so the turn waits for
    /// it (up to the unfinished hangover) rather than ending on silence alone.
    Pending,
}

/// What a frame changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnEvent {
    /// Speech began at `sample`.
    Started { sample: u64 },
    /// Voiced frames stopped at `sample` (the turn may still go on).
    Paused { sample: u64 },
    /// Speech resumed within the hangover: the pause was inside the turn.
    Resumed,
    /// The turn is over; the speech ended at `sample`.
    Ended { sample: u64, reason: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Silence,
    Speech,
    /// Silent since `since` (the end of the last voiced frame).
    Pausing {
        since: u64,
    },
}

pub struct TurnDetector {
    cfg: TurnConfig,
    /// The last frame fed: (start, probability), for [`TurnDetector::recheck`].
    last: Option<(u64, f32)>,
    state: State,
    onset: usize,
    onset_start: u64,
    start: u64,
}

const MS: u64 = 16; // samples per millisecond

impl TurnDetector {
    pub fn new(cfg: TurnConfig) -> Self {
        Self {
            cfg,
            last: None,
            state: State::Silence,
            onset: 0,
            onset_start: 0,
            start: 0,
        }
    }

    /// The detector's settings.
    pub fn config(&self) -> &TurnConfig {
        &self.cfg
    }

    /// In a turn (speaking, or pausing inside the hangover).
    pub fn in_turn(&self) -> bool {
        self.state != State::Silence
    }

    /// The speech probability of the last frame fed.
    pub fn last_p(&self) -> f32 {
        self.last.map_or(0.0, |l| l.1)
    }

    /// Speaking: in a turn and not pausing.
    pub fn speaking(&self) -> bool {
        self.state == State::Speech
    }

    /// Where the current turn's speech started.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Silent for this long inside a turn (0 while speaking or outside a turn).
    pub fn silence_ms(&self, now_sample: u64) -> u64 {
        match self.state {
            State::Pausing { since } => now_sample.saturating_sub(since) / MS,
            _ => 0,
        }
    }

    /// Where the voiced part of the current turn ended (if pausing).
    pub fn paused_at(&self) -> Option<u64> {
        match self.state {
            State::Pausing { since } => Some(since),
            _ => None,
        }
    }

    /// Moves the current pause to where the audio shows the voice really stopped.
    pub fn set_pause(&mut self, sample: u64) {
        if let State::Pausing { since } = &mut self.state {
            *since = sample;
        }
    }

    /// Feeds one frame starting at `at` with speech probability `p`; `reading` is what the
    /// transcript up to the current pause says.
    pub fn frame(&mut self, at: u64, p: f32, reading: Reading) -> Option<TurnEvent> {
        self.last = Some((at, p));
        let end = at + FRAME as u64;
        match self.state {
            State::Silence => {
                if p >= self.cfg.threshold {
                    if self.onset == 0 {
                        self.onset_start = at;
                    }
                    self.onset += 1;
                    if self.onset >= self.cfg.min_speech_frames {
                        self.onset = 0;
                        self.start = self.onset_start;
                        self.state = State::Speech;
                        return Some(TurnEvent::Started { sample: self.start });
                    }
                } else {
                    self.onset = 0;
                }
                None
            }
            State::Speech => {
                if end - self.start >= u64::from(self.cfg.max_utterance_ms) * MS {
                    self.state = State::Silence;
                    return Some(TurnEvent::Ended {
                        sample: end,
                        reason: "max_length",
                    });
                }
                // A pause begins as soon as the frame is not clearly speech, so that the
                // speculative decode starts early (Silero falls slowly after the last word);
                // the turn only ends on frames clearly below `off_threshold`.
                if p < self.cfg.threshold {
                    self.state = State::Pausing { since: at };
                    return Some(TurnEvent::Paused { sample: at });
                }
                None
            }
            State::Pausing { since } => {
                if p >= self.cfg.threshold {
                    self.state = State::Speech;
                    return Some(TurnEvent::Resumed);
                }
                if p >= self.cfg.off_threshold {
                    return None; // not clearly silence: the turn goes on
                }
                let silent_ms = (end - since) / MS;
                let needed = match reading {
                    Reading::Unknown => self.cfg.hangover_ms,
                    Reading::Unsure => self.cfg.unsure_hangover_ms,
                    Reading::Complete => self.cfg.early_hangover_ms,
                    Reading::Unfinished | Reading::Pending => self.cfg.incomplete_hangover_ms,
                };
                let reason = (silent_ms >= u64::from(needed)).then_some(match reading {
                    Reading::Complete => "complete",
                    _ => "silence",
                });
                reason.map(|reason| {
                    self.state = State::Silence;
                    TurnEvent::Ended {
                        sample: since,
                        reason,
                    }
                })
            }
        }
    }

    /// The reading changed between frames (a decode came back): decide again on the last
    /// frame, so the turn ends the moment it may rather than at the next frame.
    pub fn recheck(&mut self, reading: Reading) -> Option<TurnEvent> {
        match (self.state, self.last) {
            (State::Pausing { .. }, Some((at, p))) => self.frame(at, p, reading),
            _ => None,
        }
    }

    /// The input ended: close an open turn.
    pub fn finish(&mut self, at: u64) -> Option<TurnEvent> {
        let ev = match self.state {
            State::Silence => None,
            State::Speech => Some(TurnEvent::Ended {
                sample: at,
                reason: "end_of_input",
            }),
            State::Pausing { since } => Some(TurnEvent::Ended {
                sample: since,
                reason: "end_of_input",
            }),
        };
        self.state = State::Silence;
        ev
    }

    /// Push-to-talk released: close the turn now.
    pub fn stop(&mut self, at: u64) -> Option<TurnEvent> {
        let ev = self.finish(at);
        ev.map(|e| match e {
            TurnEvent::Ended { sample, .. } => TurnEvent::Ended {
                sample,
                reason: "stopped",
            },
            other => other,
        })
    }
}

/// Words after which a command is not over ("set a timer for …").
// Kept in rows: rustfmt puts one word a line once one is longer than 10 characters.
#[rustfmt::skip]
const DANGLING: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "to", "for", "of", "at", "in", "on", "with", "my",
    "your", "about", "from", "by", "into", "is", "are", "was", "than", "that", "um", "uh", "so",
    "if", "me", "then", "because", "like", "called", "named", "saying", "says", "remind", "set",
    "call", "add", "what's", "whats", "what", "when", "where", "who", "how", "next", "this",
    "every", "until", "before", "after",
    // Words that announce what follows: "take a note …", "remember …", "write down …".
    "note", "remember", "write", "jot", "down",
    // Words that want what follows: "I prefer …", "I'm allergic …" (not ones as often nouns:
    // "book", "schedule", "show").
    "prefer", "translate", "need", "want", "find", "search", "send", "allergic",
];

const NUMBERS: &[&str] = &[
    "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
    "twelve", "fifteen", "twenty", "thirty", "forty", "fifty", "sixty", "hundred", "half",
];

/// Whether a transcript reads as a complete command: at least two words, not trailing off
/// ("…", a comma, a dangling word), and not ending on a bare number that a unit should follow
/// ("for five" — but "at five" is a time and complete).
pub fn reads_complete(text: &str) -> bool {
    let t = text.trim();
    // "Take a note: …" — a colon announces what is to come.
    if announces_more(t) {
        return false;
    }
    let words = words(t);
    if words.len() < 2 {
        return false;
    }
    let last = words[words.len() - 1].as_str();
    let before = words[words.len() - 2].as_str();
    // "Keep in mind …", "bear in mind …" (but "never mind" is a whole command).
    let announces = last == "mind" && before == "in";
    // "Take a note …" announces one; "list my note", "read the note" name one that exists.
    let names_a_note = last == "note" && DEFINITE.contains(&before);
    if (announces || DANGLING.contains(&last))
        && !ends_on_particle(&words[0], before, last)
        && !names_a_note
    {
        return false;
    }
    let numeric = last.chars().all(|c| c.is_ascii_digit()) || NUMBERS.contains(&last);
    if numeric && !NUMBERED.contains(&before) {
        return false;
    }
    true
}

/// Prepositions a clause may leave at its end when a wh-word took their object:
/// "what I'm allergic to", "who I spoke with".
#[rustfmt::skip]
const STRANDABLE: &[&str] = &[
    "to", "about", "for", "of", "at", "in", "on", "with", "from", "by", "into",
];

/// Words that start a clause's subject: after "what"/"who"/"which" they make it a relative or
/// question clause ("what I'm …", "what my sister …"), not "what's the weather in …".
#[rustfmt::skip]
const SUBJECTS: &[&str] = &[
    "i", "i'm", "i've", "i'd", "you", "you're", "you've", "we", "we're", "they", "they're",
    "he", "he's", "she", "she's", "my", "your", "our", "his", "her", "their",
];

/// Auxiliaries that may come between the wh-word and the subject: "what did I tell you about".
#[rustfmt::skip]
const AUXILIARIES: &[&str] = &[
    "do", "does", "did", "was", "were", "am", "is", "are", "have", "has", "had", "will",
    "would", "should", "can", "could",
];

/// Whether the transcript ends on a preposition whose object a wh-word earlier took ("do you
/// remember what I'm allergic to", "what did I tell you about"). Such a clause is whole as it
/// stands, and as often the speaker's pause before the rest ("… about my car"): neither the
/// long wait of a trailing-off command nor the short one of a complete one
/// ([`Reading::Unsure`]).
pub fn strands_a_preposition(text: &str) -> bool {
    let t = text.trim();
    if announces_more(t) {
        return false;
    }
    let words = words(t);
    let Some((last, rest)) = words.split_last() else {
        return false;
    };
    if !STRANDABLE.contains(&last.as_str()) {
        return false;
    }
    rest.iter().enumerate().any(|(i, w)| {
        if !matches!(w.as_str(), "what" | "who" | "whom" | "which") {
            return false;
        }
        // The subject, after at most one auxiliary, then at least one more word before the
        // preposition ("what I'm allergic to", not "what I to").
        let subject = match rest.get(i + 1).map(String::as_str) {
            Some(a) if AUXILIARIES.contains(&a) => i + 2,
            _ => i + 1,
        };
        rest.get(subject)
            .is_some_and(|s| SUBJECTS.contains(&s.as_str()))
            && rest.len() > subject + 1
    })
}

/// Whether the punctuation says more follows: "…", a comma, a dash, a colon ("Take a note: …").
fn announces_more(t: &str) -> bool {
    t.ends_with("...") || t.ends_with(',') || t.ends_with('-') || t.ends_with(':')
}

/// The transcript's words, lowercased, without punctuation (apostrophes kept).
fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric() && c != '\'')
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Words before a noun that make it one already known ("my note", "the last note").
const DEFINITE: &[&str] = &[
    "my", "the", "this", "that", "your", "our", "last", "latest", "first", "previous",
];

/// Words after which a number is complete: a time ("at five"), a setting ("to 11"), or the
/// number of something ("level 3", "page 12"). After others it wants a unit ("for five …").
const NUMBERED: &[&str] = &[
    "at", "to", "number", "page", "channel", "level", "floor", "room", "gate", "platform", "track",
    "volume", "chapter", "step", "line", "option", "table", "seat", "row", "episode", "season",
    "part", "zone",
];

/// Verbs whose particle may close the command once their object is said: "turn the volume
/// down", "write it down", "turn the lights on".
const PHRASAL: &[&str] = &[
    "turn", "switch", "write", "jot", "note", "put", "take", "count", "shut", "slow", "calm",
    "keep", "leave", "wind", "tone", "scroll", "zoom", "bring", "mark",
];

/// Whether the last word is the particle of a phrasal verb the command began with, after its
/// object: "turn the volume down" is over, "turn down …" and "schedule a meeting on …" are not.
fn ends_on_particle(first: &str, before: &str, last: &str) -> bool {
    matches!(last, "down" | "on") && PHRASAL.contains(&first) && !PHRASAL.contains(&before)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(det: &mut TurnDetector, probs: &[f32], complete: bool) -> Vec<(u64, TurnEvent)> {
        let reading = if complete {
            Reading::Complete
        } else {
            Reading::Unknown
        };
        let mut out = Vec::new();
        for (i, p) in probs.iter().enumerate() {
            let at = (i * FRAME) as u64;
            if let Some(e) = det.frame(at, *p, reading) {
                out.push((at, e));
            }
        }
        out
    }

    #[test]
    fn speech_is_bounded_and_the_turn_ends_after_the_hangover() {
        let mut d = TurnDetector::new(TurnConfig::default());
        // 5 silent, 10 voiced, 1 dip (inside a word), 5 voiced, then silence.
        let mut p = vec![0.05; 5];
        p.extend([0.9; 10]);
        p.push(0.4); // between off and on: a pause begins, the turn goes on
        p.extend([0.9; 5]);
        p.extend([0.02; 12]);
        let ev = run(&mut d, &p, false);
        assert_eq!(ev[0].1, TurnEvent::Started { sample: 5 * 512 });
        // The dip pauses (a speculative decode may start) and speech resumes.
        assert_eq!(ev[1].1, TurnEvent::Paused { sample: 15 * 512 });
        assert_eq!(ev[2].1, TurnEvent::Resumed);
        assert_eq!(ev[3].1, TurnEvent::Paused { sample: 21 * 512 });
        // 200 ms = 6.25 frames: ends at the 7th silent frame, dated at the pause.
        assert_eq!(
            ev[4],
            (
                27 * 512,
                TurnEvent::Ended {
                    sample: 21 * 512,
                    reason: "silence"
                }
            )
        );
    }

    #[test]
    fn a_complete_command_ends_sooner_and_a_resumption_continues() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let mut p = vec![0.9; 10];
        p.extend([0.02; 4]);
        let ev = run(&mut d, &p, true);
        // 96 ms = 3 frames after the pause.
        assert_eq!(
            ev.last().unwrap(),
            &(
                12 * 512,
                TurnEvent::Ended {
                    sample: 10 * 512,
                    reason: "complete"
                }
            )
        );

        let mut d = TurnDetector::new(TurnConfig::default());
        let mut p = vec![0.9; 10];
        p.extend([0.02; 2]);
        p.extend([0.9; 3]);
        let ev = run(&mut d, &p, false);
        assert_eq!(ev.last().unwrap().1, TurnEvent::Resumed);
        assert!(d.in_turn());
        assert_eq!(
            d.finish(15 * 512),
            Some(TurnEvent::Ended {
                sample: 15 * 512,
                reason: "end_of_input"
            })
        );
    }

    #[test]
    fn an_unsure_end_waits_between_the_two() {
        // Frames are 32 ms; the pause begins at frame 10 (sample 5120).
        let end_frame = |reading| {
            let mut d = TurnDetector::new(TurnConfig::default());
            (0..40u64).find(|&i| {
                let p = if i < 10 { 0.9 } else { 0.02 };
                matches!(d.frame(i * 512, p, reading), Some(TurnEvent::Ended { .. }))
            })
        };
        // 96, 200, 400 and 600 ms of silence.
        assert_eq!(end_frame(Reading::Complete), Some(12));
        assert_eq!(end_frame(Reading::Unknown), Some(16));
        assert_eq!(end_frame(Reading::Unsure), Some(22));
        assert_eq!(end_frame(Reading::Unfinished), Some(28));
    }

    #[test]
    fn an_unfinished_command_waits_longer() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let mut ev = Vec::new();
        for i in 0..40u64 {
            let p = if i < 10 { 0.9 } else { 0.02 };
            if let Some(e) = d.frame(i * 512, p, Reading::Unfinished) {
                ev.push((i, e));
            }
        }
        // 600 ms = 18.75 frames after the pause at frame 10.
        assert_eq!(
            ev.last().unwrap(),
            &(
                28,
                TurnEvent::Ended {
                    sample: 10 * 512,
                    reason: "silence"
                }
            )
        );
    }

    #[test]
    fn uncertain_frames_do_not_end_the_turn() {
        let mut d = TurnDetector::new(TurnConfig::default());
        let mut p = vec![0.9; 5];
        p.extend([0.4; 20]); // 640 ms of "maybe"
        let ev = run(&mut d, &p, true);
        assert_eq!(ev.last().unwrap().1, TurnEvent::Paused { sample: 5 * 512 });
        assert!(d.in_turn());
    }

    #[test]
    fn a_single_loud_frame_is_not_speech() {
        let mut d = TurnDetector::new(TurnConfig::default());
        assert!(run(&mut d, &[0.1, 0.95, 0.1, 0.2], false).is_empty());
    }

    #[test]
    fn a_preposition_a_wh_word_took_leaves_the_end_open() {
        for t in [
            "Do you remember what I'm allergic to?",
            "What did I tell you about?",
            "Remind me who I spoke with",
            "what my sister is allergic to",
            "Which did you put it in",
        ] {
            assert!(strands_a_preposition(t), "{t}");
            assert!(!reads_complete(t), "{t}");
        }
        for t in [
            "What's the weather in",
            "What is the capital of",
            "Set a timer for",
            "Remind me what I to",
            "Tell me what I need,",
            "Remember that my sister lives in",
            "Do you remember what I'm allergic to peanuts",
            "",
        ] {
            assert!(!strands_a_preposition(t), "{t}");
        }
    }

    #[test]
    fn complete_commands_read_as_complete() {
        for t in [
            "Set a timer for seven minutes.",
            "What time is it?",
            "Remind me to call Anna at five.",
            "Add milk to my shopping list",
            "Turn it up to 11",
            "turn the volume down",
            "Write it down.",
            "Turn the lights on",
            "Remember that my car is parked on level 3",
            "Go to page twelve",
            "Never mind.",
            "Open the book",
            "List my note.",
            "Read the last note",
        ] {
            assert!(reads_complete(t), "{t}");
        }
        for t in [
            "Set a timer for",
            "Set a timer for five",
            "Remind me to call",
            "and then...",
            "Add milk to the,",
            "Take a note",
            "Take a note:",
            "Make a new note",
            "Please remember",
            "Write down",
            "Remember that I prefer",
            "Keep in mind.",
            "Ask the cloud to translate",
            "Turn down",
            "turn the volume down to",
            "Schedule a meeting on",
            "Count down",
            "Hello",
            "",
        ] {
            assert!(!reads_complete(t), "{t}");
        }
    }
}
