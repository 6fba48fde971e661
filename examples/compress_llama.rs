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
//! With no arguments it runs offline on `examples/assets/tiny-llama` (a 1.7 M-parameter byte-level
//! Llama made by `cargo xtask train-llama`), calibrating on its `calibration.txt` and evaluating on
//! its held-out `eval.txt`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nwc::codec_net::burn::backend::NdArray;
use nwc::llama::{Calibration, Mode, compress_llama, decode_llama};
use nwc::llm::{
    FtConfig, Hessians, Llama, LlamaWeights, Perplexity, cache_file_name, calibration_fingerprint,
    perplexity,
};
use nwc::tensor::{ChunkConfig, DType, chunk};
use nwc::{Compressor, EcsqCodec, NwcCodec, NwcFile, WeightCodec};

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

#[derive(Parser)]
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
}

fn default_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/assets/tiny-llama")
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

    let t = Instant::now();
    let w = LlamaWeights::open(&model_path)
        .with_context(|| format!("loading {}", model_path.display()))?;
    let n_params = w.n_params();
    println!(
        "model      {} — {n_params} params, {} layers, hidden {}, vocab {}   [load {:.1} s]",
        model_path.display(),
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
        eval_path.display(),
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
        let cal = Calibration::new(&h, &w.config)?.with_finetune(ft_windows, FtConfig::default());
        println!(
            "calibrate  {} windows × {} tokens of {} → Hessians of {} layer inputs (cache {})   [{:.1} s]",
            h.windows(),
            ctx,
            calib_path.display(),
            nwc::llm::Site::all(&w.config).len(),
            cache.display(),
            t.elapsed().as_secs_f64()
        );
        Some(cal)
    };

    let t = Instant::now();
    let codec: Box<dyn WeightCodec> = match a.codec {
        CodecChoice::Ecsq => Box::new(EcsqCodec::for_bits(a.bits as f32)?),
        CodecChoice::Nwc => {
            let codec = NwcCodec::<NdArray>::default_on(&device)?;
            if codec.is_trellis() {
                // The shipped trellis codec has a continuous step; this sets the nominal rate of
                // the coded matrices (the file also counts norms, config and tokenizer).
                Box::new(codec.with_step(nwc::codec_net::tcq_step_for_bits(a.bits as f32))?)
            } else {
                // Pick the latent step from a sample of this model's own normalized chunks.
                let mut sample = Vec::new();
                for t in w.tensors.values().filter(|t| t.matrix_dims().is_some()) {
                    let (r, c) = t.matrix_dims().expect("matrix");
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
    };
    let pb = bar(w.tensors.len() as u64, "tensors");
    let compressor = Compressor::new(codec.as_ref()).with_progress(|_, d, n| {
        pb.set_length(n as u64);
        pb.set_position(d as u64);
    });
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::io::BufWriter::new(std::fs::File::create(&a.out)?);
    let report = compress_llama(&compressor, &w, calibration.as_ref(), mode, true, out)?;
    pb.finish_and_clear();
    let file = NwcFile::open(&a.out)?;
    let bits = file.bits_per_param()?;
    println!(
        "compress   {:?} codec, mode {} → {} ({} bytes, tokenizer and config included)   [{:.1} s]",
        a.codec,
        mode.label(),
        a.out.display(),
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
        println!("export     Hugging Face directory {}", dir.display());
    }
    Ok(())
}
