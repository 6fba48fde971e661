//! **nwc-pipeline** — the burn-free core of nwc: the [`WeightCodec`] trait, the ECSQ and TCQ
//! codecs, the tensor and model [`Compressor`] / [`Decompressor`], rate targeting and
//! [`NwcFile`]. It never builds burn: a program that only decodes ECSQ or TCQ files depends on
//! this crate (or on `nwc` with default features off) and nothing heavier.
//!
//! ```
//! use nwc_pipeline::{Builtin, Compressor, Decompressor, EcsqCodec};
//! use nwc_tensor::{DType, Tensor};
//!
//! let values: Vec<f32> = (0..128 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0).collect();
//! let w = Tensor::from_f32("layer.weight", DType::F32, vec![128, 64], &values)?;
//! let codec = EcsqCodec::for_bits(4.0)?;
//! let compressor = Compressor::new(&codec);
//! let (record, report) = compressor.compress_tensor(&w, None)?;
//! assert!(report.coded && report.nmse() < 0.01);
//!
//! // A decoder found from the header alone, as `NwcFile::decoder` does for a file.
//! let decoder = nwc_pipeline::CodecRegistry::decoder(&Builtin, &compressor.header(), None)?;
//! let back = Decompressor::new(&*decoder).decompress_record(&record)?;
//! assert_eq!(back.shape(), &[128, 64]);
//! # Ok::<(), nwc_pipeline::NwcError>(())
//! ```
#![deny(missing_docs)]

mod codec;
mod coded;
mod decode;
mod dequant;
mod encode;
mod error;
mod file;
mod ldlq;
mod options;
mod plan;
mod rate;
mod reconstruct;
mod registry;
mod report;
mod streaming;
mod tcq;

pub use codec::{
    ChunkDequantizer, ChunkGrid, CodecParams, EcsqCodec, LEVEL_STEP_RATIOS, Quantized, WeightCodec,
};
pub use coded::CodedTensor;
pub use decode::{Decompressor, decode_records};
pub use encode::{
    Compressor, ProgressFn, compress_in_order, compress_in_windows, round_trip_tensor,
};
pub use error::{NwcError, Result};
pub use file::NwcFile;
pub use options::{CompressOptions, Importance, StepAllocation, TensorPolicy, Uniform};
pub use rate::{
    Count, RATE_TOLERANCE, RateControl, compress_file_to_rate, search_rate, tune_to_rate,
};
pub use registry::{Builtin, CodecRegistry};
pub use report::{CompressReport, TensorReport};
pub use streaming::{Decoder, Encoder};
pub use tcq::{DEFAULT_TCQ_LAMBDA, DEFAULT_TCQ_RUN, TcqCodec, check_levels};
