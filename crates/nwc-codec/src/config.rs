//! The shape of the codec network.

/// Which network a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// The paper's autoencoder: g_a → rounded latent under a learned factorized prior → g_s.
    #[default]
    Autoencoder,
    /// A trellis-coded latent with a learned synthesis: the weights (in quantizer steps) are
    /// coded by entropy-constrained TCQ, and a residual network maps the decoded grid positions,
    /// the step and the quality level to a correction, starting from the identity.
    TrellisRefiner,
}

impl Variant {
    /// The checkpoint code.
    pub fn code(self) -> u32 {
        match self {
            Variant::Autoencoder => 0,
            Variant::TrellisRefiner => 1,
        }
    }

    /// The variant of a checkpoint code.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Variant::Autoencoder),
            1 => Some(Variant::TrellisRefiner),
            _ => None,
        }
    }
}

/// Shape of the codec network. The defaults are the paper's (width 512, 4 blocks, 16 → 16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecConfig {
    /// Which network.
    pub variant: Variant,
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
            variant: Variant::Autoencoder,
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

    /// The small trellis refiner (width 128, 2 blocks) the library ships.
    pub fn refiner_small() -> Self {
        Self {
            variant: Variant::TrellisRefiner,
            ..Self::small()
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
    pub fn validate(&self) -> crate::error::Result<()> {
        let ok = (1..=64).contains(&self.chunk_len)
            && (1..=64).contains(&self.latent)
            && (1..=8192).contains(&self.width)
            && (1..=64).contains(&self.blocks)
            && (1..=4).contains(&self.levels)
            && (self.variant == Variant::Autoencoder || self.latent == self.chunk_len)
            && self.filters.len() <= 8
            && self.filters.iter().all(|f| (1..=64).contains(f));
        if ok {
            Ok(())
        } else {
            Err(crate::error::CodecError::Config(format!(
                "unusable codec configuration {self:?}"
            )))
        }
    }
}
