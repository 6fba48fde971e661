//! What a [`crate::encode::Compressor`] is told: which tensors it codes, how, and with which
//! per-column importance.

use half::f16;
use nwc_tensor::{ChunkConfig, LevelBands, ScaleAxis, ScaleRounding, Tensor};

use crate::codec::WeightCodec;
use crate::error::{NwcError, Result};

/// Which tensors are entropy-coded; every other tensor is stored losslessly.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPolicy {
    /// Tensors with fewer elements are stored losslessly (norms, biases, small heads).
    pub min_elements: usize,
    /// Code embedding tables (names containing `embed` or `wte`/`wpe`) too.
    pub code_embeddings: bool,
    /// Names containing any of these substrings are always stored losslessly.
    pub keep_lossless: Vec<String>,
}

impl Default for TensorPolicy {
    fn default() -> Self {
        Self {
            min_elements: 4096,
            code_embeddings: true,
            keep_lossless: Vec::new(),
        }
    }
}

impl TensorPolicy {
    /// Whether `t` is entropy-coded under this policy: a float tensor with at least two
    /// dimensions and enough elements that is not excluded by name.
    pub fn codes(&self, t: &Tensor) -> bool {
        let name = t.name();
        let is_embedding = ["embed", "wte", "wpe"].iter().any(|p| name.contains(p));
        t.dtype().is_float()
            && t.matrix_dims().is_some()
            && t.numel() >= self.min_elements
            && (self.code_embeddings || !is_embedding)
            && !self.keep_lossless.iter().any(|p| name.contains(p.as_str()))
    }
}

/// Options of a `Compressor`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressOptions {
    /// Chunking and normalization.
    pub chunk: ChunkConfig,
    /// Chunks per independently decodable segment (1..=4096).
    pub chunks_per_segment: usize,
    /// Which tensors are coded.
    pub policy: TensorPolicy,
    /// Importance bands that map per-column importance to quality levels.
    pub bands: LevelBands,
    /// Whether `Compressor::compress_tensor` decodes what it coded to report the error (the
    /// report's `sq_error` is NaN without). Rate searches turn it off.
    pub report_error: bool,
    /// Matrices with more values than this are coded in row slabs of a quarter of it, so that
    /// coding one holds the tensor, its symbols and one slab's work instead of several copies
    /// of the matrix (the embedding and output projection of a large vocabulary). Scales and
    /// levels always come from the whole matrix; codecs that fit statistics to what they are
    /// given (TCQ's rate model) fit them per slab.
    pub slab_values: usize,
    /// Incoherence processing: every coded matrix is rotated to `U W Vᵀ` before it is
    /// normalized and coded ([`nwc_tensor::rotate_matrix`]), and rotated back by the decoder.
    /// Importance and LDL factors given with it must be those of the rotated Hessian
    /// `V H Vᵀ`. Off by default.
    pub incoherence: bool,
    /// Rate allocation by column ([`StepAllocation`]) instead of importance bands. Off by
    /// default; a caller that turns it on gives importances in its units.
    pub allocation: Option<StepAllocation>,
}

impl Default for CompressOptions {
    fn default() -> Self {
        Self {
            chunk: ChunkConfig::default(),
            chunks_per_segment: 4096,
            policy: TensorPolicy::default(),
            bands: LevelBands::default(),
            report_error: true,
            slab_values: 1 << 25,
            incoherence: false,
            allocation: None,
        }
    }
}

impl CompressOptions {
    /// The defaults, with the chunk length `codec` asks for.
    pub fn for_codec(codec: &dyn WeightCodec) -> Self {
        let mut o = Self::default();
        if let Some(l) = codec.preferred_chunk_len() {
            o.chunk.chunk_len = l;
        }
        o
    }
}

/// Rate where it matters: every column of a matrix gets its own quantizer step instead of one of
/// the importance bands' levels. The importance given with a matrix is then the *loss weight* of
/// a squared error in each column, in the matrix's own units and normalized so that weight 1
/// keeps the codec's step; a column of weight `λ` and normalization scale `s` is coded with the
/// codec's step times `m = 1 / (s·√λ)`, clamped to `min..=max`. That is the high-rate optimum of
/// an entropy-coded quantizer: the absolute step goes as `1/√λ`, so every column sits at the
/// same slope of weighted error against rate, across matrices too when their weights share one
/// normalization (and columns too unimportant for any bit get none: reverse water-filling).
///
/// The multiplier folds into the column's stored scale (`s·m`, rounded as scales are), so the
/// file format and the decoder are unchanged; every column is at level 0. It needs
/// [`ScaleAxis::Column`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepAllocation {
    /// Smallest step multiplier.
    pub min: f32,
    /// Largest step multiplier.
    pub max: f32,
}

impl Default for StepAllocation {
    /// `1/64..=64`: wide enough that the clamp binds only on columns that are nearly dead or
    /// far outside the model's range.
    fn default() -> Self {
        Self {
            min: 1.0 / 64.0,
            max: 64.0,
        }
    }
}

