//! Turns that finish the previous one: the answer to a question the agent asked.
//!
//! Two questions, both per session (voice, a `ming chat`, a `ming ask --session`):
//! - **Confirmation**: a destructive tool (deleting notes, forgetting memories) first says what
//!   it would do and does nothing. A "yes" in the same session runs *exactly that call* — the
//!   same tool with the same arguments, not the sentence understood again (the LLM tier might
//!   read it differently the second time); a "no" drops it. Before, only `ming chat` could
//!   confirm (by sending the sentence again), so a voice user could never delete anything.
//! - **A missing slot**: a command whose tool is clear but whose key argument is not there
//!   ("set a timer", "take a note", "search my mail", "remind me tomorrow to call mum") gets a
//!   question ("For how long?", "At what time?") instead
//!   of an action made up by the local model; the next turn answers it ("five minutes").
//!
//! Whatever else the next turn says, the question is dropped and the turn is understood on its
//! own; a question is also dropped after `agent.follow_up_s` seconds. A question waits for one
//! answer only.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::{json, Value};

use crate::{grounding, intent};

/// The argument a question asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// A timer's length (`seconds`).
    Seconds,
    /// A note's or a memory's words (`text`).
    Text,
    /// What to search for (`query`).
    Query,
    /// A reminder's clock time (`time`, "HH:MM").
    Time,
}

impl Slot {
    /// The argument's name, also the reply's `awaiting`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::Seconds => "seconds",
            Slot::Text => "text",
            Slot::Query => "query",
            Slot::Time => "time",
        }
    }
}

/// What the agent waits for in a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Question {
    /// Yes or no to running `tool` with `args` confirmed.
    Confirm { tool: String, args: Value },
    /// `slot` of `tool`, whose other arguments are `args`.
    Slot {
        tool: String,
        args: Value,
        slot: Slot,
    },
}

impl Question {
    /// The reply's `awaiting`: `confirmation` or the slot's name.
    pub fn awaiting(&self) -> &'static str {
        match self {
            Question::Confirm { .. } => "confirmation",
            Question::Slot { slot, .. } => slot.name(),
        }
    }
}

/// A command with its key argument missing: the tool, what was said of the rest, and what to
/// ask.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub tool: &'static str,
    pub args: Value,
    pub slot: Slot,
    pub question: &'static str,
}

/// How a turn answers a waiting question.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Run this call (`confirm`: the user said yes to it).
    Act {
        tool: String,
        args: Value,
        confirm: bool,
    },
    /// The user said no (or "never mind"): nothing runs.
    Dropped,
    /// Not an answer: understand the turn on its own.
    Other,
}

/// The questions waiting, by session.
pub struct Questions {
    ttl: Duration,
    waiting: Mutex<HashMap<String, (Instant, Question)>>,
}

impl Questions {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Asks `q` in `session` (replacing what it waited for).
    pub fn ask(&self, session: &str, q: Question) {
        if let Ok(mut w) = self.waiting.lock() {
            w.retain(|_, (at, _)| at.elapsed() < self.ttl);
            w.insert(session.to_string(), (Instant::now(), q));
        }
    }

    /// The question `session` waits on, taken: it is answered by this turn or dropped.
    pub fn take(&self, session: &str) -> Option<Question> {
        let mut w = self.waiting.lock().ok()?;
        let (at, q) = w.remove(session)?;
        (at.elapsed() < self.ttl).then_some(q)
    }
}

