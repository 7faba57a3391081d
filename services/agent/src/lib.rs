//! `ming-agent`: from an utterance to the first action.
//!
//! A typed or transcribed message is understood by the fastest tier that can: first the fast
//! path ([`intent`]: intent matching and slot extraction, microseconds, no LLM), then the local
//! LLM through the inference service with the tools' JSON Schemas as a grammar. The chosen tool
//! runs locally ([`tools`]); `agent.action_started` / `agent.action_finished` events show it as it
//! happens, and the reply says what was done.
//!
//! Built so far (issue #6): the fast path (timers, notes, the calendar, memory, documents, mail,
//! the clock, the cloud handoff); the LLM tier with the tools as a grammar and relevant memories
//! in context; the tools; conversations; the interaction log; `ming ask`, `ming chat`,
//! `ming trace`; voice turns; the learned router tier between the rules and the LLM, with
//! corrections (`agent.feedback`) for its training; the documents folder indexed into memory (and
//! searched by meaning); mail summarised by the local model; cancellation (a caller's cancel —
//! a barge-in on a voice turn — stops the slow tiers and the model's generation).
//!
//! # Layout
//! - [`intent`]: tier 1.
//! - [`calendar`]: the local iCalendar file and date arithmetic.
//! - [`conversation`]: recent exchanges per session, for follow-ups.
//! - [`files`]: read-only search of the documents folder and local mail.
//! - [`docindex`]: the documents folder's passages, indexed into memory.
//! - [`external`]: tools by config (an external program, JSON in and out).
//! - [`tools`]: the tools and their files in the data dir.
//! - [`log`]: the interaction log (`ming trace`, training data, corrections).
//! - [`router`]: the learned personal router (hot-swapped from training) and its slot filling.
//! - [`AgentService`]: the request handler; [`run`]: serve until drained.

pub mod calendar;
pub mod conversation;
pub mod docindex;
pub mod external;
pub mod files;
pub mod followup;
pub mod grounding;
pub mod intent;
pub mod log;
pub mod router;
pub mod schema;
pub mod tools;
pub mod vocabulary;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ming_bus::events::EventPublisher;
use ming_bus::worker::{run_worker, Handler, Request, Responder, WorkerOptions};
use ming_bus::{BusClient, BusConfig, BusError};
use ming_config::{Config, Paths};
use ming_schemas::agent::{
    Action, ActionFinished, ActionStarted, Message, Reply, Tier, TimerFired,
};
use ming_schemas::envelope::now_ms;
use ming_schemas::inference::{
    ChatMessage, ChatReply, ChatRequest, FinishReason, Tool, ToolChoice,
};
use ming_schemas::{kinds, ErrorCode};

use crate::tools::Tools;

/// The name this service registers under (unless `MING_SERVICE` names another).
pub const SERVICE: &str = "agent";

const SYSTEM_PROMPT: &str =
    "You are Ming, a personal assistant running on the user's own computer. \
Act with exactly one tool call. To answer in words without acting, call `reply`. Dates are today, \
tomorrow, a weekday or YYYY-MM-DD; times are HH:MM.";

/// The `agent` request handler.
pub struct AgentService {
    tools: Arc<Tools>,
    /// Recent exchanges per session, so follow-ups share context in the LLM tier.
    conversations: conversation::Conversations,
    /// The question each session waits on (a confirmation, a missing argument).
    questions: followup::Questions,
    /// Tools by config, by name.
    external: std::collections::BTreeMap<String, ming_config::ExternalTool>,
    log: log::InteractionLog,
    /// The learned router (tier between the rules and the LLM) and its confidence threshold.
    router: router::RouterSlot,
    router_threshold: f32,
    bus: BusClient,
    events: EventPublisher,
    /// One documents indexing pass at a time; its state file.
    indexing: tokio::sync::Mutex<()>,
    index_state: std::path::PathBuf,
    /// Voice searches sent to be heard again, so that the answer to the reading that comes
    /// back says what was heard first.
    first_heard: vocabulary::FirstHeard,
    /// Readings of voice turns not understood without the local model, which a guided reading
    /// of the same turn's free text must keep words of ([`vocabulary::strays`]).
    not_understood: vocabulary::Turns<String>,
}

/// How long a voice turn's search may take to find out whether it finds anything, before it
/// acts as heard (a large mailbox or folder is not read twice on the way to the first action).
const HEAR_AGAIN_CHECK: Duration = Duration::from_millis(150);

/// What follows the mail listing when the local model could not summarise it before the
/// caller's deadline.
const NO_SUMMARY_IN_TIME: &str =
    "(No summary: the local model did not finish in time; ask again when you can wait longer.)";

/// The instructions for a mail summary.
const MAIL_PROMPT: &str =
    "You summarise the user's e-mail for them. In a few short sentences: who \
wrote, about what, and anything the user is asked to do or must not miss. Use only what the \
messages say.";

impl AgentService {
    /// An LLM tier request over `messages`: every tool listed (the system prompt, and so its
    /// cached prefix, stays the same), a call of one of them required.
    fn llm_request(&self, messages: Vec<ChatMessage>) -> ChatRequest {
        let mut req = ChatRequest::new(messages);
        req.tools = tools::schemas()
            .iter()
            .map(|(name, description, parameters)| Tool {
                name: (*name).into(),
                description: (*description).into(),
                parameters: parameters.to_string(),
            })
            .collect();
        req.tools.extend(self.external.iter().map(|(name, t)| Tool {
            name: name.clone(),
            description: t.description.clone(),
            parameters: t.parameters.clone(),
        }));
        req.tool_choice = ToolChoice::Required;
        req
    }

    /// Has inference compute how the session's next LLM prompt begins (system prompt, tools and
    /// the exchange just recorded) while the user is still listening or speaking: the next
    /// turn's prompt then reuses it and computes only its own message. In the voice bench the
    /// previous exchange (40-55 tokens) took 450-830 ms before the first token, against
    /// 130-190 ms for the same commands typed without one. Best effort: inference gives way
    /// to a real request, and a failure only costs the next turn that time again.
    async fn warm_next_turn(&self, session: &str) {
        let history = self.conversations.history(session);
        match self.warm_prompt(&history, Duration::from_secs(10)).await {
            Ok(r) => tracing::debug!(
                tokens = r.usage.prompt_tokens,
                reused = r.usage.cached_prompt_tokens,
                finish = ?r.finish_reason,
                "next turn's prompt warmed"
            ),
            Err(e) => tracing::debug!(error = %e, "could not warm the next turn's prompt"),
        }
    }

    /// Has inference compute the prompt that begins with the system prompt, the tools and
    /// `history`, generating nothing.
    async fn warm_prompt(
        &self,
        history: &[conversation::Exchange],
        timeout: Duration,
    ) -> Result<ChatReply, BusError> {
        let mut req = self.llm_request(conversation::prefix(SYSTEM_PROMPT, history));
        req.prefill_only = true;
        self.bus
            .request("inference", kinds::INFERENCE_CHAT, &req, timeout)
            .await
    }

