//! Block-wise recovery fine-tuning (the paper's last stage): after a model's linears are
//! compressed, each decoder block in turn learns a per-column scale for each of its seven
//! projections and its two norms, so that on calibration windows it reproduces the *original*
//! block's outputs given the inputs the *compressed* model actually produces (the error of the
//! blocks before it included). The compressed weights themselves stay fixed, so the learned
//! scales fold into the scales a `.nwc` record already stores and the rate does not change.
//!
//! Adam on mean squared error, normalized by the target's mean square; windows are split into
//! a training part and a held-out part, and training stops when the held-out error has not
//! improved for `patience` evaluations; the best state is kept (and never one worse than the
//! starting point).

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion as _, Int, Tensor, TensorData};

use crate::error::{LlmError, Result};
use crate::model::{BlockContext, BlockTensors, Llama, block_forward};

/// Fine-tuning hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FtConfig {
    /// Adam learning rate.
    pub lr: f64,
    /// Most optimizer steps per block.
    pub max_steps: usize,
    /// Windows per step.
    pub batch: usize,
    /// Windows held out for early stopping (taken from the end).
    pub heldout: usize,
    /// Steps between held-out evaluations.
    pub eval_every: usize,
    /// Evaluations without improvement before a block stops.
    pub patience: usize,
}

impl Default for FtConfig {
    fn default() -> Self {
        Self {
            lr: 5e-3,
            max_steps: 40,
            batch: 2,
            heldout: 2,
            eval_every: 5,
            patience: 2,
        }
    }
}

/// What fine-tuning learned for one block, and how much it helped.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockFt {
    /// Decoder layer.
    pub layer: usize,
    /// Per-column (input feature) multipliers of q, k, v, o, gate, up, down.
    pub col_scales: [Vec<f32>; 7],
    /// The new pre-attention norm weight.
    pub attn_norm: Vec<f32>,
    /// The new pre-MLP norm weight.
    pub mlp_norm: Vec<f32>,
    /// Held-out normalized MSE of the block's output before fine-tuning.
    pub heldout_before: f64,
    /// ... and after (the best state kept).
    pub heldout_after: f64,
    /// Optimizer steps taken.
    pub steps: usize,
}

/// The trainable part of one block.
#[derive(Module, Debug)]
struct Trainable<B: Backend> {
    scales: Vec<Param<Tensor<B, 1>>>,
    attn_norm: Param<Tensor<B, 1>>,
    mlp_norm: Param<Tensor<B, 1>>,
}

impl<B: Backend> Trainable<B> {
    fn new(w: &BlockTensors<B>) -> Self {
        Self {
            scales: w
                .proj
                .iter()
                .map(|p| Param::from_tensor(Tensor::ones([p.dims()[1]], &p.device())))
                .collect(),
            attn_norm: Param::from_tensor(w.attn_norm.clone()),
            mlp_norm: Param::from_tensor(w.mlp_norm.clone()),
        }
    }

    /// The block's tensors with the learned scales and norms applied to the fixed weights.
    fn apply(&self, w: &BlockTensors<B>) -> BlockTensors<B> {
        let proj = std::array::from_fn(|i| {
            let cols = w.proj[i].dims()[1];
            w.proj[i].clone() * self.scales[i].val().reshape([1, cols])
        });
        BlockTensors {
            attn_norm: self.attn_norm.val(),
            mlp_norm: self.mlp_norm.val(),
            proj,
            qkv_bias: w.qkv_bias.clone(),
        }
    }
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().expect("f32 data")
}

/// Normalized MSE of `y` against `target` (`[b, t, h]` each).
fn nmse<B: Backend>(y: Tensor<B, 3>, target: Tensor<B, 3>) -> Tensor<B, 1> {
    let denom = target.clone().powi_scalar(2).mean();
    (y - target).powi_scalar(2).mean() / denom
}

