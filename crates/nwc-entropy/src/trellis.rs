//! The entropy-constrained trellis search (ECTCQ): the Viterbi path of least
//! `distortion + λ·bits` through the trellis of a [`ContextModel`], and the decoder's walk back
//! from union indices to grid positions.
//!
//! The reproduction grid is `j` (in fine steps) for integers `j`, split into the subsets
//! `D_r = {j ≡ r mod 4}`; a state of context `u` draws from the union codebook `D_u ∪ D_{u+2}`,
//! and a value is sent as its union index `k` (`j = 2k + u`), whose parity picks the branch.
//! It lives beside the coder because the search prices symbols with the coder's own tables and
//! follows the same state machine the coder's contexts do.

use crate::context::ContextModel;
use crate::rate::RateModel;
#[cfg(test)]
use crate::table::Table;

/// The Viterbi search of one chunk: `x` in units of the fine step δ, `lambda` in squared steps
/// per bit. Writes the union index of each value to `out` (which must be as long as `x`).
///
/// `model` must be a trellis: contexts 0 and 1 (the union codebooks) and a successor for each
/// parity, as [`ContextModel::tcq8`] and [`ContextModel::shift_register`] are.
pub fn viterbi_chunk(
    model: &ContextModel,
    x: &[f32],
    lambda: f32,
    rate: &RateModel,
    out: &mut [i32],
) {
    if let Some(t) = Trellis8::of(model) {
        return t.viterbi(x, lambda, rate, out);
    }
    viterbi_reference(model, x, lambda, rate, out);
}

/// The search as first written, for any trellis: every state tries both parities and both
/// grid points around the value. [`viterbi_chunk`] runs the unrolled 8-state search instead on 8-state
/// trellises; both return the same path (the test `fast_search_is_the_reference_search`).
pub fn viterbi_reference(
    model: &ContextModel,
    x: &[f32],
    lambda: f32,
    rate: &RateModel,
    out: &mut [i32],
) {
    match model.n_states() {
        0..=8 => viterbi::<8>(model, x, lambda, rate, out),
        9..=16 => viterbi::<16>(model, x, lambda, rate, out),
        17..=32 => viterbi::<32>(model, x, lambda, rate, out),
        33..=64 => viterbi::<64>(model, x, lambda, rate, out),
        65..=128 => viterbi::<128>(model, x, lambda, rate, out),
        _ => viterbi::<256>(model, x, lambda, rate, out),
    }
}

/// [`viterbi_chunk`] with state arrays of `S ≥ n_states` entries.
fn viterbi<const S: usize>(
    model: &ContextModel,
    x: &[f32],
    lambda: f32,
    rate: &RateModel,
    out: &mut [i32],
) {
    let n_states = model.n_states();
    let n = x.len().min(out.len());
    let mut cost = [f32::INFINITY; S];
    cost[0] = 0.0;
    // back[t * S + state] = (previous state, union index)
    let mut back = vec![(0u8, 0i32); n * S];
    for (t, &v) in x.iter().take(n).enumerate() {
        let mut next = [f32::INFINITY; S];
        let mut from = [(0u8, 0i32); S];
        for (qi, &c0) in cost.iter().enumerate().take(n_states) {
            let q = qi as u8;
            if !c0.is_finite() {
                continue;
            }
            let u = model.context(q) & 1;
            for p in 0..2u8 {
                // Fine indices j ≡ r (mod 4) bracketing v.
                let r = (2 * i32::from(p) + u as i32) as f32;
                let lo = r + 4.0 * ((v - r) / 4.0).floor();
                for j in [lo, lo + 4.0] {
                    let k = ((j - u as f32) / 2.0) as i32;
                    let d = (v - j) * (v - j);
                    let c = c0 + d + lambda * rate.cost(u, k);
                    let ns = usize::from(model.next_by_parity(q, p));
                    if c < next[ns] {
                        next[ns] = c;
                        from[ns] = (q, k);
                    }
                }
            }
        }
        cost = next;
        back[t * S..(t + 1) * S].copy_from_slice(&from);
    }
    // The cheapest end state (ties: the lowest state), then back along the path.
    let mut q = 0usize;
    for s in 1..n_states {
        if cost[s] < cost[q] {
            q = s;
        }
    }
    for t in (0..n).rev() {
        let (prev, k) = back[t * S + q];
        out[t] = k;
        q = usize::from(prev);
    }
}

