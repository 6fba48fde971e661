//! The trellis refiner's forward pass as plain `f32` matrix products on the CPU: the decoder's
//! hot path on burn's CPU backend, without a tensor per operation.
//!
//! Same network, same order of operations as [`Refiner::forward`] (Linear → LayerNorm → ReLU →
//! residual → quality embedding, twice, then the output layer); the matrix products run on
//! `matrixmultiply` through `ndarray`, whose kernels sum every output in an order that depends
//! only on the inner dimension, so the result of a chunk depends neither on the batch it is in
//! nor on the thread count. It agrees with burn's forward pass to float rounding (the test
//! `cpu_refiner_is_the_burn_refiner`).

use burn::tensor::backend::Backend;
use ndarray::{Array2, ArrayView2, ArrayViewMut2, linalg::general_mat_mul};
use rayon::prelude::*;

use crate::model::{LOG_STEP_SCALE, Refiner, Transform};

/// Chunks per matrix product: one batch's activations (`BATCH × width` floats) stay in a
/// core's L2 cache.
const BATCH: usize = 256;

/// `x · W + b`, `W` as `[d_in, d_out]` (burn's `Linear` layout).
#[derive(Debug, Clone)]
struct Dense {
    w: Array2<f32>,
    b: Vec<f32>,
}

impl Dense {
    fn of<B: Backend>(l: &burn::nn::Linear<B>) -> Self {
        let w = l.weight.val();
        let [d_in, d_out] = w.dims();
        let w = floats(w.into_data());
        let b = l
            .bias
            .as_ref()
            .map_or_else(|| vec![0.0; d_out], |b| floats(b.val().into_data()));
        Self {
            w: Array2::from_shape_vec((d_in, d_out), w).expect("weight shape"),
            b,
        }
    }

    /// `out = x · W + b`.
    fn apply(&self, x: ArrayView2<'_, f32>, mut out: ArrayViewMut2<'_, f32>) {
        for mut row in out.rows_mut() {
            row.iter_mut().zip(&self.b).for_each(|(o, &b)| *o = b);
        }
        general_mat_mul(1.0, &x, &self.w, 1.0, &mut out);
    }
}

/// `x + ReLU(LayerNorm(x · W + b))`.
#[derive(Debug, Clone)]
struct Block {
    dense: Dense,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    epsilon: f32,
}

fn floats(d: burn::tensor::TensorData) -> Vec<f32> {
    d.convert::<f32>().to_vec::<f32>().expect("f32 data")
}

/// The sum of `f` over `x` in eight lanes (vectorizable; the order is fixed by the row length
/// alone).
#[inline(always)]
fn sum8(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 8];
    for c in x.chunks_exact(8) {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>()
        + x.chunks_exact(8)
            .remainder()
            .iter()
            .map(|&v| f(v))
            .sum::<f32>()
}

/// The refiner's weights as plain arrays.
#[derive(Debug, Clone)]
pub(crate) struct CpuRefiner {
    chunk_len: usize,
    width: usize,
    input: Dense,
    blocks: Vec<Block>,
    /// `[levels, width]`.
    quality: Vec<f32>,
    output: Dense,
}

impl CpuRefiner {
    /// The weights of `r` (from any backend).
    pub(crate) fn of<B: Backend>(r: &Refiner<B>) -> Self {
        let t: &Transform<B> = &r.g_s;
        let input = Dense::of(&t.input);
        let width = input.b.len();
        let output = Dense::of(&t.output);
        Self {
            chunk_len: output.b.len(),
            width,
            input,
            blocks: t
                .blocks
                .iter()
                .map(|b| Block {
                    dense: Dense::of(&b.linear),
                    gamma: floats(b.norm.gamma.val().into_data()),
                    beta: b
                        .norm
                        .beta
                        .as_ref()
                        .map_or_else(|| vec![0.0; width], |p| floats(p.val().into_data())),
                    // LayerNormConfig's default, which `ResBlock` uses (the field is private).
                    epsilon: 1e-5,
                })
                .collect(),
            quality: floats(t.quality.weight.val().into_data()),
            output,
        }
    }

    /// Refined positions (in steps) of `n` chunks: grid positions `j` (`n × chunk_len`), each
    /// chunk's step and quality level. Batches run in parallel on the rayon pool.
    pub(crate) fn forward(&self, j: &[f32], steps: &[f32], levels: &[u8]) -> Vec<f32> {
        let l = self.chunk_len;
        let mut out = vec![0f32; j.len()];
        out.par_chunks_mut(BATCH * l)
            .zip(j.par_chunks(BATCH * l))
            .zip(steps.par_chunks(BATCH).zip(levels.par_chunks(BATCH)))
            .for_each(|((o, j), (s, lv))| self.batch(j, s, lv, o));
        out
    }