    /// Tier 2: the local LLM picks a tool, constrained by the tools' schemas.
    async fn ask_llm(
        &self,
        text: &str,
        session: Option<&str>,
        deadline_ms: u64,
        only: Option<&str>,
    ) -> Result<(String, serde_json::Value), BusError> {
        let history = session
            .map(|s| self.conversations.history(s))
            .unwrap_or_default();
        // What memory holds that bears on this, in the user's turn (not the system prompt, so the
        // cached prefix — system prompt and tool schemas — stays the same).
        let known = self.relevant_memories(text).await;
        let turn = if known.is_empty() {
            text.to_string()
        } else {
            format!(
                "(What you know about the user: {})\n{text}",
                known.join("; ")
            )
        };
        let mut req = self.llm_request(conversation::messages(SYSTEM_PROMPT, &history, &turn));
        if let Some(tool) = only {
            // The router chose the tool; the LLM only fills its arguments. Every tool stays
            // listed (inference describes them all and holds the output to this one), so the
            // cached system prompt is reused.
            req.tool_choice = ToolChoice::Tool(tool.into());
        }
        req.max_tokens = Some(128);
        let reply: ChatReply = self
            .bus
            .request(
                "inference",
                kinds::INFERENCE_CHAT,
                &req,
                model_budget(deadline_ms, now_ms()),
            )
            .await?;
        let call = reply.tool_call.ok_or_else(|| BusError::Remote {
            from: "inference".into(),
            code: ErrorCode::Internal,
            message: format!(
                "the model gave no usable tool call ({:?})",
                reply.finish_reason
            ),
        })?;
        let args =
            serde_json::from_str(&call.arguments).map_err(|e| BusError::Codec(e.to_string()))?;
        Ok((call.name, args))
    }
}

impl AgentService {
    /// The serving embedding model (name, sha256) and the vector of `text`, from memory.
    async fn embed(
        &self,
        text: &str,
        timeout: Duration,
    ) -> Result<(String, String, Vec<f32>), BusError> {
        let r: ming_schemas::memory::Embedded = self
            .bus
            .request(
                "memory",
                kinds::MEMORY_EMBED,
                &ming_schemas::memory::Embed {
                    texts: vec![text.into()],
                },
                timeout,
            )
            .await?;
        let v = r.vectors.into_iter().next().unwrap_or_default();
        Ok((r.model, r.sha256, v))
    }

