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
                r.lock().unwrap().push(body);
                let beh = b.lock().unwrap().clone();
                std::thread::sleep(Duration::from_millis(beh.delay_ms));
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
