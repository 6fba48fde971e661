//! Compressing Llama-architecture language models: quality levels from calibration Hessians,
//! LDLQ error feedback with the codec in the loop, a self-describing `.nwc` file that decodes
//! back into a runnable model, and the RTN/GPTQ baselines measured the same way.
//!
//! Modules, bottom-up (each imports only those before it): `records` (the metadata records),
//! `calibration` (modes, per-site importances and LDL factors, one tensor coded with them),
//! `whole` (a model held in memory into one stream), `decode`, `baseline`, `resume` (a
//! layer-by-layer run's checkpoint), `sequential` (asymmetric calibration: the original and the
//! coded model's activations side by side), `shard`, `steer` (a layer-by-layer run's step moved
//! segment by segment to land a measured rate), `layerwise`
//! (block by block from disk, resumable, sharded), `job` ([`LlamaCompression`], the builder
//! that checks a job and runs it any of these ways).

mod baseline;
mod calibration;
mod decode;
mod job;
mod layerwise;
mod records;
mod resume;
mod sequential;
mod shard;
mod steer;
mod whole;

pub use self::baseline::{Baseline, BaselineResult, quantize_baseline};
pub use self::calibration::{AllocationOptions, Calibration, ColumnWeight, Mode};
pub use self::decode::{NwcLlamaSource, decode_llama, decode_to, is_llama};
pub use self::job::{
    LlamaCompression, compress_llama, compress_llama_ft_file, compress_llama_layerwise,
    compress_llama_shard,
};
pub use self::layerwise::{LayerwiseProgress, LayerwiseReport, StageTimes};
pub use self::records::{CONFIG_RECORD, TOKENIZER_RECORD};
pub use self::shard::{SHARD_RECORD, Shard, merge_shards};
