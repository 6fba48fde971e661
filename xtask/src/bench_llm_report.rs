//! `bench-llm`'s report: docs/llm.md (every row, each mode against each codec at each rate, the
//! summary lines) and docs/llm.svg; the summary lines also go to stdout, last.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use crate::bench_llm::{LINE_MODE, LlmBenchArgs, REFERENCE_F32, RowMode, row_name};
use crate::llm_score::Scored;
use crate::plot::ratio;
use nwc::llama::Mode;

/// The issue's bars: at each rate, the largest NWC perplexity over the reference's that passes.
const BARS: [(f64, f64); 3] = [(2.0, 2.0), (3.0, 1.25), (4.0, 1.05)];

/// What the report is made of.
pub struct Report<'a> {
    pub a: &'a LlmBenchArgs,
    pub modes: &'a [RowMode],
    pub rows: &'a [Scored],
    pub model: &'a Path,
    pub n_params: usize,
    pub minutes: f64,
}

impl Report<'_> {
    fn find(&self, method: &str) -> Option<&Scored> {
        self.rows.iter().find(|r| r.method == method)
    }

    fn ppl(&self, codec: &str, mode: RowMode, rate: f64) -> Option<f64> {
        self.find(&row_name(codec, mode, rate)).map(Scored::score)
    }

    /// The best llama.cpp type of at most `rate + 1.5` bits/param (5.5 at 4 bits).
    fn best_llamacpp(&self, rate: f64) -> Option<&Scored> {
        self.rows
            .iter()
            .filter(|r| r.method.starts_with("llama.cpp") && r.bits <= rate + 1.5)
            .min_by(|x, y| x.score().total_cmp(&y.score()))
    }

    /// One line per rate, NWC (levels + LDLQ) against the reference and every rival, all by
    /// `llama-perplexity`; then (default model only) whether the issue's bars are met.
    fn lines(&self, fp: f64) -> Vec<String> {
        let mut lines = Vec::new();
        let mut bars = Vec::new();
        for &rate in &self.a.lineup.rates {
            let nwc = self.ppl("NWC", LINE_MODE, rate);
            let b = rate.round() as u32;
            let base = |m: &str| self.find(&format!("{m} g128 {b} bits"));
            let (gptq, rtn) = (base("GPTQ"), base("RTN"));
            let best = self.best_llamacpp(rate);
            lines.push(format!(
                "llm@{rate}bit: ppl_ratio={} vs_tcq={} vs_ecsq={} vs_gptq={} vs_rtn={} vs_llamacpp={} ({}; GPTQ/RTN g128 at {}/{} bits)",
                ratio(nwc, Some(fp)),
                ratio(nwc, self.ppl("TCQ", LINE_MODE, rate)),
                ratio(nwc, self.ppl("ECSQ", LINE_MODE, rate)),
                ratio(nwc, gptq.map(Scored::score)),
                ratio(nwc, rtn.map(Scored::score)),
                ratio(nwc, best.map(Scored::score)),
                best.map_or("no llama.cpp type that small".into(), |r| format!(
                    "llama.cpp best: {} at {:.2} bits",
                    r.method, r.bits
                )),
                gptq.map_or("–".into(), |r| format!("{:.2}", r.bits)),
                rtn.map_or("–".into(), |r| format!("{:.2}", r.bits)),
            ));
            if let (Some(&(_, bar)), Some(n)) = (BARS.iter().find(|x| x.0 == rate), nwc) {
                let met = |ok: bool| if ok { "met" } else { "not met" };
                let mut s = format!("{rate} bits ppl_ratio ≤ {bar} {}", met(n / fp <= bar));
                if rate == 4.0 {
                    let vs = best.map_or("n/a (no llama.cpp row)", |r| met(n / r.score() < 1.0));
                    let _ = write!(s, ", vs_llamacpp < 1 {vs}");
                }
                bars.push(s);
            }
        }
        // The bars are the issue's, for the default model (SmolLM2-135M); another model's run
        // is not judged by them.
        if !bars.is_empty() && self.a.texts.model.is_none() {
            lines.push(format!("llm@bars: {}", bars.join("; ")));
        }
        lines
    }

    /// Writes docs/llm.md and docs/llm.svg, and prints the summary lines.
    pub fn write(&self) -> Result<()> {
        let a = self.a;
        let fp = self
            .find(REFERENCE_F32)
            .context("no reference row")?
            .score();
        let mut md = String::from(
            "# Perplexity at exact rates on a real Llama, beside llama.cpp, GPTQ and RTN\n\n",
        );
        let _ = writeln!(
            md,
            "Made by `cargo xtask {}` in {:.0} min on this machine (2 CPU cores, NdArray backend).\n",
            std::env::args().skip(1).collect::<Vec<_>>().join(" "),
            self.minutes
        );
        let _ = writeln!(
            md,
            "- Model: `{}`, {} parameters; every rate is file bytes × 8 / that (nwc: the `.nwc` file, header, scales, levels, tables, tokenizer and index included; llama.cpp: its GGUF; RTN/GPTQ: serialized codes + f16 scale and minimum per group of 128, plus the norms).\n\
             - Every file is scored by llama.cpp {}'s `llama-perplexity -c {} --chunks {}` on `{}`; nwc's files are decoded from their bytes and exported as GGUF (f32), the reference too (`{REFERENCE_F32}`, at the source's rate; the denominator of every ratio). nwc's own evaluation of the same weights beside it.\n\
             - Calibration: `{}`, {} windows of {} tokens, disjoint from the evaluation text: nwc's Hessians and GPTQ's, and llama.cpp's importance matrix (`llama-imatrix`, same windows; `llama-quantize --allow-requantize` from the source GGUF).\n\
             - nwc: NWC (the embedded trellis + refiner checkpoint), TCQ (the same trellis, no refiner) and ECSQ, each searched to the exact measured rate in each mode; at rates of at most {} bits the calibrated modes allocate rate by column (Fisher sensitivities of {} windows, diag(H), steps within 1/16..16 of the file's; `docs/allocation.md`), above it importance bands. The summary lines use mode {}.\n",
            self.model
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default(),
            self.n_params,
            crate::llamacpp::LLAMA_CPP_PYTHON,
            a.texts.ctx,
            a.texts.eval_windows,
            a.texts.eval_text,
            a.texts.calib_text.join(" + "),
            a.texts.calib_windows,
            a.texts.ctx,
            a.allocate_up_to,
            a.fisher,
            LINE_MODE.label()
        );
        if a.no_llamacpp {
            md.push_str(
                "- **This run has no llama.cpp** (`--no-llamacpp`): every ratio is of nwc's own \
                 evaluation, and there are no llama.cpp rows.\n\n",
            );
        }
        md.push_str(&crate::bench_rival::table(self.rows, fp));
        for &rate in &a.lineup.rates {
            let _ = writeln!(
                md,
                "\n### {rate} bits: perplexity by mode and codec\n\n\
                 | mode | NWC | TCQ | ECSQ | NWC / TCQ | NWC / ECSQ |\n|---|---:|---:|---:|---:|---:|"
            );
            let f = |v: Option<f64>| v.map_or("–".into(), |x| format!("{x:.3}"));
            for &m in self.modes {
                let (n, t, e) = (
                    self.ppl("NWC", m, rate),
                    self.ppl("TCQ", m, rate),
                    self.ppl("ECSQ", m, rate),
                );
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    m.label(),
                    f(n),
                    f(t),
                    f(e),
                    ratio(n, t),
                    ratio(n, e)
                );
            }
        }
        let lines = self.lines(fp);
        let _ = writeln!(md, "\n```\n{}\n```", lines.join("\n"));
        let series = |pred: &dyn Fn(&str) -> bool| -> Vec<(f64, f64)> {
            let mut v: Vec<(f64, f64)> = self
                .rows
                .iter()
                .filter(|r| pred(&r.method))
                .map(|r| (r.bits, r.score()))
                .collect();
            v.sort_by(|x, y| x.0.total_cmp(&y.0));
            v
        };
        let codec = |c: &'static str, m: RowMode| {
            move |s: &str| s.starts_with(&format!("{c} {} @", m.label()))
        };
        let svg = crate::plot::svg(
            &[
                ("reference", "#000000", vec![(1.0, fp), (9.0, fp)]),
                ("RTN g128", "#7f7f7f", series(&|s| s.starts_with("RTN"))),
                ("GPTQ g128", "#1f77b4", series(&|s| s.starts_with("GPTQ"))),
                (
                    "llama.cpp + imatrix",
                    "#8c564b",
                    series(&|s| s.starts_with("llama.cpp")),
                ),
                (
                    "NWC data-free",
                    "#ff9896",
                    series(&codec("NWC", RowMode::whole(Mode::DataFree))),
                ),
                (
                    &format!("ECSQ {}", LINE_MODE.label()),
                    "#2ca02c",
                    series(&codec("ECSQ", LINE_MODE)),
                ),
                (
                    &format!("TCQ {}", LINE_MODE.label()),
                    "#9467bd",
                    series(&codec("TCQ", LINE_MODE)),
                ),
                (
                    &format!("NWC {}", LINE_MODE.label()),
                    "#d62728",
                    series(&codec("NWC", LINE_MODE)),
                ),
            ],
            "llama-perplexity",
        );
        crate::plot::write_outputs(&a.out, "llm", &md, &svg)?;
        for l in lines {
            println!("{l}");
        }
        Ok(())
    }
}
