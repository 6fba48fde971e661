//! What `bench-llm` and `bench-rival` share: every file — the source model, llama.cpp's
//! quantizations of it, nwc's decoded files and the RTN/GPTQ baselines — scored by the same
//! `llama-perplexity` on the same evaluation text (nwc's files exported as f32 GGUF), with nwc's
//! own evaluation beside it; and the calibration with rate allocation by Fisher sensitivity.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::bench_llm::{LlmTexts, load_text, ppl_of_windows};
use crate::llamacpp::LlamaCpp;
use nwc::codec_net::burn::backend::{Autodiff, NdArray};
use nwc::llama::{AllocationOptions, Calibration, LlamaCompression, Mode, decode_llama};
use nwc::llm::LlamaWeights;
use nwc::pipeline::RateControl;
use nwc::tensor::DType;
use nwc::{Compressor, EcsqCodec, NwcCodec, NwcFile, TcqCodec, WeightCodec};

/// How an nwc row is coded.
#[derive(Debug, Clone, Copy)]
pub enum Job<'a> {
    /// The whole model in memory, one step searched to the rate (`tune_to_rate`), with this
    /// calibration (none: data-free).
    Whole(Option<&'a Calibration>),
    /// Layer by layer, steered to the rate (`run_layerwise_to_rate`), calibrated on these
    /// windows, with asymmetric calibration at this blend and the rate allocation of this
    /// whole-model calibration (if it allocates).
    Layerwise {
        windows: &'a [Vec<u32>],
        asymmetric: Option<f64>,
        allocation: Option<&'a Calibration>,
    },
}

/// The nwc rows both LLM benches run: which codecs, at which exact measured rates.
#[derive(Args, Debug, Clone)]
pub struct Lineup {
    /// Exact measured rates (bits per parameter) at which the nwc codecs run.
    #[arg(long, default_value = "2,3,4", value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// nwc codecs (of NWC, TCQ, ECSQ).
    #[arg(long, default_value = "NWC,TCQ,ECSQ", value_delimiter = ',')]
    pub codecs: Vec<String>,
}

impl Lineup {
    /// NWC, TCQ and ECSQ (those in the lineup, in that order) at exactly `rate` in `mode`,
    /// each scored and handed to `push`; `name(codec)` is a row's method.
    #[allow(clippy::too_many_arguments)]
    pub fn rows(
        &self,
        scoring: &Scoring<'_>,
        w: &LlamaWeights,
        job: Job<'_>,
        mode: Mode,
        rate: f64,
        name: impl Fn(&str) -> String,
        push: &mut dyn FnMut(Scored),
    ) -> Result<()> {
        let on = |c: &str| self.codecs.iter().any(|x| x.eq_ignore_ascii_case(c));
        let bits = rate as f32;
        if on("NWC") {
            let nwc = NwcCodec::<NdArray>::default_on(&Default::default())?
                .with_step(nwc::codec_net::tcq_step_for_bits(bits))?;
            push(scoring.nwc(name("NWC"), w, job, mode, &nwc, rate)?);
        }
        if on("TCQ") {
            let tcq = TcqCodec::for_bits(bits)?;
            push(scoring.nwc(name("TCQ"), w, job, mode, &tcq, rate)?);
        }
        if on("ECSQ") {
            let ecsq = EcsqCodec::for_bits(bits)?;
            push(scoring.nwc(name("ECSQ"), w, job, mode, &ecsq, rate)?);
        }
        Ok(())
    }
}

/// One scored file.
#[derive(Debug, Clone)]
pub struct Scored {
    pub method: String,
    /// File bytes × 8 / parameters (nwc's count).
    pub bits: f64,
    /// `llama-perplexity` on the evaluation text (when llama.cpp scores).
    pub llama_ppl: Option<f64>,
    /// nwc's own evaluation (files nwc decodes only).
    pub nwc_ppl: Option<f64>,
    pub seconds: f64,
}

impl Scored {
    /// The row's perplexity as the report compares it: `llama-perplexity`'s, or nwc's own
    /// evaluation in a run without llama.cpp.
    pub fn score(&self) -> f64 {
        self.llama_ppl.or(self.nwc_ppl).unwrap_or(f64::NAN)
    }

