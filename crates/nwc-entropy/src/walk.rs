//! [`TrellisWalk`]: the decoder's trellis walk from union indices back to grid positions, laid
//! out for speed (fixed tables, four symbols per dependent step).

use crate::context::ContextModel;

/// [`reconstruct_chunk`](crate::reconstruct_chunk) with the trellis copied into two fixed tables indexed by state (no
/// bounds checks on the walk's dependency chain) and the quantizer step applied on the way:
/// `out[i] = (2·k + u) as f32 · step`, the same values as [`reconstruct_chunk`](crate::reconstruct_chunk) followed by a
/// multiplication by `step`.
#[derive(Debug, Clone)]
pub struct TrellisWalk {
    unit: [u8; 256],
    next: [[u8; 2]; 256],
    /// The state four symbols on, by their parities (bit `i` the parity of symbol `i`): the
    /// walk's dependency chain takes one step per four symbols.
    next4: Box<[[u8; 16]; 256]>,
}

impl TrellisWalk {
    /// The walk of `model`.
    pub fn new(model: &ContextModel) -> Self {
        let mut w = Self {
            unit: [0; 256],
            next: [[0; 2]; 256],
            next4: Box::new([[0; 16]; 256]),
        };
        for q in 0..model.n_states() {
            let q8 = q as u8;
            w.unit[q] = (model.context(q8) & 1) as u8;
            w.next[q] = [model.next_by_parity(q8, 0), model.next_by_parity(q8, 1)];
        }
        for q in 0..model.n_states() {
            for bits in 0..16usize {
                let mut r = q;
                for i in 0..4 {
                    r = usize::from(w.next[r][(bits >> i) & 1]);
                }
                w.next4[q][bits] = r as u8;
            }
        }
        w
    }

    /// One chunk's values from its union indices, times `step`.
    #[inline]
    pub fn reconstruct(&self, symbols: &[i32], step: f32, out: &mut [f32]) {
        let n = symbols.len().min(out.len());
        let (head, tail) = (n / 4 * 4, n % 4);
        let value =
            |k: i32, q: u8| (2 * i64::from(k) + i64::from(self.unit[usize::from(q)])) as f32 * step;
        let mut q = 0u8;
        for (k, o) in symbols[..head]
            .chunks_exact(4)
            .zip(out[..head].chunks_exact_mut(4))
        {
            // The states inside the group hang off the chain; the chain is `next4`.
            let p = |i: usize| (k[i] & 1) as usize;
            let q1 = self.next[usize::from(q)][p(0)];
            let q2 = self.next[usize::from(q1)][p(1)];
            let q3 = self.next[usize::from(q2)][p(2)];
            o[0] = value(k[0], q);
            o[1] = value(k[1], q1);
            o[2] = value(k[2], q2);
            o[3] = value(k[3], q3);
            q = self.next4[usize::from(q)][p(0) | p(1) << 1 | p(2) << 2 | p(3) << 3];
        }
        if tail == 0 {
            return;
        }
        for (&k, o) in symbols[head..n].iter().zip(&mut out[head..n]) {
            let u = i64::from(self.unit[usize::from(q)]);
            *o = (2 * i64::from(k) + u) as f32 * step;
            q = self.next[usize::from(q)][(k & 1) as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trellis::reconstruct_chunk;

    #[test]
    fn the_walk_is_reconstruct_chunk_times_the_step() {
        let m = ContextModel::tcq8();
        let w = TrellisWalk::new(&m);
        let mut rng = crate::SplitMix64(3);
        for n in [64, 63, 16, 7, 1, 0] {
            let k: Vec<i32> = (0..n).map(|_| (rng.next_u64() % 41) as i32 - 20).collect();
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            reconstruct_chunk(&m, &k, &mut a);
            a.iter_mut().for_each(|v| *v *= 0.37);
            w.reconstruct(&k, 0.37, &mut b);
            assert_eq!(a, b, "{n}");
        }
    }
}