/// Lower-case words of `text` without punctuation.
fn plain(text: &str) -> String {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `text` says yes (`Some(true)`), no (`Some(false)`), or neither. The whole turn must
/// be the answer: "yes, and set a timer" is not a plain yes.
pub fn yes_or_no(text: &str) -> Option<bool> {
    let t = plain(text);
    let t = t
        .strip_suffix(" please")
        .or_else(|| t.strip_suffix(" thanks"))
        .or_else(|| t.strip_suffix(" thank you"))
        .unwrap_or(&t);
    const YES: [&str; 16] = [
        "yes",
        "yeah",
        "yep",
        "yup",
        "sure",
        "ok",
        "okay",
        "confirm",
        "confirmed",
        "do it",
        "go ahead",
        "yes do it",
        "yes go ahead",
        "yes delete it",
        "yes delete them",
        "please do",
    ];
    const NO: [&str; 14] = [
        "no",
        "nope",
        "nah",
        "cancel",
        "cancel that",
        "stop",
        "don't",
        "do not",
        "no don't",
        "never mind",
        "nevermind",
        "forget it",
        "leave it",
        "no thanks",
    ];
    if YES.contains(&t) {
        Some(true)
    } else if NO.contains(&t) {
        Some(false)
    } else {
        None
    }
}

/// Whether `text` names a day or a time of day ("tomorrow", "tonight", "on Friday").
fn says_when(text: &str) -> bool {
    ming_schemas::training::words(text).iter().any(|w| {
        matches!(
            w.as_str(),
            "today"
                | "tonight"
                | "tomorrow"
                | "morning"
                | "afternoon"
                | "evening"
                | "noon"
                | "midnight"
                | "monday"
                | "tuesday"
                | "wednesday"
                | "thursday"
                | "friday"
                | "saturday"
                | "sunday"
                | "week"
                | "weekend"
                | "am"
                | "pm"
                | "o'clock"
        )
    })
}

/// Commands of the fast path's tools said without their key argument.
pub fn incomplete(text: &str) -> Option<Ask> {
    struct Pattern {
        re: Regex,
        build: fn(&regex::Captures<'_>) -> Option<Ask>,
    }
    static PATTERNS: OnceLock<Vec<Pattern>> = OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        let r = |p: &str| {
            Regex::new(&format!(r"(?i)^\s*(?:please\s+)?(?:{p})[.!?]?\s*$"))
                .unwrap_or_else(|e| panic!("bad follow-up pattern {p}: {e}"))
        };
        vec![
            Pattern {
                // "set a timer", "start a timer for the pasta", "timer please".
                re: r(r"(?:(?:set|start|make|create)\s+)?(?:a|an|the|my)?\s*(?:timer|countdown)(?:\s+(?:for|called|named)\s+(?:the\s+|my\s+)?(?P<label>[\w ]+?))?(?:\s+please)?"),
                // "set a timer for ten" says a length, if not which unit: not this question.
                build: |c| {
                    let label = c.name("label").map_or("", |l| l.as_str().trim());
                    (!grounding::says_a_duration(label)).then(|| Ask {
                    tool: "set_timer",
                    args: json!({"label": label}),
                    slot: Slot::Seconds,
                    question: "For how long?",
                })
                },
            },
            Pattern {
                // "remind me to call mum" (a reminder is a timer here: it needs a when).
                re: r(r"remind me (?:to|that|about) (?P<label>.+?)"),
                // "…tomorrow at noon" says when, which a timer cannot take: not this question.
                build: |c| {
                    let label = c["label"].trim();
                    (!grounding::says_a_duration(label) && !says_when(label)).then(|| Ask {
                    tool: "set_timer",
                    args: json!({"label": label}),
                    slot: Slot::Seconds,
                    question: "In how long should I remind you?",
                })
                },
            },
            Pattern {
                // "remind me tomorrow to call mum", "remind me to water the plants tonight": a
                // day without a time, which a reminder at a clock time needs.
                re: r(&format!(r"remind me (?:(?P<day>{}) )?(?:to|that|about) (?P<label>.+?)", intent::REMINDER_DAY)),
                build: |c| {
                    static TRAILING: OnceLock<Regex> = OnceLock::new();
                    let trailing = TRAILING.get_or_init(|| {
                        Regex::new(&format!(r"(?i)^(?P<what>.+?)\s+(?P<day>{})$", intent::REMINDER_DAY))
                            .unwrap_or_else(|_| unreachable!())
                    });
                    let label = c["label"].trim();
                    let (what, day) = match c.name("day") {
                        Some(d) => (label.to_string(), d.as_str().to_string()),
                        None => {
                            let t = trailing.captures(label)?;
                            (t["what"].to_string(), t["day"].to_string())
                        }
                    };
                    // A time said is the rules' or the model's to read, not this question.
                    if grounding::says_a_number(&what) || says_when(&what) {
                        return None;
                    }
                    let day = day.to_lowercase();
                    Some(Ask {
                        tool: "set_reminder",
                        args: json!({"text": what.trim(), "date": day.trim_start_matches("on ")}),
                        slot: Slot::Time,
                        question: "At what time?",
                    })
                },
            },
            Pattern {
                re: r(r"(?:take|add|make|write|save)(?: down)? (?:a |another )?note|new note"),
                build: |_| Some(Ask {
                    tool: "add_note",
                    args: json!({}),
                    slot: Slot::Text,
                    question: "What should the note say?",
                }),
            },
            Pattern {
                re: r(r"(?:search|look through|find something in)(?: in)? my notes"),
                build: |_| Some(Ask {
                    tool: "search_notes",
                    args: json!({}),
                    slot: Slot::Query,
                    question: "What should I look for in your notes?",
                }),
            },
            Pattern {
                re: r(r"(?:search|check|look through)(?: my)? (?:mail|email|e-mail|inbox|emails|mails)"),
                build: |_| Some(Ask {
                    tool: "search_mail",
                    args: json!({}),
                    slot: Slot::Query,
                    question: "What should I look for in your mail?",
                }),
            },
            Pattern {
                re: r(r"(?:search|look through)(?: my)? (?:documents|docs|files)|find (?:a|my) (?:document|file)"),
                build: |_| Some(Ask {
                    tool: "search_documents",
                    args: json!({}),
                    slot: Slot::Query,
                    question: "What should I look for in your documents?",
                }),
            },
        ]
    });
    patterns
        .iter()
        .find_map(|p| p.re.captures(text).and_then(|c| (p.build)(&c)))
}

