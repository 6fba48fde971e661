//! The learned codec on the WGPU backend against the CPU (NdArray) backend, on real weights.
//! Built only with `--features wgpu`; CI runs it on lavapipe, Mesa's software Vulkan driver
//! (`.ci/run`), so it needs no GPU.
//!
//! What is guaranteed across backends (ARCHITECTURE.md, "Backends"):
//! - Entropy-coded symbols decode bit-exactly everywhere: the coder is integer code on the CPU.
//! - The shipped (trellis) codec encodes on the CPU whatever the backend, so its files are
//!   byte-identical; its decoded weights agree within `DECODE_BOUND` × the tensor's RMS (plus one
//!   rounding step of the tensor's dtype, for f16/bf16 tensors).
//! - The autoencoder's analysis runs on the backend, so two backends can round a latent
//!   differently, but only where it lies within `LATENT_BOUND` of a rounding boundary.
#![cfg(feature = "wgpu")]

mod common;

use nwc::codec_net::burn::backend::wgpu::WgpuDevice;
use nwc::codec_net::burn::backend::{Autodiff, NdArray, Wgpu};
use nwc::codec_net::burn::tensor::backend::Backend;
use nwc::codec_net::burn::tensor::{Int, Tensor as BTensor, TensorData};
use nwc::codec_net::{Checkpoint, CodecConfig, RefineConfig, train_refiner};
use nwc::tensor::{ChunkConfig, DType, Tensor, chunk, open_weights};
use nwc::{CompressOptions, Compressor, NwcCodec, NwcFile, Uniform, WeightCodec};

/// Decoded weights of two backends differ by at most this × the tensor's RMS.
const DECODE_BOUND: f64 = 1e-4;
/// Latents of two backends differ by at most this (in quantizer steps of the latent grid).
const LATENT_BOUND: f32 = 1e-3;

fn device() -> WgpuDevice {
    WgpuDevice::default()
}

/// Held-out real matrices: MiniLM encoder layer 5.
fn minilm_layer5() -> Option<Vec<Tensor>> {
    let path = common::data("minilm/model.safetensors")?;
    let src = open_weights(&path).unwrap();
    Some(
        src.names()
            .iter()
            .filter(|n| n.starts_with("encoder.layer.5.") && n.ends_with(".weight"))
            .map(|n| src.tensor(n).unwrap())
            .filter(|t| t.matrix_dims().is_some())
            .collect(),
    )
}

/// The matrices normalized and cut into 16-value chunks, as the pipeline does.
fn chunks(tensors: &[Tensor]) -> Vec<f32> {
    let mut x = Vec::new();
    for t in tensors {
        let (r, k) = t.matrix_dims().unwrap();
        let v = t.to_f32().unwrap();
        let w = ndarray::ArrayView2::from_shape((r, k), &v).unwrap();
        x.extend_from_slice(chunk(w, &ChunkConfig::default()).unwrap().data());
    }
    x
}

/// The largest difference between two decodes of a tensor, in units of its RMS, after allowing
/// each value one step of its dtype's rounding (two backends' f32 results that differ in the
/// last bits can round to neighbouring f16/bf16 values).
fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let ulp = match a.dtype() {
        DType::F16 => (-10f64).exp2(),
        DType::BF16 => (-7f64).exp2(),
        _ => 0.0,
    };
    let (a, b) = (a.to_f32().unwrap(), b.to_f32().unwrap());
    let rms = (a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
    a.iter()
        .zip(&b)
        .map(|(x, y)| {
            let (x, y) = (f64::from(*x), f64::from(*y));
            ((x - y).abs() - ulp * x.abs().max(y.abs())).max(0.0)
        })
        .fold(0.0, f64::max)
        / rms.max(f64::MIN_POSITIVE)
}

