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
use nwc::{Compressor, Decompressor, EcsqCodec, NwcCodec, TcqCodec, WeightCodec};

use crate::train::{GEMMA_HELDOUT, HELDOUT};

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
    /// TCQ search trade-off (squared fine steps per bit).
    #[arg(long, default_value_t = nwc::DEFAULT_TCQ_LAMBDA)]
    tcq_lambda: f32,
    /// TCQ trellis run (chunk length).
    #[arg(long, default_value_t = nwc::DEFAULT_TCQ_RUN)]
    tcq_run: usize,
    /// Skip the learned codec (quick quantizer-only runs).
    #[arg(long)]
    no_nwc: bool,
}

/// One measured point: rate in bits per parameter and normalized MSE.
#[derive(Clone, Copy, Debug)]
struct Point {
    bits: f64,
    nmse: f64,
}

/// The held-out matrices of one model: `(model, file, name prefix)`.
fn heldout(item: &str, file: &str, prefix: &str) -> Result<Vec<Tensor>> {
    let path = nwc::tensor::data_dir().join(item).join(file);
    let src = open_weights(&path)
        .with_context(|| format!("{}: run `cargo xtask fetch {item}`", path.display()))?;
    let mut out = Vec::new();
    for name in src.names() {
        if !name.starts_with(prefix) {
            continue;
        }
        let t = src.tensor(&name)?;
        if t.dtype().is_float() && t.matrix_dims().is_some() && t.numel() >= 4096 {
            out.push(t);
        }
    }
    if out.is_empty() {
        bail!(
            "no held-out tensors matching {prefix} in {}",
            path.display()
        );
    }
    Ok(out)
}

/// The held-out sets: MiniLM's encoder layer 5 and EmbeddingGemma's decoder layer 11, never
/// trained on.
fn heldout_sets() -> Result<Vec<(&'static str, String, Vec<Tensor>)>> {
    Ok(vec![
        (
            "MiniLM",
            format!("{HELDOUT}*"),
            heldout("minilm", "model.safetensors", HELDOUT)?,
        ),
        (
            "EmbeddingGemma",
            format!("{GEMMA_HELDOUT}*"),
            heldout("gemma", "model.safetensors", GEMMA_HELDOUT)?,
        ),
    ])
}

/// Rates at which the worst ratio is sought.
const GRID: [f64; 13] = [
    2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0,
];

