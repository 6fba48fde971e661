//! `nwc`: compress model weights into `.nwc` files, inspect them, decode them, evaluate them.
//!
//! ```text
//! cargo install --path crates/nwc-cli
//! nwc compress model.safetensors -o model.nwc --bits 4
//! nwc compress qwen.gguf -o qwen.nwc --bits 4 --calib text.txt --mode ldlq
//! nwc compress qwen.gguf -o part-1.nwc --bits 4 --calib text.txt --shard 1/3   # on 3 machines
//! nwc merge part-0.nwc part-1.nwc part-2.nwc -o qwen.nwc                        # same bytes
//! nwc inspect model.nwc --json
//! nwc decompress model.nwc -o decoded.safetensors
//! nwc eval qwen.nwc --text held-out.txt
//! ```
//!
//! Exit codes: 0 success, 1 any error (the message names the file and, where there is one, the
//! tensor), 2 a usage error. `--json` prints one JSON object on stdout instead of the text
//! report. Progress bars go to stderr (hidden when it is not a terminal); logs go through
//! `tracing` (`RUST_LOG=nwc=info`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use nwc::codec_net::burn::backend::NdArray;
use nwc::format::Payload;
use nwc::llama::{LlamaCompression, Mode, NwcLlamaSource};
use nwc::llm::{LazyWeights, ModelSource, layerwise_perplexity};
use nwc::tensor::DType;
use nwc::{
    CompressOptions, CompressReport, EcsqCodec, NwcCodec, NwcFile, RateControl, TcqCodec, Uniform,
    WeightCodec, compress_file_to_rate,
};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "nwc",
    version,
    about = "Neural Weight Compression: model weights into .nwc files and back"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compress a model (safetensors, GGUF, Hugging Face directory, CTranslate2) into a .nwc
    /// file. Llama-family models (Llama, Qwen2) are compressed one decoder block at a time,
    /// with optional calibration; any other model tensor by tensor at the target rate.
    Compress(CompressArgs),
    /// Join the shard files of a compression spread over machines (`compress --shard K/N`)
    /// into one .nwc file, byte for byte the file one machine would have written.
    Merge(MergeArgs),
    /// Decode a .nwc file: to a .safetensors file, or (a Llama .nwc) to a .gguf file llama.cpp
    /// loads or a Hugging Face directory.
    Decompress(DecompressArgs),
    /// List a .nwc file's codec, checkpoint and tensors with their measured bits per parameter.
    Inspect(InspectArgs),
    /// Perplexity of a Llama-family model (GGUF or Hugging Face directory) or of a Llama .nwc
    /// on a text, one decoder block in memory at a time.
    Eval(EvalArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CodecChoice {
    /// The learned codec this build embeds.
    Nwc,
    /// Entropy-coded scalar quantization (the baseline).
    Ecsq,
    /// Entropy-constrained trellis-coded quantization.
    Tcq,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeChoice {
    /// No calibration: one quality for every column.
    DataFree,
    /// Quality levels from the Hessian diagonal.
    Levels,
    /// Levels and LDLQ error feedback.
    Ldlq,
    /// Levels, LDLQ and block-wise fine-tuning (the whole model in memory).
    Ft,
}

#[derive(clap::Args)]
struct CompressArgs {
    /// The model: a .safetensors or .gguf file, a Hugging Face directory, a CTranslate2 model.bin.
    model: PathBuf,
    /// The .nwc file to write (whole or not at all).
    #[arg(short, long)]
    output: PathBuf,
    /// Target bits per parameter, as measured from the file (side information included):
    /// generic models are searched to it, Llama models steered to it block by block. A shard
    /// (and `--mode ft`) uses it as the codec's nominal rate; the report gives the measured rate.
    #[arg(long, default_value_t = 4.0)]
    bits: f64,
    /// Codec.
    #[arg(long, value_enum, default_value_t = CodecChoice::Nwc)]
    codec: CodecChoice,
    /// Calibration text for a Llama-family model (plain UTF-8).
    #[arg(long)]
    calib: Option<PathBuf>,
    /// How to use the calibration (default: ldlq with --calib, else data-free).
    #[arg(long, value_enum)]
    mode: Option<ModeChoice>,
    /// Context length of calibration windows (tokens; at most the model's).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Calibration windows.
    #[arg(long, default_value_t = 16)]
    calib_windows: usize,
    /// Code only shard K of N (0-based) of a Llama-family model: its share of the decoder
    /// blocks, into a shard file for `nwc merge` (Slurm job arrays, Kubernetes Indexed Jobs:
    /// docs/llm-large.md).
    #[arg(long, value_name = "K/N")]
    shard: Option<nwc::llama::Shard>,
    /// Llama models: use --bits as the codec's nominal rate instead of steering the file to it
    /// (no search passes on the first block and the embedding; what a shard does).
    #[arg(long)]
    nominal: bool,
    /// Llama models with calibration: calibrate each block on the coded model's activations,
    /// coding `W P` so the block reproduces the original block's outputs from them (asymmetric
    /// calibration, blend ALPHA in 0..=1; three forward passes per block instead of one).
    #[arg(long, value_name = "ALPHA")]
    asymmetric: Option<f64>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct MergeArgs {
    /// The shard files, in any order.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// The .nwc file to write (whole or not at all).
    #[arg(short, long)]
    output: PathBuf,
}

#[derive(clap::Args)]
struct DecompressArgs {
    /// The .nwc file.
    input: PathBuf,
    /// Where to write: a path ending in .safetensors, or (Llama .nwc files) in .gguf, or a
    /// directory (Hugging Face layout).
    #[arg(short, long)]
    output: PathBuf,
    /// dtype of the decoded weights: f32, f16 or bf16 (default: the original's; f16 for a
    /// Hugging Face directory).
    #[arg(long)]
    dtype: Option<String>,
    /// A learned-codec checkpoint file, for .nwc files made with a checkpoint this build does
    /// not embed.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The .nwc file.
    input: PathBuf,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// A Llama-family GGUF file or Hugging Face directory, or a Llama .nwc file.
    model: PathBuf,
    /// The text to score (plain UTF-8).
    #[arg(long)]
    text: PathBuf,
    /// Context length of each window (tokens; at most the model's).
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Non-overlapping windows from the start of the text.
    #[arg(long, default_value_t = 8)]
    windows: usize,
    /// A learned-codec checkpoint file (for a .nwc made with one this build does not embed).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Print one JSON object instead of the text report.
    #[arg(long)]
    json: bool,
}

/// mimalloc keeps the large buffers of decoded tensors for the next one instead of giving
/// them back to the OS and faulting them in again (`docs/perf.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Compress(a) => compress(&a),
        Command::Merge(a) => merge(&a),
        Command::Decompress(a) => decompress(&a),
        Command::Inspect(a) => inspect(&a),
        Command::Eval(a) => eval(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

fn bar(len: u64, what: &str) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template(&format!("{{bar:40}} {{pos}}/{{len}} {what} {{msg}}"))
            .expect("template"),
    )
}

fn read_text(p: &Path) -> Result<String> {
    let b = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(String::from_utf8_lossy(&b).into_owned())
}

fn parse_dtype(s: &str) -> Result<DType> {
    Ok(match s {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("--dtype {other}: use f32, f16 or bf16"),
    })
}

/// A Llama-family model at `path`, or why it is not one.
fn open_llama(path: &Path) -> std::result::Result<LazyWeights, String> {
    let gguf = path.extension().is_some_and(|e| e == "gguf");
    if !(path.is_dir() || gguf) {
        return Err("not a GGUF file or a directory".into());
    }
    LazyWeights::open(path).map_err(|e| e.to_string())
}

/// The codec at a nominal rate (Llama models: the rate of the coded matrices before
/// calibration; the file's measured rate is reported).
fn nominal_codec(choice: CodecChoice, bits: f64) -> Result<Box<dyn WeightCodec>> {
    let bits = bits as f32;
    Ok(match choice {
        CodecChoice::Ecsq => Box::new(EcsqCodec::for_bits(bits)?),
        CodecChoice::Tcq => Box::new(TcqCodec::for_bits(bits)?),
        CodecChoice::Nwc => Box::new(nwc_at(bits)?),
    })
}

/// The embedded learned codec at a nominal rate.
fn nwc_at(bits: f32) -> Result<NwcCodec<NdArray>> {
    let codec = NwcCodec::<NdArray>::default_on(&Default::default())?;
    if !codec.is_trellis() {
        bail!("the embedded checkpoint has no continuous rate control");
    }
    Ok(codec.with_step(nwc::codec_net::tcq_step_for_bits(bits))?)
}

fn compress(a: &CompressArgs) -> Result<()> {
    if !a.model.exists() {
        bail!("{}: no such file or directory", a.model.display());
    }
    let start = Instant::now();
    let mode = match (a.mode, &a.calib) {
        (Some(ModeChoice::DataFree) | None, None) => Mode::DataFree,
        (Some(m), None) => bail!("--mode {m:?} needs --calib TEXT"),
        (Some(ModeChoice::DataFree), Some(_)) => Mode::DataFree,
        (Some(ModeChoice::Levels), Some(_)) => Mode::Levels,
        (Some(ModeChoice::Ldlq) | None, Some(_)) => Mode::LevelsLdlq,
        (Some(ModeChoice::Ft), Some(_)) => Mode::LevelsLdlqFt,
    };
    let (report, kind) = match open_llama(&a.model) {
        Ok(src) => (compress_llama(a, &src, mode)?, "llama"),
        Err(why) if a.shard.is_some() => {
            bail!(
                "{}: --shard splits a Llama-family model by decoder blocks ({why})",
                a.model.display()
            )
        }
        Err(why) => {
            if a.calib.is_some() {
                bail!(
                    "{}: calibration needs a Llama-family model ({why})",
                    a.model.display()
                );
            }
            // Said, not logged: a user who expected a Llama learns why it was not taken as one.
            eprintln!(
                "note: {} is not a Llama-family model ({why}); compressing it as a generic model",
                a.model.display()
            );
            let input = if a.model.is_dir() {
                a.model.join("model.safetensors")
            } else {
                a.model.clone()
            };
            (compress_generic(a, &input)?, "generic")
        }
    };
    let file = NwcFile::open(&a.output)?;
    let bits = file.bits_per_param()?;
    let seconds = start.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            json!({
                "model": a.model,
                "output": a.output,
                "kind": kind,
                "codec": format!("{:?}", file.reader()?.header().codec),
                "mode": mode.label(),
                "target_bits": a.bits,
                "bits_per_param": bits,
                "file_bytes": report.file_bytes,
                "params": report.n_params(),
                "coded_nmse": report.coded_nmse(),
                "seconds": seconds,
            })
        );
    } else {
        println!(
            "{} → {} ({} bytes): {bits:.4} bits/param measured over {} parameters ({kind}, {:?}, {}; coded NMSE {:.3e})   [{seconds:.1} s]",
            a.model.display(),
            a.output.display(),
            report.file_bytes,
            report.n_params(),
            a.codec,
            mode.label(),
            report.coded_nmse()
        );
    }
    Ok(())
}

