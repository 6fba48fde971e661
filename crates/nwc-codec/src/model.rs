//! The NWC network: analysis transform g_a, synthesis transform g_s (residual MLPs with a quality
//! embedding multiplied in after every block) and the deep factorized entropy bottleneck.

use burn::module::{Module, Param};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{relu, sigmoid, softplus, tanh};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};

use crate::config::CodecConfig;

/// `x + ReLU(LayerNorm(Linear(x)))`.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    pub(crate) linear: Linear<B>,
    pub(crate) norm: LayerNorm<B>,
}

impl<B: Backend> ResBlock<B> {
    fn new(width: usize, device: &B::Device) -> Self {
        Self {
            linear: LinearConfig::new(width, width).init(device),
            norm: LayerNormConfig::new(width).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.clone() + relu(self.norm.forward(self.linear.forward(x)))
    }
}

/// A residual MLP `d_in → width → … → width → d_out`, the hidden state multiplied by a learned
/// per-level embedding after every block.
#[derive(Module, Debug)]
pub struct Transform<B: Backend> {
    pub(crate) input: Linear<B>,
    pub(crate) blocks: Vec<ResBlock<B>>,
    pub(crate) quality: Embedding<B>,
    pub(crate) output: Linear<B>,
}

impl<B: Backend> Transform<B> {
    /// Sets the output layer to zero, so the transform starts as the zero function (a residual
    /// branch that starts as the identity of what it refines).
    fn zero_output(mut self) -> Self {
        let w = self.output.weight.val();
        self.output.weight = Param::from_tensor(w.zeros_like());
        if let Some(b) = self.output.bias.take() {
            self.output.bias = Some(Param::from_tensor(b.val().zeros_like()));
        }
        self
    }

    pub(crate) fn new(cfg: &CodecConfig, d_in: usize, d_out: usize, device: &B::Device) -> Self {
        Self {
            input: LinearConfig::new(d_in, cfg.width).init(device),
            blocks: (0..cfg.blocks)
                .map(|_| ResBlock::new(cfg.width, device))
                .collect(),
            // Start the embedding at 1 so an untrained network is a plain residual MLP.
            quality: {
                let mut e = EmbeddingConfig::new(cfg.levels, cfg.width).init(device);
                e.weight = Param::from_tensor(Tensor::ones([cfg.levels, cfg.width], device));
                e
            },
            output: LinearConfig::new(cfg.width, d_out).init(device),
        }
    }

    /// `x`: `[n, d_in]`, `levels`: `[n]` quality levels. Returns `[n, d_out]`.
    pub fn forward(&self, x: Tensor<B, 2>, levels: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        let [n] = levels.dims();
        let e: Tensor<B, 2> = self.quality.forward(levels.reshape([n, 1])).squeeze_dim(1);
        let mut h = self.input.forward(x);
        for b in &self.blocks {
            h = b.forward(h) * e.clone();
        }
        self.output.forward(h)
    }
}

/// The deep factorized prior as a trainable module (CompressAI's `EntropyBottleneck` layout).
#[derive(Module, Debug)]
pub struct EntropyBottleneck<B: Backend> {
    /// `(C, f_{k+1}, f_k)` per layer, before softplus.
    pub(crate) matrices: Vec<Param<Tensor<B, 3>>>,
    /// `(C, f_{k+1}, 1)` per layer.
    pub(crate) biases: Vec<Param<Tensor<B, 3>>>,
    /// `(C, f_{k+1}, 1)` per layer but the last, before tanh.
    pub(crate) factors: Vec<Param<Tensor<B, 3>>>,
    /// `(C, 1, 3)`: lower tail, median, upper tail.
    pub(crate) quantiles: Param<Tensor<B, 3>>,
}

/// ln(2/tail_mass − 1) for CompressAI's default tail mass 1e-9.
const TAIL_TARGET: f64 = 21.416_413_017_506_358;

impl<B: Backend> EntropyBottleneck<B> {
    pub(crate) fn new(cfg: &CodecConfig, device: &B::Device) -> Self {
        let p = nwc_entropy::PriorParams::compressai_init(cfg.latent, &cfg.filters, 10.0, 0x5eed);
        let widths = cfg.prior_widths();
        let c = cfg.latent;
        let t3 = |v: &[f32], s: [usize; 3]| {
            Param::from_tensor(Tensor::from_data(TensorData::new(v.to_vec(), s), device))
        };
        Self {
            matrices: (0..widths.len() - 1)
                .map(|k| t3(&p.matrices[k], [c, widths[k + 1], widths[k]]))
                .collect(),
            biases: (0..widths.len() - 1)
                .map(|k| t3(&p.biases[k], [c, widths[k + 1], 1]))
                .collect(),
            factors: (0..widths.len() - 2)
                .map(|k| t3(&p.factors[k], [c, widths[k + 1], 1]))
                .collect(),
            quantiles: t3(&p.quantiles, [c, 1, 3]),
        }
    }

