//! The `WeightSource` abstraction over model files, and opening a model by path.

use std::path::Path;

use crate::error::{Result, TensorError};
use crate::gguf::GgufFile;
use crate::safetensors_io::SafetensorsFile;
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

/// Opens a safetensors, GGUF or CTranslate2 (`model.bin`) file, chosen by its first bytes (not
/// its extension).
///
/// # Errors
/// [`TensorError::Io`] when the file cannot be read, [`TensorError::Malformed`] when it is
/// neither format.
pub fn open_weights(path: impl AsRef<Path>) -> Result<Box<dyn WeightSource>> {
    let path = path.as_ref();
    let mut head = [0u8; 9];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|source| TensorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let n = f.read(&mut head).map_err(|source| TensorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if n < 9 {
            return Err(TensorError::Malformed {
                format: "safetensors",
                reason: format!("{} is only {n} bytes long", path.display()),
            });
        }
    }
    if &head[..4] == b"GGUF" {
        Ok(Box::new(GgufFile::open(path)?))
    } else if head[8] != b'{' && crate::ctranslate2::sniff(&head) {
        Ok(Box::new(crate::ctranslate2::CTranslate2File::open(path)?))
    } else {
        Ok(Box::new(SafetensorsFile::open(path)?))
    }
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