/// A Llama-family model, one decoder block at a time (resumable: rerun the same command); with
/// fine-tuning, the whole model in memory.
fn compress_llama(a: &CompressArgs, src: &LazyWeights, mode: Mode) -> Result<CompressReport> {
    if mode == Mode::LevelsLdlqFt {
        if a.shard.is_some() {
            bail!("--mode ft fine-tunes the whole model in memory and cannot be sharded");
        }
        return compress_llama_ft(a);
    }
    let cfg = src.config();
    let windows: Vec<Vec<u32>> = match &a.calib {
        Some(text) if mode != Mode::DataFree => {
            let ids = src.tokenizer().encode(&read_text(text)?)?;
            let ctx = a.ctx.min(cfg.max_positions);
            nwc::llm::windows(&ids, ctx, a.calib_windows)
                .with_context(|| format!("calibration text {}", text.display()))?
                .into_iter()
                .map(<[u32]>::to_vec)
                .collect()
        }
        _ => Vec::new(),
    };
    let codec = nominal_codec(a.codec, a.bits)?;
    let compressor = nwc::Compressor::new(codec.as_ref());
    let pb = bar(src.names().len() as u64, "tensors");
    let progress = |p: nwc::llama::LayerwiseProgress<'_>| {
        pb.inc(1);
        pb.set_message(format!("block {}/{}", p.blocks_done, p.blocks));
    };
    let mut job = LlamaCompression::new(&compressor)
        .mode(mode)
        .windows(&windows)
        .embed_tokenizer(true)
        .asymmetric(a.asymmetric);
    if let Some(shard) = a.shard {
        job = job.shard(shard);
    }
    let (out, b) = (&a.output, a.bits as f32);
    let r = match (a.shard.is_some() || a.nominal, a.codec) {
        (true, _) => job.run_layerwise(src, out, progress),
        (false, CodecChoice::Ecsq) => {
            job.run_layerwise_to_rate(&EcsqCodec::for_bits(b)?, a.bits, src, out, progress)
        }
        (false, CodecChoice::Tcq) => {
            job.run_layerwise_to_rate(&TcqCodec::for_bits(b)?, a.bits, src, out, progress)
        }
        (false, CodecChoice::Nwc) => {
            job.run_layerwise_to_rate(&nwc_at(b)?, a.bits, src, out, progress)
        }
    }
    .with_context(|| format!("compressing {}", a.model.display()))?;
    pb.finish_and_clear();
    Ok(r.report)
}

