//! The one error type of `nwc-pipeline` (re-exported by the `nwc` facade).

/// Everything the nwc pipeline can fail with. Lower crates' errors are wrapped whole, so the
/// distinction between "bad input data" and "I/O failed" survives.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NwcError {
    /// Loading or preprocessing weights failed (missing file, malformed safetensors/GGUF,
    /// NaN/Inf weights, unsupported dtype, ...).
    #[error(transparent)]
    Tensor(#[from] nwc_tensor::TensorError),
    /// Reading or writing the `.nwc` container failed (corrupt, truncated, wrong version, ...).
    #[error(transparent)]
    Format(#[from] nwc_format::FormatError),
    /// Entropy coding failed (a corrupt segment or table).
    #[error(transparent)]
    Entropy(#[from] nwc_entropy::EntropyError),
    /// Hessian or LDL failure (a singular Hessian, mismatched shapes).
    #[error(transparent)]
    Ldl(#[from] nwc_ldl::LdlError),
    /// Loading, running or calibrating a model failed in a crate above this one (the language
    /// model crate's `LlmError`, which converts into this variant; downcast to inspect it).
    #[error(transparent)]
    Model(Box<dyn std::error::Error + Send + Sync>),
    /// The file needs a different codec (or checkpoint) than the one given.
    #[error("codec mismatch: {0}")]
    CodecMismatch(String),
    /// A value cannot be represented by the codec at this setting (for example a weight millions
    /// of quantizer steps away from zero).
    #[error("tensor {name}: {reason}")]
    Unrepresentable {
        /// Tensor name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A rate target the codec cannot reach on this model (outside 0.5..=16 bits, or the rate
    /// does not move far enough with the step).
    #[error("{target} bits/param: {reason}")]
    RateUnreachable {
        /// The asked bits per parameter.
        target: f64,
        /// Why, with the rates measured.
        reason: String,
    },
    /// A compression mode needs calibration data (or the whole model) that was not given.
    #[error("mode {mode} needs {needs}")]
    NeedsCalibration {
        /// The mode asked for.
        mode: String,
        /// What it needs.
        needs: String,
    },
    /// The file is not of the model family the operation needs (a Llama `.nwc` with its
    /// configuration and tokenizer).
    #[error("not a Llama-family .nwc: {0}")]
    NotLlama(String),
    /// A codec or option was configured with an invalid value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The decoded data is inconsistent (parameters out of range, lengths disagreeing) although
    /// the container itself parsed.
    #[error("corrupt tensor {name}: {reason}")]
    Corrupt {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be used; `source` says why.
    #[error("{path}: {source}")]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: Box<NwcError>,
    },
    /// An I/O error outside the container (opening or creating a file).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl NwcError {
    /// Maps an I/O error on `path` to [`NwcError::Io`] naming it: `.map_err(NwcError::io(path))`.
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = NwcError> = std::result::Result<T, E>;
