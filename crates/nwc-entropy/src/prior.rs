//! The deep factorized prior (Ballé et al. 2018; CompressAI's `EntropyBottleneck` layout),
//! evaluated from its parameters in deterministic f64 arithmetic.

use crate::error::{EntropyError, Result};
use crate::table::{MAX_SYMBOLS, Table};

/// CompressAI's default hidden widths of the per-channel cumulative-density network.
pub const DEFAULT_FILTERS: [usize; 4] = [3, 3, 3, 3];
/// CompressAI's default tail mass (probability left outside the coded range).
pub const DEFAULT_TAIL_MASS: f64 = 1e-9;
/// Lower bound on a likelihood (CompressAI `likelihood_bound`).
pub const LIKELIHOOD_BOUND: f64 = 1e-9;

/// Parameters of a deep factorized prior over `channels` independent latent channels.
///
/// For channel `c`, the cumulative logit of a value `x` is a small monotone network: with layer
/// widths `1, filters…, 1`, each layer computes `v ← softplus(M_k) · v + b_k` and, on every layer
/// but the last, `v ← v + tanh(a_k) ⊙ tanh(v)`. The CDF is `sigmoid(logits(x))`; the probability
/// of the integer `k` (relative to the channel median) is the CDF mass on `[k − ½, k + ½]`.
///
/// Arrays use CompressAI's shapes: `matrices[k]` is `(channels, f_{k+1}, f_k)`, `biases[k]` and
/// `factors[k]` are `(channels, f_{k+1}, 1)`, `quantiles` is `(channels, 1, 3)`, all row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FactorizedPrior {
    channels: usize,
    /// Layer widths including the scalar input and output: `[1, filters…, 1]`.
    widths: Vec<usize>,
    /// softplus(matrices), precomputed.
    weights: Vec<Vec<f64>>,
    biases: Vec<Vec<f64>>,
    /// tanh(factors), precomputed.
    gates: Vec<Vec<f64>>,
    quantiles: Vec<[f64; 3]>,
}

/// Raw parameter arrays of a [`FactorizedPrior`], as a training framework exports them.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorParams {
    /// Number of latent channels.
    pub channels: usize,
    /// Hidden widths (CompressAI `filters`).
    pub filters: Vec<usize>,
    /// One array per layer, shape `(channels, f_{k+1}, f_k)`, raw (before softplus).
    pub matrices: Vec<Vec<f32>>,
    /// One array per layer, shape `(channels, f_{k+1}, 1)`.
    pub biases: Vec<Vec<f32>>,
    /// One array per layer but the last, shape `(channels, f_{k+1}, 1)`, raw (before tanh).
    pub factors: Vec<Vec<f32>>,
    /// Shape `(channels, 1, 3)`: lower tail, median, upper tail.
    pub quantiles: Vec<f32>,
}

impl PriorParams {
    /// CompressAI's initialization: matrices `ln(expm1(1 / scale / f_{k+1}))` with
    /// `scale = init_scale^(1/(K+1))`, biases uniform in `[−½, ½)` from `seed`, factors zero,
    /// quantiles `[−init_scale, 0, init_scale]`.
    pub fn compressai_init(channels: usize, filters: &[usize], init_scale: f64, seed: u64) -> Self {
        let mut widths = vec![1];
        widths.extend_from_slice(filters);
        widths.push(1);
        let k_layers = widths.len() - 1;
        let scale = libm::pow(init_scale, 1.0 / k_layers as f64);
        let mut rng = SplitMix64(seed);
        let mut matrices = Vec::new();
        let mut biases = Vec::new();
        let mut factors = Vec::new();
        for k in 0..k_layers {
            let (fin, fout) = (widths[k], widths[k + 1]);
            let init = libm::log(libm::expm1(1.0 / scale / fout as f64)) as f32;
            matrices.push(vec![init; channels * fout * fin]);
            biases.push(
                (0..channels * fout)
                    .map(|_| (rng.next_f64() - 0.5) as f32)
                    .collect(),
            );
            if k + 1 < k_layers {
                factors.push(vec![0.0; channels * fout]);
            }
        }
        let s = init_scale as f32;
        Self {
            channels,
            filters: filters.to_vec(),
            matrices,
            biases,
            factors,
            quantiles: (0..channels).flat_map(|_| [-s, 0.0, s]).collect(),
        }
    }
}

