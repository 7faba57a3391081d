//! Consent tickets and sending: a handoff becomes a ticket holding the exact bytes that would
//! leave (after redaction), their SHA-256 and an expiry; only an approval naming that ticket and
//! that hash sends them, after the egress log has recorded them durably.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use ming_config::CloudSettings;
use ming_schemas::cloud::{EgressReport, HandoffRequest, RedactionView, Ticket, TicketState};
use ming_schemas::envelope::{fresh_id, now_ms};
use ming_schemas::{ErrorBody, ErrorCode};
use serde_json::json;

use crate::egress::{self, sha256_hex, EgressLog, NewEntry};
use crate::redact::{Placeholders, Redactor};

struct Held {
    ticket: Ticket,
    placeholders: Placeholders,
    /// The approval (payload hash) a failed ticket may be retried on.
    approved: Option<String>,
}

/// A ticket as kept on local disk (`<data_dir>/cloud/tickets/<id>.json`, mode 0600): with the
/// placeholder map, which holds the original private values and never leaves the device.
#[derive(serde::Serialize, serde::Deserialize)]
struct Saved {
    ticket: Ticket,
    placeholders: Vec<(crate::redact::Kind, String, String)>,
    approved: Option<String>,
}

/// The gateway's state.
pub struct Gateway {
    cfg: CloudSettings,
    redactor: Redactor,
    tickets: Mutex<HashMap<String, Held>>,
    egress_path: PathBuf,
    /// `Err` when the log on disk failed verification: then nothing is sent.
    egress: Mutex<Result<EgressLog, String>>,
    /// Built on first use: with no provider configured, no network client exists at all.
    http: Mutex<Option<reqwest::Client>>,
    /// The bus, to hand answers to the agent (`agent.handoff_result`).
    bus: Option<ming_bus::BusClient>,
}

fn err(code: ErrorCode, msg: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, msg)
}

impl Gateway {
    /// Opens the egress log (verifying it) in `data_dir/cloud/`.
    pub fn new(cfg: CloudSettings, data_dir: PathBuf) -> Self {
        let egress_path = data_dir.join("cloud").join("egress.jsonl");
        let egress = EgressLog::open(&egress_path).map_err(|e| {
            tracing::error!(error = %e, path = %egress_path.display(), "egress log failed verification: nothing will be sent");
            format!("the egress log {} failed verification ({e}); nothing will be sent until it is repaired", egress_path.display())
        });
        let gateway = Self {
            redactor: Redactor::new(&cfg.private_names),
            cfg,
            tickets: Mutex::new(HashMap::new()),
            egress_path,
            egress: Mutex::new(egress),
            http: Mutex::new(None),
            bus: None,
        };
        gateway.load_tickets();
        gateway
    }

    fn tickets_dir(&self) -> PathBuf {
        self.egress_path.with_file_name("tickets")
    }

