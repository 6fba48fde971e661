//! The error type of `nwc-entropy`.

/// Everything that can go wrong while building tables or coding symbols.
///
/// `Corrupt*` variants mean the *input bytes* are damaged or hostile; the others mean the caller
/// passed inconsistent arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntropyError {
    /// A table's description is invalid (frequencies not summing to 2^precision, a zero
    /// frequency, too many or too few symbols, precision out of range).
    #[error("invalid entropy table: {0}")]
    InvalidTable(String),
    /// A probability vector handed to the quantizer is not a distribution.
    #[error("invalid probabilities: {0}")]
    InvalidProbabilities(String),
    /// The parameters of a factorized prior have inconsistent shapes or non-finite values.
    #[error("invalid prior parameters: {0}")]
    InvalidPrior(String),
    /// The layout handed to the coder does not match the data (table map out of range,
    /// symbol count not a whole number of chunks, a class without a row in the map).
    #[error("invalid coder layout: {0}")]
    InvalidLayout(String),
    /// A segment ended before all its symbols were decoded.
    #[error("corrupt segment {segment}: stream exhausted after {decoded} symbols")]
    CorruptTruncated {
        /// Index of the failing segment.
        segment: usize,
        /// Symbols decoded before the stream ran out.
        decoded: usize,
    },
    /// A segment decoded all its symbols but failed the end check (final states must equal the
    /// initial state and every word must be consumed).
    #[error("corrupt segment {segment}: {reason}")]
    CorruptSegment {
        /// Index of the failing segment.
        segment: usize,
        /// What the end check found.
        reason: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = EntropyError> = std::result::Result<T, E>;
