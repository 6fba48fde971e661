//! `cargo xtask bench-llm`: perplexity against *measured* bits per parameter on a real Llama, for
//! the FP reference, RTN and GPTQ (per-group, sharing the calibration Hessians) and NWC data-free,
//! with levels, and with levels + LDLQ. Every compressed model is decoded from its bytes before it
//! is evaluated.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::plot::ratio;
use nwc::codec_net::burn::backend::NdArray;
use nwc::llama::{Baseline, Calibration, Mode, compress_llama, decode_llama, quantize_baseline};
use nwc::llm::FtConfig;
use nwc::llm::{
    Hessians, Llama, LlamaWeights, Perplexity, cache_file_name, calibration_fingerprint, perplexity,
};
use nwc::{CompressOptions, Compressor, EcsqCodec, NwcCodec, NwcFile, WeightCodec};

/// The model, window size and texts every LLM benchmark shares (`bench-llm`, `bench-rival`).
#[derive(Args, Debug, Clone)]
pub struct LlmTexts {
    /// GGUF file or Hugging Face directory (default: SmolLM2-135M from `cargo xtask fetch`).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Context length of calibration and evaluation windows (tokens).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Evaluation windows (non-overlapping, from the start of the evaluation text).
    #[arg(long, default_value_t = 8)]
    pub eval_windows: usize,
    /// Calibration windows.
    #[arg(long, default_value_t = 16)]
    pub calib_windows: usize,
    /// Evaluation text, relative to the data directory.
    #[arg(long, default_value = "canterbury/alice29.txt")]
    pub eval_text: String,
    /// Calibration texts (comma-separated, relative to the data directory); disjoint from the
    /// evaluation text.
    #[arg(
        long,
        default_value = "canterbury/lcet10.txt,canterbury/plrabn12.txt",
        value_delimiter = ','
    )]
    pub calib_text: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct LlmBenchArgs {
    #[command(flatten)]
    pub texts: LlmTexts,
    /// Bit widths of RTN and GPTQ (groups of 128).
    #[arg(long, default_value = "3,4,5", value_delimiter = ',')]
    pub baseline_bits: Vec<u32>,
    /// Nominal rates (bits per value at quality level 0) at which NWC and ECSQ run, each mode;
    /// the measured rates are what the table reports.
    #[arg(long, default_value = "3.5,4.5", value_delimiter = ',')]
    pub nwc_bits: Vec<f32>,
    /// Skip the ECSQ rows.
    #[arg(long)]
    pub no_ecsq: bool,
    /// Calibration windows of block-wise fine-tuning (the last two are its held-out part).
    #[arg(long, default_value_t = 8)]
    pub ft_windows: usize,
    /// Most fine-tuning steps per block.
    #[arg(long, default_value_t = 40)]
    pub ft_steps: usize,
    /// Where llm.md and llm.svg go.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
}

/// One measured point of a method.
#[derive(Debug, Clone)]
struct Row {
    method: String,
    setting: String,
    bits: f64,
    ppl: f64,
    seconds: f64,
}

