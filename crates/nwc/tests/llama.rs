//! The LLM pipeline on real models and text: Hessian accumulation on real activations, the
//! Hessian cache, LDLQ against no feedback on a real SmolLM2 layer at equal rate, and a whole
//! Llama through `.nwc` and back (and out to a Hugging Face directory).
//!
//! The committed byte-level Llama (`examples/assets/tiny-llama`) needs nothing installed; the
//! SmolLM2 test needs `cargo xtask fetch smollm2 canterbury` and fails without it unless
//! `NWC_SKIP_REAL_DATA=1` is set.

mod common;

use std::path::PathBuf;

use common::tiny;
use nwc::codec_net::burn::backend::NdArray;
use nwc::codec_net::burn::tensor::Tensor as BTensor;
use nwc::format::Writer;
use nwc::format::{FileReader, Payload, ReadOptions};
use nwc::ldl::{BlockLdl, HessianAccumulator, damp, proxy_loss};
use nwc::llama::{Calibration, Mode, compress_llama, decode_llama};
use nwc::llm::{FtConfig, Hessians, Llama, LlamaWeights, Proj, Site, finetune_blocks, perplexity};
use nwc::tensor::DType;
use nwc::{Compressor, Decompressor, EcsqCodec, NwcFile};

/// `n` windows of 128 tokens of the calibration text.
fn ft_windows(calib: &[u32], n: usize) -> Vec<Vec<u32>> {
    nwc::llm::windows(calib, 128, n)
        .unwrap()
        .into_iter()
        .map(<[u32]>::to_vec)
        .collect()
}

fn quick_ft() -> FtConfig {
    FtConfig {
        max_steps: 12,
        eval_every: 4,
        ..FtConfig::default()
    }
}

/// The model on the CPU backend and its Hessians from 4 calibration windows of 256 tokens.
fn calibrated(w: &LlamaWeights, calib: &[u32]) -> (Llama<NdArray>, Hessians) {
    let device = Default::default();
    let reference = Llama::<NdArray>::from_weights(w, &device).unwrap();
    let h =
        Hessians::collect(&reference, calib, 256, 4, None, [0; 32], &device, |_, _| {}).unwrap();
    (reference, h)
}

#[test]
fn hessians_match_a_direct_sum_over_real_activations() {
    let (w, _, calib) = tiny();
    let device = Default::default();
    let model = Llama::<NdArray>::from_weights(&w, &device).unwrap();
    let window = &calib[..128];
    let mut h = Hessians::new(&model);
    h.accumulate(&model, window, &device).unwrap();

    // The same activations captured directly and summed in f64 by nalgebra.
    let site = Site::MlpDown(1);
    let mut direct = HessianAccumulator::new(site.dim(&w.config));
    let ids = BTensor::<NdArray, 2, _>::from_data(
        nwc::codec_net::burn::tensor::TensorData::new(
            window.iter().map(|&i| i64::from(i)).collect::<Vec<_>>(),
            [1, window.len()],
        ),
        &device,
    );
    let mut cap = |s: Site, x: BTensor<NdArray, 2>| {
        if s == site {
            let rows = x.dims()[0];
            direct
                .add(&x.into_data().to_vec::<f32>().unwrap(), rows)
                .unwrap();
        }
    };
    let _ = model.forward_capture(ids, Some(&mut cap));
    let a = h.hessian(site).unwrap();
    let b = direct.hessian().unwrap();
    let rel = (&a - &b).norm() / b.norm();
    assert!(rel < 1e-5, "relative difference {rel}");
    assert_eq!(h.site(site).unwrap().count(), 128);
    // Every site saw every token, and E[x xᵀ] is symmetric with a positive diagonal; its damped
    // form factors as L·D·Lᵀ (block 128) and reconstructs.
    for s in Site::all(&w.config) {
        let m = h.hessian(s).unwrap();
        assert!((&m - m.transpose()).norm() <= 1e-6 * m.norm());
        assert!(m.diagonal().iter().all(|&d| d > 0.0), "{}", s.key());
        let d = damp(&m, nwc::ldl::DAMPING).unwrap().h;
        let ldl = BlockLdl::new(&d, nwc::ldl::LDL_BLOCK).unwrap();
        let rel = (ldl.reconstruct() - &d).norm() / d.norm();
        assert!(rel < 1e-10, "{}: L·D·Lᵀ off by {rel}", s.key());
    }
}

