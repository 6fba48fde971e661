//! Training the trellis refiner with the real quantizer in the loop: every batch is coded by the
//! 8-state trellis search at a random rate, and the refiner learns to correct the decoded grid
//! positions. The loss is the MSE in quantizer steps, so every rate weighs the same.

use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion as _, Int, Tensor, TensorData};
use nwc_entropy::{
    ContextModel, LEVEL_STEP_RATIOS, RateModel, SplitMix64, reconstruct_chunk, tcq_step_for_bits,
    viterbi_chunk,
};

use crate::checkpoint::Checkpoint;
use crate::config::{CodecConfig, Variant};
use crate::error::{CodecError, Result};
use crate::model::Refiner;

/// Refiner training hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct RefineConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Chunks per batch.
    pub batch: usize,
    /// Learning rate.
    pub lr: f64,
    /// Seed of batch sampling and rate draws.
    pub seed: u64,
    /// Steps between progress reports (and held-out evaluations).
    pub log_every: u64,
    /// Rates (nominal bits per value at level 0) are drawn uniformly from this range.
    pub bits: (f32, f32),
}

impl Default for RefineConfig {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch: 2048,
            lr: 1e-3,
            seed: 0x7463_7121,
            log_every: 100,
            bits: (1.5, 8.5),
        }
    }
}

/// Progress of a refiner run.
#[derive(Debug, Clone, PartialEq)]
pub struct RefineStats {
    /// Steps done.
    pub step: u64,
    /// Training MSE of the refined values over plain TCQ's (mean over the window).
    pub train_ratio: f64,
    /// Held-out MSE ratio refined / plain TCQ at level 0, per nominal rate of
    /// [`EVAL_BITS`].
    pub heldout_ratio: Vec<f64>,
}

/// Nominal rates of the held-out evaluation.
pub const EVAL_BITS: [f32; 5] = [2.0, 3.0, 4.0, 6.0, 8.0];

/// Codes chunks with the trellis: `(u, j)` in steps, the values and their grid positions.
fn code(model: &ContextModel, x: &[f32], steps: &[f32], chunk_len: usize) -> (Vec<f32>, Vec<f32>) {
    let mut u = vec![0.0f32; x.len()];
    let mut j = vec![0.0f32; x.len()];
    let mut k = vec![0i32; chunk_len];
    let flat = RateModel::flat();
    for (c, ((xc, uc), jc)) in x
        .chunks(chunk_len)
        .zip(u.chunks_mut(chunk_len))
        .zip(j.chunks_mut(chunk_len))
        .enumerate()
    {
        let inv = 1.0 / steps[c];
        for (a, b) in xc.iter().zip(uc.iter_mut()) {
            *b = a * inv;
        }
        viterbi_chunk(model, uc, 0.0, &flat, &mut k);
        reconstruct_chunk(model, &k, jc);
    }
    (u, j)
}

/// `u` and `j` as `[n, l]` tensors.
fn tensors<B: Backend>(
    u: Vec<f32>,
    j: Vec<f32>,
    n: usize,
    l: usize,
    device: &B::Device,
) -> [Tensor<B, 2>; 2] {
    [
        Tensor::from_data(TensorData::new(u, [n, l]), device),
        Tensor::from_data(TensorData::new(j, [n, l]), device),
    ]
}

/// Held-out MSE ratio (refined / plain TCQ) at level 0 for each rate of [`EVAL_BITS`].
pub fn evaluate_refiner<B: Backend>(
    refiner: &Refiner<B>,
    cfg: &CodecConfig,
    heldout: &[f32],
    device: &B::Device,
) -> Vec<f64> {
    let l = cfg.chunk_len;
    let n = (heldout.len() / l).min(16384);
    let model = ContextModel::tcq8();
    EVAL_BITS
        .iter()
        .map(|&b| {
            if n == 0 {
                return f64::NAN;
            }
            let steps = vec![tcq_step_for_bits(b); n];
            let (u, j) = code(&model, &heldout[..n * l], &steps, l);
            let plain: f64 = u
                .iter()
                .zip(&j)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            let [ut, jt] = tensors::<B>(u, j, n, l, device);
            let st = Tensor::<B, 1>::from_data(TensorData::new(steps, [n]), device);
            let lv = Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0i64; n], [n]), device);
            let refined = refiner.forward(jt, st, lv);
            let e = (refined - ut)
                .powi_scalar(2)
                .sum()
                .into_scalar()
                .elem::<f64>();
            e / plain
        })
        .collect()
}

