//! Llama-architecture language models for nwc: a backend-generic burn forward pass, loaders for
//! GGUF files and Hugging Face directories, tokenizers, perplexity, and calibration Hessians.
//!
//! ```
//! use burn::backend::NdArray;
//! use nwc_llm::{Family, Llama, LlamaConfig, TextTokenizer, perplexity};
//!
//! // A tiny random byte-level model: perplexity near the vocabulary size.
//! let cfg = LlamaConfig { family: Family::Llama, vocab: 256, hidden: 32, intermediate: 64, layers: 1, heads: 4,
//!     kv_heads: 2, rope_theta: 10_000.0, rms_eps: 1e-5, tie_embeddings: true, max_positions: 64 };
//! let device = Default::default();
//! let model = Llama::<NdArray>::init(&cfg, &device)?;
//! let ids = TextTokenizer::bytes().encode("Alice was beginning to get very tired of sitting")?;
//! let p = perplexity(&model, &ids, 16, 2, &device, |_, _| {})?;
//! assert!(p.ppl > 200.0 && p.ppl < 320.0, "{}", p.ppl);
//! # Ok::<(), nwc_llm::LlmError>(())
//! ```
#![deny(missing_docs)]

mod calib;
pub mod compress;
mod config;
mod error;
mod eval;
mod finetune;
mod model;
mod sensitivity;
mod stream;
mod tokenizer;
mod train;
mod weights;

pub use burn;
pub use calib::{Hessians, cache_file_name, calibration_fingerprint, fingerprint};
pub use config::{Family, LlamaConfig};
pub use error::{LlmError, Result};
pub use eval::{Perplexity, perplexity, windows};
pub use finetune::{BlockFt, FtConfig, finetune_blocks};
pub use model::{BlockContext, BlockTensors, Capture, Layer, Llama, block_forward};
pub use sensitivity::Fisher;
pub use stream::{Layerwise, LazyWeights, ModelSource, layerwise_perplexity};
pub use tokenizer::TextTokenizer;
pub use train::{LmTrainConfig, lr_at, train_lm};
pub use weights::{
    EMBED, FINAL_NORM, LM_HEAD, LlamaWeights, Proj, Site, gguf_to_hf, site_of, torch_dtype,
};
