//! Finding the codec that decodes a file from its header alone.

use std::path::Path;

use nwc_format::{CodecKind, Header};

use crate::codec::{EcsqCodec, WeightCodec};
use crate::error::{NwcError, Result};
use crate::tcq::TcqCodec;

/// Builds the codec that decodes a file, from the file's header: the seam through which codec
/// crates above this one (the learned codec) make their files decodable from the file alone.
pub trait CodecRegistry {
    /// The decoder for a file with header `h`; `checkpoint` is a checkpoint file the caller
    /// supplies for codecs that need one (ignored by the others).
    ///
    /// # Errors
    /// [`NwcError::CodecMismatch`] when the registry does not know the file's codec or the
    /// checkpoint is not the one the file names.
    fn decoder(&self, h: &Header, checkpoint: Option<&Path>) -> Result<Box<dyn WeightCodec>>;
}

/// The codecs of this crate: lossless-only, ECSQ and TCQ files decode on the CPU with nothing
/// more. A learned-codec file is a [`NwcError::CodecMismatch`] naming the missing feature.
#[derive(Debug, Clone, Copy, Default)]
pub struct Builtin;

impl CodecRegistry for Builtin {
    fn decoder(&self, h: &Header, _checkpoint: Option<&Path>) -> Result<Box<dyn WeightCodec>> {
        match h.codec {
            CodecKind::None | CodecKind::Ecsq => Ok(Box::new(EcsqCodec::with_step(1.0)?)),
            CodecKind::Tcq => Ok(Box::new(TcqCodec::with_step(1.0)?)),
            CodecKind::Nwc | CodecKind::NwcTrellis => Err(NwcError::CodecMismatch(format!(
                "the file is coded with the learned codec (checkpoint {}), which needs nwc's \
                 `learned` feature (nwc_codec::Codecs)",
                hex::encode(h.codec_hash)
            ))),
        }
    }
}
