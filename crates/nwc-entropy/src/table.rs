//! Quantized integer distributions (frequency tables) and their deterministic construction.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::error::{EntropyError, Result};

/// The largest supported precision: frequencies sum to at most 2^16.
pub const MAX_PRECISION: u32 = 16;
/// The smallest supported precision.
pub const MIN_PRECISION: u32 = 8;
/// The most in-range symbols one table may hold (the escape symbol comes on top).
pub const MAX_SYMBOLS: usize = 4096;
/// The precision nwc uses unless told otherwise (see the `coder` bench for the trade-off).
pub const DEFAULT_PRECISION: u32 = 16;

/// A quantized distribution over `n` consecutive integer values plus one escape symbol.
///
/// Values `min_symbol ..= min_symbol + n − 1` are coded with their own frequency; any other value
/// is coded as the escape symbol followed by 32 raw bits. Frequencies are integers summing to
/// exactly `2^precision`, every one at least 1, so every value can be coded.
///
/// The table also holds the lookup structures the decoder needs (`2^precision` slots mapped to
/// symbols), built once at construction: decoding never searches.
#[derive(Clone)]
pub struct Table {
    min_symbol: i32,
    precision: u32,
    freqs: Vec<u16>,
    /// `freq << 16 | cum` per symbol index (escape included).
    info: Vec<u32>,
    /// Slot → symbol index, `2^precision` entries.
    lut: Vec<u16>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("min_symbol", &self.min_symbol)
            .field("precision", &self.precision)
            .field("n_symbols", &self.n_symbols())
            .finish_non_exhaustive()
    }
}

impl PartialEq for Table {
    fn eq(&self, other: &Self) -> bool {
        self.min_symbol == other.min_symbol
            && self.precision == other.precision
            && self.freqs == other.freqs
    }
}
impl Eq for Table {}

impl Table {
    /// Builds a table from stored frequencies (`n` in-range symbols followed by the escape).
    ///
    /// # Errors
    /// [`EntropyError::InvalidTable`] unless `precision` is in `8..=16`, there are between 2 and
    /// 4097 frequencies, each is ≥ 1 and they sum to exactly `2^precision`.
    pub fn from_freqs(min_symbol: i32, precision: u32, freqs: Vec<u16>) -> Result<Self> {
        if !(MIN_PRECISION..=MAX_PRECISION).contains(&precision) {
            return Err(EntropyError::InvalidTable(format!(
                "precision {precision} outside {MIN_PRECISION}..={MAX_PRECISION}"
            )));
        }
        if freqs.len() < 2 || freqs.len() > MAX_SYMBOLS + 1 {
            return Err(EntropyError::InvalidTable(format!(
                "{} frequencies, expected 2..={}",
                freqs.len(),
                MAX_SYMBOLS + 1
            )));
        }
        let n_in_range = (freqs.len() - 1) as i64;
        if i64::from(min_symbol) + n_in_range - 1 > i64::from(i32::MAX) {
            return Err(EntropyError::InvalidTable(
                "symbol range overflows i32".to_string(),
            ));
        }
        if let Some(i) = freqs.iter().position(|&f| f == 0) {
            return Err(EntropyError::InvalidTable(format!(
                "frequency of symbol {i} is zero"
            )));
        }
        let total: u64 = freqs.iter().map(|&f| u64::from(f)).sum();
        if total != 1u64 << precision {
            return Err(EntropyError::InvalidTable(format!(
                "frequencies sum to {total}, expected 2^{precision}"
            )));
        }
        let mut info = Vec::with_capacity(freqs.len());
        let mut lut = vec![0u16; 1usize << precision];
        let mut cum = 0u32;
        for (i, &f) in freqs.iter().enumerate() {
            info.push((u32::from(f) << 16) | cum);
            lut[cum as usize..(cum + u32::from(f)) as usize].fill(i as u16);
            cum += u32::from(f);
        }
        Ok(Self {
            min_symbol,
            precision,
            freqs,
            info,
            lut,
        })
    }