/// A whole model (the committed tiny Llama) compressed on one backend and decoded on the other,
/// both ways: the files are byte-identical, and the decoded weights agree within the bound.
#[test]
fn shipped_codec_whole_model_across_backends() {
    let cpu = NwcCodec::<NdArray>::default_on(&Default::default()).unwrap();
    let gpu = NwcCodec::<Wgpu>::default_on(&device()).unwrap();
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/assets/tiny-llama/model.safetensors"
    );
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = [(&cpu as &dyn WeightCodec, "cpu"), (&gpu, "gpu")]
        .into_iter()
        .map(|(codec, tag)| {
            let out = dir.path().join(format!("{tag}.nwc"));
            Compressor::new(codec)
                .with_options(CompressOptions::for_codec(codec))
                .unwrap()
                .compress_file(model, &out, &Uniform)
                .unwrap();
            out
        })
        .collect();
    let bytes: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert_eq!(
        bytes[0], bytes[1],
        "the trellis encoder must not depend on the backend"
    );

    let file = NwcFile::open(&files[1]).unwrap();
    let on_cpu = file.decode_all(&cpu).unwrap();
    let on_gpu = file.decode_all(&gpu).unwrap();
    assert_eq!(on_cpu.len(), on_gpu.len());
    let mut worst: f64 = 0.0;
    for (a, b) in on_cpu.iter().zip(&on_gpu) {
        assert_eq!((a.name(), a.shape()), (b.name(), b.shape()));
        worst = worst.max(max_rel_diff(a, b));
    }
    eprintln!("tiny Llama: largest decode difference WGPU vs NdArray = {worst:.2e} × RMS");
    assert!(worst <= DECODE_BOUND, "decode difference {worst:e} × RMS");
    // The decoded model is a real decode, not a copy of the input: it carries the coding error.
    let src = open_weights(model).unwrap();
    let name = on_gpu
        .iter()
        .find(|t| t.matrix_dims().is_some() && t.numel() >= 4096)
        .unwrap()
        .name()
        .to_string();
    let original = src.tensor(&name).unwrap();
    let decoded = on_gpu.iter().find(|t| t.name() == name).unwrap();
    assert!(max_rel_diff(&original, decoded) > 1e-3);
}

/// The shipped codec on held-out MiniLM matrices: the record encoded on WGPU decodes on NdArray
/// to the same weights as on WGPU, within the bound.
#[test]
fn shipped_codec_real_tensors_across_backends() {
    let Some(tensors) = minilm_layer5() else {
        return;
    };
    let cpu = NwcCodec::<NdArray>::default_on(&Default::default()).unwrap();
    let gpu = NwcCodec::<Wgpu>::default_on(&device()).unwrap();
    for t in tensors.iter().take(3) {
        let (rec, report) = Compressor::new(&gpu).compress_tensor(t, None).unwrap();
        let a = nwc::Decompressor::new(&cpu)
            .decompress_record(&rec)
            .unwrap();
        let b = nwc::Decompressor::new(&gpu)
            .decompress_record(&rec)
            .unwrap();
        let d = max_rel_diff(&a, &b);
        eprintln!(
            "{}: nmse {:.5}, WGPU vs NdArray {d:.2e} × RMS",
            t.name(),
            report.nmse()
        );
        assert!(d <= DECODE_BOUND, "{}: {d:e}", t.name());
        assert!(report.nmse() < 0.02);
    }
}

/// Latents `[n, c]` of the autoencoder's analysis on backend `B`.
fn analyze<B: Backend>(ck: &Checkpoint, x: &[f32], levels: &[i64], d: &B::Device) -> Vec<f32> {
    let c = ck.config().chunk_len;
    let n = levels.len();
    let model = ck.model::<B>(d).unwrap();
    let xt = BTensor::<B, 2>::from_data(TensorData::new(x.to_vec(), [n, c]), d);
    let lt = BTensor::<B, 1, Int>::from_data(TensorData::new(levels.to_vec(), [n]), d);
    model
        .analyze(xt, lt)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap()
}

