//! The agent's local tools, with their state in the data dir: notes (a JSON-lines file), timers
//! (a JSON file, fired by a background task, surviving restarts), and the clock.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use ming_schemas::envelope::{fresh_id, now_ms};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What a tool did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    pub text: String,
    /// A destructive tool said what it would do and did nothing: it runs when confirmed.
    pub needs_confirmation: bool,
}

fn ok(text: impl Into<String>) -> Outcome {
    Outcome {
        needs_confirmation: false,
        ok: true,
        text: text.into(),
    }
}

fn fail(text: impl Into<String>) -> Outcome {
    Outcome {
        needs_confirmation: false,
        ok: false,
        text: text.into(),
    }
}

/// What a destructive tool would do, done only once confirmed.
pub fn unconfirmed(text: impl Into<String>) -> Outcome {
    Outcome {
        needs_confirmation: true,
        ..fail(text)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Note {
    pub id: String,
    pub time_ms: u64,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timer {
    pub id: String,
    pub label: String,
    pub due_ms: u64,
}

/// The longest timer or reminder (30 days; later things belong in the calendar).
pub const MAX_TIMER_S: u64 = 30 * 24 * 3600;

/// The user's own data a tool's `query` names something in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    Mail,
    Notes,
    Documents,
}

/// The data `tool`'s `query` looks something up in, if it is one of those tools: a voice reading
/// whose query finds nothing there is heard again in the data's words
/// ([`Tools::finds_nothing`]).
pub fn looked_up(tool: &str) -> Option<Data> {
    match tool {
        "search_mail" | "summarize_mail" => Some(Data::Mail),
        "search_notes" | "delete_note" => Some(Data::Notes),
        "search_documents" => Some(Data::Documents),
        _ => None,
    }
}

/// Whether `tool` looks up the user's data ([`looked_up`]).
pub fn looks_up_data(tool: &str) -> bool {
    looked_up(tool).is_some()
}

/// The JSON Schemas of the tools, for the LLM tier (`reply` answers without acting).
pub fn schemas() -> &'static [(&'static str, &'static str, Value)] {
    static SCHEMAS: std::sync::OnceLock<Vec<(&'static str, &'static str, Value)>> =
        std::sync::OnceLock::new();
    SCHEMAS.get_or_init(built_in_schemas)
}

fn built_in_schemas() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        (
            "set_timer",
            "Start a countdown timer or a reminder",
            json!({"type": "object", "properties": {"seconds": {"type": "integer", "minimum": 1, "maximum": MAX_TIMER_S}, "label": {"type": "string"}}, "required": ["seconds", "label"]}),
        ),
        (
            "set_reminder",
            "Remind the user of something at a clock time (date: today, tomorrow, a weekday or YYYY-MM-DD; time: e.g. 9am, 14:30, noon)",
            json!({"type": "object", "properties": {"text": {"type": "string"}, "date": {"type": "string"}, "time": {"type": "string"}}, "required": ["text", "time"]}),
        ),
        (
            "add_note",
            "Save a note",
            json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        ),
        (
            "list_notes",
            "List the saved notes",
            json!({"type": "object", "properties": {}}),
        ),
        (
            "search_notes",
            "Find notes containing words",
            json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
        ),
        (
            "delete_note",
            "Delete notes containing words (asks for confirmation)",
            json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
        ),
        (
            "add_event",
            "Add an event to the calendar",
            json!({"type": "object", "properties": {"title": {"type": "string"}, "date": {"type": "string"}, "time": {"type": "string"}, "minutes": {"type": "integer", "minimum": 1, "maximum": 1440}}, "required": ["title", "date", "time"]}),
        ),
        (
            "list_events",
            "List a day's events (date: today, tomorrow, a weekday or YYYY-MM-DD)",
            json!({"type": "object", "properties": {"date": {"type": "string"}}, "required": ["date"]}),
        ),
        (
            "free_time",
            "Find free time on a day",
            json!({"type": "object", "properties": {"date": {"type": "string"}, "minutes": {"type": "integer", "minimum": 1, "maximum": 1440}}, "required": ["date"]}),
        ),
        (
            "search_documents",
            "Search the documents folder by name and content",
            json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
        ),
        (
            "index_documents",
            "Index the documents folder into memory, so that questions find passages by meaning",
            json!({"type": "object", "properties": {}}),
        ),
        (
            "search_mail",
            "Search local mail (read-only) by sender, subject or text",
            json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
        ),
        (
            "summarize_mail",
            "Summarise local mail (read-only): the latest messages, or those matching a sender or words",
            json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
        ),
        (
            "remember",
            "Keep something about the user in long-term memory",
            json!({"type": "object", "properties": {"text": {"type": "string"}, "kind": {"enum": ["fact", "preference", "episode"]}}, "required": ["text", "kind"]}),
        ),
        (
            "recall",
            "Look up what long-term memory holds about something",
            json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
        ),
        (
            "forget_memory",
            "Forget what long-term memory holds about something (asks for confirmation)",
            json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
        ),
        (
            "clock",
            "Tell the time or the date, here or in a city or time zone (zone: e.g. Tokyo, Europe/Paris, UTC)",
            json!({"type": "object", "properties": {"what": {"enum": ["time", "date"]}, "zone": {"type": "string"}}, "required": ["what"]}),
        ),
        (
            "reply",
            "Answer in words, without acting",
            json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
        ),
    ]
}

