//! Whether the local model's arguments come from what the user said.
//!
//! The small local model, given a misheard or garbled utterance, fills the tool's arguments
//! with something concrete from elsewhere: the previous exchange ("Where's the file within the
//! insurance policy?" → search for "jarm offer", the command before it), a tool's description
//! (a mail search for "local mail (read-only) by sender, subject or text"), or nothing at all
//! (a 10-second timer for "What do you go about my sister?"). Each of those, seen in the voice
//! bench, acted on something the user never asked for. A wrong action is worse than a question,
//! so the agent checks the LLM tier's free-text arguments against the utterance and asks the user
//! to say it again when they do not come from it.
//!
//! The check is lenient on purpose: an argument passes when at least half of its content words
//! (stop words and numbers aside) are in the utterance, where a word also matches one that
//! shares its first four letters ("Sarah" / "Sara", "notes" / "note"). A follow-up that refers
//! back ("search my notes for that too") may take its words from the previous message as well.
//! A timer's length needs a number or a unit of time in the utterance: with a length said, the
//! words' length replaces the model's; with only a unit ("I'll be seconds") the agent asks how
//! long. A timer label that does not come from the utterance is dropped rather than refused. A day (`date`) must be one the user named:
//! today is the tools' default; a weekday or "tomorrow" must be said; a calendar date must be
//! the date of a day the utterance names or, with none named, go with a number, month or
//! ordinal said (the model once answered "Yes." with a free-time search on 2023-01-01).

use ming_schemas::training::words;
use serde_json::Value;

use crate::{intent, router, tools};

/// Arguments that carry the user's words; checked against the utterance.
const FREE_TEXT: [&str; 4] = ["query", "text", "title", "task"];

/// Words that say what they refer to is in the previous exchange.
const REFERRING: [&str; 11] = [
    "it", "that", "this", "them", "those", "these", "same", "again", "too", "also", "instead",
];

/// Words that ask for the previous command again.
const AGAIN: [&str; 5] = ["again", "same", "repeat", "another", "more"];

const STOP: [&str; 58] = [
    "a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "for", "from", "with",
    "about", "by", "as", "into", "my", "me", "i", "i'm", "im", "you", "your", "we", "our", "is",
    "are", "was", "be", "it", "it's", "that", "this", "there", "please", "some", "any", "all",
    "user", "user's", "do", "did", "does", "have", "has", "what", "which", "who", "when", "where",
    "how", "can", "will", "would", "so", "not",
];

/// Amounts in words that `intent::word_number` does not spell.
const AMOUNTS: [&str; 7] = [
    "hundred", "half", "quarter", "couple", "few", "several", "dozen",
];

/// Days said by name (the router's slot days, less today: the tools' default).
const NAMED_DAYS: &[&str] = router::DAYS.split_at(1).1;

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

const ORDINALS: [&str; 21] = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
    "twentieth",
    "thirtieth",
];

/// Units of time, as the beginnings of words: Whisper heard "one hour" as "well-houred".
const TIME_UNITS: [&str; 4] = ["sec", "min", "hour", "hr"];

/// The words of an argument worth checking: not stop words, not numbers ("1pm", "3" — which
/// `words` writes as "#").
fn content_words(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| {
            !STOP.contains(&w.as_str()) && !w.chars().any(|c| c.is_ascii_digit() || c == '#')
        })
        .collect()
}

/// The same word, or two that begin with the same four letters.
fn same_word(a: &str, b: &str) -> bool {
    a == b
        || (a.chars().nth(3).is_some()
            && b.chars().nth(3).is_some()
            && a.chars().take(4).eq(b.chars().take(4)))
}

/// Whether `arg` comes from `heard`: at least half of its content words (and one) are there.
fn grounded(arg: &str, heard: &[String]) -> bool {
    let content = content_words(arg);
    if content.is_empty() {
        return true;
    }
    let found = content
        .iter()
        .filter(|w| heard.iter().any(|h| same_word(w, h)))
        .count();
    found >= 1 && found * 2 >= content.len()
}