#[test]
fn hessian_cache_resumes_and_refuses_damage() {
    let (w, _, calib) = tiny();
    let device = Default::default();
    let model = Llama::<NdArray>::from_weights(&w, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("h.bin");
    let fp = [7u8; 32];
    // Two windows, then resume to four: equal to four in one go.
    let two =
        Hessians::collect(&model, &calib, 64, 2, Some(&cache), fp, &device, |_, _| {}).unwrap();
    assert_eq!(two.windows(), 2);
    let mut calls = 0;
    let four = Hessians::collect(&model, &calib, 64, 4, Some(&cache), fp, &device, |_, _| {
        calls += 1
    })
    .unwrap();
    assert_eq!((four.windows(), calls), (4, 2), "resumed after two windows");
    let direct = Hessians::collect(&model, &calib, 64, 4, None, fp, &device, |_, _| {}).unwrap();
    let (a, b) = (
        four.hessian(Site::Head).unwrap(),
        direct.hessian(Site::Head).unwrap(),
    );
    assert!((&a - &b).norm() <= 1e-5 * b.norm());
    // Asking for fewer windows than the cache holds gives exactly those windows, not the cache.
    let again =
        Hessians::collect(&model, &calib, 64, 2, Some(&cache), fp, &device, |_, _| {}).unwrap();
    assert_eq!(again.windows(), 2);
    let (a, b) = (
        again.hessian(Site::Head).unwrap(),
        two.hessian(Site::Head).unwrap(),
    );
    assert!((&a - &b).norm() <= 1e-5 * b.norm());
    // Another fingerprint, or one flipped byte, is refused.
    assert!(Hessians::load(&cache, [8u8; 32]).is_err());
    let mut bytes = std::fs::read(&cache).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&cache, &bytes).unwrap();
    assert!(Hessians::load(&cache, fp).is_err());
    assert!(Hessians::load(&cache.with_extension("missing"), fp).is_err());
}

#[test]
fn a_llama_round_trips_through_nwc_and_hugging_face() {
    let (w, eval, calib) = tiny();
    let device = Default::default();
    let (reference, h) = calibrated(&w, &calib);
    let before = perplexity(&reference, &eval, 256, 4, &device, |_, _| {}).unwrap();
    let cal = Calibration::new(&h, &w.config)
        .unwrap()
        .with_finetune(ft_windows(&calib, 6), quick_ft());
    let codec = EcsqCodec::for_bits(6.0).unwrap();
    let compressor = Compressor::new(&codec);
    let dir = tempfile::tempdir().unwrap();
    for mode in Mode::ALL {
        let path = dir.path().join("m.nwc");
        let report = compress_llama(
            &compressor,
            &w,
            Some(&cal),
            mode,
            true,
            std::fs::File::create(&path).unwrap(),
        )
        .unwrap();
        let file = NwcFile::open(&path).unwrap();
        assert_eq!(file.bits_per_param().unwrap(), report.bits_per_param());
        assert!(report.bits_per_param() < 9.0, "{}", report.bits_per_param());
        let back = decode_llama(&file, &codec, None).unwrap();
        assert_eq!(back.config, w.config);
        assert_eq!(
            back.tokenizer.encode("Alice").unwrap(),
            w.tokenizer.encode("Alice").unwrap()
        );
        let model = Llama::<NdArray>::from_weights(&back, &device).unwrap();
        let after = perplexity(&model, &eval, 256, 4, &device, |_, _| {}).unwrap();
        // At ~6 bits the model is nearly unchanged.
        assert!(
            after.ppl < before.ppl * 1.03,
            "{}: {} → {}",
            mode.label(),
            before.ppl,
            after.ppl
        );

        if mode == Mode::LevelsLdlq {
            // Out to a Hugging Face directory and back in: identical logits.
            let hf = dir.path().join("hf");
            back.save_hf(&hf, DType::F32).unwrap();
            let again = LlamaWeights::open(&hf).unwrap();
            let m2 = Llama::<NdArray>::from_weights(&again, &device).unwrap();
            let p2 = perplexity(&m2, &eval, 256, 4, &device, |_, _| {}).unwrap();
            assert_eq!(p2.ppl, after.ppl);
            assert!(hf.join("config.json").exists() && hf.join("tokenizer.json").exists());
        }
    }
    // Calibrated modes need calibration; a file without a config is not a Llama.
    let sink = Vec::new();
    assert!(matches!(
        compress_llama(&compressor, &w, None, Mode::Levels, false, sink),
        Err(nwc::NwcError::NeedsCalibration { .. })
    ));
    let path = dir.path().join("not-llama.nwc");
    let mut wr = Writer::new(std::fs::File::create(&path).unwrap(), compressor.header()).unwrap();
    let (rec, _) = compressor
        .compress_tensor(&w.tensors[nwc::llm::EMBED], None)
        .unwrap();
    wr.write(&rec).unwrap();
    wr.finish().unwrap();
    let err = decode_llama(&NwcFile::open(&path).unwrap(), &codec, None).unwrap_err();
    assert!(matches!(err, nwc::NwcError::NotLlama(_)), "{err}");
    assert!(err.to_string().contains("not a Llama"), "{err}");
}