    fn batch(&self, j: &[f32], steps: &[f32], levels: &[u8], out: &mut [f32]) {
        let (l, w, n) = (self.chunk_len, self.width, steps.len());
        let log_scale = LOG_STEP_SCALE / std::f32::consts::LN_2;
        // Features: j·step, then log(step) scaled (as `Refiner::forward` builds them).
        let mut feat = Array2::<f32>::zeros((n, l + 1));
        for ((mut row, jc), &s) in feat
            .rows_mut()
            .into_iter()
            .zip(j.chunks_exact(l))
            .zip(steps)
        {
            for (f, &v) in row.iter_mut().zip(jc) {
                *f = v * s;
            }
            row[l] = s.ln() * log_scale;
        }
        let mut h = Array2::<f32>::zeros((n, w));
        self.input.apply(feat.view(), h.view_mut());
        let mut t = Array2::<f32>::zeros((n, w));
        let n_levels = self.quality.len() / w.max(1);
        for b in &self.blocks {
            b.dense.apply(h.view(), t.view_mut());
            let (hs, ts) = (
                h.as_slice_mut().expect("row-major"),
                t.as_slice().expect("row-major"),
            );
            for ((hr, tr), &lv) in hs.chunks_exact_mut(w).zip(ts.chunks_exact(w)).zip(levels) {
                let mean = sum8(tr, |x| x) / w as f32;
                let var = sum8(tr, |x| (x - mean) * (x - mean)) / w as f32;
                let inv = 1.0 / (var + b.epsilon).sqrt();
                let e = &self.quality[usize::from(lv).min(n_levels - 1) * w..][..w];
                for ((((h, &x), &g), &be), &e) in
                    hr.iter_mut().zip(tr).zip(&b.gamma).zip(&b.beta).zip(e)
                {
                    let norm = (x - mean) * inv * g + be;
                    *h = (*h + norm.max(0.0)) * e;
                }
            }
        }
        let mut y = Array2::<f32>::zeros((n, l));
        self.output.apply(h.view(), y.view_mut());
        for ((o, &c), &jv) in out.iter_mut().zip(y.iter()).zip(j) {
            *o = jv + c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::{Int, Tensor, TensorData};

    /// The shipped refiner: the plain `f32` pass agrees with burn's to float rounding on grid
    /// positions at every level and at steps from 2 to 8 bits, in batches of any size, and the
    /// result of a chunk does not depend on the batch it is in.
    #[test]
    fn cpu_refiner_is_the_burn_refiner() {
        let c = crate::Checkpoint::from_bytes(crate::DEFAULT_CHECKPOINT).unwrap();
        let device = Default::default();
        let r = c.refiner::<NdArray>(&device).unwrap();
        let cpu = CpuRefiner::of(&r);
        let (n, l) = (BATCH + 77, cpu.chunk_len);
        let mut rng = nwc_entropy::SplitMix64(5);
        let j: Vec<f32> = (0..n * l)
            .map(|_| (rng.next_u64() % 41) as f32 - 20.0)
            .collect();
        let steps: Vec<f32> = (0..n)
            .map(|i| nwc_entropy::tcq_step_for_bits(2.0 + (i % 7) as f32))
            .collect();
        let levels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
        let burn_out: Vec<f32> = r
            .forward(
                Tensor::<NdArray, 2>::from_data(TensorData::new(j.clone(), [n, l]), &device),
                Tensor::<NdArray, 1>::from_data(TensorData::new(steps.clone(), [n]), &device),
                Tensor::<NdArray, 1, Int>::from_data(
                    TensorData::new(levels.iter().map(|&v| i64::from(v)).collect(), [n]),
                    &device,
                ),
            )
            .into_data()
            .to_vec()
            .unwrap();
        let ours = cpu.forward(&j, &steps, &levels);
        let worst = ours
            .iter()
            .zip(&burn_out)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "largest relative difference {worst}");
        // The network moves values (a zero network would make this test vacuous).
        assert!(ours.iter().zip(&j).any(|(a, b)| (a - b).abs() > 1e-3));
        // A chunk's result is the same alone as in a batch.
        let one = cpu.forward(&j[l * 300..l * 301], &steps[300..301], &levels[300..301]);
        assert_eq!(one, ours[l * 300..l * 301]);
    }
}

#[cfg(test)]
mod timing {
    use super::*;

    #[test]
    #[ignore = "a measurement"]
    fn refiner_speed() {
        let c = crate::Checkpoint::from_bytes(crate::DEFAULT_CHECKPOINT).unwrap();
        let r = c
            .refiner::<burn::backend::NdArray>(&Default::default())
            .unwrap();
        let cpu = CpuRefiner::of(&r);
        let n = 1 << 17;
        let j = vec![1.0f32; n * 16];
        let s = vec![0.1f32; n];
        let lv = vec![0u8; n];
        for _ in 0..3 {
            let t = std::time::Instant::now();
            std::hint::black_box(cpu.forward(&j, &s, &lv));
            let dt = t.elapsed().as_secs_f64();
            println!("{:.1} M params/s", (n * 16) as f64 / dt / 1e6);
        }
    }
}
