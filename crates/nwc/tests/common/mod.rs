//! Shared by the integration tests that read real weights from `cargo xtask fetch`.

use std::path::PathBuf;

/// The path of a fetched data file; when it is missing, `None` if `NWC_SKIP_REAL_DATA` is set
/// (the test skips knowingly), else a panic that says what to fetch.
#[allow(dead_code)]
pub fn data(rel: &str) -> Option<PathBuf> {
    let p = nwc::tensor::data_dir().join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("NWC_SKIP_REAL_DATA").is_some() {
        eprintln!(
            "skipping: {} is missing and NWC_SKIP_REAL_DATA is set",
            p.display()
        );
        return None;
    }
    panic!(
        "{} is missing: run `cargo xtask fetch` (or set NWC_SKIP_REAL_DATA=1 to skip)",
        p.display()
    );
}

/// The committed byte-level Llama (`examples/assets/tiny-llama`).
#[allow(dead_code)]
pub fn tiny_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/assets/tiny-llama")
}

/// The tiny Llama, and its held-out evaluation and calibration texts as token ids.
#[allow(dead_code)]
pub fn tiny() -> (nwc::llm::LlamaWeights, Vec<u32>, Vec<u32>) {
    let w = nwc::llm::LlamaWeights::open(tiny_dir()).unwrap();
    let text = |f: &str| std::fs::read_to_string(tiny_dir().join(f)).unwrap();
    let eval = w.tokenizer.encode(&text("eval.txt")).unwrap();
    let calib = w.tokenizer.encode(&text("calibration.txt")).unwrap();
    (w, eval, calib)
}