/// Trains a trellis refiner on normalized chunks, evaluating on `heldout`, starting from
/// `resume` when given. Calls `progress` and `checkpoint` every `log_every` steps.
///
/// # Errors
/// [`CodecError::Config`] for a non-refiner configuration, unusable settings or too little data.
#[allow(clippy::too_many_arguments)]
pub fn train_refiner<B: AutodiffBackend>(
    cfg: &CodecConfig,
    rc: &RefineConfig,
    data: &[f32],
    heldout: &[f32],
    device: &B::Device,
    resume: Option<&Checkpoint>,
    mut progress: impl FnMut(&RefineStats),
    mut checkpoint: impl FnMut(&Checkpoint),
) -> Result<Checkpoint> {
    cfg.validate()?;
    let l = cfg.chunk_len;
    if cfg.variant != Variant::TrellisRefiner {
        return Err(CodecError::Config(
            "refiner training needs a refiner configuration".into(),
        ));
    }
    if data.len() / l < rc.batch || rc.batch == 0 || rc.log_every == 0 || rc.steps == 0 {
        return Err(CodecError::Config(format!(
            "{} chunks of data for {} steps of batches of {} (log every {})",
            data.len() / l,
            rc.steps,
            rc.batch,
            rc.log_every
        )));
    }
    if !(rc.bits.0 > 0.0 && rc.bits.0 <= rc.bits.1 && rc.bits.1 <= 16.0) {
        return Err(CodecError::Config(format!("rate range {:?}", rc.bits)));
    }
    let (mut refiner, start) = match resume {
        Some(c) if c.config() == cfg => (c.refiner::<B>(device)?, c.train_steps()),
        Some(c) => {
            return Err(CodecError::Config(format!(
                "cannot resume: checkpoint has {:?}, asked for {cfg:?}",
                c.config()
            )));
        }
        None => (Refiner::<B>::new(cfg, device), 0),
    };
    B::seed(device, rc.seed ^ start);
    let mut rng = SplitMix64(rc.seed ^ start.wrapping_mul(0x9e37_79b9));
    let mut opt = AdamConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init::<B, Refiner<B>>();
    let trellis = ContextModel::tcq8();
    let n_chunks = data.len() / l;
    let (mut ratio_acc, mut seen) = (0.0f64, 0u64);
    let mut last = None;
    for step in start + 1..=start + rc.steps {
        let n = rc.batch;
        let mut x = Vec::with_capacity(n * l);
        let mut steps = Vec::with_capacity(n);
        let mut levels = Vec::with_capacity(n);
        for _ in 0..n {
            let k = (rng.next_u64() % n_chunks as u64) as usize;
            x.extend_from_slice(&data[k * l..(k + 1) * l]);
            let level = (rng.next_u64() % 4) as usize;
            let b = rc.bits.0 + (rc.bits.1 - rc.bits.0) * rng.next_f64() as f32;
            steps.push(tcq_step_for_bits(b) * LEVEL_STEP_RATIOS[level]);
            levels.push(level as i64);
        }
        let (u, j) = code(&trellis, &x, &steps, l);
        let plain: f64 = u
            .iter()
            .zip(&j)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / (n * l) as f64;
        let [ut, jt] = tensors::<B>(u, j, n, l, device);
        let st = Tensor::<B, 1>::from_data(TensorData::new(steps, [n]), device);
        let lv = Tensor::<B, 1, Int>::from_data(TensorData::new(levels, [n]), device);
        let loss = (refiner.forward(jt, st, lv) - ut).powi_scalar(2).mean();
        ratio_acc += loss.clone().into_scalar().elem::<f64>() / plain;
        seen += 1;
        let grads = GradientsParams::from_grads(loss.backward(), &refiner);
        refiner = opt.step(rc.lr, refiner, grads);
        if step % rc.log_every == 0 || step == start + rc.steps {
            let valid = refiner.valid();
            let stats = RefineStats {
                step,
                train_ratio: ratio_acc / seen as f64,
                heldout_ratio: evaluate_refiner(&valid, cfg, heldout, device),
            };
            tracing::info!(?stats, "refiner training");
            progress(&stats);
            (ratio_acc, seen) = (0.0, 0);
            let c = Checkpoint::from_refiner(&valid, cfg, step)?;
            checkpoint(&c);
            last = Some(c);
        }
    }
    last.ok_or_else(|| CodecError::Config("zero training steps".into()))
}
