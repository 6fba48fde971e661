//! Finite-state coding contexts: the table that codes a symbol may depend on a state that both
//! sides advance with the parity of the symbols already coded in the same chunk.
//!
//! This is what trellis-coded quantization needs (`docs/format.md`, "Trellis contexts"): the
//! trellis state decides which union codebook the next symbol indexes, and the two union codebooks
//! have different distributions, so each gets its own table. The state is a pure function of the
//! decoded symbols, so the decoder follows it without side information.

use crate::error::{EntropyError, Result};

/// A deterministic finite-state context model.
///
/// Every chunk starts in state 0. Coding symbol `s` in state `q` uses context `context(q)` and
/// moves to `next(q, s)`, which depends only on the parity of `s` (two's complement, so it is
/// defined for every `i32`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextModel {
    next: Vec<[u8; 2]>,
    context: Vec<u8>,
    n_contexts: usize,
}

impl ContextModel {
    /// A model from its transition table (`next[q][parity]`) and the context of each state.
    ///
    /// # Errors
    /// [`EntropyError::InvalidLayout`] when the tables are empty, of different lengths, longer
    /// than 256 states, or name a state that does not exist.
    pub fn new(next: Vec<[u8; 2]>, context: Vec<u8>) -> Result<Self> {
        let n = next.len();
        if n == 0 || n > 256 || context.len() != n {
            return Err(EntropyError::InvalidLayout(format!(
                "context model with {n} transitions and {} contexts",
                context.len()
            )));
        }
        if next.iter().flatten().any(|&s| usize::from(s) >= n) {
            return Err(EntropyError::InvalidLayout(
                "context model names a state it does not have".into(),
            ));
        }
        let n_contexts = usize::from(*context.iter().max().expect("non-empty")) + 1;
        Ok(Self {
            next,
            context,
            n_contexts,
        })
    }

    /// The 8-state trellis of JPEG 2000 Part 2's trellis-coded quantization (Ungerboeck's
    /// 8-state code on the subsets D0…D3 of a scalar grid): even states draw from the union
    /// codebook D0 ∪ D2 (context 0), odd states from D1 ∪ D3 (context 1). It is the shift-register
    /// trellis with mask `0b110`: its branch flips are `[0, 0, 1, 1, 1, 1, 0, 0]`.
    pub fn tcq8() -> Self {
        Self::shift_register(3, 0b110).expect("3 bits is a valid trellis size")
    }

    /// A shift-register trellis of `2^bits` states (`bits` in 2..=8): in state `q`, parity `p` of
    /// the union index leads to `((q << 1) | (p ^ parity(q & mask))) mod 2^bits`, and the context
    /// (union codebook) of `q` is its low bit. The two branches into any state come from states
    /// with the same low bit, as trellis-coded quantization needs. [`ContextModel::tcq8`] is
    /// `shift_register(3, 0b110)`.
    ///
    /// # Errors
    /// [`EntropyError::InvalidLayout`] for `bits` outside 2..=8.
    pub fn shift_register(bits: u32, mask: u8) -> Result<Self> {
        if !(2..=8).contains(&bits) {
            return Err(EntropyError::InvalidLayout(format!(
                "a {bits}-bit shift-register trellis (2..=8)"
            )));
        }
        let n = 1usize << bits;
        let next = (0..n)
            .map(|q| {
                let f = ((q as u32 & u32::from(mask)).count_ones() & 1) as usize;
                [((q << 1) | f) & (n - 1), ((q << 1) | (1 ^ f)) & (n - 1)].map(|s| s as u8)
            })
            .collect();
        let context = (0..n).map(|q| (q & 1) as u8).collect();
        Self::new(next, context)
    }

    /// Number of states.
    pub fn n_states(&self) -> usize {
        self.next.len()
    }

    /// Number of distinct contexts (table rows per class).
    pub fn n_contexts(&self) -> usize {
        self.n_contexts
    }

    /// The context of state `q`.
    #[inline]
    pub fn context(&self, q: u8) -> usize {
        usize::from(self.context[usize::from(q)])
    }

    /// The state after coding `symbol` in state `q`.
    #[inline]
    pub fn next(&self, q: u8, symbol: i32) -> u8 {
        self.next[usize::from(q)][(symbol & 1) as usize]
    }

    /// The state after coding a symbol of parity `parity` (0 or 1) in state `q`.
    #[inline]
    pub fn next_by_parity(&self, q: u8, parity: u8) -> u8 {
        self.next[usize::from(q)][usize::from(parity & 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcq8_is_a_proper_trellis() {
        let m = ContextModel::tcq8();
        assert_eq!(m.n_states(), 8);
        assert_eq!(m.n_contexts(), 2);
        // Every state is entered by exactly two branches, from states of one context.
        let mut into = vec![Vec::new(); 8];
        for q in 0..8u8 {
            for p in 0..2u8 {
                into[usize::from(m.next_by_parity(q, p))].push(q);
            }
        }
        for (s, from) in into.iter().enumerate() {
            assert_eq!(from.len(), 2, "state {s}");
            assert_eq!(m.context(from[0]), m.context(from[1]), "state {s}");
        }
        // Negative symbols follow their two's-complement parity.
        assert_eq!(m.next(0, -1), m.next(0, 1));
        assert_eq!(m.next(0, i32::MIN), m.next(0, 0));
    }

    #[test]
    fn tcq8_is_the_jpeg2000_trellis() {
        // JPEG 2000 Part 2's table: in state q, parity p leads to ((q << 1) | (p ^ FLIP[q])) & 7.
        const FLIP: [u8; 8] = [0, 0, 1, 1, 1, 1, 0, 0];
        let m = ContextModel::tcq8();
        for q in 0..8u8 {
            for p in 0..2u8 {
                let expected = ((q << 1) | (p ^ FLIP[usize::from(q)])) & 7;
                assert_eq!(m.next_by_parity(q, p), expected, "state {q}, parity {p}");
            }
            assert_eq!(m.context(q), usize::from(q & 1));
        }
        assert!(ContextModel::shift_register(1, 0).is_err());
        assert!(ContextModel::shift_register(9, 0).is_err());
        assert_eq!(
            ContextModel::shift_register(8, 0x5a).unwrap().n_states(),
            256
        );
    }

    #[test]
    fn bad_models_are_errors() {
        assert!(ContextModel::new(vec![], vec![]).is_err());
        assert!(ContextModel::new(vec![[0, 1]], vec![0]).is_err());
        assert!(ContextModel::new(vec![[0, 0]], vec![0, 0]).is_err());
    }
}
