//! Compressing a Llama held in memory into one `.nwc` stream, with every mode, fine-tuning
//! included.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use half::f16;
use nwc_format::{FileReader, Payload, ReadOptions, Writer};
use nwc_pipeline::{CodedTensor, CompressReport, Compressor, Encoder, NwcError, Result};
use nwc_tensor::{ScaleAxis, Tensor};

use super::calibration::{Calibration, Mode, compress_llama_tensor};
use super::decode::decode_llama_from;
use super::records::{CONFIG_RECORD, TOKENIZER_RECORD};
use crate::finetune::{BlockFt, FtConfig};
use crate::weights::{LlamaWeights, Proj};

/// What a checked [`super::LlamaCompression`] hands the writer: the mode with what it needs.
#[derive(Clone, Copy)]
pub(crate) enum Calibrated<'a> {
    /// No calibration.
    DataFree,
    /// Levels (and LDLQ with `ldlq`) from this calibration.
    Levels {
        calibration: &'a Calibration,
        ldlq: bool,
    },
    /// Levels, LDLQ and fine-tuning on these windows with these settings.
    FineTuned {
        calibration: &'a Calibration,
        windows: &'a [Vec<u32>],
        config: &'a FtConfig,
    },
}

/// Writes a Llama `.nwc` stream (the body of [`super::LlamaCompression::run`]).
pub(crate) fn write_llama<W: Write>(
    compressor: &Compressor<'_>,
    weights: &LlamaWeights,
    calibrated: Calibrated<'_>,
    embed_tokenizer: bool,
    out: W,
) -> Result<CompressReport> {
    let (cal, mode) = match calibrated {
        Calibrated::DataFree => (None, Mode::DataFree),
        Calibrated::Levels { calibration, ldlq } => (
            Some(calibration),
            if ldlq { Mode::LevelsLdlq } else { Mode::Levels },
        ),
        Calibrated::FineTuned {
            calibration,
            windows,
            config,
        } => {
            return compress_llama_ft(
                compressor,
                weights,
                calibration,
                (windows, config),
                embed_tokenizer,
                out,
            );
        }
    };
    let cfg = &weights.config;
    let mut encoder = Encoder::new(compressor, out)?;
    let dtype_name = weights
        .tensors
        .get(crate::weights::EMBED)
        .and_then(|t| crate::weights::torch_dtype(t.dtype()))
        .unwrap_or("float32");
    encoder.metadata(CONFIG_RECORD, cfg.to_hf_json(dtype_name).as_bytes())?;
    if embed_tokenizer {
        encoder.metadata(TOKENIZER_RECORD, weights.tokenizer.to_json()?.as_bytes())?;
    }
    let tensors: Vec<&Tensor> = weights.tensors.values().collect();
    encoder.write_in_order(
        tensors.len(),
        |i| Ok(tensors[i]),
        |t| compress_llama_tensor(compressor, cfg, t, cal, mode),
    )?;
    encoder.finish()
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
    (windows, ft): (&[Vec<u32>], &FtConfig),
    embed_tokenizer: bool,
    out: W,
) -> Result<CompressReport> {
    use burn::backend::{Autodiff, NdArray};
    let start = Instant::now();
    let mut buf = Vec::new();
    let ldlq = Calibrated::Levels {
        calibration,
        ldlq: true,
    };
    let mut report = write_llama(compressor, weights, ldlq, embed_tokenizer, &mut buf)?;
    let reader = FileReader::new(&buf, ReadOptions::default())?;
    let decoded = decode_llama_from(&reader, compressor.codec(), Some(weights.tokenizer.clone()))?;
    let device = Default::default();
    let original = crate::model::Llama::<NdArray>::from_weights(weights, &device)?;
    let quantized = crate::model::Llama::<NdArray>::from_weights(&decoded, &device)?;
    let w: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
    let t = Instant::now();
    let blocks = crate::finetune::finetune_blocks::<Autodiff<NdArray>>(
        &original,
        &quantized,
        &w,
        ft,
        &device,
        |b| {
            tracing::debug!(
                layer = b.layer,
                before = b.heldout_before,
                after = b.heldout_after,
                "fine-tuned"
            );
        },
    )?;
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
