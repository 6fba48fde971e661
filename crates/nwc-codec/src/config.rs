//! The shape of the codec network.

/// Shape of the codec network. The defaults are the paper's (width 512, 4 blocks, 16 → 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecConfig {
    /// Weights per chunk (input width of g_a, output width of g_s).
    pub chunk_len: usize,
    /// Latent values per chunk.
    pub latent: usize,
    /// Hidden width of the residual blocks.
    pub width: usize,
    /// Residual blocks in each of g_a and g_s.
    pub blocks: usize,
    /// Quality levels of the embedding.
    pub levels: usize,
    /// Hidden widths of the entropy model's per-channel density network.
    pub filters: Vec<usize>,
}

impl Default for CodecConfig {
    fn default() -> Self {
        Self {
            chunk_len: 16,
            latent: 16,
            width: 512,
            blocks: 4,
            levels: 4,
            filters: nwc_entropy::DEFAULT_FILTERS.to_vec(),
        }
    }
}

impl CodecConfig {
    /// A small configuration that trains in minutes on a CPU (width 128, 2 blocks).
    pub fn small() -> Self {
        Self {
            width: 128,
            blocks: 2,
            ..Self::default()
        }
    }

    /// Layer widths of the density network including its scalar input and output.
    pub(crate) fn prior_widths(&self) -> Vec<usize> {
        let mut w = vec![1];
        w.extend_from_slice(&self.filters);
        w.push(1);
        w
    }

    /// Checks that every size is usable.
    ///
    /// # Errors
    /// [`crate::CodecError::Config`] for a zero size, more than 4 levels, or sizes so large they
    /// are surely a mistake.
    pub fn validate(&self) -> crate::Result<()> {
        let ok = (1..=64).contains(&self.chunk_len)
            && (1..=64).contains(&self.latent)
            && (1..=8192).contains(&self.width)
            && (1..=64).contains(&self.blocks)
            && (1..=4).contains(&self.levels)
            && self.filters.len() <= 8
            && self.filters.iter().all(|f| (1..=64).contains(f));
        if ok {
            Ok(())
        } else {
            Err(crate::CodecError::Config(format!(
                "unusable codec configuration {self:?}"
            )))
        }
    }
}