    /// Writes a ticket to disk (atomically, private to the user), so that a restart keeps it.
    fn persist(&self, h: &Held) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let dir = self.tickets_dir();
        let saved = Saved {
            ticket: h.ticket.clone(),
            placeholders: h.placeholders.to_saved(),
            approved: h.approved.clone(),
        };
        let path = dir.join(format!("{}.json", h.ticket.id));
        let tmp = path.with_extension("json.tmp");
        let written = std::fs::create_dir_all(&dir).and_then(|()| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&serde_json::to_vec(&saved).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        });
        if let Err(e) = written {
            tracing::error!(ticket = %h.ticket.id, error = %e, "cannot save the ticket; it will not survive a restart");
        }
    }

    /// Loads the tickets a previous run left. One that was being sent when the gateway stopped
    /// becomes failed: whether it left is in the egress log, and a retry sends the same bytes.
    fn load_tickets(&self) {
        let Ok(entries) = std::fs::read_dir(self.tickets_dir()) else {
            return;
        };
        let Ok(mut tickets) = self.tickets.lock() else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let saved: Saved = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "skipping an unreadable ticket");
                    continue;
                }
            };
            let mut held = Held {
                ticket: saved.ticket,
                placeholders: Placeholders::from_saved(saved.placeholders),
                approved: saved.approved,
            };
            if held.ticket.state == TicketState::Sending {
                held.ticket.state = TicketState::Failed;
                held.ticket.error = "the gateway stopped while sending; see `ming egress log`, and retry to send the same bytes".into();
            }
            tickets.insert(held.ticket.id.clone(), held);
        }
    }

    /// Answers will also be delivered to the agent over this bus connection.
    pub fn with_bus(mut self, bus: ming_bus::BusClient) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Hands an answer to the agent in the background; if the agent is not there, the answer
    /// stays on the ticket (`ming consent show`).
    fn deliver(&self, t: &Ticket) {
        let (Some(bus), Some(answer)) = (self.bus.clone(), t.answer.clone()) else {
            return;
        };
        let result = ming_schemas::agent::HandoffResult {
            ticket: t.id.clone(),
            task: t.task.clone(),
            answer,
        };
        tokio::spawn(async move {
            let r: Result<ming_schemas::control::Ack, _> = bus
                .request(
                    "agent",
                    ming_schemas::kinds::AGENT_HANDOFF_RESULT,
                    &result,
                    Duration::from_secs(5),
                )
                .await;
            if let Err(e) = r {
                tracing::warn!(ticket = %result.ticket, error = %e, "could not hand the answer to the agent; it stays on the ticket");
            }
        });
    }

    pub fn enabled(&self) -> bool {
        !self.cfg.providers.is_empty()
    }

    fn allowed(&self, url: &str) -> bool {
        (url.starts_with("https://") || url.starts_with("http://"))
            && self
                .cfg
                .allow
                .iter()
                .any(|a| !a.is_empty() && url.starts_with(a.as_str()))
    }

    /// Creates a pending ticket for a handoff.
    ///
    /// # Errors
    /// `Unsupported` when no provider is configured; `BadRequest` for an empty task, an unknown
    /// or ambiguous provider, or a destination outside the allow-list.
    pub fn handoff(&self, req: &HandoffRequest) -> Result<Ticket, ErrorBody> {
        if !self.enabled() {
            return Err(err(
                ErrorCode::Unsupported,
                "cloud handoff is not configured (no [cloud.providers] in the config)",
            ));
        }
        if req.task.trim().is_empty() {
            return Err(err(ErrorCode::BadRequest, "the task is empty"));
        }
        let (name, provider) = match &req.provider {
            Some(p) => match self.cfg.providers.get_key_value(p) {
                Some(x) => x,
                None => {
                    let known: Vec<&String> = self.cfg.providers.keys().collect();
                    return Err(err(
                        ErrorCode::BadRequest,
                        format!("no provider named `{p}` (configured: {known:?})"),
                    ));
                }
            },
            None if self.cfg.providers.len() == 1 => self
                .cfg
                .providers
                .iter()
                .next()
                .ok_or_else(|| err(ErrorCode::Internal, "no provider"))?,
            None => {
                return Err(err(
                    ErrorCode::BadRequest,
                    "several providers are configured: name one",
                ))
            }
        };
        if !self.allowed(&provider.endpoint) {
            return Err(err(
                ErrorCode::BadRequest,
                format!(
                    "destination {} is not in cloud.allow; it will not be contacted",
                    provider.endpoint
                ),
            ));
        }
        let mut ph = Placeholders::default();
        let task = self.redactor.redact(&req.task, &mut ph);
        let context: Vec<String> = req
            .context
            .iter()
            .map(|c| self.redactor.redact(c, &mut ph))
            .collect();
        let mut user = task;
        if !context.is_empty() {
            user.push_str("\n\nContext:\n");
            for c in &context {
                user.push_str("- ");
                user.push_str(c);
                user.push('\n');
            }
        }
        let body = json!({
            "model": provider.model,
            "stream": true,
            "messages": [
                {"role": "system", "content": "You are helping a personal assistant that runs on the user's own computer with a task it handed off. Values in square brackets such as [EMAIL_1] are placeholders for private data; keep them as they are."},
                {"role": "user", "content": user}
            ]
        })
        .to_string();
        let now = now_ms();
        let ticket = Ticket {
            id: format!("t-{:016x}", fresh_id()),
            state: TicketState::Pending,
            task: req.task.clone(),
            provider: name.clone(),
            destination: provider.endpoint.clone(),
            body_sha256: sha256_hex(body.as_bytes()),
            size: body.len() as u64,
            body,
            redactions: ph
                .redactions()
                .iter()
                .map(|r| RedactionView {
                    kind: r.kind.as_str().into(),
                    placeholder: r.placeholder.clone(),
                    reason: r.kind.reason().into(),
                })
                .collect(),
            created_ms: now,
            expires_ms: now + self.cfg.ticket_ttl_s * 1000,
            answer: None,
            error: String::new(),
        };
        tracing::info!(ticket = %ticket.id, provider = %name, size = ticket.size, redacted = ticket.redactions.len(), "consent ticket created");
        let held = Held {
            ticket: ticket.clone(),
            placeholders: ph,
            approved: None,
        };
        self.persist(&held);
        if let Ok(mut t) = self.tickets.lock() {
            t.insert(ticket.id.clone(), held);
        }
        Ok(ticket)
    }

    fn with_ticket<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut Held) -> Result<T, ErrorBody>,
    ) -> Result<T, ErrorBody> {
        let mut tickets = self
            .tickets
            .lock()
            .map_err(|_| err(ErrorCode::Internal, "ticket store poisoned"))?;
        let held = tickets
            .get_mut(id)
            .ok_or_else(|| err(ErrorCode::NotFound, format!("no ticket {id}")))?;
        let before = (
            held.ticket.state,
            held.ticket.answer.clone(),
            held.ticket.error.clone(),
            held.approved.clone(),
        );
        if held.ticket.state == TicketState::Pending && now_ms() > held.ticket.expires_ms {
            held.ticket.state = TicketState::Expired;
        }
        let out = f(held);
        if before
            != (
                held.ticket.state,
                held.ticket.answer.clone(),
                held.ticket.error.clone(),
                held.approved.clone(),
            )
        {
            self.persist(held);
        }
        out
    }

    pub fn ticket(&self, id: &str) -> Result<Ticket, ErrorBody> {
        self.with_ticket(id, |h| Ok(h.ticket.clone()))
    }

    pub fn tickets(&self) -> Vec<Ticket> {
        let ids: Vec<String> = self
            .tickets
            .lock()
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default();
        let mut out: Vec<Ticket> = ids.iter().filter_map(|id| self.ticket(id).ok()).collect();
        out.sort_by_key(|t| t.created_ms);
        out
    }

    pub fn deny(&self, id: &str) -> Result<Ticket, ErrorBody> {
        self.with_ticket(id, |h| match h.ticket.state {
            TicketState::Pending | TicketState::Failed => {
                h.ticket.state = TicketState::Denied;
                tracing::info!(ticket = id, "denied: nothing sent");
                Ok(h.ticket.clone())
            }
            s => Err(err(
                ErrorCode::BadRequest,
                format!("ticket {id} is {s:?}, not pending"),
            )),
        })
    }

    /// Approves ticket `id` for the payload whose hash is `sha256`, then sends it.
    ///
    /// # Errors
    /// `NotFound`, `BadRequest` (wrong hash, not pending, expired); a failed send is not an
    /// error: the ticket comes back `failed` with the reason.
    pub async fn approve(
        &self,
        id: &str,
        sha256: &str,
        on_text: &mut (dyn FnMut(String) + Send),
    ) -> Result<Ticket, ErrorBody> {
        self.with_ticket(id, |h| {
            match h.ticket.state {
                TicketState::Pending => {}
                TicketState::Expired => return Err(err(ErrorCode::BadRequest, format!("ticket {id} expired; nothing was sent"))),
                s => return Err(err(ErrorCode::BadRequest, format!("ticket {id} is {s:?}; only a pending ticket can be approved"))),
            }
            if !sha256.eq_ignore_ascii_case(&h.ticket.body_sha256) {
                return Err(err(
                    ErrorCode::BadRequest,
                    format!(
                        "this approval is for payload {sha256}, but ticket {id} holds payload {}; nothing was sent (approve the payload you were shown)",
                        h.ticket.body_sha256
                    ),
                ));
            }
            h.approved = Some(h.ticket.body_sha256.clone());
            h.ticket.state = TicketState::Sending;
            Ok(())
        })?;
        self.send(id, on_text).await
    }

    /// Sends a failed ticket again: same bytes, same approval.
    pub async fn retry(
        &self,
        id: &str,
        on_text: &mut (dyn FnMut(String) + Send),
    ) -> Result<Ticket, ErrorBody> {
        self.with_ticket(id, |h| {
            if h.ticket.state != TicketState::Failed
                || h.approved.as_deref() != Some(h.ticket.body_sha256.as_str())
            {
                return Err(err(
                    ErrorCode::BadRequest,
                    format!(
                        "ticket {id} is {:?}; only a failed, approved ticket can be retried",
                        h.ticket.state
                    ),
                ));
            }
            h.ticket.state = TicketState::Sending;
            Ok(())
        })?;
        self.send(id, on_text).await
    }

    fn log(&self, entry: NewEntry) -> Result<(), ErrorBody> {
        let mut guard = self
            .egress
            .lock()
            .map_err(|_| err(ErrorCode::Internal, "egress log poisoned"))?;
        let log = guard
            .as_mut()
            .map_err(|e| err(ErrorCode::Internal, e.clone()))?;
        log.append(entry, now_ms()).map(|_| ()).map_err(|e| {
            err(
                ErrorCode::Internal,
                format!("cannot write the egress log ({e}); nothing was sent"),
            )
        })
    }

    fn finish(
        &self,
        id: &str,
        state: TicketState,
        answer: Option<String>,
        error: String,
    ) -> Result<Ticket, ErrorBody> {
        self.with_ticket(id, |h| {
            h.ticket.state = state;
            h.ticket.answer = answer.map(|a| h.placeholders.restore(&a));
            h.ticket.error = error;
            Ok(h.ticket.clone())
        })
    }

    fn client(&self) -> Result<reqwest::Client, ErrorBody> {
        let mut guard = self
            .http
            .lock()
            .map_err(|_| err(ErrorCode::Internal, "client poisoned"))?;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(self.cfg.timeout_ms))
            .build()
            .map_err(|e| {
                err(
                    ErrorCode::Internal,
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn send(
        &self,
        id: &str,
        on_text: &mut (dyn FnMut(String) + Send),
    ) -> Result<Ticket, ErrorBody> {
        let placeholders = self.with_ticket(id, |h| Ok(h.placeholders.clone()))?;
        let t = self.ticket(id)?;
        if !self.allowed(&t.destination) {
            return self.finish(
                id,
                TicketState::Failed,
                None,
                format!("destination {} is no longer in cloud.allow", t.destination),
            );
        }
        let key = self
            .cfg
            .providers
            .get(&t.provider)
            .map(|p| p.api_key_env.clone())
            .filter(|v| !v.is_empty())
            .and_then(|v| std::env::var(v).ok());
        // Recorded, durably, before a byte leaves.
        if let Err(e) = self.log(NewEntry {
            event: "sending".into(),
            ticket: t.id.clone(),
            destination: t.destination.clone(),
            body_sha256: t.body_sha256.clone(),
            body_size: t.size,
            approval: t.body_sha256.clone(),
            detail: String::new(),
        }) {
            let _ = self.finish(id, TicketState::Failed, None, e.message.clone());
            return Err(e);
        }
        let client = self.client()?;
        let mut req = client
            .post(&t.destination)
            .header("content-type", "application/json")
            .body(t.body.clone().into_bytes());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let outcome = async {
            let mut resp = req.send().await.map_err(|e| describe(&e))?;
            let status = resp.status();
            let sse = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            let mut stream = SseAnswer::default();
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e))? {
                body.extend_from_slice(&chunk);
                if sse && status.is_success() {
                    stream.feed(&chunk);
                    if let Some(text) = stream.take_ready(&placeholders) {
                        on_text(text);
                    }
                }
                if body.len() as u64 > self.cfg.max_answer_bytes {
                    return Err(format!(
                        "the answer is larger than cloud.max_answer_bytes ({} bytes)",
                        self.cfg.max_answer_bytes
                    ));
                }
            }
            if sse && status.is_success() {
                if let Some(text) = stream.take_rest(&placeholders) {
                    on_text(text);
                }
            }
            Ok((status, body, sse.then_some(stream.answer)))
        }
        .await;
        let (status, body, streamed) = match outcome {
            Ok(x) => x,
            Err(e) => {
                let _ = self.log(NewEntry {
                    event: "failed".into(),
                    ticket: t.id.clone(),
                    destination: t.destination.clone(),
                    detail: e.clone(),
                    ..NewEntry::default()
                });
                return self.finish(id, TicketState::Failed, None, e);
            }
        };
        let _ = self.log(NewEntry {
            event: "received".into(),
            ticket: t.id.clone(),
            destination: t.destination.clone(),
            body_sha256: sha256_hex(&body),
            body_size: body.len() as u64,
            approval: String::new(),
            detail: format!("HTTP {}", status.as_u16()),
        });
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return self.finish(
                id,
                TicketState::Failed,
                None,
                format!("the provider answered HTTP {}: {text}", status.as_u16()),
            );
        }
        let content = streamed.filter(|a| !a.is_empty()).or_else(|| {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| {
                    v["choices"][0]["message"]["content"]
                        .as_str()
                        .map(str::to_owned)
                })
        });
        match content {
            Some(c) => {
                let t = self.finish(id, TicketState::Answered, Some(c), String::new())?;
                self.deliver(&t);
                Ok(t)
            }
            None => self.finish(
                id,
                TicketState::Failed,
                None,
                "the answer is not an OpenAI-compatible chat completion".into(),
            ),
        }
    }

    /// The egress log and whether its chain holds.
    pub fn egress_report(&self) -> EgressReport {
        let lines = std::fs::read_to_string(&self.egress_path)
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        let (verdict, intact) = if !self.egress_path.exists() {
            ("ok: nothing has been sent".to_string(), true)
        } else {
            match egress::verify(&self.egress_path) {
                Ok((n, _)) => (format!("ok: {n} entries, chain intact"), true),
                Err(e) => (format!("TAMPERED: {e}"), false),
            }
        };
        EgressReport {
            path: self.egress_path.display().to_string(),
            lines,
            verdict,
            intact,
        }
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "the provider did not answer in time (cloud.timeout_ms)".into()
    } else if e.is_connect() {
        format!("cannot reach the provider: {e}")
    } else {
        format!("request failed: {e}")
    }
}

