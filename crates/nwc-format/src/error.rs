//! The error type of `nwc-format`.

/// Everything that can go wrong while reading or writing a `.nwc` container.
///
/// [`FormatError::Io`] is kept apart from the variants that mean the bytes themselves are bad.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The underlying reader or writer failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The file does not start with the `.nwc` magic.
    #[error("not an .nwc file (wrong magic)")]
    BadMagic,
    /// The file's major version is not one this reader understands.
    #[error("unsupported .nwc version {major}.{minor} (this reader reads 1.x)")]
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// A checksum does not match: the bytes were damaged.
    #[error("checksum mismatch in {what}")]
    ChecksumMismatch {
        /// Which part (`"header"`, `"index"`, `"record <name>"`, ...).
        what: String,
    },
    /// The file ends before a structure it announces.
    #[error("truncated file: {0}")]
    Truncated(String),
    /// A field holds a value the format does not allow.
    #[error("corrupt file: {0}")]
    Corrupt(String),
    /// A tensor is larger than the reader's configured limit.
    #[error("tensor {name} has {elements} elements, more than the limit of {limit}")]
    TooLarge {
        /// Tensor name.
        name: String,
        /// Elements it claims.
        elements: u64,
        /// The configured limit.
        limit: u64,
    },
    /// The writer was handed something the format cannot represent (a duplicate or empty name,
    /// too many dimensions, inconsistent lengths).
    #[error("cannot write: {0}")]
    Invalid(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
