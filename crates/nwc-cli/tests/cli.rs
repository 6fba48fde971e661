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
    compresses_to_the_rate_and_round_trips(&model);
}

/// A CTranslate2 model (faster-whisper's `model.bin`, from `cargo xtask fetch whisper`) goes
/// through the command like any other input.
#[test]
fn ctranslate2_whisper_compresses_to_the_rate_and_round_trips() {
    let model = nwc::tensor::data_dir().join("whisper/model.bin");
    if !model.exists() {
        assert!(
            std::env::var_os("NWC_SKIP_REAL_DATA").is_some(),
            "{} is missing: run `cargo xtask fetch whisper` (or set NWC_SKIP_REAL_DATA=1)",
            model.display()
        );
        return;
    }
    compresses_to_the_rate_and_round_trips(&model);
}

/// `nwc compress --bits 4 --codec ecsq`, `inspect` and `decompress` on a real model: the rate
/// measured from the file is within tolerance of 4, per-tensor parameters add up, every tensor
/// comes back with its dtype and shape, lossless ones bit-exact, coded ones at the reported NMSE.
fn compresses_to_the_rate_and_round_trips(model: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("minilm.nwc");
    let dec = dir.path().join("decoded.safetensors");
    let c = nwc_json(&[
        "compress",
        s(model),
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
    let (orig, back) = (open_weights(model).unwrap(), open_weights(&dec).unwrap());
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
    // Steered to the measured rate (side information included).
    let bits = c["bits_per_param"].as_f64().unwrap();
    assert!((bits - 4.0).abs() <= 0.04, "{bits}");
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
    // The default export (F16): matrices in F16, norms in F32 as llama.cpp's converter writes
    // them (llama.cpp refuses an F16 norm).
    let gguf16 = dir.path().join("decoded16.gguf");
    nwc_json(&["decompress", s(&out), "-o", s(&gguf16), "--json"]);
    let g = nwc::tensor::GgufFile::open(&gguf16).unwrap();
    let types: Vec<(usize, nwc::tensor::GgmlType)> = g
        .tensor_infos()
        .iter()
        .map(|t| (t.shape.len(), t.ggml_type))
        .collect();
    assert!(types.iter().any(|t| t.0 == 1), "{types:?}");
    for (dims, ty) in types {
        let want = if dims == 1 {
            nwc::tensor::GgmlType::F32
        } else {
            nwc::tensor::GgmlType::F16
        };
        assert_eq!(ty, want, "{dims}-D tensor");
    }
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

/// A safetensors file holding `tensors` (name, dtype string, shape, raw little-endian bytes),
/// written byte by byte so dtypes nwc cannot read can be written too.
fn raw_safetensors(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape,
                "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let mut h = serde_json::to_vec(&Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
    v.into_iter().flat_map(f32::to_le_bytes).collect()
}

/// A deterministic weight-like matrix (the bulk that makes a rate target reachable).
fn bulk(n: usize) -> Vec<u8> {
    f32_bytes((0..n).map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 4000.0))
}

/// The bad-input matrix through the command: a missing input, every damaged `.nwc` (truncated,
/// a flipped bit, not a `.nwc` at all, wrong magic, wrong version, a damaged record, decoding
/// with the wrong checkpoint), an output that cannot be written, calibration on a non-Llama, and
/// every bad tensor (NaN, Inf, an unsupported dtype) fails with exit code 1 and a message naming
/// the file, and the tensor and byte offset where there is one, leaving no output; the
/// awkward-but-valid tensors (constant, all zero, empty, shapes not divisible by 16, 1-D, 3-D,
/// 4-D convolution kernels) compress to the rate and round-trip with their shapes and dtypes.
#[test]
fn the_bad_input_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("missing.safetensors");
    nwc_fails(
        &["compress", s(&missing), "-o", s(&d.join("x.nwc"))],
        &["missing.safetensors"],
    );
    assert!(!d.join("x.nwc").exists());
    // A good small file to damage.
    let good = d.join("good.nwc");
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
    let name_len = usize::from(u16::from_le_bytes([bytes[68], bytes[69]]));
    let first = std::str::from_utf8(&bytes[70..70 + name_len])
        .unwrap()
        .to_string();
    let damaged = |name: &str, at: usize, value: u8| {
        let p = d.join(name);
        let mut b = bytes.clone();
        b[at] = value;
        std::fs::write(&p, b).unwrap();
        p
    };
    let truncated = d.join("truncated.nwc");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_nwc = d.join("text.nwc");
    std::fs::write(&not_nwc, "hello, world").unwrap();
    let cases = [
        (truncated, vec![]),
        (
            damaged(
                "flipped.nwc",
                bytes.len() / 3,
                bytes[bytes.len() / 3] ^ 0x10,
            ),
            vec![],
        ),
        (not_nwc, vec![]),
        (damaged("magic.nwc", 0, b'X'), vec!["wrong magic"]),
        (
            damaged("version.nwc", 8, 9),
            vec!["unsupported .nwc version 9.0"],
        ),
        (
            damaged(
                "record.nwc",
                70 + name_len + 3,
                bytes[70 + name_len + 3] ^ 0x40,
            ),
            vec!["checksum mismatch", first.as_str(), "at byte 56"],
        ),
    ];
    for (bad, needles) in &cases {
        let name = bad.file_name().unwrap().to_str().unwrap();
        let out = d.join(format!("{name}.safetensors"));
        let mut all = needles.clone();
        all.push(name);
        nwc_fails(&["decompress", s(bad), "-o", s(&out)], &all);
        nwc_fails(&["inspect", s(bad)], &[name]);
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

    // Decoding a learned-codec file with another checkpoint.
    let learned = d.join("learned.nwc");
    nwc_json(&["compress", s(&tiny_llama()), "-o", s(&learned), "--json"]);
    let other = repo().join("crates/nwc-codec/assets/autoencoder.ckpt");
    let out = d.join("learned.safetensors");
    nwc_fails(
        &[
            "decompress",
            s(&learned),
            "-o",
            s(&out),
            "--checkpoint",
            s(&other),
        ],
        &["codec mismatch", "autoencoder.ckpt"],
    );
    assert!(!out.exists());
    let missing = d.join("missing.ckpt");
    nwc_fails(
        &[
            "decompress",
            s(&learned),
            "-o",
            s(&out),
            "--checkpoint",
            s(&missing),
        ],
        &["missing.ckpt"],
    );

    // Bad tensors: refused by name.
    let mut nan = bulk(256 * 64);
    nan[4 * 77..4 * 78].copy_from_slice(&f32::NAN.to_le_bytes());
    let mut inf = bulk(256 * 64);
    inf[4 * 5..4 * 6].copy_from_slice(&f32::NEG_INFINITY.to_le_bytes());
    for (file, tensor, dtype, bytes, needle) in [
        (
            "nan.safetensors",
            "block.nan.weight",
            "F32",
            nan,
            "non-finite",
        ),
        (
            "inf.safetensors",
            "block.inf.weight",
            "F32",
            inf,
            "non-finite",
        ),
        (
            "f8.safetensors",
            "block.f8.weight",
            "F8_E4M3",
            vec![0x38; 256 * 64],
            "unsupported dtype",
        ),
    ] {
        let input = d.join(file);
        raw_safetensors(&input, &[(tensor, dtype, vec![256, 64], bytes)]);
        let out = d.join(format!("{file}.nwc"));
        nwc_fails(
            &["compress", s(&input), "-o", s(&out), "--codec", "ecsq"],
            &[file, tensor, needle],
        );
        assert!(!out.exists(), "{file}: output left behind");
    }

    // Awkward but valid tensors.
    let f16 = |v: Vec<f32>| -> Vec<u8> {
        v.into_iter()
            .flat_map(|x| half::f16::from_f32(x).to_le_bytes())
            .collect()
    };
    let tensors = vec![
        ("bulk.weight", "F32", vec![512, 256], bulk(512 * 256)),
        (
            "constant.weight",
            "F32",
            vec![64, 32],
            f32_bytes(vec![0.25; 64 * 32]),
        ),
        ("zero.weight", "F16", vec![64, 32], f16(vec![0.0; 64 * 32])),
        ("empty.weight", "F32", vec![0, 32], vec![]),
        ("odd.weight", "F32", vec![33, 7], bulk(33 * 7)),
        ("norm.weight", "F32", vec![100], bulk(100)),
        ("three.weight", "F32", vec![8, 4, 5], bulk(160)),
        ("conv.weight", "F32", vec![16, 3, 3, 3], bulk(16 * 27)),
        (
            "index",
            "I64",
            vec![4],
            [1i64, 2, 3, 4]
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect(),
        ),
    ];
    let input = d.join("awkward.safetensors");
    raw_safetensors(&input, &tensors);
    let nwc_file = d.join("awkward.nwc");
    let c = nwc_json(&[
        "compress",
        s(&input),
        "-o",
        s(&nwc_file),
        "--codec",
        "ecsq",
        "--bits",
        "5",
        "--json",
    ]);
    let bits = c["bits_per_param"].as_f64().unwrap();
    let params = tensors
        .iter()
        .map(|t| t.2.iter().product::<usize>())
        .sum::<usize>();
    let file_bytes = std::fs::metadata(&nwc_file).unwrap().len();
    assert!((bits - 8.0 * file_bytes as f64 / params as f64).abs() < 1e-9);
    assert!((bits - 5.0).abs() <= 5.0 * 0.01, "{bits}");
    let dec = d.join("awkward.out.safetensors");
    nwc_json(&["decompress", s(&nwc_file), "-o", s(&dec), "--json"]);
    let (orig, back) = (open_weights(&input).unwrap(), open_weights(&dec).unwrap());
    for (name, ..) in &tensors {
        let (a, b) = (orig.tensor(name).unwrap(), back.tensor(name).unwrap());
        assert_eq!((a.dtype(), a.shape()), (b.dtype(), b.shape()), "{name}");
        if !a.dtype().is_float() || a.shape().len() == 1 || a.numel() == 0 {
            assert_eq!(a.bytes(), b.bytes(), "{name} is stored losslessly");
            continue;
        }
        let (x, y) = (a.to_f32().unwrap(), b.to_f32().unwrap());
        let err: f64 = x
            .iter()
            .zip(&y)
            .map(|(p, q)| f64::from(p - q).powi(2))
            .sum();
        let sig: f64 = x.iter().map(|p| f64::from(*p).powi(2)).sum();
        assert!(err <= 0.01 * sig, "{name}: nmse {}", err / sig.max(1e-30));
    }
}

/// Encoding is deterministic: the same command gives the same bytes with 1 and 2 threads and on
/// a second run (the learned codec with calibration, levels and LDLQ on the tiny Llama; ECSQ
/// tuned to a measured rate on a generic file).
#[test]
fn encoding_is_deterministic_across_threads_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = tiny_llama();
    let calib = model.join("eval.txt");
    let generic = d.join("generic.safetensors");
    raw_safetensors(
        &generic,
        &[
            ("a.weight", "F32", vec![256, 128], bulk(256 * 128)),
            ("b.weight", "F32", vec![96, 48], bulk(96 * 48)),
        ],
    );
    let jobs: [(&str, Vec<&str>); 2] = [
        (
            "llama",
            vec![
                "compress",
                s(&model),
                "--calib",
                s(&calib),
                "--mode",
                "ldlq",
                "--ctx",
                "128",
                "--calib-windows",
                "4",
            ],
        ),
        (
            "generic",
            vec!["compress", s(&generic), "--codec", "ecsq", "--bits", "4.5"],
        ),
    ];
    for (job, args) in jobs {
        let mut outputs = Vec::new();
        for (run, threads) in [(0, "1"), (1, "2"), (2, "2")] {
            let out = d.join(format!("{job}-{run}.nwc"));
            let mut a = args.clone();
            a.extend(["-o", s(&out)]);
            let o = Command::new(env!("CARGO_BIN_EXE_nwc"))
                .args(&a)
                .env("RAYON_NUM_THREADS", threads)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            outputs.push(std::fs::read(&out).unwrap());
        }
        assert!(outputs[0] == outputs[1], "{job}: 1 and 2 threads differ");
        assert!(outputs[1] == outputs[2], "{job}: two runs differ");
    }
}

/// `--mode ft` runs the whole pipeline (levels, LDLQ, block-wise fine-tuning) on the tiny Llama:
/// the fine-tuned file has exactly the LDLQ file's size (fine-tuning changes only stored column
/// scales and norms), decodes, and evaluates close to it.
#[test]
fn fine_tuning_mode_compresses_the_tiny_llama() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_llama();
    let calib = model.join("calibration.txt");
    let eval = model.join("eval.txt");
    let mut ppl = Vec::new();
    let mut sizes = Vec::new();
    for mode in ["ldlq", "ft"] {
        let out = dir.path().join(format!("{mode}.nwc"));
        let c = nwc_json(&[
            "compress",
            s(&model),
            "-o",
            s(&out),
            "--calib",
            s(&calib),
            "--mode",
            mode,
            "--ctx",
            "128",
            "--calib-windows",
            "8",
            // `--mode ft` codes at the nominal rate.
            "--nominal",
            "--json",
        ]);
        assert!(
            c["mode"].as_str().unwrap().starts_with("levels+LDLQ"),
            "{c}"
        );
        sizes.push(std::fs::metadata(&out).unwrap().len());
        assert!(!dir.path().join(format!("{mode}.nwc.partial")).exists());
        let e = nwc_json(&[
            "eval",
            s(&out),
            "--text",
            s(&eval),
            "--ctx",
            "128",
            "--windows",
            "16",
            "--json",
        ]);
        ppl.push(e["perplexity"].as_f64().unwrap());
    }
    assert_eq!(
        sizes[0], sizes[1],
        "fine-tuning must not change the file size"
    );
    assert!((ppl[1] / ppl[0] - 1.0).abs() < 0.05, "{ppl:?}");
    // Fine-tuning needs calibration.
    nwc_fails(
        &[
            "compress",
            s(&model),
            "-o",
            s(&dir.path().join("x.nwc")),
            "--mode",
            "ft",
        ],
        &["--mode Ft needs --calib TEXT"],
    );
}

