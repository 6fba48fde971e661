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
    /// The units of four symbols from a state, by the parities of the first three (bit `i` the
    /// parity of symbol `i`): a group's grid positions are `2·k | units` lane by lane.
    units4: Box<[[[i32; 4]; 8]; 256]>,
    /// States of the trellis.
    states: usize,
}

/// The walk of a trellis of at most eight states as two lane tables ([`TrellisWalk::eight`]):
/// a decoder that walks eight chunks side by side, one per vector lane, looks a state's union
/// and successor up with one permutation of eight lanes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk8 {
    /// The union (0 or 1) of the state each symbol is coded from: grid position `2·k + unit`.
    pub unit: [i32; 8],
    /// The state after a symbol of parity `p` from state `q`: `next[p][q]`.
    pub next: [[i32; 8]; 2],
}

impl TrellisWalk {
    /// The walk of `model`.
    pub fn new(model: &ContextModel) -> Self {
        let mut w = Self {
            unit: [0; 256],
            next: [[0; 2]; 256],
            next4: Box::new([[0; 16]; 256]),
            units4: Box::new([[[0; 4]; 8]; 256]),
            states: model.n_states(),
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
            for bits in 0..8usize {
                let mut r = q;
                for i in 0..4 {
                    w.units4[q][bits][i] = i32::from(w.unit[r]);
                    if i < 3 {
                        r = usize::from(w.next[r][(bits >> i) & 1]);
                    }
                }
            }
        }
        w
    }

    /// The walk as lane tables, when the trellis has at most eight states (states past the
    /// last are never reached and walk to state 0).
    pub fn eight(&self) -> Option<Walk8> {
        if self.states > 8 {
            return None;
        }
        let mut w = Walk8 {
            unit: [0; 8],
            next: [[0; 8]; 2],
        };
        for q in 0..self.states {
            w.unit[q] = i32::from(self.unit[q]);
            for p in 0..2 {
                w.next[p][q] = i32::from(self.next[q][p]);
            }
        }
        Some(w)
    }

    /// One chunk's values from its union indices, times `step`.
    #[inline]
    pub fn reconstruct(&self, symbols: &[i32], step: f32, out: &mut [f32]) {
        let n = symbols.len().min(out.len());
        let (symbols, out) = (&symbols[..n], &mut out[..n]);
        // Grid positions `2·k + u` are exact in `i32` when every |k| < 2^30 (nwc writes at most
        // 2^29); a damaged file may hold more, and takes the 64-bit walk.
        let wide = symbols.iter().fold(0, |a, &k| a | ((k >> 30) ^ (k >> 31)));
        if wide != 0 {
            return self.reconstruct_wide(symbols, step, out);
        }
        let head = n / 4 * 4;
        let mut q = 0u8;
        for (k, o) in symbols[..head]
            .chunks_exact(4)
            .zip(out[..head].chunks_exact_mut(4))
        {
            // The states inside the group hang off the chain; the chain is `next4`.
            let bits = (k[0] & 1) | (k[1] & 1) << 1 | (k[2] & 1) << 2 | (k[3] & 1) << 3;
            let u = &self.units4[usize::from(q)][(bits & 7) as usize];
            for i in 0..4 {
                o[i] = ((k[i] << 1) | u[i]) as f32 * step;
            }
            q = self.next4[usize::from(q)][bits as usize];
        }
        for (&k, o) in symbols[head..].iter().zip(&mut out[head..]) {
            *o = ((k << 1) | i32::from(self.unit[usize::from(q)])) as f32 * step;
            q = self.next[usize::from(q)][(k & 1) as usize];
        }
    }

