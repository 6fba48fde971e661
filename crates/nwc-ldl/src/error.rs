//! The error type of `nwc-ldl`.

/// Everything that can go wrong with Hessians and LDLQ.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LdlError {
    /// Lengths or dimensions disagree.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// The (damped) Hessian is not positive definite, so it has no LDL factorization: damp it
    /// more (a singular Hessian from too little calibration data is the usual cause).
    #[error("Hessian of size {0} is not positive definite; increase damping")]
    NotPositiveDefinite(usize),
    /// A statistic is NaN or infinite (bad activations), or no samples were accumulated.
    #[error("invalid statistics: {0}")]
    Invalid(String),
    /// The quantizer in the loop failed.
    #[error("quantizer failed on block starting at column {start}: {reason}")]
    Quantizer {
        /// First column of the block.
        start: usize,
        /// Its message.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = LdlError> = std::result::Result<T, E>;
