//! Live voice turns for the cross-process tests: speech fed to the audio service's live input
//! over the bus at real-time pace, and the readings and the first action that follow.

use std::path::Path;
use std::time::{Duration, Instant};

use ming_bus::events::EventSubscriber;
use ming_schemas::audio::{Feed, ListenState};
use ming_schemas::kinds;

use crate::{read_wav, Mingd};

/// A voice turn's reading as the audio service sends it with `skip_llm` (and `skip_router`
/// with the guide on), in the session "voice", without its transcript.
pub fn first_reading(text: &str, skip_router: bool) -> ming_schemas::agent::Message {
    ming_schemas::agent::Message {
        text: text.into(),
        session: Some("voice".into()),
        confirm: false,
        tool: None,
        arguments: None,
        voice: None,
        skip_llm: true,
        skip_router,
    }
}

/// Feeds one piece of `pcm` (16-bit mono at `rate`) to the live input (`audio.feed`).
pub async fn feed(m: &Mingd, rate: u32, pcm: &[i16]) -> Result<ListenState, ming_bus::BusError> {
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    m.client
        .request(
            "audio",
            kinds::AUDIO_FEED,
            &Feed {
                pcm: serde_bytes::ByteBuf::from(bytes),
                rate,
            },
            Duration::from_secs(5),
        )
        .await
}

/// Feeds `pcm` (at `rate`) to the live input in 20 ms pieces at real-time pace.
pub async fn feed_realtime(m: &Mingd, rate: u32, pcm: &[i16]) {
    let step = rate as usize / 50;
    let start = Instant::now();
    for (i, chunk) in pcm.chunks(step).enumerate() {
        feed(m, rate, chunk).await.expect("feed");
        let due = start + Duration::from_millis(20 * (i as u64 + 1));
        tokio::time::sleep_until(due.into()).await;
    }
}

/// Feeds the speech in `wav` live (0.2 s of silence before, 1 s after) and waits for the first
/// action (60 s at most): the action and the transcripts published before it.
pub async fn spoken_turn(
    m: &Mingd,
    events: &mut EventSubscriber,
    wav: &Path,
) -> (
    ming_schemas::agent::ActionStarted,
    Vec<ming_schemas::audio::Transcript>,
) {
    let (rate, pcm) = read_wav(wav);
    let mut turn = vec![0i16; rate as usize / 5];
    turn.extend_from_slice(&pcm);
    turn.extend(std::iter::repeat_n(0, rate as usize));
    feed_realtime(m, rate, &turn).await;
    let mut transcripts: Vec<ming_schemas::audio::Transcript> = Vec::new();
    let action = loop {
        let ev = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await
            .unwrap_or_else(|_| panic!("no action; transcripts {transcripts:?}"))
            .unwrap();
        if ev.kind == kinds::EVENT_TRANSCRIPT {
            transcripts.push(ev.body().unwrap());
        } else {
            break ev.body::<ming_schemas::agent::ActionStarted>().unwrap();
        }
    };
    (action, transcripts)
}

/// What Whisper tiny.en hears espeak-ng's fast American "What do I have on Friday?" as.
pub const FRIDAY_FIRST_HEARD: &str = "What do I come on Friday?";

/// Whisper tiny.en hears espeak-ng's fast American "What do I have on Friday?" as "What do I
/// come on Friday?" ([`FRIDAY_FIRST_HEARD`]), which the rules do not know. Fed live under
/// `config`, the turn must be heard again (its second transcript has the stage
/// `{stage}_transcript`) and the agent act on that reading with its rules: `list_events` for
/// Friday; the interaction log holds only that reading. With `router`, the seed-trained router
/// is installed first, and shown to act on the first reading when it is asked: it must not be
/// asked before the reading heard again. Returns the two transcripts.
pub async fn heard_again_before_the_llm(
    config: &str,
    stage: &str,
    router: bool,
) -> Vec<ming_schemas::audio::Transcript> {
    let m = Mingd::start(config);
    let since = if router {
        m.wait_ready(&crate::SERVICES, Duration::from_secs(60))
            .await;
        let (code, out) = m.ming(&["train", "router", "--seed-only", "--json"]);
        assert_eq!(code, 0, "{out}");
        let (code, out) = m.ming(&["ask", "--json", FRIDAY_FIRST_HEARD]);
        assert!(
            code == 0 && out.contains("\"tier\": \"router\"") && out.contains("friday"),
            "the seed router does not act on the first reading (pick another): {out}"
        );
        // The agent logs an interaction after its reply: wait for it, so that the live
        // turn's interactions are counted from after it (a CI run read the log first).
        crate::eventually(
            Duration::from_secs(10),
            "the typed first reading logged",
            || async {
                let page = m.interactions(0).await;
                page.items
                    .iter()
                    .any(|i| i.text == FRIDAY_FIRST_HEARD)
                    .then_some(page.next)
            },
        )
        .await
    } else {
        m.wait_ready(&["audio", "agent"], Duration::from_secs(60))
            .await;
        0
    };
    let dir = m.dir.path();
    let mut events = EventSubscriber::connect(
        &m.bus,
        &[kinds::EVENT_ACTION_STARTED, kinds::EVENT_TRANSCRIPT],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = m.listen("start").await;
    assert!(st.listening && st.input_ok, "{st:?}");
    let wav = crate::espeak_voice(dir, "friday.wav", "What do I have on Friday?", "en-us", 200);
    let (action, transcripts) = spoken_turn(&m, &mut events, &wav).await;
    assert_eq!(
        action.tool, "list_events",
        "{action:?} after {transcripts:?}"
    );
    assert!(action.arguments.contains("friday"), "{action:?}");
    // Two readings of the one utterance: tiny.en's, then the one heard again.
    assert_eq!(transcripts.len(), 2, "{transcripts:?}");
    assert_eq!(transcripts[0].utterance, transcripts[1].utterance);
    assert_ne!(transcripts[0].text, transcripts[1].text);
    let second = &transcripts[1];
    assert!(
        second
            .stages
            .iter()
            .any(|s| s.name == format!("{stage}_transcript")),
        "{second:?}"
    );
    // Its stages say when that hearing ran: after the speech began, its reading after its start.
    let at = |name: &str| {
        second
            .stages
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.at_ms)
    };
    let (spoke, began, ready) = (
        at("speech_started").expect("the turn's start"),
        at(&format!("{stage}_decode_started")).expect("the hearing's start"),
        at(&format!("{stage}_transcript")).expect("the hearing's reading"),
    );
    assert!(spoke < began && began <= ready, "{second:?}");
    // The first reading went to the rules only (`skip_llm`): not to the LLM, and not logged.
    // The action starts before the interaction is logged: wait for the log.
    let page = crate::eventually(
        Duration::from_secs(10),
        "the logged interaction",
        || async {
            let page = m.interactions(since).await;
            (!page.items.is_empty()).then_some(page)
        },
    )
    .await;
    assert_eq!(
        page.items
            .iter()
            .map(|i| i.text.as_str())
            .collect::<Vec<_>>(),
        [second.text.trim()],
        "{:?}",
        page.items
    );
    assert_eq!(page.items[0].tier, Some(ming_schemas::agent::Tier::Fast));
    transcripts
}