    /// The router tier: the tool the learned router is sure of (calibrated confidence at least
    /// the threshold) with its arguments, or `None` to let the LLM decide. The stage it adds says
    /// what the router thought.
    async fn route(
        &self,
        text: &str,
        deadline_ms: u64,
        stages: &mut Vec<ming_schemas::agent::Stage>,
        started: Instant,
        llm: bool,
    ) -> Option<Decision> {
        let router = self.router.get()?;
        let (model, sha, vector) = match self.embed(text, Duration::from_millis(300)).await {
            Ok(e) => e,
            Err(e) => {
                tracing::debug!(error = %e, "no embedding for the router");
                return None;
            }
        };
        if let Err(e) = router.check_embedding(&model, &sha) {
            tracing::warn!(error = %e, "router not used");
            return None;
        }
        let p = match router.predict(&vector, text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "router not used");
                return None;
            }
        };
        stages.push(ming_schemas::agent::Stage {
            name: format!(
                "router v{}: {} {:.2}",
                router.model.version, p.label, p.confidence
            ),
            at_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
        if p.label == ming_schemas::training::NONE_LABEL || p.confidence < self.router_threshold {
            return None;
        }
        if let Some(args) = router::slots(&p.label, text) {
            return Some(Decision::Act(Tier::Router, p.label, args));
        }
        // A timer with no number said: ask for its length, rather than wait a second for the
        // local model to make one up (the voice bench: "I'll do seconds" became 10 s, "Think me
        // into hours" an hour).
        if p.label == "set_timer" && !grounding::says_a_number(text) {
            return Some(Decision::Ask(
                Tier::Router,
                followup::Ask {
                    tool: "set_timer",
                    args: serde_json::json!({"label": router::timer_label(text)}),
                    slot: followup::Slot::Seconds,
                    question: "For how long?",
                },
            ));
        }
        if !llm {
            return None;
        }
        match self.ask_llm(text, None, deadline_ms, Some(&p.label)).await {
            Ok((tool, args)) => Some(Decision::Act(Tier::Router, tool, args)),
            Err(e) => {
                tracing::debug!(error = %e, tool = %p.label, "the LLM could not fill the router's tool");
                None
            }
        }
    }

    /// Records what should have happened for an utterance: a correction (the right tool) or an
    /// undo. The training service reads it from the log; nothing else changes now.
    fn feedback(&self, f: &ming_schemas::agent::Feedback) -> Result<String, (ErrorCode, String)> {
        let bad = |m: String| Err((ErrorCode::BadRequest, m));
        match (&f.tool, f.undone) {
            (None, false) => {
                return bad(
                    "say which tool should have acted, or that the action was undone".into(),
                )
            }
            (Some(_), true) => {
                return bad("a correction names the right tool or says undone, not both".into())
            }
            _ => {}
        }
        if let Some(tool) = &f.tool {
            let known = tools::schemas().iter().any(|(n, _, _)| n == tool)
                || tool == "handoff"
                || self.external.contains_key(tool);
            if !known || tool == "reply" {
                return bad(format!("`{tool}` is not a tool of mine"));
            }
        }
        let Some(orig) = self.log.find(f.utterance) else {
            return Err((
                ErrorCode::NotFound,
                format!("no utterance {} in the interaction log", f.utterance),
            ));
        };
        let (tool, outcome) = match &f.tool {
            Some(t) => (t.clone(), "corrected"),
            None => (orig.tool.clone().unwrap_or_default(), "undone"),
        };
        let message = if f.undone {
            format!("Noted: \"{}\" should not have done {tool}.", orig.text)
        } else {
            format!("Noted: \"{}\" means {tool}.", orig.text)
        };
        self.log.append(ming_schemas::agent::Interaction {
            seq: 0,
            utterance: orig.utterance,
            time_ms: now_ms(),
            text: orig.text,
            tier: orig.tier,
            tool: Some(tool),
            arguments: String::new(),
            outcome: outcome.into(),
            stages: Vec::new(),
        });
        Ok(format!(
            "{message} The router learns it at its next training."
        ))
    }

    /// Installs a router from training (after checking it against the serving embedding model).
    async fn take_router(&self, file: &ming_schemas::training::RouterFile) -> Result<u64, String> {
        let serving = self.embed("ping", Duration::from_secs(3)).await.ok();
        let embedding = serving.as_ref().map(|(m, s, _)| (m.as_str(), s.as_str()));
        let r = self.router.install(file, embedding);
        match &r {
            Ok(v) => tracing::info!(version = v, "router installed"),
            Err(e) => tracing::warn!(error = %e, "router refused"),
        }
        r
    }

    /// `index_documents`: brings memory's passages of the documents folder up to date.
    async fn index_documents(&self) -> tools::Outcome {
        let Some(root) = self.tools.documents() else {
            return tools::Outcome {
                needs_confirmation: false,
                ok: false,
                text: "no documents folder is configured (agent.documents_dir)".into(),
            };
        };
        let _one = self.indexing.lock().await;
        match docindex::index(&self.bus, root, &self.index_state).await {
            Ok(s) => {
                tracing::info!(
                    indexed = s.indexed,
                    passages = s.passages,
                    unchanged = s.unchanged,
                    removed = s.removed,
                    "documents indexed"
                );
                tools::Outcome {
                    needs_confirmation: false,
                    ok: s.failed.is_empty(),
                    text: s.text(),
                }
            }
            Err(e) => tools::Outcome {
                needs_confirmation: false,
                ok: false,
                text: format!("I could not index the documents: {e}"),
            },
        }
    }

    /// Passages of indexed documents that bear on `query` (by meaning), as lines to add to a
    /// document search; none when memory is slow, down or holds none.
    async fn related_passages(&self, query: &str) -> Vec<String> {
        use ming_schemas::memory::{MemoryFilter, MemoryKind, Recall, Recalled};
        let req = Recall {
            query: query.into(),
            k: 3,
            filter: MemoryFilter {
                kinds: vec![MemoryKind::Document],
                sources: vec![docindex::SOURCE.into()],
                ..Default::default()
            },
            min_score: Some(0.3),
        };
        match self
            .bus
            .request::<_, Recalled>("memory", kinds::MEMORY_RECALL, &req, Duration::from_secs(2))
            .await
        {
            Ok(r) => r
                .hits
                .into_iter()
                .map(|h| {
                    let t: String = h.memory.text.chars().take(240).collect();
                    format!("- {t}")
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no passages from memory");
                Vec::new()
            }
        }
    }

    /// `summarize_mail`: the local model summarises the latest messages (or those matching
    /// `query`); without it, the messages are listed and the reason given.
    async fn summarize_mail(&self, args: &serde_json::Value, deadline_ms: u64) -> tools::Outcome {
        let Some(source) = self.tools.mail().map(std::path::Path::to_path_buf) else {
            return tools::Outcome {
                needs_confirmation: false,
                ok: false,
                text: "no mail source is configured (agent.mail: a Maildir folder or an mbox file)"
                    .into(),
            };
        };
        let query = args
            .get("query")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        let q = query.clone();
        let mut mail = tokio::task::spawn_blocking(move || {
            if q.is_empty() {
                files::read_mail(&source)
            } else {
                files::search_mail(&source, &q)
            }
        })
        .await
        .unwrap_or_default();
        let about = if query.is_empty() {
            String::new()
        } else {
            format!(" about \"{query}\"")
        };
        if mail.is_empty() {
            return tools::Outcome {
                needs_confirmation: false,
                ok: true,
                text: format!("There is no message{about}."),
            };
        }
        let total = mail.len();
        // The newest few (the sources list oldest first).
        let latest = mail.split_off(total.saturating_sub(8));
        let listing = latest
            .iter()
            .rev()
            .map(|m| format!("- {} — {}", m.from, m.subject))
            .collect::<Vec<_>>()
            .join("\n");
        let context = latest
            .iter()
            .map(|m| {
                let body: String = m.body.chars().take(600).collect();
                let when = if m.date.trim().is_empty() {
                    String::new()
                } else {
                    format!(" on {}", m.date.trim())
                };
                format!("{} wrote{when} (subject: {}):\n{body}", m.from, m.subject)
            })
            .collect::<Vec<_>>()
            .join("\n\n---\n\n");
        let mut req = ChatRequest::new(vec![
            ChatMessage::new("system", MAIL_PROMPT),
            ChatMessage::new("user", context),
        ]);
        req.max_tokens = Some(160);
        let head = format!("{total} message(s){about}; the latest {}:", latest.len());
        let out_of_time = || tools::Outcome {
            needs_confirmation: false,
            ok: false,
            text: format!("{head}\n{listing}\n{NO_SUMMARY_IN_TIME}"),
        };
        match self
            .bus
            .request::<_, ChatReply>(
                "inference",
                kinds::INFERENCE_CHAT,
                &req,
                model_budget(deadline_ms, now_ms()),
            )
            .await
        {
            Ok(r) if !r.text.trim().is_empty() => {
                let cut = if r.finish_reason == FinishReason::Deadline {
                    " (cut short: the local model ran out of time)"
                } else {
                    ""
                };
                tools::Outcome {
                    needs_confirmation: false,
                    ok: true,
                    text: format!("{head}\n{listing}\nSummary: {}{cut}", r.text.trim()),
                }
            }
            // Out of time, whether the model said so or the bus did.
            Ok(ChatReply {
                finish_reason: FinishReason::Deadline,
                ..
            }) => out_of_time(),
            Err(e) if e.code() == ErrorCode::Timeout => out_of_time(),
            Ok(r) => tools::Outcome {
                needs_confirmation: false,
                ok: false,
                text: format!(
                    "{head}\n{listing}\n(The local model gave no summary: {:?}.)",
                    r.finish_reason
                ),
            },
            Err(e) => tools::Outcome {
                needs_confirmation: false,
                ok: false,
                text: format!("{head}\n{listing}\n(No summary: the local model failed: {e}.)"),
            },
        }
    }

    /// Up to three memories relevant to `text` (cosine ≥ 0.45), or none when memory is slow or
    /// down: the LLM tier must not wait long for them.
    async fn relevant_memories(&self, text: &str) -> Vec<String> {
        // Facts and preferences only: episodes ("set a timer for 15 minutes") and document
        // passages lead a small model to copy them into its tool arguments.
        let req = ming_schemas::memory::Recall {
            query: text.into(),
            k: 3,
            filter: ming_schemas::memory::MemoryFilter {
                kinds: vec![
                    ming_schemas::memory::MemoryKind::Fact,
                    ming_schemas::memory::MemoryKind::Preference,
                ],
                ..Default::default()
            },
            min_score: Some(0.45),
        };
        match self
            .bus
            .request::<_, ming_schemas::memory::Recalled>(
                "memory",
                kinds::MEMORY_RECALL,
                &req,
                Duration::from_millis(300),
            )
            .await
        {
            Ok(r) => r.hits.into_iter().map(|h| h.memory.text).collect(),
            Err(e) => {
                tracing::debug!(error = %e, "no memories for the LLM tier");
                Vec::new()
            }
        }
    }

    /// Keeps a completed task as an episode in memory, in the background (the reply does not wait).
    fn remember_episode(&self, tool: &str, text: &str) {
        if !matches!(tool, "set_timer" | "add_note" | "add_event" | "handoff") {
            return;
        }
        let bus = self.bus.clone();
        let mut m =
            ming_schemas::memory::NewMemory::new(text, ming_schemas::memory::MemoryKind::Episode);
        m.source = "agent".into();
        m.tags = vec![tool.to_string()];
        tokio::spawn(async move {
            let req = ming_schemas::memory::Remember { memories: vec![m] };
            if let Err(e) = bus
                .request::<_, ming_schemas::memory::Remembered>(
                    "memory",
                    kinds::MEMORY_REMEMBER,
                    &req,
                    Duration::from_secs(5),
                )
                .await
            {
                tracing::debug!(error = %e, "episode not kept in memory");
            }
        });
    }

    /// The memory tools, served by the memory service: `remember`, `recall`, `forget_memory`
    /// (which shows what it would forget and acts only when confirmed).
    async fn memory_tool(
        &self,
        tool: &str,
        args: &serde_json::Value,
        confirm: bool,
    ) -> tools::Outcome {
        use ming_schemas::memory::{
            Forget, Forgotten, MemoryKind, NewMemory, Recall, Recalled, Remember, Remembered,
        };
        let fail = |text: String| tools::Outcome {
            ok: false,
            text,
            needs_confirmation: false,
        };
        let arg = |k: &str| {
            args.get(k)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let t = Duration::from_secs(5);
        match tool {
            "remember" => {
                let text = arg("text");
                if text.is_empty() {
                    return fail("say what to remember".into());
                }
                let kind = MemoryKind::parse(&arg("kind")).unwrap_or(MemoryKind::Fact);
                let mut m = NewMemory::new(text.clone(), kind);
                m.source = "user".into();
                match self
                    .bus
                    .request::<_, Remembered>(
                        "memory",
                        kinds::MEMORY_REMEMBER,
                        &Remember { memories: vec![m] },
                        t,
                    )
                    .await
                {
                    Ok(r) if r.outcomes.first().is_some_and(|o| o.deduplicated) => tools::Outcome {
                        needs_confirmation: false,
                        ok: true,
                        text: format!("I already knew that; updated it: {text}"),
                    },
                    Ok(_) => tools::Outcome {
                        needs_confirmation: false,
                        ok: true,
                        text: format!("I'll remember that {text}."),
                    },
                    Err(e) => fail(format!("I could not remember that: {e}")),
                }
            }
            "recall" | "forget_memory" => {
                let query = arg("query");
                if query.is_empty() {
                    return fail("say what about".into());
                }
                let req = Recall {
                    query: query.clone(),
                    k: if tool == "recall" { 5 } else { 3 },
                    filter: Default::default(),
                    min_score: Some(0.3),
                };
                let hits = match self
                    .bus
                    .request::<_, Recalled>("memory", kinds::MEMORY_RECALL, &req, t)
                    .await
                {
                    Ok(r) => r.hits,
                    Err(e) => return fail(format!("I cannot reach my memory: {e}")),
                };
                if hits.is_empty() {
                    return tools::Outcome {
                        needs_confirmation: false,
                        ok: true,
                        text: format!("I don't remember anything about {query}."),
                    };
                }
                let list = hits
                    .iter()
                    .map(|h| format!("- {}", h.memory.text))
                    .collect::<Vec<_>>()
                    .join("\n");
                if tool == "recall" {
                    return tools::Outcome {
                        needs_confirmation: false,
                        ok: true,
                        text: list,
                    };
                }
                if !confirm {
                    return tools::unconfirmed(format!(
                        "This would forget {} memory(ies):\n{list}\nConfirm to forget; nothing was forgotten.",
                        hits.len()
                    ));
                }
                let req = Forget {
                    ids: hits.iter().map(|h| h.memory.id.clone()).collect(),
                    ..Default::default()
                };
                match self
                    .bus
                    .request::<_, Forgotten>("memory", kinds::MEMORY_FORGET, &req, t)
                    .await
                {
                    Ok(f) => tools::Outcome {
                        needs_confirmation: false,
                        ok: true,
                        text: format!("Forgotten ({}):\n{list}", f.forgotten),
                    },
                    Err(e) => fail(format!("I could not forget that: {e}")),
                }
            }
            _ => fail(format!("unknown memory tool {tool}")),
        }
    }

    /// The JSON Schema of a tool's arguments: a built-in one's, or the one an external tool
    /// declares.
    fn schema_of(&self, tool: &str) -> Option<std::borrow::Cow<'static, serde_json::Value>> {
        tools::schemas()
            .iter()
            .find(|(n, _, _)| *n == tool)
            .map(|(_, _, s)| std::borrow::Cow::Borrowed(s))
            .or_else(|| {
                let ext = self.external.get(tool)?;
                // Unreadable: no rules beyond "an object".
                let schema = serde_json::from_str(&ext.parameters).unwrap_or_default();
                Some(std::borrow::Cow::Owned(schema))
            })
    }

    /// The handoff tool: asks cloud-gateway for a consent ticket. Nothing leaves until the user
    /// approves the exact bytes.
    async fn handoff(&self, args: &serde_json::Value) -> tools::Outcome {
        let task = args
            .get("task")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_string();
        if task.is_empty() {
            return tools::Outcome {
                needs_confirmation: false,
                ok: false,
                text: "say what the cloud should do".into(),
            };
        }
        let req = ming_schemas::cloud::HandoffRequest {
            task,
            context: Vec::new(),
            provider: None,
        };
        match self
            .bus
            .request::<_, ming_schemas::cloud::Ticket>("cloud-gateway", kinds::CLOUD_HANDOFF, &req, Duration::from_secs(5))
            .await
        {
            Ok(t) => tools::Outcome {
                needs_confirmation: false,
                ok: true,
                text: format!(
                    "I prepared a cloud request: ticket {}, {} bytes to {}, {} private value(s) replaced. Nothing has been sent; review it with `ming consent show {}` and approve it if you agree.",
                    t.id,
                    t.size,
                    t.destination,
                    t.redactions.len(),
                    t.id
                ),
            },
            Err(e) => tools::Outcome { ok: false, text: format!("I cannot hand this off: {e}"), needs_confirmation: false },
        }
    }
}

/// Why no tool was chosen.
/// What understanding an utterance came to.
enum Decision {
    /// Act with this tool and these arguments.
    Act(Tier, String, serde_json::Value),
    /// The tool is clear but its key argument is not: ask for it.
    Ask(Tier, followup::Ask),
}

enum Undecided {
    /// The caller cancelled (or the deadline passed) while the slow tiers worked.
    Cancelled,
    /// The LLM tier failed.
    Llm(BusError),
    /// A voice turn heard again as words far from its first reading: not guessed at.
    Unheard,
}

impl AgentService {
    /// Asks for what a command lacks; with a session, its next message can answer.
    fn ask(
        &self,
        resp: Responder,
        mut record: ming_schemas::agent::Interaction,
        msg: &Message,
        tier: Tier,
        ask: followup::Ask,
        started: Instant,
    ) {
        record.tier = Some(tier);
        record.tool = Some(ask.tool.to_string());
        record.arguments = ask.args.to_string();
        record.outcome = "asked".into();
        let awaiting = msg.session.as_deref().map(|session| {
            let q = followup::Question::Slot {
                tool: ask.tool.to_string(),
                args: ask.args.clone(),
                slot: ask.slot,
            };
            let awaiting = q.awaiting().to_string();
            self.questions.ask(session, q);
            awaiting
        });
        let text = if awaiting.is_some() {
            ask.question.to_string()
        } else {
            // No conversation to answer in (`ming ask` without `--session`).
            format!(
                "{} Please say the whole command again with it.",
                ask.question
            )
        };
        self.answer_only(resp, record, msg, &text, awaiting, started);
    }

    /// Answers `text` without acting (a question, "OK, never mind"), logs the turn and keeps the
    /// exchange in the session's conversation.
    fn answer_only(
        &self,
        resp: Responder,
        mut record: ming_schemas::agent::Interaction,
        msg: &Message,
        text: &str,
        awaiting: Option<String>,
        started: Instant,
    ) {
        let decided_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(utterance = record.utterance, outcome = %record.outcome, "answered without acting");
        resp.reply(&Reply {
            utterance: record.utterance,
            text: text.to_string(),
            action: None,
            decided_ms,
            action_started_ms: None,
            awaiting,
            needs_llm: false,
            hear_again: Vec::new(),
        });
        record.stages.push(ming_schemas::agent::Stage {
            name: "replied".into(),
            at_ms: started.elapsed().as_secs_f64() * 1000.0,
        });
        self.log.append(record);
        if let Some(session) = &msg.session {
            self.conversations.add(session, &msg.text, text);
        }
    }

    /// For a look-up of the user's data ([`tools::looks_up_data`]: a search of mail, notes or
    /// documents, a mail summary, a note to delete) of a voice turn that would find nothing:
    /// the pattern of the same command with its query in the words the data holds
    /// ([`tools::Tools::finds_nothing`], [`vocabulary::query_in_words`]). `None` (act as
    /// heard) for any other tool, when something is found, without the source or words, or
    /// when reading the data takes longer than [`HEAR_AGAIN_CHECK`].
    async fn hear_again(
        &self,
        tool: &str,
        args: &serde_json::Value,
        heard: &str,
    ) -> Option<Vec<String>> {
        if !tools::looks_up_data(tool) {
            return None;
        }
        let query = args.get("query")?.as_str()?.to_string();
        let (tools, tool, heard) = (self.tools.clone(), tool.to_string(), heard.to_string());
        let check = tokio::task::spawn_blocking(move || {
            let words = tools.finds_nothing(&tool, &query, vocabulary::WORDS)?;
            vocabulary::query_in_words(&heard, &query, &words).map(|p| vec![p])
        });
        match tokio::time::timeout(HEAR_AGAIN_CHECK, check).await {
            Ok(Ok(patterns)) => patterns,
            _ => None,
        }
    }

    /// A `skip_llm` message the tiers without the local model did not understand: nothing is
    /// done or logged, and the sender (the audio service, with another reading of the voice
    /// turn) decides what comes next.
    fn needs_llm(resp: Responder, utterance: u64, started: Instant) {
        tracing::info!(utterance, "not understood without the local model");
        resp.reply(&Reply {
            utterance,
            text: "I could not understand that without the local model.".into(),
            action: None,
            decided_ms: started.elapsed().as_secs_f64() * 1000.0,
            action_started_ms: None,
            awaiting: None,
            needs_llm: true,
            hear_again: Vec::new(),
        });
    }

    /// The tiers after the rules: the learned router, then the local LLM.
    async fn understand_slow(
        &self,
        msg: &Message,
        deadline_ms: u64,
        stages: &mut Vec<ming_schemas::agent::Stage>,
        started: Instant,
    ) -> Result<Decision, BusError> {
        if let Some(d) = self
            .route(&msg.text, deadline_ms, stages, started, true)
            .await
        {
            return Ok(d);
        }
        let (tool, args) = self
            .ask_llm(&msg.text, msg.session.as_deref(), deadline_ms, None)
            .await?;
        Ok(Decision::Act(Tier::Llm, tool, args))
    }
}

impl Handler for AgentService {
    async fn handle(&self, req: Request, resp: Responder) {
        if req.kind() == kinds::AGENT_HANDOFF_RESULT {
            // The answer to an approved handoff (spoken once the audio service exists).
            return match req.body::<ming_schemas::agent::HandoffResult>() {
                Ok(r) => {
                    tracing::info!(ticket = %r.ticket, "cloud answer received");
                    self.events.publish(kinds::EVENT_HANDOFF_ANSWER, &r);
                    resp.reply(&ming_schemas::control::Ack {
                        message: "received".into(),
                    });
                }
                Err(e) => resp.fail(&e),
            };
        }
        if req.kind() == kinds::AGENT_INTERACTIONS {
            return match req.body::<ming_schemas::agent::InteractionsRequest>() {
                Ok(r) => resp.reply(&self.log.page(r.since, r.limit.clamp(1, 1000))),
                Err(e) => resp.fail(&e),
            };
        }
        if req.kind() == kinds::AGENT_TRACE {
            return match req.body::<ming_schemas::agent::TraceRequest>() {
                Ok(r) => match self.log.find(r.utterance) {
                    Some(i) => resp.reply(&i),
                    None => resp.error(
                        ErrorCode::NotFound,
                        format!("no utterance {} in the interaction log", r.utterance),
                    ),
                },
                Err(e) => resp.fail(&e),
            };
        }
        if req.kind() == kinds::AGENT_ROUTER {
            return match req.body::<ming_schemas::training::RouterFile>() {
                Ok(f) => match self.take_router(&f).await {
                    Ok(v) => resp.reply(&ming_schemas::control::Ack {
                        message: format!("router v{v} in use"),
                    }),
                    Err(e) => resp.error(ErrorCode::BadRequest, e),
                },
                Err(e) => resp.fail(&e),
            };
        }
        if req.kind() == kinds::AGENT_PATTERNS {
            return resp.reply(&ming_schemas::agent::Patterns {
                patterns: intent::guide_patterns(),
            });
        }
        if req.kind() == kinds::AGENT_FEEDBACK {
            return match req.body::<ming_schemas::agent::Feedback>() {
                Ok(f) => match self.feedback(&f) {
                    Ok(message) => resp.reply(&ming_schemas::control::Ack { message }),
                    Err((code, message)) => resp.error(code, message),
                },
                Err(e) => resp.fail(&e),
            };
        }
        if req.kind() != kinds::AGENT_MESSAGE {
            return resp.error(
                ErrorCode::Unsupported,
                format!("agent does not handle `{}`", req.kind()),
            );
        }
        let started = Instant::now();
        let msg: Message = match req.body() {
            Ok(m) => m,
            Err(e) => return resp.fail(&e),
        };
        if msg.text.trim().is_empty() {
            return resp.error(ErrorCode::BadRequest, "the message is empty");
        }
        let utterance = req.envelope.id;
        let arrived_ms = now_ms();
        let since = |started: Instant| started.elapsed().as_secs_f64() * 1000.0;
        let mut record = ming_schemas::agent::Interaction {
            seq: 0,
            utterance,
            time_ms: arrived_ms,
            text: msg.text.clone(),
            tier: None,
            tool: None,
            arguments: String::new(),
            outcome: "error".into(),
            stages: vec![ming_schemas::agent::Stage {
                name: "received".into(),
                at_ms: 0.0,
            }],
        };
        // A voice turn: the audio service's stages (same monotonic clock), before "received".
        if let Some(t) = &msg.voice {
            let received = ming_bus::mono_ms();
            let mut audio: Vec<ming_schemas::agent::Stage> = t
                .stages
                .iter()
                .map(|s| ming_schemas::agent::Stage {
                    name: format!("audio: {}", s.name),
                    at_ms: s.at_ms - received,
                })
                .collect();
            audio.sort_by(|a, b| a.at_ms.total_cmp(&b.at_ms));
            audio.append(&mut record.stages);
            record.stages = audio;
        }
        let direct = match (&msg.tool, &msg.arguments) {
            (Some(tool), args) => {
                match serde_json::from_str::<serde_json::Value>(args.as_deref().unwrap_or("{}")) {
                    Ok(a) => Some((tool.clone(), a)),
                    Err(e) => {
                        return resp.error(
                            ErrorCode::BadRequest,
                            format!("arguments are not valid JSON: {e}"),
                        )
                    }
                }
            }
            (None, _) => None,
        };
        // The answer to the question this session waited on: a yes runs exactly the call that
        // was described, an argument completes the command that lacked it (followup.rs).
        let mut confirm = msg.confirm;
        let mut answered = None;
        if let (None, Some(q)) = (
            &direct,
            msg.session.as_deref().and_then(|s| self.questions.take(s)),
        ) {
            let awaited = q.awaiting();
            match followup::answer(q, &msg.text) {
                followup::Answer::Act {
                    tool,
                    args,
                    confirm: yes,
                } => {
                    confirm |= yes;
                    record.stages.push(ming_schemas::agent::Stage {
                        name: format!("follow-up: {awaited}"),
                        at_ms: since(started),
                    });
                    answered = Some((tool, args));
                }
                followup::Answer::Dropped => {
                    record.outcome = "dropped".into();
                    let text = if awaited == "confirmation" {
                        "OK, I left it as it is."
                    } else {
                        "OK, never mind."
                    };
                    return self.answer_only(resp, record, &msg, text, None, started);
                }
                followup::Answer::Other => {}
            }
        }
        // A voice turn's first reading, when the tiers without the LLM could not act on it and
        // this message is the turn heard again.
        let first_heard = msg
            .voice
            .as_ref()
            .and_then(|v| self.not_understood.all(v.utterance).into_iter().next());
        let decided = match (direct, answered) {
            (Some((t, a)), _) => Ok(Decision::Act(Tier::Direct, t, a)),
            (None, Some((t, a))) => Ok(Decision::Act(Tier::Fast, t, a)),
            (None, None) => match intent::understand(&msg.text)
                .map(|i| Decision::Act(Tier::Fast, i.tool.to_string(), i.args))
                .or_else(|| followup::incomplete(&msg.text).map(|a| Decision::Ask(Tier::Fast, a)))
            {
                Some(d) => Ok(d),
                None if msg.skip_llm => {
                    let routed = if msg.skip_router {
                        None
                    } else {
                        self.route(
                            &msg.text,
                            req.envelope.deadline_ms,
                            &mut record.stages,
                            started,
                            false,
                        )
                        .await
                    };
                    match routed {
                        Some(d) => Ok(d),
                        None => {
                            if let Some(v) = &msg.voice {
                                self.not_understood.put(v.utterance, msg.text.clone());
                            }
                            return Self::needs_llm(resp, utterance, started);
                        }
                    }
                }
                // A voice turn heard again as words far from its first reading (which the
                // tiers without the LLM could not act on): nothing was heard to act on, and the
                // local model would only guess, seconds later (vocabulary::far_apart).
                None if first_heard
                    .as_deref()
                    .is_some_and(|f| vocabulary::far_apart(&msg.text, f)) =>
                {
                    Err(Undecided::Unheard)
                }
                None => {
                    // The slow tiers stop when the caller cancels (a barge-in on a voice turn,
                    // Ctrl-C): dropping their requests cancels the embedding and the local
                    // model's generation on the bus too.
                    let mut cancelled = req.cancelled.clone();
                    tokio::select! {
                        d = self.understand_slow(
                            &msg,
                            req.envelope.deadline_ms,
                            &mut record.stages,
                            started,
                        ) => d.map_err(Undecided::Llm),
                        Ok(_) = cancelled.wait_for(|c| *c) => Err(Undecided::Cancelled),
                    }
                }
            },
        };
        let (tier, tool, mut args) = match decided {
            Ok(Decision::Act(tier, tool, args)) => (tier, tool, args),
            Ok(Decision::Ask(tier, ask)) => {
                return self.ask(resp, record, &msg, tier, ask, started);
            }
            Err(Undecided::Cancelled) if now_ms() < req.envelope.deadline_ms => {
                record.stages.push(ming_schemas::agent::Stage {
                    name: "cancelled by the caller".into(),
                    at_ms: since(started),
                });
                record.outcome = "cancelled".into();
                tracing::info!(utterance, "cancelled before acting");
                self.log.append(record);
                resp.error(ErrorCode::Cancelled, "cancelled before acting");
                return;
            }
            Err(Undecided::Cancelled) => {
                record.stages.push(ming_schemas::agent::Stage {
                    name: "deadline passed".into(),
                    at_ms: since(started),
                });
                resp.error(
                    ErrorCode::Timeout,
                    "the deadline passed before I could understand that",
                );
                self.log.append(record);
                return;
            }
            Err(Undecided::Unheard) => {
                record.stages.push(ming_schemas::agent::Stage {
                    name: "hearings disagree".into(),
                    at_ms: since(started),
                });
                record.outcome = "unsure".into();
                tracing::info!(utterance, first = ?first_heard, "heard two ways far apart: not guessed at");
                self.log.append(record);
                resp.error(ErrorCode::BadRequest, say_again(&msg.text));
                return;
            }
            Err(Undecided::Llm(e)) => {
                let code = match e.code() {
                    ErrorCode::Timeout => ErrorCode::Timeout,
                    ErrorCode::ServiceUnavailable => ErrorCode::ServiceUnavailable,
                    _ => ErrorCode::Internal,
                };
                record.stages.push(ming_schemas::agent::Stage {
                    name: "llm failed".into(),
                    at_ms: since(started),
                });
                resp.error(
                    code,
                    format!(
                        "I could not understand that without the local model, which failed: {e}"
                    ),
                );
                self.log.append(record);
                return;
            }
        };
        // The local model's words must be the user's: asked about a garbled utterance it fills
        // the arguments from the previous exchange or a tool's description (grounding.rs). And
        // whatever tier decided, nothing runs on arguments its schema does not allow (an LLM's
        // timer of 10^15 seconds, a misheard value). Either way the reason is the answer.
        let mut refusal = None;
        if matches!(tier, Tier::Llm | Tier::Router) {
            let previous = msg
                .session
                .as_deref()
                .and_then(|s| self.conversations.history(s).pop())
                .map(|e| e.user);
            let asked = if tier == Tier::Llm && msg.voice.is_some() {
                grounding::named_by_voice(&tool, &msg.text)
            } else if tier == Tier::Llm {
                grounding::asked_for(&tool, &msg.text)
            } else {
                Ok(())
            };
            match asked
                .and_then(|()| grounding::check(&tool, &mut args, &msg.text, previous.as_deref()))
            {
                Ok(()) => {}
                Err(e) => match followup::for_missing(&e, &args) {
                    // A timer with a unit and no number, a reminder with no time: ask for it,
                    // as the router does for a timer.
                    Some((stage, ask)) => {
                        record.stages.push(ming_schemas::agent::Stage {
                            name: stage.into(),
                            at_ms: since(started),
                        });
                        return self.ask(resp, record, &msg, tier, ask, started);
                    }
                    None => {
                        refusal = Some(("arguments not the user's", "unsure", format!(
                            "I heard \u{201c}{}\u{201d} and am not sure what you want ({tool}? {e}); please say it again",
                            msg.text.trim()
                        )));
                    }
                },
            }
        }
        // The local model's chat answer (`reply`) to a voice turn heard again as other words
        // than at first: the two hearings share under half their words, so neither is what was
        // said, and an answer to either is an answer to words the user did not say ("Can you
        // lament its appointment on Friday night?", heard again "Shabu-Rament is the ultimate
        // on-flying item.", was told "Shabu-Rament is … a popular and beloved item in the world
        // of fashion"). A tool the model chose is held to the words by grounding above; a
        // reading heard again as the same words goes to the model as it is.
        if refusal.is_none()
            && chats_about_a_stray_hearing(tier, &tool, &msg.text, first_heard.as_deref())
        {
            refusal = Some(("hearings disagree", "unsure", say_again(&msg.text)));
        }
        // The free text of a reading heard again that strays from what the turn was first
        // heard as (vocabulary::strays): a guided reading's is the decoder's words on the way
        // to a command, not the user's; a second model's is a note the two models heard as
        // different words — in the voice bench base's "Note down the gun distal number." (first
        // "No time for them to discover.") and three like it were noted, all wrong, where the
        // one base note that kept the first reading's words ("call the bank tomorrow") was right.
        let free_text = matches!(tool.as_str(), "add_note" | "remember");
        if let (None, true, Some(v), Some(text)) = (
            &refusal,
            free_text,
            &msg.voice,
            args.get("text").and_then(|t| t.as_str()),
        ) {
            let heard_again = v
                .stages
                .iter()
                .any(|s| s.name.ends_with("guided_transcript") || s.name == "second_transcript");
            if heard_again && vocabulary::strays(text, &self.not_understood.all(v.utterance)) {
                refusal = Some((
                    "free text not heard",
                    "unsure",
                    format!(
                        "I heard \u{201c}{}\u{201d} and am not sure of the words to keep; please say it again",
                        msg.text.trim()
                    ),
                ));
            }
        }
        if refusal.is_none() {
            if let Some(schema) = self.schema_of(&tool) {
                if let Err(e) = schema::validate(&schema, &args) {
                    refusal = Some((
                        "arguments refused",
                        "refused",
                        format!("I did not run {tool}: {e}"),
                    ));
                }
            }
        }
        if let Some((stage, outcome, answer)) = refusal {
            record.stages.push(ming_schemas::agent::Stage {
                name: stage.into(),
                at_ms: since(started),
            });
            record.tier = Some(tier);
            record.tool = Some(tool.clone());
            record.arguments = args.to_string();
            record.outcome = outcome.into();
            tracing::info!(utterance, tool = %tool, tier = ?tier, outcome, reason = %answer, "not run");
            self.log.append(record);
            resp.error(ErrorCode::BadRequest, answer);
            return;
        }
        // A voice look-up that would find nothing: heard again in the user's own words first
        // (vocabulary.rs); the audio service asks once more, without `skip_llm`, if that
        // reading does not do better.
        if msg.skip_llm && msg.voice.is_some() {
            if let Some(patterns) = self.hear_again(&tool, &args, &msg.text).await {
                tracing::info!(utterance, tool = %tool, "a voice look-up that finds nothing: heard again in the user's words first");
                if let (Some(v), Some(q)) = (&msg.voice, args.get("query").and_then(|q| q.as_str()))
                {
                    self.first_heard.put(v.utterance, q.to_string());
                }
                resp.reply(&Reply {
                    utterance,
                    text: "That finds nothing in your data.".into(),
                    action: None,
                    decided_ms: since(started),
                    action_started_ms: None,
                    awaiting: None,
                    needs_llm: false,
                    hear_again: patterns,
                });
                return;
            }
        }
        let decided_ms = started.elapsed().as_secs_f64() * 1000.0;
        let arguments = args.to_string();
        record.stages.push(ming_schemas::agent::Stage {
            name: format!("decided ({tier:?} tier)").to_lowercase(),
            at_ms: decided_ms,
        });
        self.events.publish(
            kinds::EVENT_ACTION_STARTED,
            &ActionStarted {
                utterance,
                tool: tool.clone(),
                arguments: arguments.clone(),
                tier,
            },
        );
        let action_started_ms = started.elapsed().as_secs_f64() * 1000.0;
        record.stages.push(ming_schemas::agent::Stage {
            name: "action started".into(),
            at_ms: action_started_ms,
        });
        let outcome = if tool == "handoff" {
            self.handoff(&args).await
        } else if tool == "index_documents" {
            self.index_documents().await
        } else if tool == "summarize_mail" {
            self.summarize_mail(&args, req.envelope.deadline_ms).await
        } else if matches!(tool.as_str(), "remember" | "recall" | "forget_memory") {
            self.memory_tool(&tool, &args, confirm).await
        } else if let Some(ext) = self.external.get(&tool) {
            external::run(&tool, ext, &args).await
        } else {
            let tools = self.tools.clone();
            let (t, a) = (tool.clone(), args.clone());
            let mut outcome = tokio::task::spawn_blocking(move || tools.run(&t, &a, confirm))
                .await
                .unwrap_or_else(|e| tools::Outcome {
                    needs_confirmation: false,
                    ok: false,
                    text: format!("the tool crashed: {e}"),
                });
            // Words found in files, then passages found by meaning in the indexed documents.
            if tool == "search_documents" && outcome.ok {
                let q = args
                    .get("query")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                let related = self.related_passages(q).await;
                if !related.is_empty() {
                    outcome.text = format!(
                        "{}\nRelated passages:\n{}",
                        outcome.text,
                        related.join("\n")
                    );
                }
            }
            outcome
        };
        self.events.publish(
            kinds::EVENT_ACTION_FINISHED,
            &ActionFinished {
                utterance,
                tool: tool.clone(),
                ok: outcome.ok,
                result: outcome.text.clone(),
            },
        );
        record.stages.push(ming_schemas::agent::Stage {
            name: "action finished".into(),
            at_ms: since(started),
        });
        record.tier = Some(tier);
        record.tool = Some(tool.clone());
        record.arguments = arguments.clone();
        record.outcome = if outcome.ok {
            "done"
        } else if outcome.needs_confirmation {
            "unconfirmed"
        } else {
            "failed"
        }
        .into();
        tracing::info!(utterance, tool = %tool, tier = ?tier, decided_ms, ok = outcome.ok, "acted");
        if outcome.ok {
            self.remember_episode(&tool, &msg.text);
        }
        // A destructive call that waits for a yes: the session's next message may give it.
        let mut text = outcome.text.clone();
        // A look-up heard again in the user's words: what the first hearing looked for.
        let first = msg
            .voice
            .as_ref()
            .and_then(|v| self.first_heard.take(v.utterance));
        let now = args.get("query").and_then(|q| q.as_str());
        if let (Some(first), Some(now), true) = (first, now, tools::looks_up_data(&tool)) {
            if let Some(said) = vocabulary::searched_instead(&first, now) {
                text.insert_str(0, &said);
            }
        }
        let awaiting = match (&msg.session, outcome.needs_confirmation) {
            (Some(session), true) => {
                let q = followup::Question::Confirm {
                    tool: tool.clone(),
                    args: args.clone(),
                };
                let awaiting = q.awaiting().to_string();
                self.questions.ask(session, q);
                text.push_str(" Shall I go ahead (yes or no)?");
                Some(awaiting)
            }
            _ => None,
        };
        let outcome_text = text.clone();
        resp.reply(&Reply {
            utterance,
            text,
            action: Some(Action {
                tool,
                arguments,
                tier,
                ok: outcome.ok,
                result: outcome.text,
            }),
            decided_ms,
            action_started_ms: Some(action_started_ms),
            awaiting,
            needs_llm: false,
            hear_again: Vec::new(),
        });
        record.stages.push(ming_schemas::agent::Stage {
            name: "replied".into(),
            at_ms: since(started),
        });
        self.log.append(record);
        if let Some(session) = &msg.session {
            self.conversations.add(session, &msg.text, &outcome_text);
            // After the reply: the caller does not wait for this.
            self.warm_next_turn(session).await;
        }
    }

    fn detail(&self) -> String {
        match self.router.version() {
            Some(v) => format!("fast path + router v{v} + local LLM tier"),
            None => "fast path + local LLM tier (no router yet)".into(),
        }
    }
}

/// Serves `agent` on the bus until `shutdown` resolves or the supervisor asks it to drain; fires
/// due timers in the background.
///
/// # Errors
/// When the data dir or the bus cannot be set up.
pub async fn run(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), BusError> {
    let bus = BusConfig::from_config(&cfg);
    let paths = Paths::resolve(&cfg.paths);
    let tools = Arc::new(
        Tools::open(&paths.data_dir)
            .map(|t| t.with_sources(&cfg.agent))
            .map_err(|source| BusError::Io {
                context: format!("open the agent's data in {}", paths.data_dir.display()),
                source,
            })?,
    );
    // Compile the fast path's patterns now, not on the first utterance (a few milliseconds).
    let _ = intent::understand("what time is it");
    let mut opts = WorkerOptions::from_env(SERVICE);
    opts.drain_grace = Duration::from_millis(cfg.supervisor.drain_grace_ms);
    let service = Arc::new(AgentService {
        tools: tools.clone(),
        conversations: conversation::Conversations::default(),
        questions: followup::Questions::new(Duration::from_secs(cfg.agent.follow_up_s)),
        external: cfg.agent.tools.clone(),
        log: log::InteractionLog::open(&paths.data_dir.join("agent")),
        router: router::RouterSlot::open(&paths.data_dir.join("agent")),
        router_threshold: cfg.agent.router_threshold,
        bus: BusClient::connect(&bus, opts.service.clone())?,
        events: EventPublisher::connect(&bus, opts.service.clone())?,
        indexing: tokio::sync::Mutex::new(()),
        index_state: paths.data_dir.join("agent").join("documents-index.json"),
        first_heard: vocabulary::FirstHeard::default(),
        not_understood: vocabulary::Turns::default(),
    });
    // The documents folder into memory: at start (once memory answers), then on the schedule.
    let every = cfg.agent.documents_index_minutes;
    let index = service.clone();
    let indexer = tokio::spawn(async move {
        if index.tools.documents().is_none() || every == 0 {
            return;
        }
        let mut wait = Duration::from_secs(1);
        loop {
            let o = index.index_documents().await;
            if o.ok {
                wait = Duration::from_secs(every * 60);
            } else {
                tracing::warn!(result = %o.text, "documents not indexed; trying again");
                wait = (wait * 2).min(Duration::from_secs(every * 60));
            }
            tokio::time::sleep(wait).await;
        }
    });
    // Timers fire here: an event, and a spoken reminder.
    let fire = service.clone();
    let speak_reminders = cfg.agent.speak_reminders;
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            for t in fire.tools.take_due(now_ms()) {
                tracing::info!(timer = %t.id, label = %t.label, "timer fired");
                fire.events.publish(
                    kinds::EVENT_TIMER_FIRED,
                    &TimerFired {
                        id: t.id.clone(),
                        label: t.label.clone(),
                        due_ms: t.due_ms,
                    },
                );
                if speak_reminders {
                    // Said aloud, each on its own (a reminder can be a few seconds of speech).
                    let bus = fire.bus.clone();
                    tokio::spawn(async move { speak_reminder(&bus, &t).await });
                }
            }
        }
    });
    // Every LLM prompt begins with the system prompt and the tools (~820 tokens, 3-4 s on two
    // cores): computed at start, once inference answers, rather than after the first exchanges
    // while the user speaks the next commands (in the voice bench the first turns' decodes
    // then waited on the CPU: each turn cancelled that prefill and kept 128-160 more tokens).
    // A prompt cache restored from disk makes this instant.
    let warm = service.clone();
    let warmer = tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        for _ in 0..10 {
            match warm.warm_prompt(&[], Duration::from_secs(30)).await {
                // A turn's own request, or the warm-up after its exchange, took the model
                // first; what was computed stays in the cache, and the rest comes next time.
                Ok(r)
                    if matches!(
                        r.finish_reason,
                        FinishReason::Cancelled | FinishReason::Deadline
                    ) =>
                {
                    tracing::debug!(
                        reused = r.usage.cached_prompt_tokens,
                        "computing the LLM prompt's beginning gave way"
                    );
                }
                Ok(r) => {
                    tracing::info!(
                        tokens = r.usage.prompt_tokens,
                        reused = r.usage.cached_prompt_tokens,
                        "the LLM prompt's beginning is computed"
                    );
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "could not compute the LLM prompt's beginning yet");
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    });
    // The promoted router, from training (it also pushes each new one): ask until it answers.
    let fetch = service.clone();
    let fetcher = tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        loop {
            let r: Result<ming_schemas::training::RouterFile, BusError> = fetch
                .bus
                .request(
                    "training",
                    kinds::TRAINING_ROUTER,
                    &serde_json::json!({}),
                    Duration::from_secs(5),
                )
                .await;
            match r {
                Ok(file) if fetch.router.version() != Some(file.version) => {
                    let _ = fetch.take_router(&file).await;
                    break;
                }
                Ok(_) => break,
                Err(e) if e.code() == ErrorCode::NotFound => break,
                Err(e) => tracing::debug!(error = %e, "no router from training yet"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(30));
        }
    });
    tracing::info!(service = %opts.service, bus = %bus.bus_endpoint, "starting");
    let result = run_worker(&bus, opts, service, shutdown).await;
    ticker.abort();
    warmer.abort();
    fetcher.abort();
    indexer.abort();
    result
}

