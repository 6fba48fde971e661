//! GGML's K-quants and Q8_0 against the values gguf-py (llama.cpp's own Python package) computes
//! for the same bytes: real blocks of the Qwen2.5-Coder-1.5B GGUF and random blocks of every type
//! (`tests/fixtures/kquants.json`, written by `scripts/kquant_fixture.py`). And, when the model is
//! fetched (`cargo xtask fetch qwen2`), the whole file read through `open_weights`.

use nwc_tensor::{GgmlType, dequantize, open_weights};

fn ty(name: &str) -> GgmlType {
    match name {
        "Q4_K" => GgmlType::Q4_K,
        "Q5_K" => GgmlType::Q5_K,
        "Q6_K" => GgmlType::Q6_K,
        "Q8_0" => GgmlType::Q8_0,
        other => panic!("fixture type {other}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn cases() -> Vec<serde_json::Value> {
    let text = include_str!("fixtures/kquants.json");
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

#[test]
fn k_quants_match_gguf_py_bit_for_bit() {
    let cases = cases();
    let mut types: Vec<&str> = cases.iter().map(|c| c["type"].as_str().unwrap()).collect();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types, ["Q4_K", "Q5_K", "Q6_K", "Q8_0"]);
    for c in &cases {
        let name = c["type"].as_str().unwrap();
        let bytes = hex(c["bytes"].as_str().unwrap());
        let want: Vec<f32> = c["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let got = dequantize(ty(name), &bytes);
        assert_eq!(got.len(), want.len(), "{name} {}", c["tensor"]);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{name} ({}) value {i}: nwc {g}, gguf-py {w}",
                c["tensor"]
            );
        }
    }
}

#[test]
fn the_qwen2_gguf_reads_whole() {
    let path = nwc_tensor::data_dir().join("qwen2/qwen2.5-coder-1.5b-instruct.gguf");
    if !path.exists() {
        assert!(
            std::env::var_os("NWC_SKIP_REAL_DATA").is_some(),
            "{} is missing: run `cargo xtask fetch qwen2`",
            path.display()
        );
        return;
    }
    let src = open_weights(&path).unwrap();
    let names = src.names();
    assert_eq!(
        names.iter().filter(|n| n.ends_with("attn_q.bias")).count(),
        28
    );
    // The fixture's real blocks are the first values of these tensors.
    for c in cases().iter().filter(|c| c["tensor"] != "random blocks") {
        let t = src.tensor(c["tensor"].as_str().unwrap()).unwrap();
        let v = t.to_f32().unwrap();
        let want = c["values"].as_array().unwrap();
        for (g, w) in v.iter().zip(want) {
            assert_eq!(*g, w.as_f64().unwrap() as f32);
        }
    }
    let q = src.tensor("blk.0.attn_q.weight").unwrap();
    assert_eq!(q.shape(), &[1536, 1536]);
    let k = src.tensor("blk.0.attn_k.weight").unwrap();
    assert_eq!(k.shape(), &[256, 1536]);
    let up = src.tensor("blk.27.ffn_up.weight").unwrap();
    assert_eq!(up.shape(), &[8960, 1536]);
    assert!(up.to_f32().unwrap().iter().all(|x| x.is_finite()));
}
