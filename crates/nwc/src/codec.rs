//! The codec interface every weight codec implements, and the ECSQ baseline codec.

use nwc_entropy::{ContextModel, DEFAULT_PRECISION, MAX_SYMBOLS, Table};
use nwc_format::CodecKind;
use rayon::prelude::*;

use crate::error::{NwcError, Result};

/// What a codec produced for one tensor: one integer symbol per coded value, plus how to
/// entropy-code them.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// Symbols, chunk after chunk (`n_chunks × chunk_len`).
    pub symbols: Vec<i32>,
    /// Method parameters stored in the record (`docs/format.md`, "Method parameters").
    pub params: Vec<u8>,
    /// Tables stored in the record; empty when the codec's own [`WeightCodec::tables`] are used.
    pub tables: Vec<Table>,
    /// `n_levels × chunk_len` table indices.
    pub table_map: Vec<u16>,
}

/// A weight codec: maps normalized chunks to integer symbols and back.
///
/// Entropy coding, chunking, containers and parallel segments are the pipeline's job; a codec
/// only decides *which symbols* represent a chunk and *which tables* code them. The ECSQ baseline
/// ([`EcsqCodec`]) and the learned NWC codec implement the same trait, so every tool runs on both.
pub trait WeightCodec: Send + Sync {
    /// The family written into the file header.
    fn kind(&self) -> CodecKind;

    /// SHA-256 of the checkpoint a decoder needs (all zero when none is needed).
    fn checkpoint_hash(&self) -> [u8; 32] {
        [0; 32]
    }

    /// The chunk length the codec works best with; a [`Compressor`](crate::Compressor) made with
    /// [`Compressor::new`](crate::Compressor::new) uses it (16, the paper's, when `None`).
    fn preferred_chunk_len(&self) -> Option<usize> {
        None
    }

    /// Number of quality levels the codec distinguishes.
    fn n_levels(&self) -> usize;

    /// Tables owned by the codec (used when a record stores none).
    fn tables(&self) -> &[Table] {
        &[]
    }

    /// The finite-state context model the entropy coder follows within each chunk, for codecs
    /// whose symbol distribution depends on the symbols before it (trellis-coded quantization).
    /// With one, the table map has `n_levels` rows of which each chunk class owns
    /// `n_contexts` consecutive ones.
    fn contexts(&self) -> Option<&ContextModel> {
        None
    }

    /// Quantizes normalized chunks. `chunk_levels[k]` is the quality level of chunk `k`.
    ///
    /// # Errors
    /// [`NwcError::Unrepresentable`] when a value cannot be coded at this setting.
    fn quantize(
        &self,
        name: &str,
        chunks: &[f32],
        chunk_len: usize,
        chunk_levels: &[u8],
    ) -> Result<Quantized>;

    /// Fits the entropy model to the symbols of a whole tensor: the tables a record stores
    /// (empty when the codec's own [`WeightCodec::tables`] serve) and the `n_levels × chunk_len`
    /// table map. [`WeightCodec::quantize`] returns the same for the symbols it made; this is for
    /// symbols produced piecewise, as LDLQ does block by block.
    ///
    /// # Errors
    /// When a table cannot be built from the symbols.
    fn fit_tables(
        &self,
        symbols: &[i32],
        chunk_len: usize,
        chunk_levels: &[u8],
    ) -> Result<(Vec<Table>, Vec<u16>)>;

    /// Reconstructs normalized chunk values from decoded symbols.
    ///
    /// # Errors
    /// [`NwcError::Corrupt`] when `params` are not valid for this codec.
    fn dequantize(
        &self,
        name: &str,
        symbols: &[i32],
        chunk_len: usize,
        chunk_levels: &[u8],
        params: &[u8],
    ) -> Result<Vec<f32>>;
}

/// Relative quantizer step per quality level. A level's distortion weight in the paper's
/// importance-aware loss is λ·{0.294, 0.833, 10, 20}; the MSE-optimal uniform step scales as
/// 1/√weight, giving these ratios.
pub const LEVEL_STEP_RATIOS: [f32; 4] = [1.0, 0.594, 0.171, 0.121];

/// Entropy-coded scalar quantization (ECSQ): `q = round(y / step[level])`, coded with tables
/// fitted to each tensor's own symbol histogram (stored in the record).
///
/// It is the baseline the learned codec must beat, and a perfectly good codec in its own right:
/// at high rate it sits about 0.25 bit/value above the rate–distortion bound of a Gaussian.
#[derive(Debug, Clone, PartialEq)]
pub struct EcsqCodec {
    steps: [f32; 4],
    precision: u32,
}

