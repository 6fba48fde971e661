//! Qwen2.5-Coder-1.5B (GGUF, Q4_K/Q6_K) against llama.cpp: the tokenizer's ids and the logits of
//! the layer-by-layer forward pass match `fixtures/qwen2_logits.json`, which llama.cpp
//! (llama-cpp-python) computed on an F32 copy of the same GGUF (`scripts/qwen2_fixture.py`).
//!
//! Needs `cargo xtask fetch qwen2`; fails when the model is missing unless `NWC_SKIP_REAL_DATA=1`
//! is set. Holds one decoder block at a time (about 1.5 GB at the output projection).

use std::path::PathBuf;

use burn::backend::NdArray;
use nwc_llm::{Family, Layerwise, LazyWeights, ModelSource};
use serde_json::Value;

fn model_path() -> Option<PathBuf> {
    let p = nwc_tensor::data_dir().join("qwen2/qwen2.5-coder-1.5b-instruct.gguf");
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("NWC_SKIP_REAL_DATA").is_some() {
        eprintln!("skipping: {} is missing", p.display());
        return None;
    }
    panic!("{} is missing: run `cargo xtask fetch qwen2`", p.display());
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln() + m;
    row.iter().map(|&v| v as f64 - lse).collect()
}

#[test]
fn qwen2_tokens_and_logits_match_llama_cpp() {
    let Some(path) = model_path() else { return };
    let fx: Value = serde_json::from_str(include_str!("fixtures/qwen2_logits.json")).unwrap();
    let src = LazyWeights::open(&path).unwrap();
    let cfg = src.config();
    assert_eq!(cfg.family, Family::Qwen2);
    assert_eq!(
        (
            cfg.layers,
            cfg.hidden,
            cfg.intermediate,
            cfg.heads,
            cfg.kv_heads,
            cfg.vocab
        ),
        (28, 1536, 8960, 12, 2, 151_936)
    );
    assert!(!cfg.tie_embeddings, "this GGUF has its own output.weight");
    assert_eq!(cfg.rope_theta, 1e6);

    // Tokenizer: the ids llama.cpp gave for the same text.
    let tokens: Vec<u32> = fx["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let ids = src
        .tokenizer()
        .encode(fx["text"].as_str().unwrap())
        .unwrap();
    assert_eq!(ids, tokens);

    // Logits, one block at a time.
    let device = Default::default();
    let mut run = Layerwise::<NdArray>::embed(&src, &[&tokens], &device).unwrap();
    for l in 0..cfg.layers {
        let w = run.load_block(&src, l).unwrap();
        run.advance(&w, l, None);
    }
    let logits = run.logits(&src).unwrap().remove(0);
    let vocab = cfg.vocab;
    let (mut max_diff, mut scale) = (0.0f64, 0.0f64);
    for (i, p) in fx["positions"].as_array().unwrap().iter().enumerate() {
        let row = &logits[i * vocab..(i + 1) * vocab];
        for (id, want) in p["ids"]
            .as_array()
            .unwrap()
            .iter()
            .zip(p["logits"].as_array().unwrap())
        {
            let (id, want) = (id.as_u64().unwrap() as usize, want.as_f64().unwrap());
            max_diff = max_diff.max((f64::from(row[id]) - want).abs());
            scale = scale.max(want.abs());
        }
        // llama.cpp's top token is ours too, unless its margin is within the tolerance.
        let top = p["ids"][0].as_u64().unwrap() as usize;
        let ours = (0..vocab)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        let margin = p["logits"][0].as_f64().unwrap() - p["logits"][1].as_f64().unwrap();
        assert!(
            ours == top || margin < 0.05,
            "position {i}: top {ours}, llama.cpp {top}"
        );
    }
    let nll: Vec<f64> = (0..tokens.len() - 1)
        .map(|i| -log_softmax(&logits[i * vocab..(i + 1) * vocab])[tokens[i + 1] as usize])
        .collect();
    let mean = nll.iter().sum::<f64>() / nll.len() as f64;
    let want = fx["mean_nll"].as_f64().unwrap();
    eprintln!(
        "Qwen2 vs llama.cpp (F32): max |Δlogit| {max_diff:.2e} (largest logit {scale:.1}), mean NLL {mean:.6} vs {want:.6}"
    );
    assert!(
        max_diff < 2e-3 * scale,
        "max |Δlogit| {max_diff} (scale {scale})"
    );
    assert!(
        (mean - want).abs() < 1e-3 * want,
        "mean NLL {mean} vs {want}"
    );
}