fn merge(a: &MergeArgs) -> Result<()> {
    let bytes = nwc::llama::merge_shards(&a.shards, &a.output)?;
    println!(
        "{} shards → {} ({bytes} bytes)",
        a.shards.len(),
        a.output.display()
    );
    Ok(())
}

/// Calibration, levels, LDLQ and block-wise fine-tuning on the whole model in memory.
fn compress_llama_ft(a: &CompressArgs) -> Result<CompressReport> {
    let w = nwc::llm::LlamaWeights::open(&a.model)
        .with_context(|| format!("loading {}", a.model.display()))?;
    let text = a.calib.as_ref().context("--mode ft needs --calib TEXT")?;
    let ids = w.tokenizer.encode(&read_text(text)?)?;
    let ctx = a.ctx.min(w.config.max_positions);
    let codec = nominal_codec(a.codec, a.bits)?;
    let pb = bar(w.tensors.len() as u64, "calibration windows");
    let tensors = pb.clone();
    let compressor = nwc::Compressor::new(codec.as_ref()).with_progress(move |_, d, n| {
        tensors.set_message("tensors");
        tensors.set_length(n as u64);
        tensors.set_position(d as u64);
    });
    let r = nwc::llama::compress_llama_ft_file(
        &compressor,
        &w,
        &ids,
        ctx,
        a.calib_windows,
        &a.output,
        |stage, d, n| {
            pb.set_message(stage.to_string());
            pb.set_length(n as u64);
            pb.set_position(d as u64);
        },
    )
    .with_context(|| format!("compressing {}", a.model.display()))?;
    pb.finish_and_clear();
    Ok(r)
}

