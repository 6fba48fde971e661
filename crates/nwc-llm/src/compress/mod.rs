//! Compressing Llama-architecture language models: quality levels from calibration Hessians,
//! LDLQ error feedback with the codec in the loop, a self-describing `.nwc` file that decodes
//! back into a runnable model, and the RTN/GPTQ baselines measured the same way.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use crate::{
    BlockFt, FtConfig, Hessians, LlamaConfig, LlamaWeights, Proj, Site, TextTokenizer, site_of,
};
use half::f16;
use nwc_format::{FileReader, Payload, ReadOptions, Record, Writer};
use nwc_ldl::{BlockLdl, GroupRtn};
use nwc_tensor::{DType, ScaleAxis, Tensor};

mod layerwise;
mod shard;

pub use self::layerwise::{
    LayerwiseProgress, LayerwiseReport, StageTimes, compress_llama_layerwise, compress_llama_shard,
};
pub use self::shard::{SHARD_RECORD, Shard, merge_shards};

use nwc_pipeline::{
    CodedTensor, CompressReport, Compressor, NwcError, NwcFile, Result, TensorPolicy,
    WeightCodec,
};

/// Metadata record holding the model's `config.json` (`docs/format.md`).
pub const CONFIG_RECORD: &str = "nwc.llama.config.json";
/// Metadata record holding the model's `tokenizer.json` (`docs/format.md`).
pub const TOKENIZER_RECORD: &str = "nwc.llama.tokenizer.json";

/// How much calibration information the compressor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// No calibration: every column at level 0, no feedback.
    DataFree,
    /// Quality level per input column from diag(H) bands.
    Levels,
    /// Levels, and LDLQ error feedback through the block LDL factor of H.
    LevelsLdlq,
    /// Levels, LDLQ, then block-wise recovery fine-tuning of per-column scales and norms
    /// ([`crate::finetune_blocks`]; needs [`Calibration::with_finetune`]).
    LevelsLdlqFt,
}

impl Mode {
    /// All four, from least to most calibration.
    pub const ALL: [Mode; 4] = [
        Mode::DataFree,
        Mode::Levels,
        Mode::LevelsLdlq,
        Mode::LevelsLdlqFt,
    ];

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Mode::DataFree => "data-free",
            Mode::Levels => "levels",
            Mode::LevelsLdlq => "levels+LDLQ",
            Mode::LevelsLdlqFt => "levels+LDLQ+FT",
        }
    }
}

/// One site's calibration: importance per column and the LDL factor of the damped Hessian.
#[derive(Debug, Clone)]
struct SiteCalibration {
    importance: Vec<f32>,
    ldl: BlockLdl,
}

impl SiteCalibration {
    fn new(site: Site, h: nalgebra::DMatrix<f64>) -> Result<Self> {
        let importance: Vec<f32> = h.diagonal().iter().map(|&v| v as f32).collect();
        let d = nwc_ldl::damp_owned(h, nwc_ldl::DAMPING)?;
        if !d.dead.is_empty() {
            tracing::debug!(site = %site.key(), dead = d.dead.len(), "dead input columns");
        }
        let ldl = BlockLdl::from_owned(d.h, nwc_ldl::LDL_BLOCK)?;
        Ok(Self { importance, ldl })
    }
}

/// The block LDL factor (block [`nwc_ldl::LDL_BLOCK`]) of every linear-layer input's damped
/// Hessian, and its column importances, computed once and shared by every method that uses them.
#[derive(Debug, Clone)]
pub struct Calibration {
    sites: BTreeMap<Site, SiteCalibration>,
    finetune: Option<(Vec<Vec<u32>>, FtConfig)>,
}

impl Calibration {
    /// Damps every Hessian (dead columns, then `H/mean(diag) + 0.01·I`, as GPTQ/QuIP# do) and
    /// factors it.
    ///
    /// # Errors
    /// [`NwcError::Ldl`] when a Hessian is empty or cannot be factored even after damping.
    pub fn new(hessians: &Hessians, cfg: &LlamaConfig) -> Result<Self> {
        let mut sites = BTreeMap::new();
        for site in Site::all(cfg) {
            sites.insert(site, SiteCalibration::new(site, hessians.hessian(site)?)?);
        }
        Ok(Self {
            sites,
            finetune: None,
        })
    }

