//! Compresses a real Llama-architecture language model with NWC, writes the `.nwc` file, decodes
//! it, and reports the *measured* bits per parameter, the time of every stage and perplexity
//! before and after.
//!
//! ```text
//! cargo run --release --example compress_llama                 # the committed byte-level Llama
//! cargo xtask fetch smollm2 canterbury
//! cargo run --release --example compress_llama -- \
//!     --model .data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --bits 4 \
//!     --eval-text .data/canterbury/alice29.txt --calib-text .data/canterbury/lcet10.txt
//! ```
//!
//! `--layerwise` streams a model larger than memory: one decoder block at a time, evaluation
//! included, resumable after a kill (rerun the same command):
//!
//! ```text
//! cargo xtask fetch qwen2 canterbury
//! /usr/bin/time -v cargo run --release --example compress_llama -- --layerwise \
//!     --model .data/qwen2/qwen2.5-coder-1.5b-instruct.gguf --bits 4 --ctx 512 \
//!     --calib-windows 16 --eval-windows 8 \
//!     --eval-text .data/canterbury/alice29.txt --calib-text .data/canterbury/lcet10.txt
//! ```
//!
//! Either way the file lands on `--bits` as measured (whole model: the step searched with
//! calibration and LDLQ in the loop; layer by layer: steered block by block). At 3 bits or fewer
//! the whole-model path allocates rate by column with Fisher sensitivities (`--allocate`,
//! `docs/allocation.md`).
//!
//! With no arguments it runs offline on `examples/assets/tiny-llama` (a 1.7 M-parameter byte-level
//! Llama made by `cargo xtask train-llama`), calibrating on its `calibration.txt` and evaluating on
//! its held-out `eval.txt`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nwc::codec_net::burn::backend::NdArray;
use nwc::llama::{
    Calibration, LlamaCompression, Mode, NwcLlamaSource, compress_llama_layerwise, decode_llama,
};
use nwc::llm::{
    FtConfig, Hessians, LazyWeights, Llama, LlamaWeights, ModelSource, Perplexity, cache_file_name,
    calibration_fingerprint, layerwise_perplexity, perplexity,
};
use nwc::tensor::{ChunkConfig, DType, chunk};
use nwc::{CompressOptions, Compressor, EcsqCodec, NwcCodec, NwcFile, RateControl, WeightCodec};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CodecChoice {
    /// The learned NWC codec the library embeds.
    Nwc,
    /// Entropy-coded scalar quantization (the baseline codec).
    Ecsq,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeChoice {
    /// No calibration: uniform quality, no feedback.
    DataFree,
    /// Quality levels from diag(H).
    Levels,
    /// Levels and LDLQ error feedback.
    Ldlq,
    /// Levels, LDLQ, then block-wise recovery fine-tuning of per-column scales and norms.
    Ft,
}

#[derive(Parser, Clone)]
#[command(about = "Compress a Llama with NWC, decode it, report bits/param, timings, perplexity")]
struct Args {
    /// A GGUF file or a Hugging Face directory (default: the committed byte-level Llama).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Target bits per parameter (the printed rate is measured from the file).
    #[arg(long, default_value_t = 4.0)]
    bits: f64,
    /// Codec.
    #[arg(long, value_enum, default_value_t = CodecChoice::Nwc)]
    codec: CodecChoice,
    /// How much calibration to use.
    #[arg(long, value_enum, default_value_t = ModeChoice::Ldlq)]
    mode: ModeChoice,
    /// Held-out evaluation text (default: the default model's eval.txt).
    #[arg(long)]
    eval_text: Option<PathBuf>,
    /// Calibration text, disjoint from the evaluation text (default: its calibration.txt).
    #[arg(long)]
    calib_text: Option<PathBuf>,
    /// Context length of calibration and evaluation windows (tokens; default 256, or the model's
    /// trained length when shorter).
    #[arg(long)]
    ctx: Option<usize>,
    /// Calibration windows.
    #[arg(long, default_value_t = 64)]
    calib_windows: usize,
    /// Evaluation windows.
    #[arg(long, default_value_t = 64)]
    eval_windows: usize,
    /// Where to write the .nwc file.
    #[arg(long, default_value = "target/compress_llama/model.nwc")]
    out: PathBuf,
    /// Also export the decoded model as a Hugging Face directory.
    #[arg(long)]
    export_hf: Option<PathBuf>,
    /// dtype of the exported weights: f32, f16 or bf16.
    #[arg(long, default_value = "f16")]
    export_dtype: String,
    /// Incoherence processing: every coded matrix rotated to `U W Vᵀ` (random-sign block
    /// Hadamard) and its Hessian to `V H Vᵀ` before coding; the decoder rotates back.
    #[arg(long)]
    incoherence: bool,
    /// One decoder block at a time in bounded memory, resumable (levels or LDLQ modes;
    /// the reference and decoded perplexities are computed block by block too).
    #[arg(long)]
    layerwise: bool,
    /// Rate allocation by column with Fisher sensitivities (`docs/allocation.md`; whole-model
    /// path): auto turns it on at 3 bits or fewer, where it was measured to win.
    #[arg(long, value_enum, default_value_t = Allocate::Auto)]
    allocate: Allocate,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Allocate {
    /// On at `--bits` ≤ 3 (without incoherence processing), off above.
    Auto,
    On,
    Off,
}

fn default_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/assets/tiny-llama")
}

/// The compressor options: the codec's defaults, with incoherence processing when asked.
fn options(codec: &dyn WeightCodec, incoherence: bool) -> CompressOptions {
    CompressOptions {
        incoherence,
        ..CompressOptions::for_codec(codec)
    }
}

/// `p` relative to the working directory when it lies below it (clean paths in the report).
fn rel(p: &Path) -> PathBuf {
    let abs = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    std::env::current_dir()
        .ok()
        .and_then(|d| abs.strip_prefix(d).ok().map(Path::to_path_buf))
        .unwrap_or(abs)
}

fn read_text(p: &Path) -> Result<String> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn bar(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} {{msg}}"))
            .expect("template"),
    )
}

