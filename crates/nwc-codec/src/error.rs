//! The error type of `nwc-codec`.

/// Everything that can go wrong with the codec network and its checkpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A configuration value is unusable.
    #[error("invalid codec configuration: {0}")]
    Config(String),
    /// A checkpoint's bytes are not a valid checkpoint (wrong magic, truncated, inconsistent).
    #[error("corrupt checkpoint: {0}")]
    CorruptCheckpoint(String),
    /// The checkpoint's version is not one this build reads.
    #[error("unsupported checkpoint version {0}")]
    UnsupportedVersion(u32),
    /// Building the entropy tables from the trained prior failed.
    #[error(transparent)]
    Entropy(#[from] nwc_entropy::EntropyError),
    /// Reading or writing a checkpoint file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = CodecError> = std::result::Result<T, E>;