    /// Calibration of the sites in `hessians` only, each accumulator freed as soon as it is
    /// factored (layer-by-layer compression holds one block's).
    pub(crate) fn take_all(mut hessians: Hessians) -> Result<Self> {
        let mut sites = BTreeMap::new();
        for site in hessians.sites().collect::<Vec<_>>() {
            let h = hessians.take(site)?;
            sites.insert(site, SiteCalibration::new(site, h)?);
        }
        Ok(Self {
            sites,
            finetune: None,
        })
    }

    /// Adds what [`Mode::LevelsLdlqFt`] needs: calibration windows (token ids, one length) and
    /// the fine-tuning settings.
    pub fn with_finetune(mut self, windows: Vec<Vec<u32>>, config: FtConfig) -> Self {
        self.finetune = Some((windows, config));
        self
    }

    /// diag(H) of a site: the importance of each input column.
    pub fn importance(&self, site: Site) -> Option<&[f32]> {
        self.sites.get(&site).map(|s| s.importance.as_slice())
    }

    /// The block LDL factor of a site's damped Hessian.
    pub fn ldl(&self, site: Site) -> Option<&BlockLdl> {
        self.sites.get(&site).map(|s| &s.ldl)
    }
}

pub(crate) fn metadata(name: &str, text: &str) -> Record {
    Record {
        name: name.to_string(),
        dtype: DType::U8,
        shape: vec![text.len() as u64],
        payload: Payload::Raw(text.as_bytes().to_vec()),
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
    let reference = crate::Llama::<NdArray>::from_weights(weights, &device)?;
    let fingerprint = crate::calibration_fingerprint(weights, calib_ids, ctx);
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
    let ft_windows = crate::windows(calib_ids, ctx, n_windows.min(8))?
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
/// as metadata records, then every tensor, coded per `mode` with `calibration`.
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
    if let (Mode::LevelsLdlqFt, Some(c)) = (mode, calibration) {
        return compress_llama_ft(compressor, weights, c, embed_tokenizer, out);
    }
    let start = Instant::now();
    let cal = match (mode, calibration) {
        (Mode::DataFree, _) => None,
        (_, Some(c)) => Some(c),
        (m, None) => {
            return Err(NwcError::NeedsCalibration {
                mode: m.label().into(),
                needs: "calibration Hessians".into(),
            });
        }
    };
    let cfg = &weights.config;
    let mut writer = Writer::new(out, compressor.header())?;
    let dtype_name = weights
        .tensors
        .get(crate::EMBED)
        .and_then(|t| crate::torch_dtype(t.dtype()))
        .unwrap_or("float32");
    writer.write(&metadata(CONFIG_RECORD, &cfg.to_hf_json(dtype_name)))?;
    if embed_tokenizer {
        writer.write(&metadata(TOKENIZER_RECORD, &weights.tokenizer.to_json()?))?;
    }
    let tensors: Vec<(&String, &Tensor)> = weights.tensors.iter().collect();
    let n = tensors.len();
    let mut reports = Vec::with_capacity(n);
    nwc_pipeline::compress_in_order(
        n,
        |i| Ok(tensors[i]),
        |(_, t)| compress_llama_tensor(compressor, cfg, t, cal, mode),
        |i, record, mut report| {
            report.bytes = writer.write(&record)?;
            tracing::debug!(tensor = %tensors[i].0, bits_per_param = report.bits_per_param(), nmse = report.nmse(), "compressed");
            compressor.report_progress(&report, i + 1, n);
            reports.push(report);
            Ok(())
        },
    )?;
    let (_, file_bytes) = writer.finish()?;
    Ok(CompressReport {
        tensors: reports,
        file_bytes,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Codes one tensor of a Llama per `mode`: a matrix whose input site `calibration` holds gets
/// that site's levels (and LDLQ in the LDLQ modes); everything else is coded uncalibrated (or
/// stored, per the policy).
pub(crate) fn compress_llama_tensor(
    compressor: &Compressor<'_>,
    cfg: &LlamaConfig,
    t: &Tensor,
    calibration: Option<&Calibration>,
    mode: Mode,
) -> Result<(Record, nwc_pipeline::TensorReport)> {
    let site = site_of(cfg, t.name()).filter(|_| compressor.options().policy.codes(t));
    let calibrated = calibration
        .zip(site)
        .and_then(|(c, s)| Some((c.importance(s)?, c.ldl(s)?)));
    match (calibrated, mode) {
        (Some((imp, ldl)), Mode::LevelsLdlq | Mode::LevelsLdlqFt) => {
            compressor.compress_tensor_ldlq(t, Some(imp), ldl)
        }
        (Some((imp, _)), _) => compressor.compress_tensor(t, Some(imp)),
        (None, _) => compressor.compress_tensor(t, None),
    }
}

/// Decodes a `.nwc` Llama back into weights. The tokenizer comes from the file when it holds
/// one, else from `tokenizer`.
///
/// # Errors
/// [`NwcError::NotLlama`] when the file has no Llama configuration or no tokenizer is available;
/// decoding and shape errors.
pub fn decode_llama(
    file: &NwcFile,
    codec: &dyn WeightCodec,
    tokenizer: Option<TextTokenizer>,
) -> Result<LlamaWeights> {
    decode_llama_from(&file.reader()?, codec, tokenizer)
}

/// [`decode_llama`] from a parsed container (records decoded in parallel).
fn decode_llama_from(
    reader: &FileReader<'_>,
    codec: &dyn WeightCodec,
    tokenizer: Option<TextTokenizer>,
) -> Result<LlamaWeights> {
    let (config, tokenizer) = llama_metadata(reader, tokenizer)?;
    let tensors = nwc_pipeline::decode_records(reader, codec)?
        .into_iter()
        .filter(|t| !nwc_format::is_metadata(t.name()))
        .map(|t| (t.name().to_string(), t))
        .collect();
    Ok(LlamaWeights::from_parts(config, tensors, tokenizer)?)
}

/// The configuration and tokenizer records of a Llama `.nwc`; the tokenizer falls back to
/// `tokenizer` when the file holds none.
fn llama_metadata(
    reader: &FileReader<'_>,
    tokenizer: Option<TextTokenizer>,
) -> Result<(LlamaConfig, TextTokenizer)> {
    let text = |name: &str| -> Result<Option<String>> {
        match reader.index().iter().position(|e| e.name == name) {
            None => Ok(None),
            Some(i) => match reader.record(i)?.payload {
                Payload::Raw(b) => String::from_utf8(b)
                    .map(Some)
                    .map_err(|_| NwcError::Corrupt {
                        name: name.to_string(),
                        reason: "metadata is not UTF-8".into(),
                    }),
                Payload::Coded(_) => Err(NwcError::Corrupt {
                    name: name.to_string(),
                    reason: "a metadata record is coded".into(),
                }),
            },
        }
    };
    let config = LlamaConfig::from_hf_json(
        &text(CONFIG_RECORD)?
            .ok_or_else(|| NwcError::NotLlama(format!("the file has no {CONFIG_RECORD}")))?,
    )?;
    let tokenizer = match text(TOKENIZER_RECORD)? {
        Some(t) => TextTokenizer::from_json(&t)?,
        None => tokenizer.ok_or_else(|| {
            NwcError::NotLlama("the file holds no tokenizer and none was given".into())
        })?,
    };
    Ok((config, tokenizer))
}

/// Whether `file` is a Llama `.nwc` (it holds the model's configuration).
///
/// # Errors
/// As [`NwcFile::reader`].
pub fn is_llama(file: &NwcFile) -> Result<bool> {
    file.has_record(CONFIG_RECORD)
}

/// Decodes `file` to `output` with `codec` (see [`NwcFile::decoder`] for the file's own): a
/// Llama `.nwc` becomes a GGUF file llama.cpp loads when `output` ends in `.gguf`, else a
/// Hugging Face directory (`config.json`, `tokenizer.json`, `model.safetensors`) unless
/// `output` ends in `.safetensors` (weights in `dtype`, F16 by default); any other file a
/// safetensors file with the original dtypes (or `dtype`). Every file is written whole or not
/// at all.
///
/// # Errors
/// Decoding errors; [`NwcError::Config`] for a dtype that is not F32, F16 or BF16 (or, for a
/// Hugging Face directory, any other dtype save_hf refuses); I/O errors naming the path.
pub fn decode_to(
    file: &NwcFile,
    codec: &dyn WeightCodec,
    output: impl AsRef<std::path::Path>,
    dtype: Option<DType>,
) -> Result<()> {
    let output = output.as_ref();
    let ext = |e: &str| output.extension().is_some_and(|x| x == e);
    match (is_llama(file)?, ext("gguf")) {
        (true, true) => {
            decode_llama(file, codec, None)?.save_gguf(output, dtype.unwrap_or(DType::F16))?;
        }
        (false, true) => {
            return Err(NwcError::NotLlama(format!(
                "{}: GGUF output needs a Llama-family .nwc",
                output.display()
            )));
        }
        (true, false) if !ext("safetensors") => {
            decode_llama(file, codec, None)?.save_hf(output, dtype.unwrap_or(DType::F16))?;
        }
        _ => file.to_safetensors(codec, output, dtype)?,
    }
    Ok(())
}

/// A Llama `.nwc` file as a [`ModelSource`](crate::ModelSource): each tensor is decoded when asked for, so a
/// compressed model larger than memory can be evaluated one block at a time
/// ([`crate::layerwise_perplexity`]).
pub struct NwcLlamaSource<'c> {
    file: NwcFile,
    codec: &'c dyn WeightCodec,
    config: LlamaConfig,
    tokenizer: TextTokenizer,
    names: Vec<String>,
}

impl std::fmt::Debug for NwcLlamaSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NwcLlamaSource")
            .field("config", &self.config)
            .field("tensors", &self.names.len())
            .finish()
    }
}

impl<'c> NwcLlamaSource<'c> {
    /// Opens a Llama `.nwc` written by [`compress_llama`] or [`compress_llama_layerwise`]. The
    /// tokenizer comes from the file when it holds one, else from `tokenizer`.
    ///
    /// # Errors
    /// [`NwcError::CodecMismatch`] when `codec` is not the file's; [`NwcError::NotLlama`] when the
    /// file has no Llama configuration or no tokenizer is available; container errors.
    pub fn open(
        path: impl AsRef<std::path::Path>,
        codec: &'c dyn WeightCodec,
        tokenizer: Option<TextTokenizer>,
    ) -> Result<Self> {
        let file = NwcFile::open(path)?;
        let reader = file.reader()?;
        nwc_pipeline::Decompressor::new(codec).check_header(reader.header())?;
        let (config, tokenizer) = llama_metadata(&reader, tokenizer)?;
        let mut names: Vec<String> = reader
            .index()
            .iter()
            .map(|e| e.name.clone())
            .filter(|n| !nwc_format::is_metadata(n))
            .collect();
        names.sort();
        drop(reader);
        Ok(Self {
            file,
            codec,
            config,
            tokenizer,
            names,
        })
    }
}

impl crate::ModelSource for NwcLlamaSource<'_> {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn tensor(&self, name: &str) -> crate::Result<Tensor> {
        self.file
            .tensor(self.codec, name)
            .map_err(|e| crate::LlmError::Source {
                name: name.to_string(),
                source: Box::new(e),
            })
    }

    fn fingerprint(&self) -> [u8; 32] {
        crate::fingerprint(&[self.file.bytes()])
    }
}

