//! Reading and writing safetensors files.

use std::path::{Path, PathBuf};

use safetensors::{Dtype as StDtype, SafeTensors};

use crate::error::{Result, TensorError};
use crate::source::{WeightSource, map_file};
use crate::tensor::{DType, Tensor};

fn malformed(reason: impl std::fmt::Display) -> TensorError {
    TensorError::Malformed {
        format: "safetensors",
        reason: reason.to_string(),
    }
}

fn from_st(d: StDtype, name: &str) -> Result<DType> {
    Ok(match d {
        StDtype::F32 => DType::F32,
        StDtype::F16 => DType::F16,
        StDtype::BF16 => DType::BF16,
        StDtype::F64 => DType::F64,
        StDtype::I8 => DType::I8,
        StDtype::I16 => DType::I16,
        StDtype::I32 => DType::I32,
        StDtype::I64 => DType::I64,
        StDtype::U8 => DType::U8,
        StDtype::U16 => DType::U16,
        StDtype::U32 => DType::U32,
        StDtype::U64 => DType::U64,
        StDtype::BOOL => DType::Bool,
        other => {
            return Err(TensorError::UnsupportedDtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    })
}

fn to_st(d: DType) -> StDtype {
    match d {
        DType::F32 => StDtype::F32,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::F64 => StDtype::F64,
        DType::I8 => StDtype::I8,
        DType::I16 => StDtype::I16,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::U8 => StDtype::U8,
        DType::U16 => StDtype::U16,
        DType::U32 => StDtype::U32,
        DType::U64 => StDtype::U64,
        DType::Bool => StDtype::BOOL,
    }
}

/// A safetensors file, memory-mapped (or held in memory, [`SafetensorsFile::from_bytes`]);
/// tensors are copied out one at a time on request.
pub struct SafetensorsFile {
    path: PathBuf,
    map: Backing,
    names: Vec<String>,
}

/// Where a safetensors file's bytes live.
enum Backing {
    Map(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Backing {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Backing::Map(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

impl std::fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("tensors", &self.names.len())
            .finish()
    }
}

impl SafetensorsFile {
    /// Opens and validates the header of a safetensors file.
    ///
    /// # Errors
    /// [`TensorError::Io`] when the file cannot be read, [`TensorError::Malformed`] when its
    /// header is invalid.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let map = Backing::Map(map_file(&path)?);
        Self::with_backing(path, map)
    }

    /// A safetensors file held in memory (read from a stream, downloaded, embedded); its path
    /// is empty.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] when its header is invalid.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::with_backing(PathBuf::new(), Backing::Owned(bytes))
    }

    fn with_backing(path: PathBuf, map: Backing) -> Result<Self> {
        let st = SafeTensors::deserialize(&map).map_err(malformed)?;
        // File order (by offset), so streaming writers keep the layout of the source.
        let mut entries: Vec<(usize, String)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (v.data().as_ptr() as usize, n))
            .collect();
        entries.sort();
        let names = entries.into_iter().map(|(_, n)| n).collect();
        drop(st);
        Ok(Self { path, map, names })
    }

    /// One tensor's dtype, from the header (its data is not copied).
    ///
    /// # Errors
    /// [`TensorError::NotFound`] for an unknown name; an unsupported dtype.
    pub fn dtype(&self, name: &str) -> Result<DType> {
        let st = SafeTensors::deserialize(&self.map).map_err(malformed)?;
        let view = st
            .tensor(name)
            .map_err(|_| TensorError::NotFound(name.to_string()))?;
        from_st(view.dtype(), name)
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl WeightSource for SafetensorsFile {
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        let st = SafeTensors::deserialize(&self.map).map_err(malformed)?;
        let view = st
            .tensor(name)
            .map_err(|_| TensorError::NotFound(name.to_string()))?;
        let dtype = from_st(view.dtype(), name)?;
        Tensor::from_bytes(name, dtype, view.shape().to_vec(), view.data().to_vec())
    }
}

/// Writes tensors to a safetensors file (what other runtimes load), with the header metadata
/// `{"format": "pt"}`, whole or not at all: the bytes go to `PATH.partial`, which is renamed
/// over `path` only when complete.
///
/// # Errors
/// [`TensorError::Write`] when writing fails, [`TensorError::Malformed`] when the tensors cannot be
/// serialized (for example duplicate names). `path` is then untouched.
pub fn write_safetensors(path: impl AsRef<Path>, tensors: &[Tensor]) -> Result<()> {
    let path = path.as_ref();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            safetensors::tensor::TensorView::new(to_st(t.dtype()), t.shape().to_vec(), t.bytes())
                .map(|v| (t.name().to_string(), v))
                .map_err(malformed)
        })
        .collect::<Result<_>>()?;
    // `format: pt` is what PyTorch-side loaders (transformers) look for in the header metadata.
    let metadata = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    write_whole(path, |tmp| {
        safetensors::serialize_to_file(views, Some(metadata), tmp).map_err(|e| match e {
            safetensors::SafeTensorError::IoError(source) => TensorError::Write {
                path: path.to_path_buf(),
                source,
            },
            other => malformed(other),
        })
    })
}

/// `path` with `suffix` appended to its file name (`model.nwc` → `model.nwc.partial`): the
/// names of the side files a whole-or-nothing writer keeps beside its output.
pub fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes `path` whole or not at all: `write` fills `PATH.partial`, which is synced and renamed
/// over `path` when `write` succeeds and removed when it fails. Every whole-file output of nwc
/// goes through here (safetensors, GGUF, Hugging Face directories, `.nwc` files); `write` may
/// return any error a [`TensorError`] converts into, and its value is passed on.
///
/// # Errors
/// `write`'s error, or [`TensorError::Write`] (naming `path`) when syncing or renaming fails.
pub fn write_whole<T, E: From<TensorError>>(
    path: &Path,
    write: impl FnOnce(&Path) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let tmp = with_suffix(path, ".partial");
    let io = |source| TensorError::Write {
        path: path.to_path_buf(),
        source,
    };
    let done = write(&tmp).and_then(|value| {
        let f = std::fs::File::open(&tmp).map_err(io)?;
        f.sync_all().map_err(io)?;
        // safetensors writes through a private (0600) temporary file; a model file is readable
        // like any other file the user writes.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        Ok(value)
    });
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}
