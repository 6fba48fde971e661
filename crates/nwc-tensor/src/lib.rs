//! Weight loading and preprocessing for nwc: safetensors and GGUF readers, chunk-and-normalize,
//! and quality levels from importance scores.
//!
//! ```
//! use ndarray::Array2;
//! use nwc_tensor::{ChunkConfig, LevelBands, chunk};
//!
//! // A 20×3 weight (out × in): every input column becomes ceil(20/16) = 2 chunks of 16 values,
//! // the second padded with zeros.
//! let w = Array2::from_shape_fn((20, 3), |(r, c)| (r as f32 - 10.0) * 0.01 * (c + 1) as f32);
//! let chunked = chunk(w.view(), &ChunkConfig::default())?;
//! assert_eq!(chunked.n_chunks(), 6);
//! assert_eq!(chunked.scales().len(), 3); // one f16 scale per column
//!
//! // Decoding multiplies the scales back (exact to within one f32 rounding).
//! let back = chunked.to_matrix();
//! assert!(back.iter().zip(w.iter()).all(|(a, b)| (a - b).abs() <= b.abs() * 1.2e-7));
//!
//! // Quality levels from per-column importance (for example diag(H)).
//! // The paper's bands: top 0.1 % → 3, next 1 % → 2, next 10 % → 1 (at least one column each).
//! let levels = LevelBands::default().assign(&[0.1, 5.0, 0.3])?;
//! assert_eq!(levels, vec![0, 3, 0]);
//! # Ok::<(), nwc_tensor::TensorError>(())
//! ```
//!
//! Loading is lazy: [`WeightSource`] hands out one tensor at a time from a memory-mapped file.
#![deny(missing_docs)]

mod chunk;
mod ctranslate2;
mod cursor;
mod data;
mod error;
mod gguf;
mod gguf_write;
mod hadamard;
mod levels;
mod open;
mod safetensors_io;
mod source;
mod tensor;

pub use chunk::{
    ChunkConfig, Chunked, MAX_CHUNK_LEN, ScaleAxis, ScaleRounding, ScaleSums, chunk,
    chunk_with_scales,
};
pub use ctranslate2::CTranslate2File;
pub use cursor::Cursor;
pub use data::data_dir;
pub use error::{Result, TensorError};
pub use gguf::{GgmlType, GgufFile, GgufTensorInfo, GgufValue, dequantize};
pub use gguf_write::write_gguf;
pub use hadamard::{MAX_BLOCK, Real, Rotation, rotate_matrix};
pub use levels::LevelBands;
pub use open::{open_weights, read_weights};
pub use safetensors_io::{SafetensorsFile, with_suffix, write_safetensors, write_whole};
pub use source::WeightSource;
pub use tensor::{DType, Tensor, numel};
