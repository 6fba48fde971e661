//! The `WeightSource` abstraction over model files (a leaf: the readers implement it;
//! `open.rs` picks one by content).

use std::path::Path;

use crate::error::{Result, TensorError};
use crate::tensor::Tensor;

/// Anything that lists named tensors and hands them out one at a time.
///
/// Implementations load lazily, so a pipeline holds one tensor in memory at a time.
pub trait WeightSource: Send + Sync {
    /// Tensor names in file order.
    fn names(&self) -> Vec<String>;
    /// Loads one tensor. Float tensors keep their dtype; block-quantized GGUF tensors are
    /// dequantized to F32.
    ///
    /// # Errors
    /// [`TensorError::NotFound`] for an unknown name, or a conversion error.
    fn tensor(&self, name: &str) -> Result<Tensor>;
}

/// Memory-maps a file read-only.
pub(crate) fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let io = |source| TensorError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the map is read-only and private to this process. Another process truncating the
    // file while it is mapped would fault (SIGBUS); nwc documents that model files must not be
    // modified while being compressed, as every mmap-based loader (safetensors, llama.cpp) does.
    #[allow(unsafe_code)]
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    Ok(map)
}
