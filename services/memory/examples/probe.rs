use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use std::num::NonZeroU32;
use std::time::Instant;

fn main() {
    let backend = LlamaBackend::init().unwrap();
    let path = std::env::var("M").unwrap();
    let model = LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default()).unwrap();
    let text = "Alice moved the blue notebook to the kitchen last Tuesday after lunch (note 12345)";
    let short = "hi";
    let mut ctxs: Vec<_> = [(2048u32, 64u32, 2), (512, 1, 2), (128, 1, 2), (2048, 64, 1)]
        .iter()
        .map(|&(n, s, th)| {
            let p = LlamaContextParams::default()
                .with_embeddings(true)
                .with_pooling_type(LlamaPoolingType::Mean)
                .with_n_ctx(NonZeroU32::new(n))
                .with_n_batch(n)
                .with_n_ubatch(n)
                .with_n_seq_max(s)
                .with_n_threads(th)
                .with_n_threads_batch(th);
            ((n, s, th), model.new_context(&backend, p).unwrap())
        })
        .collect();
    for t in [text, short] {
        let toks = model.vocab().tokenize(t.as_bytes(), true, false);
        let mut times = vec![Vec::new(); ctxs.len()];
        for _ in 0..200 {
            for (i, (_, ctx)) in ctxs.iter_mut().enumerate() {
                let mut b = LlamaBatch::new(toks.len(), 1);
                b.add_sequence(&toks, 0, false).unwrap();
                let st = Instant::now();
                ctx.clear_kv_cache();
                ctx.encode(&mut b).unwrap();
                let _ = ctx.embeddings_seq_ith(0).unwrap();
                times[i].push(st.elapsed().as_secs_f64() * 1e3);
            }
        }
        for (i, (k, _)) in ctxs.iter().enumerate() {
            times[i].sort_by(f64::total_cmp);
            println!(
                "{} tokens ctx {:?}: p50 {:.2} ms",
                toks.len(),
                k,
                times[i][100]
            );
        }
    }
}
