//! The one error type of `nwc-llm`.

use std::path::PathBuf;

/// Everything that can go wrong loading, running or calibrating a language model.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The weights file itself is unreadable.
    #[error(transparent)]
    Tensor(#[from] nwc_tensor::TensorError),
    /// A Hessian could not be accumulated or stored.
    #[error(transparent)]
    Ldl(#[from] nwc_ldl::LdlError),
    /// The model configuration is missing a field or inconsistent.
    #[error("model configuration: {0}")]
    Config(String),
    /// A tensor the architecture needs is missing or has the wrong shape.
    #[error("weight {name}: {reason}")]
    Weight {
        /// The tensor's (Hugging Face) name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer could not be built or failed on a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Bad input to an evaluation (too little text, a token out of range).
    #[error("{0}")]
    Input(String),
    /// A model source (for example a `.nwc` file decoded on request) failed to produce a tensor.
    #[error("weight {name}: {source}")]
    Source {
        /// The tensor's (Hugging Face) name.
        name: String,
        /// The source's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Shards of a compression spread over machines do not make one job (missing, given
    /// twice, of another job or codec), or a shard is named badly.
    #[error("shards: {0}")]
    Shards(String),
    /// A Hessian cache file is damaged or belongs to another model.
    #[error("Hessian cache {path}: {reason}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// `Result` with [`LlmError`].
pub type Result<T, E = LlmError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> LlmError + '_ {
    move |source| LlmError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A model error inside the pipeline's error (the compressor and decoder of `nwc-pipeline`
/// report model failures as [`nwc_pipeline::NwcError::Model`]).
impl From<LlmError> for nwc_pipeline::NwcError {
    fn from(e: LlmError) -> Self {
        nwc_pipeline::NwcError::Model(Box::new(e))
    }
}
