//! `cargo xtask bench-rd`: rate–distortion of NWC vs ECSQ vs RTN on held-out real tensors, all
//! measured in one run. Rates of NWC and ECSQ are `.nwc` bytes × 8 / params (side information,
//! header and index included); RTN's is its exact storage: b bits per weight plus an f16 scale and
//! an f16 minimum per group.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::plot::ratio;
use nwc::codec_net::Checkpoint;
use nwc::codec_net::burn::backend::NdArray;
use nwc::format::Writer;
use nwc::tensor::{Tensor, open_weights};
use nwc::{Compressor, Decompressor, EcsqCodec, NwcCodec, WeightCodec};

use crate::train::HELDOUT;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Checkpoint of the learned codec (default: the one the library ships).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// RTN group size (input features per scale/minimum pair).
    #[arg(long, default_value_t = 128)]
    group: usize,
    /// Where the table and plot go.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
}

/// One measured point: rate in bits per parameter and normalized MSE.
#[derive(Clone, Copy, Debug)]
struct Point {
    bits: f64,
    nmse: f64,
}

fn heldout() -> Result<Vec<Tensor>> {
    let path = nwc::tensor::data_dir().join("minilm/model.safetensors");
    let src = open_weights(&path)
        .with_context(|| format!("{}: run `cargo xtask fetch minilm`", path.display()))?;
    let mut out = Vec::new();
    for name in src.names() {
        let t = src.tensor(&name)?;
        if name.contains(HELDOUT)
            && t.dtype().is_float()
            && t.matrix_dims().is_some()
            && t.numel() >= 4096
        {
            out.push(t);
        }
    }
    if out.is_empty() {
        bail!("no held-out tensors matching {HELDOUT}");
    }
    Ok(out)
}

fn sq(a: &[f32], b: &[f32]) -> (f64, f64) {
    a.iter().zip(b).fold((0.0, 0.0), |(e, s), (x, y)| {
        (e + f64::from(x - y).powi(2), s + f64::from(*x).powi(2))
    })
}

/// Codes every tensor into one in-memory `.nwc` file and decodes it again.
fn measure(codec: &dyn WeightCodec, tensors: &[Tensor]) -> Result<Point> {
    let c = Compressor::new(codec);
    let d = Decompressor::new(codec);
    let mut w = Writer::new(Vec::new(), c.header())?;
    let (mut err, mut sig, mut n) = (0.0, 0.0, 0u64);
    for t in tensors {
        let (rec, _) = c.compress_tensor(t, None)?;
        w.write(&rec)?;
        let back = d.decompress_record(&rec)?;
        let (e, s) = sq(&t.to_f32()?, &back.to_f32()?);
        err += e;
        sig += s;
        n += t.numel() as u64;
    }
    let (_, size) = w.finish()?;
    Ok(Point {
        bits: 8.0 * size as f64 / n as f64,
        nmse: err / sig,
    })
}

