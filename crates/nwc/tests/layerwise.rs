//! Layer-by-layer compression of the committed tiny Llama: the same records as the whole-model
//! pipeline, evaluation of the result one block at a time, and a compression killed midway
//! (a real child process, SIGKILL) that resumes to the same bytes as an uninterrupted run,
//! steered to a measured rate or not; a steered run lands its rate within 1 %.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::tiny;
use nwc::codec_net::burn::backend::NdArray;
use nwc::format::{FileReader, ReadOptions};
use nwc::llama::{
    Calibration, LlamaCompression, Mode, NwcLlamaSource, compress_llama, compress_llama_layerwise,
    decode_llama,
};
use nwc::llm::{Hessians, Llama, layerwise_perplexity, perplexity};
use nwc::{Compressor, EcsqCodec, NwcFile, TcqCodec};

/// The calibration windows both pipelines use: 4 of 256 tokens.
fn windows(calib: &[u32]) -> Vec<Vec<u32>> {
    nwc::llm::windows(calib, 256, 4)
        .unwrap()
        .into_iter()
        .map(<[u32]>::to_vec)
        .collect()
}

#[test]
fn layerwise_perplexity_is_the_whole_models() {
    let (w, eval, _) = tiny();
    let device = Default::default();
    let model = Llama::<NdArray>::from_weights(&w, &device).unwrap();
    let whole = perplexity(&model, &eval, 256, 4, &device, |_, _| {}).unwrap();
    let mut calls = 0;
    let lw =
        layerwise_perplexity::<NdArray>(&w, &eval, 256, 4, &device, |_, _| calls += 1).unwrap();
    assert_eq!(calls, w.config.layers + 1);
    assert_eq!((lw.tokens, lw.windows), (whole.tokens, whole.windows));
    assert!(
        (lw.nll - whole.nll).abs() < 1e-6 * whole.nll,
        "{} vs {}",
        lw.nll,
        whole.nll
    );
}

/// How [`layerwise`] runs.
#[derive(Clone, Copy, PartialEq)]
enum Run {
    Nominal,
    Steered,
    /// Steered, with asymmetric calibration.
    Asymmetric,
}

/// Compresses the tiny Llama layer by layer into `out` (ECSQ at 4 bits, levels + LDLQ),
/// steered to 3.5 measured bits per parameter unless nominal.
fn layerwise(out: &Path, pause: Duration, run: Run) -> nwc::llama::LayerwiseReport {
    let (w, _, calib) = tiny();
    let codec = EcsqCodec::for_bits(4.0).unwrap();
    if run != Run::Nominal {
        return LlamaCompression::new(&Compressor::new(&codec))
            .mode(Mode::LevelsLdlq)
            .windows(&windows(&calib))
            .asymmetric((run == Run::Asymmetric).then_some(1.0))
            .run_layerwise_to_rate(&codec, 3.5, &w, out, |_| std::thread::sleep(pause))
            .unwrap();
    }
    compress_llama_layerwise(
        &Compressor::new(&codec),
        &w,
        Mode::LevelsLdlq,
        &windows(&calib),
        true,
        out,
        |_| std::thread::sleep(pause),
    )
    .unwrap()
}