    /// Quantizes a distribution: `probs[i]` is the probability of value `min_symbol + i`,
    /// `escape` the probability of every other value together.
    ///
    /// The probabilities need not sum to exactly 1 (they are renormalized), but must be finite and
    /// non-negative with a positive sum. Every symbol gets at least one count; the remaining
    /// counts go where they lower the expected code length most, so the result is the
    /// cross-entropy-optimal integer table under the ≥ 1 constraint, reached greedily. The
    /// arithmetic uses `libm`, so the same input gives the same table on every machine.
    ///
    /// # Errors
    /// [`EntropyError::InvalidProbabilities`] for a bad distribution,
    /// [`EntropyError::InvalidTable`] when there are more symbols than `2^precision` slots or
    /// more than [`MAX_SYMBOLS`].
    pub fn from_probabilities(
        min_symbol: i32,
        probs: &[f64],
        escape: f64,
        precision: u32,
    ) -> Result<Self> {
        if !(MIN_PRECISION..=MAX_PRECISION).contains(&precision) {
            return Err(EntropyError::InvalidTable(format!(
                "precision {precision} outside {MIN_PRECISION}..={MAX_PRECISION}"
            )));
        }
        let n = probs.len() + 1;
        if probs.is_empty() || probs.len() > MAX_SYMBOLS || n as u64 > (1u64 << precision) {
            return Err(EntropyError::InvalidTable(format!(
                "{} in-range symbols do not fit a 2^{precision} table (max {MAX_SYMBOLS})",
                probs.len()
            )));
        }
        let all = probs.iter().copied().chain(std::iter::once(escape));
        let mut sum = 0.0f64;
        for p in all.clone() {
            if !p.is_finite() || p < 0.0 {
                return Err(EntropyError::InvalidProbabilities(format!(
                    "probability {p} is not finite and non-negative"
                )));
            }
            sum += p;
        }
        if sum <= 0.0 {
            return Err(EntropyError::InvalidProbabilities(
                "probabilities sum to zero".into(),
            ));
        }
        let q: Vec<f64> = all.map(|p| p / sum).collect();
        let freqs = quantize(&q, 1u32 << precision);
        Self::from_freqs(min_symbol, precision, freqs)
    }

    /// Builds the table of an empirical histogram: `counts[i]` occurrences of `min_symbol + i`,
    /// `escape_count` occurrences of values outside the range. Same quantizer as
    /// [`Table::from_probabilities`].
    ///
    /// # Errors
    /// As [`Table::from_probabilities`]; all-zero counts are an error.
    pub fn from_counts(
        min_symbol: i32,
        counts: &[u64],
        escape_count: u64,
        precision: u32,
    ) -> Result<Self> {
        let probs: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
        Self::from_probabilities(min_symbol, &probs, escape_count as f64, precision)
    }

    /// The value of the first in-range symbol.
    pub fn min_symbol(&self) -> i32 {
        self.min_symbol
    }

    /// Frequencies sum to `2^precision`.
    pub fn precision(&self) -> u32 {
        self.precision
    }

    /// Number of in-range symbols (the escape symbol not counted).
    pub fn n_symbols(&self) -> usize {
        self.freqs.len() - 1
    }

    /// The stored frequencies: in-range symbols, then the escape symbol.
    pub fn freqs(&self) -> &[u16] {
        &self.freqs
    }

    /// The cost in bits of coding `value` with this table (escapes include their 32 raw bits).
    pub fn cost_bits(&self, value: i32) -> f64 {
        let total = f64::from(1u32 << self.precision);
        match self.index_of(value) {
            Some(i) => -libm::log2(f64::from(self.freqs[i]) / total),
            None => -libm::log2(f64::from(self.freqs[self.n_symbols()]) / total) + 32.0,
        }
    }

    /// The symbol index of `value`, `None` when it must be escaped.
    #[inline]
    pub(crate) fn index_of(&self, value: i32) -> Option<usize> {
        let i = i64::from(value) - i64::from(self.min_symbol);
        (i >= 0 && (i as usize) < self.n_symbols()).then_some(i as usize)
    }

    #[inline]
    pub(crate) fn info(&self, index: usize) -> u32 {
        self.info[index]
    }

    #[inline]
    pub(crate) fn info_all(&self) -> &[u32] {
        &self.info
    }

    #[inline]
    pub(crate) fn lut(&self) -> &[u16] {
        &self.lut
    }

    #[inline]
    pub(crate) fn escape_index(&self) -> usize {
        self.freqs.len() - 1
    }
}

