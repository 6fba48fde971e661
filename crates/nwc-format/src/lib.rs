//! The `.nwc` container: a versioned header naming the codec, one self-delimiting record per
//! tensor, a trailing index and a footer. `docs/format.md` specifies every byte; this crate
//! implements exactly that.
//!
//! ```
//! use nwc_format::{CodecKind, FileReader, Header, Payload, ReadOptions, Record, Writer};
//! use nwc_tensor::DType;
//!
//! let mut w = Writer::new(Vec::new(), Header::new(CodecKind::None, [0; 32]))?;
//! w.write(&Record {
//!     name: "norm.weight".into(),
//!     dtype: DType::F32,
//!     shape: vec![2],
//!     payload: Payload::Raw([1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect()),
//! })?;
//! let (bytes, size) = w.finish()?;
//! assert_eq!(size as usize, bytes.len());
//!
//! let r = FileReader::new(&bytes, ReadOptions::default())?;
//! assert_eq!(r.index()[0].name, "norm.weight");
//! assert_eq!(r.record(0)?.shape, vec![2]);
//! // Damage anywhere is an error, never a panic.
//! let mut bad = bytes.clone();
//! bad[70] ^= 1;
//! assert!(FileReader::new(&bad, ReadOptions::default()).and_then(|r| r.record(0)).is_err());
//! # Ok::<(), nwc_format::FormatError>(())
//! ```
#![deny(missing_docs)]

mod error;
mod file;
mod record;

pub use error::{FormatError, Result};
pub use file::{
    END_MAGIC, FOOTER_LEN, FileReader, HEADER_LEN, Header, IndexEntry, MAGIC, ReadOptions,
    StreamReader, VERSION_MAJOR, VERSION_MINOR, Writer,
};
pub use record::{
    CodecKind, CodedPayload, MAX_METADATA_BYTES, METADATA_COMPRESS_ABOVE, METADATA_PREFIX, Payload,
    Record, TableRecord, is_metadata, metadata_content, metadata_record, pack_levels,
    unpack_levels,
};