/// Any other model, tensor by tensor, tuned to the target measured rate.
fn compress_generic(a: &CompressArgs, input: &Path) -> Result<CompressReport> {
    fn run<C: RateControl>(
        c: &C,
        input: &Path,
        output: &Path,
        bits: f64,
    ) -> Result<CompressReport> {
        let (_, report) = compress_file_to_rate(
            c,
            &CompressOptions::for_codec(c),
            input,
            output,
            &Uniform,
            bits,
        )
        .with_context(|| format!("compressing {}", input.display()))?;
        Ok(report)
    }
    let pb = ProgressBar::new_spinner().with_message(format!("tuning to {} bits/param", a.bits));
    pb.enable_steady_tick(std::time::Duration::from_millis(200));
    let r = match a.codec {
        CodecChoice::Ecsq => run(
            &EcsqCodec::for_bits(a.bits as f32)?,
            input,
            &a.output,
            a.bits,
        ),
        CodecChoice::Tcq => run(
            &TcqCodec::for_bits(a.bits as f32)?,
            input,
            &a.output,
            a.bits,
        ),
        CodecChoice::Nwc => run(
            &NwcCodec::<NdArray>::default_on(&Default::default())?,
            input,
            &a.output,
            a.bits,
        ),
    };
    pb.finish_and_clear();
    r
}

fn decompress(a: &DecompressArgs) -> Result<()> {
    let dtype = a.dtype.as_deref().map(parse_dtype).transpose()?;
    let t = Instant::now();
    let file = NwcFile::open(&a.input)?;
    let codec = nwc::decoder(&file, a.checkpoint.as_deref())?;
    nwc::llama::decode_to(&file, codec.as_ref(), &a.output, dtype)
        .with_context(|| format!("decoding {} to {}", a.input.display(), a.output.display()))?;
    let (llama, seconds) = (nwc::llama::is_llama(&file)?, t.elapsed().as_secs_f64());
    if a.json {
        println!(
            "{}",
            json!({
                "input": a.input,
                "output": a.output,
                "llama": llama,
                "params": file.reader()?.n_params(),
                "seconds": seconds,
            })
        );
    } else {
        println!(
            "{} → {}{}   [{seconds:.1} s]",
            a.input.display(),
            a.output.display(),
            if llama { " (Llama model)" } else { "" }
        );
    }
    Ok(())
}

