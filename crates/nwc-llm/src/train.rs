//! Training a small Llama from scratch (next-token cross-entropy, AdamW, cosine schedule), used to
//! make the byte-level default model the `compress_llama` example ships.

use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};

use crate::config::LlamaConfig;
use crate::error::{LlmError, Result};
use crate::model::Llama;

/// Hyper-parameters of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct LmTrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub ctx: usize,
    /// Peak learning rate (linear warm-up over the first 5 % of steps, cosine decay to 10 %).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Seed of the initialization and of the batch sampler.
    pub seed: u64,
}

impl Default for LmTrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            batch: 16,
            ctx: 128,
            lr: 3e-3,
            weight_decay: 0.01,
            seed: 0x6c6c_616d,
        }
    }
}

/// The learning rate at `step` (1-based) of `total`.
pub fn lr_at(peak: f64, step: usize, total: usize) -> f64 {
    let warm = (total / 20).max(1);
    if step <= warm {
        return peak * step as f64 / warm as f64;
    }
    let t = (step - warm) as f64 / (total - warm).max(1) as f64;
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

/// Trains a fresh model on token ids, calling `progress(step, mean loss since last call)` every
/// `log_every` steps. Returns the trained model on the inner (non-autodiff) backend.
///
/// # Errors
/// [`LlmError::Input`] when the text is shorter than one sequence or tokens exceed the
/// vocabulary; [`LlmError::Config`] for an invalid configuration.
pub fn train_lm<B: AutodiffBackend>(
    cfg: &LlamaConfig,
    tc: &LmTrainConfig,
    ids: &[u32],
    device: &B::Device,
    log_every: usize,
    mut progress: impl FnMut(usize, f64),
) -> Result<Llama<B::InnerBackend>> {
    if ids.len() <= tc.ctx + 1 || tc.batch == 0 || tc.steps == 0 {
        return Err(LlmError::Input(format!(
            "{} tokens, batch {}, {} steps: nothing to train on",
            ids.len(),
            tc.batch,
            tc.steps
        )));
    }
    if let Some(&bad) = ids.iter().find(|&&i| i as usize >= cfg.vocab) {
        return Err(LlmError::Input(format!(
            "token {bad} outside the vocabulary"
        )));
    }
    B::seed(device, tc.seed);
    let mut model = Llama::<B>::init(cfg, device)?;
    let mut opt = AdamWConfig::new()
        .with_weight_decay(tc.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init::<B, Llama<B>>();
    let mut rng = tc.seed | 1;
    let mut next = move || {
        // xorshift64*: a fixed, dependency-free sampler so runs are reproducible.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let span = ids.len() - tc.ctx - 1;
    let (mut acc, mut n) = (0.0f64, 0usize);
    for step in 1..=tc.steps {
        let mut batch = Vec::with_capacity(tc.batch * (tc.ctx + 1));
        for _ in 0..tc.batch {
            let s = (next() % span as u64) as usize;
            batch.extend(ids[s..s + tc.ctx + 1].iter().map(|&i| i64::from(i)));
        }
        let x: Tensor<B, 2, Int> =
            Tensor::from_data(TensorData::new(batch, [tc.batch, tc.ctx + 1]), device);
        let loss = model.nll(x);
        acc += loss.clone().into_scalar().elem::<f64>();
        n += 1;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(lr_at(tc.lr, step, tc.steps), model, grads);
        if step % log_every.max(1) == 0 || step == tc.steps {
            progress(step, acc / n as f64);
            (acc, n) = (0.0, 0);
        }
    }
    Ok(model.valid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    #[test]
    fn schedule_warms_up_and_decays() {
        assert!(lr_at(1.0, 1, 100) < 0.3);
        assert!((lr_at(1.0, 5, 100) - 1.0).abs() < 1e-9);
        assert!((lr_at(1.0, 100, 100) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn a_tiny_model_learns_a_repetitive_text() {
        let cfg = LlamaConfig {
            family: crate::config::Family::Llama,
            vocab: 256,
            hidden: 32,
            intermediate: 64,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            tie_embeddings: true,
            max_positions: 64,
        };
        let ids: Vec<u32> = "the cat sat on the mat. "
            .repeat(40)
            .bytes()
            .map(u32::from)
            .collect();
        let tc = LmTrainConfig {
            steps: 200,
            batch: 4,
            ctx: 32,
            lr: 1e-2,
            ..LmTrainConfig::default()
        };
        let mut losses = Vec::new();
        let device = Default::default();
        let model =
            train_lm::<Autodiff<NdArray>>(&cfg, &tc, &ids, &device, 50, |_, l| losses.push(l))
                .unwrap();
        // From ln(256) ≈ 5.5 nats at random towards the text's ~0 entropy.
        assert!(
            losses[0] > 2.0 && *losses.last().unwrap() < 1.0,
            "{losses:?}"
        );
        // Its tensors have the shapes the loader checks, and load back to the same model.
        let tensors = model.to_tensors(nwc_tensor::DType::F32).unwrap();
        let w = crate::weights::LlamaWeights::from_parts(
            cfg,
            tensors,
            crate::tokenizer::TextTokenizer::bytes(),
        )
        .unwrap();
        let back = Llama::<NdArray>::from_weights(&w, &device).unwrap();
        let x: Tensor<NdArray, 2, Int> =
            Tensor::from_data(TensorData::new(vec![116i64, 104, 101], [1, 3]), &device);
        let (a, b) = (model.forward(x.clone()), back.forward(x));
        assert_eq!(
            a.into_data().to_vec::<f32>().unwrap(),
            b.into_data().to_vec::<f32>().unwrap()
        );
    }
}
