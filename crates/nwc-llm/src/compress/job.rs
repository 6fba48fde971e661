//! [`LlamaCompression`]: one builder for compressing a Llama-family model — the mode, what
//! calibration it is given, whether the tokenizer goes in the file, a shard of a job spread over
//! machines — checked in one place, then run in memory, layer by layer from disk, or searched
//! to an exact measured rate.

use std::io::Write;
use std::path::Path;

use nwc_pipeline::{
    CompressOptions, CompressReport, Compressor, Count, NwcError, RateControl, Result, search_rate,
};

use crate::calib::Hessians;
use crate::finetune::FtConfig;
use crate::stream::ModelSource;
use crate::weights::LlamaWeights;

use super::calibration::{Calibration, Mode};
use super::layerwise::{LayerwiseProgress, LayerwiseReport, run_layerwise};
use super::shard::Shard;
use super::steer::{Steer, Steering};
use super::whole::{Calibrated, write_llama};

/// How to compress a Llama: built from a [`Compressor`] (the codec and its options), then
/// [`LlamaCompression::run`] (the whole model in memory),
/// [`LlamaCompression::run_layerwise`] (one decoder block at a time from disk, resumable,
/// optionally one shard) or [`LlamaCompression::tune_to_rate`] (the codec step that lands on a
/// measured rate).
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use nwc_llm::compress::{Calibration, LlamaCompression, Mode};
/// use nwc_pipeline::{Compressor, TcqCodec};
///
/// let weights = nwc_llm::LlamaWeights::open("SmolLM2-135M.gguf")?;
/// # let hessians: nwc_llm::Hessians = unimplemented!();
/// let calibration = Calibration::new(&hessians, &weights.config)?;
/// let job = |c| LlamaCompression::new(c).mode(Mode::LevelsLdlq).calibration(&calibration);
/// // The step at which the file measures 3.00 bits per parameter, then the file.
/// let (codec, _) = job(&Compressor::new(&TcqCodec::for_bits(3.0)?))
///     .tune_to_rate(&TcqCodec::for_bits(3.0)?, &weights, 3.0)?;
/// let report = job(&Compressor::new(&codec)).run_to_file(&weights, "smollm2.nwc".as_ref())?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LlamaCompression<'a, 'c> {
    compressor: &'a Compressor<'c>,
    mode: Mode,
    calibration: Option<&'a Calibration>,
    windows: &'a [Vec<u32>],
    embed_tokenizer: bool,
    shard: Option<Shard>,
    asymmetric: Option<f64>,
}

impl<'a, 'c> LlamaCompression<'a, 'c> {
    /// Data-free, tokenizer embedded, the whole job (no shard).
    pub fn new(compressor: &'a Compressor<'c>) -> Self {
        Self {
            compressor,
            mode: Mode::DataFree,
            calibration: None,
            windows: &[],
            embed_tokenizer: true,
            shard: None,
            asymmetric: None,
        }
    }

    /// How much calibration to use.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Calibration for [`LlamaCompression::run`] (Hessians of the whole model, factored; with
    /// [`Calibration::with_finetune`] for [`Mode::LevelsLdlqFt`]). A layer-by-layer run makes
    /// its own calibration block by block and takes only this one's rate allocation
    /// ([`Calibration::with_allocation`]): each matrix's reference and sensitivity, applied to
    /// the column weights of the block's own Hessians.
    pub fn calibration(mut self, calibration: &'a Calibration) -> Self {
        self.calibration = Some(calibration);
        self
    }

    /// Calibration windows (token ids, one length) for [`LlamaCompression::run_layerwise`],
    /// which collects each block's Hessians as it goes.
    pub fn windows(mut self, windows: &'a [Vec<u32>]) -> Self {
        self.windows = windows;
        self
    }

    /// Whether the file holds the tokenizer (it is then decodable into a runnable model with
    /// nothing else).
    pub fn embed_tokenizer(mut self, yes: bool) -> Self {
        self.embed_tokenizer = yes;
        self
    }