/// Why the LLM tier's arguments cannot be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ungrounded {
    #[error("its {key} \u{201c}{value}\u{201d} is not something you said")]
    Words { key: String, value: String },
    #[error("you did not say how long")]
    NoDuration,
    /// A unit of time but no number ("I'll do seconds", "a timer for well-houred"): the
    /// timer is what was meant, its length is what to ask for.
    #[error("you did not say how many")]
    NoNumber,
    #[error("its date \u{201c}{0}\u{201d} is not a day you said")]
    Day(String),
    #[error("nothing you said asks for it")]
    NotAsked,
    /// A reminder at a clock time with no time said: the model makes one up.
    #[error("you did not say at what time")]
    NoTime,
}

/// Words that ask for a tool whose arguments carry none of the user's words (by prefix, as
/// [`same_word`] matches). The LLM tier answered garbled questions with such tools ("What now
/// you did?" and "What's today's made?" listed the notes): arguments cannot show that a call is
/// the user's, so a word of the utterance must.
const CUES: [(&str, &[&str]); 7] = [
    (
        "set_reminder",
        &["remind", "reminder", "alert", "nudge", "ping", "wake"],
    ),
    (
        "list_notes",
        &["note", "jot", "wrote", "written", "write", "memo"],
    ),
    (
        "clock",
        &[
            "time", "date", "day", "clock", "o'clock", "today", "tonight", "zone", "hour", "year",
            "month", "week",
        ],
    ),
    (
        "list_events",
        &[
            "calendar",
            "schedule",
            "event",
            "busy",
            "plan",
            "plans",
            "agenda",
            "meeting",
            "appointment",
            "diary",
            "happening",
            "today",
            "tomorrow",
            "tonight",
            "week",
            "weekend",
        ],
    ),
    (
        "free_time",
        &[
            "free",
            "busy",
            "available",
            "slot",
            "time",
            "hour",
            "gap",
            "when",
        ],
    ),
    (
        "summarize_mail",
        &[
            "mail",
            "email",
            "inbox",
            "message",
            "summary",
            "summarize",
            "summarise",
            "letter",
        ],
    ),
    (
        "index_documents",
        &["index", "reindex", "document", "file", "folder"],
    ),
];

/// Words that name the other tools' business, for speech (see [`named_by_voice`]). By prefix,
/// as [`same_word`] matches.
const VOICE_CUES: [(&str, &[&str]); 9] = [
    (
        "add_note",
        &["note", "jot", "write", "memo", "list", "down"],
    ),
    ("search_notes", &["note", "jot", "wrote", "written", "memo"]),
    (
        "search_mail",
        &[
            "mail", "email", "e-mail", "message", "inbox", "letter", "wrote", "sent",
        ],
    ),
    (
        "search_documents",
        &[
            "document", "file", "doc", "folder", "pdf", "paper", "report", "contract", "letter",
        ],
    ),
    (
        "add_event",
        &[
            "add",
            "schedule",
            "book",
            "event",
            "meeting",
            "appointment",
            "calendar",
            "lunch",
            "dinner",
            "breakfast",
            "plan",
            "put",
        ],
    ),
    (
        "remember",
        &[
            "remember", "mind", "note", "know", "forget", "prefer", "fact",
        ],
    ),
    (
        "recall",
        &["remember", "know", "told", "tell", "said", "recall"],
    ),
    ("forget_memory", &["forget", "delete", "remove", "erase"]),
    ("handoff", &["cloud", "online", "internet", "ask"]),
];

/// Whether a voice turn names `tool`: a word of its own business, or a day for the calendar
/// ([`asked_for`]'s cues for the tools whose arguments show no words). For the LLM tier on
/// speech only: a turn reaches it when the rules, the guided hearing and the second model
/// left it not understood, and there, in eight voice bench runs, the model acted on about
/// three in four such turns with a tool the words never named ("Shabu Revent is the ultimate
/// on-fri-mator item." became a note, "Bing me in two hours about the laundry" a document
/// search). A typed message keeps the model's reach over the user's own phrasings.
///
/// # Errors
/// [`Ungrounded::NotAsked`]: no word of `text` names `tool`.
pub fn named_by_voice(tool: &str, text: &str) -> Result<(), Ungrounded> {
    asked_for(tool, text)?;
    let Some((_, cues)) = VOICE_CUES.iter().find(|(t, _)| *t == tool) else {
        return Ok(());
    };
    if names(&words(text), cues) {
        Ok(())
    } else {
        Err(Ungrounded::NotAsked)
    }
}