fn ppl(model: &Llama<NdArray>, ids: &[u32], a: &Args, what: &str) -> Result<Perplexity> {
    let pb = bar(a.eval_windows as u64, what);
    let p = perplexity(
        model,
        ids,
        a.ctx.unwrap_or(256),
        a.eval_windows,
        &Default::default(),
        |d, n| {
            pb.set_length(n as u64);
            pb.set_position(d as u64);
        },
    )?;
    pb.finish_and_clear();
    Ok(p)
}

/// The codec at the requested rate.
fn make_codec(a: &Args, src: &dyn ModelSource) -> Result<Box<dyn WeightCodec>> {
    Ok(match a.codec {
        CodecChoice::Ecsq => Box::new(EcsqCodec::for_bits(a.bits as f32)?),
        CodecChoice::Nwc => {
            let codec = NwcCodec::<NdArray>::default_on(&Default::default())?;
            if codec.is_trellis() {
                // The shipped trellis codec has a continuous step; this sets the nominal rate of
                // the coded matrices (the file also counts norms, config and tokenizer).
                Box::new(codec.with_step(nwc::codec_net::tcq_step_for_bits(a.bits as f32))?)
            } else {
                // Pick the latent step from a sample of this model's own normalized chunks
                // (matrices read one at a time).
                let mut sample = Vec::new();
                for name in src.names() {
                    let t = src.tensor(&name)?;
                    let Some((r, c)) = t.matrix_dims() else {
                        continue;
                    };
                    let v = t.to_f32()?;
                    let m = ndarray::ArrayView2::from_shape((r, c), &v)?;
                    let ch = chunk(m, &ChunkConfig::default())?;
                    let every = (ch.n_chunks() / 512).max(1);
                    for k in (0..ch.n_chunks()).step_by(every) {
                        sample.extend_from_slice(&ch.data()[k * 16..(k + 1) * 16]);
                    }
                }
                let index = codec.step_index_for_rate(&sample, a.bits)?;
                Box::new(codec.with_step_index(index)?)
            }
        }
    })
}