/// What fine-tuning does to one record of a Llama `.nwc`.
enum FtEdit<'a> {
    /// Multiply the matrix's columns (its stored per-column scales) by these.
    Columns(&'a [f32]),
    /// Replace the (raw) norm weight by these values.
    Values(&'a [f32]),
}

/// Copies the container in `reader` to `out` with the fine-tuned per-column scales folded into
/// each coded matrix's stored f16 scales and the fine-tuned norms in place of the old ones; every
/// other byte of every record is unchanged, so the rate is too. Returns the file's bytes.
fn rewrite_with_finetune<W: Write>(
    reader: &FileReader<'_>,
    blocks: &[BlockFt],
    out: W,
) -> Result<u64> {
    let mut edits: BTreeMap<String, FtEdit<'_>> = BTreeMap::new();
    for b in blocks {
        for (k, p) in Proj::ALL.iter().enumerate() {
            edits.insert(p.name(b.layer), FtEdit::Columns(&b.col_scales[k]));
        }
        edits.insert(
            format!("model.layers.{}.input_layernorm.weight", b.layer),
            FtEdit::Values(&b.attn_norm),
        );
        edits.insert(
            format!("model.layers.{}.post_attention_layernorm.weight", b.layer),
            FtEdit::Values(&b.mlp_norm),
        );
    }
    let mut writer = Writer::new(out, *reader.header())?;
    for i in 0..reader.index().len() {
        let mut r = reader.record(i)?;
        let bad = |why: String| NwcError::Config(format!("fine-tuning {}: {why}", r.name));
        let shape: Vec<usize> = r.shape.iter().map(|&d| d as usize).collect();
        // The typed side information of a coded record whose scales change.
        let typed = match (edits.get(&r.name), &r.payload) {
            (Some(FtEdit::Columns(_)), Payload::Coded(_)) => Some(CodedTensor::try_from(&r)?),
            _ => None,
        };
        match (edits.get(&r.name), &mut r.payload) {
            (None, _) => {}
            (Some(FtEdit::Columns(s)), Payload::Coded(c)) => {
                let mut typed = typed.expect("a coded record with new scales");
                if typed.axis != ScaleAxis::Column || typed.scales.len() != s.len() {
                    return Err(bad(format!(
                        "{} scales on the {:?} axis for {} column multipliers",
                        typed.scales.len(),
                        typed.axis,
                        s.len()
                    )));
                }
                for (b, &m) in typed.scales.iter_mut().zip(*s) {
                    *b = f16::from_f32(b.to_f32() * m);
                }
                let segments = std::mem::take(&mut c.segments);
                *c = typed.into_payload(segments);
            }
            (Some(edit), Payload::Raw(bytes)) => {
                let t = Tensor::from_bytes(&r.name, r.dtype, shape.clone(), bytes.clone())?;
                let mut v = t.to_f32()?;
                match edit {
                    FtEdit::Columns(s) => {
                        if shape.len() != 2 || shape[1] != s.len() {
                            return Err(bad(format!("shape {shape:?} for {} columns", s.len())));
                        }
                        for row in v.chunks_mut(s.len()) {
                            row.iter_mut().zip(*s).for_each(|(x, m)| *x *= m);
                        }
                    }
                    FtEdit::Values(n) if n.len() == v.len() => v.copy_from_slice(n),
                    FtEdit::Values(n) => {
                        return Err(bad(format!("{} values for {} elements", n.len(), v.len())));
                    }
                }
                *bytes = Tensor::from_f32(&r.name, r.dtype, shape, &v)?
                    .bytes()
                    .to_vec();
            }
            (Some(FtEdit::Values(_)), Payload::Coded(_)) => {
                return Err(bad("a coded norm cannot take new values".into()));
            }
        }
        writer.write(&r)?;
    }
    Ok(writer.finish()?.1)
}

/// Mode [`Mode::LevelsLdlqFt`]: LDLQ into memory, decode, fine-tune every block on the CPU,
/// write the file with the learned scales and norms.
fn compress_llama_ft<W: Write>(
    compressor: &Compressor<'_>,
    weights: &LlamaWeights,
    calibration: &Calibration,
    embed_tokenizer: bool,
    out: W,
) -> Result<CompressReport> {
    use burn::backend::{Autodiff, NdArray};
    let start = Instant::now();
    let (windows, ft) =
        calibration
            .finetune
            .as_ref()
            .ok_or_else(|| NwcError::NeedsCalibration {
                mode: Mode::LevelsLdlqFt.label().into(),
                needs: "fine-tuning windows (Calibration::with_finetune)".into(),
            })?;
    let mut buf = Vec::new();
    let mut report = compress_llama(
        compressor,
        weights,
        Some(calibration),
        Mode::LevelsLdlq,
        embed_tokenizer,
        &mut buf,
    )?;
    let reader = FileReader::new(&buf, ReadOptions::default())?;
    let decoded = decode_llama_from(&reader, compressor.codec(), Some(weights.tokenizer.clone()))?;
    let device = Default::default();
    let original = crate::Llama::<NdArray>::from_weights(weights, &device)?;
    let quantized = crate::Llama::<NdArray>::from_weights(&decoded, &device)?;
    let w: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
    let t = Instant::now();
    let blocks =
        crate::finetune_blocks::<Autodiff<NdArray>>(&original, &quantized, &w, ft, &device, |b| {
            tracing::debug!(
                layer = b.layer,
                before = b.heldout_before,
                after = b.heldout_after,
                "fine-tuned"
            );
        })?;
    let (before, after) = blocks.iter().fold((0.0, 0.0), |(a, b), f| {
        (a + f.heldout_before, b + f.heldout_after)
    });
    tracing::info!(
        seconds = t.elapsed().as_secs_f64(),
        blocks = blocks.len(),
        mean_heldout_before = before / blocks.len().max(1) as f64,
        mean_heldout_after = after / blocks.len().max(1) as f64,
        "block-wise fine-tuning done"
    );
    report.file_bytes = rewrite_with_finetune(&reader, &blocks, out)?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// A baseline quantizer, applied to the same matrices NWC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Per-group round-to-nearest, `bits` per weight, groups of 128 columns.
    Rtn(u32),
    /// GPTQ (LDLQ feedback with the same grid) using the calibration Hessians.
    Gptq(u32),
}

impl Baseline {
    /// A short label for tables.
    pub fn label(self) -> String {
        match self {
            Baseline::Rtn(b) => format!("RTN {b}-bit g128"),
            Baseline::Gptq(b) => format!("GPTQ {b}-bit g128"),
        }
    }
}

/// What a baseline produced: the dequantized model and its *measured* size.
#[derive(Debug)]
pub struct BaselineResult {
    /// The dequantized weights.
    pub weights: LlamaWeights,
    /// Bytes of the serialized codes, scales and minima of every quantized matrix, plus the
    /// stored bytes of every tensor left as it was.
    pub bytes: u64,
    /// `8 × bytes / parameters`.
    pub bits_per_param: f64,
}

/// Quantizes every matrix `policy` selects with a baseline; other tensors are kept as they are
/// and counted at their stored size.
///
/// # Errors
/// [`NwcError::NeedsCalibration`] when GPTQ has no calibration; quantizer errors.
pub fn quantize_baseline(
    weights: &LlamaWeights,
    calibration: Option<&Calibration>,
    baseline: Baseline,
    policy: &TensorPolicy,
) -> Result<BaselineResult> {
    let cfg = &weights.config;
    let mut bytes = 0u64;
    let mut tensors = BTreeMap::new();
    for (name, t) in &weights.tensors {
        let site = site_of(cfg, name).filter(|_| policy.codes(t));
        let Some((site, (rows, cols))) = site.zip(t.matrix_dims()) else {
            bytes += t.bytes().len() as u64;
            tensors.insert(name.clone(), t.clone());
            continue;
        };
        let w = t.to_f32()?;
        let packed = match baseline {
            Baseline::Rtn(b) => GroupRtn::new(b, 128)?.quantize(&w, rows, cols)?,
            Baseline::Gptq(b) => {
                let ldl = calibration.and_then(|c| c.ldl(site)).ok_or_else(|| {
                    NwcError::NeedsCalibration {
                        mode: "GPTQ".into(),
                        needs: "calibration Hessians".into(),
                    }
                })?;
                nwc_ldl::gptq(&w, rows, cols, ldl, GroupRtn::new(b, 128)?)?
            }
        };
        bytes += packed.bytes.len() as u64;
        tensors.insert(
            name.clone(),
            Tensor::from_f32(name.clone(), t.dtype(), t.shape().to_vec(), &packed.values)?,
        );
    }
    let n: usize = weights.n_params();
    let weights = LlamaWeights::from_parts(cfg.clone(), tensors, weights.tokenizer.clone())?;
    Ok(BaselineResult {
        weights,
        bytes,
        bits_per_param: 8.0 * bytes as f64 / n.max(1) as f64,
    })
}