fn smollm2() -> Option<(PathBuf, PathBuf)> {
    let d = nwc::tensor::data_dir();
    let (m, t) = (
        d.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        d.join("canterbury/lcet10.txt"),
    );
    if m.exists() && t.exists() {
        return Some((m, t));
    }
    if std::env::var_os("NWC_SKIP_REAL_DATA").is_some() {
        eprintln!("skipping: SmolLM2 or the Canterbury texts are missing");
        return None;
    }
    panic!("run `cargo xtask fetch smollm2 canterbury` (or set NWC_SKIP_REAL_DATA=1)");
}

#[test]
fn ldlq_lowers_the_output_error_of_a_real_layer_at_equal_rate() {
    let Some((model_path, text)) = smollm2() else {
        return;
    };
    let w = LlamaWeights::open(&model_path).unwrap();
    let device = Default::default();
    let model = Llama::<NdArray>::from_weights(&w, &device).unwrap();
    let ids = w
        .tokenizer
        .encode(&String::from_utf8_lossy(&std::fs::read(text).unwrap()))
        .unwrap();
    let mut h = Hessians::new(&model);
    for win in ids.chunks_exact(256).take(2) {
        h.accumulate(&model, win, &device).unwrap();
    }
    let layer = 5;
    let codec = EcsqCodec::for_bits(3.0).unwrap();
    let compressor = Compressor::new(&codec);
    for proj in [Proj::Q, Proj::Down] {
        let site = proj.site(layer);
        let t = &w.tensors[&proj.name(layer)];
        let (rows, cols) = t.matrix_dims().unwrap();
        let hd = damp(&h.hessian(site).unwrap(), nwc::ldl::DAMPING)
            .unwrap()
            .h;
        let ldl = BlockLdl::new(&hd, nwc::ldl::LDL_BLOCK).unwrap();
        let imp: Vec<f32> = hd.diagonal().iter().map(|&v| v as f32).collect();
        let size = |r: &nwc::format::Record| {
            let mut wr = Writer::new(Vec::new(), compressor.header()).unwrap();
            wr.write(r).unwrap()
        };
        let dec = Decompressor::new(&codec);
        let orig = t.to_f32().unwrap();
        let (plain, _) = compressor.compress_tensor(t, Some(&imp)).unwrap();
        let (fed, _) = compressor
            .compress_tensor_ldlq(t, Some(&imp), &ldl)
            .unwrap();
        let loss = |r| {
            let v = dec.decompress_record(r).unwrap().to_f32().unwrap();
            proxy_loss(&orig, &v, rows, cols, &hd)
        };
        let (lp, lf) = (loss(&plain), loss(&fed));
        let (bp, bf) = (size(&plain) as f64, size(&fed) as f64);
        eprintln!(
            "{}: tr(ΔW H ΔWᵀ) {lp:.4e} plain vs {lf:.4e} LDLQ ({:.3}×); bytes {bp} vs {bf} ({:.4}×)",
            proj.name(layer),
            lf / lp,
            bf / bp
        );
        assert!(
            lf < 0.9 * lp,
            "LDLQ did not lower the proxy loss: {lf} vs {lp}"
        );
        assert!(
            (bf / bp - 1.0).abs() < 0.03,
            "rates differ: {bf} vs {bp} bytes"
        );
    }
}