/// `floor(x)` for finite `x`, without a library call on targets without a rounding
/// instruction: exact for every `|x| < 2^31` (above 2^23 every `f32` is an integer already).
/// `-0.0` becomes `+0.0`, which no caller can tell apart (it is only ever added to a grid index).
#[inline(always)]
fn floor_fast(x: f32) -> f32 {
    let t = x as i32 as f32;
    if t > x { t - 1.0 } else { t }
}

/// Values (in fine steps) below which the search uses [`floor_small`] and [`int_small`].
pub(crate) const SMALL_LIMIT: f32 = (1u32 << 20) as f32;
/// `1.5 · 2^23`: adding it to a float of magnitude below 2^22 rounds it to an integer.
pub(crate) const ROUNDER: f32 = 12_582_912.0;

/// `floor(x)` for `|x| < 2^22`, branch-free (so four lanes vectorize): the same value as
/// [`floor_fast`] there.
#[inline(always)]
fn floor_small(x: f32) -> f32 {
    let t = (x + ROUNDER) - ROUNDER;
    t - f32::from(u8::from(t > x))
}

/// `x as i32` for an integer-valued `x` with `|x| < 2^22`, without the saturating conversion's
/// branches: the integer is the low bits of `x + 1.5 · 2^23`.
#[inline(always)]
fn int_small(x: f32) -> i32 {
    ((x + ROUNDER).to_bits() as i32).wrapping_sub(ROUNDER.to_bits() as i32)
}

/// An 8-state trellis laid out for the search: the two branches into each state, in the order
/// the reference search tries them (ascending source state, then parity), so ties break the
/// same way and the path is the same to the bit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Trellis8 {
    /// Into state `s`: `(source state, subset r = 2·parity + context of the source)`.
    pred: [[(u8, u8); 2]; 8],
    /// Whether the branches are laid out as [`ContextModel::tcq8`]'s, which
    /// [`Trellis8::search_tcq8`] unrolls.
    pub(crate) tcq8: bool,
}

/// One chunk's search as a [`pulp::WithSimd`] operation, so that it is compiled (and inlined)
/// once per instruction set.
struct Viterbi<'a> {
    trellis: &'a Trellis8,
    x: &'a [f32],
    lambda: f32,
    rate: &'a RateModel,
    out: &'a mut [i32],
}

impl pulp::WithSimd for Viterbi<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.trellis
            .viterbi_here(self.x, self.lambda, self.rate, self.out);
    }
}

/// Four lanes of `f32` (the compiler keeps them in one vector register).
type V4 = [f32; 4];

/// `(c + d) + l` lane by lane: the reference search's `c0 + d + λ·bits`.
#[inline(always)]
fn add3(c: V4, d: V4, l: V4) -> V4 {
    [
        (c[0] + d[0]) + l[0],
        (c[1] + d[1]) + l[1],
        (c[2] + d[2]) + l[2],
        (c[3] + d[3]) + l[3],
    ]
}

/// Lanes 2, 3, 0, 1.
#[inline(always)]
fn swap_halves(x: V4) -> V4 {
    [x[2], x[3], x[0], x[1]]
}

/// Per lane, the least of four candidates, the first on ties (strict `<`, as the reference
/// search), and which one it was.
#[inline(always)]
fn least_of_four(c: [V4; 4]) -> (V4, [u8; 4]) {
    // Select by masks, not branches: the comparisons are data (a mispredicted branch per lane
    // cost more than the whole step), and mask arithmetic vectorizes.
    let mut best = c[0];
    let mut which = [0u32; 4];
    for (i, ci) in c.iter().enumerate().skip(1) {
        for lane in 0..4 {
            let m = 0u32.wrapping_sub(u32::from(ci[lane] < best[lane]));
            best[lane] = f32::from_bits((ci[lane].to_bits() & m) | (best[lane].to_bits() & !m));
            which[lane] = (i as u32 & m) | (which[lane] & !m);
        }
    }
    (best, which.map(|w| w as u8))
}

