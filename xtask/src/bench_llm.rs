//! `cargo xtask bench-llm`: perplexity at *exact measured* rates on a real Llama — NWC, TCQ and
//! ECSQ in each calibration mode, searched to 2, 3 and 4 bits per parameter — beside RTN and GPTQ
//! (per group, sharing the calibration Hessians) and llama.cpp's own K- and I-quant types with an
//! importance matrix of the same calibration text. Every file is scored by the same
//! `llama-perplexity` on the same evaluation text (nwc's files decoded from their bytes and
//! exported as f32 GGUF), nwc's own evaluation beside it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::llm_score::{Job, Lineup, Scored, Scoring, allocated};
use nwc::CompressOptions;
use nwc::codec_net::burn::backend::NdArray;
use nwc::llama::{AllocationOptions, Baseline, Calibration, Mode, quantize_baseline};
use nwc::llm::FtConfig;
use nwc::llm::{
    Hessians, Llama, LlamaWeights, cache_file_name, calibration_fingerprint, perplexity,
};

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
    /// Calibration windows (nwc's Hessians and llama.cpp's importance matrix alike; 64 of 512
    /// tokens measured 2–12 % better than 16 at 2–3 bits, `docs/allocation.md`).
    #[arg(long, default_value_t = 64)]
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
    /// The nwc codecs and the exact rates they run at, each mode.
    #[command(flatten)]
    pub lineup: Lineup,
    /// Calibration modes of the nwc rows (data-free, levels, levels+LDLQ, levels+LDLQ+AC,
    /// levels+LDLQ+FT; `+AC`: layer by layer, asymmetric calibration).
    #[arg(
        long,
        default_value = "data-free,levels,levels+LDLQ",
        value_delimiter = ','
    )]
    pub modes: Vec<String>,
    /// Bit widths of RTN and GPTQ (groups of 128).
    #[arg(long, default_value = "2,3,4", value_delimiter = ',')]
    pub baseline_bits: Vec<u32>,
    /// llama.cpp types (quantized with an importance matrix of the calibration text).
    #[arg(
        long,
        default_value = "IQ2_XS,Q2_K,IQ3_XXS,Q3_K_M,IQ4_XS,Q4_K_M,Q5_K_M",
        value_delimiter = ','
    )]
    pub types: Vec<String>,
    /// Rate allocation by column (Fisher sensitivities, diag(H), steps within 1/16..16 of the
    /// file's, across the model; `docs/allocation.md`) at target rates of at most this many
    /// bits; importance bands above it. 0: never.
    #[arg(long, default_value_t = 3.0)]
    pub allocate_up_to: f64,
    /// Calibration windows of the Fisher information behind rate allocation.
    #[arg(long, default_value_t = 4)]
    pub fisher: usize,
    /// Calibration windows of block-wise fine-tuning (the last two are its held-out part).
    #[arg(long, default_value_t = 8)]
    pub ft_windows: usize,
    /// Most fine-tuning steps per block.
    #[arg(long, default_value_t = 40)]
    pub ft_steps: usize,
    /// Score with nwc's own evaluation only: no llama.cpp tools built or run, no llama.cpp rows
    /// (models llama.cpp cannot load, such as the byte-level test Llama).
    #[arg(long)]
    pub no_llamacpp: bool,
    /// Where llm.md and llm.svg go.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
}

/// A row's mode: the library's calibration mode, coded whole (one step searched to the rate),
/// or (`asymmetric`, label `+AC`) layer by layer, steered to the rate, with asymmetric
/// calibration (`LlamaCompression::asymmetric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowMode {
    pub mode: Mode,
    pub asymmetric: bool,
}

impl RowMode {
    /// `mode` coded whole.
    pub const fn whole(mode: Mode) -> Self {
        Self {
            mode,
            asymmetric: false,
        }
    }

    /// Every mode a row can have, from least to most calibration.
    pub const ALL: [Self; 5] = [
        Self::whole(Mode::DataFree),
        Self::whole(Mode::Levels),
        Self::whole(Mode::LevelsLdlq),
        Self {
            mode: Mode::LevelsLdlq,
            asymmetric: true,
        },
        Self::whole(Mode::LevelsLdlqFt),
    ];

    pub fn label(self) -> String {
        if self.asymmetric {
            format!("{}+AC", self.mode.label())
        } else {
            self.mode.label().into()
        }
    }
}

/// The rows' mode in the summary lines: the library's default for a calibrated Llama.
pub const LINE_MODE: RowMode = RowMode::whole(Mode::LevelsLdlq);

/// Asymmetric calibration's blend in the `+AC` rows (`docs/asymmetric.md`: 0.3 measured best of
/// 0, 0.3 and 1 at 4 bits).
const AC_BLEND: f64 = 0.3;

