//! [`viterbi_chunks`]: the trellis search of many chunks at once, one chunk per vector lane.

use crate::context::ContextModel;
use crate::rate::RateModel;
use crate::trellis::viterbi_chunk;

/// Chunks searched side by side by [`viterbi_chunks`], one per vector lane.
const LANES: usize = 8;

/// The Viterbi search of consecutive chunks of `chunk_len` values (the last may be shorter)
/// that share one rate model: the same union indices as [`viterbi_chunk`] on each chunk.
///
/// On [`ContextModel::tcq8`], with AVX2, it searches eight chunks at a time, one per vector
/// lane: the eight searches are independent, so every instruction does eight chunks' work,
/// where one chunk's search alone is a chain of dependent steps four states wide.
pub fn viterbi_chunks(
    model: &ContextModel,
    x: &[f32],
    chunk_len: usize,
    lambda: f32,
    rate: &RateModel,
    out: &mut [i32],
) {
    let n = x.len().min(out.len());
    let (x, out) = (&x[..n], &mut out[..n]);
    if chunk_len == 0 {
        return;
    }
    let done = simd::search(model, x, chunk_len, lambda, rate, out);
    for (c, o) in x[done..]
        .chunks(chunk_len)
        .zip(out[done..].chunks_mut(chunk_len))
    {
        viterbi_chunk(model, c, lambda, rate, o);
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use crate::context::ContextModel;
    use crate::rate::RateModel;

    /// No lane search on this architecture: every chunk is searched alone.
    pub(super) fn search(
        _: &ContextModel,
        _: &[f32],
        _: usize,
        _: f32,
        _: &RateModel,
        _: &mut [i32],
    ) -> usize {
        0
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use crate::context::ContextModel;
    use crate::lanes::LANES;
    use crate::rate::RateModel;
    use crate::trellis::{ROUNDER, SMALL_LIMIT, STACK_RUN, Trellis8, viterbi_chunk};
    use pulp::x86::V3;
    use pulp::{cast, f32x8, i32x8, u32x8};

    /// Searches whole blocks of [`LANES`] chunks side by side where it can (`tcq8`, AVX2,
    /// runs of at most [`STACK_RUN`]); returns how many leading values it has searched.
    pub(super) fn search(
        model: &ContextModel,
        x: &[f32],
        chunk_len: usize,
        lambda: f32,
        rate: &RateModel,
        out: &mut [i32],
    ) -> usize {
        let Some(simd) = V3::try_new() else {
            return 0;
        };
        if chunk_len > STACK_RUN
            || !Trellis8::of(model).is_some_and(|t| t.tcq8)
            || !rate.padded_in_range()
        {
            return 0;
        }
        let rate_on = rate.priced(lambda);
        let block = LANES * chunk_len;
        let mut done = 0;
        for (xb, ob) in x.chunks_exact(block).zip(out.chunks_exact_mut(block)) {
            // Like the one-chunk search, values far out (or NaN) take its exact conversions.
            if xb.iter().all(|v| v.abs() < SMALL_LIMIT) {
                pulp::Simd::vectorize(
                    simd,
                    Block {
                        simd,
                        x: xb,
                        n: chunk_len,
                        lambda,
                        rate: rate_on,
                        out: ob,
                    },
                );
            } else {
                for (c, o) in xb.chunks(chunk_len).zip(ob.chunks_mut(chunk_len)) {
                    viterbi_chunk(model, c, lambda, rate, o);
                }
            }
            done += block;
        }
        done
    }

    /// One block's search, run with AVX2 enabled.
    struct Block<'a> {
        simd: V3,
        x: &'a [f32],
        n: usize,
        lambda: f32,
        rate: Option<&'a RateModel>,
        out: &'a mut [i32],
    }

    impl pulp::WithSimd for Block<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            match self.rate {
                Some(_) => block::<true>(self),
                None => block::<false>(self),
            }
        }
    }

    /// The search of [`LANES`] chunks of [`ContextModel::tcq8`], one per lane, every value
    /// inside ±[`SMALL_LIMIT`]: per lane the same arithmetic, in the same order, as
    /// [`Trellis8::search_tcq8`] with `SMALL` (`x / 4` and `x / 2` as the exact `x · 0.25` and
    /// `x · 0.5`), so the same paths.
    #[inline(always)]
    fn block<const RATE: bool>(b: Block<'_>) {
        let Block {
            simd,
            x,
            n,
            lambda,
            rate,
            out,
        } = b;
        let splat = |v: f32| simd.splat_f32x8(v);
        // Values by step, then lane.
        let mut xt = [[0f32; LANES]; STACK_RUN];
        for (lane, c) in x.chunks_exact(n).enumerate() {
            for (t, &v) in c.iter().enumerate() {
                xt[t][lane] = v;
            }
        }
        // sel[t]: per lane, the branch into state `s` (as in `Trellis8::search`) in bits
        // 2s..2s+2; ks[t][w][r]: the union index of grid point `w` of subset `r`.
        let mut sel = [[0u32; LANES]; STACK_RUN];
        let mut ks = [[[simd.splat_i32x8(0); 4]; 2]; STACK_RUN];
        let inf = splat(f32::INFINITY);
        let mut cost = [inf; 8];
        cost[0] = splat(0.0);
        let (rounder, rounder_bits) = (splat(ROUNDER), simd.splat_i32x8(ROUNDER.to_bits() as i32));
        let (quarter, half, one, four) = (splat(0.25), splat(0.5), splat(1.0), splat(4.0));
        let lam = splat(lambda);
        let floor_small = |y: f32x8| {
            let t = simd.sub_f32x8(simd.add_f32x8(y, rounder), rounder);
            simd.select_f32x8(simd.cmp_gt_f32x8(t, y), simd.sub_f32x8(t, one), t)
        };
        let int_small =
            |y: f32x8| simd.wrapping_sub_i32x8(cast(simd.add_f32x8(y, rounder)), rounder_bits);
        let sq = |a: f32x8| simd.mul_f32x8(a, a);
        let add3 = |c: f32x8, d: f32x8, l: f32x8| {
            let s = simd.add_f32x8(c, d);
            if RATE { simd.add_f32x8(s, l) } else { s }
        };
        let least_of_four = |c: [f32x8; 4]| {
            let mut best = c[0];
            let mut which = simd.splat_u32x8(0);
            for (i, &ci) in c.iter().enumerate().skip(1) {
                let m = simd.cmp_lt_f32x8(ci, best);
                best = simd.select_f32x8(m, ci, best);
                which = simd.select_u32x8(m, simd.splat_u32x8(i as u32), which);
            }
            (best, which)
        };
        for ((v, sel_t), ks_t) in xt.iter().zip(sel.iter_mut()).zip(ks.iter_mut()).take(n) {
            let v: f32x8 = cast(*v);
            let mut d = [[inf; 4]; 2];
            let mut l = [[inf; 4]; 2];
            for r in 0..4 {
                let (rr, u) = (splat(r as f32), splat((r & 1) as f32));
                let lo = simd.add_f32x8(
                    rr,
                    simd.mul_f32x8(
                        four,
                        floor_small(simd.mul_f32x8(simd.sub_f32x8(v, rr), quarter)),
                    ),
                );
                let hi = simd.add_f32x8(lo, four);
                d[0][r] = sq(simd.sub_f32x8(v, lo));
                d[1][r] = sq(simd.sub_f32x8(v, hi));
                ks_t[0][r] = int_small(simd.mul_f32x8(simd.sub_f32x8(lo, u), half));
                ks_t[1][r] = int_small(simd.mul_f32x8(simd.sub_f32x8(hi, u), half));
            }
            if RATE && let Some(rate) = rate {
                for w in 0..2 {
                    for r in 0..4 {
                        let c = rate.cost_padded::<LANES>(r & 1, cast(ks_t[w][r]));
                        l[w][r] = simd.mul_f32x8(lam, cast(c));
                    }
                }
            }
            let mut next = [inf; 8];
            let mut word = simd.splat_u32x8(0);
            for m in 0..4 {
                let s = (m + 2) % 4;
                let (a, b) = (cost[m], cost[m + 4]);
                let (even, we) = least_of_four([
                    add3(a, d[0][m], l[0][m]),
                    add3(a, d[1][m], l[1][m]),
                    add3(b, d[0][s], l[0][s]),
                    add3(b, d[1][s], l[1][s]),
                ]);
                let (odd, wo) = least_of_four([
                    add3(a, d[0][s], l[0][s]),
                    add3(a, d[1][s], l[1][s]),
                    add3(b, d[0][m], l[0][m]),
                    add3(b, d[1][m], l[1][m]),
                ]);
                next[2 * m] = even;
                next[2 * m + 1] = odd;
                let pair: u32x8 = simd.or_u32x8(we, simd.shl_const_u32x8::<2>(wo));
                word = simd.or_u32x8(word, shl_pair(simd, pair, m));
            }
            *sel_t = cast(word);
            cost = next;
        }
        // Per lane: the cheapest end state (ties: the lowest state)...
        let mut best = cost[0];
        let mut q = simd.splat_i32x8(0);
        for (s, &c) in cost.iter().enumerate().skip(1) {
            let m = simd.cmp_lt_f32x8(c, best);
            best = simd.select_f32x8(m, c, best);
            q = simd.select_i32x8(m, simd.splat_i32x8(s as i32), q);
        }
        // ...then back along the paths, all lanes at once.
        let (one, three) = (simd.splat_i32x8(1), simd.splat_i32x8(3));
        let mut kt = [[0i32; LANES]; STACK_RUN];
        for t in (0..n).rev() {
            let qu: u32x8 = cast(q);
            let b: i32x8 = cast(simd.and_u32x8(
                simd.shr_dyn_u32x8(cast(sel[t]), simd.shl_const_u32x8::<1>(qu)),
                cast(three),
            ));
            // Into state 2m + e: from m (b < 2) on subset m (e = 0) or m ± 2, from m + 4
            // the other way round.
            let m = simd.shr_const_i32x8::<1>(q);
            let e = simd.and_i32x8(q, one);
            let from_hi = simd.shr_const_i32x8::<1>(b);
            let r = simd.select_i32x8(
                simd.cmp_eq_i32x8(from_hi, e),
                m,
                simd.and_i32x8(simd.wrapping_add_i32x8(m, simd.splat_i32x8(2)), three),
            );
            // Per lane, ks[t][w][r] with w = b & 1.
            let j = simd.wrapping_add_i32x8(simd.shl_const_i32x8::<2>(simd.and_i32x8(b, one)), r);
            let mut k = simd.splat_i32x8(0);
            for (w, row) in ks[t].iter().enumerate() {
                for (r, &kw) in row.iter().enumerate() {
                    let hit = simd.cmp_eq_i32x8(j, simd.splat_i32x8((4 * w + r) as i32));
                    k = simd.select_i32x8(hit, kw, k);
                }
            }
            kt[t] = cast(k);
            q = simd.wrapping_add_i32x8(m, simd.shl_const_i32x8::<2>(from_hi));
        }
        for (lane, o) in out.chunks_exact_mut(n).enumerate() {
            for (o, k) in o.iter_mut().zip(&kt) {
                *o = k[lane];
            }
        }
    }

    /// `pair << 4m` (the branches into states 2m and 2m + 1 at bits 4m..4m+4).
    #[inline(always)]
    fn shl_pair(simd: V3, pair: u32x8, m: usize) -> u32x8 {
        match m {
            0 => pair,
            1 => simd.shl_const_u32x8::<4>(pair),
            2 => simd.shl_const_u32x8::<8>(pair),
            _ => simd.shl_const_u32x8::<12>(pair),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Table;
    use crate::trellis::tests::gaussian;

    #[test]
    fn chunks_side_by_side_are_chunks_one_by_one() {
        // Eight chunks per vector lane: the same path as chunk by chunk, with and without
        // rates, for every chunk length around the lane block (remainders, a short last chunk),
        // blocks with a value out of the fast range, and the other 8-state trellises.
        let counts: Vec<u64> = (0..9).map(|i| 1 + (i * 37 % 11) as u64).collect();
        let t0 = Table::from_counts(-4, &counts, 0, 12).unwrap();
        let t1 = Table::from_counts(-3, &counts[..7], 0, 12).unwrap();
        let rates = [RateModel::flat(), RateModel::from_tables([&t0, &t1])];
        let mut x: Vec<f32> = gaussian(64 * 37 + 5, 4).iter().map(|v| v * 7.0).collect();
        for (i, v) in x.iter_mut().enumerate().step_by(5) {
            *v = (*v * 2.0).round() / 2.0;
            if i % 55 == 0 {
                *v = -0.0;
            }
        }
        x[64 * 9 + 3] = 3.0e6;
        let models = [
            ContextModel::tcq8(),
            ContextModel::shift_register(3, 0b010).unwrap(),
        ];
        for m in &models {
            for len in [1usize, 3, 16, 63, 64, 65] {
                for lambda in [0.0f32, 0.15, 3.0] {
                    for rate in &rates {
                        let (mut a, mut b) = (vec![0; x.len()], vec![0; x.len()]);
                        viterbi_chunks(m, &x, len, lambda, rate, &mut a);
                        for (c, o) in x.chunks(len).zip(b.chunks_mut(len)) {
                            viterbi_chunk(m, c, lambda, rate, o);
                        }
                        assert_eq!(a, b, "len {len}, λ {lambda}");
                    }
                }
            }
        }
    }
}
