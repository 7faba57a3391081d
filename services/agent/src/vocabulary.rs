//! Hearing a search again in the user's own words.
//!
//! A voice search whose query finds nothing is most often a misheard one: Whisper tiny.en,
//! fed espeak's "Look for messages from the bank.", writes "… from the mic." and "Find emails
//! about the job offer." as "… the jarm offer.". The words the user searches by are mostly
//! already in their data — a mailbox's senders and subjects, the notes' words, the documents'
//! names. So before acting on an empty search, the agent hands the audio service a pattern of
//! the same command with its query made of those words ([`query_in_words`]); the audio
//! service searches the turn's sound for the best reading the pattern allows (a guided
//! decode) and takes it only when the model finds it nearly as likely as what it first wrote. Offline, tiny.en's reading "… from the
//! bank." cost 1.33 nats more than "… from the mic.", "… the job offer." 1.44 (the limit is
//! 4.5); "Any emails from Anna?", heard "and it emails from", would need 10.6, and stays as
//! heard.

use std::time::{Duration, Instant};

/// How many of the data's words a hearing again chooses among.
pub const WORDS: usize = 400;

/// The pattern (Rust regex syntax, as `agent.patterns` gives them) of `heard` with `query`,
/// which must end it (punctuation aside), replaced by one to three of `words`, after an
/// optional article. `None` when the query is not where it must be, when nothing but ASCII
/// can be guided (the audio service's guide is ASCII) or when there are no words.
pub fn query_in_words(heard: &str, query: &str, words: &[String]) -> Option<String> {
    let q = query.trim().to_ascii_lowercase();
    let lower = heard.to_ascii_lowercase();
    if q.is_empty() || words.is_empty() {
        return None;
    }
    let at = lower.rfind(&q)?;
    let prefix = heard[..at].trim_start();
    let after = &heard[at + q.len()..];
    if !after
        .chars()
        .all(|c| c.is_ascii_punctuation() || c.is_whitespace())
        || prefix.trim().is_empty()
        || !prefix.is_ascii()
    {
        return None;
    }
    let lead = prefix
        .split_whitespace()
        .map(regex::escape)
        .collect::<Vec<_>>()
        .join(r"\s+");
    let alternatives = words
        .iter()
        .filter(|w| w.is_ascii() && !w.is_empty())
        .map(|w| regex::escape(w))
        .collect::<Vec<_>>()
        .join("|");
    if alternatives.is_empty() {
        return None;
    }
    Some(format!(
        r"(?i)^\s*{lead}\s+(?:(?:the|my|an?)\s+)?(?:{alternatives})(?:[ -](?:{alternatives})){{0,2}}[.?!]?\s*$"
    ))
}

/// What the agent keeps of a voice turn while the audio service may hear it again, by voice
/// utterance: the last few turns of the last half minute only (a turn is heard again within a
/// second or so; a restarted audio service counts its utterances from 1 again).
pub struct Turns<T>(std::sync::Mutex<std::collections::VecDeque<(u64, T, Instant)>>);

impl<T> Default for Turns<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::default())
    }
}

impl<T: Clone> Turns<T> {
    /// Entries kept.
    const KEEP: usize = 32;
    /// How long one is kept.
    const FOR: Duration = Duration::from_secs(30);

    /// Keeps `value` for `utterance` (after what it has already).
    pub fn put(&self, utterance: u64, value: T) {
        if let Ok(mut q) = self.0.lock() {
            q.retain(|(_, _, at)| at.elapsed() < Self::FOR);
            if q.len() == Self::KEEP {
                q.pop_front();
            }
            q.push_back((utterance, value, Instant::now()));
        }
    }

    /// What `utterance` has, oldest first.
    pub fn all(&self, utterance: u64) -> Vec<T> {
        let Ok(q) = self.0.lock() else {
            return Vec::new();
        };
        q.iter()
            .filter(|(u, _, at)| *u == utterance && at.elapsed() < Self::FOR)
            .map(|(_, v, _)| v.clone())
            .collect()
    }

