//! Training: rate + λ·(importance-weighted MSE) with a random quality level per chunk, uniform
//! noise for rounding, and the auxiliary quantile loss on its own optimizer.

use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use nwc_entropy::SplitMix64;

use crate::checkpoint::{Checkpoint, DEFAULT_STEPS};
use crate::config::CodecConfig;
use crate::error::{CodecError, Result};
use crate::model::NwcModel;

/// Distortion weight of each quality level, relative to λ: the authors' coefficients
/// `[3.4, 1.2, 0.1, 0.05]` on the rate term, expressed as weights on the MSE term.
pub const LEVEL_WEIGHTS: [f32; 4] = [0.294, 0.833, 10.0, 20.0];

/// Training hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Rate–distortion trade-off λ (larger: more bits, less error).
    pub lambda: f32,
    /// Optimizer steps.
    pub steps: u64,
    /// Chunks per batch.
    pub batch: usize,
    /// Learning rate of the networks and the density model.
    pub lr: f64,
    /// Learning rate of the quantiles (auxiliary loss).
    pub aux_lr: f64,
    /// Seed of batch sampling and level draws.
    pub seed: u64,
    /// Steps between progress reports (and held-out evaluations).
    pub log_every: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lambda: 300.0,
            steps: 2000,
            batch: 2048,
            lr: 1e-4,
            aux_lr: 1e-3,
            seed: 0x6e77_6321,
            log_every: 100,
        }
    }
}

/// Progress of a training run, reported every `log_every` steps.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainStats {
    /// Steps done.
    pub step: u64,
    /// Training loss (mean over the last `log_every` steps).
    pub loss: f64,
    /// Training rate in bits per weight (same window).
    pub bits: f64,
    /// Held-out MSE per level with real rounding (normalized weights, unit variance).
    pub heldout_mse: [f64; 4],
    /// Held-out rate in bits per weight, estimated by the prior with real rounding.
    pub heldout_bits: f64,
}

fn batch<B: Backend>(
    data: &[f32],
    chunk_len: usize,
    n: usize,
    rng: &mut SplitMix64,
    device: &B::Device,
) -> (Tensor<B, 2>, Tensor<B, 1, Int>, Vec<usize>) {
    let n_chunks = data.len() / chunk_len;
    let mut x = Vec::with_capacity(n * chunk_len);
    let mut levels = Vec::with_capacity(n);
    for _ in 0..n {
        let k = (rng.next_u64() % n_chunks as u64) as usize;
        x.extend_from_slice(&data[k * chunk_len..(k + 1) * chunk_len]);
        levels.push((rng.next_u64() % 4) as usize);
    }
    let lv: Vec<i64> = levels.iter().map(|&l| l as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [n, chunk_len]), device),
        Tensor::from_data(TensorData::new(lv, [n]), device),
        levels,
    )
}

/// Held-out evaluation with real rounding at step 1: MSE per level and the prior's rate.
pub fn evaluate<B: Backend>(
    model: &NwcModel<B>,
    cfg: &CodecConfig,
    heldout: &[f32],
    device: &B::Device,
) -> ([f64; 4], f64) {
    let l = cfg.chunk_len;
    let n = (heldout.len() / l).min(16384);
    if n == 0 {
        return ([f64::NAN; 4], f64::NAN);
    }
    let x: Tensor<B, 2> =
        Tensor::from_data(TensorData::new(heldout[..n * l].to_vec(), [n, l]), device);
    let mut mse = [0.0; 4];
    let mut bits = 0.0;
    for (level, mse_level) in mse.iter_mut().enumerate() {
        let lv =
            Tensor::<B, 1, Int>::from_data(TensorData::new(vec![level as i64; n], [n]), device);
        let y = model.analyze(x.clone(), lv.clone());
        let med = model.bottleneck.medians().reshape([1, cfg.latent]);
        let y_hat = (y - med.clone()).round() + med;
        let x_hat = model.synthesize(y_hat.clone(), lv);
        *mse_level = (x_hat - x.clone())
            .powi_scalar(2)
            .mean()
            .into_scalar()
            .elem::<f64>();
        if level == 0 {
            let lik = model.bottleneck.likelihood(y_hat);
            bits = lik.log().neg().sum().into_scalar().elem::<f64>()
                / std::f64::consts::LN_2
                / (n * l) as f64;
        }
    }
    (mse, bits)
}

use burn::tensor::ElementConversion as _;