impl StepAllocation {
    /// Folds each column's multiplier into its scale: `scales[j] ← round(scales[j] · m_j)`.
    ///
    /// # Errors
    /// [`NwcError::Config`] for row scales, a weight that is NaN, infinite or negative, a
    /// length that is not one per column, or a clamp range that is not `0 < min ≤ max`.
    pub fn fold(
        &self,
        name: &str,
        scales: &mut [f16],
        weights: &[f32],
        chunk: &ChunkConfig,
    ) -> Result<()> {
        if chunk.axis != ScaleAxis::Column {
            return Err(NwcError::Config(format!(
                "{name}: rate allocation by column needs column scales"
            )));
        }
        if !(self.min > 0.0 && self.min <= self.max && self.max.is_finite()) {
            return Err(NwcError::Config(format!(
                "step allocation range {}..={} is not 0 < min ≤ max",
                self.min, self.max
            )));
        }
        if weights.len() != scales.len() {
            return Err(NwcError::Config(format!(
                "{name}: {} column weights for {} columns",
                weights.len(),
                scales.len()
            )));
        }
        if let Some((j, w)) = weights
            .iter()
            .enumerate()
            .find(|(_, w)| !w.is_finite() || **w < 0.0)
        {
            return Err(NwcError::Config(format!(
                "{name}: column weight {w} at column {j} is not finite and non-negative"
            )));
        }
        let (lo, hi) = (
            f64::from(f16::MIN_POSITIVE.to_f32()),
            f64::from(f16::MAX.to_f32()),
        );
        let mut ms = Vec::with_capacity(scales.len());
        for (s, &w) in scales.iter_mut().zip(weights) {
            let v = f64::from(s.to_f32());
            let lambda = f64::from(w) * v * v;
            let m = if lambda > 0.0 {
                (1.0 / lambda.sqrt()).clamp(f64::from(self.min), f64::from(self.max))
            } else {
                f64::from(self.max)
            };
            ms.push(m);
            let folded = (v * m).clamp(lo, hi);
            *s = match chunk.rounding {
                ScaleRounding::Fp16 => f16::from_f64(folded),
                ScaleRounding::PowerOfTwo => {
                    f16::from_f64(folded.log2().round().clamp(-14.0, 15.0).exp2())
                }
            };
        }
        if tracing::enabled!(tracing::Level::DEBUG) && !ms.is_empty() {
            ms.sort_by(f64::total_cmp);
            let q = |f: f64| ms[((ms.len() - 1) as f64 * f) as usize];
            tracing::debug!(
                tensor = name,
                min = q(0.0),
                p10 = q(0.1),
                median = q(0.5),
                p90 = q(0.9),
                max = q(1.0),
                "step multipliers"
            );
        }
        Ok(())
    }
}

/// Per-tensor importance (per input column), for example the diagonal of the layer's Hessian.
/// `None` means "no information": every column gets level 0 (data-free mode).
pub trait Importance {
    /// Importance of each column of tensor `name` (`cols` values), if known.
    fn importance(&self, name: &str, cols: usize) -> Option<Vec<f32>>;
}

/// Data-free mode: no importance, every column at level 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uniform;

impl Importance for Uniform {
    fn importance(&self, _name: &str, _cols: usize) -> Option<Vec<f32>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(weights: &[f32], scales: &[f32], chunk: &ChunkConfig) -> Result<Vec<f32>> {
        let mut s: Vec<f16> = scales.iter().map(|&v| f16::from_f32(v)).collect();
        StepAllocation::default().fold("w", &mut s, weights, chunk)?;
        Ok(s.iter().map(|v| v.to_f32()).collect())
    }

    #[test]
    fn steps_go_as_one_over_the_root_of_the_weight() {
        let c = ChunkConfig::default();
        // m = 1/(s·√λ): λ = 4, s = 0.5 → m = 1 (scale kept); λ = 1/4, s = 0.5 → m = 4;
        // λ = 64, s = 2 → m = 1/16.
        let s = fold(&[4.0, 0.25, 64.0], &[0.5, 0.5, 2.0], &c).unwrap();
        assert_eq!(s, vec![0.5, 2.0, 0.125]);
        // A dead column gets the largest step, an enormous weight the smallest.
        let s = fold(&[0.0, 1e12], &[1.0, 1.0], &c).unwrap();
        assert_eq!(s, vec![64.0, 1.0 / 64.0]);
        // Power-of-two scales stay powers of two.
        let p2 = ChunkConfig {
            rounding: ScaleRounding::PowerOfTwo,
            ..c
        };
        let s = fold(&[0.5], &[1.0], &p2).unwrap();
        assert!(s[0] == 1.0 || s[0] == 2.0, "{s:?}");
    }

    #[test]
    fn bad_weights_and_row_scales_are_errors() {
        let c = ChunkConfig::default();
        assert!(fold(&[f32::NAN], &[1.0], &c).is_err());
        assert!(fold(&[-1.0], &[1.0], &c).is_err());
        assert!(fold(&[1.0, 1.0], &[1.0], &c).is_err());
        let rows = ChunkConfig {
            axis: ScaleAxis::Row,
            ..c
        };
        assert!(fold(&[1.0], &[1.0], &rows).is_err());
        let mut s = vec![f16::ONE];
        let bad = StepAllocation { min: 2.0, max: 1.0 };
        assert!(bad.fold("w", &mut s, &[1.0], &c).is_err());
    }
}