    /// Prints the row as it lands (long benches show progress).
    pub fn print(&self) {
        println!(
            "{:<34} {:>7.4} bits/param{}{}  ({:.0} s)",
            self.method,
            self.bits,
            self.llama_ppl
                .map_or(String::new(), |p| format!("  llama-perplexity {p:>9.4}")),
            self.nwc_ppl
                .map_or(String::new(), |p| format!("  nwc {p:.4}")),
            self.seconds
        );
    }
}

/// llama.cpp's tools (none: nwc's evaluation scores alone), the texts as files, and where
/// scratch files go.
pub struct Scoring<'a> {
    tools: Option<LlamaCpp>,
    texts: &'a LlmTexts,
    dir: PathBuf,
    calib_file: PathBuf,
    eval_file: PathBuf,
    /// The evaluation text in the model's tokens (nwc's evaluation).
    pub eval_ids: Vec<u32>,
    n_params: f64,
}

impl<'a> Scoring<'a> {
    /// Finds or builds llama.cpp's tools (unless `llamacpp` is false) and writes the
    /// calibration text as one file in `dir`.
    pub fn new(w: &LlamaWeights, texts: &'a LlmTexts, dir: &Path, llamacpp: bool) -> Result<Self> {
        let tools = if llamacpp {
            Some(LlamaCpp::find_or_build(Path::new("target/llama.cpp"))?)
        } else {
            None
        };
        std::fs::create_dir_all(dir)?;
        let mut calib = String::new();
        for t in &texts.calib_text {
            calib.push_str(&load_text(t)?);
        }
        let calib_file = dir.join("calib.txt");
        std::fs::write(&calib_file, calib)?;
        Ok(Self {
            tools,
            texts,
            dir: dir.to_path_buf(),
            calib_file,
            eval_file: nwc::tensor::data_dir().join(&texts.eval_text),
            eval_ids: w.tokenizer.encode(&load_text(&texts.eval_text)?)?,
            n_params: w.n_params() as f64,
        })
    }

    fn bits_of(&self, p: &Path) -> Result<f64> {
        Ok(8.0 * std::fs::metadata(p)?.len() as f64 / self.n_params)
    }

    /// Whether llama.cpp scores this run.
    pub fn has_llamacpp(&self) -> bool {
        self.tools.is_some()
    }

    fn tools(&self) -> Result<&LlamaCpp> {
        self.tools
            .as_ref()
            .context("this run has no llama.cpp tools")
    }

    fn llama_ppl(&self, p: &Path) -> Result<f64> {
        self.tools()?
            .perplexity(p, &self.eval_file, self.texts.ctx, self.texts.eval_windows)
    }