/// The codec at the step where this job (mode, calibration) writes `--bits` measured bits per
/// parameter of this model, file side information included; and the rate the search measured.
fn tuned_codec(
    a: &Args,
    w: &LlamaWeights,
    mode: Mode,
    calibration: Option<&Calibration>,
) -> Result<(Box<dyn WeightCodec>, f64)> {
    fn search<C: RateControl + 'static>(
        start: C,
        w: &LlamaWeights,
        bits: f64,
        mode: Mode,
        calibration: Option<&Calibration>,
        incoherence: bool,
    ) -> Result<(Box<dyn WeightCodec>, f64)> {
        let probe = Compressor::new(&start).with_options(options(&start, incoherence))?;
        let mut job = LlamaCompression::new(&probe).mode(mode);
        if let Some(c) = calibration {
            job = job.calibration(c);
        }
        let (codec, measured) = job.tune_to_rate(&start, w, bits)?;
        Ok((Box::new(codec), measured))
    }
    match a.codec {
        CodecChoice::Ecsq => search(
            EcsqCodec::for_bits(a.bits as f32)?,
            w,
            a.bits,
            mode,
            calibration,
            a.incoherence,
        ),
        CodecChoice::Nwc => {
            let codec = NwcCodec::<NdArray>::default_on(&Default::default())?;
            if !codec.is_trellis() {
                bail!("the embedded checkpoint has no continuous rate control");
            }
            let start = codec.with_step(nwc::codec_net::tcq_step_for_bits(a.bits as f32))?;
            search(start, w, a.bits, mode, calibration, a.incoherence)
        }
    }
}

/// `cal` with rate allocation by column: each matrix's loss sensitivity from the Fisher
/// information of 4 calibration windows, errors weighted by diag(H), steps within 1/16..16 of
/// the file's, across the model (the setting `docs/allocation.md` measured).
fn allocate(
    cal: Calibration,
    w: &LlamaWeights,
    calib_ids: &[u32],
    ctx: usize,
) -> Result<Calibration> {
    let t = Instant::now();
    let windows: Vec<Vec<u32>> = nwc::llm::windows(calib_ids, ctx, 4)?
        .into_iter()
        .map(<[u32]>::to_vec)
        .collect();
    let pb = bar(windows.len() as u64, "Fisher windows");
    let cal = cal.with_fisher_allocation::<nwc::codec_net::burn::backend::Autodiff<NdArray>>(
        w,
        &windows,
        &Default::default(),
        nwc::llama::AllocationOptions::FISHER,
        |d, _| pb.set_position(d as u64),
    )?;
    pb.finish_and_clear();
    println!(
        "allocate   rate by column, Fisher sensitivities of {} windows × {ctx} tokens   [{:.1} s]",
        windows.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(cal)
}

fn layerwise_ppl(src: &dyn ModelSource, ids: &[u32], a: &Args, what: &str) -> Result<Perplexity> {
    let pb = bar(src.config().layers as u64 + 1, what);
    let p = layerwise_perplexity::<NdArray>(
        src,
        ids,
        a.ctx.unwrap_or(256),
        a.eval_windows,
        &Default::default(),
        |d, _| pb.set_position(d as u64),
    )?;
    pb.finish_and_clear();
    Ok(p)
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in GB; 0 elsewhere.
fn peak_rss_gb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1e6)
}