/// Block-wise fine-tuning at a low rate, where there is error to recover: every block's held-out
/// output error falls, the file keeps its size and its symbols (only scales and norms change),
/// and perplexity does not get worse.
#[test]
fn finetuning_recovers_block_outputs_without_changing_the_rate() {
    use nwc::codec_net::burn::backend::Autodiff;
    let (w, eval, calib) = tiny();
    let device = Default::default();
    let (reference, h) = calibrated(&w, &calib);
    let windows = ft_windows(&calib, 8);
    let cal = Calibration::new(&h, &w.config)
        .unwrap()
        .with_finetune(windows.clone(), FtConfig::default());
    let codec = EcsqCodec::for_bits(2.5).unwrap();
    let compressor = Compressor::new(&codec);
    let mut files = Vec::new();
    for mode in [Mode::LevelsLdlq, Mode::LevelsLdlqFt] {
        let mut buf = Vec::new();
        let report = compress_llama(&compressor, &w, Some(&cal), mode, true, &mut buf).unwrap();
        assert_eq!(report.file_bytes, buf.len() as u64);
        files.push(buf);
    }
    assert_eq!(
        files[0].len(),
        files[1].len(),
        "fine-tuning changed the rate"
    );
    let (a, b) = (
        FileReader::new(&files[0], ReadOptions::default()).unwrap(),
        FileReader::new(&files[1], ReadOptions::default()).unwrap(),
    );
    let (mut scales_moved, mut norms_moved) = (0, 0);
    for i in 0..a.index().len() {
        let (ra, rb) = (a.record(i).unwrap(), b.record(i).unwrap());
        assert_eq!(
            (&ra.name, ra.dtype, &ra.shape),
            (&rb.name, rb.dtype, &rb.shape)
        );
        match (&ra.payload, &rb.payload) {
            (Payload::Coded(x), Payload::Coded(y)) => {
                assert_eq!(x.segments, y.segments, "{}: symbols changed", ra.name);
                scales_moved += usize::from(x.scales != y.scales);
            }
            (Payload::Raw(x), Payload::Raw(y)) => {
                norms_moved += usize::from(x != y && ra.name.contains("layernorm"));
            }
            _ => panic!("{}: payload kind changed", ra.name),
        }
    }
    assert!(
        scales_moved >= 7 * w.config.layers - 2,
        "{scales_moved} matrices rescaled"
    );
    assert!(
        norms_moved >= w.config.layers,
        "{norms_moved} norms changed"
    );

    // The blocks' own held-out errors, from the library call the mode makes.
    let f0 = write_tmp(&files[0]);
    let ldlq = decode_llama(&NwcFile::open(f0.path()).unwrap(), &codec, None).unwrap();
    let quantized = Llama::<NdArray>::from_weights(&ldlq, &device).unwrap();
    let refs: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
    let blocks = finetune_blocks::<Autodiff<NdArray>>(
        &reference,
        &quantized,
        &refs,
        &FtConfig::default(),
        &device,
        |_| {},
    )
    .unwrap();
    for b in &blocks {
        eprintln!(
            "layer {}: held-out nmse {:.5} → {:.5} in {} steps",
            b.layer, b.heldout_before, b.heldout_after, b.steps
        );
        assert!(b.heldout_after < b.heldout_before, "layer {}", b.layer);
    }
    let before: f64 = blocks.iter().map(|b| b.heldout_before).sum();
    let after: f64 = blocks.iter().map(|b| b.heldout_after).sum();
    assert!(after < 0.9 * before, "held-out error {before} → {after}");

    let ppl = |bytes: &[u8]| {
        let f = write_tmp(bytes);
        let back = decode_llama(&NwcFile::open(f.path()).unwrap(), &codec, None).unwrap();
        let m = Llama::<NdArray>::from_weights(&back, &device).unwrap();
        perplexity(&m, &eval, 256, 4, &device, |_, _| {})
            .unwrap()
            .ppl
    };
    let (p_ldlq, p_ft) = (ppl(&files[0]), ppl(&files[1]));
    eprintln!("perplexity at 2.5 bits: LDLQ {p_ldlq:.3}, LDLQ + FT {p_ft:.3}");
    assert!(p_ft <= p_ldlq * 1.005, "LDLQ {p_ldlq} → FT {p_ft}");
}

