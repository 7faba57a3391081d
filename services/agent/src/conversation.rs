//! Conversations: the last exchange of each session, given to the LLM tier so that a
//! follow-up ("and move it to Friday") is read in context. Kept in memory only; sessions that go
//! quiet are forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ming_schemas::inference::ChatMessage;

/// Exchanges kept per session: the last one. A follow-up ("make it ten minutes", "and on
/// Friday?") refers to it, and each earlier one costs the LLM tier prompt processing that no
/// cache can keep (the window slides) and gives the small model something to copy: in the voice
/// bench four exchanges of history put a miss's words into the next, unrelated command and
/// made the LLM tier 3.5 s at the median, against 1.0 s for the same commands typed.
const KEEP: usize = 1;
/// A session silent this long starts afresh.
const IDLE: Duration = Duration::from_secs(300);

/// One user message and what the agent answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub user: String,
    pub agent: String,
}

#[derive(Default)]
pub struct Conversations {
    sessions: Mutex<HashMap<String, (Instant, VecDeque<Exchange>)>>,
}

impl Conversations {
    /// The recent exchanges of `session`, oldest first.
    pub fn history(&self, session: &str) -> Vec<Exchange> {
        let Ok(mut s) = self.sessions.lock() else {
            return Vec::new();
        };
        s.retain(|_, (at, _)| at.elapsed() < IDLE);
        s.get(session)
            .map(|(_, h)| h.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Records an exchange.
    pub fn add(&self, session: &str, user: &str, agent: &str) {
        let Ok(mut s) = self.sessions.lock() else {
            return;
        };
        let (at, h) = s
            .entry(session.to_string())
            .or_insert_with(|| (Instant::now(), VecDeque::new()));
        *at = Instant::now();
        h.push_back(Exchange {
            user: user.to_string(),
            agent: agent.to_string(),
        });
        while h.len() > KEEP {
            h.pop_front();
        }
    }
}

/// How much of each earlier answer the LLM is given (characters): enough for a follow-up to
/// know what was done, while a long tool result (a note list, search hits) does not cost the
/// next turn seconds of prompt processing.
const ANSWER_CHARS: usize = 200;

/// `text` cut to `max` characters, with "…" where it was cut.
fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// The LLM's messages: the system prompt, the recent exchanges (each answer clipped to
/// [`ANSWER_CHARS`]), then the new message.
pub fn messages(system: &str, history: &[Exchange], text: &str) -> Vec<ChatMessage> {
    let mut out = prefix(system, history);
    out.push(ChatMessage::new("user", text));
    out
}

/// How every next LLM prompt of a session begins: [`messages`] without the new message. The
/// agent has inference compute it after each exchange (`prefill_only`), so that the next turn
/// reuses it from the prompt cache instead of computing the previous exchange again.
pub fn prefix(system: &str, history: &[Exchange]) -> Vec<ChatMessage> {
    let mut out = vec![ChatMessage::new("system", system)];
    for e in history {
        out.push(ChatMessage::new("user", e.user.clone()));
        out.push(ChatMessage::new("assistant", clip(&e.agent, ANSWER_CHARS)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follow_ups_carry_the_recent_exchanges() {
        let c = Conversations::default();
        assert!(c.history("s").is_empty());
        for i in 0..6 {
            c.add("s", &format!("q{i}"), &format!("a{i}"));
        }
        c.add("other", "x", "y");
        let h = c.history("s");
        assert_eq!(
            h.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(),
            ["q5"]
        );
        let m = messages("sys", &h, "and then?");
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(m[2].content, "a5");
        assert_eq!(m.last().unwrap().content, "and then?");
        // The next prompt of the session begins with its prefix, which is warmed beforehand.
        assert_eq!(prefix("sys", &h)[..], m[..3]);
        assert_eq!(c.history("other").len(), 1);
    }

    #[test]
    fn long_answers_are_clipped_for_the_llm() {
        let c = Conversations::default();
        let long = "é".repeat(1000);
        c.add("s", "list my notes", &long);
        let m = messages("sys", &c.history("s"), "and the first?");
        assert_eq!(m[2].content.chars().count(), ANSWER_CHARS + 1);
        assert!(m[2].content.ends_with('…'));
        assert_eq!(clip("short", ANSWER_CHARS), "short");
    }
}