/// The largest `a / b` MSE ratio over the rates of [`GRID`] that both curves cover.
fn worst_ratio(a: &[Point], b: &[Point]) -> Option<(f64, f64)> {
    let xy = |p: &[Point]| p.iter().map(|q| (q.bits, q.nmse)).collect::<Vec<_>>();
    let (a, b) = (xy(a), xy(b));
    GRID.iter()
        .filter_map(|&x| Some((x, crate::plot::at(&a, x)? / crate::plot::at(&b, x)?)))
        .max_by(|p, q| p.1.total_cmp(&q.1))
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

/// Every method's curve on one held-out set.
struct Curves {
    nwc: Vec<Point>,
    tcq: Vec<Point>,
    ecsq: Vec<Point>,
    rtn: Vec<Point>,
}

fn curves(a: &BenchArgs, ckpt: &Checkpoint, set: &str, tensors: &[Tensor]) -> Result<Curves> {
    let device = Default::default();
    let targets = [
        1.5f32, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 8.5,
    ];
    let mut nwc_pts = Vec::new();
    if !a.no_nwc {
        let base = NwcCodec::<NdArray>::new(ckpt.clone(), &device)?;
        if base.is_trellis() {
            for target in targets {
                let codec = NwcCodec::<NdArray>::new(ckpt.clone(), &device)?
                    .with_step(nwc::codec_net::tcq_step_for_bits(target))?;
                let p = measure(&codec, tensors)?;
                println!(
                    "{set:<15} nwc   {target:>4} b target: {:>7.4} bits/param  nmse {:.4e}",
                    p.bits, p.nmse
                );
                nwc_pts.push(p);
            }
        } else {
            for i in 0..ckpt.steps().len() {
                let codec = NwcCodec::<NdArray>::new(ckpt.clone(), &device)?.with_step_index(i)?;
                let p = measure(&codec, tensors)?;
                println!(
                    "{set:<15} nwc   step {:>5.2}: {:>7.4} bits/param  nmse {:.4e}",
                    codec.step(),
                    p.bits,
                    p.nmse
                );
                nwc_pts.push(p);
            }
        }
    }
    let mut tcq_pts = Vec::new();
    for target in targets {
        let codec = TcqCodec::for_bits(target)?
            .lambda(a.tcq_lambda)?
            .run_len(a.tcq_run)?;
        let p = measure(&codec, tensors)?;
        println!(
            "{set:<15} tcq   {target:>4} b target: {:>7.4} bits/param  nmse {:.4e}",
            p.bits, p.nmse
        );
        tcq_pts.push(p);
    }
    let mut ecsq_pts = Vec::new();
    for target in targets {
        let p = measure(&EcsqCodec::for_bits(target)?, tensors)?;
        println!(
            "{set:<15} ecsq  {target:>4} b target: {:>7.4} bits/param  nmse {:.4e}",
            p.bits, p.nmse
        );
        ecsq_pts.push(p);
    }
    let mut rtn_pts = Vec::new();
    for b in 2..=8 {
        let p = rtn(tensors, b, a.group)?;
        println!(
            "{set:<15} rtn   {b} bits g{}: {:>7.4} bits/param  nmse {:.4e}",
            a.group, p.bits, p.nmse
        );
        rtn_pts.push(p);
    }
    Ok(Curves {
        nwc: nwc_pts,
        tcq: tcq_pts,
        ecsq: ecsq_pts,
        rtn: rtn_pts,
    })
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let t0 = Instant::now();
    let sets = heldout_sets()?;
    let ckpt = match &a.checkpoint {
        Some(p) => Checkpoint::load(p)?,
        None => Checkpoint::from_bytes(nwc::codec_net::DEFAULT_CHECKPOINT)?,
    };
    let mut results = Vec::new();
    for (set, prefix, tensors) in &sets {
        let params: usize = tensors.iter().map(Tensor::numel).sum();
        println!(
            "held-out: {} tensors of {set} ({prefix}), {params} params",
            tensors.len()
        );
        results.push(curves(a, &ckpt, set, tensors)?);
    }

    let mut md = String::new();
    let _ = writeln!(md, "# Rate–distortion on held-out real weights\n");
    let held: Vec<String> = sets
        .iter()
        .map(|(set, prefix, t)| {
            format!(
                "{set} `{prefix}` ({} matrices, {} params)",
                t.len(),
                t.iter().map(Tensor::numel).sum::<usize>()
            )
        })
        .collect();
    let _ = writeln!(
        md,
        "Made by `cargo xtask bench-rd` ({:.0} s on this machine). Held out, never trained on: {}. Rates are measured: `.nwc` bytes × 8 / params for NWC, TCQ and ECSQ (side information included); RTN: b bits + f16 scale + f16 minimum per group of {}. NMSE = Σ(w − ŵ)² / Σ w². TCQ: 8-state ECTCQ, λ = {}. NWC checkpoint: λ = {}, {} steps, sha256 {}.\n",
        t0.elapsed().as_secs_f64(),
        held.join(" and "),
        a.group,
        a.tcq_lambda,
        ckpt.lambda(),
        ckpt.train_steps(),
        ckpt.hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let xy = |p: &[Point]| p.iter().map(|q| (q.bits, q.nmse)).collect::<Vec<_>>();
    let at4 = |p: &[Point]| crate::plot::at(&xy(p), 4.0);
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |x| format!("{x:.4e}"));
    let mut summary = String::new();
    let (mut worst4_ecsq, mut worst4_rtn, mut worst_all) =
        (None::<f64>, None::<f64>, None::<(f64, f64, &str)>);
    let mut series = Vec::new();
    for ((set, _, _), c) in sets.iter().zip(&results) {
        let _ = writeln!(
            md,
            "## {set}\n\n| method | bits/param | NMSE |\n|---|---:|---:|"
        );
        for (name, pts) in [
            ("NWC", &c.nwc),
            ("TCQ", &c.tcq),
            ("ECSQ", &c.ecsq),
            ("RTN", &c.rtn),
        ] {
            for p in pts.iter() {
                let _ = writeln!(md, "| {name} | {:.4} | {:.4e} |", p.bits, p.nmse);
            }
        }
        let (n4, t4, e4, r4) = (at4(&c.nwc), at4(&c.tcq), at4(&c.ecsq), at4(&c.rtn));
        let _ = writeln!(
            md,
            "\nAt exactly 4.00 bits/param (log-MSE interpolated between measured points): NWC {}, TCQ {}, ECSQ {}, RTN {}: NWC/ECSQ {}, TCQ/ECSQ {}, NWC/RTN {}.",
            fmt(n4),
            fmt(t4),
            fmt(e4),
            fmt(r4),
            ratio(n4, e4),
            ratio(t4, e4),
            ratio(n4, r4),
        );
        let w = worst_ratio(&c.nwc, &c.ecsq);
        let wt = worst_ratio(&c.tcq, &c.ecsq);
        let _ = writeln!(
            md,
            "Worst MSE ratio to ECSQ over 2–8 bits: NWC {}, TCQ {}.\n",
            w.map_or("n/a".into(), |(x, r)| format!("{r:.4} (at {x} bits)")),
            wt.map_or("n/a".into(), |(x, r)| format!("{r:.4} (at {x} bits)")),
        );
        let _ = writeln!(
            summary,
            "rd@4bit[{set}]: nwc/ecsq={} tcq/ecsq={} nwc/rtn={}",
            ratio(n4, e4),
            ratio(t4, e4),
            ratio(n4, r4)
        );
        let max = |acc: Option<f64>, v: Option<f64>| match (acc, v) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        worst4_ecsq = max(worst4_ecsq, n4.zip(e4).map(|(n, e)| n / e));
        worst4_rtn = max(worst4_rtn, n4.zip(r4).map(|(n, r)| n / r));
        if let Some((x, r)) = w
            && worst_all.is_none_or(|(_, q, _)| r > q)
        {
            worst_all = Some((x, r, set));
        }
        // Dark shades for the first model, light for the second.
        let first = series.is_empty();
        for (name, colour, pts) in [
            ("NWC", if first { "#d62728" } else { "#ff9896" }, &c.nwc),
            ("TCQ", if first { "#2ca02c" } else { "#98df8a" }, &c.tcq),
            ("ECSQ", if first { "#1f77b4" } else { "#aec7e8" }, &c.ecsq),
            (
                "RTN g128",
                if first { "#4d4d4d" } else { "#bdbdbd" },
                &c.rtn,
            ),
        ] {
            if !pts.is_empty() {
                series.push((format!("{name} {set}"), colour, xy(pts)));
            }
        }
    }
    let _ = writeln!(
        md,
        "The summary lines take the worse of the two models:\n\n```\n{summary}rd@4bit: nwc/ecsq={} nwc/rtn={}\nrd@2-8bit: worst nwc/ecsq={}\n```",
        worst4_ecsq.map_or("n/a".into(), |v| format!("{v:.4}")),
        worst4_rtn.map_or("n/a".into(), |v| format!("{v:.4}")),
        worst_all.map_or("n/a".into(), |(_, r, _)| format!("{r:.4}")),
    );
    let plotted: Vec<crate::plot::Series<'_>> = series
        .iter()
        .map(|(n, c, p)| (n.as_str(), *c, p.clone()))
        .collect();
    let svg = crate::plot::svg(&plotted, "normalized MSE");
    crate::plot::write_outputs(&a.out, "rd", &md, &svg)?;
    print!("{summary}");
    println!(
        "rd@4bit: nwc/ecsq={} nwc/rtn={}",
        worst4_ecsq.map_or("n/a".into(), |v| format!("{v:.4}")),
        worst4_rtn.map_or("n/a".into(), |v| format!("{v:.4}")),
    );
    println!(
        "rd@2-8bit: worst nwc/ecsq={}",
        worst_all.map_or("n/a".into(), |(x, r, set)| format!(
            "{r:.4} ({set}, {x} bits)"
        )),
    );
    Ok(())
}