/// Values per search kept on the stack (the trellis run of every shipped codec fits).
pub(crate) const STACK_RUN: usize = 64;

impl Trellis8 {
    /// The layout of `model`, when it has 8 states, each entered by exactly two branches.
    pub(crate) fn of(model: &ContextModel) -> Option<Self> {
        if model.n_states() != 8 {
            return None;
        }
        let mut pred = [[(0u8, 0u8); 2]; 8];
        let mut n = [0usize; 8];
        for q in 0..8u8 {
            let u = (model.context(q) & 1) as u8;
            for p in 0..2u8 {
                let s = usize::from(model.next_by_parity(q, p));
                if n[s] == 2 {
                    return None;
                }
                pred[s][n[s]] = (q, 2 * p + u);
                n[s] += 1;
            }
        }
        // The unrolled search needs exactly `tcq8`'s layout, so that is what is checked (from
        // the branches, without building a model per chunk).
        let tcq8 = (0..4u8).all(|m| {
            let swap = (m + 2) % 4;
            pred[usize::from(2 * m)] == [(m, m), (m + 4, swap)]
                && pred[usize::from(2 * m + 1)] == [(m, swap), (m + 4, m)]
        });
        n.iter().all(|&k| k == 2).then_some(Self { pred, tcq8 })
    }

    fn viterbi(&self, x: &[f32], lambda: f32, rate: &RateModel, out: &mut [i32]) {
        // Compiled again for AVX2 and picked at run time where the CPU has it (three-operand
        // forms, fewer register copies); the arithmetic is the same, so are the paths.
        pulp::Arch::new().dispatch(Viterbi {
            trellis: self,
            x,
            lambda,
            rate,
            out,
        });
    }

    #[inline(always)]
    fn viterbi_here(&self, x: &[f32], lambda: f32, rate: &RateModel, out: &mut [i32]) {
        let n = x.len().min(out.len());
        if n <= STACK_RUN {
            let mut sel = [[0u8; 8]; STACK_RUN];
            let mut ks = [[0i32; 8]; STACK_RUN];
            self.search(
                &x[..n],
                lambda,
                rate,
                &mut sel[..n],
                &mut ks[..n],
                &mut out[..n],
            );
        } else {
            let mut sel = vec![[0u8; 8]; n];
            let mut ks = vec![[0i32; 8]; n];
            self.search(&x[..n], lambda, rate, &mut sel, &mut ks, &mut out[..n]);
        }
    }

    /// The search with caller-provided back pointers: `sel[t][s]` is the branch (`2·i + w`:
    /// predecessor `i`, grid point `w`) into state `s` at step `t`, `ks[t][2·r + w]` the union
    /// index of grid point `w` of subset `r`.
    #[inline(always)]
    fn search(
        &self,
        x: &[f32],
        lambda: f32,
        rate: &RateModel,
        sel: &mut [[u8; 8]],
        ks: &mut [[i32; 8]],
        out: &mut [i32],
    ) {
        let rate = rate.priced(lambda);
        // Values well inside ±2^20 steps (every chunk a codec makes in practice) convert between
        // floats and integers with exact, branch-free arithmetic; the rest as before.
        let small = x.iter().all(|v| v.abs() < SMALL_LIMIT);
        let cost = match (self.tcq8, small) {
            (true, true) => Self::search_tcq8::<true>(x, lambda, rate, sel, ks),
            (true, false) => Self::search_tcq8::<false>(x, lambda, rate, sel, ks),
            (false, true) => self.search_any::<true>(x, lambda, rate, sel, ks),
            (false, false) => self.search_any::<false>(x, lambda, rate, sel, ks),
        };
        // The cheapest end state (ties: the lowest state), then back along the path.
        let mut q = 0usize;
        for s in 1..8 {
            if cost[s] < cost[q] {
                q = s;
            }
        }
        for t in (0..out.len()).rev() {
            let b = usize::from(sel[t][q]);
            let (prev, r) = self.pred[q][b >> 1];
            out[t] = ks[t][2 * usize::from(r) + (b & 1)];
            q = usize::from(prev);
        }
    }