    /// The union (context `& 1`) of the state each symbol of one chunk is coded from: the
    /// walk's units alone, four symbols per dependent step.
    #[inline]
    pub fn units(&self, symbols: &[i32], out: &mut [u8]) {
        let n = symbols.len().min(out.len());
        let (symbols, out) = (&symbols[..n], &mut out[..n]);
        let head = n / 4 * 4;
        let mut q = 0u8;
        for (k, o) in symbols[..head]
            .chunks_exact(4)
            .zip(out[..head].chunks_exact_mut(4))
        {
            let bits = (k[0] & 1) | (k[1] & 1) << 1 | (k[2] & 1) << 2 | (k[3] & 1) << 3;
            let u = &self.units4[usize::from(q)][(bits & 7) as usize];
            for i in 0..4 {
                o[i] = u[i] as u8;
            }
            q = self.next4[usize::from(q)][bits as usize];
        }
        for (&k, o) in symbols[head..].iter().zip(&mut out[head..]) {
            *o = self.unit[usize::from(q)];
            q = self.next[usize::from(q)][(k & 1) as usize];
        }
    }

    /// [`TrellisWalk::reconstruct`] in 64-bit arithmetic, for any index.
    #[cold]
    fn reconstruct_wide(&self, symbols: &[i32], step: f32, out: &mut [f32]) {
        let mut q = 0u8;
        for (&k, o) in symbols.iter().zip(out) {
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
    fn units_are_the_contexts_along_the_path() {
        let mut rng = crate::SplitMix64(5);
        for m in [
            ContextModel::tcq8(),
            ContextModel::shift_register(3, 0b010).unwrap(),
        ] {
            let w = TrellisWalk::new(&m);
            for n in [0usize, 1, 3, 4, 7, 64, 65] {
                let k: Vec<i32> = (0..n).map(|_| (rng.next_u64() % 41) as i32 - 20).collect();
                let mut got = vec![9u8; n];
                w.units(&k, &mut got);
                let mut q = 0u8;
                let want: Vec<u8> = k
                    .iter()
                    .map(|&k| {
                        let u = (m.context(q) & 1) as u8;
                        q = m.next(q, k);
                        u
                    })
                    .collect();
                assert_eq!(got, want, "n {n}");
            }
        }
    }

    #[test]
    fn the_eight_state_tables_walk_the_trellis() {
        let mut rng = crate::SplitMix64(7);
        let m = ContextModel::tcq8();
        let w = TrellisWalk::new(&m).eight().expect("tcq8 has eight states");
        let k: Vec<i32> = (0..200)
            .map(|_| (rng.next_u64() % 41) as i32 - 20)
            .collect();
        let mut want = vec![0f32; k.len()];
        reconstruct_chunk(&m, &k, &mut want);
        let mut q = 0usize;
        let got: Vec<f32> = k
            .iter()
            .map(|&k| {
                let g = 2 * k + w.unit[q];
                q = w.next[(k & 1) as usize][q] as usize;
                g as f32
            })
            .collect();
        assert_eq!(got, want);
        let big = ContextModel::shift_register(4, 0b0110).unwrap();
        assert!(big.n_states() > 8);
        assert!(TrellisWalk::new(&big).eight().is_none());
    }

    #[test]
    fn the_walk_is_reconstruct_chunk_times_the_step() {
        let m = ContextModel::tcq8();
        let w = TrellisWalk::new(&m);
        let mut rng = crate::SplitMix64(3);
        for (n, wide) in [64, 63, 16, 7, 1, 0, 16, 5]
            .into_iter()
            .zip((0..8).map(|i| i >= 6))
        {
            let mut k: Vec<i32> = (0..n).map(|_| (rng.next_u64() % 41) as i32 - 20).collect();
            if wide {
                // Indices whose grid positions overflow i32, as a damaged file may hold.
                k[1] = i32::MAX - 2;
                k[3] = i32::MIN + 1;
            } else if n == 64 {
                // The extremes the 32-bit walk takes.
                k[5] = (1 << 30) - 1;
                k[6] = -(1 << 30);
            }
            let (mut a, mut b) = (vec![0.0; n], vec![0.0; n]);
            reconstruct_chunk(&m, &k, &mut a);
            a.iter_mut().for_each(|v| *v *= 0.37);
            w.reconstruct(&k, 0.37, &mut b);
            assert_eq!(a, b, "{n}");
        }
    }
}
