//! The `nwc` command as a user runs it: compress, inspect, decompress and eval on real MiniLM
//! weights (from `cargo xtask fetch minilm`; set `NWC_SKIP_REAL_DATA=1` to skip them knowingly)
//! and on the committed tiny Llama, checking the measured rate and the round trip; and bad
//! input, which must fail with exit code 1, a message naming the file, and no output left.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nwc::tensor::open_weights;
use serde_json::Value;

fn nwc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nwc"))
        .args(args)
        .output()
        .expect("run nwc")
}

/// Runs `nwc args…`, expects success, returns stdout parsed as JSON.
fn nwc_json(args: &[&str]) -> Value {
    let out = nwc(args);
    assert!(
        out.status.success(),
        "nwc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "nwc {args:?}: stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Runs `nwc args…`, expects exit code 1 and a message on stderr containing every `needle`.
fn nwc_fails(args: &[&str], needles: &[&str]) {
    let out = nwc(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "nwc {args:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "nwc {args:?}: {n:?} not in {err}");
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny_llama() -> PathBuf {
    repo().join("examples/assets/tiny-llama")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// MiniLM, or `None` when the data is knowingly skipped.
fn minilm() -> Option<PathBuf> {
    let p = nwc::tensor::data_dir().join("minilm/model.safetensors");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("NWC_SKIP_REAL_DATA").is_some(),
        "{} is missing: run `cargo xtask fetch minilm` (or set NWC_SKIP_REAL_DATA=1)",
        p.display()
    );
    None
}

#[test]
fn help_lists_the_commands() {
    let out = nwc(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["compress", "decompress", "inspect", "eval"] {
        assert!(help.contains(cmd), "{cmd} missing from: {help}");
    }
    // A usage error is exit code 2.
    assert_eq!(nwc(&["compress"]).status.code(), Some(2));
}

#[test]
fn minilm_compresses_to_the_rate_and_round_trips() {
    let Some(model) = minilm() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("minilm.nwc");
    let dec = dir.path().join("decoded.safetensors");
    let c = nwc_json(&[
        "compress",
        s(&model),
        "-o",
        s(&out),
        "--bits",
        "4",
        "--codec",
        "ecsq",
        "--json",
    ]);
    let bits = c["bits_per_param"].as_f64().unwrap();
    // Measured from the file: bytes × 8 / parameters.
    let file_bytes = std::fs::metadata(&out).unwrap().len();
    let params = c["params"].as_u64().unwrap();
    assert!((bits - 8.0 * file_bytes as f64 / params as f64).abs() < 1e-9);
    assert!((bits - 4.0).abs() <= 4.0 * nwc::RATE_TOLERANCE, "{bits}");
    let i = nwc_json(&["inspect", s(&out), "--json"]);
    assert_eq!(i["bits_per_param"].as_f64().unwrap(), bits);
    assert_eq!(i["codec"], "Ecsq");
    let tensors = i["tensors"].as_array().unwrap();
    let per_tensor: u64 = tensors.iter().map(|t| t["params"].as_u64().unwrap()).sum();
    assert_eq!(per_tensor, params);
    nwc_json(&["decompress", s(&out), "-o", s(&dec), "--json"]);
    let (orig, back) = (open_weights(&model).unwrap(), open_weights(&dec).unwrap());
    let mut names = orig.names();
    names.sort();
    let mut back_names = back.names();
    back_names.sort();
    assert_eq!(names, back_names);
    let (mut err, mut sig) = (0.0f64, 0.0f64);
    for (name, t) in tensors.iter().map(|t| (t["name"].as_str().unwrap(), t)) {
        let (a, b) = (orig.tensor(name).unwrap(), back.tensor(name).unwrap());
        assert_eq!((a.dtype(), a.shape()), (b.dtype(), b.shape()), "{name}");
        if t["kind"] == "coded" {
            for (x, y) in a.to_f32().unwrap().iter().zip(b.to_f32().unwrap()) {
                err += f64::from(x - y).powi(2);
                sig += f64::from(*x).powi(2);
            }
        } else {
            assert_eq!(a.bytes(), b.bytes(), "{name} is lossless");
        }
    }
    let nmse = err / sig;
    assert!((nmse - c["coded_nmse"].as_f64().unwrap()).abs() < 1e-6 * nmse.max(1e-12) + 1e-12);
    assert!(nmse < 0.01, "{nmse}");
}

#[test]
fn tiny_llama_compresses_decodes_and_evaluates_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.nwc");
    let hf = dir.path().join("decoded");
    let (calib, eval) = (
        tiny_llama().join("calibration.txt"),
        tiny_llama().join("eval.txt"),
    );
    let c = nwc_json(&[
        "compress",
        s(&tiny_llama()),
        "-o",
        s(&out),
        "--bits",
        "4",
        "--calib",
        s(&calib),
        "--ctx",
        "128",
        "--calib-windows",
        "8",
        "--json",
    ]);
    assert_eq!(c["kind"], "llama");
    assert_eq!(c["mode"], "levels+LDLQ");
    let bits = c["bits_per_param"].as_f64().unwrap();
    assert!((3.5..5.5).contains(&bits), "{bits}");
    let i = nwc_json(&["inspect", s(&out), "--json"]);
    assert_eq!(i["llama"], true);
    assert_eq!(i["codec"], "NwcTrellis");
    nwc_json(&[
        "decompress",
        s(&out),
        "-o",
        s(&hf),
        "--dtype",
        "f32",
        "--json",
    ]);
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(hf.join(f).exists(), "{f}");
    }
    let ppl = |model: &Path| {
        nwc_json(&[
            "eval",
            s(model),
            "--text",
            s(&eval),
            "--ctx",
            "128",
            "--windows",
            "8",
            "--json",
        ])["perplexity"]
            .as_f64()
            .unwrap()
    };
    let gguf = dir.path().join("decoded.gguf");
    nwc_json(&[
        "decompress",
        s(&out),
        "-o",
        s(&gguf),
        "--dtype",
        "f32",
        "--json",
    ]);
    let from_gguf = ppl(&gguf);
    let (reference, coded, decoded) = (ppl(&tiny_llama()), ppl(&out), ppl(&hf));
    // The GGUF export read back by nwc's GGUF reader (Q/K rows permuted and unpermuted).
    assert!(
        (coded - from_gguf).abs() < 1e-6 * coded,
        "{coded} vs {from_gguf}"
    );
    // The .nwc evaluated directly and its f32 export are the same model.
    assert!(
        (coded - decoded).abs() < 1e-6 * coded,
        "{coded} vs {decoded}"
    );
    assert!(coded < 1.1 * reference, "{coded} vs {reference}");
}

#[test]
fn bad_input_fails_cleanly_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("missing.safetensors");
    nwc_fails(
        &["compress", s(&missing), "-o", s(&d.join("x.nwc"))],
        &["missing.safetensors"],
    );
    assert!(!d.join("x.nwc").exists());
    // A good small file to damage.
    let good = d.join("tiny.nwc");
    nwc_json(&[
        "compress",
        s(&tiny_llama()),
        "-o",
        s(&good),
        "--codec",
        "ecsq",
        "--json",
    ]);
    let bytes = std::fs::read(&good).unwrap();
    let truncated = d.join("truncated.nwc");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let flipped = d.join("flipped.nwc");
    let mut f = bytes.clone();
    f[bytes.len() / 3] ^= 0x10;
    std::fs::write(&flipped, &f).unwrap();
    let not_nwc = d.join("text.nwc");
    std::fs::write(&not_nwc, "hello, world").unwrap();
    for bad in [&truncated, &flipped, &not_nwc] {
        let name = bad.file_name().unwrap().to_str().unwrap();
        let out = d.join(format!("{name}.safetensors"));
        nwc_fails(&["inspect", s(bad)], &[name]);
        nwc_fails(&["decompress", s(bad), "-o", s(&out)], &[name]);
        assert!(!out.exists(), "{name}: output left behind");
        let partial = d.join(format!("{name}.safetensors.partial"));
        assert!(!partial.exists(), "{name}: partial output left behind");
    }
    // An output that cannot be written.
    nwc_fails(
        &[
            "decompress",
            s(&good),
            "-o",
            s(&d.join("no/such/dir/out.safetensors")),
        ],
        &["cannot write", "out.safetensors"],
    );
    // Calibration on a model that is not a Llama.
    if let Some(m) = minilm() {
        nwc_fails(
            &[
                "compress",
                s(&m),
                "-o",
                s(&d.join("m.nwc")),
                "--calib",
                s(&tiny_llama().join("eval.txt")),
            ],
            &["calibration needs a Llama-family model"],
        );
    }
}