/// Whether the local model's answer `tool` to a voice turn's reading `text` is a chat answer
/// (`reply`) to words that stray from the turn's `first` reading: the second hearing keeps
/// under half of its words ([`vocabulary::strays`]), so neither is what was said.
fn chats_about_a_stray_hearing(tier: Tier, tool: &str, text: &str, first: Option<&str>) -> bool {
    tier == Tier::Llm
        && tool == "reply"
        && first.is_some_and(|f| vocabulary::strays(text, &[f.to_string()]))
}

/// How long the local model may take on a request whose caller waits until `deadline_ms`:
/// what is left, less a margin (a tenth of it, 50 ms to 1 s) for the agent to act on the
/// answer, or to say why there is none, before the caller gives up. A slow model then ends in
/// the agent's own answer (the mail listed without its summary, the model's timeout named)
/// instead of the caller's bare timeout.
fn model_budget(deadline_ms: u64, now_ms: u64) -> Duration {
    let left = deadline_ms.saturating_sub(now_ms);
    let margin = (left / 10).clamp(50, 1000);
    Duration::from_millis(left.saturating_sub(margin).max(1))
}

/// What is said when timer `t` fires.
fn reminder_text(t: &tools::Timer) -> String {
    let label = t.label.trim().trim_end_matches(['.', '!']);
    if label.is_empty() {
        "Your timer is done.".into()
    } else {
        format!("Reminder: {label}.")
    }
}

