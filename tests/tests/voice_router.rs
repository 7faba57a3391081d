//! A voice turn with the learned router installed, in a test binary of its own: training the
//! router beside the audio tests' decoding once cost the (niced) training service its bus
//! heartbeats on CI's two cores; cargo runs test binaries one after another.

use ming_tests::voice::heard_again_before_the_llm;

const CONFIG: &str = r#"
[audio]
input = "bus"
output = "none"
"#;

/// A live turn the rules cannot act on is first heard again by tiny.en itself, guided toward
/// the agent's commands (`audio.stt_guide`, on by default): "What do I come on Friday?" becomes
/// "What do I have on Friday?", which the rules know, before the learned router, the second
/// model or the LLM is asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_the_rules_cannot_act_on_is_heard_again_guided_by_the_agents_commands_before_the_router(
) {
    let transcripts = heard_again_before_the_llm(CONFIG, "guided", true).await;
    println!(
        "first {:?}, guided {:?}",
        transcripts[0].text, transcripts[1].text
    );
}