    /// What `utterance` has first, once: everything it has is let go.
    pub fn take(&self, utterance: u64) -> Option<T> {
        let first = self.all(utterance).into_iter().next();
        if let Ok(mut q) = self.0.lock() {
            q.retain(|(u, _, _)| *u != utterance);
        }
        first
    }
}

/// The queries of voice searches sent to be heard again ([`Turns`]): when the turn's reading in
/// the user's words comes back and is searched, the answer says what the first hearing searched
/// for and that it found nothing ([`searched_instead`]). A search for something the data does
/// not hold can be heard as one that it does ("Search my notes for milk." heard in the notes'
/// words as "… for meal." at 2.55 nats, inside what the right readings cost), so the swap is
/// never silent.
pub type FirstHeard = Turns<String>;

/// Whether `text`, the free text (a note's, a memory's) of a guided reading of a voice turn,
/// strays from what the turn's earlier readings heard: fewer than half of its words are among
/// theirs. The guide keeps a reading to the words of a command, but the free text after them is
/// whatever the decoder writes on the way, and from a reading that was no command at all it
/// wrote notes such as "November 10, December" (from "No time for them to stay number."), "the
/// end of December" and "I'm going to discover" — kept, they are notes the user never said.
/// The guided readings that set a note right kept its words ("Right now, let the car need new
/// brakes." → "Write down the car needs new brakes.": four of five). `false` without earlier
/// readings. The same test keeps the local model from chatting about a voice turn whose second
/// hearing strays from its first ("What my elite?" after "What made it?").
pub fn strays(text: &str, before: &[String]) -> bool {
    kept(text, before).is_some_and(|(kept, of)| kept * 2 < of)
}

/// Whether `text`, a second hearing of a voice turn, is far from `first`, its first reading:
/// under a quarter of its words are among the first's. Two hearings that far apart have heard
/// no words to act on ("Shabu-Rament is the ultimate on-flying item." after "Can you lament
/// its appointment on Friday night?"), so the local model is not asked to guess; one that keeps
/// more may still be a command it knows ("think me into hours and out the laundry." after
/// "being leading to hours about the laundry.", three words of eight, set right as a timer).
pub fn far_apart(text: &str, first: &str) -> bool {
    kept(text, &[first.to_string()]).is_some_and(|(kept, of)| kept * 4 < of)
}

/// How many of `text`'s words are among those of `before`, and of how many; `None` when
/// `before` has no words.
fn kept(text: &str, before: &[String]) -> Option<(usize, usize)> {
    let heard: std::collections::HashSet<String> = before.iter().flat_map(|b| words(b)).collect();
    let said = words(text);
    let kept = said.iter().filter(|w| heard.contains(*w)).count();
    (!heard.is_empty()).then_some((kept, said.len()))
}

/// The start of the answer to a search heard again that searched `now` where the first
/// hearing searched `first` and found nothing; `None` when they are the same words.
pub fn searched_instead(first: &str, now: &str) -> Option<String> {
    (words(first) != words(now)).then(|| {
        format!(
            "Nothing mentions \u{201c}{}\u{201d}; heard again in your own words as \u{201c}{}\u{201d}: ",
            first.trim(),
            now.trim()
        )
    })
}