/// Fine-tunes every block of `quantized` towards `original` on `windows` (token ids, all of the
/// same length), calling `progress` after each block. Training runs on `B` (an autodiff
/// backend); `original` and `quantized` live on its inner backend.
///
/// # Errors
/// [`LlmError::Input`] when there are too few windows for the held-out split, windows of
/// different lengths, or the two models' shapes differ.
pub fn finetune_blocks<B: AutodiffBackend>(
    original: &Llama<B::InnerBackend>,
    quantized: &Llama<B::InnerBackend>,
    windows: &[&[u32]],
    cfg: &FtConfig,
    device: &B::Device,
    mut progress: impl FnMut(&BlockFt),
) -> Result<Vec<BlockFt>> {
    let n = windows.len();
    if n < cfg.heldout + 1 || cfg.heldout == 0 || cfg.batch == 0 || cfg.eval_every == 0 {
        return Err(LlmError::Input(format!(
            "fine-tuning needs at least {} windows (batch {}, {} held out), got {n}",
            cfg.heldout + 1,
            cfg.batch,
            cfg.heldout
        )));
    }
    let t = windows[0].len();
    if t < 2 || windows.iter().any(|w| w.len() != t) {
        return Err(LlmError::Input(
            "fine-tuning windows must share one length ≥ 2".into(),
        ));
    }
    if original.config() != quantized.config() {
        return Err(LlmError::Input(
            "the original and quantized models differ in shape".into(),
        ));
    }
    let vocab = original.config().vocab;
    if let Some(&bad) = windows
        .iter()
        .flat_map(|w| w.iter())
        .find(|&&i| i as usize >= vocab)
    {
        return Err(LlmError::Input(format!(
            "token {bad} outside the vocabulary of {vocab}"
        )));
    }
    let ids: Vec<i64> = windows
        .iter()
        .flat_map(|w| w.iter().map(|&i| i64::from(i)))
        .collect();
    let ids = Tensor::<B::InnerBackend, 2, Int>::from_data(TensorData::new(ids, [n, t]), device);
    let ctx = original.block_context(t, device);
    let ctx_ad: BlockContext<B> = ctx.map(Tensor::from_inner);
    let mut x_orig = original.embed_ids(ids.clone());
    let mut x_q = quantized.embed_ids(ids);
    let train = n - cfg.heldout;
    let rows = |x: &Tensor<B::InnerBackend, 3>, from: usize, k: usize| x.clone().narrow(0, from, k);
    let mut out = Vec::with_capacity(original.config().layers);
    for l in 0..original.config().layers {
        let w_orig = original.block_tensors(l);
        let w_q = quantized.block_tensors(l);
        let target = block_forward(x_orig.clone(), &w_orig, &ctx, l, &mut None);
        let w_ad = BlockTensors::<B> {
            attn_norm: Tensor::from_inner(w_q.attn_norm.clone()),
            mlp_norm: Tensor::from_inner(w_q.mlp_norm.clone()),
            proj: std::array::from_fn(|i| Tensor::from_inner(w_q.proj[i].clone())),
            qkv_bias: w_q
                .qkv_bias
                .as_ref()
                .map(|b| b.clone().map(Tensor::from_inner)),
        };
        let heldout = |m: &Trainable<B::InnerBackend>| -> f64 {
            let y = block_forward(
                rows(&x_q, train, cfg.heldout),
                &m.apply(&w_q),
                &ctx,
                l,
                &mut None,
            );
            nmse(y, rows(&target, train, cfg.heldout))
                .into_scalar()
                .elem::<f64>()
        };
        let mut model = Trainable::<B>::new(&w_ad);
        let mut optim = AdamConfig::new().init::<B, Trainable<B>>();
        let before = heldout(&model.valid());
        let (mut best, mut best_err, mut since, mut steps) = (model.valid(), before, 0, 0);
        for step in 0..cfg.max_steps {
            let from = (step * cfg.batch) % train;
            let k = cfg.batch.min(train - from);
            let x = Tensor::<B, 3>::from_inner(rows(&x_q, from, k));
            let y = block_forward(x, &model.apply(&w_ad), &ctx_ad, l, &mut None);
            let loss = nmse(y, Tensor::from_inner(rows(&target, from, k)));
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(cfg.lr, model, grads);
            steps = step + 1;
            if steps % cfg.eval_every == 0 || steps == cfg.max_steps {
                let err = heldout(&model.valid());
                if err < best_err {
                    (best, best_err, since) = (model.valid(), err, 0);
                } else {
                    since += 1;
                    if since >= cfg.patience {
                        break;
                    }
                }
            }
        }
        let applied = best.apply(&w_q);
        x_q = block_forward(x_q, &applied, &ctx, l, &mut None);
        x_orig = target;
        let r = BlockFt {
            layer: l,
            col_scales: std::array::from_fn(|i| to_vec(best.scales[i].val())),
            attn_norm: to_vec(best.attn_norm.val()),
            mlp_norm: to_vec(best.mlp_norm.val()),
            heldout_before: before,
            heldout_after: best_err,
            steps,
        };
        tracing::info!(
            layer = l,
            steps,
            heldout_before = before,
            heldout_after = best_err,
            "block fine-tuned"
        );
        progress(&r);
        out.push(r);
    }
    Ok(out)
}