/// A compression spread over machines: the tiny Llama (4 blocks) in 3 shards, calibrated with
/// levels and LDLQ, merged in a shuffled order, is byte for byte the one-machine file; a missing
/// shard, a shard given twice, a shard of another job and a bad `--shard` are clear errors.
#[test]
fn three_shards_merge_into_the_one_machine_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let model = tiny_llama();
    let calib = model.join("calibration.txt");
    let job = |extra: &[&str], out: &Path| {
        let mut a = vec![
            "compress",
            s(&model),
            "--calib",
            s(&calib),
            "--mode",
            "ldlq",
            "--codec",
            "tcq",
            "--ctx",
            "128",
            "--calib-windows",
            "4",
            "-o",
            s(out),
        ];
        a.extend_from_slice(extra);
        nwc_json(&[a.as_slice(), &["--json"]].concat());
    };
    // Shards code at the nominal rate; so does the one-machine job they must match.
    let whole = d.join("whole.nwc");
    job(&["--nominal"], &whole);
    let shards: Vec<PathBuf> = (0..3).map(|k| d.join(format!("part-{k}.nwc"))).collect();
    for (k, p) in shards.iter().enumerate() {
        job(&["--shard", &format!("{k}/3")], p);
    }
    let merged = d.join("merged.nwc");
    let out = nwc(&[
        "merge",
        s(&shards[2]),
        s(&shards[0]),
        s(&shards[1]),
        "-o",
        s(&merged),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (
        std::fs::read(&whole).unwrap(),
        std::fs::read(&merged).unwrap(),
    );
    assert_eq!(a.len(), b.len(), "merged file size");
    assert!(a == b, "the merged file differs from the one-machine file");
    // Every shard holds some of the blocks; the middle one none of the metadata or the head.
    let inspect = nwc_json(&["inspect", s(&shards[1]), "--json"]);
    let text = inspect.to_string();
    assert!(text.contains("model.layers.1.") && !text.contains("model.layers.0."));
    assert!(!text.contains("nwc.llama.config.json") && !text.contains("lm_head"));

    let bad = d.join("bad.nwc");
    nwc_fails(
        &["merge", s(&shards[0]), s(&shards[2]), "-o", s(&bad)],
        &["shard 1 of 3 missing"],
    );
    nwc_fails(
        &[
            "merge",
            s(&shards[0]),
            s(&shards[1]),
            s(&shards[1]),
            s(&shards[2]),
            "-o",
            s(&bad),
        ],
        &["shard 1 of 3 given twice", "part-1.nwc"],
    );
    nwc_fails(
        &["merge", s(&shards[0]), s(&whole), "-o", s(&bad)],
        &["whole.nwc", "not a shard file"],
    );
    // A shard of another job (another rate) does not join this one.
    let other = d.join("other-1.nwc");
    job(&["--shard", "1/3", "--bits", "3"], &other);
    nwc_fails(
        &[
            "merge",
            s(&shards[0]),
            s(&other),
            s(&shards[2]),
            "-o",
            s(&bad),
        ],
        &["other-1.nwc", "of job"],
    );
    assert!(!bad.exists(), "a failed merge leaves no output");
    let out = nwc(&["compress", s(&model), "--shard", "3/3", "-o", s(&bad)]);
    assert_eq!(out.status.code(), Some(2), "a bad --shard is a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards are numbered 0..3"));
}