/// An OpenAI-style server-sent-events answer (`data: {"choices":[{"delta":{"content":…}}]}`),
/// read as it arrives. Text is released only up to a point where no placeholder is cut in two,
/// so that each released piece can be restored on its own.
#[derive(Default)]
struct SseAnswer {
    buf: Vec<u8>,
    /// The provider's text so far (placeholders as sent).
    answer: String,
    released: usize,
}

impl SseAnswer {
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            for line in String::from_utf8_lossy(&event).lines() {
                let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                    continue;
                };
                if data == "[DONE]" {
                    continue;
                }
                if let Some(piece) = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| {
                        v["choices"][0]["delta"]["content"]
                            .as_str()
                            .map(str::to_owned)
                    })
                {
                    self.answer.push_str(&piece);
                }
            }
        }
    }

    fn release(&mut self, upto: usize, ph: &Placeholders) -> Option<String> {
        if upto <= self.released {
            return None;
        }
        let text = ph.restore(&self.answer[self.released..upto]);
        self.released = upto;
        Some(text)
    }

    /// The text that can be shown now: all of it but an unclosed `[PLACEHOLDER` at the end.
    fn take_ready(&mut self, ph: &Placeholders) -> Option<String> {
        let tail = &self.answer[self.released..];
        let hold = match (tail.rfind('['), tail.rfind(']')) {
            (Some(open), close) if close.is_none_or(|c| c < open) && tail.len() - open <= 24 => {
                tail.len() - open
            }
            _ => 0,
        };
        self.release(self.answer.len() - hold, ph)
    }

    fn take_rest(&mut self, ph: &Placeholders) -> Option<String> {
        self.release(self.answer.len(), ph)
    }
}
