//! `cargo xtask bench-rival` (and the llama.cpp part of `bench-llm`): nwc against what users
//! pick today, llama.cpp's own quantizers, on the same model, the same calibration text and the
//! same evaluation text, every file scored by the same `llama-perplexity`.
//!
//! llama.cpp rows: each type quantized from the source GGUF with `--allow-requantize` and an
//! importance matrix of the calibration text. nwc rows: NWC, TCQ and ECSQ with levels + LDLQ,
//! each searched to exactly the target measured rate (`LlamaCompression::tune_to_rate`), decoded
//! from the `.nwc` file, exported as GGUF (f32 matrices) and scored by `llama-perplexity`, and by
//! nwc's own evaluation beside it. Rates are file bytes × 8 / parameters (nwc's count) for both.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::llm_score::{Job, Lineup, Scored, Scoring, allocated};
use crate::plot::ratio;
use nwc::llama::{AllocationOptions, Calibration, ColumnWeight, Mode};
use nwc::llm::LlamaWeights;
use nwc::pipeline::StepAllocation;

#[derive(Args, Debug, Clone)]
pub struct RivalArgs {
    #[command(flatten)]
    pub texts: crate::bench_llm::LlmTexts,
    /// The nwc codecs and the exact rates they run at (levels + LDLQ).
    #[command(flatten)]
    pub lineup: Lineup,
    /// llama.cpp types.
    #[arg(
        long,
        default_value = "Q2_K,IQ2_XS,IQ3_XXS,Q3_K_M,IQ4_XS,Q4_K_M,Q5_K_M",
        value_delimiter = ','
    )]
    pub types: Vec<String>,
    /// Rate allocation by column across the model (`Calibration::with_allocation`) instead of
    /// importance bands.
    #[arg(long)]
    pub allocate: bool,
    /// With `--allocate`: each matrix's loss sensitivity from the Fisher information of this
    /// many calibration windows (0: every matrix alike).
    #[arg(long, default_value_t = 0)]
    pub fisher: usize,
    /// With `--allocate`: the clamp on each column's step multiplier, `MIN,MAX`.
    #[arg(long, default_value = "0.015625,64", value_delimiter = ',')]
    pub allocate_range: Vec<f32>,
    /// With `--allocate`: weight each column's error by diag(H) instead of the LDL pivot.
    #[arg(long)]
    pub allocate_diagonal: bool,
    /// With `--allocate`: normalize each matrix on its own (bits move only between its
    /// columns) instead of across the model.
    #[arg(long)]
    pub allocate_within: bool,
    /// Where llm-rival.md goes.
    #[arg(long, default_value = "docs")]
    pub out: PathBuf,
}

