//! A stand-in cloud provider for tests: a minimal HTTP/1.1 server on 127.0.0.1 answering like an
//! OpenAI-compatible chat endpoint, recording the exact bytes of every request it receives.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone)]
pub struct Behaviour {
    pub status: u16,
    pub delay_ms: u64,
    pub content: String,
    /// Answer as server-sent events, the content cut into 5-character pieces (so that
    /// placeholders are split across events), when the request asks for a stream.
    pub sse: bool,
}

/// A minimal HTTP/1.1 provider: records every request body, answers as told.
pub struct Provider {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    pub behaviour: Arc<Mutex<Behaviour>>,
}

impl Provider {
    /// Listens on 127.0.0.1 (a free port); answers every request as `behaviour` says.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(Behaviour {
            status: 200,
            delay_ms: 0,
            content: "Done: I wrote to [EMAIL_1] about card [CARD_1] for [NAME_1].".into(),
            sse: false,
        }));
        let (r, b) = (received.clone(), behaviour.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = reader.read_exact(&mut body);
                let wants_stream = String::from_utf8_lossy(&body).contains("\"stream\":true");
                r.lock().unwrap().push(body);
                let beh = b.lock().unwrap().clone();
                std::thread::sleep(Duration::from_millis(beh.delay_ms));
                if beh.sse && wants_stream && beh.status == 200 {
                    let chars: Vec<char> = beh.content.chars().collect();
                    let mut events: Vec<String> = chars
                        .chunks(5)
                        .map(|piece| {
                            let piece: String = piece.iter().collect();
                            let ev =
                                serde_json::json!({"choices": [{"delta": {"content": piece}}]});
                            format!("data: {ev}\n\n")
                        })
                        .collect();
                    events.push("data: [DONE]\n\n".into());
                    let len: usize = events.iter().map(String::len).sum();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    // One event at a time, as a real stream arrives.
                    for ev in events {
                        let _ = stream.write_all(ev.as_bytes());
                        let _ = stream.flush();
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    continue;
                }
                let answer = serde_json::json!({"choices": [{"message": {"role": "assistant", "content": beh.content}}]}).to_string();
                let _ = write!(
                    stream,
                    "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    beh.status,
                    answer.len(),
                    answer
                );
            }
        });
        Self {
            port,
            received,
            behaviour,
        }
    }

    /// Every request body received so far.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }

    /// Changes how it answers.
    pub fn set(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap());
    }
}