#[test]
fn layerwise_records_are_the_whole_model_pipelines() {
    let (w, eval, calib) = tiny();
    let device = Default::default();
    let codec = EcsqCodec::for_bits(4.0).unwrap();
    let compressor = Compressor::new(&codec);
    let dir = tempfile::tempdir().unwrap();

    // Whole model in memory, Hessians over the same windows.
    let model = Llama::<NdArray>::from_weights(&w, &device).unwrap();
    let mut h = Hessians::new(&model);
    for win in windows(&calib) {
        h.accumulate(&model, &win, &device).unwrap();
    }
    let cal = Calibration::new(&h, &w.config).unwrap();
    let mut whole = Vec::new();
    compress_llama(
        &compressor,
        &w,
        Some(&cal),
        Mode::LevelsLdlq,
        true,
        &mut whole,
    )
    .unwrap();

    let path = dir.path().join("lw.nwc");
    let report = layerwise(&path, Duration::ZERO, Run::Nominal);
    assert_eq!(report.first_block, 0);
    assert!(!dir.path().join("lw.nwc.partial").exists());
    assert!(!dir.path().join("lw.nwc.resume").exists());
    let file = NwcFile::open(&path).unwrap();
    assert_eq!(
        file.bits_per_param().unwrap(),
        report.report.bits_per_param()
    );

    // Record for record the same bytes; only their order in the file differs.
    let a = FileReader::new(&whole, ReadOptions::default()).unwrap();
    let b = file.reader().unwrap();
    assert_eq!(a.index().len(), b.index().len());
    for e in b.index() {
        assert_eq!(
            a.record_by_name(&e.name).unwrap(),
            b.record_by_name(&e.name).unwrap(),
            "{}",
            e.name
        );
    }

    // Evaluated one block at a time straight from the file: the decoded model's perplexity.
    let src = NwcLlamaSource::open(&path, &codec, None).unwrap();
    let lw = layerwise_perplexity::<NdArray>(&src, &eval, 256, 4, &device, |_, _| {}).unwrap();
    let back = decode_llama(&file, &codec, None).unwrap();
    let m = Llama::<NdArray>::from_weights(&back, &device).unwrap();
    let p = perplexity(&m, &eval, 256, 4, &device, |_, _| {}).unwrap();
    assert!(
        (lw.nll - p.nll).abs() < 1e-6 * p.nll,
        "{} vs {}",
        lw.nll,
        p.nll
    );

    // Fine-tuning needs the whole model; calibrated modes need windows.
    for (mode, wins) in [
        (Mode::LevelsLdlqFt, windows(&calib)),
        (Mode::Levels, vec![]),
    ] {
        let err = compress_llama_layerwise(&compressor, &w, mode, &wins, true, &path, |_| {})
            .unwrap_err();
        assert!(
            matches!(err, nwc::NwcError::NeedsCalibration { .. }),
            "{err}"
        );
    }
}

/// The child process of [`a_killed_compression_resumes_to_the_same_bytes`]: compresses slowly
/// into `$NWC_KILL_TEST_OUT` until it is killed.
#[test]
#[ignore = "helper process of a_killed_compression_resumes_to_the_same_bytes"]
fn kill_test_child() {
    if let Ok(out) = std::env::var("NWC_KILL_TEST_OUT") {
        let run = match std::env::var("NWC_KILL_TEST_RUN").as_deref() {
            Ok("steered") => Run::Steered,
            Ok("asymmetric") => Run::Asymmetric,
            _ => Run::Nominal,
        };
        layerwise(Path::new(&out), Duration::from_millis(60), run);
    }
}

#[test]
fn a_killed_compression_resumes_to_the_same_bytes() {
    killed_and_resumed(Run::Nominal);
}

#[test]
fn a_killed_steered_compression_resumes_to_the_same_bytes() {
    killed_and_resumed(Run::Steered);
}

#[test]
fn a_killed_asymmetric_compression_resumes_to_the_same_bytes() {
    killed_and_resumed(Run::Asymmetric);
}

fn killed_and_resumed(run: Run) {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.nwc");
    layerwise(&reference, Duration::ZERO, run);
    let expected = std::fs::read(&reference).unwrap();

    let out = dir.path().join("killed.nwc");
    let resume = dir.path().join("killed.nwc.resume");
    let partial = dir.path().join("killed.nwc.partial");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_test_child", "--ignored", "--nocapture"])
        .env("NWC_KILL_TEST_OUT", &out)
        .env(
            "NWC_KILL_TEST_RUN",
            match run {
                Run::Nominal => "nominal",
                Run::Steered => "steered",
                Run::Asymmetric => "asymmetric",
            },
        )
        .spawn()
        .unwrap();
    // Kill it once a block is checkpointed and the next one is being written.
    let t = Instant::now();
    while !(resume.exists()
        && std::fs::metadata(&resume).unwrap().len() > 0
        && std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0)
            > std::fs::metadata(&reference).unwrap().len() / 3)
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before the kill"
        );
        assert!(
            t.elapsed() < Duration::from_secs(300),
            "no checkpoint in 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(90));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed run leaves no output");
    assert!(partial.exists() && resume.exists());

    let report = layerwise(&out, Duration::ZERO, run);
    assert!(
        report.first_block >= 1,
        "resumed from block {}",
        report.first_block
    );
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    assert!(!partial.exists() && !resume.exists());

    // A damaged checkpoint is ignored: the run starts afresh and still writes the same bytes.
    std::fs::write(&partial, b"garbage").unwrap();
    std::fs::write(
        &resume,
        b"NWCRSUM1 not really a checkpoint, damaged......................",
    )
    .unwrap();
    std::fs::remove_file(&out).unwrap();
    let report = layerwise(&out, Duration::ZERO, run);
    assert_eq!(report.first_block, 0);
    assert_eq!(std::fs::read(&out).unwrap(), expected);
}

