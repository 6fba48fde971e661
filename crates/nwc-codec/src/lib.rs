//! The learned NWC codec: analysis and synthesis networks (residual MLPs with a quality
//! embedding) and a trainable deep factorized entropy bottleneck, generic over the burn backend.
//!
//! This crate is a shell until the learned-codec release: the network, its training and the
//! shipped checkpoint land there. The pipeline it plugs into (`nwc::WeightCodec`) and the table
//! format it exports to (`nwc_entropy::Table`) exist already.
//!
//! ```
//! let cfg = nwc_codec::CodecConfig::default();
//! assert_eq!((cfg.chunk_len, cfg.width, cfg.blocks, cfg.levels), (16, 512, 4, 4));
//! ```
#![deny(missing_docs)]

/// Shape of the codec network. The defaults are the paper's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecConfig {
    /// Weights per chunk (input and output width of the networks).
    pub chunk_len: usize,
    /// Latent values per chunk.
    pub latent: usize,
    /// Hidden width of the residual blocks.
    pub width: usize,
    /// Residual blocks in each of g_a and g_s.
    pub blocks: usize,
    /// Quality levels of the embedding.
    pub levels: usize,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            chunk_len: 16,
            latent: 16,
            width: 512,
            blocks: 4,
            levels: 4,
        }
    }
}
