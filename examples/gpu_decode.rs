//! Decoding throughput of `.nwc` files on the CUDA backend beside the CPU backend, on the same
//! files in one run: `cargo run --release --features cuda --example gpu_decode -- FILE.nwc…`
//! (the GPU run in `docs/perf.md` was made this way: `scripts/gpu-perf.sh`).
//!
//! For every file: the measured bits/param, then M params/s decoding every tensor (best of 3
//! after one warm-up) with the learned codec's network on the GPU (`Cuda`) and on the CPU
//! (`NdArray`, the plain-f32 refiner), and the largest difference between the two decodes
//! relative to each tensor's RMS. ECSQ and TCQ files decode on the CPU either way.

use std::time::Instant;

use nwc::codec_net::burn::backend::{Cuda, NdArray};
use nwc::{CodecRegistry, Codecs, NwcFile, WeightCodec};

fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        return Err("usage: gpu_decode FILE.nwc…".into());
    }
    let threads = rayon::current_num_threads();
    let gpu = Codecs::<Cuda>::on(&Default::default());
    let cpu = Codecs::<NdArray>::on(&Default::default());
    for path in &files {
        let f = NwcFile::open(path)?;
        let header = *f.reader()?.header();
        let params = f.reader()?.n_params() as f64;
        let on_gpu: Box<dyn WeightCodec> = gpu.decoder(&header, None)?;
        let on_cpu: Box<dyn WeightCodec> = cpu.decoder(&header, None)?;
        let t_gpu = best_of(3, || {
            std::hint::black_box(f.decode_all(on_gpu.as_ref()).expect("decodes on the GPU"));
        });
        let t_cpu = best_of(3, || {
            std::hint::black_box(f.decode_all(on_cpu.as_ref()).expect("decodes on the CPU"));
        });
        let (a, b) = (
            f.decode_all(on_gpu.as_ref())?,
            f.decode_all(on_cpu.as_ref())?,
        );
        let mut worst = 0f64;
        for (x, y) in a.iter().zip(&b) {
            if !x.dtype().is_float() {
                continue;
            }
            let (x, y) = (x.to_f32()?, y.to_f32()?);
            let rms = (y.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>()
                / y.len().max(1) as f64)
                .sqrt()
                .max(1e-30);
            let d = x
                .iter()
                .zip(&y)
                .map(|(p, q)| f64::from((p - q).abs()))
                .fold(0.0, f64::max);
            worst = worst.max(d / rms);
        }
        println!(
            "{path}: {:?}, {:.0} params, {:.3} bits/param | decode GPU (cuda) {:.2} M params/s | CPU ({threads} threads) {:.2} M params/s | GPU/CPU {:.2}× | max |GPU−CPU|/RMS {worst:.2e}",
            header.codec,
            params,
            f.bits_per_param()?,
            params / t_gpu / 1e6,
            params / t_cpu / 1e6,
            t_cpu / t_gpu,
        );
    }
    Ok(())
}
