//! The error type of `nwc-tensor`.

use std::path::PathBuf;

/// Everything that can go wrong while loading or preprocessing weights.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Writing a file failed (nothing is left at its path).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors or GGUF file.
    #[error("malformed {format} file: {reason}")]
    Malformed {
        /// `"safetensors"` or `"GGUF"`.
        format: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A tensor is stored in a type nwc cannot convert to floats.
    #[error("tensor {name}: unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// The dtype as the file names it.
        dtype: String,
    },
    /// No tensor of that name.
    #[error("no tensor named {0:?}")]
    NotFound(String),
    /// The shape or data length is not what the operation needs.
    #[error("tensor {name}: {reason}")]
    Shape {
        /// Tensor name (empty for anonymous data).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A NaN or infinity where finite weights are required.
    #[error("non-finite value {value} at row {row}, column {col}")]
    NonFinite {
        /// The value.
        value: f32,
        /// Its row.
        row: usize,
        /// Its column.
        col: usize,
    },
    /// Importance scores handed to the level assignment are unusable.
    #[error("invalid importance scores: {0}")]
    InvalidImportance(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = TensorError> = std::result::Result<T, E>;