/// The words of `s`, lowercase, without the punctuation around them.
fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_heard_again_says_what_was_heard_first() {
        let first = FirstHeard::default();
        first.put(7, "the mic".into());
        first.put(8, "milk".into());
        first.put(7, "the bank".into());
        assert_eq!(first.all(7), ["the mic", "the bank"]);
        assert_eq!(first.take(7).as_deref(), Some("the mic"));
        assert_eq!(first.take(7), None, "once");
        for u in 100..140 {
            first.put(u, "x".into());
        }
        assert_eq!(first.take(8), None, "the last few turns only");
        assert_eq!(first.take(139).as_deref(), Some("x"));
        let said = searched_instead("milk", "meal").unwrap();
        assert!(
            said.contains("\u{201c}milk\u{201d}") && said.contains("\u{201c}meal\u{201d}"),
            "{said}"
        );
        assert_eq!(searched_instead("the Bank", "the bank."), None);
    }

    #[test]
    fn a_guided_notes_words_must_be_mostly_heard_before() {
        let before = |s: &[&str]| s.iter().map(|t| (*t).to_string()).collect::<Vec<_>>();
        // From the voice bench: readings that were no command, and the notes the guide made.
        let first = before(&["No time for them to stay number."]);
        assert!(strays("November 10, December", &first));
        assert!(strays("I'm going to discover", &first));
        assert!(strays(
            "the end of December",
            &before(&["No time for them to December."])
        ));
        // Guided readings that kept what was heard.
        assert!(!strays(
            "the car needs new brakes",
            &before(&["Right now, let the car need new brakes."])
        ));
        assert!(!strays(
            "call the man tomorrow",
            &before(&[
                "dot down call the bank tomorrow.",
                "Dot down call the bank."
            ])
        ));
        assert!(!strays("anything", &[]), "nothing heard before");
    }

    #[test]
    fn a_second_hearing_strays_from_the_first_when_it_keeps_under_half_its_words() {
        let first = |s: &str| vec![s.to_string()];
        // From the voice bench: second hearings the local model chatted about.
        assert!(strays("What my elite?", &first("What made it?")));
        assert!(strays(
            "Shabu-Rament is the ultimate on-flying item.",
            &first("Can you lament its appointment on Friday night?")
        ));
        // Heard again much the same (the local model set this timer right).
        assert!(!strays(
            "think me in two hours about the laundry.",
            &first("Think me into hours about the laundry.")
        ));
        assert!(!strays(
            "Tell me a joke about penguins.",
            &first("Tell me a joke about penguins")
        ));
        // Far apart: not even a quarter kept.
        assert!(far_apart(
            "Shabu-Rament is the ultimate on-flying item.",
            "Can you lament its appointment on Friday night?"
        ));
        assert!(far_apart("What am I a lit?", "What's that?"));
        assert!(!far_apart("What my elite?", "What made it?"));
        assert!(!far_apart(
            "think me into hours and out the laundry.",
            "being leading to hours about the laundry."
        ));
        assert!(!far_apart("anything", ""), "nothing heard first");
    }

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn the_query_is_made_of_the_users_words() {
        let w = words(&["bank", "job", "offer", "anna", "c++"]);
        let p = query_in_words("Look for messages from the mic.", "the mic", &w).unwrap();
        let re = regex::Regex::new(&p).unwrap();
        for yes in [
            " Look for messages from the bank.",
            "look for messages from bank",
            "Look for  messages from the job offer?",
            "Look for messages from Anna",
            "Look for messages from c++",
        ] {
            assert!(re.is_match(yes), "{yes} / {p}");
        }
        for no in [
            "Look for messages from the mic.",
            "Look for messages from the bank robber.",
            "Find messages from the bank.",
            "Look for messages from the bank job offer anna.",
        ] {
            assert!(!re.is_match(no), "{no} / {p}");
        }
        let p = query_in_words(
            "Find the emails about the jarm offer.",
            "the jarm offer",
            &w,
        );
        let re = regex::Regex::new(&p.unwrap()).unwrap();
        assert!(re.is_match("Find the emails about the job offer."));
    }

    #[test]
    fn nothing_to_guide_without_a_query_ending_the_command_or_words() {
        let w = words(&["bank"]);
        assert_eq!(
            query_in_words("Look for messages from the mic.", "", &w),
            None
        );
        assert_eq!(
            query_in_words("Look for messages from the mic.", "the mic", &[]),
            None
        );
        assert_eq!(
            query_in_words("Look for messages from the mic please.", "the mic", &w),
            None
        );
        assert_eq!(query_in_words("the mic", "the mic", &w), None);
        assert_eq!(query_in_words("Cherche les mèls de mic", "mic", &w), None);
        assert_eq!(
            query_in_words("Look for messages from the mic.", "a bank", &w),
            None
        );
    }
}