fn write_tmp(bytes: &[u8]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), bytes).unwrap();
    f
}

#[test]
fn fisher_sensitivities_and_rate_allocation_run_on_a_real_llama() {
    use nwc::codec_net::burn::backend::Autodiff;
    use nwc::llama::{AllocationOptions, ColumnWeight};
    use nwc::llm::Fisher;
    type Ad = Autodiff<NdArray>;

    let (w, eval, calib) = tiny();
    let device = Default::default();
    let (reference, h) = calibrated(&w, &calib);
    let before = perplexity(&reference, &eval, 256, 4, &device, |_, _| {}).unwrap();

    // The Fisher information of two windows is the mean of each window's.
    let win = ft_windows(&calib, 2);
    let both = Fisher::measure::<Ad>(&w, &win, &device, |_, _| {}).unwrap();
    let one = |k: usize| Fisher::measure::<Ad>(&w, &win[k..=k], &device, |_, _| {}).unwrap();
    let (a, b) = (one(0), one(1));
    assert_eq!(both.windows, 2);
    for (name, t) in &w.tensors {
        let Some((_, cols)) = t.matrix_dims() else {
            continue;
        };
        let f = &both.columns[name];
        assert_eq!(f.len(), cols, "{name}");
        assert!(f.iter().all(|v| v.is_finite() && *v >= 0.0), "{name}");
        assert!(f.iter().sum::<f64>() > 0.0, "{name}: no gradient");
        for ((m, x), y) in f.iter().zip(&a.columns[name]).zip(&b.columns[name]) {
            assert!(
                (m - (x + y) / 2.0).abs() <= 1e-4 * (x + y).max(1e-12),
                "{name}"
            );
        }
    }
    assert!(Fisher::measure::<Ad>(&w, &[], &device, |_, _| {}).is_err());

    // One finite, positive sensitivity per calibrated matrix; a bad one is refused.
    let cal = Calibration::new(&h, &w.config).unwrap();
    let sens = cal.sensitivities(&w, &both).unwrap();
    assert!(!sens.is_empty());
    assert!(sens.values().all(|c| c.is_finite() && *c > 0.0), "{sens:?}");
    let mut bad = sens.clone();
    *bad.values_mut().next().unwrap() = -1.0;
    assert!(
        cal.clone()
            .with_allocation(&w, bad, AllocationOptions::default())
            .is_err()
    );

    // Allocation folds a step per column into the scales: a different file, same decoder.
    let codec = EcsqCodec::for_bits(5.0).unwrap();
    let compressor = Compressor::new(&codec);
    let dir = tempfile::tempdir().unwrap();
    let run = |cal: &Calibration, name: &str| {
        let path = dir.path().join(name);
        let report = compress_llama(
            &compressor,
            &w,
            Some(cal),
            Mode::LevelsLdlq,
            true,
            std::fs::File::create(&path).unwrap(),
        )
        .unwrap();
        let back = decode_llama(&NwcFile::open(&path).unwrap(), &codec, None).unwrap();
        let model = Llama::<NdArray>::from_weights(&back, &device).unwrap();
        let ppl = perplexity(&model, &eval, 256, 4, &device, |_, _| {})
            .unwrap()
            .ppl;
        (report.bits_per_param(), ppl, std::fs::read(&path).unwrap())
    };
    let (bands_bits, bands_ppl, bands_file) = run(&cal, "bands.nwc");
    for options in [
        AllocationOptions::default(),
        AllocationOptions {
            weight: ColumnWeight::Diagonal,
            across_matrices: true,
            range: nwc::pipeline::StepAllocation {
                min: 0.25,
                max: 4.0,
            },
        },
    ] {
        let allocating = cal
            .clone()
            .with_allocation(&w, sens.clone(), options)
            .unwrap();
        assert!(allocating.allocates() && !cal.allocates());
        let (bits, ppl, file) = run(&allocating, "alloc.nwc");
        assert_ne!(file, bands_file, "{options:?}");
        assert!(
            bits > 0.5 && bits < 2.0 * bands_bits,
            "{bits} vs {bands_bits}"
        );
        assert!(
            ppl.is_finite() && ppl < before.ppl * 2.0,
            "{options:?}: {ppl}"
        );
    }
    assert!(bands_ppl < before.ppl * 1.2, "{} → {bands_ppl}", before.ppl);
}