pub fn load_text(rel: &str) -> Result<String> {
    let p = nwc::tensor::data_dir().join(rel);
    let bytes = std::fs::read(&p)
        .with_context(|| format!("{}: run `cargo xtask fetch canterbury`", p.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn ppl_of(
    w: &LlamaWeights,
    ids: &[u32],
    a: &LlmBenchArgs,
    device: &nwc::codec_net::burn::backend::ndarray::NdArrayDevice,
) -> Result<Perplexity> {
    let model = Llama::<NdArray>::from_weights(w, device)?;
    Ok(perplexity(
        &model,
        ids,
        a.texts.ctx,
        a.texts.eval_windows,
        device,
        |_, _| {},
    )?)
}

/// Perplexity of `w` on the first `windows` windows of `ctx` tokens of `ids` (nwc's evaluation).
pub fn ppl_of_windows(w: &LlamaWeights, ids: &[u32], ctx: usize, windows: usize) -> Result<f64> {
    let device = Default::default();
    let model = Llama::<NdArray>::from_weights(w, &device)?;
    Ok(perplexity(&model, ids, ctx, windows, &device, |_, _| {})?.ppl)
}

/// `n` windows of `ctx` tokens from the start of the calibration texts, for fine-tuning.
pub fn ft_windows(
    w: &LlamaWeights,
    texts: &[String],
    ctx: usize,
    n: usize,
) -> Result<Vec<Vec<u32>>> {
    let ids = calib_ids(w, texts)?;
    Ok(nwc::llm::windows(&ids, ctx, n)?
        .into_iter()
        .map(<[u32]>::to_vec)
        .collect())
}

/// The calibration texts, joined and tokenized.
fn calib_ids(w: &LlamaWeights, texts: &[String]) -> Result<Vec<u32>> {
    let mut text = String::new();
    for t in texts {
        text.push_str(&load_text(t)?);
        text.push('\n');
    }
    Ok(w.tokenizer.encode(&text)?)
}

/// Calibration Hessians of `w` on `texts`, cached under the data directory.
pub fn hessians(
    w: &LlamaWeights,
    texts: &[String],
    ctx: usize,
    windows: usize,
) -> Result<Hessians> {
    let device = Default::default();
    let ids = calib_ids(w, texts)?;
    let model = Llama::<NdArray>::from_weights(w, &device)?;
    let fp = calibration_fingerprint(w, &ids, ctx);
    let cache = nwc::tensor::data_dir()
        .join("cache")
        .join(cache_file_name(&fp));
    let t = Instant::now();
    let h = Hessians::collect(
        &model,
        &ids,
        ctx,
        windows,
        Some(&cache),
        fp,
        &device,
        |done, all| tracing::info!("calibration window {done}/{all}"),
    )?;
    tracing::info!(
        windows = h.windows(),
        seconds = t.elapsed().as_secs_f64(),
        cache = %cache.display(),
        "Hessians ready"
    );
    Ok(h)
}

pub fn run(a: &LlmBenchArgs) -> Result<()> {
    let t0 = Instant::now();
    let device = Default::default();
    let path =
        a.texts.model.clone().unwrap_or_else(|| {
            nwc::tensor::data_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let w = LlamaWeights::open(&path)
        .with_context(|| format!("{}: run `cargo xtask fetch smollm2`", path.display()))?;
    let n_params = w.n_params();
    let eval_ids = w.tokenizer.encode(&load_text(&a.texts.eval_text)?)?;
    println!(
        "model {} ({n_params} params, {} layers); eval {} ({} windows × {} tokens); calibration {} ({} windows × {})",
        path.display(),
        w.config.layers,
        a.texts.eval_text,
        a.texts.eval_windows,
        a.texts.ctx,
        a.texts.calib_text.join("+"),
        a.texts.calib_windows,
        a.texts.ctx
    );
    let mut rows: Vec<Row> = Vec::new();
    let push =
        |rows: &mut Vec<Row>, method: &str, setting: String, bits: f64, ppl: f64, t: Instant| {
            let r = Row {
                method: method.to_string(),
                setting,
                bits,
                ppl,
                seconds: t.elapsed().as_secs_f64(),
            };
            println!(
                "{:<18} {:<14} {:>7.4} bits/param  ppl {:>9.3}  ({:.0} s)",
                r.method, r.setting, r.bits, r.ppl, r.seconds
            );
            rows.push(r);
        };

    let t = Instant::now();
    let fp = ppl_of(&w, &eval_ids, a, &device)?;
    let stored_bits =
        8.0 * w.tensors.values().map(|t| t.bytes().len()).sum::<usize>() as f64 / n_params as f64;
    push(
        &mut rows,
        "FP (reference)",
        "as loaded".into(),
        stored_bits,
        fp.ppl,
        t,
    );

    let h = hessians(&w, &a.texts.calib_text, a.texts.ctx, a.texts.calib_windows)?;
    let t = Instant::now();
    let cal = Calibration::new(&h, &w.config)?.with_finetune(
        ft_windows(&w, &a.texts.calib_text, a.texts.ctx, a.ft_windows)?,
        FtConfig {
            max_steps: a.ft_steps,
            ..FtConfig::default()
        },
    );
    tracing::info!(
        seconds = t.elapsed().as_secs_f64(),
        "Hessians damped and factored"
    );

    let policy = CompressOptions::default().policy;
    for &b in &a.baseline_bits {
        for base in [Baseline::Rtn(b), Baseline::Gptq(b)] {
            let t = Instant::now();
            let r = quantize_baseline(&w, Some(&cal), base, &policy)?;
            let p = ppl_of(&r.weights, &eval_ids, a, &device)?;
            let method = match base {
                Baseline::Rtn(_) => "RTN g128",
                Baseline::Gptq(_) => "GPTQ g128",
            };
            push(
                &mut rows,
                method,
                format!("{b} bits"),
                r.bits_per_param,
                p.ppl,
                t,
            );
        }
    }

    // One scratch file per run: a second bench must never truncate a file this one has mapped.
    let tmp_dir = PathBuf::from("target/bench-llm");
    std::fs::create_dir_all(&tmp_dir)?;
    let file = tmp_dir.join(format!("model-{}.nwc", std::process::id()));
    for mode in Mode::ALL {
        for &b in &a.nwc_bits {
            let mut codecs: Vec<(&str, Box<dyn WeightCodec>)> = vec![(
                "NWC",
                Box::new(
                    NwcCodec::<NdArray>::default_on(&device)?
                        .with_step(nwc::codec_net::tcq_step_for_bits(b))?,
                ),
            )];
            if !a.no_ecsq {
                codecs.push(("ECSQ", Box::new(EcsqCodec::for_bits(b)?)));
            }
            for (name, codec) in codecs {
                let t = Instant::now();
                let bits = compress_to(codec.as_ref(), &w, &cal, mode, &file)?;
                let decoded = decode_llama(
                    &NwcFile::open(&file)?,
                    codec.as_ref(),
                    Some(w.tokenizer.clone()),
                )?;
                let p = ppl_of(&decoded, &eval_ids, a, &device)?;
                push(
                    &mut rows,
                    &format!("{name} {}", mode.label()),
                    format!("{b} b nominal"),
                    bits,
                    p.ppl,
                    t,
                );
            }
        }
    }
    std::fs::remove_file(&file)?;
    write_report(a, &rows, fp, n_params, &path, t0)
}

/// Compresses `w` into `file` and returns its measured bits per parameter.
fn compress_to(
    codec: &dyn WeightCodec,
    w: &LlamaWeights,
    cal: &Calibration,
    mode: Mode,
    file: &Path,
) -> Result<f64> {
    let compressor = Compressor::new(codec);
    let out = std::io::BufWriter::new(std::fs::File::create(file)?);
    let report = compress_llama(&compressor, w, Some(cal), mode, false, out)?;
    let bits = NwcFile::open(file)?.bits_per_param()?;
    tracing::info!(
        mode = mode.label(),
        bits,
        seconds = report.seconds,
        "compressed"
    );
    Ok(bits)
}

fn write_report(
    a: &LlmBenchArgs,
    rows: &[Row],
    fp: Perplexity,
    n_params: usize,
    path: &Path,
    t0: Instant,
) -> Result<()> {
    let series = |m: &str| -> Vec<(f64, f64)> {
        rows.iter()
            .filter(|r| r.method == m)
            .map(|r| (r.bits, r.ppl))
            .collect()
    };
    // Every mode of each codec at exactly 4.00 bits; each codec is then compared at its best.
    let at4 = |codec: &str| -> Vec<(Mode, Option<f64>)> {
        Mode::ALL
            .iter()
            .map(|&m| {
                (
                    m,
                    crate::plot::at(&series(&format!("{codec} {}", m.label())), 4.0),
                )
            })
            .collect()
    };
    let best = |v: &[(Mode, Option<f64>)]| {
        v.iter()
            .filter_map(|&(m, p)| p.map(|p| (m, p)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    };
    let (nwc_modes, ecsq_modes) = (at4("NWC"), at4("ECSQ"));
    let (nwc_best, ecsq_best) = (best(&nwc_modes), best(&ecsq_modes));
    let best_label = |b: Option<(Mode, f64)>| {
        b.map_or("levels+LDLQ".to_string(), |(m, _)| m.label().to_string())
    };
    let nwc = series(&format!("NWC {}", best_label(nwc_best)));
    let ecsq = series(&format!("ECSQ {}", best_label(ecsq_best)));
    let e4 = ecsq_best.map(|b| b.1);
    let (n4, g4, r4) = (
        nwc_best.map(|b| b.1),
        crate::plot::at(&series("GPTQ g128"), 4.0),
        crate::plot::at(&series("RTN g128"), 4.0),
    );
    let mut md = String::new();
    let _ = writeln!(md, "# Perplexity against measured rate on a real Llama\n");
    let _ = writeln!(
        md,
        "Made by `cargo xtask {}` in {:.0} min on this machine (2 CPU cores, NdArray backend).\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        t0.elapsed().as_secs_f64() / 60.0
    );
    let _ = writeln!(
        md,
        "- Model: `{}`, {n_params} parameters. Every matrix is compressed (the tied embedding too, calibrated as the output projection); norms stay in f32 and are counted.\n\
         - Evaluation: perplexity on `{}`, {} non-overlapping windows of {} tokens ({} scored tokens). Calibration: `{}`, {} windows of {} tokens, disjoint from the evaluation text.\n\
         - Rates are measured: NWC = `.nwc` file bytes × 8 / parameters (header, scales, levels, tables, index included; the model is decoded from that file before it is evaluated). RTN/GPTQ = serialized codes + f16 scale + f16 minimum per group of 128, plus the norms.\n\
         - NWC codec: the checkpoint the library embeds (`nwc_codec::DEFAULT_CHECKPOINT`, the trellis refiner); ECSQ runs at the same nominal rates, with the same levels, LDLQ and calibration.\n",
        path.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default(),
        a.texts.eval_text,
        fp.windows,
        fp.ctx,
        fp.tokens,
        a.texts.calib_text.join(" + "),
        a.texts.calib_windows,
        a.texts.ctx
    );
    let _ = writeln!(
        md,
        "| method | setting | bits/param | perplexity | ppl / FP | seconds |\n|---|---|---:|---:|---:|---:|"
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.4} | {:.3} | {:.4} | {:.0} |",
            r.method,
            r.setting,
            r.bits,
            r.ppl,
            r.ppl / fp.ppl,
            r.seconds
        );
    }
    let f = |v: Option<f64>| v.map_or("n/a".into(), |x| format!("{x:.3}"));
    let _ = writeln!(
        md,
        "\n## What each stage is worth at 4.00 bits/param\n\n\
         Perplexity at exactly 4.00 measured bits/param (log-perplexity interpolated between the \
         measured points of each row), FP = {:.3}.\n\n\
         | mode | NWC | ECSQ | NWC / ECSQ |\n|---|---:|---:|---:|",
        fp.ppl
    );
    for ((m, n), (_, e)) in nwc_modes.iter().zip(&ecsq_modes) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            m.label(),
            f(*n),
            f(*e),
            ratio(*n, *e)
        );
    }
    let _ = writeln!(
        md,
        "\nAt exactly 4.00 bits/param, each codec in its best mode: FP {:.3}, NWC {} ({}), ECSQ {} ({}), GPTQ {}, RTN {}.",
        fp.ppl,
        f(n4),
        best_label(nwc_best),
        f(e4),
        best_label(ecsq_best),
        f(g4),
        f(r4)
    );
    let fp_line = vec![(1.0, fp.ppl), (9.0, fp.ppl)];
    let svg = crate::plot::svg(
        &[
            ("FP reference", "#000000", fp_line),
            ("RTN g128", "#7f7f7f", series("RTN g128")),
            ("GPTQ g128", "#1f77b4", series("GPTQ g128")),
            ("NWC data-free", "#ff9896", series("NWC data-free")),
            ("NWC levels", "#ff7f0e", series("NWC levels")),
            ("NWC levels+LDLQ", "#9467bd", series("NWC levels+LDLQ")),
            ("ECSQ (best mode)", "#2ca02c", ecsq),
            ("NWC (best mode)", "#d62728", nwc),
        ],
        "perplexity",
    );
    crate::plot::write_outputs(&a.out, "llm", &md, &svg)?;
    println!(
        "llm@4bit: ppl_ratio={} vs_gptq={} vs_rtn={} vs_ecsq={}",
        ratio(n4, Some(fp.ppl)),
        ratio(n4, g4),
        ratio(n4, r4),
        ratio(n4, e4)
    );
    Ok(())
}
