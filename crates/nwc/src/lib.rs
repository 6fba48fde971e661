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
//! Streams work the way `zstd`/`flate2` users expect: an [`Encoder`] codes tensors into any
//! `Write`, a [`Decoder`] reads any `Read` back as an iterator of tensors.
//!
//! ```
//! use nwc::{Compressor, Decoder, Encoder, TcqCodec, Uniform};
//!
//! // A safetensors model arriving on a `Read` (here: bytes in memory).
//! let values: Vec<f32> = (0..256 * 64).map(|i| ((i * 29 % 113) as f32 - 56.0) / 400.0).collect();
//! let w = nwc::tensor::Tensor::from_f32("mlp.weight", nwc::tensor::DType::F32, vec![256, 64], &values)?;
//! let dir = tempfile::tempdir()?;
//! nwc::tensor::write_safetensors(dir.path().join("m.safetensors"), &[w.clone()])?;
//! let input = std::fs::File::open(dir.path().join("m.safetensors"))?; // any `std::io::Read`
//!
//! // Compress from the `Read` into a `Vec<u8>` with the trellis codec at about 3 bits.
//! let source = nwc::tensor::read_weights(input)?;
//! let codec = TcqCodec::for_bits(3.0)?;
//! let compressor = Compressor::new(&codec);
//! let mut bytes = Vec::new();
//! let mut encoder = Encoder::new(&compressor, &mut bytes)?;
//! encoder.write_source(&*source, &Uniform)?;
//! let report = encoder.finish()?;
//! assert_eq!(report.file_bytes as usize, bytes.len());
//!
//! // Decode it back from a `&[u8]`, finding the codec from the stream's header.
//! let decoded: Vec<_> = Decoder::new(&bytes[..], &*nwc::registry(), None)?
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(decoded.len(), 1);
//! assert_eq!(decoded[0].shape(), w.shape());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Whole models go through [`Compressor::compress_file`] (safetensors or GGUF in, `.nwc` out)
//! and [`NwcFile`] (inspect, decode tensor by tensor, or export); [`decode`] turns a `.nwc`
//! file back into weights with nothing but the file.
//!
//! This crate is a facade: the work is done by the crates it re-exports. Cargo features choose
//! the heavy parts: `learned` (the learned codec, burn on the CPU; default), `llm` (the Llama /
//! Qwen2 pipeline: calibration, LDLQ, fine-tuning, perplexity, HF/GGUF export; default),
//! `wgpu` and `cuda` (GPU backends). With default features off, nwc compresses and decodes
//! ECSQ and TCQ files and never builds burn.
#![deny(missing_docs)]

use std::path::Path;

pub use nwc_pipeline::{
    Builtin, CodecParams, CodecRegistry, CodedTensor, CompressOptions, CompressReport, Compressor,
    DEFAULT_TCQ_LAMBDA, DEFAULT_TCQ_RUN, Decoder, Decompressor, EcsqCodec, Encoder, Importance,
    LEVEL_STEP_RATIOS, NwcError, NwcFile, ProgressFn, Quantized, RATE_TOLERANCE, RateControl,
    Result, TcqCodec, TensorPolicy, TensorReport, Uniform, WeightCodec, compress_file_to_rate,
    round_trip_tensor, tune_to_rate,
};

/// The learned codec network crate (burn), including `burn` itself.
#[cfg(feature = "learned")]
pub use nwc_codec as codec_net;
#[cfg(feature = "learned")]
pub use nwc_codec::{Codecs, NwcCodec};
/// The entropy-coding crate (tables, prior, rANS).
pub use nwc_entropy as entropy;
/// The container crate (records, readers, writer).
pub use nwc_format as format;
/// The Hessian and LDL crate (accumulation, damping, LDLQ, RTN/GPTQ baselines).
pub use nwc_ldl as ldl;
/// The language-model crate (Llama forward pass, loaders, perplexity, calibration).
#[cfg(feature = "llm")]
pub use nwc_llm as llm;
/// Compressing Llama-architecture language models (`nwc_llm::compress`).
#[cfg(feature = "llm")]
pub use nwc_llm::compress as llama;
/// The burn-free pipeline crate (codec trait, ECSQ, TCQ, compressor, `.nwc` files).
pub use nwc_pipeline as pipeline;
/// The preprocessing crate (loading, chunking, levels).
pub use nwc_tensor as tensor;

/// The codec that decodes `file`, found from its header with every codec this build has: ECSQ
/// and TCQ always; with the `learned` feature the learned codec on the CPU (the checkpoint this
/// build embeds, matched by hash, or the checkpoint file `checkpoint`).
///
/// # Errors
/// [`NwcError::CodecMismatch`] when the file needs a codec or checkpoint this build lacks.
pub fn decoder(file: &NwcFile, checkpoint: Option<&Path>) -> Result<Box<dyn WeightCodec>> {
    file.decoder(&*registry(), checkpoint)
}

/// Every codec this build can decode with, for [`Decoder::new`] and [`NwcFile::decoder`]:
/// ECSQ and TCQ always; with the `learned` feature the learned codec on the CPU.
pub fn registry() -> Box<dyn CodecRegistry> {
    #[cfg(feature = "learned")]
    return Box::new(Codecs::<nwc_codec::burn::backend::NdArray>::default());
    #[cfg(not(feature = "learned"))]
    Box::new(Builtin)
}

/// Decodes the `.nwc` file `input` to `output` with nothing but the file (and `checkpoint` for
/// a learned-codec file made with a checkpoint this build does not embed). With the `llm`
/// feature a Llama `.nwc` becomes a GGUF file (`.gguf`), a safetensors file (`.safetensors`) or
/// a Hugging Face directory (anything else); every other file becomes a safetensors file.
/// Float weights are written in `dtype` when given. Outputs are written whole or not at all.
///
/// ```no_run
/// nwc::decode("model.nwc", "model.safetensors", None, None)?;
/// # Ok::<(), nwc::NwcError>(())
/// ```
///
/// # Errors
/// [`NwcError::InFile`] for a missing or invalid file; as [`decoder`]; decoding and I/O errors.
pub fn decode(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    dtype: Option<nwc_tensor::DType>,
    checkpoint: Option<&Path>,
) -> Result<()> {
    let file = NwcFile::open(input)?;
    let codec = decoder(&file, checkpoint)?;
    #[cfg(feature = "llm")]
    return llama::decode_to(&file, &*codec, output, dtype);
    #[cfg(not(feature = "llm"))]
    file.to_safetensors(&*codec, output, dtype)
}

/// The README's example compiles (it is run as a doctest with `no_run`).
#[cfg(all(doctest, feature = "learned", feature = "llm"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