/// `--layerwise`: the same report, one decoder block in memory at a time.
fn run_layerwise(a: &Args, model_path: &Path, eval_path: &Path, calib_path: &Path) -> Result<()> {
    let mode = match a.mode {
        ModeChoice::DataFree => Mode::DataFree,
        ModeChoice::Levels => Mode::Levels,
        ModeChoice::Ldlq => Mode::LevelsLdlq,
        ModeChoice::Ft => {
            bail!("--layerwise runs data-free, levels or ldlq (fine-tuning needs the whole model)")
        }
    };
    let t = Instant::now();
    let src = LazyWeights::open(model_path)
        .with_context(|| format!("opening {}", rel(model_path).display()))?;
    let cfg = src.config().clone();
    println!(
        "model      {} — {:?}, {} params, {} layers, hidden {}, vocab {} (read lazily)   [open {:.1} s]",
        rel(model_path).display(),
        cfg.family,
        cfg.n_params(),
        cfg.layers,
        cfg.hidden,
        cfg.vocab,
        t.elapsed().as_secs_f64()
    );
    let a = Args {
        ctx: Some(a.ctx.unwrap_or(256).min(cfg.max_positions)),
        ..a.clone()
    };
    let ctx = a.ctx.expect("set");
    let eval_ids = src.tokenizer().encode(&read_text(eval_path)?)?;
    let calib_ids = src.tokenizer().encode(&read_text(calib_path)?)?;
    let t = Instant::now();
    let before = layerwise_ppl(&src, &eval_ids, &a, "blocks (reference)")?;
    println!(
        "reference  perplexity {:.4} on {} ({} windows × {} tokens, block by block)   [{:.1} s, peak RSS {:.2} GB]",
        before.ppl,
        rel(eval_path).display(),
        before.windows,
        before.ctx,
        t.elapsed().as_secs_f64(),
        peak_rss_gb()
    );
    let windows: Vec<Vec<u32>> = if mode == Mode::DataFree {
        Vec::new()
    } else {
        nwc::llm::windows(&calib_ids, ctx, a.calib_windows)?
            .into_iter()
            .map(<[u32]>::to_vec)
            .collect()
    };
    let codec = make_codec(&a, &src)?;
    let compressor = Compressor::new(codec.as_ref());
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let n_tensors = src.names().len() as u64;
    let pb = bar(n_tensors, "tensors");
    let t = Instant::now();
    let progress = |p: nwc::llama::LayerwiseProgress<'_>| {
        pb.inc(1);
        pb.set_message(format!("block {}/{}", p.blocks_done, p.blocks));
    };
    // Steered block by block to the measured rate (`docs/llm-large.md`, "Exact rates").
    let job = LlamaCompression::new(&compressor)
        .mode(mode)
        .windows(&windows);
    let b = a.bits as f32;
    let r = match a.codec {
        CodecChoice::Ecsq => {
            job.run_layerwise_to_rate(&EcsqCodec::for_bits(b)?, a.bits, &src, &a.out, progress)?
        }
        CodecChoice::Nwc => {
            let codec = NwcCodec::<NdArray>::default_on(&Default::default())?;
            if codec.is_trellis() {
                let start = codec.with_step(nwc::codec_net::tcq_step_for_bits(b))?;
                job.run_layerwise_to_rate(&start, a.bits, &src, &a.out, progress)?
            } else {
                compress_llama_layerwise(&compressor, &src, mode, &windows, true, &a.out, progress)?
            }
        }
    };
    pb.finish_and_clear();
    let s = r.stages;
    println!(
        "compress   {:?} codec, mode {}, {} calibration windows × {ctx} of {} → {} ({} bytes; from block {})   [{:.1} s: load {:.1}, forward {:.1}, factor {:.1}, encode {:.1}, write {:.1}; peak RSS {:.2} GB]",
        a.codec,
        mode.label(),
        windows.len(),
        rel(calib_path).display(),
        rel(&a.out).display(),
        r.report.file_bytes,
        r.first_block,
        t.elapsed().as_secs_f64(),
        s.load,
        s.forward,
        s.factor,
        s.encode,
        s.write,
        peak_rss_gb()
    );
    let bits = NwcFile::open(&a.out)?.bits_per_param()?;
    println!(
        "rate       {bits:.4} bits/param measured (file bytes × 8 / {} params; codec step nominal for {} bits, not searched layer by layer)",
        r.report.n_params(),
        a.bits
    );
    let t = Instant::now();
    let decoded = NwcLlamaSource::open(&a.out, codec.as_ref(), None)?;
    let after = layerwise_ppl(&decoded, &eval_ids, &a, "blocks (decoded)")?;
    println!(
        "decoded    perplexity {:.4} (decoded block by block)   [{:.1} s, peak RSS {:.2} GB]",
        after.ppl,
        t.elapsed().as_secs_f64(),
        peak_rss_gb()
    );
    println!(
        "result     {bits:.4} bits/param, perplexity {:.4} → {:.4} ({:+.2} %)",
        before.ppl,
        after.ppl,
        100.0 * (after.ppl / before.ppl - 1.0)
    );
    Ok(())
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut a = Args::parse();
    let device = Default::default();
    let model_path = a.model.clone().unwrap_or_else(default_model);
    let dir = if model_path.is_dir() {
        model_path.clone()
    } else {
        default_model()
    };
    let eval_path = a.eval_text.clone().unwrap_or_else(|| dir.join("eval.txt"));
    let calib_path = a
        .calib_text
        .clone()
        .unwrap_or_else(|| dir.join("calibration.txt"));
    if eval_path == calib_path {
        bail!("calibration and evaluation text must differ");
    }
    if a.layerwise {
        return run_layerwise(&a, &model_path, &eval_path, &calib_path);
    }

    let t = Instant::now();
    let w = LlamaWeights::open(&model_path)
        .with_context(|| format!("loading {}", rel(&model_path).display()))?;
    let n_params = w.n_params();
    println!(
        "model      {} — {n_params} params, {} layers, hidden {}, vocab {}   [load {:.1} s]",
        rel(&model_path).display(),
        w.config.layers,
        w.config.hidden,
        w.config.vocab,
        t.elapsed().as_secs_f64()
    );
    a.ctx = Some(a.ctx.unwrap_or(256.min(w.config.max_positions)));
    let ctx = a.ctx.expect("set");
    let eval_ids = w.tokenizer.encode(&read_text(&eval_path)?)?;
    let calib_ids = w.tokenizer.encode(&read_text(&calib_path)?)?;

    let t = Instant::now();
    let reference = Llama::<NdArray>::from_weights(&w, &device)?;
    let before = ppl(&reference, &eval_ids, &a, "eval windows (reference)")?;
    println!(
        "reference  perplexity {:.4} on {} ({} windows × {} tokens)   [{:.1} s]",
        before.ppl,
        rel(&eval_path).display(),
        before.windows,
        before.ctx,
        t.elapsed().as_secs_f64()
    );

    let mode = match a.mode {
        ModeChoice::DataFree => Mode::DataFree,
        ModeChoice::Levels => Mode::Levels,
        ModeChoice::Ldlq => Mode::LevelsLdlq,
        ModeChoice::Ft => Mode::LevelsLdlqFt,
    };
    let calibration = if mode == Mode::DataFree {
        None
    } else {
        let t = Instant::now();
        let pb = bar(a.calib_windows as u64, "calibration windows");
        let fp = calibration_fingerprint(&w, &calib_ids, ctx);
        let cache = a
            .out
            .parent()
            .unwrap_or(Path::new("."))
            .join(cache_file_name(&fp));
        let h = Hessians::collect(
            &reference,
            &calib_ids,
            ctx,
            a.calib_windows,
            Some(&cache),
            fp,
            &device,
            |d, n| {
                pb.set_length(n as u64);
                pb.set_position(d as u64);
            },
        )?;
        pb.finish_and_clear();
        // Fine-tuning windows: the first 8 calibration windows (the last 2 held out for early
        // stopping).
        let ft_windows = nwc::llm::windows(&calib_ids, ctx, 8)?
            .into_iter()
            .map(<[u32]>::to_vec)
            .collect();
        let cal = if a.incoherence {
            Calibration::with_incoherence(&h, &w.config)?
        } else {
            Calibration::new(&h, &w.config)?
        }
        .with_finetune(ft_windows, FtConfig::default());
        println!(
            "calibrate  {} windows × {} tokens of {} → Hessians of {} layer inputs (cache {})   [{:.1} s]",
            h.windows(),
            ctx,
            rel(&calib_path).display(),
            nwc::llm::Site::all(&w.config).len(),
            rel(&cache).display(),
            t.elapsed().as_secs_f64()
        );
        let allocating = match a.allocate {
            Allocate::On => true,
            Allocate::Off => false,
            Allocate::Auto => a.bits <= 3.0 && !a.incoherence,
        };
        let cal = if allocating {
            allocate(cal, &w, &calib_ids, ctx)?
        } else {
            cal
        };
        Some(cal)
    };

    let t = Instant::now();
    // The codec step at which this job's file measures the target rate (calibration and LDLQ
    // in the loop), then the file.
    let (codec, searched) = tuned_codec(&a, &w, mode, calibration.as_ref())?;
    println!(
        "rate search {:?} codec step for {} bits/param: {searched:.4} measured   [{:.1} s]",
        a.codec,
        a.bits,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let pb = bar(w.tensors.len() as u64, "tensors");
    let compressor = Compressor::new(codec.as_ref())
        .with_options(options(codec.as_ref(), a.incoherence))?
        .with_progress(|_, d, n| {
            pb.set_length(n as u64);
            pb.set_position(d as u64);
        });
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Written whole or not at all: `OUT.partial`, renamed when complete.
    let mut job = LlamaCompression::new(&compressor).mode(mode);
    if let Some(c) = &calibration {
        job = job.calibration(c);
    }
    let report = job.run_to_file(&w, &a.out)?;
    pb.finish_and_clear();
    let file = NwcFile::open(&a.out)?;
    let bits = file.bits_per_param()?;
    println!(
        "compress   {:?} codec, mode {} → {} ({} bytes, tokenizer and config included)   [{:.1} s]",
        a.codec,
        mode.label(),
        rel(&a.out).display(),
        report.file_bytes,
        t.elapsed().as_secs_f64()
    );
    println!(
        "rate       {bits:.4} bits/param measured (file bytes × 8 / {n_params} params; target {})",
        a.bits
    );

    let t = Instant::now();
    let decoded = decode_llama(&file, codec.as_ref(), None)?;
    let model = Llama::<NdArray>::from_weights(&decoded, &device)?;
    println!(
        "decode     {} tensors   [{:.1} s]",
        decoded.tensors.len(),
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let after = ppl(&model, &eval_ids, &a, "eval windows (decoded)")?;
    println!(
        "decoded    perplexity {:.4}   [{:.1} s]",
        after.ppl,
        t.elapsed().as_secs_f64()
    );
    println!(
        "result     {bits:.4} bits/param, perplexity {:.4} → {:.4} ({:+.2} %)",
        before.ppl,
        after.ppl,
        100.0 * (after.ppl / before.ppl - 1.0)
    );
    if let Some(dir) = &a.export_hf {
        let dtype = match a.export_dtype.as_str() {
            "f32" => DType::F32,
            "f16" => DType::F16,
            "bf16" => DType::BF16,
            other => bail!("--export-dtype {other}: use f32, f16 or bf16"),
        };
        decoded.save_hf(dir, dtype)?;
        println!("export     Hugging Face directory {}", rel(dir).display());
    }
    Ok(())
}