/// Whether a word heard is one of `cues` (by [`same_word`]).
fn names(heard: &[String], cues: &[&str]) -> bool {
    heard.iter().any(|w| cues.iter().any(|c| same_word(w, c)))
}

/// Whether `text` asks for `tool`, for the tools whose arguments cannot show it (see [`CUES`]);
/// a calendar tool is asked for by a day named too. For the LLM tier only: the router tier
/// learns the user's own idioms ("what's cooking" for the calendar).
///
/// # Errors
/// [`Ungrounded::NotAsked`]: no word of `text` asks for `tool`.
pub fn asked_for(tool: &str, text: &str) -> Result<(), Ungrounded> {
    let Some((_, cues)) = CUES.iter().find(|(t, _)| *t == tool) else {
        return Ok(());
    };
    let heard = words(text);
    let cued = names(&heard, cues);
    let calendar = matches!(tool, "list_events" | "free_time")
        && heard
            .iter()
            .any(|w| NAMED_DAYS.contains(&w.as_str()) || MONTHS.iter().any(|m| same_word(w, m)));
    if cued || calendar {
        Ok(())
    } else {
        Err(Ungrounded::NotAsked)
    }
}

/// Whether `text` has anything a timer's length could come from: a number, an amount ("half",
/// "couple") or a unit of time (by prefix: Whisper wrote "one hour" as "well-houred").
pub fn says_a_duration(text: &str) -> bool {
    words(text).iter().any(|w| {
        w.chars().any(|c| c.is_ascii_digit() || c == '#')
            || (w != "a" && w != "an" && intent::word_number(w).is_some())
            || AMOUNTS.contains(&w.as_str())
            || TIME_UNITS.iter().any(|u| w.starts_with(u))
    })
}

/// Whether the day `value` (a tool's `date`: today, tomorrow, a weekday, YYYY-MM-DD) is one the
/// user said. Today is the tools' own default, so it needs no words; a weekday or "tomorrow"
/// must be said; a calendar date needs a number, an ordinal, a month or a named day (the model
/// writes "tomorrow" as its date) in what was said.
fn day_said(value: &str, heard: &[String]) -> bool {
    let v = value.trim().to_lowercase();
    if v.is_empty() || v == "today" {
        return true;
    }
    if let Some(day) = NAMED_DAYS.iter().find(|d| v.contains(*d)) {
        return heard.iter().any(|w| same_word(w, day));
    }
    let numbered = heard.iter().any(|w| {
        w.chars().any(|c| c.is_ascii_digit() || c == '#')
            || intent::word_number(w).is_some()
            || ORDINALS.contains(&w.as_str())
            || MONTHS.iter().any(|m| same_word(w, m))
    });
    // The days named in words, as dates: a calendar date must be one of them (the model wrote
    // "2023-05-15" for "on Friday night") unless a month or an ordinal was said as well.
    let named: Vec<_> = heard
        .iter()
        .filter(|w| *w == "today" || *w == "tonight" || NAMED_DAYS.contains(&w.as_str()))
        .filter_map(|w| tools::resolve_date(if w == "tonight" { "today" } else { w }))
        .collect();
    // With a day named, a number is more likely the time ("on Friday at nine").
    let dated = heard
        .iter()
        .any(|w| ORDINALS.contains(&w.as_str()) || MONTHS.iter().any(|m| same_word(w, m)));
    // A date with a time after it ("2023-01-01T00:00:00Z", which the model writes) is its date.
    let resolved = tools::resolve_date(&v).or_else(|| {
        v.get(..10)
            .filter(|d| v.len() > 10 && d.as_bytes()[4] == b'-')
            .and_then(tools::resolve_date)
    });
    match resolved {
        Some(d) if named.contains(&d) => true,
        Some(_) if !named.is_empty() => dated,
        Some(_) => numbered,
        None => {
            numbered || !named.is_empty() || heard.iter().any(|w| w == "week" || w == "weekend")
        }
    }
}