/// The paper's autoencoder analyses on the backend, so rounding can differ between backends:
/// only for latents within `LATENT_BOUND` steps of a rounding boundary, and rarely.
#[test]
fn autoencoder_symbols_differ_only_at_rounding_boundaries() {
    let Some(tensors) = minilm_layer5() else {
        return;
    };
    let ck = Checkpoint::from_bytes(nwc::codec_net::AUTOENCODER_CHECKPOINT).unwrap();
    let c = ck.config().chunk_len;
    let x = chunks(&tensors);
    let n = x.len() / c;
    let levels: Vec<i64> = (0..n as i64).map(|i| i % 4).collect();
    let y_cpu = analyze::<NdArray>(&ck, &x, &levels, &Default::default());
    let y_gpu = analyze::<Wgpu>(&ck, &x, &levels, &device());
    let medians = ck.medians();
    let step = ck.steps()[ck.steps().len() / 2];
    let (mut max_diff, mut differ) = (0.0f32, 0usize);
    for (i, (a, b)) in y_cpu.iter().zip(&y_gpu).enumerate() {
        let (ua, ub) = ((a - medians[i % c]) / step, (b - medians[i % c]) / step);
        max_diff = max_diff.max((ua - ub).abs());
        if ua.round() != ub.round() {
            differ += 1;
            let from_boundary = (ua - ua.floor() - 0.5).abs();
            assert!(
                from_boundary <= LATENT_BOUND,
                "latent {i} rounds differently {from_boundary} steps from a boundary"
            );
        }
    }
    eprintln!(
        "autoencoder on {} latents: largest difference {max_diff:.2e} steps, {differ} symbols differ",
        y_cpu.len()
    );
    assert!(
        max_diff <= LATENT_BOUND,
        "latents differ by {max_diff} steps"
    );
    assert!(differ * 10_000 <= y_cpu.len(), "{differ} symbols differ");
}

/// A few steps of refiner training run on WGPU (autodiff included) and change the network.
#[test]
fn refiner_trains_on_wgpu() {
    let Some(tensors) = minilm_layer5() else {
        return;
    };
    let cfg = CodecConfig {
        width: 32,
        blocks: 1,
        ..CodecConfig::refiner_small()
    };
    let mut data = chunks(&tensors);
    let held = data.split_off(data.len() - 16 * 512);
    let rc = RefineConfig {
        steps: 4,
        batch: 128,
        log_every: 2,
        ..RefineConfig::default()
    };
    let mut stats = Vec::new();
    let ck = train_refiner::<Autodiff<Wgpu>>(
        &cfg,
        &rc,
        &data,
        &held,
        &device(),
        None,
        |s| stats.push(s.clone()),
        |_| {},
    )
    .unwrap();
    assert_eq!(ck.train_steps(), 4);
    assert_eq!(stats.len(), 2);
    for s in &stats {
        assert!(s.train_ratio.is_finite() && s.train_ratio > 0.0);
        assert!(s.heldout_ratio.iter().all(|r| r.is_finite()));
    }
    // Trained weights are no longer the zero-output initialization: the correction is nonzero.
    let r = ck.refiner::<NdArray>(&Default::default()).unwrap();
    let d = Default::default();
    let j: Vec<f32> = (0..2 * cfg.chunk_len)
        .map(|i| (i % 7) as f32 - 3.0)
        .collect();
    let jt = BTensor::<NdArray, 2>::from_data(TensorData::new(j.clone(), [2, cfg.chunk_len]), &d);
    let st = BTensor::<NdArray, 1>::from_data(TensorData::new(vec![0.1f32, 0.01], [2]), &d);
    let lt = BTensor::<NdArray, 1, Int>::from_data(TensorData::new(vec![0i64, 1], [2]), &d);
    let out: Vec<f32> = r.forward(jt, st, lt).into_data().to_vec().unwrap();
    let moved = out
        .iter()
        .zip(&j)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(moved > 0.0, "the refiner's correction is still zero");
}