    /// Codes one shard of a job spread over machines ([`LlamaCompression::run_layerwise`]).
    pub fn shard(mut self, shard: Shard) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Asymmetric calibration for [`LlamaCompression::run_layerwise`] (calibrated modes, not a
    /// shard): each block is calibrated on the activations of the model coded so far, its
    /// matrices coded as `W P` so that the coded block reproduces the *original* block's outputs
    /// from the inputs it will see (`P = (1 − alpha) I + alpha · E[x x̂ᵀ] E[x̂ x̂ᵀ]⁻¹`, GPTAQ's
    /// objective), so errors are corrected block after block instead of accumulating. Costs
    /// three forward passes of the calibration windows per block instead of one, and the
    /// original and coded activations in memory and in the checkpoint. `None` (the default):
    /// the original model's activations, `W` coded.
    pub fn asymmetric(mut self, alpha: Option<f64>) -> Self {
        self.asymmetric = alpha;
        self
    }

    fn needs(&self, what: &str) -> NwcError {
        NwcError::NeedsCalibration {
            mode: self.mode.label().into(),
            needs: what.into(),
        }
    }

    /// The mode checked against what [`LlamaCompression::run`] has.
    fn checked(&self) -> Result<Calibrated<'a>> {
        if self.shard.is_some() {
            return Err(NwcError::Config(
                "a shard is coded layer by layer: use run_layerwise".into(),
            ));
        }
        Ok(match (self.mode, self.calibration) {
            (Mode::DataFree, _) => Calibrated::DataFree,
            (Mode::Levels, Some(calibration)) => Calibrated::Levels {
                calibration,
                ldlq: false,
            },
            (Mode::LevelsLdlq, Some(calibration)) => Calibrated::Levels {
                calibration,
                ldlq: true,
            },
            (Mode::LevelsLdlqFt, Some(calibration)) => {
                let (windows, config) = calibration.finetune.as_ref().ok_or_else(|| {
                    self.needs("fine-tuning windows (Calibration::with_finetune)")
                })?;
                Calibrated::FineTuned {
                    calibration,
                    windows,
                    config,
                }
            }
            (_, None) => return Err(self.needs("calibration Hessians")),
        })
    }

    /// Compresses `weights` (held in memory) into a `.nwc` stream.
    ///
    /// # Errors
    /// [`NwcError::NeedsCalibration`] when the mode needs calibration this job lacks;
    /// [`NwcError::Config`] with a shard; any tensor's error.
    pub fn run<W: Write>(&self, weights: &LlamaWeights, out: W) -> Result<CompressReport> {
        let calibrated = self.checked()?;
        write_llama(
            self.compressor,
            weights,
            calibrated,
            self.embed_tokenizer,
            out,
        )
    }

    /// [`LlamaCompression::run`] into the file `output`, written whole or not at all.
    ///
    /// # Errors
    /// As [`LlamaCompression::run`], plus I/O errors naming the file.
    pub fn run_to_file(&self, weights: &LlamaWeights, output: &Path) -> Result<CompressReport> {
        self.checked()?;
        nwc_tensor::write_whole(output, |tmp| {
            let file = std::fs::File::create(tmp).map_err(NwcError::io(tmp))?;
            self.run(weights, std::io::BufWriter::new(file))
        })
    }

