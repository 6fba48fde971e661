//! Hessian statistics and LDLQ error feedback for nwc, on plain slices and nalgebra matrices.
//!
//! ```
//! use nwc_ldl::{BlockLdl, HessianAccumulator, damp, ldlq, proxy_loss};
//!
//! // H = E[x xᵀ] from correlated activations (each input is close to the one before it).
//! let (rows, cols) = (4, 8);
//! let mut acc = HessianAccumulator::new(cols);
//! let x: Vec<f32> = (0..64 * cols).map(|i| ((i / cols) as f32 * 0.37 + (i % cols) as f32 * 0.05).sin()).collect();
//! acc.add(&x, 64)?;
//! let h = damp(&acc.hessian()?, 0.01)?.h;
//! let ldl = BlockLdl::new(&h, 4)?;
//!
//! // Round to a grid of 0.25, once plainly and once with LDLQ feedback.
//! let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.61).sin()).collect();
//! let round = |_: usize, t: &[f32]| -> Result<Vec<f32>, nwc_ldl::LdlError> {
//!     Ok(t.iter().map(|v| (v * 4.0).round() / 4.0).collect())
//! };
//! let plain: Vec<f32> = w.iter().map(|v| (v * 4.0).round() / 4.0).collect();
//! let fed = ldlq(&w, rows, cols, &ldl, round)?;
//! assert!(proxy_loss(&w, &fed, rows, cols, &h) <= proxy_loss(&w, &plain, rows, cols, &h));
//! # Ok::<(), nwc_ldl::LdlError>(())
//! ```
#![deny(missing_docs)]

mod error;
mod hessian;
mod ldl;
mod rtn;

pub use error::{LdlError, Result};
pub use hessian::{Damped, HessianAccumulator, damp, damp_owned};
pub use ldl::{BlockLdl, ldlq, proxy_loss};
pub use rtn::{GroupRtn, Packed, gptq};

/// Relative damping added to the normalized Hessian: `H ← H / mean(diag H) + DAMPING · I`.
pub const DAMPING: f64 = 0.01;
/// Block size of the block LDL decomposition used by LDLQ.
pub const LDL_BLOCK: usize = 128;
