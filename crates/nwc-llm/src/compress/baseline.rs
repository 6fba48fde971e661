//! The RTN and GPTQ baselines, applied to the matrices NWC codes and measured the same way.

use std::collections::BTreeMap;

use nwc_ldl::GroupRtn;
use nwc_pipeline::{NwcError, Result, TensorPolicy};
use nwc_tensor::Tensor;

use super::calibration::Calibration;
use crate::weights::{LlamaWeights, site_of};

/// A baseline quantizer, applied to the same matrices NWC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// Per-group round-to-nearest, `bits` per weight, groups of 128 columns.
    Rtn(u32),
    /// GPTQ (LDLQ feedback with the same grid) using the calibration Hessians.
    Gptq(u32),
}

impl Baseline {
    /// A short label for tables.
    pub fn label(self) -> String {
        match self {
            Baseline::Rtn(b) => format!("RTN {b}-bit g128"),
            Baseline::Gptq(b) => format!("GPTQ {b}-bit g128"),
        }
    }
}

/// What a baseline produced: the dequantized model and its *measured* size.
#[derive(Debug)]
pub struct BaselineResult {
    /// The dequantized weights.
    pub weights: LlamaWeights,
    /// Bytes of the serialized codes, scales and minima of every quantized matrix, plus the
    /// stored bytes of every tensor left as it was.
    pub bytes: u64,
    /// `8 × bytes / parameters`.
    pub bits_per_param: f64,
}

/// Quantizes every matrix `policy` selects with a baseline; other tensors are kept as they are
/// and counted at their stored size.
///
/// # Errors
/// [`NwcError::NeedsCalibration`] when GPTQ has no calibration; quantizer errors.
pub fn quantize_baseline(
    weights: &LlamaWeights,
    calibration: Option<&Calibration>,
    baseline: Baseline,
    policy: &TensorPolicy,
) -> Result<BaselineResult> {
    let cfg = &weights.config;
    let mut bytes = 0u64;
    let mut tensors = BTreeMap::new();
    for (name, t) in &weights.tensors {
        let site = site_of(cfg, name).filter(|_| policy.codes(t));
        let Some((site, (rows, cols))) = site.zip(t.matrix_dims()) else {
            bytes += t.bytes().len() as u64;
            tensors.insert(name.clone(), t.clone());
            continue;
        };
        let w = t.to_f32()?;
        let packed = match baseline {
            Baseline::Rtn(b) => GroupRtn::new(b, 128)?.quantize(&w, rows, cols)?,
            Baseline::Gptq(b) => {
                let ldl = calibration.and_then(|c| c.ldl(site)).ok_or_else(|| {
                    NwcError::NeedsCalibration {
                        mode: "GPTQ".into(),
                        needs: "calibration Hessians".into(),
                    }
                })?;
                nwc_ldl::gptq(&w, rows, cols, ldl, GroupRtn::new(b, 128)?)?
            }
        };
        bytes += packed.bytes.len() as u64;
        tensors.insert(
            name.clone(),
            Tensor::from_f32(name.clone(), t.dtype(), t.shape().to_vec(), &packed.values)?,
        );
    }
    let n: usize = weights.n_params();
    let weights = LlamaWeights::from_parts(cfg.clone(), tensors, weights.tokenizer.clone())?;
    Ok(BaselineResult {
        weights,
        bytes,
        bits_per_param: 8.0 * bytes as f64 / n.max(1) as f64,
    })
}
