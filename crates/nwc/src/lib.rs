//! **nwc** — Neural Weight Compression: compress the weights of neural networks into `.nwc`
//! files and back.
//!
//! Weight matrices are normalized and cut into 16-value column chunks, each chunk is mapped to
//! integer symbols by a *codec*, and the symbols are entropy-coded into independently decodable
//! segments of a self-describing container (`docs/format.md`). Rates are always *measured*:
//! bits per parameter = 8 × file bytes / parameters, side information included.
//!
//! ```
//! use nwc::{Compressor, EcsqCodec, NwcFile, Uniform};
//! use nwc_tensor::{DType, Tensor};
//!
//! // A 128×64 weight (out × in), deterministic.
//! let values: Vec<f32> = (0..128 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0).collect();
//! let w = Tensor::from_f32("layer.weight", DType::F32, vec![128, 64], &values)?;
//!
//! // ECSQ at about 4 bits per value (the baseline codec; the learned codec plugs in the same way).
//! let codec = EcsqCodec::for_bits(4.0)?;
//! let compressor = Compressor::new(&codec);
//! let (record, report) = compressor.compress_tensor(&w, None)?;
//! assert!(report.coded && report.nmse() < 0.01);
//!
//! // Decode it again.
//! let back = nwc::Decompressor::new(&codec).decompress_record(&record)?;
//! assert_eq!(back.shape(), &[128, 64]);
//! # Ok::<(), nwc::NwcError>(())
//! ```
//!
//! Whole models go through [`Compressor::compress_file`] (safetensors or GGUF in, `.nwc` out)
//! and [`NwcFile`] (inspect, decode tensor by tensor, or export to safetensors).
#![deny(missing_docs)]

mod codec;
mod error;
mod layerwise;
mod learned;
pub mod llama;
mod pipeline;
mod rate;
mod tcq;

pub use codec::{EcsqCodec, LEVEL_STEP_RATIOS, Quantized, WeightCodec};
pub use error::{NwcError, Result};
pub use learned::NwcCodec;
pub use pipeline::{
    CompressOptions, CompressReport, Compressor, Decompressor, Importance, NwcFile, ProgressFn,
    TensorPolicy, TensorReport, Uniform, builtin_decoder, round_trip_tensor,
};
pub use rate::{RATE_TOLERANCE, RateControl, compress_file_to_rate, tune_to_rate};
pub use tcq::{DEFAULT_TCQ_LAMBDA, DEFAULT_TCQ_RUN, TcqCodec};

/// The learned codec network crate (burn), including `burn` itself.
pub use nwc_codec as codec_net;
/// The entropy-coding crate (tables, prior, rANS).
pub use nwc_entropy as entropy;
/// The container crate (records, readers, writer).
pub use nwc_format as format;
/// The Hessian and LDL crate (accumulation, damping, LDLQ, RTN/GPTQ baselines).
pub use nwc_ldl as ldl;
/// The language-model crate (Llama forward pass, loaders, perplexity, calibration).
pub use nwc_llm as llm;
/// The preprocessing crate (loading, chunking, levels).
pub use nwc_tensor as tensor;

/// The README's example compiles (it is run as a doctest with `no_run`).
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
