//! [`NwcFile`]: a `.nwc` file opened for reading, decoded whole, tensor by tensor or by name.

use std::path::Path;

use nwc_format::{FileReader, ReadOptions};
use nwc_tensor::{DType, Tensor};

use crate::codec::WeightCodec;
use crate::decode::{Decompressor, decode_records};
use crate::error::{NwcError, Result};
use crate::registry::CodecRegistry;

/// A `.nwc` file opened for reading: memory-mapped ([`NwcFile::open`]) or held in memory
/// ([`NwcFile::from_bytes`]).
pub struct NwcFile {
    map: Backing,
    options: ReadOptions,
}

/// Where a file's bytes live.
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

impl std::fmt::Debug for NwcFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NwcFile")
            .field("bytes", &self.map.len())
            .finish()
    }
}

impl NwcFile {
    /// Opens a file and checks its header, index and footer.
    ///
    /// # Errors
    /// [`NwcError::Io`] when it cannot be read, [`NwcError::InFile`] (a
    /// [`NwcError::Format`] and the path) when it is not a valid, complete `.nwc` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(NwcError::io(path))?;
        // SAFETY: read-only private map; the file must not be truncated while open (as for every
        // mmap-based model loader).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(NwcError::io(path))?;
        let options = ReadOptions::default();
        FileReader::new(&map, options).map_err(|e| NwcError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        })?;
        Ok(Self {
            map: Backing::Map(map),
            options,
        })
    }

    /// A `.nwc` file held in memory (received over the network, read from a stream, embedded),
    /// with its header, index and footer checked as [`NwcFile::open`] checks them.
    ///
    /// # Errors
    /// [`NwcError::Format`] when the bytes are not a valid, complete `.nwc` file.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let options = ReadOptions::default();
        FileReader::new(&bytes, options)?;
        Ok(Self {
            map: Backing::Owned(bytes),
            options,
        })
    }

    /// Whether the file holds a record named `name` (a tensor or a metadata record).
    ///
    /// # Errors
    /// As [`NwcFile::reader`].
    pub fn has_record(&self, name: &str) -> Result<bool> {
        Ok(self.reader()?.index().iter().any(|e| e.name == name))
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The parsed container.
    ///
    /// # Errors
    /// Never after a successful [`NwcFile::open`] in practice; the container is re-parsed.
    pub fn reader(&self) -> Result<FileReader<'_>> {
        Ok(FileReader::new(&self.map, self.options)?)
    }

    /// Measured rate of the whole file.
    ///
    /// # Errors
    /// As [`NwcFile::reader`].
    pub fn bits_per_param(&self) -> Result<f64> {
        let r = self.reader()?;
        Ok(8.0 * r.file_len() as f64 / r.n_params().max(1) as f64)
    }

    /// Decodes every tensor, in file order, calling `f` on each (one in memory at a time).
    ///
    /// # Errors
    /// [`NwcError::CodecMismatch`] when `codec` is not the file's, or the first decoding error.
    pub fn for_each_tensor(
        &self,
        codec: &dyn WeightCodec,
        mut f: impl FnMut(Tensor) -> Result<()>,
    ) -> Result<()> {
        let r = self.reader()?;
        let d = Decompressor::new(codec);
        d.check_header(r.header())?;
        let mut symbols = Vec::new();
        for i in 0..r.index().len() {
            f(d.decompress_record_into(&r.record(i)?, &mut symbols)?)?;
        }
        Ok(())
    }

    /// Decodes every tensor, records in parallel on the rayon pool (each record's segments are
    /// parallel too), returned in file order. Holds the whole decoded model in memory; use
    /// [`NwcFile::for_each_tensor`] to hold one tensor at a time.
    ///
    /// # Errors
    /// As [`NwcFile::for_each_tensor`]; the first error in file order.
    pub fn decode_all(&self, codec: &dyn WeightCodec) -> Result<Vec<Tensor>> {
        decode_records(&self.reader()?, codec)
    }

    /// Decodes one tensor by name.
    ///
    /// # Errors
    /// As [`NwcFile::for_each_tensor`].
    pub fn tensor(&self, codec: &dyn WeightCodec, name: &str) -> Result<Tensor> {
        let r = self.reader()?;
        let d = Decompressor::new(codec);
        d.check_header(r.header())?;
        d.decompress_record(&r.record_by_name(name)?)
    }

    /// The codec that decodes this file, found from its header by `registry`:
    /// [`Builtin`](crate::registry::Builtin) knows lossless, ECSQ and TCQ files; `nwc_codec::Codecs` adds the learned codec (the
    /// checkpoint this build embeds, matched by hash, or the checkpoint file `checkpoint`). The
    /// `nwc` facade's `nwc::decoder` picks the widest registry its features allow.
    ///
    /// # Errors
    /// [`NwcError::CodecMismatch`] when the file's codec is not in `registry` or the checkpoint's
    /// hash is not the one the file names; the registry's errors for a checkpoint file.
    pub fn decoder(
        &self,
        registry: &dyn CodecRegistry,
        checkpoint: Option<&Path>,
    ) -> Result<Box<dyn WeightCodec>> {
        registry.decoder(self.reader()?.header(), checkpoint)
    }

    /// Decodes the whole file into a safetensors file: shapes as in the original, dtypes too
    /// unless `dtype` (a float dtype) is given for the float tensors; metadata records are left
    /// out. Written whole or not at all.
    ///
    /// # Errors
    /// As [`NwcFile::for_each_tensor`], plus I/O errors; [`NwcError::Config`] for a `dtype` that
    /// is not F32, F16 or BF16.
    pub fn to_safetensors(
        &self,
        codec: &dyn WeightCodec,
        output: impl AsRef<Path>,
        dtype: Option<DType>,
    ) -> Result<()> {
        if let Some(d) = dtype.filter(|d| !d.is_float()) {
            return Err(NwcError::Config(format!("cannot write weights as {d}")));
        }
        let mut all = Vec::new();
        self.for_each_tensor(codec, |t| {
            if nwc_format::is_metadata(t.name()) {
                return Ok(());
            }
            all.push(match dtype {
                Some(d) if d != t.dtype() && t.dtype().is_float() => {
                    Tensor::from_f32(t.name(), d, t.shape().to_vec(), &t.to_f32()?)?
                }
                _ => t,
            });
            Ok(())
        })?;
        nwc_tensor::write_safetensors(output, &all)?;
        Ok(())
    }
}