pub fn run(a: &RivalArgs) -> Result<()> {
    let t0 = Instant::now();
    let path =
        a.texts.model.clone().unwrap_or_else(|| {
            nwc::tensor::data_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let w = LlamaWeights::open(&path)
        .with_context(|| format!("{}: run `cargo xtask fetch smollm2`", path.display()))?;
    let h =
        crate::bench_llm::hessians(&w, &a.texts.calib_text, a.texts.ctx, a.texts.calib_windows)?;
    let mut cal = Calibration::new(&h, &w.config)?;
    if a.allocate {
        let [min, max] = a.allocate_range[..] else {
            anyhow::bail!("--allocate-range takes MIN,MAX");
        };
        let options = AllocationOptions {
            range: StepAllocation { min, max },
            weight: if a.allocate_diagonal {
                ColumnWeight::Diagonal
            } else {
                ColumnWeight::Pivot
            },
            across_matrices: !a.allocate_within,
        };
        cal = allocated(&w, cal, &a.texts, a.fisher, options)?;
    }
    let scoring = Scoring::new(&w, &a.texts, Path::new("target/bench-rival"), true)?;
    let fp_nwc =
        crate::bench_llm::ppl_of_windows(&w, &scoring.eval_ids, a.texts.ctx, a.texts.eval_windows)?;
    let rows = rows(a, &path, &w, &cal, &scoring)?;
    let fp = rows.first().context("no reference row")?.score();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# nwc against llama.cpp's quantizers, scored by llama.cpp\n"
    );
    let _ = writeln!(
        md,
        "Made by `cargo xtask {}` in {:.0} min on this machine (2 CPU cores).\n",
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        t0.elapsed().as_secs_f64() / 60.0
    );
    let _ = writeln!(
        md,
        "- Model: `{}`, {} parameters (nwc's count; every rate below is file bytes × 8 / that).\n\
         - llama.cpp {} (from llama-cpp-python's source): `llama-quantize --allow-requantize` from the source GGUF, importance matrix by `llama-imatrix` on `{}` ({} × {} tokens); `llama-perplexity -c {} --chunks {}` on `{}` for every file.\n\
         - nwc: levels + LDLQ with Hessians of the same text and windows, each codec searched to the exact rate, decoded from its `.nwc`, exported as GGUF (f32 matrices, f32 norms) and scored by the same `llama-perplexity`; nwc's own evaluation of the same model beside it (FP {:.3}).\n",
        path.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default(),
        w.n_params(),
        crate::llamacpp::LLAMA_CPP_PYTHON,
        a.texts.calib_text.join(" + "),
        a.texts.calib_windows,
        a.texts.ctx,
        a.texts.ctx,
        a.texts.eval_windows,
        a.texts.eval_text,
        fp_nwc
    );
    if a.allocate {
        let _ = writeln!(
            md,
            "- **Rate allocation by column** instead of importance bands (`docs/allocation.md`): \
             steps clamped to {:?}, errors weighted by {}, normalized {}, matrix sensitivities {}.\n",
            a.allocate_range,
            if a.allocate_diagonal {
                "diag(H)"
            } else {
                "the LDL pivots"
            },
            if a.allocate_within {
                "per matrix"
            } else {
                "across the model"
            },
            if a.fisher > 0 {
                format!("from the Fisher information of {} windows", a.fisher)
            } else {
                "all 1".into()
            }
        );
    }
    md.push_str(&table(&rows, fp));
    let lines = summary(&rows, fp, &a.lineup.rates);
    let _ = writeln!(md, "\n```\n{}\n```", lines.join("\n"));
    std::fs::create_dir_all(&a.out)?;
    std::fs::write(a.out.join("llm-rival.md"), &md)?;
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// The markdown table of `rows`, perplexities also as a ratio to the reference `fp` (each
/// row's [`Scored::score`]).
pub fn table(rows: &[Scored], fp: f64) -> String {
    let mut md = String::from(
        "| method | bits/param | llama-perplexity | / reference | nwc's evaluation | seconds |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {} | {:.4} | {} | {:.0} |",
            r.method,
            r.bits,
            r.llama_ppl.map_or("–".into(), |p| format!("{p:.4}")),
            r.score() / fp,
            r.nwc_ppl.map_or("–".into(), |p| format!("{p:.4}")),
            r.seconds
        );
    }
    md
}

/// One line per rate: NWC's `llama-perplexity` over the reference's, over TCQ's and ECSQ's at
/// the same rate, and over the best llama.cpp type of at most `rate + 1.5` bits/param.
pub fn summary(rows: &[Scored], fp: f64, rates: &[f64]) -> Vec<String> {
    let at = |prefix: &str, rate: f64| {
        rows.iter()
            .find(|r| r.method == format!("{prefix} @ {rate} bits"))
            .map(Scored::score)
    };
    rates
        .iter()
        .map(|&rate| {
            let nwc = at("NWC", rate);
            let best = rows
                .iter()
                .filter(|r| r.method.starts_with("llama.cpp") && r.bits <= rate + 1.5)
                .min_by(|x, y| x.score().total_cmp(&y.score()));
            format!(
                "rival@{rate}bit: ppl_ratio={} vs_tcq={} vs_ecsq={} vs_llamacpp={} ({})",
                ratio(nwc, Some(fp)),
                ratio(nwc, at("TCQ", rate)),
                ratio(nwc, at("ECSQ", rate)),
                ratio(nwc, best.map(Scored::score)),
                best.map_or("no llama.cpp type that small".into(), |b| format!(
                    "{} at {:.2} bits",
                    b.method, b.bits
                ))
            )
        })
        .collect()
}

/// Every row: the reference, each llama.cpp type, then NWC, TCQ and ECSQ at each rate.
fn rows(
    a: &RivalArgs,
    path: &Path,
    w: &LlamaWeights,
    cal: &Calibration,
    scoring: &Scoring<'_>,
) -> Result<Vec<Scored>> {
    let mut rows = Vec::new();
    let mut push = |r: Scored| {
        r.print();
        rows.push(r);
    };
    push(scoring.reference(path)?);
    scoring.llamacpp(path, &a.types, &mut push)?;
    for &rate in &a.lineup.rates {
        let name = |c: &str| format!("{c} @ {rate} bits");
        a.lineup.rows(
            scoring,
            w,
            Job::Whole(Some(cal)),
            Mode::LevelsLdlq,
            rate,
            name,
            &mut push,
        )?;
    }
    Ok(rows)
}