    /// Cumulative logits of `x` (`[C, 1, N]`) per channel. With `detach`, no gradient reaches the
    /// density parameters (used by the auxiliary quantile loss).
    fn logits_cumulative(&self, x: Tensor<B, 3>, detach: bool) -> Tensor<B, 3> {
        let d = |p: &Param<Tensor<B, 3>>| if detach { p.val().detach() } else { p.val() };
        let mut v = x;
        let last = self.matrices.len() - 1;
        for k in 0..self.matrices.len() {
            v = softplus(d(&self.matrices[k]), 1.0).matmul(v) + d(&self.biases[k]);
            if k < last {
                v = v.clone() + tanh(d(&self.factors[k])) * tanh(v);
            }
        }
        v
    }

    /// Likelihood of each value of `y` (`[N, C]`) under the prior, bounded below by 1e-9.
    pub fn likelihood(&self, y: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, c] = y.dims();
        let v = y.swap_dims(0, 1).reshape([c, 1, n]);
        let lower = self.logits_cumulative(v.clone() - 0.5, false);
        let upper = self.logits_cumulative(v + 0.5, false);
        let sign = (lower.clone() + upper.clone()).sign().neg();
        // sign(0) = 0 would zero the likelihood: treat it as −1, as CompressAI does.
        let sign = sign.clone() + sign.equal_elem(0.0).float().neg();
        let lik = (sigmoid(sign.clone() * upper) - sigmoid(sign * lower)).abs();
        lik.clamp_min(1e-9).reshape([c, n]).swap_dims(0, 1)
    }

    /// The auxiliary loss that moves the quantiles to the tails and the median of each channel.
    pub fn aux_loss(&self) -> Tensor<B, 1> {
        let q = self.quantiles.val();
        let [c, _, _] = q.dims();
        let logits = self.logits_cumulative(q, true);
        let target = Tensor::<B, 1>::from_floats(
            [-TAIL_TARGET as f32, 0.0, TAIL_TARGET as f32],
            &logits.device(),
        )
        .reshape([1, 1, 3])
        .repeat_dim(0, c);
        (logits - target).abs().sum()
    }

    /// Channel medians `[C]`.
    pub fn medians(&self) -> Tensor<B, 1> {
        let q = self.quantiles.val();
        let [c, _, _] = q.dims();
        q.slice([0..c, 0..1, 1..2]).reshape([c])
    }

    /// The parameters as the entropy crate's plain arrays.
    pub fn prior_params(&self, cfg: &CodecConfig) -> nwc_entropy::PriorParams {
        let v = |p: &Param<Tensor<B, 3>>| {
            p.val()
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 data")
        };
        nwc_entropy::PriorParams {
            channels: cfg.latent,
            filters: cfg.filters.clone(),
            matrices: self.matrices.iter().map(v).collect(),
            biases: self.biases.iter().map(v).collect(),
            factors: self.factors.iter().map(v).collect(),
            quantiles: v(&self.quantiles),
        }
    }
}