    /// The source file as llama.cpp loads it.
    pub fn reference(&self, path: &Path) -> Result<Scored> {
        let t = Instant::now();
        Ok(Scored {
            method: "reference (source GGUF)".into(),
            bits: self.bits_of(path)?,
            llama_ppl: Some(self.llama_ppl(path)?),
            nwc_ppl: None,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Each llama.cpp type of `types`, quantized from `path` with an importance matrix of the
    /// calibration text (the same windows nwc calibrates on), handed to `push` as it lands.
    pub fn llamacpp(
        &self,
        path: &Path,
        types: &[String],
        push: &mut dyn FnMut(Scored),
    ) -> Result<()> {
        let imatrix = self.dir.join("imatrix.gguf");
        self.tools()?.imatrix(
            path,
            &self.calib_file,
            self.texts.ctx,
            self.texts.calib_windows,
            &imatrix,
        )?;
        for ty in types {
            let t = Instant::now();
            let out = self.dir.join(format!("{ty}.gguf"));
            self.tools()?.quantize(path, Some(&imatrix), ty, &out)?;
            push(Scored {
                method: format!("llama.cpp {ty} + imatrix"),
                bits: self.bits_of(&out)?,
                llama_ppl: Some(self.llama_ppl(&out)?),
                nwc_ppl: None,
                seconds: t.elapsed().as_secs_f64(),
            });
            std::fs::remove_file(&out)?;
        }
        Ok(())
    }

    /// Weights nwc holds decoded (at a measured `bits`), scored both ways: nwc's evaluation,
    /// and (when llama.cpp scores) `llama-perplexity` of their f32 GGUF export. `t` is when
    /// their making began.
    pub fn decoded(
        &self,
        method: String,
        bits: f64,
        w: &LlamaWeights,
        t: Instant,
    ) -> Result<Scored> {
        let nwc_ppl = ppl_of_windows(w, &self.eval_ids, self.texts.ctx, self.texts.eval_windows)?;
        let llama_ppl = if self.has_llamacpp() {
            let gguf = self.dir.join(format!("scored-{}.gguf", std::process::id()));
            w.save_gguf(&gguf, DType::F32)?;
            let p = self.llama_ppl(&gguf);
            std::fs::remove_file(&gguf)?;
            Some(p?)
        } else {
            None
        };
        Ok(Scored {
            method,
            bits,
            llama_ppl,
            nwc_ppl: Some(nwc_ppl),
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// One nwc codec in `mode` at exactly the measured `rate` (the step searched from `start`,
    /// or steered from it layer by layer), the file written, decoded from its bytes, and scored
    /// both ways.
    pub fn nwc<C: RateControl + WeightCodec>(
        &self,
        method: String,
        w: &LlamaWeights,
        job: Job<'_>,
        mode: Mode,
        start: &C,
        rate: f64,
    ) -> Result<Scored> {
        let t = Instant::now();
        let file = self.dir.join(format!("scored-{}.nwc", std::process::id()));
        let cal = match job {
            Job::Whole(cal) => cal,
            Job::Layerwise {
                windows,
                asymmetric,
                allocation,
            } => {
                let compressor = Compressor::new(start);
                let job = LlamaCompression::new(&compressor);
                match allocation {
                    Some(c) => job.calibration(c),
                    None => job,
                }
                .mode(mode)
                .windows(windows)
                .asymmetric(asymmetric)
                .embed_tokenizer(true)
                .run_layerwise_to_rate(start, rate, w, &file, |_| {})?;
                return self.score_file(method, &file, start, w, t);
            }
        };
        let job = |c| {
            let j = LlamaCompression::new(c).mode(mode).embed_tokenizer(true);
            match cal {
                Some(cal) => j.calibration(cal),
                None => j,
            }
        };
        let searching = Compressor::new(start);
        let (codec, _) = job(&searching).tune_to_rate(start, w, rate)?;
        let step = codec.log2_step().exp2();
        tracing::info!(
            %method,
            rate,
            step,
            trellis_nominal_bits = nwc::codec_net::tcq_bits_for_step(step),
            "searched"
        );
        job(&Compressor::new(&codec)).run_to_file(w, &file)?;
        self.score_file(method, &file, &codec, w, t)
    }

    /// The `.nwc` file `file` (of `w`, coded with `codec`) decoded from its bytes, scored, and
    /// removed.
    fn score_file(
        &self,
        method: String,
        file: &Path,
        codec: &dyn WeightCodec,
        w: &LlamaWeights,
        t: Instant,
    ) -> Result<Scored> {
        let nwc_file = NwcFile::open(file)?;
        let bits = nwc_file.bits_per_param()?;
        let decoded = decode_llama(&nwc_file, codec, Some(w.tokenizer.clone()))?;
        drop(nwc_file);
        std::fs::remove_file(file)?;
        self.decoded(method, bits, &decoded, t)
    }
}

/// `cal` with rate allocation by column (`Calibration::with_allocation`): each matrix's loss
/// sensitivity from the Fisher information of `fisher` windows of the first calibration text
/// (0: every matrix alike).
pub fn allocated(
    w: &LlamaWeights,
    cal: Calibration,
    texts: &LlmTexts,
    fisher: usize,
    options: AllocationOptions,
) -> Result<Calibration> {
    if fisher == 0 {
        return Ok(cal.with_allocation(w, Default::default(), options)?);
    }
    let t = Instant::now();
    let ids = w.tokenizer.encode(&load_text(&texts.calib_text[0])?)?;
    let windows: Vec<Vec<u32>> = nwc::llm::windows(&ids, texts.ctx, fisher)?
        .into_iter()
        .map(<[u32]>::to_vec)
        .collect();
    Ok(cal.with_fisher_allocation::<Autodiff<NdArray>>(
        w,
        &windows,
        &Default::default(),
        options,
        |d, n| println!("fisher {d}/{n} ({:.0} s)", t.elapsed().as_secs_f64()),
    )?)
}