impl EcsqCodec {
    /// A codec with `step` for level 0 and [`LEVEL_STEP_RATIOS`] for the others.
    ///
    /// # Errors
    /// [`NwcError::Config`] unless `step` is finite and positive.
    pub fn with_step(step: f32) -> Result<Self> {
        Self::with_level_steps(LEVEL_STEP_RATIOS.map(|r| r * step))
    }

    /// A codec with an explicit step per level.
    ///
    /// # Errors
    /// [`NwcError::Config`] unless every step is finite and positive.
    pub fn with_level_steps(steps: [f32; 4]) -> Result<Self> {
        if steps.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(NwcError::Config(format!(
                "ECSQ steps {steps:?} must be finite and > 0"
            )));
        }
        Ok(Self {
            steps,
            precision: DEFAULT_PRECISION,
        })
    }

    /// The preset for roughly `bits` bits per value on unit-RMS weights at level 0, from the
    /// high-rate approximation for a Gaussian (`H ≈ h(X) − log₂ step`, `h = 2.05` bits). The
    /// measured rate is what the file says; this only picks the step.
    ///
    /// # Errors
    /// [`NwcError::Config`] for a target outside `0.5..=16`.
    pub fn for_bits(bits: f32) -> Result<Self> {
        Self::with_step(high_rate_step(bits)?)
    }

    /// Sets the table precision (8..=16 bits).
    ///
    /// # Errors
    /// [`NwcError::Config`] outside that range.
    pub fn precision(mut self, precision: u32) -> Result<Self> {
        if !(nwc_entropy::MIN_PRECISION..=nwc_entropy::MAX_PRECISION).contains(&precision) {
            return Err(NwcError::Config(format!(
                "precision {precision} outside 8..=16"
            )));
        }
        self.precision = precision;
        Ok(self)
    }

    /// The quantizer step of each level.
    pub fn steps(&self) -> [f32; 4] {
        self.steps
    }
}

/// The uniform step of about `bits` bits per value on unit-RMS weights: the high-rate estimate for
/// a Gaussian, `H ≈ h(X) − log₂ step` with `h = 2.047` bits.
///
/// # Errors
/// [`NwcError::Config`] for a target outside `0.5..=16`.
pub(crate) fn high_rate_step(bits: f32) -> Result<f32> {
    if !(0.5..=16.0).contains(&bits) {
        return Err(NwcError::Config(format!(
            "target of {bits} bits outside 0.5..=16"
        )));
    }
    Ok((2.047 - bits).exp2())
}

/// The largest symbol magnitude ECSQ produces; beyond it the weight is refused, not wrapped.
const MAX_ABS_SYMBOL: f32 = (1u32 << 30) as f32;

/// Steps from a record's parameters: one positive finite `f32` per level (`what` names the
/// method in errors).
pub(crate) fn parse_steps(name: &str, params: &[u8], n: usize, what: &str) -> Result<Vec<f32>> {
    let corrupt = |reason: String| NwcError::Corrupt {
        name: name.to_string(),
        reason,
    };
    if params.len() != 4 * n {
        return Err(corrupt(format!(
            "{what} parameters of {} bytes",
            params.len()
        )));
    }
    let steps: Vec<f32> = params
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if steps.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(corrupt(format!("{what} steps {steps:?}")));
    }
    Ok(steps)
}

impl WeightCodec for EcsqCodec {
    fn kind(&self) -> CodecKind {
        CodecKind::Ecsq
    }

    fn n_levels(&self) -> usize {
        4
    }

    fn quantize(
        &self,
        name: &str,
        chunks: &[f32],
        chunk_len: usize,
        chunk_levels: &[u8],
    ) -> Result<Quantized> {
        let steps = self.steps;
        let symbols: Vec<i32> = chunks
            .par_chunks(chunk_len)
            .zip(chunk_levels.par_iter())
            .flat_map_iter(|(chunk, &l)| {
                let inv = 1.0 / steps[usize::from(l)];
                chunk.iter().map(move |&y| (y * inv).round())
            })
            .map(|q| {
                if q.abs() <= MAX_ABS_SYMBOL {
                    Ok(q as i32)
                } else {
                    Err(NwcError::Unrepresentable {
                        name: name.to_string(),
                        reason: format!(
                            "a value {q} quantizer steps from zero (is the weight finite and the step sane?)"
                        ),
                    })
                }
            })
            .collect::<Result<_>>()?;
        let (tables, table_map) = self.fit_tables(&symbols, chunk_len, chunk_levels)?;
        Ok(Quantized {
            symbols,
            params: steps.iter().flat_map(|s| s.to_le_bytes()).collect(),
            tables,
            table_map,
        })
    }