/// The reference as nwc holds it (the source's weights in f32), exported like nwc's files: the
/// denominator of every ratio.
pub const REFERENCE_F32: &str = "reference (f32 export)";

pub fn load_text(rel: &str) -> Result<String> {
    let p = nwc::tensor::data_dir().join(rel);
    let bytes = std::fs::read(&p)
        .with_context(|| format!("{}: run `cargo xtask fetch canterbury`", p.display()))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
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
    let path =
        a.texts.model.clone().unwrap_or_else(|| {
            nwc::tensor::data_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let w = LlamaWeights::open(&path)
        .with_context(|| format!("{}: run `cargo xtask fetch smollm2`", path.display()))?;
    let modes = a
        .modes
        .iter()
        .map(|m| {
            RowMode::ALL
                .into_iter()
                .find(|x| x.label().eq_ignore_ascii_case(m))
                .with_context(|| format!("--modes: no mode {m:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    println!(
        "model {} ({} params, {} layers); eval {} ({} windows × {} tokens); calibration {} ({} windows × {})",
        path.display(),
        w.n_params(),
        w.config.layers,
        a.texts.eval_text,
        a.texts.eval_windows,
        a.texts.ctx,
        a.texts.calib_text.join("+"),
        a.texts.calib_windows,
        a.texts.ctx
    );
    let scoring = Scoring::new(&w, &a.texts, Path::new("target/bench-llm"), !a.no_llamacpp)?;
    let mut rows: Vec<Scored> = Vec::new();
    let mut push = |r: Scored| {
        r.print();
        rows.push(r);
    };
    if scoring.has_llamacpp() {
        push(scoring.reference(&path)?);
    }
    let t = Instant::now();
    // The source's rate: its file, or (a directory) its stored tensors.
    let source_bits = match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => 8.0 * m.len() as f64 / w.n_params() as f64,
        _ => {
            let stored = w.tensors.values().map(|t| t.bytes().len()).sum::<usize>();
            8.0 * stored as f64 / w.n_params() as f64
        }
    };
    push(scoring.decoded(REFERENCE_F32.into(), source_bits, &w, t)?);
    if scoring.has_llamacpp() {
        scoring.llamacpp(&path, &a.types, &mut push)?;
    }

    let h = hessians(&w, &a.texts.calib_text, a.texts.ctx, a.texts.calib_windows)?;
    let mut bands = Calibration::new(&h, &w.config)?;
    if modes.contains(&RowMode::whole(Mode::LevelsLdlqFt)) {
        bands = bands.with_finetune(
            ft_windows(&w, &a.texts.calib_text, a.texts.ctx, a.ft_windows)?,
            FtConfig {
                max_steps: a.ft_steps,
                ..FtConfig::default()
            },
        );
    }
    let policy = CompressOptions::default().policy;
    for &b in &a.baseline_bits {
        for base in [Baseline::Rtn(b), Baseline::Gptq(b)] {
            let t = Instant::now();
            let r = quantize_baseline(&w, Some(&bands), base, &policy)?;
            let method = match base {
                Baseline::Rtn(_) => format!("RTN g128 {b} bits"),
                Baseline::Gptq(_) => format!("GPTQ g128 {b} bits"),
            };
            push(scoring.decoded(method, r.bits_per_param, &r.weights, t)?);
        }
    }
    let allocating = a.lineup.rates.iter().any(|&r| r <= a.allocate_up_to);
    let allocated = if allocating {
        Some(allocated(
            &w,
            bands.clone(),
            &a.texts,
            a.fisher,
            AllocationOptions::FISHER,
        )?)
    } else {
        None
    };

    let calib_windows = ft_windows(&w, &a.texts.calib_text, a.texts.ctx, a.texts.calib_windows)?;
    for &rate in &a.lineup.rates {
        let cal = match &allocated {
            Some(c) if rate <= a.allocate_up_to => c,
            _ => &bands,
        };
        for &mode in &modes {
            let job = if mode.asymmetric {
                Job::Layerwise {
                    windows: &calib_windows,
                    asymmetric: Some(AC_BLEND),
                    allocation: Some(cal).filter(|c| c.allocates()),
                }
            } else {
                Job::Whole((mode.mode != Mode::DataFree).then_some(cal))
            };
            let name = |c: &str| row_name(c, mode, rate);
            a.lineup
                .rows(&scoring, &w, job, mode.mode, rate, name, &mut push)?;
        }
    }
    let report = crate::bench_llm_report::Report {
        a,
        modes: &modes,
        rows: &rows,
        model: &path,
        n_params: w.n_params(),
        minutes: t0.elapsed().as_secs_f64() / 60.0,
    };
    report.write()
}

/// The method column of an nwc row; the report finds rows by it.
pub fn row_name(codec: &str, mode: RowMode, rate: f64) -> String {
    format!("{codec} {} @ {rate} bits", mode.label())
}
