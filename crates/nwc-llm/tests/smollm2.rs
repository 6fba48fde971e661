//! SmolLM2-135M (GGUF) against Hugging Face transformers: tokenizer ids and logits match the
//! fixture `fixtures/smollm2_hf_reference.json`, written by `xtask/scripts/hf_reference.py`.
//!
//! Needs `cargo xtask fetch smollm2`; fails when the model is missing unless
//! `NWC_SKIP_REAL_DATA=1` is set.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use nwc_llm::{Llama, LlamaWeights};
use serde_json::Value;

fn model_path() -> Option<PathBuf> {
    let p = nwc_tensor::data_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("NWC_SKIP_REAL_DATA").is_some() {
        eprintln!("skipping: {} is missing", p.display());
        return None;
    }
    panic!(
        "{} is missing: run `cargo xtask fetch smollm2`",
        p.display()
    );
}

fn fixture() -> Value {
    let text = include_str!("fixtures/smollm2_hf_reference.json");
    serde_json::from_str(text).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn forward_pass_matches_hugging_face() {
    let Some(path) = model_path() else { return };
    let w = LlamaWeights::open(&path).unwrap();
    assert_eq!(w.config.layers, 30);
    assert_eq!((w.config.heads, w.config.kv_heads), (9, 3));
    assert!(w.config.tie_embeddings);
    let device = Default::default();
    let model = Llama::<NdArray>::from_weights(&w, &device).unwrap();
    let fx = fixture();
    let probe: Vec<usize> = fx["probe"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut worst_rel = 0.0f64;
    let mut top1_agree = 0;
    let mut positions = 0;
    for case in fx["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let ids = ids_of(&case["ids"]);
        // Our tokenizer, built from the GGUF metadata, gives Hugging Face's ids.
        assert_eq!(w.tokenizer.encode(prompt).unwrap(), ids, "{prompt:?}");
        assert_eq!(w.tokenizer.decode(&ids).unwrap(), prompt);

        let t = ids.len();
        let x: Tensor<NdArray, 2, Int> = Tensor::from_data(
            TensorData::new(
                ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
                [1, t],
            ),
            &device,
        );
        let logits = model.forward(x).into_data().to_vec::<f32>().unwrap();
        let vocab = w.config.vocab;
        for (pos, want_row) in case["probe_logits"].as_array().unwrap().iter().enumerate() {
            let row = &logits[pos * vocab..][..vocab];
            let want: Vec<f64> = want_row
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            let scale = want.iter().map(|v| v.abs()).fold(1.0, f64::max);
            for (&j, &wv) in probe.iter().zip(&want) {
                let rel = (f64::from(row[j]) - wv).abs() / scale;
                worst_rel = worst_rel.max(rel);
            }
            let top = case["top5"][pos][0].as_u64().unwrap() as usize;
            let ours = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0;
            top1_agree += usize::from(ours == top);
            positions += 1;
        }
    }
    eprintln!(
        "worst relative logit error {worst_rel:.2e}; top-1 agrees at {top1_agree}/{positions}"
    );
    assert!(
        worst_rel < 2e-3,
        "logits differ from transformers: {worst_rel}"
    );
    assert_eq!(top1_agree, positions);
}
