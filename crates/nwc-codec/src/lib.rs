//! The learned NWC codec: analysis and synthesis networks (residual MLPs with a quality
//! embedding) and a trainable deep factorized entropy bottleneck, generic over the burn backend,
//! with training and versioned, hashed checkpoints that carry their integer entropy tables.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use nwc_codec::{CodecConfig, NwcModel};
//!
//! let cfg = CodecConfig { width: 32, blocks: 1, ..CodecConfig::default() };
//! let device = Default::default();
//! let model = NwcModel::<NdArray>::new(&cfg, &device);
//! let x = Tensor::<NdArray, 2>::zeros([8, 16], &device);
//! let levels = Tensor::<NdArray, 1, Int>::zeros([8], &device);
//! let y = model.analyze(x, levels.clone());
//! assert_eq!(y.dims(), [8, 16]);
//! assert_eq!(model.synthesize(y, levels).dims(), [8, 16]);
//! ```
#![deny(missing_docs)]

mod checkpoint;
mod config;
mod cpu_refiner;
mod error;
mod model;
mod refine;
mod train;
mod weight_codec;

pub use burn;

pub use checkpoint::{AUTOENCODER_CHECKPOINT, Checkpoint, DEFAULT_CHECKPOINT, DEFAULT_STEPS};
pub use config::{CodecConfig, Variant};
pub use error::{CodecError, Result};
pub use model::{EntropyBottleneck, NwcModel, Refiner, ResBlock, TrainOutput, Transform};
/// The trellis fine step for a nominal rate (what the refiner trains at; re-exported from
/// `nwc-entropy`).
pub use nwc_entropy::{tcq_bits_for_step, tcq_step_for_bits};
pub use refine::{EVAL_BITS, RefineConfig, RefineStats, evaluate_refiner, train_refiner};
pub use train::{LEVEL_WEIGHTS, TrainConfig, TrainStats, evaluate, train};
pub use weight_codec::{Codecs, NwcCodec, REFINER_BITS};
