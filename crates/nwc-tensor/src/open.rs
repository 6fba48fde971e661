//! Opening a model file by its content: the one module that knows every reader.

use std::path::Path;

use crate::ctranslate2::{CTranslate2File, sniff};
use crate::error::{Result, TensorError};
use crate::gguf::GgufFile;
use crate::safetensors_io::SafetensorsFile;
use crate::source::WeightSource;

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
    } else if head[8] != b'{' && sniff(&head) {
        Ok(Box::new(CTranslate2File::open(path)?))
    } else {
        Ok(Box::new(SafetensorsFile::open(path)?))
    }
}

/// Reads a safetensors model from any `Read` (a pipe, a socket, an archive member) into memory
/// and serves its tensors like [`open_weights`] does a file. GGUF and CTranslate2 inputs need a
/// file (their readers seek); they are a clear error here.
///
/// # Errors
/// [`TensorError::Io`] when reading fails (the path is `-`), [`TensorError::Malformed`] when
/// the bytes are not a valid safetensors file.
pub fn read_weights(mut input: impl std::io::Read) -> Result<Box<dyn WeightSource>> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|source| TensorError::Io {
            path: "-".into(),
            source,
        })?;
    if bytes.starts_with(b"GGUF") || bytes.len() >= 9 && bytes[8] != b'{' && sniff(&bytes[..9]) {
        return Err(TensorError::Malformed {
            format: "safetensors",
            reason: "GGUF and CTranslate2 models are read from files, not streams".into(),
        });
    }
    Ok(Box::new(SafetensorsFile::from_bytes(bytes)?))
}