    fn fit_tables(
        &self,
        symbols: &[i32],
        chunk_len: usize,
        chunk_levels: &[u8],
    ) -> Result<(Vec<Table>, Vec<u16>)> {
        // One histogram table per level that occurs; absent levels point at table 0.
        let mut tables = Vec::new();
        let mut table_map = vec![0u16; 4 * chunk_len];
        for level in 0..4u8 {
            let level_symbols = || {
                symbols
                    .chunks_exact(chunk_len)
                    .zip(chunk_levels)
                    .filter(move |(_, l)| **l == level)
                    .flat_map(|(c, _)| c.iter().copied())
            };
            let Some(table) = histogram_table(level_symbols, self.precision)? else {
                continue;
            };
            let index = tables.len() as u16;
            tables.push(table);
            table_map[usize::from(level) * chunk_len..][..chunk_len].fill(index);
        }
        if tables.is_empty() {
            // An empty tensor still needs a valid (unused) table.
            tables.push(Table::from_counts(0, &[1], 0, self.precision)?);
        }
        Ok((tables, table_map))
    }

    fn dequantize(
        &self,
        name: &str,
        symbols: &[i32],
        chunk_len: usize,
        chunk_levels: &[u8],
        params: &[u8],
    ) -> Result<Vec<f32>> {
        let steps = parse_steps(name, params, 4, "ECSQ")?;
        Ok(symbols
            .par_chunks(chunk_len)
            .zip(chunk_levels.par_iter())
            .flat_map_iter(|(chunk, &l)| {
                let step = steps[usize::from(l)];
                chunk.iter().map(move |&q| q as f32 * step)
            })
            .collect())
    }
}

/// The table of a histogram of `symbols` (called twice: once for the range, once to count), or
/// `None` when there are none. At most [`MAX_SYMBOLS`] values centred on zero get their own
/// frequency; the rest escape.
pub(crate) fn histogram_table<I: Iterator<Item = i32>>(
    symbols: impl Fn() -> I,
    precision: u32,
) -> Result<Option<Table>> {
    let mut lo = i32::MAX;
    let mut hi = i32::MIN;
    for s in symbols() {
        lo = lo.min(s);
        hi = hi.max(s);
    }
    if lo > hi {
        return Ok(None);
    }
    let half = (MAX_SYMBOLS / 2) as i32;
    let lo = lo.max(-half);
    let hi = hi.min(half - 1).max(lo);
    let mut counts = vec![0u64; (hi - lo + 1) as usize];
    let mut escapes = 0u64;
    for s in symbols() {
        match usize::try_from(i64::from(s) - i64::from(lo)) {
            Ok(i) if i < counts.len() => counts[i] += 1,
            _ => escapes += 1,
        }
    }
    let precision = precision.max(bits_for(counts.len() + 1));
    Ok(Some(Table::from_counts(lo, &counts, escapes, precision)?))
}

/// The smallest precision whose `2^p` slots hold `n` symbols.
fn bits_for(n: usize) -> u32 {
    (usize::BITS - (n.max(2) - 1).leading_zeros()).max(nwc_entropy::MIN_PRECISION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantizes_within_half_a_step() {
        let codec = EcsqCodec::with_step(0.1).unwrap();
        let chunks: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) * 0.037).collect();
        let levels = [0u8, 1, 2, 3];
        let q = codec.quantize("t", &chunks, 16, &levels).unwrap();
        let back = codec
            .dequantize("t", &q.symbols, 16, &levels, &q.params)
            .unwrap();
        for (k, (a, b)) in chunks.iter().zip(&back).enumerate() {
            let step = codec.steps()[k / 16];
            assert!((a - b).abs() <= step / 2.0 + 1e-6, "{a} vs {b}");
        }
        assert_eq!(q.tables.len(), 4);
        assert_eq!(q.table_map[3 * 16], 3);
    }

    #[test]
    fn refuses_bad_configuration_and_params() {
        assert!(EcsqCodec::with_step(0.0).is_err());
        assert!(EcsqCodec::with_step(f32::NAN).is_err());
        assert!(EcsqCodec::for_bits(40.0).is_err());
        assert!(EcsqCodec::with_step(1.0).unwrap().precision(20).is_err());
        let codec = EcsqCodec::with_step(1.0).unwrap();
        assert!(codec.dequantize("t", &[0; 16], 16, &[0], &[0; 15]).is_err());
        let nan = f32::NAN.to_le_bytes().repeat(4);
        assert!(codec.dequantize("t", &[0; 16], 16, &[0], &nan).is_err());
        let huge = vec![1e30f32; 16];
        assert!(matches!(
            codec.quantize("t", &huge, 16, &[0]),
            Err(NwcError::Unrepresentable { .. })
        ));
    }

    #[test]
    fn bits_for_covers_table_sizes() {
        assert_eq!(bits_for(2), 8);
        assert_eq!(bits_for(256), 8);
        assert_eq!(bits_for(257), 9);
        assert_eq!(bits_for(4097), 13);
    }
}
