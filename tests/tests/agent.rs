//! The agent through mingd and the CLI: typed commands end in the right tool with a real effect
//! in the data dir; a destructive request without confirmation does nothing; with inference
//! down the fast path still acts and a request needing the LLM fails clearly within its
//! deadline, and recovers when inference is back.

use std::time::{Duration, Instant};

use ming_bus::events::EventSubscriber;
use ming_schemas::agent::TimerFired;
use ming_schemas::kinds;
use ming_tests::{Mingd, SERVICES};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_commands_act_on_the_device() {
    let m = Mingd::start("");
    m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    let notes = m.dir.path().join("data/agent/notes.jsonl");
    let (code, out) = m.ming(&["ask", "Take a note: buy oat milk"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("Noted: buy oat milk") && out.contains("via Fast"),
        "{out}"
    );
    assert!(std::fs::read_to_string(&notes)
        .unwrap()
        .contains("buy oat milk"));
    let (code, out) = m.ming(&["ask", "--json", "search my notes for milk"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("\"tool\": \"search_notes\"") && out.contains("buy oat milk"),
        "{out}"
    );
    let (code, out) = m.ming(&["ask", "what time is it?"]);
    assert!(
        code == 0 && out.starts_with("It is ") && out.contains(':'),
        "{out}"
    );
    // Deleting without confirmation does nothing; with it, the note is gone.
    let (code, out) = m.ming(&["ask", "delete the note about milk"]);
    assert_ne!(code, 0);
    assert!(out.contains("nothing was deleted"), "{out}");
    assert!(std::fs::read_to_string(&notes)
        .unwrap()
        .contains("buy oat milk"));
    let (code, out) = m.ming(&["ask", "--yes", "delete the note about milk"]);
    assert_eq!(code, 0, "{out}");
    assert!(!std::fs::read_to_string(&notes)
        .unwrap()
        .contains("buy oat milk"));
    // A timer is stored, then fires, and the audio service says its reminder.
    let mut events = EventSubscriber::connect(&m.bus, &[kinds::EVENT_TIMER_FIRED]).unwrap();
    let mut speaking = EventSubscriber::connect(&m.bus, &[kinds::EVENT_SPEAKING]).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, out) = m.ming(&["ask", "set a timer for 1 second called tea"]);
    assert_eq!(code, 0, "{out}");
    let ev = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the timer never fired")
        .unwrap();
    let fired: TimerFired = ev.body().unwrap();
    assert_eq!(fired.label, "tea");
    let mut said = Vec::new();
    while said.last().map(String::as_str) != Some("finished") {
        let ev = tokio::time::timeout(Duration::from_secs(10), speaking.next())
            .await
            .unwrap_or_else(|_| panic!("the audio service said nothing after {said:?}"))
            .unwrap();
        said.push(ev.body::<ming_schemas::audio::Speaking>().unwrap().state);
    }
    assert_eq!(said, ["started", "finished"]);
    let line = m
        .wait_log_line(
            "agent",
            &["reminder spoken", "Reminder: tea."],
            Duration::from_secs(5),
        )
        .await;
    assert!(line.contains("interrupted=false"), "{line}");
    // Every utterance is in the interaction log, with its timeline.
    let (code, out) = m.ming(&["trace"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("set_timer")
            && out.contains("decided (fast tier)")
            && out.contains("action started")
            && out.contains("replied"),
        "{out}"
    );
    let page = m.interactions(0).await;
    let outcomes: Vec<&str> = page.items.iter().map(|i| i.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        ["done", "done", "done", "unconfirmed", "done", "done"],
        "{:?}",
        page.items
    );
    assert_eq!(page.next, 7);
    let rest = m.interactions(5).await;
    assert_eq!(rest.items.iter().map(|i| i.seq).collect::<Vec<_>>(), [5, 6]);
    // A reminder at a clock time: stored with the timers (so it survives a restart), due at
    // 9:00 tomorrow, local time.
    let (code, out) = m.ming(&["ask", "remind me to water the plants tomorrow at 9am"]);
    assert_eq!(code, 0, "{out}");
    let tomorrow = std::process::Command::new("date")
        .args(["-d", "tomorrow", "+%A %-d %B"])
        .output()
        .unwrap();
    let tomorrow = String::from_utf8_lossy(&tomorrow.stdout).trim().to_string();
    assert!(
        out.contains(&format!(
            "Reminder set for {tomorrow} at 09:00: water the plants."
        )) && out.contains("set_reminder")
            && out.contains("via Fast"),
        "{out}"
    );
    let timers = std::fs::read_to_string(m.dir.path().join("data/agent/timers.json")).unwrap();
    assert!(
        timers.contains("\"label\":\"water the plants\""),
        "{timers}"
    );
    // A day and no time: the agent asks, and the session's next message answers.
    let (code, out) = m.ming(&["ask", "--session", "r", "remind me tomorrow to call mum"]);
    assert!(code == 5 && out.contains("At what time?"), "{code} {out}");
    let (code, out) = m.ming(&["ask", "--session", "r", "at 5pm"]);
    assert!(
        code == 0 && out.contains(&format!("Reminder set for {tomorrow} at 17:00: call mum.")),
        "{code} {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_inference_the_fast_path_acts_and_the_rest_fails_clearly() {
    let m = Mingd::start("");
    m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    let (code, out) = m.ming(&["stop", "inference"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = m.ming(&["ask", "Take a note: inference is down"]);
    assert_eq!(code, 0, "{out}");
    let started = Instant::now();
    let (code, out) = m.ming(&[
        "ask",
        "--timeout-ms",
        "1500",
        "Tell me a joke about penguins",
    ]);
    // The agent's own answer: the broker knows inference is stopped.
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("I could not understand that without the local model, which failed:")
            && (out.contains("ServiceUnavailable") || out.contains("Timeout")),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // A message that may skip the LLM (the audio service's first reading of a voice turn,
    // when it can hear the turn again): one the rules know acts without inference; one only
    // the LLM could understand is answered with `needs_llm` (inference is down: nothing waited
    // for it), with nothing done and nothing logged.
    let logged = m.interactions(0).await.items.len();
    let ask = |text: &str| send(&m, ming_tests::voice::first_reading(text, false));
    let r = ask("Tell me the time.").await.expect("the rules act");
    assert!(
        !r.needs_llm && r.action.as_ref().is_some_and(|a| a.tool == "clock"),
        "{r:?}"
    );
    let r = ask("Tell me a joke about penguins")
        .await
        .expect("answered");
    assert!(r.needs_llm && r.action.is_none(), "{r:?}");
    assert_eq!(
        m.interactions(0).await.items.len(),
        logged + 1,
        "only the clock was logged"
    );
    // Back: the LLM tier answers again (with some tool, or `reply`; or with arguments the
    // user did not give, which the agent names and does not act on — grounding.rs).
    let (code, out) = m.ming(&["start", "inference"]);
    assert_eq!(code, 0, "{out}");
    m.wait_ready(&["inference"], Duration::from_secs(20)).await;
    let (code, out) = m.ming(&["ask", "--json", "Tell me a joke about penguins"]);
    assert!(
        out.contains("\"tier\": \"llm\"") || out.contains("not sure what you want"),
        "{code} {out}"
    );
}

/// A caller that gives up (Ctrl-C on `ming ask`; a barge-in on a voice turn, see the audio
/// test) cancels the agent's request; the agent stops understanding it, which cancels the local
/// model's generation on the bus, acts on nothing, and logs the utterance as cancelled. It
/// serves the next request as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_request_and_the_local_models_generation() {
    let m = Mingd::start("");
    m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    let ask = Mingd::command(&ming_tests::bin("ming"), &m.config)
        .args([
            "ask",
            "Write me a long poem about the sea, the stars and the old lighthouse keeper",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted once the model works on it (its first call computes the whole prompt:
    // seconds here), however long the CLI and the agent took to get there. (The agent's own
    // prefill of the prompt's beginning, at start, is no request of the user's.)
    m.wait_log_line(
        "inference",
        &["generation started", "prefill_only=false"],
        Duration::from_secs(60),
    )
    .await;
    ming_tests::signal(ask.id(), libc::SIGINT);
    let out = tokio::task::spawn_blocking(move || ask.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("Cancelled"), "{text}");
    let i: ming_schemas::agent::Interaction = ming_tests::eventually(
        Duration::from_secs(10),
        "the cancelled utterance in the log",
        || async {
            m.client
                .request::<_, ming_schemas::agent::Interaction>(
                    "agent",
                    kinds::AGENT_TRACE,
                    &ming_schemas::agent::TraceRequest { utterance: 0 },
                    Duration::from_secs(2),
                )
                .await
                .ok()
                .filter(|i| i.outcome == "cancelled")
        },
    )
    .await;
    assert!(i.tool.is_none(), "{i:?}");
    assert!(
        i.stages.iter().any(|s| s.name == "cancelled by the caller"),
        "{i:?}"
    );
    // The model's generation was stopped, not left to run to its end.
    m.wait_log_line(
        "inference",
        &["generation ended", "Cancelled"],
        Duration::from_secs(60),
    )
    .await;
    let (code, out) = m.ming(&["ask", "what time is it?"]);
    assert!(code == 0 && out.starts_with("It is "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_shows_actions_as_they_happen_and_confirms_deletions() {
    use std::io::Write;
    use std::process::Stdio;
    let m = Mingd::start("");
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let mut chat = Mingd::command(&ming_tests::bin("ming"), &m.config)
        .arg("chat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin
        .take()
        .unwrap()
        .write_all(
            b"take a note: buy bread\ndelete the note about bread\nyes\nlist my notes\nquit\n",
        )
        .unwrap();
    let out = tokio::task::spawn_blocking(move || chat.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ming> Noted: buy bread"), "{text}");
    assert!(
        text.contains("add_note {\"text\":\"buy bread\"} (Fast)"),
        "{text}"
    );
    assert!(
        text.contains("nothing was deleted") && text.contains("(answer \"yes\" to confirm)"),
        "{text}"
    );
    assert!(text.contains("ming> Deleted 1 note(s)"), "{text}");
    assert!(text.contains("ming> You have no notes."), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calendar_commands_write_a_real_icalendar_file() {
    let m = Mingd::start("");
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let (code, out) = m.ming(&["ask", "Add dentist appointment tomorrow at 3pm"]);
    assert_eq!(code, 0, "{out}");
    let ics = std::fs::read_to_string(m.dir.path().join("data/agent/calendar.ics")).unwrap();
    assert!(
        ics.contains("BEGIN:VEVENT")
            && ics.contains("SUMMARY:dentist appointment")
            && ics.contains("T150000"),
        "{ics}"
    );
    let (code, out) = m.ming(&["ask", "what's on my calendar tomorrow?"]);
    assert!(
        code == 0 && out.contains("15:00–16:00 dentist appointment"),
        "{out}"
    );
    let (code, out) = m.ming(&["ask", "When am I free tomorrow for an hour?"]);
    assert!(
        code == 0 && out.contains("09:00–15:00, 16:00–18:00"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_and_mail_are_searched_read_only() {
    let files = tempfile::tempdir().unwrap();
    let docs = files.path().join("Documents");
    std::fs::create_dir_all(docs.join("trips")).unwrap();
    std::fs::write(
        docs.join("trips/scotland.md"),
        "# Scotland\nBook the ferry to Mull by Friday\n",
    )
    .unwrap();
    let mail = files.path().join("inbox.mbox");
    std::fs::write(&mail, "From alice@example.org Mon Nov 23 10:00:00 2026\nFrom: Alice <alice@example.org>\nSubject: Dinner\n\nThai place at 8?\n").unwrap();
    let before = std::fs::read(&mail).unwrap();
    let m = Mingd::start(&format!(
        "[agent]\ndocuments_dir = \"{}\"\nmail = \"{}\"\n",
        docs.display(),
        mail.display()
    ));
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let (code, out) = m.ming(&["ask", "search my documents for ferry"]);
    assert!(
        code == 0 && out.contains("trips/scotland.md: Book the ferry to Mull by Friday"),
        "{out}"
    );
    let (code, out) = m.ming(&["ask", "any emails from Alice?"]);
    assert!(
        code == 0 && out.contains("1 message(s)") && out.contains("Dinner: Thai place at 8?"),
        "{out}"
    );
    assert_eq!(
        std::fs::read(&mail).unwrap(),
        before,
        "mail must be read-only"
    );
}

/// A voice turn's mail search (`skip_llm`, as the audio service sends a first reading) that
/// would find nothing is not run: the agent answers `hear_again`, the pattern of the same
/// command with its query in the mailbox's words, which holds "… from the bank." and not what
/// was heard. One that finds something runs; so does the same search typed, finding nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_mail_search_that_finds_nothing_is_to_be_heard_again_in_the_mailboxs_words() {
    let files = tempfile::tempdir().unwrap();
    let mail = ming_tests::write_maildir(files.path());
    let m = Mingd::start(&format!("[agent]\nmail = \"{}\"\n", mail.display()));
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let ask = |text: &str, voice: bool| {
        let msg = if voice {
            voice_reading(7, text, None)
        } else {
            ming_schemas::agent::Message {
                voice: None,
                skip_llm: false,
                skip_router: false,
                ..voice_reading(7, text, None)
            }
        };
        let sent = send(&m, msg);
        async move { sent.await.expect("answered") }
    };
    let r = ask("Look for messages from the mic.", true).await;
    assert!(r.action.is_none() && !r.needs_llm, "{r:?}");
    assert_eq!(r.hear_again.len(), 1, "{r:?}");
    let re = regex::Regex::new(&r.hear_again[0]).expect("a pattern");
    assert!(re.is_match(" Look for messages from the bank."), "{re}");
    assert!(re.is_match("Look for messages from Anna Moreau"), "{re}");
    assert!(!re.is_match("Look for messages from the mic."), "{re}");
    assert!(!re.is_match("Find emails about the bank."), "{re}");
    let r = ask("Look for messages from the bank.", true).await;
    let a = r.action.as_ref().expect("searched");
    assert!(
        a.tool == "search_mail" && a.result.starts_with("2 message(s)") && r.hear_again.is_empty(),
        "{r:?}"
    );
    // The answer says what the first hearing searched for: a swap is never silent.
    assert!(
        r.text
            .starts_with("Nothing mentions \u{201c}the mic\u{201d}")
            && r.text.contains("\u{201c}the bank\u{201d}")
            && r.text.contains("2 message(s)"),
        "{r:?}"
    );
    let r = ask("Look for messages from the mic.", false).await;
    let a = r.action.as_ref().expect("searched as typed");
    assert!(a.ok && a.result.starts_with("No message mentions"), "{r:?}");
    assert!(r.text.starts_with("No message mentions"), "{r:?}");
    // Nothing was logged for the turn heard again.
    let texts: Vec<String> = m
        .interactions(0)
        .await
        .items
        .into_iter()
        .map(|i| i.text)
        .collect();
    assert_eq!(
        texts,
        [
            "Look for messages from the bank.",
            "Look for messages from the mic."
        ]
    );
}

/// A spoken note to delete that matches no note is heard again in the notes' own words, as a
/// spoken search is; the reading that comes back still only asks before it deletes, and the
/// question says what the first hearing named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_note_to_delete_that_matches_none_is_to_be_heard_again_in_the_notes_words() {
    let m = Mingd::start("");
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let notes = m.dir.path().join("data/agent/notes.jsonl");
    let typed = ming_schemas::agent::Message {
        voice: None,
        skip_llm: false,
        skip_router: false,
        ..voice_reading(
            30,
            "Take a note: call the dentist on Monday about the crown.",
            None,
        )
    };
    let r = send(&m, typed).await.expect("answered");
    assert!(r.action.as_ref().is_some_and(|a| a.ok), "{r:?}");
    let r = send(
        &m,
        voice_reading(31, "Delete the note about the dentures.", None),
    )
    .await
    .expect("answered");
    assert!(r.action.is_none() && !r.needs_llm, "{r:?}");
    assert_eq!(r.hear_again.len(), 1, "{r:?}");
    let re = regex::Regex::new(&r.hear_again[0]).expect("a pattern");
    assert!(re.is_match("Delete the note about the dentist."), "{re}");
    assert!(!re.is_match("Delete the note about the dentures."), "{re}");
    assert!(!re.is_match("Search my notes for the dentist."), "{re}");
    let r = send(
        &m,
        voice_reading(31, "Delete the note about the dentist.", None),
    )
    .await
    .expect("answered");
    let a = r.action.as_ref().expect("looked up");
    assert!(a.tool == "delete_note" && !a.ok, "{r:?}");
    assert!(
        r.text
            .starts_with("Nothing mentions \u{201c}the dentures\u{201d}")
            && r.text.contains("\u{201c}the dentist\u{201d}")
            && r.text.contains("call the dentist on Monday")
            && r.text.contains("nothing was deleted"),
        "{r:?}"
    );
    let kept = std::fs::read_to_string(&notes).unwrap();
    assert!(kept.contains("call the dentist on Monday"), "{kept}");
}

/// A reading heard again (guided, or the second model's) keeps a note only of words the turn
/// was first heard with: from a first reading that was no command ("No time for them to stay on
/// board."), the guide's "Note that I'm going to discover." is refused — the decoder's words on
/// the way to a command, not the user's — and the audio service goes on hearing the turn again;
/// so is base's "Note down the gun distal number." after "No time for them to discover.". A
/// reading that keeps the heard words is noted, and the same words typed are noted whatever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_heard_again_keeps_a_note_only_of_words_first_heard() {
    let m = Mingd::start("");
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let notes = m.dir.path().join("data/agent/notes.jsonl");
    let guided = Some("guided_transcript");
    let hear = |utterance: u64, text: &str, stage: Option<&str>| {
        send(&m, voice_reading(utterance, text, stage))
    };
    first_heard_not_understood(&m, 21, "No time for them to stay on board.").await;
    let r = hear(21, "Note that I'm going to discover.", guided).await;
    assert!(unsure(&r, "not sure of the words"), "{r:?}");
    assert!(!notes.exists(), "nothing noted");
    first_heard_not_understood(&m, 22, "Right now, let the car need new brakes.").await;
    let r = hear(22, "Write down the car needs new brakes.", guided)
        .await
        .expect("noted");
    let a = r.action.expect("noted");
    assert!(
        a.tool == "add_note" && a.ok && a.arguments.contains("needs new brakes"),
        "{a:?}"
    );
    // The second model's reading, the same way: a note of words the two models heard
    // differently is refused, one that keeps the first reading's words is noted.
    let second = Some("second_transcript");
    first_heard_not_understood(&m, 23, "No time for them to discover.").await;
    let r = hear(23, "Note down the gun distal number.", second).await;
    assert!(unsure(&r, "not sure of the words"), "{r:?}");
    first_heard_not_understood(&m, 24, "dot com call the bank tomorrow.").await;
    let r = hear(24, "Jot down call the bank tomorrow.", second)
        .await
        .expect("noted");
    assert!(r
        .action
        .is_some_and(|a| a.ok && a.arguments.contains("call the bank")));
    let typed = ming_schemas::agent::Message {
        voice: None,
        skip_llm: false,
        skip_router: false,
        ..voice_reading(21, "Note that I'm going to discover.", None)
    };
    let r = send(&m, typed).await.expect("noted");
    assert!(r.action.is_some_and(|a| a.ok), "typed");
    let kept = std::fs::read_to_string(&notes).unwrap();
    assert_eq!(kept.lines().count(), 3, "{kept}");
}

/// A voice turn heard again as words far from its first reading (under a quarter kept) is not
/// guessed at by the local model: the answer asks to say it again at once (`unsure`, stage
/// "hearings disagree") — in the voice bench the model answered such a hearing ~4 s after the
/// speech with sentences about "Shabu-Rament". One that keeps more of the first reading goes
/// to the model as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_turn_heard_two_ways_far_apart_is_not_guessed_at() {
    let m = Mingd::start("");
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let since = m.interactions(0).await.next;
    let heard_again = |utterance: u64, text: &str| ming_schemas::agent::Message {
        skip_llm: false,
        ..voice_reading(utterance, text, Some("second_transcript"))
    };
    let ask = |msg| send_within(&m, msg, Duration::from_secs(60));
    first_heard_not_understood(&m, 41, "Can you lament its appointment on Friday night?").await;
    first_heard_not_understood(&m, 42, "being leading to hours about the laundry.").await;
    let r = ask(heard_again(
        41,
        "Shabu-Rament is the ultimate on-flying item.",
    ))
    .await;
    assert!(unsure(&r, "please say it again"), "{r:?}");
    // Whatever the local model makes of it (or fails to, still loading), it was asked.
    let _ = ask(heard_again(42, "think me into hours and out the laundry.")).await;
    let page = m.interactions(since).await;
    let logged = |text: &str| page.items.iter().find(|i| i.text == text);
    let disagree =
        |text: &str| logged(text).map(|i| i.stages.iter().any(|s| s.name == "hearings disagree"));
    let unheard = "Shabu-Rament is the ultimate on-flying item.";
    assert_eq!(disagree(unheard), Some(true), "{page:?}");
    assert_eq!(
        disagree("think me into hours and out the laundry."),
        Some(false),
        "{page:?}"
    );
    let unheard = logged(unheard).expect("logged");
    assert_eq!(unheard.outcome, "unsure");
    assert!(unheard.tier.is_none(), "no tier decided: {unheard:?}");
}

/// A voice turn's reading `text` as the audio service sends it (`skip_llm`), of utterance
/// `utterance`, with the stage of a hearing again when it is one.
fn voice_reading(utterance: u64, text: &str, stage: Option<&str>) -> ming_schemas::agent::Message {
    ming_schemas::agent::Message {
        text: text.into(),
        session: None,
        confirm: false,
        tool: None,
        arguments: None,
        voice: Some(ming_schemas::audio::Transcript {
            utterance,
            text: text.into(),
            is_final: true,
            start_sample: 0,
            end_sample: 32_000,
            audio_start_ms: 0.0,
            audio_end_ms: 2000.0,
            end_reason: "stopped".into(),
            decode_ms: 100.0,
            audio_ctx: 200,
            confidence: 0.5,
            stages: stage
                .map(|name| ming_schemas::audio::Stage {
                    name: name.into(),
                    at_ms: 0.0,
                })
                .into_iter()
                .collect(),
        }),
        skip_llm: true,
        skip_router: false,
    }
}

/// The documents folder is indexed into memory (at start, and when asked: only what changed),
/// so a search finds a passage by meaning; mail is summarised by the local model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_are_indexed_into_memory_and_mail_is_summarised() {
    let files = tempfile::tempdir().unwrap();
    let docs = files.path().join("Documents");
    std::fs::create_dir_all(docs.join("home")).unwrap();
    std::fs::write(
        docs.join("trips.md"),
        "# Scotland\nBook the ferry to Mull by Friday\n",
    )
    .unwrap();
    let boiler = docs.join("home/contract.txt");
    std::fs::write(
        &boiler,
        "Heating contract\n\nThe boiler warranty with Calor Heating runs until March 2028. \
         If the radiators stay cold, call their engineers on 0123 456 789.\n",
    )
    .unwrap();
    let mail = files.path().join("inbox.mbox");
    // Five older messages, then Alice's: enough text that the local model cannot summarise it
    // within a second (several hundred prompt tokens).
    let mut mbox = String::new();
    for (i, (who, subject)) in [
        ("Bob <bob@example.org>", "Boiler service"),
        ("Carol <carol@example.org>", "Book club"),
        ("Dan <dan@example.org>", "Invoice 2231"),
        ("Erin <erin@example.org>", "Garden plans"),
        ("Frank <frank@example.org>", "Train times"),
    ]
    .into_iter()
    .enumerate()
    {
        let addr = who.split(['<', '>']).nth(1).unwrap_or_default();
        mbox.push_str(&format!(
            "From {addr} Mon Nov 2{i} 09:00:00 2026\nFrom: {who}\nSubject: {subject}\n\n\
             About {subject}: I wrote down what we said on the phone so that neither of us \
             forgets it. Nothing is urgent, but please read it before the weekend and tell me \
             if a date or a time is wrong, or if anyone else should be told about it.\n\n"
        ));
    }
    mbox.push_str("From alice@example.org Mon Nov 23 10:00:00 2026\nFrom: Alice <alice@example.org>\nSubject: Dinner on Friday\n\nShall we go to the Thai place at 8? Please book a table for four.\n");
    std::fs::write(&mail, mbox).unwrap();
    let m = Mingd::start(&format!(
        "[agent]\ndocuments_dir = \"{}\"\nmail = \"{}\"\n",
        docs.display(),
        mail.display()
    ));
    m.wait_ready(&SERVICES, Duration::from_secs(20)).await;
    // Indexed at start (memory holds the passages, tagged with their file).
    ming_tests::eventually(
        Duration::from_secs(30),
        "the documents indexed at start",
        || async {
            let (code, out) = m.ming(&["memory", "search", "boiler warranty"]);
            (code == 0 && out.contains("From home/contract.txt")).then_some(())
        },
    )
    .await;
    // No file has these words; the passage that answers it is found by meaning.
    let (code, out) = m.ming(&["ask", "search my documents for who fixes the heater"]);
    assert_eq!(code, 0, "{out}");
    println!("{out}");
    assert!(
        out.contains("No document mentions")
            && out.contains("Related passages:")
            && out.contains("From home/contract.txt"),
        "{out}"
    );
    // Asked again: nothing changed. A changed file is redone, a deleted one forgotten.
    let (code, out) = m.ming(&["ask", "index my documents"]);
    assert!(
        code == 0 && out.contains("Indexed 0 document(s)") && out.contains("2 unchanged"),
        "{out}"
    );
    std::fs::write(
        &boiler,
        "Heating contract\n\nThe boiler warranty now runs with Northern Gas until May 2030.\n",
    )
    .unwrap();
    std::fs::remove_file(docs.join("trips.md")).unwrap();
    let (code, out) = m.ming(&["ask", "index my documents"]);
    assert!(
        code == 0 && out.contains("Indexed 1 document(s)") && out.contains("1 removed"),
        "{out}"
    );
    let (code, out) = m.ming(&["memory", "search", "boiler warranty"]);
    assert!(
        code == 0 && out.contains("Northern Gas") && !out.contains("Calor"),
        "{out}"
    );
    let (code, out) = m.ming(&["memory", "search", "ferry to Mull"]);
    assert!(code == 0 && !out.contains("trips.md"), "{out}");

    // Mail, for a caller that waits a second: the messages are listed, and why there is no
    // summary — the agent's own answer, before the caller's deadline (it keeps time back from
    // the model's request for it), not the caller's bare timeout.
    let (code, out) = m.ming(&["ask", "--timeout-ms", "1000", "summarize my mail"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("6 message(s); the latest 6:")
            && out.contains("Alice <alice@example.org> — Dinner on Friday")
            && out.contains("(No summary: the local model did not finish in time"),
        "{out}"
    );
    // Given the time, the local model writes the summary under the list of messages.
    let (code, out) = m.ming(&["ask", "summarize my mail"]);
    assert_eq!(code, 0, "{out}");
    println!("{out}");
    assert!(
        out.contains("6 message(s); the latest 6:")
            && out.contains("Alice <alice@example.org> — Dinner on Friday")
            && out.contains("Bob <bob@example.org> — Boiler service")
            && out.contains("Summary: "),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_by_config_runs_in_the_agents_sandbox() {
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A tool that echoes its arguments and tries the network.
    let script = dir.path().join("probe-tool.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nargs=$(cat)\nif {} {addr} >/dev/null 2>&1; then net=reached; else net=blocked; fi\nprintf '{{\"ok\": true, \"text\": \"got %s, network %s\"}}' \"$args\" \"$net\"\n",
            ming_tests::bin("ming-netprobe").display()
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let m = Mingd::start(&format!(
        "[agent.tools.probe]\ndescription = \"test\"\nparameters = '{{\"type\": \"object\", \"required\": [\"x\"]}}'\ncommand = [\"{}\"]\n",
        script.display()
    ));
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let (code, out) = m.ming(&[
        "ask",
        "--json",
        "--tool",
        "probe",
        "--args",
        "{\"x\": 7}",
        "probe the network",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"tier\": \"direct\""), "{out}");
    // It ran, got its arguments, and could not reach the listener on 127.0.0.1.
    assert!(out.contains("got {\\\"x\\\":7}, network blocked"), "{out}");
    // Missing a required argument: refused before running.
    let (code, out) = m.ming(&["ask", "--tool", "probe", "--args", "{}", "probe"]);
    assert!(
        code != 0 && out.contains("the argument `x` is required"),
        "{out}"
    );
    // A built-in tool's schema holds every tier: a timer of 10^15 seconds is refused, not set.
    let (code, out) = m.ming(&[
        "ask",
        "--tool",
        "set_timer",
        "--args",
        "{\"seconds\": 1000000000000000, \"label\": \"forever\"}",
        "a long timer",
    ]);
    assert!(
        code != 0 && out.contains("`seconds` must be at most 2592000"),
        "{out}"
    );
    assert!(!m.dir.path().join("data/agent/timers.json").exists());
    drop(listener);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_remembers_recalls_and_forgets_with_confirmation() {
    let m = Mingd::start("");
    m.wait_ready(&["agent", "memory"], Duration::from_secs(30))
        .await;
    let (code, out) = m.ming(&["ask", "Remember that my sister Anna lives in Lyon."]);
    assert!(
        code == 0 && out.contains("remember") && out.contains("via Fast"),
        "{out}"
    );
    let (code, out) = m.ming(&["ask", "remember I prefer aisle seats on trains"]);
    assert_eq!(code, 0, "{out}");
    // Kept in the memory service, with the kind the phrasing implies.
    let (code, out) = m.ming(&["memory", "search", "seat on the train", "-k", "1"]);
    assert!(
        code == 0 && out.contains("preference") && out.contains("aisle seats"),
        "{out}"
    );
    let (code, out) = m.ming(&["ask", "What do you know about my sister?"]);
    assert!(code == 0 && out.contains("Anna lives in Lyon"), "{out}");
    // Forgetting asks first; confirmed, it is gone.
    let (code, out) = m.ming(&["ask", "forget that my sister lives in Lyon"]);
    assert!(code != 0 && out.contains("nothing was forgotten"), "{out}");
    let (code, out) = m.ming(&["ask", "--yes", "forget that my sister lives in Lyon"]);
    assert!(code == 0 && out.contains("Forgotten"), "{out}");
    let (code, out) = m.ming(&["ask", "What do you know about my sister?"]);
    assert!(code == 0 && !out.contains("Lyon"), "{out}");
    // A completed task becomes an episode in memory, in the background.
    let (code, out) = m.ming(&["ask", "Take a note: the plumber comes on Thursday"]);
    assert_eq!(code, 0, "{out}");
    ming_tests::eventually(Duration::from_secs(5), "the episode in memory", || async {
        let (_, out) = m.ming(&["memory", "search", "plumber", "--only-kind", "episode"]);
        out.contains("Take a note: the plumber comes on Thursday")
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_are_answered_by_the_next_message_of_the_conversation() {
    let m = Mingd::start("");
    m.wait_ready(&["agent"], Duration::from_secs(20)).await;
    let ask = |text: &str| m.ming(&["ask", "--session", "s1", text]);
    // A timer with no length: the agent asks, and the answer completes the command.
    let (code, out) = m.ming(&["ask", "--session", "s1", "--json", "Set a timer."]);
    assert!(
        code == 5 && out.contains("For how long?") && out.contains("\"awaiting\": \"seconds\""),
        "{out}"
    );
    let (code, out) = ask("Five minutes.");
    assert!(
        code == 0
            && out.contains("set_timer")
            && out.contains("\"seconds\":300")
            && out.contains("via Fast"),
        "{out}"
    );
    // Without a conversation there is no one to answer: the question says so.
    let (code, out) = m.ming(&["ask", "take a note"]);
    assert!(
        code == 5 && out.contains("say the whole command again"),
        "{out}"
    );
    let (code, out) = ask("take a note");
    assert!(
        code == 5 && out.contains("What should the note say?"),
        "{out}"
    );
    let (code, out) = ask("buy bread");
    assert!(code == 0 && out.contains("Noted: buy bread"), "{out}");
    // A deletion waits for a yes in the same conversation; a no leaves the note.
    let notes = m.dir.path().join("data/agent/notes.jsonl");
    let (code, out) = ask("delete the note about bread");
    assert!(
        code == 5 && out.contains("nothing was deleted") && out.contains("yes or no"),
        "{out}"
    );
    let (code, out) = ask("No.");
    assert!(code == 5 && out.contains("left it as it is"), "{out}");
    assert!(std::fs::read_to_string(&notes)
        .unwrap()
        .contains("buy bread"));
    let (_, out) = ask("delete the note about bread");
    assert!(out.contains("yes or no"), "{out}");
    let (code, out) = ask("Yes, please.");
    assert!(
        code == 0 && out.contains("Deleted 1 note(s)") && out.contains("delete_note"),
        "{out}"
    );
    assert!(!std::fs::read_to_string(&notes)
        .unwrap()
        .contains("buy bread"));
    let (_, out) = ask("list my notes");
    assert!(out.contains("no notes"), "{out}");
    let page = m.interactions(0).await;
    let outcomes: Vec<&str> = page.items.iter().map(|i| i.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "asked",
            "done",
            "asked",
            "asked",
            "done",
            "unconfirmed",
            "dropped",
            "unconfirmed",
            "done",
            "done"
        ],
        "{:?}",
        page.items
    );
}

/// Sends `msg` to the agent over the bus, as the audio service does, with a 5 s deadline.
async fn send(
    m: &Mingd,
    msg: ming_schemas::agent::Message,
) -> Result<ming_schemas::agent::Reply, ming_bus::BusError> {
    send_within(m, msg, Duration::from_secs(5)).await
}

async fn send_within(
    m: &Mingd,
    msg: ming_schemas::agent::Message,
    wait: Duration,
) -> Result<ming_schemas::agent::Reply, ming_bus::BusError> {
    m.client
        .request("agent", kinds::AGENT_MESSAGE, &msg, wait)
        .await
}

/// Sends a voice turn's first reading and checks that the tiers without the LLM could not act
/// on it (the agent keeps it as what the turn was first heard as).
async fn first_heard_not_understood(m: &Mingd, utterance: u64, text: &str) {
    let r = send(m, voice_reading(utterance, text, None))
        .await
        .expect("answered");
    assert!(r.needs_llm && r.action.is_none(), "{text}: {r:?}");
}

/// Whether the agent refused a reading as unsure, saying `why`.
fn unsure(r: &Result<ming_schemas::agent::Reply, ming_bus::BusError>, why: &str) -> bool {
    matches!(r, Err(ming_bus::BusError::Remote { code: ming_schemas::ErrorCode::BadRequest, message, .. }) if message.contains(why))
}