/// The question for what grounding found missing from the LLM tier's call, with the stage
/// that says so: a timer's length ("For how long?") or a reminder's time ("At what time?");
/// `None` for any other refusal.
pub fn for_missing(why: &grounding::Ungrounded, args: &Value) -> Option<(&'static str, Ask)> {
    match why {
        grounding::Ungrounded::NoNumber => {
            let label = args
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Some((
                "no number said",
                Ask {
                    tool: "set_timer",
                    args: json!({ "label": label }),
                    slot: Slot::Seconds,
                    question: "For how long?",
                },
            ))
        }
        grounding::Ungrounded::NoTime => {
            let mut rest = args.as_object().cloned().unwrap_or_default();
            rest.remove("time");
            Some((
                "no time said",
                Ask {
                    tool: "set_reminder",
                    args: Value::Object(rest),
                    slot: Slot::Time,
                    question: "At what time?",
                },
            ))
        }
        _ => None,
    }
}

/// `args` with `slot` filled from `text`, the answer to the question; `None` when it does not
/// answer it.
pub fn fill(slot: Slot, args: &Value, text: &str) -> Option<Value> {
    let mut args = args.as_object().cloned().unwrap_or_default();
    let value = match slot {
        Slot::Seconds => json!(intent::parse_duration(text)?),
        Slot::Time => {
            let t = text.trim().trim_end_matches(['.', '!', '?']);
            let lower = t.to_lowercase();
            let t = ["at ", "around ", "about ", "by "]
                .iter()
                .find_map(|p| lower.strip_prefix(p))
                .unwrap_or(&lower);
            let time = intent::parse_time(t)?;
            // "Tonight", then "at nine": the evening's nine.
            if args.get("date").and_then(Value::as_str) == Some("tonight") {
                json!(intent::in_the_evening(time))
            } else {
                json!(time)
            }
        }
        Slot::Text | Slot::Query => {
            static LEAD: OnceLock<Regex> = OnceLock::new();
            let lead = LEAD.get_or_init(|| {
                Regex::new(r"(?i)^\s*(?:(?:it|the note) (?:should )?says?|that|for|about)\b[\s,:]*")
                    .unwrap_or_else(|_| unreachable!())
            });
            let t = lead.replace(text.trim(), "");
            let t = t
                .trim_matches(|c: char| c.is_whitespace() || matches!(c, ',' | ':' | ';'))
                .trim_end_matches(['.', '?', '!']);
            if t.is_empty() {
                return None;
            }
            json!(t)
        }
    };
    args.insert(slot.name().into(), value);
    Some(Value::Object(args))
}