/// Round-to-nearest with per-group asymmetric min–max scaling along each row.
fn rtn(tensors: &[Tensor], bits: u32, group: usize) -> Result<Point> {
    let (mut err, mut sig, mut n, mut storage_bits) = (0.0, 0.0, 0u64, 0u64);
    let levels = ((1u32 << bits) - 1) as f32;
    for t in tensors {
        let v = t.to_f32()?;
        let (_, cols) = t.matrix_dims().expect("matrix");
        let mut out = vec![0.0f32; v.len()];
        for (row_in, row_out) in v.chunks(cols).zip(out.chunks_mut(cols)) {
            for (g_in, g_out) in row_in.chunks(group).zip(row_out.chunks_mut(group)) {
                let lo = g_in.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = g_in.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                // Scale and minimum are stored in f16: quantize with the stored values.
                let scale = half::f16::from_f32(((hi - lo) / levels).max(1e-8))
                    .to_f32()
                    .max(f32::MIN_POSITIVE);
                let min = half::f16::from_f32(lo).to_f32();
                for (x, y) in g_in.iter().zip(g_out.iter_mut()) {
                    let q = ((x - min) / scale).round().clamp(0.0, levels);
                    *y = q * scale + min;
                }
                storage_bits += u64::from(bits) * g_in.len() as u64 + 32;
            }
        }
        let (e, s) = sq(&v, &out);
        err += e;
        sig += s;
        n += v.len() as u64;
    }
    Ok(Point {
        bits: storage_bits as f64 / n as f64,
        nmse: err / sig,
    })
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let t0 = Instant::now();
    let tensors = heldout()?;
    let params: usize = tensors.iter().map(Tensor::numel).sum();
    let ckpt = match &a.checkpoint {
        Some(p) => Checkpoint::load(p)?,
        None => Checkpoint::from_bytes(nwc::codec_net::DEFAULT_CHECKPOINT)?,
    };
    let device = Default::default();
    println!(
        "held-out: {} tensors of MiniLM ({HELDOUT}*), {params} params; checkpoint λ={} steps={}",
        tensors.len(),
        ckpt.lambda(),
        ckpt.train_steps()
    );

    let mut nwc_pts = Vec::new();
    for i in 0..ckpt.steps().len() {
        let codec = NwcCodec::<NdArray>::new(ckpt.clone(), &device)?.with_step_index(i)?;
        let p = measure(&codec, &tensors)?;
        println!(
            "nwc   step {:>5.2}: {:>7.4} bits/param  nmse {:.4e}",
            codec.step(),
            p.bits,
            p.nmse
        );
        nwc_pts.push(p);
    }
    let mut ecsq_pts = Vec::new();
    for target in [1.5f32, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0] {
        let p = measure(&EcsqCodec::for_bits(target)?, &tensors)?;
        println!(
            "ecsq  {target:>4} b target: {:>7.4} bits/param  nmse {:.4e}",
            p.bits, p.nmse
        );
        ecsq_pts.push(p);
    }
    let mut rtn_pts = Vec::new();
    for b in 2..=8 {
        let p = rtn(&tensors, b, a.group)?;
        println!(
            "rtn   {b} bits g{}: {:>7.4} bits/param  nmse {:.4e}",
            a.group, p.bits, p.nmse
        );
        rtn_pts.push(p);
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Rate–distortion on held-out real weights\n");
    let _ = writeln!(
        md,
        "Made by `cargo xtask bench-rd` ({:.0} s on this machine). Held out: the {} matrices of MiniLM `{HELDOUT}*` ({params} params), never trained on. Rates are measured: `.nwc` bytes × 8 / params for NWC and ECSQ (side information included); RTN: b bits + f16 scale + f16 minimum per group of {}. NMSE = Σ(w − ŵ)² / Σ w². Checkpoint: λ = {}, {} steps, sha256 {}.\n",
        t0.elapsed().as_secs_f64(),
        tensors.len(),
        a.group,
        ckpt.lambda(),
        ckpt.train_steps(),
        ckpt.hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let _ = writeln!(md, "| method | bits/param | NMSE |\n|---|---:|---:|");
    for (name, pts) in [("NWC", &nwc_pts), ("ECSQ", &ecsq_pts), ("RTN", &rtn_pts)] {
        for p in pts.iter() {
            let _ = writeln!(md, "| {name} | {:.4} | {:.4e} |", p.bits, p.nmse);
        }
    }
    let xy = |p: &[Point]| p.iter().map(|q| (q.bits, q.nmse)).collect::<Vec<_>>();
    let at4 = |p: &[Point]| crate::plot::at(&xy(p), 4.0);
    let (n4, e4, r4) = (at4(&nwc_pts), at4(&ecsq_pts), at4(&rtn_pts));
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.4e}"));
    let _ = writeln!(
        md,
        "\nAt exactly 4.00 bits/param (log-MSE interpolated between measured points): NWC {}, ECSQ {}, RTN {}.",
        fmt(n4),
        fmt(e4),
        fmt(r4)
    );
    let svg = crate::plot::svg(
        &[
            ("NWC", "#d62728", xy(&nwc_pts)),
            ("ECSQ", "#1f77b4", xy(&ecsq_pts)),
            ("RTN g128", "#7f7f7f", xy(&rtn_pts)),
        ],
        "normalized MSE",
    );
    crate::plot::write_outputs(&a.out, "rd", &md, &svg)?;
    println!(
        "rd@4bit: nwc/ecsq={} nwc/rtn={}",
        ratio(n4, e4),
        ratio(n4, r4)
    );
    Ok(())
}