/// The tools and their files.
pub struct Tools {
    dir: PathBuf,
    /// The documents folder and the mail source the user configured (read-only).
    documents: Option<PathBuf>,
    mail: Option<PathBuf>,
    notes: Mutex<()>,
    timers: Mutex<Vec<Timer>>,
}

impl Tools {
    /// Opens `data_dir/agent/`, loading the pending timers.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(data_dir: &std::path::Path) -> std::io::Result<Self> {
        let dir = data_dir.join("agent");
        std::fs::create_dir_all(&dir)?;
        let timers = std::fs::read(dir.join("timers.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Self {
            dir,
            documents: None,
            mail: None,
            notes: Mutex::new(()),
            timers: Mutex::new(timers),
        })
    }

    /// Adds the configured documents folder and mail source.
    pub fn with_sources(mut self, agent: &ming_config::AgentSettings) -> Self {
        let path = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
        self.documents = path(&agent.documents_dir);
        self.mail = path(&agent.mail);
        self
    }

    /// The documents folder, if one is configured.
    pub fn documents(&self) -> Option<&std::path::Path> {
        self.documents.as_deref()
    }

    /// The mail source, if one is configured.
    pub fn mail(&self) -> Option<&std::path::Path> {
        self.mail.as_deref()
    }

    /// For a `tool` that looks up the user's data ([`looks_up_data`]) whose `query` finds
    /// nothing: the words the data holds that the query might have been (senders and
    /// subjects, the notes' words, the documents' names; at most `limit`). `None` when
    /// something is found, for another tool, or without the source.
    pub fn finds_nothing(&self, tool: &str, query: &str, limit: usize) -> Option<Vec<String>> {
        use crate::files;
        match looked_up(tool)? {
            Data::Mail => {
                let mails = files::read_mail(self.mail.as_deref()?);
                let matches = files::mail_matcher(query);
                (!mails.iter().any(matches)).then(|| files::mail_vocabulary(&mails, limit))
            }
            Data::Notes => {
                let notes = self.read_notes();
                let matches = files::text_matcher(query);
                (!notes.iter().any(|n| matches(&n.text)))
                    .then(|| files::vocabulary(notes.iter().map(|n| n.text.as_str()), limit))
            }
            Data::Documents => {
                let root = self.documents.as_deref()?;
                files::search_documents(root, query, 1)
                    .is_empty()
                    .then(|| files::document_vocabulary(root, limit))
            }
        }
    }

    fn notes_path(&self) -> PathBuf {
        self.dir.join("notes.jsonl")
    }

    fn read_notes(&self) -> Vec<Note> {
        std::fs::read_to_string(self.notes_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn save_timers(&self, timers: &[Timer]) -> std::io::Result<()> {
        let tmp = self.dir.join("timers.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec(timers).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, self.dir.join("timers.json"))
    }

    /// Runs `tool`; destructive tools act only with `confirm`.
    pub fn run(&self, tool: &str, args: &Value, confirm: bool) -> Outcome {
        let text = |k: &str| arg(args, k);
        match tool {
            "add_note" => {
                let t = text("text");
                if t.is_empty() {
                    return fail("there is nothing to note");
                }
                let note = Note {
                    id: format!("n-{:x}", fresh_id()),
                    time_ms: now_ms(),
                    text: t.clone(),
                };
                let _guard = self.notes.lock();
                let written = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.notes_path())
                    .and_then(|mut f| {
                        let line = serde_json::to_string(&note).map_err(std::io::Error::other)?;
                        writeln!(f, "{line}")?;
                        f.sync_data()
                    });
                match written {
                    Ok(()) => ok(format!("Noted: {t}")),
                    Err(e) => fail(format!("could not save the note: {e}")),
                }
            }
            "list_notes" => {
                let notes = self.read_notes();
                if notes.is_empty() {
                    return ok("You have no notes.");
                }
                ok(notes
                    .iter()
                    .map(|n| format!("- {}", n.text))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            "search_notes" => {
                let q = text("query").to_lowercase();
                let matches = crate::files::text_matcher(&q);
                let hits: Vec<String> = self
                    .read_notes()
                    .into_iter()
                    .filter(|n| matches(&n.text))
                    .map(|n| format!("- {}", n.text))
                    .collect();
                if hits.is_empty() {
                    ok(format!("No note mentions \"{q}\"."))
                } else {
                    ok(hits.join("\n"))
                }
            }
            "delete_note" => {
                let q = text("query").to_lowercase();
                if q.is_empty() {
                    return fail("say which note to delete");
                }
                let _guard = self.notes.lock();
                let notes = self.read_notes();
                // The notes a search for the same words finds (and the user confirms the list).
                let matches = crate::files::text_matcher(&q);
                let (gone, keep): (Vec<Note>, Vec<Note>) =
                    notes.into_iter().partition(|n| matches(&n.text));
                if gone.is_empty() {
                    return ok(format!("No note mentions \"{q}\"; nothing deleted."));
                }
                let list = gone
                    .iter()
                    .map(|n| format!("\"{}\"", n.text))
                    .collect::<Vec<_>>()
                    .join(", ");
                if !confirm {
                    return unconfirmed(format!("This would delete {} note(s): {list}. Confirm to delete; nothing was deleted.", gone.len()));
                }
                let body: String = keep
                    .iter()
                    .filter_map(|n| serde_json::to_string(n).ok())
                    .map(|l| l + "\n")
                    .collect();
                let tmp = self.dir.join("notes.jsonl.tmp");
                match std::fs::write(&tmp, body)
                    .and_then(|()| std::fs::rename(&tmp, self.notes_path()))
                {
                    Ok(()) => ok(format!("Deleted {} note(s): {list}", gone.len())),
                    Err(e) => fail(format!("could not delete: {e}")),
                }
            }
            "set_timer" => {
                let Some(secs) = args
                    .get("seconds")
                    .and_then(Value::as_u64)
                    .filter(|s| (1..=MAX_TIMER_S).contains(s))
                else {
                    return fail("a timer runs from 1 second to 30 days");
                };
                let label = text("label");
                if let Err(e) = self.add_timer(&label, now_ms() + secs * 1000, "timer") {
                    return fail(e);
                }
                let what = if label.is_empty() {
                    "Timer".to_string()
                } else {
                    format!("Timer \"{label}\"")
                };
                ok(format!("{what} set for {}.", human(secs)))
            }
            "set_reminder" => self.set_reminder(args),
            "add_event" | "list_events" | "free_time" | "import_calendar" => {
                self.calendar(tool, args)
            }
            "search_documents" => {
                let Some(root) = &self.documents else {
                    return fail("no documents folder is configured (agent.documents_dir)");
                };
                let q = text("query");
                if q.is_empty() {
                    return fail("say what to look for");
                }
                let hits = crate::files::search_documents(root, &q, 10);
                if hits.is_empty() {
                    return ok(format!("No document mentions \"{q}\"."));
                }
                ok(hits
                    .iter()
                    .map(|h| {
                        let rel = h
                            .path
                            .strip_prefix(root)
                            .unwrap_or(&h.path)
                            .display()
                            .to_string();
                        if h.line.is_empty() {
                            format!("- {rel}")
                        } else {
                            format!("- {rel}: {}", h.line)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            "search_mail" => {
                let Some(source) = &self.mail else {
                    return fail("no mail source is configured (agent.mail: a Maildir folder or an mbox file)");
                };
                let q = text("query");
                let hits = crate::files::search_mail(source, &q);
                if hits.is_empty() {
                    return ok(format!("No message mentions \"{q}\"."));
                }
                let mut lines = vec![format!("{} message(s) mention \"{q}\":", hits.len())];
                for m in hits.iter().rev().take(10) {
                    let first = m
                        .body
                        .lines()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or_default();
                    lines.push(format!(
                        "- {} — {}: {}",
                        m.from,
                        m.subject,
                        first.chars().take(100).collect::<String>()
                    ));
                }
                ok(lines.join("\n"))
            }
            "clock" if !text("zone").is_empty() => match zone_now(&text("zone")) {
                Ok((zone, date, time)) => {
                    if text("what") == "date" {
                        ok(format!("In {zone} it is {date}."))
                    } else {
                        ok(format!("In {zone} it is {time} ({date})."))
                    }
                }
                Err(e) => fail(e),
            },
            "clock" => {
                let (date, time) = local_now();
                if text("what") == "date" {
                    ok(format!("Today is {date}."))
                } else {
                    ok(format!("It is {time}."))
                }
            }
            "reply" => ok(text("text")),
            other => fail(format!("there is no tool called {other}")),
        }
    }

    /// Adds a timer (a `kind`: "timer", "reminder") due at `due_ms` and saves the pending ones;
    /// when they cannot be saved, it is not kept.
    fn add_timer(&self, label: &str, due_ms: u64, kind: &str) -> Result<(), String> {
        let timer = Timer {
            id: format!("t-{:x}", fresh_id()),
            label: label.to_string(),
            due_ms,
        };
        let mut timers = self
            .timers
            .lock()
            .map_err(|_| "timer store unavailable".to_string())?;
        timers.push(timer);
        if let Err(e) = self.save_timers(&timers) {
            timers.pop();
            return Err(format!("could not save the {kind}: {e}"));
        }
        Ok(())
    }

    /// `set_reminder`: a timer due at a local clock time. With no day said, the next time the
    /// clock shows it (today, or tomorrow once it has passed); a day said whose time has passed
    /// is refused, as a misheard or made-up day.
    fn set_reminder(&self, args: &Value) -> Outcome {
        let text = |k: &str| arg(args, k);
        let what = text("text");
        if what.is_empty() {
            return fail("say what to remind you of");
        }
        let Some(minute) = clock_minutes(&text("time")) else {
            return fail(format!("I do not understand the time \"{}\"", text("time")));
        };
        let day = text("date");
        let Some(date) = resolve_date(&day) else {
            return fail(format!(
                "I do not understand the date \"{day}\" (today, tomorrow, a weekday or YYYY-MM-DD)"
            ));
        };
        let now = now_ms();
        let mut due = local_ms(date, minute);
        if due <= now && day.is_empty() {
            due = local_ms(date.add_days(1), minute);
        }
        if due <= now {
            return fail(format!(
                "{} at {} has passed; say the day again",
                date.iso(),
                crate::calendar::hm(minute)
            ));
        }
        if due - now > MAX_TIMER_S * 1000 {
            return fail("a reminder is at most 30 days ahead; put later things in the calendar");
        }
        if let Err(e) = self.add_timer(&what, due, "reminder") {
            return fail(e);
        }
        ok(format!(
            "Reminder set for {} at {}: {}.",
            spoken_date(due),
            crate::calendar::hm(minute),
            what.trim_end_matches(['.', '!'])
        ))
    }

    fn calendar(&self, tool: &str, args: &Value) -> Outcome {
        use crate::calendar::{hm, Calendar, Event};
        let cal = Calendar::new(&self.dir);
        let text = |k: &str| arg(args, k);
        if tool == "import_calendar" {
            let path = text("path");
            let incoming = match std::fs::read_to_string(&path) {
                Ok(t) => crate::calendar::parse(&t),
                Err(e) => return fail(format!("cannot read {path}: {e}")),
            };
            let mut events = cal.events();
            let before = events.len();
            for e in incoming {
                if !events.iter().any(|x| x.uid == e.uid && !e.uid.is_empty()) {
                    events.push(e);
                }
            }
            let added = events.len() - before;
            return match cal.save(&events) {
                Ok(()) => ok(format!("Imported {added} event(s) from {path}.")),
                Err(e) => fail(format!("could not save the calendar: {e}")),
            };
        }
        let Some(date) = resolve_date(&text("date")) else {
            return fail(format!(
                "I do not understand the date \"{}\" (today, tomorrow, a weekday or YYYY-MM-DD)",
                text("date")
            ));
        };
        match tool {
            "add_event" => {
                let title = text("title");
                let Some(start) = clock_minutes(&text("time")) else {
                    return fail(format!("I do not understand the time \"{}\"", text("time")));
                };
                if title.is_empty() {
                    return fail("the event needs a title");
                }
                // A new event in the past is a misheard or made-up date (an LLM once chose 2023
                // for "on Friday"); past events come in with import_calendar.
                if date < today() {
                    return fail(format!(
                        "{} has passed; say the day again (today, tomorrow, a weekday or YYYY-MM-DD)",
                        date.iso()
                    ));
                }
                let minutes = args
                    .get("minutes")
                    .and_then(Value::as_u64)
                    .filter(|m| *m > 0)
                    .unwrap_or(60)
                    .clamp(1, 24 * 60) as u32;
                let mut events = cal.events();
                let clash: Vec<String> = events
                    .iter()
                    .filter(|e| {
                        e.date == date && e.start < start + minutes && start < e.start + e.minutes
                    })
                    .map(|e| e.title.clone())
                    .collect();
                events.push(Event {
                    uid: format!("{:x}@mingllm", fresh_id()),
                    title: title.clone(),
                    date,
                    start,
                    minutes,
                });
                if let Err(e) = cal.save(&events) {
                    return fail(format!("could not save the calendar: {e}"));
                }
                let mut msg = format!(
                    "Added \"{title}\" on {} at {} for {minutes} minutes.",
                    date.iso(),
                    hm(start)
                );
                if !clash.is_empty() {
                    msg.push_str(&format!(" It overlaps with: {}.", clash.join(", ")));
                }
                ok(msg)
            }
            "list_events" => {
                let mut day: Vec<Event> = cal
                    .events()
                    .into_iter()
                    .filter(|e| e.date == date)
                    .collect();
                day.sort_by_key(|e| e.start);
                if day.is_empty() {
                    return ok(format!("Nothing on {}.", date.iso()));
                }
                ok(day
                    .iter()
                    .map(|e| format!("- {}–{} {}", hm(e.start), hm(e.start + e.minutes), e.title))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            _ => {
                let minutes = args
                    .get("minutes")
                    .and_then(Value::as_u64)
                    .unwrap_or(30)
                    .clamp(1, 600) as u32;
                let free = cal.free(date, 9 * 60, 18 * 60, minutes);
                if free.is_empty() {
                    return ok(format!(
                        "No free {minutes} minutes between 09:00 and 18:00 on {}.",
                        date.iso()
                    ));
                }
                ok(format!(
                    "Free on {}: {}",
                    date.iso(),
                    free.iter()
                        .map(|(a, b)| format!("{}–{}", hm(*a), hm(*b)))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }

    /// Removes and returns the timers due at `now_ms`.
    pub fn take_due(&self, now: u64) -> Vec<Timer> {
        let Ok(mut timers) = self.timers.lock() else {
            return Vec::new();
        };
        let (due, rest): (Vec<Timer>, Vec<Timer>) = timers.drain(..).partition(|t| t.due_ms <= now);
        *timers = rest;
        if !due.is_empty() {
            if let Err(e) = self.save_timers(&timers) {
                tracing::error!(error = %e, "cannot save timers");
            }
        }
        due
    }
}

fn human(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut parts = Vec::new();
    let unit = |n: u64, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    if h > 0 {
        parts.push(unit(h, "hour"));
    }
    if m > 0 {
        parts.push(unit(m, "minute"));
    }
    if s > 0 {
        parts.push(unit(s, "second"));
    }
    parts.join(" ")
}

/// A clock time as said ("9am", "14:30", "noon"; see `intent::parse_time`) in minutes after
/// midnight.
fn clock_minutes(said: &str) -> Option<u32> {
    let t = crate::intent::parse_time(said)?;
    let (h, m) = t.split_once(':')?;
    Some(h.parse::<u32>().ok()? * 60 + m.parse::<u32>().ok()?)
}

/// The string argument `k` of a call, trimmed; empty when absent.
fn arg(args: &Value, k: &str) -> String {
    args.get(k)
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or_default()
        .to_string()
}

/// Today's local date.
pub fn today() -> crate::calendar::Date {
    let tm = local_tm();
    crate::calendar::Date {
        year: i64::from(tm.tm_year) + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
    }
}

/// "today" (or "tonight"), "tomorrow", a weekday (the next one, today excluded) or YYYY-MM-DD.
pub fn resolve_date(s: &str) -> Option<crate::calendar::Date> {
    const DAYS: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let s = s.trim().to_lowercase();
    let today = today();
    match s.as_str() {
        "" | "today" | "tonight" => Some(today),
        "tomorrow" => Some(today.add_days(1)),
        _ => match DAYS.iter().position(|d| *d == s) {
            Some(w) => {
                let ahead = (w as i64 - i64::from(today.weekday())).rem_euclid(7);
                Some(today.add_days(if ahead == 0 { 7 } else { ahead }))
            }
            None => crate::calendar::Date::parse(&s),
        },
    }
}

/// The zone database (tzdata).
pub const ZONEINFO: &str = "/usr/share/zoneinfo";

/// The tz database name for a city or zone as people say it: "Tokyo" → `Asia/Tokyo`, "new york"
/// → `America/New_York`, "Europe/Paris", "UTC".
pub fn find_zone(name: &str, root: &std::path::Path) -> Option<String> {
    let want = name.trim().to_lowercase().replace(' ', "_");
    if want.is_empty() || want.contains("..") {
        return None;
    }
    if matches!(want.as_str(), "utc" | "gmt" | "zulu") {
        return Some("UTC".into());
    }
    let is_zone = |p: &std::path::Path| std::fs::read(p).is_ok_and(|b| b.starts_with(b"TZif"));
    // An exact zone name ("Europe/Paris"), whatever its case.
    let mut stack = vec![(root.to_path_buf(), String::new())];
    let mut by_city = None;
    while let Some((dir, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for e in entries {
            let file = e.file_name().to_string_lossy().into_owned();
            // posix/ and right/ repeat the tree; Etc/ holds offsets, not places.
            if prefix.is_empty() && matches!(file.as_str(), "posix" | "right" | "Etc") {
                continue;
            }
            let full = if prefix.is_empty() {
                file.clone()
            } else {
                format!("{prefix}/{file}")
            };
            let path = e.path();
            if path.is_dir() {
                stack.push((path, full));
            } else if full.to_lowercase() == want && is_zone(&path) {
                return Some(full);
            } else if by_city.is_none()
                && file.to_lowercase() == want
                && prefix.contains(char::is_uppercase)
                && is_zone(&path)
            {
                by_city = Some(full);
            }
        }
    }
    by_city
}

/// The date and time now in a city or zone: (zone, "Wednesday 25 November 2026", "17:05
/// JST, UTC+09:00"). The system's tz database does the arithmetic (`date` with `TZ`), so
/// daylight saving time is right.
fn zone_now(name: &str) -> Result<(String, String, String), String> {
    let zone = find_zone(name, std::path::Path::new(ZONEINFO)).ok_or_else(|| {
        format!("I don't know the time zone of {name} (try a big city nearby or a zone like Europe/Paris)")
    })?;
    let out = std::process::Command::new("date")
        .env("TZ", format!(":{zone}"))
        .arg("+%A %-d %B %Y|%H:%M %Z, UTC%:z")
        .output()
        .map_err(|e| format!("cannot read the clock: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match text.split_once('|') {
        Some((date, time)) if out.status.success() => Ok((zone, date.into(), time.into())),
        _ => Err(format!("cannot read the clock for {zone}")),
    }
}

/// The epoch milliseconds of `minute` past local midnight on `date` (the system's zone, daylight
/// saving time included; a time that the clocks skip resolves as `mktime` resolves it).
pub fn local_ms(date: crate::calendar::Date, minute: u32) -> u64 {
    // SAFETY: mktime reads and normalises the zeroed struct we fill in.
    let secs = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        tm.tm_year = (date.year - 1900) as libc::c_int;
        tm.tm_mon = date.month as libc::c_int - 1;
        tm.tm_mday = date.day as libc::c_int;
        tm.tm_hour = (minute / 60) as libc::c_int;
        tm.tm_min = (minute % 60) as libc::c_int;
        tm.tm_isdst = -1;
        libc::mktime(&mut tm)
    };
    u64::try_from(secs).map_or(0, |s| s * 1000)
}

/// "Wednesday 9 December": the local day of `ms`.
fn spoken_date(ms: u64) -> String {
    let tm = tm_at(ms);
    let (day, month) = day_and_month_names(&tm);
    format!("{day} {} {month}", tm.tm_mday)
}

fn tm_at(ms: u64) -> libc::tm {
    let secs = (ms / 1000) as libc::time_t;
    // SAFETY: localtime_r writes into the zeroed struct we pass and reads `secs`.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    }
}

fn local_tm() -> libc::tm {
    tm_at(now_ms())
}

/// The names of `tm`'s weekday and month: ("Wednesday", "December").
fn day_and_month_names(tm: &libc::tm) -> (&'static str, &'static str) {
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    (
        DAYS.get(tm.tm_wday as usize).copied().unwrap_or(""),
        MONTHS.get(tm.tm_mon as usize).copied().unwrap_or(""),
    )
}

/// The local date ("Wednesday 25 November 2026") and time ("17:05").
fn local_now() -> (String, String) {
    let tm = local_tm();
    let (day, month) = day_and_month_names(&tm);
    (
        format!("{day} {} {month} {}", tm.tm_mday, tm.tm_year + 1900),
        format!("{:02}:{:02}", tm.tm_hour, tm.tm_min),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reminder_is_due_at_the_local_clock_time_said() {
        let dir = tempfile::tempdir().unwrap();
        let tools = Tools::open(dir.path()).unwrap();
        let run = |args: serde_json::Value| tools.run("set_reminder", &args, false);
        let tomorrow = today().add_days(1);
        let out =
            run(serde_json::json!({"text": "water the plants", "date": "tomorrow", "time": "9am"}));
        assert!(out.ok, "{}", out.text);
        assert!(
            out.text.starts_with("Reminder set for ")
                && out.text.ends_with(" at 09:00: water the plants."),
            "{}",
            out.text
        );
        let due = |label: &str| {
            tools
                .timers
                .lock()
                .unwrap()
                .iter()
                .find(|t| t.label == label)
                .map(|t| t.due_ms)
        };
        assert_eq!(due("water the plants"), Some(local_ms(tomorrow, 9 * 60)));
        // 9 am tomorrow is 9 hours after midnight, whatever the zone (unless the clocks change).
        let midnight = local_ms(tomorrow, 0);
        assert!(local_ms(tomorrow, 9 * 60) - midnight <= 10 * 3600 * 1000);
        // No day said: the next time the clock shows it — tomorrow, for a minute ago.
        let tm = local_tm();
        let ago = (tm.tm_hour * 60 + tm.tm_min) as u32;
        if ago > 0 {
            let time = crate::calendar::hm(ago - 1);
            assert!(run(serde_json::json!({"text": "stretch", "time": time})).ok);
            assert_eq!(due("stretch"), Some(local_ms(tomorrow, ago - 1)));
            // Today said, and passed: refused, nothing stored.
            let out = run(serde_json::json!({"text": "late", "date": "today", "time": time}));
            assert!(!out.ok && out.text.contains("has passed"), "{}", out.text);
            assert_eq!(due("late"), None);
        }
        // What, when and how far ahead.
        for (args, says) in [
            (serde_json::json!({"text": "", "time": "9am"}), "say what"),
            (
                serde_json::json!({"text": "x", "time": "quarter past"}),
                "the time",
            ),
            (
                serde_json::json!({"text": "x", "date": "someday", "time": "9am"}),
                "the date",
            ),
            (
                serde_json::json!({"text": "x", "date": today().add_days(40).iso(), "time": "9am"}),
                "at most 30 days",
            ),
        ] {
            let out = run(args.clone());
            assert!(!out.ok && out.text.contains(says), "{args}: {}", out.text);
        }
        // Stored as a timer: it survives a restart and fires with its words.
        let again = Tools::open(dir.path()).unwrap();
        assert!(again
            .take_due(local_ms(tomorrow, 9 * 60))
            .iter()
            .any(|t| t.label == "water the plants"));
    }

    #[test]
    fn a_search_that_finds_nothing_gives_the_words_of_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let tools = Tools::open(dir.path()).unwrap();
        let run = |tool: &str, args: serde_json::Value| tools.run(tool, &args, false);
        assert!(
            run(
                "add_note",
                serde_json::json!({"text": "Call the plumber about the boiler"})
            )
            .ok
        );
        assert!(
            run(
                "add_note",
                serde_json::json!({"text": "Boiler service is due in March"})
            )
            .ok
        );
        // Every word of the query but the stop words, anywhere in the note.
        let out = run(
            "search_notes",
            serde_json::json!({"query": "the plumber boiler"}),
        );
        assert!(out.text.contains("Call the plumber"), "{}", out.text);
        assert_eq!(tools.finds_nothing("search_notes", "the plumber", 10), None);
        let words = tools
            .finds_nothing("search_notes", "the plumbing", 10)
            .expect("nothing found");
        assert_eq!(words[0], "boiler", "{words:?}");
        assert!(words.contains(&"plumber".to_string()), "{words:?}");
        // No source configured: nothing to hear again in.
        assert_eq!(tools.finds_nothing("search_mail", "the bank", 10), None);
        assert_eq!(
            tools.finds_nothing("search_documents", "the lease", 10),
            None
        );
        assert_eq!(tools.finds_nothing("add_note", "milk", 10), None);
        // A note to delete is looked up as a search of the notes is.
        assert_eq!(tools.finds_nothing("delete_note", "the plumber", 10), None);
        assert_eq!(
            tools.finds_nothing("delete_note", "the plumbing", 10),
            Some(words)
        );
        assert!(looks_up_data("delete_note") && looks_up_data("summarize_mail"));
        assert!(!looks_up_data("add_note") && !looks_up_data("remember"));
    }

    #[test]
    fn notes_round_trip_and_deletion_needs_confirmation() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tools::open(dir.path()).unwrap();
        assert!(t.run("add_note", &json!({"text": "buy milk"}), false).ok);
        assert!(t.run("add_note", &json!({"text": "call mum"}), false).ok);
        assert!(t
            .run("search_notes", &json!({"query": "MILK"}), false)
            .text
            .contains("buy milk"));
        let refused = t.run("delete_note", &json!({"query": "milk"}), false);
        assert!(!refused.ok && refused.text.contains("nothing was deleted"));
        assert_eq!(t.read_notes().len(), 2);
        assert!(t.run("delete_note", &json!({"query": "milk"}), true).ok);
        let left: Vec<String> = t.read_notes().into_iter().map(|n| n.text).collect();
        assert_eq!(left, ["call mum"]);
        // The notes a search for the same words finds: every word, anywhere in the note.
        assert!(
            t.run(
                "add_note",
                &json!({"text": "the dentist's number is 555 0101"}),
                false
            )
            .ok
        );
        let delete = |q: &str, confirm: bool| t.run("delete_note", &json!({ "query": q }), confirm);
        let asked = delete("the dentist number", false);
        assert!(
            asked.needs_confirmation && asked.text.contains("555"),
            "{}",
            asked.text
        );
        let none = delete("the dentist's address", true);
        assert!(none.text.starts_with("No note mentions"), "{}", none.text);
        assert_eq!(t.read_notes().len(), 2);
    }

    #[test]
    fn zones_by_city_or_name() {
        let dir = tempfile::tempdir().unwrap();
        for z in [
            "Asia/Tokyo",
            "America/New_York",
            "America/Argentina/Buenos_Aires",
            "posix/Asia/Tokyo",
            "Etc/GMT+9",
        ] {
            let p = dir.path().join(z);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, b"TZif2...").unwrap();
        }
        std::fs::write(dir.path().join("Asia/notazone"), b"hello").unwrap();
        let find = |n: &str| find_zone(n, dir.path());
        assert_eq!(find("Tokyo").as_deref(), Some("Asia/Tokyo"));
        assert_eq!(find("new york").as_deref(), Some("America/New_York"));
        assert_eq!(
            find("Buenos Aires").as_deref(),
            Some("America/Argentina/Buenos_Aires")
        );
        assert_eq!(find("asia/tokyo").as_deref(), Some("Asia/Tokyo"));
        assert_eq!(find("utc").as_deref(), Some("UTC"));
        assert_eq!(find("notazone"), None);
        assert_eq!(find("../../etc/passwd"), None);
        assert_eq!(find("Atlantis"), None);
    }

    #[test]
    fn the_time_in_another_zone_comes_from_the_tz_database() {
        // tzdata is installed by `just setup`. Japan keeps no daylight saving time.
        let t = Tools::open(tempfile::tempdir().unwrap().path()).unwrap();
        let out = t.run("clock", &json!({"what": "time", "zone": "Tokyo"}), false);
        assert!(
            out.ok && out.text.contains("Asia/Tokyo") && out.text.contains("UTC+09:00"),
            "{}",
            out.text
        );
        let bad = t.run("clock", &json!({"what": "time", "zone": "Atlantis"}), false);
        assert!(
            !bad.ok && bad.text.contains("time zone of Atlantis"),
            "{}",
            bad.text
        );
    }

    #[test]
    fn calendar_add_list_free_and_import() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tools::open(dir.path()).unwrap();
        let day = today().add_days(1).iso();
        let added = t.run(
            "add_event",
            &json!({"title": "dentist", "date": "tomorrow", "time": "3pm", "minutes": 45}),
            false,
        );
        assert!(
            added.ok && added.text.contains(&day) && added.text.contains("15:00"),
            "{}",
            added.text
        );
        let clash = t.run(
            "add_event",
            &json!({"title": "call", "date": day, "time": "15:30"}),
            false,
        );
        assert!(
            clash.text.contains("overlaps with: dentist"),
            "{}",
            clash.text
        );
        let list = t.run("list_events", &json!({"date": "tomorrow"}), false);
        assert_eq!(list.text, "- 15:00–15:45 dentist\n- 15:30–16:30 call");
        let free = t.run(
            "free_time",
            &json!({"date": "tomorrow", "minutes": 60}),
            false,
        );
        assert_eq!(
            free.text,
            format!("Free on {day}: 09:00–15:00, 16:30–18:00")
        );
        assert!(
            !t.run(
                "add_event",
                &json!({"title": "x", "date": "someday", "time": "9"}),
                false
            )
            .ok
        );
        let past = t.run(
            "add_event",
            &json!({"title": "lament", "date": "2023-04-15", "time": "14:00"}),
            false,
        );
        assert!(
            !past.ok && past.text.starts_with("2023-04-15 has passed"),
            "{}",
            past.text
        );
        let ics = dir.path().join("other.ics");
        std::fs::write(&ics, "BEGIN:VCALENDAR\nBEGIN:VEVENT\nUID:ext-1\nSUMMARY:Imported\nDTSTART:20300101T100000\nDTEND:20300101T110000\nEND:VEVENT\nEND:VCALENDAR\n").unwrap();
        let imported = t.run(
            "import_calendar",
            &json!({"path": ics.display().to_string()}),
            false,
        );
        assert_eq!(
            imported.text,
            format!("Imported 1 event(s) from {}.", ics.display())
        );
        // The calendar file is a real iCalendar document other programs can read.
        let file = std::fs::read_to_string(dir.path().join("agent/calendar.ics")).unwrap();
        assert!(
            file.starts_with("BEGIN:VCALENDAR") && file.matches("BEGIN:VEVENT").count() == 3,
            "{file}"
        );
        assert_eq!(
            t.run("list_events", &json!({"date": "2030-01-01"}), false)
                .text,
            "- 10:00–11:00 Imported"
        );
    }

    #[test]
    fn timers_persist_and_fire_once() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tools::open(dir.path()).unwrap();
        assert_eq!(
            t.run("set_timer", &json!({"seconds": 90, "label": "tea"}), false)
                .text,
            "Timer \"tea\" set for 1 minute 30 seconds."
        );
        assert!(!t.run("set_timer", &json!({"seconds": 0}), false).ok);
        let forever = t.run("set_timer", &json!({"seconds": u64::MAX / 10}), false);
        assert!(
            !forever.ok && forever.text.contains("30 days"),
            "{}",
            forever.text
        );
        // A restart keeps it.
        let t2 = Tools::open(dir.path()).unwrap();
        assert!(t2.take_due(now_ms()).is_empty());
        let fired = t2.take_due(now_ms() + 91_000);
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].label, "tea");
        assert!(Tools::open(dir.path())
            .unwrap()
            .take_due(u64::MAX)
            .is_empty());
    }
}