/// What `text` does to the question the session waited on.
pub fn answer(q: Question, text: &str) -> Answer {
    match q {
        Question::Confirm { tool, args } => match yes_or_no(text) {
            Some(true) => Answer::Act {
                tool,
                args,
                confirm: true,
            },
            Some(false) => Answer::Dropped,
            None => Answer::Other,
        },
        Question::Slot { tool, args, slot } => {
            if yes_or_no(text) == Some(false) {
                return Answer::Dropped;
            }
            // A whole new command is that, not an answer ("set a timer" → "what time is it?").
            if intent::understand(text).is_some() || incomplete(text).is_some() {
                return Answer::Other;
            }
            match fill(slot, &args, text) {
                Some(args) => Answer::Act {
                    tool,
                    args,
                    confirm: false,
                },
                None => Answer::Other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_and_no_are_whole_answers() {
        for t in [
            "Yes.",
            "yes please",
            "Yeah",
            "OK",
            "go ahead",
            "Yes, do it!",
            "Sure, thanks",
        ] {
            assert_eq!(yes_or_no(t), Some(true), "{t}");
        }
        for t in ["No.", "no thanks", "Cancel", "never mind", "No, don't."] {
            assert_eq!(yes_or_no(t), Some(false), "{t}");
        }
        for t in [
            "yes and set a timer",
            "yesterday",
            "nobody",
            "what time is it",
            "",
        ] {
            assert_eq!(yes_or_no(t), None, "{t}");
        }
    }

    #[test]
    fn commands_without_their_key_argument_ask_for_it() {
        let cases = [
            (
                "Set a timer.",
                "set_timer",
                json!({"label": ""}),
                Slot::Seconds,
            ),
            (
                "start a timer for the pasta",
                "set_timer",
                json!({"label": "pasta"}),
                Slot::Seconds,
            ),
            (
                "timer please",
                "set_timer",
                json!({"label": ""}),
                Slot::Seconds,
            ),
            (
                "Remind me to call mum.",
                "set_timer",
                json!({"label": "call mum"}),
                Slot::Seconds,
            ),
            (
                "set a timer for the laundry",
                "set_timer",
                json!({"label": "laundry"}),
                Slot::Seconds,
            ),
            ("Take a note.", "add_note", json!({}), Slot::Text),
            ("Search my notes", "search_notes", json!({}), Slot::Query),
            ("check my email", "search_mail", json!({}), Slot::Query),
            (
                "find a document",
                "search_documents",
                json!({}),
                Slot::Query,
            ),
        ];
        for (text, tool, args, slot) in cases {
            let a = incomplete(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!((a.tool, &a.args, a.slot), (tool, &args, slot), "{text}");
            // None of these is a whole command for the fast path.
            assert!(intent::understand(text).is_none(), "{text}");
        }
        // Whole commands are not questions.
        for text in [
            "set a timer for five minutes",
            "take a note: buy milk",
            "search my notes for milk",
            "remind me in ten minutes to call mum",
            "what time is it",
            // Says a length or a day: for the other tiers, not a question about length.
            "set a timer for ten",
            "remind me to call mum tomorrow at noon",
        ] {
            assert!(incomplete(text).is_none(), "{text}");
        }
        // A day and no time: a reminder at a clock time, asked for its time.
        for (text, args) in [
            (
                "remind me to water the plants tonight",
                json!({"text": "water the plants", "date": "tonight"}),
            ),
            (
                "Remind me tomorrow to call mum.",
                json!({"text": "call mum", "date": "tomorrow"}),
            ),
            (
                "remind me on Friday about the bins",
                json!({"text": "the bins", "date": "friday"}),
            ),
        ] {
            let a = incomplete(text).unwrap_or_else(|| panic!("{text}"));
            assert_eq!(
                (a.tool, &a.args, a.slot),
                ("set_reminder", &args, Slot::Time),
                "{text}"
            );
            assert_eq!(a.question, "At what time?");
            assert!(intent::understand(text).is_none(), "{text}");
        }
    }

    #[test]
    fn a_reminders_time_is_answered_as_a_clock_time() {
        let reminder = || Question::Slot {
            tool: "set_reminder".into(),
            args: json!({"text": "call mum", "date": "tomorrow"}),
            slot: Slot::Time,
        };
        for (said, time) in [
            ("At 5pm.", "17:00"),
            ("nine thirty", "09:30"),
            ("noon", "12:00"),
        ] {
            assert_eq!(
                answer(reminder(), said),
                Answer::Act {
                    tool: "set_reminder".into(),
                    args: json!({"text": "call mum", "date": "tomorrow", "time": time}),
                    confirm: false
                },
                "{said}"
            );
        }
        let tonight = Question::Slot {
            tool: "set_reminder".into(),
            args: json!({"text": "lock up", "date": "tonight"}),
            slot: Slot::Time,
        };
        assert_eq!(
            answer(tonight, "at nine"),
            Answer::Act {
                tool: "set_reminder".into(),
                args: json!({"text": "lock up", "date": "tonight", "time": "21:00"}),
                confirm: false
            }
        );
        assert_eq!(answer(reminder(), "what time is it"), Answer::Other);
        assert_eq!(answer(reminder(), "whenever"), Answer::Other);
        assert_eq!(answer(reminder(), "never mind"), Answer::Dropped);
    }

    #[test]
    fn answers_fill_the_slot_or_leave_the_turn_alone() {
        let timer = || Question::Slot {
            tool: "set_timer".into(),
            args: json!({"label": "pasta"}),
            slot: Slot::Seconds,
        };
        assert_eq!(
            answer(timer(), "Five minutes."),
            Answer::Act {
                tool: "set_timer".into(),
                args: json!({"label": "pasta", "seconds": 300}),
                confirm: false
            }
        );
        assert_eq!(
            answer(timer(), "for half an hour"),
            Answer::Act {
                tool: "set_timer".into(),
                args: json!({"label": "pasta", "seconds": 1800}),
                confirm: false
            }
        );
        assert_eq!(answer(timer(), "never mind"), Answer::Dropped);
        // Not a length, or a command of its own: understood on its own.
        assert_eq!(answer(timer(), "the pasta"), Answer::Other);
        assert_eq!(answer(timer(), "what time is it?"), Answer::Other);
        let note = Question::Slot {
            tool: "add_note".into(),
            args: json!({}),
            slot: Slot::Text,
        };
        assert_eq!(
            answer(note.clone(), "That the spare key is under the blue pot."),
            Answer::Act {
                tool: "add_note".into(),
                args: json!({"text": "the spare key is under the blue pot"}),
                confirm: false
            }
        );
        assert_eq!(answer(note, "."), Answer::Other);
        let query = Question::Slot {
            tool: "search_mail".into(),
            args: json!({}),
            slot: Slot::Query,
        };
        assert_eq!(
            answer(query, "for the flight confirmation"),
            Answer::Act {
                tool: "search_mail".into(),
                args: json!({"query": "the flight confirmation"}),
                confirm: false
            }
        );
    }

    #[test]
    fn a_yes_runs_exactly_the_call_that_was_shown() {
        let q = Question::Confirm {
            tool: "delete_note".into(),
            args: json!({"query": "bread"}),
        };
        assert_eq!(q.awaiting(), "confirmation");
        assert_eq!(
            answer(q.clone(), "Yes."),
            Answer::Act {
                tool: "delete_note".into(),
                args: json!({"query": "bread"}),
                confirm: true
            }
        );
        assert_eq!(answer(q.clone(), "no"), Answer::Dropped);
        // Anything else is a new turn; the deletion is not confirmed by it.
        assert_eq!(answer(q, "delete the note about milk"), Answer::Other);
    }

    #[test]
    fn a_question_waits_for_one_answer_in_its_session_and_not_for_ever() {
        let qs = Questions::new(Duration::from_millis(200));
        let q = Question::Slot {
            tool: "add_note".into(),
            args: json!({}),
            slot: Slot::Text,
        };
        qs.ask("a", q.clone());
        assert_eq!(qs.take("b"), None);
        assert_eq!(qs.take("a"), Some(q.clone()));
        assert_eq!(qs.take("a"), None, "answered once");
        qs.ask("a", q);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(qs.take("a"), None, "expired");
    }
}