/// Trains a codec on normalized chunks (`data`, `chunk_len` values each), evaluating on
/// `heldout`, starting from `resume` when given. Calls `progress` every `log_every` steps and
/// `checkpoint` with an exported checkpoint at the same cadence (to save and resume).
///
/// # Errors
/// [`CodecError::Config`] for unusable settings or too little data; export errors from the
/// checkpoint.
#[allow(clippy::too_many_arguments)]
pub fn train<B: AutodiffBackend>(
    cfg: &CodecConfig,
    tc: &TrainConfig,
    data: &[f32],
    heldout: &[f32],
    device: &B::Device,
    resume: Option<&Checkpoint>,
    mut progress: impl FnMut(&TrainStats),
    mut checkpoint: impl FnMut(&Checkpoint),
) -> Result<Checkpoint> {
    cfg.validate()?;
    // Zero steps from a checkpoint re-exports it: same parameters, tables rebuilt by this build
    // for the current step list.
    if tc.steps == 0 {
        let c = resume.ok_or_else(|| {
            CodecError::Config("zero training steps and nothing to resume".into())
        })?;
        let model = c.model::<B::InnerBackend>(device)?;
        let out = Checkpoint::from_model(
            &model,
            c.config(),
            c.lambda(),
            c.train_steps(),
            &DEFAULT_STEPS,
        )?;
        checkpoint(&out);
        return Ok(out);
    }
    if data.len() / cfg.chunk_len < tc.batch || tc.batch == 0 || tc.log_every == 0 {
        return Err(CodecError::Config(format!(
            "{} chunks of data for batches of {} (log every {})",
            data.len() / cfg.chunk_len,
            tc.batch,
            tc.log_every
        )));
    }
    let (mut model, start) = match resume {
        Some(c) if c.config() == cfg => (c.model::<B>(device)?, c.train_steps()),
        Some(c) => {
            return Err(CodecError::Config(format!(
                "cannot resume: checkpoint has {:?}, asked for {cfg:?}",
                c.config()
            )));
        }
        None => (NwcModel::<B>::new(cfg, device), 0),
    };
    B::seed(device, tc.seed ^ start);
    let mut rng = SplitMix64(tc.seed ^ start.wrapping_mul(0x9e37_79b9));
    let mut opt = AdamConfig::new()
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init::<B, NwcModel<B>>();
    let mut aux_opt = AdamConfig::new().init::<B, NwcModel<B>>();
    let weights = Tensor::<B, 1>::from_floats(LEVEL_WEIGHTS, device);
    let (mut loss_acc, mut bits_acc, mut seen) = (0.0f64, 0.0f64, 0u64);
    let mut last = None;
    for step in start + 1..=start + tc.steps {
        let (x, levels, _) = batch::<B>(data, cfg.chunk_len, tc.batch, &mut rng, device);
        let out = model.forward_train(x.clone(), levels.clone());
        let n_values = (tc.batch * cfg.chunk_len) as f64;
        let bits = out.likelihood.log().neg().sum() / (n_values * std::f64::consts::LN_2);
        let mse = (out.x_hat - x)
            .powi_scalar(2)
            .mean_dim(1)
            .reshape([tc.batch]);
        let w = weights.clone().select(0, levels);
        let distortion = (mse * w).mean();
        let loss = bits.clone() + distortion * tc.lambda;
        loss_acc += loss.clone().into_scalar().elem::<f64>();
        bits_acc += bits.into_scalar().elem::<f64>();
        seen += 1;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(tc.lr, model, grads);
        let aux = model.bottleneck.aux_loss();
        let grads = GradientsParams::from_grads(aux.backward(), &model);
        model = aux_opt.step(tc.aux_lr, model, grads);

        if step % tc.log_every == 0 || step == start + tc.steps {
            let valid = model.valid();
            let (heldout_mse, heldout_bits) = evaluate(&valid, cfg, heldout, device);
            let stats = TrainStats {
                step,
                loss: loss_acc / seen as f64,
                bits: bits_acc / seen as f64,
                heldout_mse,
                heldout_bits,
            };
            tracing::info!(?stats, "training");
            progress(&stats);
            (loss_acc, bits_acc, seen) = (0.0, 0.0, 0);
            let c = Checkpoint::from_model(&valid, cfg, tc.lambda, step, &DEFAULT_STEPS)?;
            checkpoint(&c);
            last = Some(c);
        }
    }
    last.ok_or_else(|| CodecError::Config("zero training steps".into()))
}