/// Whether `text` says a number (in digits or words, or an amount such as "half"): what a
/// timer's length cannot do without. "Seconds" alone, or a misheard "well-hour", does not.
pub fn says_a_number(text: &str) -> bool {
    words(text).iter().any(|w| {
        w.chars().any(|c| c.is_ascii_digit() || c == '#')
            || (w != "a" && w != "an" && intent::word_number(w).is_some())
            || AMOUNTS.contains(&w.as_str())
    })
}

/// Checks (and where harmless, trims) the arguments the LLM tier chose for `tool` against what
/// the user said (`text`) and, for a message that refers back, the previous one (`previous`).
///
/// # Errors
/// [`Ungrounded`]: the arguments are not the user's; nothing should run.
pub fn check(
    tool: &str,
    args: &mut Value,
    text: &str,
    previous: Option<&str>,
) -> Result<(), Ungrounded> {
    if tool == "reply" {
        return Ok(()); // the model's own words, to be said, not acted on
    }
    let said = words(text);
    let mut heard = said.clone();
    // A follow-up borrows the previous message's words for another tool ("search my notes for
    // that too") or to do it again ("same again"); the same tool on the same words, unasked,
    // is the model copying the last command ("and it emails from our" → the previous mail
    // search for "flight confirmation").
    let refers = said.iter().any(|w| REFERRING.contains(&w.as_str()));
    let again = || said.iter().any(|w| AGAIN.contains(&w.as_str()));
    let same_tool = || {
        previous
            .and_then(intent::understand)
            .is_some_and(|i| i.tool == tool)
    };
    if refers && (again() || !same_tool()) {
        heard.extend(previous.map(words).unwrap_or_default());
    }
    let Some(obj) = args.as_object_mut() else {
        return Ok(());
    };
    if tool == "set_timer" {
        if !says_a_duration(text) {
            return Err(Ungrounded::NoDuration);
        }
        // The length is the words', not the model's: it turned "in 20 minutes" into 20 seconds
        // and made up 30 seconds for "I'll be seconds".
        match intent::parse_duration(text) {
            Some(seconds) => {
                obj.insert("seconds".into(), Value::from(seconds));
            }
            None if !says_a_number(text) => return Err(Ungrounded::NoNumber),
            None => {}
        }
        let label_ok = obj
            .get("label")
            .and_then(Value::as_str)
            .is_none_or(|l| grounded(l, &heard));
        if !label_ok {
            obj.insert("label".into(), Value::String(String::new()));
        }
    }
    // The place said, where the model left it out: "I'd like to know what time it is in
    // Tokyo" came back as the time here.
    if tool == "clock"
        && obj
            .get("zone")
            .and_then(Value::as_str)
            .is_none_or(|z| z.trim().is_empty())
    {
        if let Some(zone) = zone_said(text) {
            obj.insert("zone".into(), Value::String(zone));
        }
    }
    if tool == "set_reminder" {
        // The day is the words' where they name one: the model left it out ("… call mum
        // tomorrow around five pm" came back with no date: today at 17:00) or made one up
        // ("2023-04-15" for "on Saturday").
        if let Some(day) = said.iter().find(|w| {
            matches!(w.as_str(), "tomorrow" | "tonight") || NAMED_DAYS.contains(&w.as_str())
        }) {
            obj.insert("date".into(), Value::String(day.clone()));
        }
        // What to be reminded of, without the asking the model copied into it.
        if let Some(what) = obj.get("text").and_then(Value::as_str) {
            let lower = what.to_lowercase();
            let cut = [
                "remind me to ",
                "remind me about ",
                "remind me that ",
                "remind me ",
            ]
            .iter()
            .find(|p| lower.starts_with(*p))
            .map_or(0, |p| p.len());
            // (`get`: the cut is counted in the lower-cased text, whose bytes may differ.)
            let trimmed = what.get(cut..).unwrap_or(what).trim().to_string();
            obj.insert("text".into(), Value::String(trimmed));
        }
        // Last, so that the question for the time keeps the day and the words set right above.
        if !(says_a_number(text) || said.iter().any(|w| w == "noon" || w == "midnight")) {
            return Err(Ungrounded::NoTime);
        }
    }
    if let Some(day) = obj.get("date").and_then(Value::as_str) {
        if !day_said(day, &heard) {
            return Err(Ungrounded::Day(day.into()));
        }
    }
    for key in FREE_TEXT {
        if let Some(value) = obj.get(key).and_then(Value::as_str) {
            // A search for stop words alone finds nothing the user meant: the router took
            // "our" from a misheard "and it emails from our".
            let empty_query = key == "query" && content_words(value).is_empty();
            if empty_query || !grounded(value, &heard) {
                return Err(Ungrounded::Words {
                    key: key.into(),
                    value: quoted(value),
                });
            }
        }
    }
    Ok(())
}