/// A max-heap key: the change in expected code length (nats) of moving one count, with the symbol
/// index as a deterministic tie-break (lower index wins).
#[derive(PartialEq)]
struct Key(f64, usize);
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// Integer frequencies ≥ 1 summing to `total`, close to `q · total` in cross-entropy.
fn quantize(q: &[f64], total: u32) -> Vec<u16> {
    let total_f = f64::from(total);
    let mut f: Vec<i64> = q
        .iter()
        .map(|&p| (libm::floor(p * total_f + 0.5) as i64).max(1))
        .collect();
    let mut diff = i64::from(total) - f.iter().sum::<i64>();
    // Gain of one more count for symbol i: q_i · ln((f+1)/f); loss of one fewer: q_i · ln(f/(f−1)).
    let gain = |p: f64, fi: i64| p * (libm::log((fi + 1) as f64) - libm::log(fi as f64));
    let loss = |p: f64, fi: i64| p * (libm::log(fi as f64) - libm::log((fi - 1) as f64));
    if diff > 0 {
        let mut heap: BinaryHeap<Key> = (0..q.len()).map(|i| Key(gain(q[i], f[i]), i)).collect();
        while diff > 0 {
            let Key(_, i) = heap.pop().expect("heap holds every symbol");
            f[i] += 1;
            diff -= 1;
            heap.push(Key(gain(q[i], f[i]), i));
        }
    } else if diff < 0 {
        // Max-heap on the negated loss: the cheapest removal first.
        let mut heap: BinaryHeap<Key> = (0..q.len())
            .filter(|&i| f[i] > 1)
            .map(|i| Key(-loss(q[i], f[i]), i))
            .collect();
        while diff < 0 {
            // Σ f > total ≥ len(q) guarantees a symbol with f > 1 is left.
            let Key(_, i) = heap
                .pop()
                .expect("a symbol with more than one count remains");
            f[i] -= 1;
            diff += 1;
            if f[i] > 1 {
                heap.push(Key(-loss(q[i], f[i]), i));
            }
        }
    }
    f.into_iter().map(|v| v as u16).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_are_validated() {
        assert!(Table::from_freqs(0, 8, vec![128, 128]).is_ok());
        assert!(Table::from_freqs(0, 8, vec![128, 127]).is_err());
        assert!(Table::from_freqs(0, 8, vec![256, 0]).is_err());
        assert!(Table::from_freqs(0, 8, vec![256]).is_err());
        assert!(Table::from_freqs(0, 7, vec![64, 64]).is_err());
        assert!(Table::from_freqs(0, 17, vec![1 << 15, 1 << 15]).is_err());
        assert!(Table::from_freqs(i32::MAX, 8, vec![1, 1, 254]).is_err());
    }

    #[test]
    fn quantizer_keeps_every_symbol_and_sums_exactly() {
        let probs = [0.9, 1e-12, 0.05, 0.0, 0.049];
        let t = Table::from_probabilities(-2, &probs, 1e-9, 12).unwrap();
        assert_eq!(t.freqs().iter().map(|&f| u32::from(f)).sum::<u32>(), 4096);
        assert!(t.freqs().iter().all(|&f| f >= 1));
        assert!(t.freqs()[0] > 3600);
    }

    #[test]
    fn quantizer_is_close_to_optimal() {
        // A discretized Laplacian with 200 symbols: the KL divergence of the quantized table must
        // be tiny at precision 16.
        let probs: Vec<f64> = (-100..100)
            .map(|k: i32| libm::exp(-f64::from(k.abs()) / 8.0))
            .collect();
        let s: f64 = probs.iter().sum();
        let t = Table::from_probabilities(-100, &probs, 0.0, 16).unwrap();
        let entropy: f64 = probs.iter().map(|p| -(p / s) * libm::log2(p / s)).sum();
        let cross: f64 = probs
            .iter()
            .enumerate()
            .map(|(i, p)| (p / s) * t.cost_bits(i as i32 - 100))
            .sum();
        assert!(cross >= entropy);
        assert!((cross - entropy) / entropy < 1e-3, "{cross} vs {entropy}");
    }

    #[test]
    fn too_many_symbols_are_refused() {
        let probs = vec![1.0; 300];
        assert!(Table::from_probabilities(0, &probs, 0.0, 8).is_err());
        assert!(Table::from_probabilities(0, &probs, 0.0, 9).is_ok());
        assert!(Table::from_probabilities(0, &[], 1.0, 9).is_err());
        assert!(Table::from_probabilities(0, &[f64::NAN], 1.0, 9).is_err());
        assert!(Table::from_probabilities(0, &[0.0], 0.0, 9).is_err());
    }
}
