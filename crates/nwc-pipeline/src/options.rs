//! What a [`crate::encode::Compressor`] is told: which tensors it codes, how, and with which
//! per-column importance.

use nwc_tensor::{ChunkConfig, LevelBands, Tensor};

use crate::codec::WeightCodec;

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