    /// Distortion and λ·bits of the two grid points (`w` = 0, 1) of each subset `r` for value
    /// `v`, lanes by `r`: the same numbers, computed the same way, as the reference search
    /// computes per state (λ·bits is +0 without a `rate`). Stores the union indices in `ks`
    /// (`2·r + w`).
    #[inline(always)]
    fn grid_points<const SMALL: bool>(
        v: f32,
        lambda: f32,
        rate: Option<&RateModel>,
        ks: &mut [i32; 8],
    ) -> [V4; 4] {
        const R: V4 = [0.0, 1.0, 2.0, 3.0];
        const U: V4 = [0.0, 1.0, 0.0, 1.0];
        // Lane by lane (the compiler vectorizes these fixed-length loops).
        let mut g = [[0f32; 4]; 4];
        let mut k = [[0i32; 4]; 2];
        for r in 0..4 {
            let y = (v - R[r]) / 4.0;
            let lo = R[r] + 4.0 * if SMALL { floor_small(y) } else { floor_fast(y) };
            let hi = lo + 4.0;
            let (a, b) = ((lo - U[r]) / 2.0, (hi - U[r]) / 2.0);
            (k[0][r], k[1][r]) = if SMALL {
                (int_small(a), int_small(b))
            } else {
                (a as i32, b as i32)
            };
            g[0][r] = (v - lo) * (v - lo);
            g[1][r] = (v - hi) * (v - hi);
        }
        for r in 0..4 {
            ks[2 * r] = k[0][r];
            ks[2 * r + 1] = k[1][r];
        }
        if let Some(rate) = rate {
            for w in 0..2 {
                for r in 0..4 {
                    g[2 + w][r] = lambda * rate.cost(r & 1, k[w][r]);
                }
            }
        }
        g
    }

    /// The search on [`ContextModel::tcq8`], four states to a vector: state `2m + b` is
    /// entered from states `m` and `m + 4`; from `m` it draws on subset `m` (`b = 0`) or
    /// `m ± 2` (`b = 1`), from `m + 4` the other way round (the test
    /// `tcq8_layout_is_the_unrolled_one` checks this against the model). Returns the final
    /// costs.
    #[inline(always)]
    fn search_tcq8<const SMALL: bool>(
        x: &[f32],
        lambda: f32,
        rate: Option<&RateModel>,
        sel: &mut [[u8; 8]],
        ks: &mut [[i32; 8]],
    ) -> [f32; 8] {
        let inf = f32::INFINITY;
        // Costs of states 0..4 and 4..8.
        let (mut lo, mut hi): (V4, V4) = ([0.0, inf, inf, inf], [inf; 4]);
        for ((&v, sel_t), ks_t) in x.iter().zip(sel.iter_mut()).zip(ks.iter_mut()) {
            let [d0, d1, l0, l1] = Self::grid_points::<SMALL>(v, lambda, rate, ks_t);
            let (sd0, sd1, sl0, sl1) = (
                swap_halves(d0),
                swap_halves(d1),
                swap_halves(l0),
                swap_halves(l1),
            );
            let (even, es) = least_of_four([
                add3(lo, d0, l0),
                add3(lo, d1, l1),
                add3(hi, sd0, sl0),
                add3(hi, sd1, sl1),
            ]);
            let (odd, os) = least_of_four([
                add3(lo, sd0, sl0),
                add3(lo, sd1, sl1),
                add3(hi, d0, l0),
                add3(hi, d1, l1),
            ]);
            *sel_t = [es[0], os[0], es[1], os[1], es[2], os[2], es[3], os[3]];
            lo = [even[0], odd[0], even[1], odd[1]];
            hi = [even[2], odd[2], even[3], odd[3]];
        }
        [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1], hi[2], hi[3]]
    }

    /// The search on any 8-state layout. Returns the final costs.
    #[inline(always)]
    fn search_any<const SMALL: bool>(
        &self,
        x: &[f32],
        lambda: f32,
        rate: Option<&RateModel>,
        sel: &mut [[u8; 8]],
        ks: &mut [[i32; 8]],
    ) -> [f32; 8] {
        let mut cost = [f32::INFINITY; 8];
        cost[0] = 0.0;
        for ((&v, sel_t), ks_t) in x.iter().zip(sel.iter_mut()).zip(ks.iter_mut()) {
            let g = Self::grid_points::<SMALL>(v, lambda, rate, ks_t);
            let mut next = [f32::INFINITY; 8];
            for s in 0..8 {
                let mut best = f32::INFINITY;
                let mut b = 0u8;
                for i in 0..2 {
                    let (q, r) = self.pred[s][i];
                    let c0 = cost[usize::from(q)];
                    for w in 0..2 {
                        let r = usize::from(r);
                        let c = c0 + g[w][r] + g[2 + w][r];
                        if c < best {
                            best = c;
                            b = (2 * i + w) as u8;
                        }
                    }
                }
                next[s] = best;
                sel_t[s] = b;
            }
            cost = next;
        }
        cost
    }
}