/// Says timer `t`'s reminder through the audio service. Without it (disabled, down) the event
/// alone stands, and the log says why.
async fn speak_reminder(bus: &BusClient, t: &tools::Timer) {
    let text = reminder_text(t);
    let req = ming_schemas::audio::Speak {
        text: text.clone(),
        ..Default::default()
    };
    // The length of any reminder, said at espeak-ng's slowest, with room to spare.
    let said: Result<ming_schemas::audio::Spoken, BusError> = bus
        .request("audio", kinds::AUDIO_SPEAK, &req, Duration::from_secs(60))
        .await;
    match said {
        Ok(s) => {
            tracing::info!(timer = %t.id, %text, output = %s.output, interrupted = s.interrupted, "reminder spoken")
        }
        Err(e) => tracing::warn!(timer = %t.id, %text, error = %e, "the reminder was not spoken"),
    }
}

/// The answer to a voice turn heard as `text` that the agent will not act on or guess at.
fn say_again(text: &str) -> String {
    format!(
        "I heard \u{201c}{}\u{201d} and am not sure what you want; please say it again",
        text.trim()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fired_timer_is_said_as_its_reminder() {
        let timer = |label: &str| tools::Timer {
            id: "t-1".into(),
            label: label.into(),
            due_ms: 0,
        };
        assert_eq!(
            reminder_text(&timer("check the oven")),
            "Reminder: check the oven."
        );
        assert_eq!(reminder_text(&timer(" tea. ")), "Reminder: tea.");
        assert_eq!(reminder_text(&timer("")), "Your timer is done.");
    }

    #[test]
    fn the_local_model_leaves_the_agent_time_to_answer() {
        let ms = |d: Duration| d.as_millis();
        // The CLI's minute: the model gets all but a second.
        assert_eq!(ms(model_budget(60_000, 0)), 59_000);
        // A voice turn's few seconds: a tenth is kept back.
        assert_eq!(ms(model_budget(10_000, 5_000)), 4_500);
        // Short deadlines keep 50 ms, and the model is never given nothing at all.
        assert_eq!(ms(model_budget(400, 0)), 350);
        assert_eq!(ms(model_budget(1_030, 1_000)), 1);
        assert_eq!(ms(model_budget(1_000, 2_000)), 1);
    }

    #[test]
    fn the_local_model_does_not_chat_about_a_turn_heard_two_ways() {
        let first = Some("What made it?");
        for (tier, tool, text, first, refused) in [
            // The voice bench's second hearing, which the local model answered "I'm Ming, …".
            (Tier::Llm, "reply", "What my elite?", first, true),
            // Heard alike, or heard once: answered.
            (Tier::Llm, "reply", "What made it?", first, false),
            (Tier::Llm, "reply", "What my elite?", None, false),
            // A tool is held to the words by grounding, and no other tier chats.
            (Tier::Llm, "clock", "What my elite?", first, false),
            (Tier::Router, "reply", "What my elite?", first, false),
        ] {
            assert_eq!(
                chats_about_a_stray_hearing(tier, tool, text, first),
                refused,
                "{tier:?} {tool} {text}"
            );
        }
    }
}
