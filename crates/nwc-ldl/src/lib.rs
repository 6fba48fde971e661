//! Hessian statistics and LDLQ error feedback for nwc, on plain slices.
//!
//! This crate is a shell until the LLM-pipeline release: streaming `H = E[x xᵀ]` accumulation,
//! damping, block LDL and the LDLQ feedback loop land there. Until then it holds the damping
//! constants the pipeline is specified with.
//!
//! ```
//! assert_eq!(nwc_ldl::DAMPING, 0.01);
//! assert_eq!(nwc_ldl::LDL_BLOCK, 128);
//! ```
#![deny(missing_docs)]

/// Relative damping added to the normalized Hessian: `H ← H / mean(diag H) + DAMPING · I`.
pub const DAMPING: f64 = 0.01;
/// Block size of the block LDL decomposition used by LDLQ.
pub const LDL_BLOCK: usize = 128;
