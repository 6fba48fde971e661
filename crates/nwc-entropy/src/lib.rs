//! Entropy coding for nwc: a deep factorized prior, deterministic integer tables and a segmented,
//! interleaved rANS coder whose decoder finds symbols by table lookup.
//!
//! ```
//! use nwc_entropy::{Coder, Table};
//!
//! // A distribution over -2..=2 plus an escape symbol for everything else.
//! let table = Table::from_probabilities(-2, &[0.1, 0.2, 0.4, 0.2, 0.1], 1e-6, 15)?;
//! // Chunks of 4 symbols, one class, every position coded with table 0.
//! let tables = [table];
//! let map = [0u16; 4];
//! let coder = Coder::new(&tables, &map, 4)?;
//!
//! let symbols = [0, 1, -1, 2, 0, 0, 1_000_000, -2]; // 1_000_000 is escaped
//! let classes = [0u8, 0];
//! let segments = coder.encode_all(&symbols, &classes, 1)?; // one chunk per segment
//! let parts: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
//!
//! let mut decoded = [0i32; 8];
//! coder.decode_all(&parts, &classes, 1, &mut decoded)?;
//! assert_eq!(decoded, symbols);
//! # Ok::<(), nwc_entropy::EntropyError>(())
//! ```
//!
//! Everything here works on plain slices; the crate never sees a tensor type.
#![deny(missing_docs)]

mod context;
mod error;
mod lanes;
mod lockstep;
mod prior;
mod rans;
mod rate;
mod segment;
mod steps;
mod table;
mod trellis;
mod walk;

pub use context::ContextModel;
pub use error::{EntropyError, Result};
pub use lanes::viterbi_chunks;
pub use prior::{
    DEFAULT_FILTERS, DEFAULT_TAIL_MASS, FactorizedPrior, LIKELIHOOD_BOUND, PriorParams, SplitMix64,
};
pub use rans::Coder;
pub use rate::RateModel;
pub use segment::{MAX_CHUNKS_PER_SEGMENT, SEGMENT_HEADER_BYTES};
pub use steps::{LEVEL_STEP_RATIOS, scalar_step_for_bits, tcq_bits_for_step, tcq_step_for_bits};
pub use table::{DEFAULT_PRECISION, MAX_PRECISION, MAX_SYMBOLS, MIN_PRECISION, Table};
pub use trellis::{reconstruct_chunk, viterbi_chunk, viterbi_reference};
pub use walk::{TrellisWalk, Walk8};