impl FactorizedPrior {
    /// Checks shapes and values and precomputes the positive weights.
    ///
    /// # Errors
    /// [`EntropyError::InvalidPrior`] on a shape mismatch, a non-finite value, or quantiles that
    /// are not ordered.
    pub fn new(params: &PriorParams) -> Result<Self> {
        let bad = |m: String| Err(EntropyError::InvalidPrior(m));
        let c = params.channels;
        if c == 0 {
            return bad("zero channels".into());
        }
        let mut widths = vec![1];
        widths.extend_from_slice(&params.filters);
        widths.push(1);
        let k_layers = widths.len() - 1;
        if params.matrices.len() != k_layers
            || params.biases.len() != k_layers
            || params.factors.len() != k_layers - 1
        {
            return bad(format!(
                "expected {k_layers} matrices and biases and {} factors",
                k_layers - 1
            ));
        }
        let all_finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        let mut weights = Vec::with_capacity(k_layers);
        let mut biases = Vec::with_capacity(k_layers);
        let mut gates = Vec::with_capacity(k_layers);
        for k in 0..k_layers {
            let (fin, fout) = (widths[k], widths[k + 1]);
            if params.matrices[k].len() != c * fout * fin || params.biases[k].len() != c * fout {
                return bad(format!("layer {k} has the wrong shape"));
            }
            if !all_finite(&params.matrices[k]) || !all_finite(&params.biases[k]) {
                return bad(format!("layer {k} holds a non-finite value"));
            }
            weights.push(
                params.matrices[k]
                    .iter()
                    .map(|&m| softplus(f64::from(m)))
                    .collect(),
            );
            biases.push(params.biases[k].iter().map(|&b| f64::from(b)).collect());
            if k + 1 < k_layers {
                if params.factors[k].len() != c * fout || !all_finite(&params.factors[k]) {
                    return bad(format!(
                        "factor {k} has the wrong shape or a non-finite value"
                    ));
                }
                gates.push(
                    params.factors[k]
                        .iter()
                        .map(|&a| libm::tanh(f64::from(a)))
                        .collect(),
                );
            }
        }
        if params.quantiles.len() != 3 * c || !all_finite(&params.quantiles) {
            return bad("quantiles must be (channels, 1, 3) and finite".into());
        }
        let quantiles: Vec<[f64; 3]> = params
            .quantiles
            .chunks_exact(3)
            .map(|q| [f64::from(q[0]), f64::from(q[1]), f64::from(q[2])])
            .collect();
        if quantiles.iter().any(|q| !(q[0] <= q[1] && q[1] <= q[2])) {
            return bad("quantiles must be ordered lower ≤ median ≤ upper".into());
        }
        Ok(Self {
            channels: c,
            widths,
            weights,
            biases,
            gates,
            quantiles,
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The median of each channel (where the CDF is ½): values are coded as `round(y − median)`.
    pub fn medians(&self) -> Vec<f32> {
        (0..self.channels)
            .map(|c| self.density_quantiles(c)[1] as f32)
            .collect()
    }

    /// The value where the cumulative logit of `channel` equals `target`, by bisection (the
    /// cumulative logit is monotone). Deterministic: `libm` arithmetic, fixed iteration counts.
    fn solve(&self, channel: usize, target: f64) -> f64 {
        let f = |x: f64| self.logits_cumulative(channel, x) - target;
        let (mut lo, mut hi) = (-1.0f64, 1.0f64);
        for _ in 0..64 {
            if f(lo) <= 0.0 {
                break;
            }
            lo *= 2.0;
        }
        for _ in 0..64 {
            if f(hi) >= 0.0 {
                break;
            }
            hi *= 2.0;
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if f(mid) < 0.0 { lo = mid } else { hi = mid }
        }
        0.5 * (lo + hi)
    }

    /// Lower tail, median and upper tail of `channel` found from the density itself (tails at
    /// [`DEFAULT_TAIL_MASS`] / 2 each), rather than from the trained `quantiles` parameters, which
    /// converge far more slowly than the density they describe.
    pub fn density_quantiles(&self, channel: usize) -> [f64; 3] {
        let t = libm::log(2.0 / DEFAULT_TAIL_MASS - 1.0);
        [
            self.solve(channel, -t),
            self.solve(channel, 0.0),
            self.solve(channel, t),
        ]
    }

    /// The cumulative logit of `x` in `channel` (`sigmoid` of it is the CDF).
    ///
    /// # Panics
    /// If `channel >= self.channels()`.
    pub fn logits_cumulative(&self, channel: usize, x: f64) -> f64 {
        assert!(channel < self.channels, "channel out of range");
        let mut v = vec![x];
        let mut next = Vec::with_capacity(8);
        for k in 0..self.weights.len() {
            let (fin, fout) = (self.widths[k], self.widths[k + 1]);
            let w = &self.weights[k][channel * fout * fin..(channel + 1) * fout * fin];
            let b = &self.biases[k][channel * fout..(channel + 1) * fout];
            next.clear();
            for o in 0..fout {
                let dot: f64 = (0..fin).map(|i| w[o * fin + i] * v[i]).sum();
                next.push(dot + b[o]);
            }
            if k < self.gates.len() {
                let a = &self.gates[k][channel * fout..(channel + 1) * fout];
                for (n, &g) in next.iter_mut().zip(a) {
                    *n += g * libm::tanh(*n);
                }
            }
            std::mem::swap(&mut v, &mut next);
        }
        v[0]
    }

    /// Probability mass of `[x − ½, x + ½]` in `channel`, bounded below by [`LIKELIHOOD_BOUND`].
    pub fn likelihood(&self, channel: usize, x: f64) -> f64 {
        let lower = self.logits_cumulative(channel, x - 0.5);
        let upper = self.logits_cumulative(channel, x + 0.5);
        // Flip to the side where the sigmoids are small, for accuracy (CompressAI does the same).
        let sign = -(lower + upper).signum();
        let sign = if sign == 0.0 { -1.0 } else { sign };
        let p = (sigmoid(sign * upper) - sigmoid(sign * lower)).abs();
        p.max(LIKELIHOOD_BOUND)
    }

    /// The integer table of `channel` at `precision`, over offsets from the median within the
    /// channel's tail range ([`FactorizedPrior::density_quantiles`]: `ceil(median − lower)` below,
    /// `ceil(upper − median)` above); the mass outside goes to the escape symbol.
    ///
    /// # Errors
    /// [`EntropyError::InvalidTable`] when the quantile range spans more than
    /// [`MAX_SYMBOLS`] values (a prior that was not trained to convergence).
    pub fn table(&self, channel: usize, precision: u32) -> Result<Table> {
        self.table_with_step(channel, 1.0, precision)
    }

    /// The table of `channel` when latents are quantized with step `step` around the median:
    /// symbol `k` stands for the interval `median + [(k − ½)·step, (k + ½)·step)`. A step of 1 is
    /// the prior's own quantization; other steps trade rate for distortion with the same model.
    ///
    /// # Errors
    /// As [`FactorizedPrior::table`], and [`EntropyError::InvalidPrior`] for a step that is not
    /// finite and positive.
    pub fn table_with_step(&self, channel: usize, step: f64, precision: u32) -> Result<Table> {
        if !(step.is_finite() && step > 0.0) {
            return Err(EntropyError::InvalidPrior(format!("step {step}")));
        }
        let [lo, median, hi] = self.density_quantiles(channel);
        let minima = libm::ceil((median - lo) / step).max(0.0);
        let maxima = libm::ceil((hi - median) / step).max(0.0);
        let n = minima + maxima + 1.0;
        if n > MAX_SYMBOLS as f64 {
            return Err(EntropyError::InvalidTable(format!(
                "channel {channel} spans {n} symbols at step {step}, more than {MAX_SYMBOLS}"
            )));
        }
        let (minima, n) = (minima as i32, n as usize);
        let cdf = |k: f64| sigmoid(self.logits_cumulative(channel, median + k * step));
        let probs: Vec<f64> = (0..n)
            .map(|i| {
                let k = f64::from(i as i32 - minima);
                (cdf(k + 0.5) - cdf(k - 0.5)).max(LIKELIHOOD_BOUND)
            })
            .collect();
        let below = cdf(-f64::from(minima) - 0.5);
        let above = 1.0 - cdf(f64::from(n as i32 - minima - 1) + 0.5);
        let escape = (below + above).max(LIKELIHOOD_BOUND);
        Table::from_probabilities(-minima, &probs, escape, precision)
    }

    /// The tables of all channels.
    ///
    /// # Errors
    /// As [`FactorizedPrior::table`].
    pub fn tables(&self, precision: u32) -> Result<Vec<Table>> {
        (0..self.channels)
            .map(|c| self.table(c, precision))
            .collect()
    }
}

fn softplus(x: f64) -> f64 {
    if x > 30.0 {
        x
    } else {
        libm::log1p(libm::exp(x))
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::exp(-x))
    } else {
        let e = libm::exp(x);
        e / (1.0 + e)
    }
}

/// A tiny deterministic generator for parameter initialization (not for cryptography).
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prior() -> FactorizedPrior {
        FactorizedPrior::new(&PriorParams::compressai_init(4, &DEFAULT_FILTERS, 10.0, 7)).unwrap()
    }

    #[test]
    fn cdf_is_monotone_and_mass_sums_to_one() {
        let p = prior();
        for c in 0..4 {
            let mut last = f64::NEG_INFINITY;
            for i in -200..200 {
                let l = p.logits_cumulative(c, f64::from(i) * 0.25);
                assert!(l >= last, "CDF must be non-decreasing");
                last = l;
            }
            let mass: f64 = (-400..=400).map(|k| p.likelihood(c, f64::from(k))).sum();
            assert!((mass - 1.0).abs() < 1e-3, "mass {mass}");
        }
    }

    #[test]
    fn tables_are_deterministic_and_valid() {
        let a = prior().tables(15).unwrap();
        let b = prior().tables(15).unwrap();
        assert_eq!(a, b);
        // The range covers the density's tails: the escape symbol gets only its minimum count.
        for t in &a {
            assert!(t.min_symbol() < 0 && t.n_symbols() > 10);
            assert_eq!(*t.freqs().last().unwrap(), 1);
        }
        // Steps trade rate: a coarser step has fewer symbols.
        let p = prior();
        assert!(p.table_with_step(0, 4.0, 15).unwrap().n_symbols() < a[0].n_symbols());
        assert!(p.table_with_step(0, 0.0, 15).is_err());
    }

    #[test]
    fn invalid_params_are_rejected() {
        let mut p = PriorParams::compressai_init(2, &DEFAULT_FILTERS, 10.0, 1);
        p.matrices[1][0] = f32::NAN;
        assert!(FactorizedPrior::new(&p).is_err());
        let mut p = PriorParams::compressai_init(2, &DEFAULT_FILTERS, 10.0, 1);
        p.biases.pop();
        assert!(FactorizedPrior::new(&p).is_err());
        let mut p = PriorParams::compressai_init(2, &DEFAULT_FILTERS, 10.0, 1);
        p.quantiles[0] = 5.0;
        assert!(FactorizedPrior::new(&p).is_err());
        // A density far wider than a table can hold is refused, not truncated silently.
        let p = PriorParams::compressai_init(1, &DEFAULT_FILTERS, 1e5, 1);
        assert!(FactorizedPrior::new(&p).unwrap().table(0, 16).is_err());
    }
}
