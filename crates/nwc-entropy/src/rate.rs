//! [`RateModel`]: what the trellis search charges for a symbol, from the coder's own tables.

use crate::table::Table;

/// Bit costs of union indices, per union codebook: what the Viterbi search charges for a
/// symbol.
#[derive(Debug, Clone)]
pub struct RateModel {
    /// Per union: `(min_k, cost of k = min_k + i, cost of any other k)`.
    unions: [(i32, Vec<f32>, f32); 2],
    /// Per union, for lookups without branches: `(min_k − 1, [escape, costs…, escape])`, the
    /// cost of `k` at index `k − (min_k − 1)` clamped to the ends.
    padded: [(i32, Vec<f32>); 2],
}

impl RateModel {
    /// Flat costs: the search minimizes distortion alone.
    pub fn flat() -> Self {
        Self::with_unions([(0, Vec::new(), 0.0), (0, Vec::new(), 0.0)])
    }

    fn with_unions(unions: [(i32, Vec<f32>, f32); 2]) -> Self {
        let pad = |(lo, costs, escape): &(i32, Vec<f32>, f32)| {
            let mut p = Vec::with_capacity(costs.len() + 2);
            p.push(*escape);
            p.extend_from_slice(costs);
            p.push(*escape);
            (lo.saturating_sub(1), p)
        };
        let padded = [pad(&unions[0]), pad(&unions[1])];
        Self { unions, padded }
    }

    /// Whether [`RateModel::cost_padded`] prices every `k` inside ±2^22 as [`RateModel::cost`].
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn padded_in_range(&self) -> bool {
        self.padded
            .iter()
            .all(|(base, p)| base.unsigned_abs() < 1 << 24 && p.len() < 1 << 24)
    }

    /// [`RateModel::cost`] for `|k| < 2^22` when [`RateModel::padded_in_range`]: the index is
    /// clamped, not compared, so that eight lanes of it vectorize.
    #[inline(always)]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn cost_padded<const N: usize>(&self, u: usize, k: [i32; N]) -> [f32; N] {
        let (base, p) = &self.padded[u];
        let last = p.len() as i32 - 1;
        let mut i = [0i32; N];
        for lane in 0..N {
            i[lane] = (k[lane] - base).clamp(0, last);
        }
        i.map(|i| p[i as usize])
    }

    /// Costs from fitted tables (`tables[u]` for union `u`).
    pub fn from_tables(tables: [&Table; 2]) -> Self {
        let one = |t: &Table| {
            let lo = t.min_symbol();
            let costs = (0..t.n_symbols())
                .map(|i| t.cost_bits(lo + i as i32) as f32)
                .collect();
            let escape = t.cost_bits(lo.saturating_sub(1)) as f32;
            (lo, costs, escape)
        };
        Self::with_unions([one(tables[0]), one(tables[1])])
    }

    #[inline(always)]
    pub(crate) fn cost(&self, u: usize, k: i32) -> f32 {
        let (lo, costs, escape) = &self.unions[u];
        // A negative difference wraps far past the end: one comparison for both bounds.
        let i = (i64::from(k) - i64::from(*lo)) as u64;
        if i < costs.len() as u64 {
            costs[i as usize]
        } else {
            *escape
        }
    }

    /// The model the search prices symbols with at `lambda`: none when every λ·bits term would
    /// be +0 (flat costs, finite λ), which changes no sum of non-negative terms.
    #[inline(always)]
    pub(crate) fn priced(&self, lambda: f32) -> Option<&Self> {
        (!(self.is_flat() && lambda.is_finite())).then_some(self)
    }

    /// Whether every symbol costs nothing (costs are empty and the escape is free).
    #[inline(always)]
    fn is_flat(&self) -> bool {
        self.unions
            .iter()
            .all(|(_, c, e)| c.is_empty() && *e == 0.0)
    }
}