/// `run_layerwise_to_rate` lands the file's measured rate within 1 % (side information
/// included) at 2, 3 and 4 bits, TCQ and ECSQ, levels + LDLQ, where the codec's nominal rate
/// alone lands elsewhere; the file decodes.
#[test]
fn a_layerwise_run_steered_to_a_rate_lands_within_one_percent() {
    let (w, _, calib) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let win = windows(&calib);
    let out = dir.path().join("steered.nwc");
    let measured = |out: &Path| NwcFile::open(out).unwrap().bits_per_param().unwrap();
    for bits in [2.0, 3.0] {
        let codec = TcqCodec::for_bits(bits as f32).unwrap();
        let job = |c| {
            LlamaCompression::new(c)
                .mode(Mode::LevelsLdlq)
                .windows(&win)
        };
        let compressor = Compressor::new(&codec);
        job(&compressor).run_layerwise(&w, &out, |_| {}).unwrap();
        let nominal = measured(&out);
        job(&compressor)
            .run_layerwise_to_rate(&codec, bits, &w, &out, |_| {})
            .unwrap();
        let r = measured(&out);
        eprintln!("TCQ {bits}: nominal {nominal:.4}, steered {r:.4}");
        assert!((r - bits).abs() <= 0.01 * bits, "TCQ {bits}: {r}");
        assert!(
            (nominal - bits).abs() > (r - bits).abs(),
            "TCQ {bits}: nominal {nominal}, steered {r}"
        );
        let decoded = decode_llama(&NwcFile::open(&out).unwrap(), &codec, None).unwrap();
        assert_eq!(decoded.n_params(), w.n_params());
    }
    let codec = EcsqCodec::for_bits(4.0).unwrap();
    let report = LlamaCompression::new(&Compressor::new(&codec))
        .mode(Mode::LevelsLdlq)
        .windows(&win)
        .run_layerwise_to_rate(&codec, 4.0, &w, &out, |_| {})
        .unwrap();
    let r = measured(&out);
    eprintln!("ECSQ 4: steered {r:.4}");
    assert!((r - 4.0).abs() <= 0.04, "ECSQ 4: {r}");
    assert_eq!(
        report.report.file_bytes,
        std::fs::metadata(&out).unwrap().len()
    );
}

/// Asymmetric calibration pays where errors accumulate: the tiny Llama steered to 2.5 measured
/// bits per parameter (TCQ, levels + LDLQ) decodes to a lower perplexity on its held-out text
/// with each block calibrated on the coded model's activations than on the original's, at the
/// same rate within 1 %.
#[test]
fn asymmetric_calibration_lowers_perplexity_at_low_rate() {
    let (w, eval, calib) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let win = windows(&calib);
    let device = Default::default();
    let codec = TcqCodec::for_bits(2.5).unwrap();
    let run = |alpha: Option<f64>| {
        let out = dir.path().join("a.nwc");
        LlamaCompression::new(&Compressor::new(&codec))
            .mode(Mode::LevelsLdlq)
            .windows(&win)
            .asymmetric(alpha)
            .run_layerwise_to_rate(&codec, 2.5, &w, &out, |_| {})
            .unwrap();
        let file = NwcFile::open(&out).unwrap();
        let decoded = decode_llama(&file, &codec, None).unwrap();
        let model = Llama::<NdArray>::from_weights(&decoded, &device).unwrap();
        let ppl = perplexity(&model, &eval, 256, 4, &device, |_, _| {}).unwrap();
        (file.bits_per_param().unwrap(), ppl.ppl)
    };
    let (sym_bits, sym) = run(None);
    let (asym_bits, asym) = run(Some(1.0));
    eprintln!("symmetric {sym:.4} at {sym_bits:.4} bits, asymmetric {asym:.4} at {asym_bits:.4}");
    assert!((sym_bits - 2.5).abs() <= 0.025 && (asym_bits - 2.5).abs() <= 0.025);
    assert!(asym < sym, "asymmetric {asym} vs symmetric {sym}");
    let bad = LlamaCompression::new(&Compressor::new(&codec))
        .mode(Mode::LevelsLdlq)
        .windows(&win)
        .asymmetric(Some(1.5))
        .run_layerwise(&w, &dir.path().join("b.nwc"), |_| {});
    assert!(bad.is_err(), "a blend outside 0..=1 is refused");
}