/// Union indices back to grid positions `j` (in steps), following the trellis through a chunk.
#[inline]
pub fn reconstruct_chunk(model: &ContextModel, symbols: &[i32], out: &mut [f32]) {
    let mut q = 0u8;
    for (&k, o) in symbols.iter().zip(out) {
        let u = (model.context(q) & 1) as i64;
        *o = (2 * i64::from(k) + u) as f32;
        q = model.next(q, k);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn gaussian(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::SplitMix64(seed);
        (0..n)
            .map(|_| {
                let (a, b) = (rng.next_f64().max(1e-300), rng.next_f64());
                ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()) as f32
            })
            .collect()
    }

    #[test]
    fn viterbi_path_reconstructs_within_the_union_grid() {
        let m = ContextModel::tcq8();
        let x = gaussian(64, 1);
        let scaled: Vec<f32> = x.iter().map(|v| v * 8.0).collect();
        let mut k = vec![0; 64];
        viterbi_chunk(&m, &scaled, 0.0, &RateModel::flat(), &mut k);
        let mut j = vec![0.0; 64];
        reconstruct_chunk(&m, &k, &mut j);
        // Each value lies within 2 fine steps of its reconstruction (the union grid has step 2),
        // and the trellis does better than the union grid alone on average.
        let mse: f32 = scaled
            .iter()
            .zip(&j)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            / 64.0;
        assert!(scaled.iter().zip(&j).all(|(a, b)| (a - b).abs() <= 2.0));
        assert!(mse < 4.0 / 12.0, "mse {mse}");
    }

    #[test]
    fn fast_search_is_the_reference_search() {
        // Same path to the bit: λ = 0 and λ > 0 with fitted tables (escapes included), runs of
        // every length up to past the stack buffer, values near ties (integers, half-integers),
        // large values and negative zero.
        let m = ContextModel::tcq8();
        let counts: Vec<u64> = (0..9).map(|i| 1 + (i * 37 % 11) as u64).collect();
        let t0 = Table::from_counts(-4, &counts, 0, 12).unwrap();
        let t1 = Table::from_counts(-3, &counts[..7], 0, 12).unwrap();
        let rates = [RateModel::flat(), RateModel::from_tables([&t0, &t1])];
        let mut x: Vec<f32> = gaussian(4096, 3).iter().map(|v| v * 6.0).collect();
        for (i, v) in x.iter_mut().enumerate().step_by(7) {
            *v = (*v * 2.0).round() / 2.0;
            if i % 49 == 0 {
                *v = -0.0;
            }
            if i % 91 == 0 {
                *v *= 1e6;
            }
        }
        for len in [1usize, 2, 3, 5, 16, 63, 64, 65, 200] {
            for lambda in [0.0f32, 0.15, 3.0] {
                for rate in &rates {
                    for c in x.chunks(len) {
                        let (mut a, mut b) = (vec![0; c.len()], vec![0; c.len()]);
                        viterbi_chunk(&m, c, lambda, rate, &mut a);
                        viterbi_reference(&m, c, lambda, rate, &mut b);
                        assert_eq!(a, b, "len {len}, λ {lambda}");
                    }
                }
            }
        }
        // Other 8-state masks take the fast path too and agree.
        for mask in [0b010u8, 0b100, 0b110] {
            let m = ContextModel::shift_register(3, mask).unwrap();
            for c in x.chunks(64).take(16) {
                let (mut a, mut b) = (vec![0; 64], vec![0; 64]);
                viterbi_chunk(&m, c, 0.15, &rates[1], &mut a);
                viterbi_reference(&m, c, 0.15, &rates[1], &mut b);
                assert_eq!(a, b, "mask {mask:#b}");
            }
        }
    }

    #[test]
    fn tcq8_layout_is_the_unrolled_one() {
        let t = Trellis8::of(&ContextModel::tcq8()).unwrap();
        assert!(t.tcq8);
        for m in 0..4u8 {
            let swap = (m + 2) % 4;
            assert_eq!(t.pred[usize::from(2 * m)], [(m, m), (m + 4, swap)]);
            assert_eq!(t.pred[usize::from(2 * m + 1)], [(m, swap), (m + 4, m)]);
        }
        assert!(
            !Trellis8::of(&ContextModel::shift_register(3, 0b010).unwrap())
                .unwrap()
                .tcq8
        );
    }

    #[test]
    fn floor_fast_is_floor() {
        for x in [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            1.5,
            -1.5,
            2.999_999,
            -2.999_999,
            8_388_607.5,
            -8_388_607.5,
            16_777_217.0,
            -1.3e9,
            1.3e9,
        ] {
            assert_eq!(floor_fast(x), x.floor(), "{x}");
        }
    }

    #[test]
    fn granular_gain_over_scalar_rounding() {
        // At equal fine step, TCQ's MSE on a dense source is about 0.26 step² against 1/3 for
        // rounding to the union grid: the trellis gain the codec exists for.
        let m = ContextModel::tcq8();
        let x: Vec<f32> = gaussian(16 * 4096, 2).iter().map(|v| v * 20.0).collect();
        let mut k = vec![0; x.len()];
        let mut j = vec![0.0; x.len()];
        for (c, (kc, jc)) in x.chunks(256).zip(k.chunks_mut(256).zip(j.chunks_mut(256))) {
            viterbi_chunk(&m, c, 0.0, &RateModel::flat(), kc);
            reconstruct_chunk(&m, kc, jc);
        }
        let mse = x
            .iter()
            .zip(&j)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            / x.len() as f64;
        let gain_db = 10.0 * ((4.0 / 12.0) / mse).log10();
        assert!(gain_db > 0.9, "granular gain {gain_db:.3} dB");
    }
}