fn inspect(a: &InspectArgs) -> Result<()> {
    let file = NwcFile::open(&a.input)?;
    let r = file.reader()?;
    let h = r.header();
    let hash: String = h.codec_hash.iter().map(|b| format!("{b:02x}")).collect();
    let mut rows = Vec::new();
    for (i, e) in r.index().iter().enumerate() {
        let rec = r.record(i).with_context(|| {
            format!(
                "{}: record {i} ({}, at byte {})",
                a.input.display(),
                e.name,
                e.offset
            )
        })?;
        let kind = if nwc::format::is_metadata(&e.name) {
            "metadata"
        } else {
            match rec.payload {
                Payload::Coded(_) => "coded",
                Payload::Raw(_) => "lossless",
            }
        };
        rows.push(json!({
            "name": e.name,
            "dtype": rec.dtype.to_string(),
            "shape": rec.shape,
            "kind": kind,
            "params": e.n_params,
            "bytes": e.length,
            "bits_per_param": if e.n_params > 0 { 8.0 * e.length as f64 / e.n_params as f64 } else { 0.0 },
        }));
    }
    let bits = file.bits_per_param()?;
    if a.json {
        println!(
            "{}",
            json!({
                "file": a.input,
                "codec": format!("{:?}", h.codec),
                "checkpoint": hash,
                "file_bytes": r.file_len(),
                "params": r.n_params(),
                "bits_per_param": bits,
                "llama": nwc::llama::is_llama(&file)?,
                "tensors": rows,
            })
        );
        return Ok(());
    }
    println!("file        {}", a.input.display());
    println!("codec       {:?} (checkpoint {hash})", h.codec);
    println!(
        "size        {} bytes, {} parameters, {bits:.4} bits/param measured",
        r.file_len(),
        r.n_params()
    );
    println!(
        "\n{:<48} {:>6} {:>18} {:>9} {:>12} {:>8}",
        "tensor", "dtype", "shape", "kind", "params", "bits"
    );
    for row in &rows {
        println!(
            "{:<48} {:>6} {:>18} {:>9} {:>12} {:>8.3}",
            row["name"].as_str().unwrap_or_default(),
            row["dtype"].as_str().unwrap_or_default(),
            row["shape"].to_string(),
            row["kind"].as_str().unwrap_or_default(),
            row["params"].as_u64().unwrap_or_default(),
            row["bits_per_param"].as_f64().unwrap_or_default()
        );
    }
    Ok(())
}

/// Whether `path` starts with the `.nwc` magic.
fn is_nwc(path: &Path) -> bool {
    let mut m = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut m))
        .is_ok_and(|()| m == nwc::format::MAGIC)
}

fn eval(a: &EvalArgs) -> Result<()> {
    let text = read_text(&a.text)?;
    if is_nwc(&a.model) {
        let file = NwcFile::open(&a.model)?;
        let codec = nwc::decoder(&file, a.checkpoint.as_deref())?;
        let src = NwcLlamaSource::open(&a.model, codec.as_ref(), None)
            .with_context(|| format!("opening {}", a.model.display()))?;
        eval_source(a, &src, &text)
    } else {
        let src = open_llama(&a.model).map_err(|why| {
            anyhow::anyhow!("{}: not a Llama-family model ({why})", a.model.display())
        })?;
        eval_source(a, &src, &text)
    }
}

fn eval_source(a: &EvalArgs, src: &dyn ModelSource, text: &str) -> Result<()> {
    let t = Instant::now();
    let ids = src.tokenizer().encode(text)?;
    let ctx = a.ctx.min(src.config().max_positions);
    let pb = bar(src.config().layers as u64 + 1, "blocks");
    let p =
        layerwise_perplexity::<NdArray>(src, &ids, ctx, a.windows, &Default::default(), |d, _| {
            pb.set_position(d as u64)
        })
        .with_context(|| format!("evaluating {} on {}", a.model.display(), a.text.display()))?;
    pb.finish_and_clear();
    let seconds = t.elapsed().as_secs_f64();
    if a.json {
        println!(
            "{}",
            json!({
                "model": a.model,
                "text": a.text,
                "perplexity": p.ppl,
                "nll": p.nll,
                "tokens": p.tokens,
                "windows": p.windows,
                "ctx": p.ctx,
                "seconds": seconds,
            })
        );
    } else {
        println!(
            "perplexity {:.4} on {} ({} windows × {} tokens, {} scored)   [{seconds:.1} s]",
            p.ppl,
            a.text.display(),
            p.windows,
            p.ctx,
            p.tokens
        );
    }
    Ok(())
}

/// The error and its causes, each cause left out when the message before it already says it
/// (the library's errors name their file and include their cause's text).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}