    /// Compresses the model in `src` into `output` one decoder block at a time (resumable;
    /// this job's shard only, when one is set), with the calibration windows.
    ///
    /// # Errors
    /// [`NwcError::NeedsCalibration`] for [`Mode::LevelsLdlqFt`] (fine-tuning runs on the
    /// whole model) or a calibrated mode without windows; load, coding and I/O errors (the
    /// partial file and its checkpoint are kept, so a rerun resumes).
    pub fn run_layerwise(
        &self,
        src: &dyn ModelSource,
        output: &Path,
        progress: impl FnMut(LayerwiseProgress<'_>),
    ) -> Result<LayerwiseReport> {
        self.layerwise(src, None, output, progress)
    }

    /// [`LlamaCompression::run_layerwise`] with `codec`'s step steered block by block (the
    /// compressor's options; module `steer`) so that the file measures `bits` per parameter,
    /// side information included: the first block and the tensors after the blocks are
    /// searched, every other block is coded once. Resumable like `run_layerwise`; not for a
    /// shard.
    ///
    /// # Errors
    /// As [`LlamaCompression::run_layerwise`]; [`NwcError::RateUnreachable`] for a rate
    /// outside 0.5..=16; [`NwcError::Config`] with a shard.
    pub fn run_layerwise_to_rate<C: RateControl>(
        &self,
        codec: &C,
        bits: f64,
        src: &dyn ModelSource,
        output: &Path,
        progress: impl FnMut(LayerwiseProgress<'_>),
    ) -> Result<LayerwiseReport> {
        let mut steer = Steer::new(codec, self.compressor.options().clone(), bits)?;
        self.layerwise(src, Some(&mut steer), output, progress)
    }

    fn layerwise(
        &self,
        src: &dyn ModelSource,
        steer: Option<&mut dyn Steering>,
        output: &Path,
        progress: impl FnMut(LayerwiseProgress<'_>),
    ) -> Result<LayerwiseReport> {
        match self.mode {
            Mode::LevelsLdlqFt => {
                return Err(self.needs("the whole model: use run with a fine-tuning calibration"));
            }
            Mode::Levels | Mode::LevelsLdlq if self.windows.is_empty() => {
                return Err(self.needs("calibration windows"));
            }
            _ => {}
        }
        if let Some(a) = self.asymmetric.filter(|a| !(0.0..=1.0).contains(a)) {
            return Err(NwcError::Config(format!(
                "asymmetric calibration's blend {a} is not in 0..=1"
            )));
        }
        run_layerwise(
            self.compressor,
            src,
            self.mode,
            self.windows,
            self.embed_tokenizer,
            self.shard,
            self.asymmetric,
            self.calibration.filter(|c| c.allocates()),
            steer,
            output,
            progress,
        )
    }

    /// The step of `codec` at which this job, run on `weights` with the compressor's options,
    /// writes a file of `bits` measured bits per parameter (within
    /// [`nwc_pipeline::RATE_TOLERANCE`], at worst 1 %), calibration and LDLQ in the loop;
    /// returns the codec at that step and the measured rate. Nothing is written.
    ///
    /// # Errors
    /// [`NwcError::RateUnreachable`] for a rate outside 0.5..=16 or out of the codec's reach;
    /// as [`LlamaCompression::run`].
    pub fn tune_to_rate<C: RateControl>(
        &self,
        codec: &C,
        weights: &LlamaWeights,
        bits: f64,
    ) -> Result<(C, f64)> {
        self.checked()?;
        let options = CompressOptions {
            report_error: false,
            ..self.compressor.options().clone()
        };
        search_rate(codec, bits, |c| {
            let compressor = Compressor::new(c).with_options(options.clone())?;
            let job = LlamaCompression {
                compressor: &compressor,
                ..*self
            };
            Ok(job.run(weights, Count(0))?.bits_per_param())
        })
    }
}

/// Compresses a whole Llama held in memory with every stage of the LLM pipeline — quality levels
/// from calibration Hessians, LDLQ, and block-wise fine-tuning ([`Mode::LevelsLdlqFt`]) — into
/// the file `output`, written whole or not at all (`output.partial`, renamed when complete).
/// Calibration uses the first `n_windows` windows of `ctx` tokens of `calib_ids`; fine-tuning
/// the first 8 of them (the last 2 held out for early stopping), with [`FtConfig::default`].
/// `progress(stage, done, total)` reports the calibration windows (`"calibration"`) and the
/// tensors (`"tensors"`).
///
/// # Errors
/// Too little calibration text; a Hessian that cannot be factored; any tensor's error; I/O
/// errors naming the file.
pub fn compress_llama_ft_file(
    compressor: &Compressor<'_>,
    weights: &LlamaWeights,
    calib_ids: &[u32],
    ctx: usize,
    n_windows: usize,
    output: &std::path::Path,
    progress: impl Fn(&str, usize, usize),
) -> Result<CompressReport> {
    use burn::backend::NdArray;
    let device = Default::default();
    let reference = crate::model::Llama::<NdArray>::from_weights(weights, &device)?;
    let fingerprint = crate::calib::calibration_fingerprint(weights, calib_ids, ctx);
    let hessians = Hessians::collect(
        &reference,
        calib_ids,
        ctx,
        n_windows,
        None,
        fingerprint,
        &device,
        |d, n| progress("calibration", d, n),
    )?;
    drop(reference);
    let ft_windows = crate::eval::windows(calib_ids, ctx, n_windows.min(8))?
        .into_iter()
        .map(<[u32]>::to_vec)
        .collect();
    let calibration = Calibration::new(&hessians, &weights.config)?
        .with_finetune(ft_windows, FtConfig::default());
    nwc_tensor::write_whole(output, |tmp| {
        let file = std::fs::File::create(tmp).map_err(nwc_pipeline::NwcError::io(tmp))?;
        compress_llama(
            compressor,
            weights,
            Some(&calibration),
            Mode::LevelsLdlqFt,
            true,
            std::io::BufWriter::new(file),
        )
    })
}

/// Compresses a Llama into a `.nwc` stream: its `config.json` (and, if asked, `tokenizer.json`)
/// as metadata records, then every tensor, coded per `mode` with `calibration`. Shorthand for
/// [`LlamaCompression`], which checks the mode against what it is given.
///
/// # Errors
/// [`NwcError::NeedsCalibration`] when `mode` needs calibration and none is given; any tensor's error.
pub fn compress_llama<W: Write>(
    compressor: &Compressor<'_>,
    weights: &LlamaWeights,
    calibration: Option<&Calibration>,
    mode: Mode,
    embed_tokenizer: bool,
    out: W,
) -> Result<CompressReport> {
    let mut job = LlamaCompression::new(compressor)
        .mode(mode)
        .embed_tokenizer(embed_tokenizer);
    if let Some(c) = calibration {
        job = job.calibration(c);
    }
    job.run(weights, out)
}

/// Compresses the Llama or Qwen2 in `src` into `output`, one decoder block at a time (see the
/// module documentation), resuming from a checkpoint of the same job when one is found beside
/// `output`. `windows` are the calibration windows (token ids, one length; unused for
/// [`Mode::DataFree`]); Hessians are those of the original model's activations, as in
/// [`compress_llama`]. `output` appears only when complete.
///
/// # Errors
/// [`NwcError::NeedsCalibration`] for [`Mode::LevelsLdlqFt`] (fine-tuning runs on the whole model) or a
/// calibrated mode without windows; load, coding and I/O errors (the partial file and its
/// checkpoint are kept, so a rerun resumes).
pub fn compress_llama_layerwise(
    compressor: &Compressor<'_>,
    src: &dyn ModelSource,
    mode: Mode,
    windows: &[Vec<u32>],
    embed_tokenizer: bool,
    output: &Path,
    progress: impl FnMut(LayerwiseProgress<'_>),
) -> Result<LayerwiseReport> {
    LlamaCompression::new(compressor)
        .mode(mode)
        .windows(windows)
        .embed_tokenizer(embed_tokenizer)
        .run_layerwise(src, output, progress)
}

/// [`compress_llama_layerwise`] for one shard of a job spread over machines: codes the decoder
/// blocks of `shard` (and, in shard 0, the metadata; in the last shard, the tensors after the
/// blocks) into the shard file `output`. [`super::shard::merge_shards`] joins the shards of one job,
/// every shard run with the same model, codec, mode and calibration, into the bytes
/// [`compress_llama_layerwise`] writes. A shard resumes like a whole run.
///
/// # Errors
/// As [`compress_llama_layerwise`].
#[allow(clippy::too_many_arguments)]
pub fn compress_llama_shard(
    compressor: &Compressor<'_>,
    src: &dyn ModelSource,
    mode: Mode,
    windows: &[Vec<u32>],
    embed_tokenizer: bool,
    shard: Shard,
    output: &Path,
    progress: impl FnMut(LayerwiseProgress<'_>),
) -> Result<LayerwiseReport> {
    LlamaCompression::new(compressor)
        .mode(mode)
        .windows(windows)
        .embed_tokenizer(embed_tokenizer)
        .shard(shard)
        .run_layerwise(src, output, progress)
}