/// Granular gain of every shift-register trellis mask at 2^3..2^8 states, on a dense Gaussian
/// source at λ = 0 (`cargo test -p nwc-entropy --release -- --ignored --nocapture trellis_masks`).
#[cfg(test)]
mod search {
    use super::*;

    #[test]
    #[ignore = "a measurement, not a check: prints the best mask per trellis size"]
    fn trellis_masks() {
        let mut rng = crate::SplitMix64(2);
        let x: Vec<f32> = (0..64 * 2048)
            .map(|_| {
                let (a, b) = (rng.next_f64().max(1e-300), rng.next_f64());
                ((-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos() * 20.0) as f32
            })
            .collect();
        for bits in 3..=8u32 {
            let mut best = (f64::INFINITY, 0u8);
            let masks: Vec<u8> = (0..(1u32 << bits))
                .map(|m| m as u8)
                .filter(|m| m & 1 == 0)
                .collect();
            for &mask in &masks {
                let m = ContextModel::shift_register(bits, mask).unwrap();
                let (mut k, mut j) = (vec![0; 64], vec![0.0; 64]);
                let mut e = 0.0f64;
                for c in x.chunks(64).take(if bits > 6 { 512 } else { 2048 }) {
                    viterbi_chunk(&m, c, 0.0, &RateModel::flat(), &mut k);
                    reconstruct_chunk(&m, &k, &mut j);
                    e += c
                        .iter()
                        .zip(&j)
                        .map(|(a, b)| f64::from(a - b).powi(2))
                        .sum::<f64>();
                }
                let n = x.chunks(64).take(if bits > 6 { 512 } else { 2048 }).count() * 64;
                let mse = e / n as f64;
                if mse < best.0 {
                    best = (mse, mask);
                }
            }
            println!(
                "{:>3} states: best mask {:#010b}, gain {:.3} dB over the union grid",
                1 << bits,
                best.1,
                10.0 * ((4.0 / 12.0) / best.0).log10()
            );
        }
    }
}
