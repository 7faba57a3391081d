//! Conversations: the last few exchanges of each session, given to the LLM tier so that a
//! follow-up ("and move it to Friday") is read in context. Kept in memory only; sessions that go
//! quiet are forgotten.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ming_schemas::inference::ChatMessage;

/// Exchanges kept per session.
const KEEP: usize = 4;
/// A session silent this long starts afresh.
const IDLE: Duration = Duration::from_secs(600);

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

/// The LLM's messages: the system prompt, the recent exchanges, then the new message.
pub fn messages(system: &str, history: &[Exchange], text: &str) -> Vec<ChatMessage> {
    let mut out = vec![ChatMessage::new("system", system)];
    for e in history {
        out.push(ChatMessage::new("user", e.user.clone()));
        out.push(ChatMessage::new("assistant", e.agent.clone()));
    }
    out.push(ChatMessage::new("user", text));
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
            ["q2", "q3", "q4", "q5"]
        );
        let m = messages("sys", &h, "and then?");
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(
            roles,
            [
                "system",
                "user",
                "assistant",
                "user",
                "assistant",
                "user",
                "assistant",
                "user",
                "assistant",
                "user"
            ]
        );
        assert_eq!(m.last().unwrap().content, "and then?");
        assert_eq!(c.history("other").len(), 1);
    }
}