/// The place after the last "in" of `text` ("… in Tokyo?", "… in New York right now") when the
/// time-zone database knows it.
fn zone_said(text: &str) -> Option<String> {
    static IN_PLACE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = IN_PLACE.get_or_init(|| {
        regex::Regex::new(
            r"(?i)\bin\s+(?P<place>[a-z][\w /'-]*?)(?:\s+(?:now|right now|today))?[?.!]*\s*$",
        )
        .unwrap_or_else(|_| unreachable!())
    });
    let place = re
        .captures(text)?
        .name("place")?
        .as_str()
        .trim()
        .to_string();
    tools::find_zone(&place, std::path::Path::new(tools::ZONEINFO)).map(|_| place)
}

/// Words of an argument quoted back in an answer that is often spoken.
const QUOTED_WORDS: usize = 8;

/// `value` as an answer quotes it: its first [`QUOTED_WORDS`] words, with "…" when there were
/// more. The LLM once filled a voice turn's query with the previous answer, a mail's 200
/// characters ("SkyWays <booking@skyways.example> — Flight confirmation: London to Lyon …"),
/// and the refusal read all of it out.
fn quoted(value: &str) -> String {
    let words: Vec<&str> = value.split_whitespace().collect();
    if words.len() <= QUOTED_WORDS {
        return words.join(" ");
    }
    format!("{}\u{2026}", words[..QUOTED_WORDS].join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check_of(
        tool: &str,
        args: Value,
        text: &str,
        previous: Option<&str>,
    ) -> Result<Value, Ungrounded> {
        let mut args = args;
        check(tool, &mut args, text, previous).map(|()| args)
    }

    #[test]
    fn arguments_from_the_utterance_pass() {
        let ok = [
            (
                "search_mail",
                json!({"query": "Anna"}),
                "Any emails from Anna?",
            ),
            (
                "add_note",
                json!({"text": "I ate lunch with Sarah tomorrow at 1pm."}),
                "and lunch with Sara tomorrow at one pm.",
            ),
            (
                "remember",
                json!({"text": "The user is vegetarian", "kind": "fact"}),
                "I'm vegetarian, remember it",
            ),
            (
                "handoff",
                json!({"task": "Translate this letter into German"}),
                "Ask the cloud to translate this letter into German.",
            ),
            (
                "search_documents",
                json!({"query": "insurance policies"}),
                "Where's the file with the insurance policy?",
            ),
            (
                "add_event",
                json!({"title": "Dentist", "date": "friday", "time": "09:00"}),
                "Schedule a dentist appointment on Friday at nine.",
            ),
            (
                "reply",
                json!({"text": "Hello! How can I help?"}),
                "hi there",
            ),
        ];
        for (tool, args, text) in ok {
            assert_eq!(check_of(tool, args.clone(), text, None), Ok(args), "{text}");
        }
        // The model writes "tomorrow" as its date.
        let tomorrow = json!({"date": tools::today().add_days(1).iso()});
        assert_eq!(
            check_of("list_events", tomorrow.clone(), "What's on tomorrow?", None),
            Ok(tomorrow)
        );
    }

    #[test]
    fn a_unit_alone_is_not_a_number() {
        for t in [
            "I'll do seconds.",
            "Set a timer for well-hour.",
            "Think me into hours",
        ] {
            assert!(!says_a_number(t), "{t}");
            assert!(says_a_duration(t), "{t}");
        }
        for t in [
            "for 5 minutes",
            "seven minutes",
            "half an hour",
            "a couple of minutes",
        ] {
            assert!(says_a_number(t), "{t}");
        }
    }

    /// Days the model made up (seen: a free-time search on "2023-01-01T00:00:00Z" for a "Yes."
    /// that had nothing to answer; an appointment for "2023-05-15" when Friday was said).
    #[test]
    fn days_not_said_are_refused() {
        for (tool, args, text) in [
            (
                "free_time",
                json!({"date": "2023-01-01T00:00:00Z", "minutes": 1440}),
                "Yes.",
            ),
            (
                "add_event",
                json!({"title": "Lament appointment", "date": "2023-05-15", "time": "14:00"}),
                "Can you lament this appointment?",
            ),
            (
                "list_events",
                json!({"date": "friday"}),
                "What's on tomorrow?",
            ),
            // A calendar date that is not the day named.
            (
                "add_event",
                json!({"title": "Dentist", "date": tools::today().add_days(8).iso(), "time": "09:00"}),
                "Schedule a dentist appointment on Friday at nine.",
            ),
            (
                "add_event",
                json!({"title": "Appointment", "date": "2023-05-15", "time": "14:00"}),
                "Can you lament this appointment on Friday night?",
            ),
            // A date and time the model made up, with a day named.
            (
                "free_time",
                json!({"date": "2023-01-01T00:00:00Z", "minutes": 1234}),
                "What do I come on Friday?",
            ),
        ] {
            assert!(
                matches!(check_of(tool, args, text, None), Err(Ungrounded::Day(_))),
                "{text}"
            );
        }
        for (args, text) in [
            (json!({"date": "today"}), "What's on my calendar?"),
            (
                json!({"date": "2026-12-25"}),
                "What do I have on the 25th of December?",
            ),
            (json!({"date": "Friday"}), "What do I come on Friday?"),
        ] {
            assert_eq!(
                check_of("list_events", args.clone(), text, None),
                Ok(args),
                "{text}"
            );
        }
    }

    /// The voice bench's misses where the model took its words from elsewhere.
    #[test]
    fn arguments_from_elsewhere_are_refused() {
        let previous = Some("Find the emails about the jarm offer.");
        let bad = [
            (
                "search_documents",
                json!({"query": "jarm offer"}),
                "Where's the file within the insurance policy?",
            ),
            (
                "search_mail",
                json!({"query": "local mail (read-only) by sender, subject or text"}),
                "What's the maze made?",
            ),
        ];
        for (tool, args, text) in bad {
            assert!(
                matches!(
                    check_of(tool, args, text, previous),
                    Err(Ungrounded::Words { .. })
                ),
                "{text}"
            );
        }
        assert_eq!(
            check_of(
                "set_timer",
                json!({"seconds": 10, "label": "10 minutes"}),
                "What do you go about my sister?",
                None
            ),
            Err(Ungrounded::NoDuration)
        );
        assert_eq!(
            check_of(
                "set_timer",
                json!({"seconds": 3, "label": "the eggs"}),
                "Reminds me of how it's a call, Mum.",
                previous
            ),
            Err(Ungrounded::NoDuration)
        );
    }

    #[test]
    fn the_place_said_is_the_clocks_zone() {
        // tzdata is installed by `just setup`.
        let mut args = json!({"what": "time"});
        let text = "I'd like to know what time it is in Tokyo";
        assert_eq!(check("clock", &mut args, text, None), Ok(()));
        assert_eq!(args, json!({"what": "time", "zone": "Tokyo"}));
        // No place the database knows, or the model's own zone: left as they are.
        let mut here = json!({"what": "time"});
        assert_eq!(
            check("clock", &mut here, "what time is it in a minute", None),
            Ok(())
        );
        assert_eq!(here, json!({"what": "time"}));
        let mut paris = json!({"what": "time", "zone": "Europe/Paris"});
        assert_eq!(
            check("clock", &mut paris, "time in Paris right now", None),
            Ok(())
        );
        assert_eq!(paris["zone"], "Europe/Paris");
    }

    #[test]
    fn a_reminder_needs_the_asking_and_its_time_said() {
        let mut args = json!({"text": "call mum", "date": "tomorrow", "time": "17:00"});
        let text = "could you remind me to call mum tomorrow around five";
        assert_eq!(asked_for("set_reminder", text), Ok(()));
        assert_eq!(check("set_reminder", &mut args, text, None), Ok(()));
        // What the model wrote for it (Qwen2.5-Coder-0.5B): the whole request, and no day.
        let mut copied =
            json!({"text": "Remind me to call Mum tomorrow around five pm.", "time": "17:00"});
        let pm = "could you remind me to call mum tomorrow around five pm";
        assert_eq!(check("set_reminder", &mut copied, pm, None), Ok(()));
        assert_eq!(
            copied,
            json!({"text": "call Mum tomorrow around five pm.", "date": "tomorrow", "time": "17:00"})
        );
        let mut made_up =
            json!({"text": "pick up the dry cleaning", "date": "2023-04-15", "time": "10:00"});
        let saturday = "I need a reminder on Saturday at 10 to pick up the dry cleaning";
        assert_eq!(check("set_reminder", &mut made_up, saturday, None), Ok(()));
        assert_eq!(made_up["date"], "saturday");
        // The time made up: "tomorrow" says no hour.
        let text = "remind me tomorrow to call mum";
        assert_eq!(
            check("set_reminder", &mut args, text, None),
            Err(Ungrounded::NoTime)
        );
        let mut at_noon = json!({"text": "call mum", "date": "", "time": "12:00"});
        let noon = "remind me at noon to call mum";
        assert_eq!(check("set_reminder", &mut at_noon, noon, None), Ok(()));
        // A day not said is refused, as for any tool.
        assert_eq!(
            check("set_reminder", &mut args, noon, None),
            Err(Ungrounded::Day("tomorrow".into()))
        );
        // Nothing asks for a reminder.
        assert_eq!(
            asked_for("set_reminder", "call mum tomorrow at five"),
            Err(Ungrounded::NotAsked)
        );
    }

    #[test]
    fn a_tool_without_the_users_words_must_be_asked_for() {
        // The voice bench's commands for these tools, as typed.
        for (tool, text) in [
            ("list_notes", "List my notes."),
            ("list_notes", "Read back everything I noted."),
            ("list_notes", "What did I write down?"),
            ("clock", "What time is it?"),
            ("clock", "What day is it?"),
            ("clock", "What's today's date?"),
            ("list_events", "What do I have on Friday?"),
            ("list_events", "What's my schedule for Monday?"),
            ("list_events", "Am I busy on Saturday?"),
            ("free_time", "When am I free tomorrow?"),
            ("summarize_mail", "Summarise my inbox"),
            ("index_documents", "Index my documents"),
            // Tools with the user's words in their arguments are checked by `check`.
            ("search_notes", "What now you did?"),
        ] {
            assert_eq!(asked_for(tool, text), Ok(()), "{tool}: {text}");
        }
        // Heard in the voice bench, and what the LLM tier made of it.
        for (tool, text) in [
            ("list_notes", "What now you did?"),
            ("list_notes", "What's today's made?"),
            ("list_events", "What now you did?"),
            ("clock", "Bring me a coffee"),
        ] {
            assert_eq!(
                asked_for(tool, text),
                Err(Ungrounded::NotAsked),
                "{tool}: {text}"
            );
        }
    }

    #[test]
    fn speech_must_name_the_tool_the_model_chose() {
        // What the local model did with voice turns misheard twice (voice bench).
        for (tool, text) in [
            (
                "add_note",
                "Shabu Revent is the ultimate on-fri-mator item.",
            ),
            (
                "search_documents",
                "Bing me in two hours about the laundry.",
            ),
            ("search_notes", "think me in two hours about the laundry."),
            ("list_notes", "What now you did?"),
            ("add_note", "Right thumb at the car needs zoo breaks."),
        ] {
            assert_eq!(
                named_by_voice(tool, text),
                Err(Ungrounded::NotAsked),
                "{tool}: {text}"
            );
        }
        for (tool, text) in [
            ("add_event", "Shabu event is to puntment on Friday at 9."),
            ("set_timer", "Santa, timer for one hour"),
            (
                "add_note",
                "Could you jot down that the plumber comes on Thursday",
            ),
            ("search_mail", "Anything in my inbox from Anna?"),
            ("recall", "What did I tell you about my car?"),
            ("list_events", "Anything on Friday?"),
        ] {
            assert_eq!(named_by_voice(tool, text), Ok(()), "{tool}: {text}");
        }
        // Typed, the model keeps its reach over the user's own phrasings.
        assert_eq!(
            asked_for("search_documents", "Where did I put the lease?"),
            Ok(())
        );
        assert!(named_by_voice("search_documents", "Where did I put the lease?").is_err());
    }

    #[test]
    fn a_long_argument_not_said_is_quoted_short() {
        // The LLM's query for a misheard "and it emails from our": the previous answer, clipped.
        let long = "SkyWays <booking@skyways.example> — Flight confirmation: London to Lyon on 18 December: Booking reference QX7K2P.";
        let e = check_of(
            "search_mail",
            json!({ "query": long }),
            "and it emails from our",
            None,
        )
        .expect_err("not said");
        assert_eq!(
            e.to_string(),
            "its query \u{201c}SkyWays <booking@skyways.example> — Flight confirmation: London to Lyon\u{2026}\u{201d} is not something you said"
        );
        let e = check_of(
            "search_notes",
            json!({"query": "the plumber's  number"}),
            "Search my notes for milk",
            None,
        )
        .expect_err("not said");
        assert!(
            e.to_string()
                .contains("\u{201c}the plumber's number\u{201d}"),
            "{e}"
        );
    }

    #[test]
    fn a_follow_up_may_take_words_from_the_previous_message() {
        let previous = Some("Find emails about the job offer.");
        let args = json!({"query": "job offer"});
        assert!(check_of(
            "search_notes",
            args.clone(),
            "Search my notes for that too",
            previous
        )
        .is_ok());
        // Nor for the same tool again, unless asked: "it" in a misheard "and it emails from
        // our" is no reference to the flight confirmation searched for before.
        let previous = Some("Search my mail for the flight confirmation.");
        let args = json!({"query": "flight confirmation"});
        assert!(matches!(
            check_of(
                "search_mail",
                args.clone(),
                "and it emails from our",
                previous
            ),
            Err(Ungrounded::Words { .. })
        ));
        assert!(check_of("search_mail", args, "Search it again", previous).is_ok());
        // Nor does a query of stop words alone search for anything.
        assert!(matches!(
            check_of(
                "search_mail",
                json!({"query": "our"}),
                "and it emails from our",
                None
            ),
            Err(Ungrounded::Words { .. })
        ));
        let previous = Some("Find emails about the job offer.");
        let args = json!({"query": "job offer"});
        // Without a word that refers back, the previous message does not count.
        assert!(check_of(
            "search_notes",
            args,
            "Search my notes for the lease",
            previous
        )
        .is_err());
    }

    #[test]
    fn a_timer_needs_a_length_and_loses_a_label_it_was_not_given() {
        assert_eq!(
            check_of(
                "set_timer",
                json!({"seconds": 7200, "label": "Laundry Timer"}),
                "Bring me into hours about the laundry.",
                None
            ),
            Ok(json!({"seconds": 7200, "label": "Laundry Timer"}))
        );
        // The words decide the length (the voice bench: 20 seconds for "in 20 minutes").
        assert_eq!(
            check_of(
                "set_timer",
                json!({"seconds": 20, "label": "check the oven"}),
                "Reminds me in 20 minutes to check the oven.",
                None
            ),
            Ok(json!({"seconds": 1200, "label": "check the oven"}))
        );
        assert_eq!(
            check_of(
                "set_timer",
                json!({"seconds": 4500, "label": ""}),
                "Time at 4.5 minutes.",
                None
            ),
            Ok(json!({"seconds": 270, "label": ""}))
        );
        assert_eq!(
            check_of(
                "set_timer",
                json!({"seconds": 3600, "label": "the eggs"}),
                "Remind me in an hour to call mum.",
                None
            ),
            Ok(json!({"seconds": 3600, "label": ""}))
        );
        assert!(check_of(
            "set_timer",
            json!({"seconds": 90, "label": ""}),
            "Count down 90 seconds.",
            None
        )
        .is_ok());
        // Heard in the voice bench for "Set a timer for one hour." and "Count down ninety
        // seconds.": a unit without a number is a timer whose length is to be asked for.
        for heard in ["Set a timer for well-houred", "I'll be seconds."] {
            assert_eq!(
                check_of(
                    "set_timer",
                    json!({"seconds": 3600, "label": ""}),
                    heard,
                    None
                ),
                Err(Ungrounded::NoNumber),
                "{heard}"
            );
        }
    }
}
