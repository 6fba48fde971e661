//! How much each weight matrix matters to the model's own loss: the empirical Fisher
//! information of next-token prediction, per input column of every matrix. Rate allocation
//! ([`crate::compress::Calibration::with_allocation`]) turns it into one loss sensitivity per
//! matrix, so that bits move to the matrices whose errors the loss feels most.

use std::collections::BTreeMap;

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{LlmError, Result};
use crate::model::Llama;
use crate::weights::LlamaWeights;

/// The empirical Fisher information of every weight matrix, summed over rows: for each matrix
/// (Hugging Face name) and input column `j`, `Σ_i E_w[(∂L_w/∂W_ij)²]`, with `L_w` the mean
/// next-token loss of calibration window `w`. A perturbation `E` of the weights then costs about
/// `½ Σ_ij F_ij E_ij²` of loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Fisher {
    /// Per matrix, per input column.
    pub columns: BTreeMap<String, Vec<f64>>,
    /// Windows it was measured on.
    pub windows: usize,
}

impl Fisher {
    /// Measures it on `windows` (token ids, at least two each) with one forward and backward pass
    /// of the whole model per window; `progress(done, total)` after each.
    ///
    /// # Errors
    /// [`LlmError::Config`] without windows or with a window shorter than two tokens; weight
    /// errors.
    pub fn measure<B: AutodiffBackend>(
        weights: &LlamaWeights,
        windows: &[Vec<u32>],
        device: &B::Device,
        progress: impl Fn(usize, usize),
    ) -> Result<Self> {
        if windows.is_empty() || windows.iter().any(|w| w.len() < 2) {
            return Err(LlmError::Config(
                "the Fisher information needs windows of at least two tokens".into(),
            ));
        }
        let model = Llama::<B>::from_weights(weights, device)?;
        let mut columns: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for (k, w) in windows.iter().enumerate() {
            let ids: Vec<i64> = w.iter().map(|&t| i64::from(t)).collect();
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, w.len()]), device);
            let grads = model.nll(ids).backward();
            for (name, p) in model.matrices() {
                let Some(g) = p.grad(&grads) else {
                    continue;
                };
                let sq: Vec<f32> =
                    g.powi_scalar(2)
                        .sum_dim(0)
                        .into_data()
                        .to_vec()
                        .map_err(|e| {
                            LlmError::Config(format!("{name}: reading its gradient: {e:?}"))
                        })?;
                let acc = columns.entry(name).or_insert_with(|| vec![0.0; sq.len()]);
                for (a, &v) in acc.iter_mut().zip(&sq) {
                    *a += f64::from(v);
                }
            }
            progress(k + 1, windows.len());
        }
        let n = windows.len() as f64;
        for v in columns.values_mut() {
            v.iter_mut().for_each(|x| *x /= n);
        }
        Ok(Self {
            columns,
            windows: windows.len(),
        })
    }
}