/// The whole codec: g_a, g_s and the entropy bottleneck.
#[derive(Module, Debug)]
pub struct NwcModel<B: Backend> {
    /// Analysis transform: chunk → latent.
    pub g_a: Transform<B>,
    /// Synthesis transform: latent → chunk.
    pub g_s: Transform<B>,
    /// The prior over latents.
    pub bottleneck: EntropyBottleneck<B>,
}

/// What one training forward pass yields.
#[derive(Debug)]
pub struct TrainOutput<B: Backend> {
    /// Reconstruction `[N, chunk_len]`.
    pub x_hat: Tensor<B, 2>,
    /// Likelihood of every noisy latent value `[N, latent]`.
    pub likelihood: Tensor<B, 2>,
}

impl<B: Backend> NwcModel<B> {
    /// A freshly initialized model.
    pub fn new(cfg: &CodecConfig, device: &B::Device) -> Self {
        Self {
            g_a: Transform::new(cfg, cfg.chunk_len, cfg.latent, device),
            g_s: Transform::new(cfg, cfg.latent, cfg.chunk_len, device),
            bottleneck: EntropyBottleneck::new(cfg, device),
        }
    }

    /// Training pass: uniform noise U(−½, ½) stands in for rounding.
    pub fn forward_train(&self, x: Tensor<B, 2>, levels: Tensor<B, 1, Int>) -> TrainOutput<B> {
        let y = self.g_a.forward(x, levels.clone());
        let noise = y.random_like(Distribution::Uniform(-0.5, 0.5));
        let y_tilde = y + noise;
        let likelihood = self.bottleneck.likelihood(y_tilde.clone());
        let x_hat = self.g_s.forward(y_tilde, levels);
        TrainOutput { x_hat, likelihood }
    }

    /// Inference analysis: latents `[N, latent]` (before median-offset rounding).
    pub fn analyze(&self, x: Tensor<B, 2>, levels: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        self.g_a.forward(x, levels)
    }

    /// Inference synthesis from dequantized latents.
    pub fn synthesize(&self, y_hat: Tensor<B, 2>, levels: Tensor<B, 1, Int>) -> Tensor<B, 2> {
        self.g_s.forward(y_hat, levels)
    }
}

/// The learned synthesis of the trellis-coded variant: decoded grid positions `j` (in quantizer
/// steps) plus a correction from a residual MLP that sees `j·step`, `log2 step` and the quality
/// level. The correction starts at zero, so an untrained refiner decodes exactly as plain TCQ.
#[derive(Module, Debug)]
pub struct Refiner<B: Backend> {
    /// The correction network: `chunk_len + 1` inputs → `chunk_len` outputs.
    pub g_s: Transform<B>,
}

/// Scale of the `log2 step` input feature (steps span about 2⁻⁷…1).
pub(crate) const LOG_STEP_SCALE: f32 = 1.0 / 4.0;

impl<B: Backend> Refiner<B> {
    /// A refiner whose correction is zero.
    pub fn new(cfg: &CodecConfig, device: &B::Device) -> Self {
        Self {
            g_s: Transform::new(cfg, cfg.chunk_len + 1, cfg.chunk_len, device).zero_output(),
        }
    }

    /// Refined positions in steps `[n, chunk_len]` from grid positions `j` `[n, chunk_len]`,
    /// each chunk's step `[n]` and quality level `[n]`.
    pub fn forward(
        &self,
        j: Tensor<B, 2>,
        step: Tensor<B, 1>,
        levels: Tensor<B, 1, Int>,
    ) -> Tensor<B, 2> {
        let [n] = step.dims();
        let s = step.reshape([n, 1]);
        let features = Tensor::cat(
            vec![
                j.clone() * s.clone(),
                s.log() * (LOG_STEP_SCALE / std::f32::consts::LN_2),
            ],
            1,
        );
        j + self.g_s.forward(features, levels)
    }
}
