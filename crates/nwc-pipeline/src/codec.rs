//! The codec interface every weight codec implements, and the ECSQ baseline codec.

pub use nwc_entropy::LEVEL_STEP_RATIOS;
use nwc_entropy::{ContextModel, DEFAULT_PRECISION, MAX_SYMBOLS, Table};
use nwc_format::CodecKind;
use rayon::prelude::*;

pub use crate::dequant::{ChunkDequantizer, ChunkGrid};
use crate::error::{NwcError, Result};

/// What a codec produced for one tensor: one integer symbol per coded value, plus how to
/// entropy-code them.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// Symbols, chunk after chunk (`n_chunks × chunk_len`).
    pub symbols: Vec<i32>,
    /// Method parameters stored in the record (`docs/format.md`, "Method parameters").
    pub params: CodecParams,
    /// Tables stored in the record; empty when the codec's own [`WeightCodec::tables`] are used.
    pub tables: Vec<Table>,
    /// `n_levels × chunk_len` table indices.
    pub table_map: Vec<u16>,
}

/// A record's method parameters (`docs/format.md`, "Method parameters"), typed: what a codec
/// needs besides the symbols to reconstruct a tensor. The container stores
/// [`CodecParams::to_bytes`]; decoding parses them once, for the codec family of the file, with
/// [`CodecParams::parse`], so no codec reads bytes itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum CodecParams {
    /// Nothing (a family that needs no parameters).
    #[default]
    None,
    /// The quantizer step of each of the four quality levels (ECSQ, TCQ, NWC trellis): four
    /// positive finite `f32`.
    Steps([f32; 4]),
    /// Index into the checkpoint's list of latent steps (NWC autoencoder): one `u32`.
    StepIndex(u32),
    /// NWC trellis steps with the levels whose chunks go through the refiner (bit `l` of
    /// `refine` for level `l`; the other levels decode as plain TCQ): four `f32` and one byte.
    /// A record whose every level is refined stores [`CodecParams::Steps`] instead.
    TrellisSteps {
        /// The fine step of each level.
        steps: [f32; 4],
        /// Bit `l`: level `l`'s chunks are refined.
        refine: u8,
    },
}

impl CodecParams {
    /// The bytes a record stores.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::None => Vec::new(),
            Self::Steps(s) => s.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::StepIndex(i) => i.to_le_bytes().to_vec(),
            Self::TrellisSteps { steps, refine } => steps
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .chain([*refine])
                .collect(),
        }
    }

    /// Parses the parameters of tensor `name` for codec family `kind`.
    ///
    /// # Errors
    /// [`NwcError::Corrupt`] for a length the family does not use or a step that is not
    /// positive and finite.
    pub fn parse(kind: CodecKind, name: &str, bytes: &[u8]) -> Result<Self> {
        let corrupt = |reason: String| NwcError::Corrupt {
            name: name.to_string(),
            reason,
        };
        match kind {
            CodecKind::NwcTrellis if bytes.len() == 17 => {
                let Self::Steps(steps) = Self::parse(CodecKind::Tcq, name, &bytes[..16])? else {
                    unreachable!("TCQ parameters are steps")
                };
                match bytes[16] {
                    refine @ 0..=0b1110 => Ok(Self::TrellisSteps { steps, refine }),
                    other => Err(corrupt(format!("refined levels {other:#010b}"))),
                }
            }
            CodecKind::Ecsq | CodecKind::Tcq | CodecKind::NwcTrellis => {
                let steps: [f32; 4] = <[u8; 16]>::try_from(bytes)
                    .map_err(|_| corrupt(format!("{kind:?} parameters of {} bytes", bytes.len())))
                    .map(|b| {
                        std::array::from_fn(|i| {
                            f32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
                        })
                    })?;
                if steps.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                    return Err(corrupt(format!("{kind:?} steps {steps:?}")));
                }
                Ok(Self::Steps(steps))
            }
            CodecKind::Nwc => <[u8; 4]>::try_from(bytes)
                .map(|b| Self::StepIndex(u32::from_le_bytes(b)))
                .map_err(|_| corrupt(format!("NWC parameters of {} bytes", bytes.len()))),
            CodecKind::None if bytes.is_empty() => Ok(Self::None),
            CodecKind::None => Err(corrupt(format!("{} parameter bytes", bytes.len()))),
        }
    }

    /// Which levels' chunks the NWC trellis refiner decodes (bit `l` for level `l`): all four
    /// unless the record says otherwise.
    pub fn refined_levels(&self) -> u8 {
        match self {
            Self::TrellisSteps { refine, .. } => *refine,
            _ => 0b1111,
        }
    }

    /// The four level steps, or [`NwcError::Corrupt`] naming `name` when the parameters are of
    /// another form.
    ///
    /// # Errors
    /// As said.
    pub fn steps(&self, name: &str) -> Result<[f32; 4]> {
        match self {
            Self::Steps(s) | Self::TrellisSteps { steps: s, .. } => Ok(*s),
            other => Err(NwcError::Corrupt {
                name: name.to_string(),
                reason: format!("expected four level steps, found {other:?}"),
            }),
        }
    }
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
    /// With one, the table map has `n_levels × n_contexts` rows: a chunk of level `l` owns the
    /// `n_contexts` consecutive rows from `l · n_contexts`.
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
        params: &CodecParams,
    ) -> Result<Vec<f32>>;

    /// The dequantization of one chunk (`chunk(out, symbols, level)`, exactly what
    /// [`WeightCodec::dequantize`] does to each chunk), for codecs that work chunk by chunk:
    /// the decoder then fuses it with reassembly and never holds the tensor's normalized values.
    /// `None`, the default, means the codec needs the whole tensor (a network run in batches).
    ///
    /// # Errors
    /// As [`WeightCodec::dequantize`]: `params` or a level in `chunk_levels` not valid for this
    /// codec.
    fn chunk_dequantizer<'a>(
        &'a self,
        _name: &str,
        _chunk_levels: &[u8],
        _params: &CodecParams,
    ) -> Result<Option<ChunkDequantizer<'a>>> {
        Ok(None)
    }
}

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
        check_steps(&steps, "ECSQ")?;
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
        check_target_bits(bits)?;
        Self::with_step(nwc_entropy::scalar_step_for_bits(bits))
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

/// Refuses a preset's target rate outside `0.5..=16` bits.
///
/// # Errors
/// [`NwcError::Config`] for a target outside that range.
pub(crate) fn check_target_bits(bits: f32) -> Result<()> {
    if !(0.5..=16.0).contains(&bits) {
        return Err(NwcError::Config(format!(
            "target of {bits} bits outside 0.5..=16"
        )));
    }
    Ok(())
}

/// Refuses quantizer steps that are not all finite and positive (`what` names the codec).
///
/// # Errors
/// [`NwcError::Config`] naming the steps.
pub(crate) fn check_steps(steps: &[f32; 4], what: &str) -> Result<()> {
    if steps.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(NwcError::Config(format!(
            "{what} steps {steps:?} must be finite and > 0"
        )));
    }
    Ok(())
}

/// The largest symbol magnitude ECSQ produces; beyond it the weight is refused, not wrapped.
const MAX_ABS_SYMBOL: f32 = (1u32 << 30) as f32;

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
            params: CodecParams::Steps(steps),
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
        // One histogram table per level that occurs.
        row_tables(
            symbols,
            chunk_len,
            chunk_levels,
            4,
            self.precision,
            |l, _, rows| rows.fill(l),
        )
    }

    fn dequantize(
        &self,
        name: &str,
        symbols: &[i32],
        chunk_len: usize,
        chunk_levels: &[u8],
        params: &CodecParams,
    ) -> Result<Vec<f32>> {
        let chunk = self
            .chunk_dequantizer(name, chunk_levels, params)?
            .expect("ECSQ dequantizes chunk by chunk");
        dequantize_chunks(name, symbols, chunk_len, chunk_levels, &chunk)
    }

    fn chunk_dequantizer<'a>(
        &'a self,
        name: &str,
        chunk_levels: &[u8],
        params: &CodecParams,
    ) -> Result<Option<ChunkDequantizer<'a>>> {
        let steps = params.steps(name)?;
        if let Some(&l) = chunk_levels
            .iter()
            .find(|&&l| usize::from(l) >= steps.len())
        {
            return Err(NwcError::Corrupt {
                name: name.to_string(),
                reason: format!("quality level {l}, the codec has {}", steps.len()),
            });
        }
        let grid = ChunkGrid {
            steps: steps.to_vec(),
            walk: None,
        };
        Ok(Some(
            ChunkDequantizer::new(move |o: &mut [f32], q: &[i32], l: u8| {
                let step = steps[usize::from(l)];
                for (o, &q) in o.iter_mut().zip(q) {
                    *o = q as f32 * step;
                }
            })
            .with_grid(grid),
        ))
    }
}

/// Values per parallel task of a dequantization.
pub(crate) const DEQUANT_TASK: usize = 1 << 14;

/// A dequantization chunk by chunk: `chunk(out, symbols, level)` fills each chunk's values,
/// groups of chunks in parallel (a task is worth scheduling).
///
/// # Errors
/// [`NwcError::Corrupt`] when the symbols are not `chunk_levels.len()` whole chunks of
/// `chunk_len` (a decoded record's lengths are data).
pub(crate) fn dequantize_chunks(
    name: &str,
    symbols: &[i32],
    chunk_len: usize,
    chunk_levels: &[u8],
    chunk: &ChunkDequantizer<'_>,
) -> Result<Vec<f32>> {
    if chunk_len == 0 || symbols.len() != chunk_levels.len() * chunk_len {
        return Err(NwcError::Corrupt {
            name: name.to_string(),
            reason: format!(
                "{} symbols for {} chunks of {chunk_len}",
                symbols.len(),
                chunk_levels.len()
            ),
        });
    }
    let mut out = vec![0f32; symbols.len()];
    let per_task = (DEQUANT_TASK / chunk_len).max(1);
    out.par_chunks_mut(per_task * chunk_len)
        .zip(symbols.par_chunks(per_task * chunk_len))
        .zip(chunk_levels.par_chunks(per_task))
        .for_each(|((o, q), lv)| {
            for ((o, q), &l) in o
                .chunks_exact_mut(chunk_len)
                .zip(q.chunks_exact(chunk_len))
                .zip(lv)
            {
                chunk.chunk(o, q, l);
            }
        });
    Ok(out)
}

/// One histogram table per table-map row that occurs, and the map (`n_rows × chunk_len` entries,
/// every position of a row naming its table; rows without symbols name table 0, and an empty
/// tensor still gets one valid, unused table). `pairs()` yields every symbol with its row, and is
/// called twice: once for the ranges, once to count. Pairs with a row past `n_rows` are ignored.
/// At most [`MAX_SYMBOLS`] values per row, centred on zero, get their own frequency; the rest
/// escape.
pub(crate) fn row_tables(
    symbols: &[i32],
    chunk_len: usize,
    chunk_levels: &[u8],
    n_rows: usize,
    precision: u32,
    rows_of: impl Fn(u8, &[i32], &mut [u8]) + Sync,
) -> Result<(Vec<Table>, Vec<u16>)> {
    // Both passes run on groups of chunks in parallel; each group finds its symbols' rows
    // (`rows_of`: the level and the chunk's symbols to a row per symbol) and merges integer
    // counts, so the tables do not depend on the thread count.
    let per_task = (DEQUANT_TASK / chunk_len.max(1)).max(1);
    let group = per_task * chunk_len.max(1);
    // Every symbol's row, once: only whole chunks with a level count.
    let covered = (symbols.len() / chunk_len.max(1)).min(chunk_levels.len()) * chunk_len;
    let symbols = &symbols[..covered];
    let mut rows = vec![0u8; covered];
    rows.par_chunks_mut(group)
        .zip(symbols.par_chunks(group))
        .zip(chunk_levels.par_chunks(per_task))
        .for_each(|((r, s), lv)| {
            for ((r, c), &l) in r
                .chunks_exact_mut(chunk_len)
                .zip(s.chunks_exact(chunk_len))
                .zip(lv)
            {
                rows_of(l, c, r);
            }
        });
    let groups = || symbols.par_chunks(group).zip(rows.par_chunks(group));
    fn visit(s: &[i32], rows: &[u8], mut f: impl FnMut(usize, i32)) {
        for (&r, &v) in rows.iter().zip(s) {
            f(usize::from(r), v);
        }
    }
    let range = groups()
        .map(|(s, rows)| {
            let mut range = vec![(i32::MAX, i32::MIN); n_rows];
            visit(s, rows, |row, v| {
                if let Some((lo, hi)) = range.get_mut(row) {
                    *lo = (*lo).min(v);
                    *hi = (*hi).max(v);
                }
            });
            range
        })
        .reduce(
            || vec![(i32::MAX, i32::MIN); n_rows],
            |a, b| {
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| (x.0.min(y.0), x.1.max(y.1)))
                    .collect()
            },
        );
    let half = (MAX_SYMBOLS / 2) as i32;
    // Per row: the first in-range symbol and the number of in-range symbols (None: no symbols).
    let spans: Vec<Option<(i32, usize)>> = range
        .iter()
        .map(|&(lo, hi)| {
            (lo <= hi).then(|| {
                let lo = lo.max(-half);
                let hi = hi.min(half - 1).max(lo);
                (lo, (hi - lo + 1) as usize)
            })
        })
        .collect();
    let empty = || {
        spans
            .iter()
            .map(|s| s.map(|(_, n)| (vec![0u64; n], 0u64)))
            .collect::<Vec<_>>()
    };
    let hist = groups()
        .map(|(s, rows)| {
            let mut hist = empty();
            visit(s, rows, |row, v| {
                if let (Some(Some((counts, escapes))), Some(Some((lo, _)))) =
                    (hist.get_mut(row), spans.get(row))
                {
                    match usize::try_from(i64::from(v) - i64::from(*lo)) {
                        Ok(i) if i < counts.len() => counts[i] += 1,
                        _ => *escapes += 1,
                    }
                }
            });
            hist
        })
        .reduce(empty, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                if let (Some((cx, ex)), Some((cy, ey))) = (x.as_mut(), y) {
                    cx.iter_mut().zip(cy).for_each(|(p, q)| *p += q);
                    *ex += ey;
                }
            }
            a
        });
    let mut tables = Vec::new();
    let mut table_map = vec![0u16; n_rows * chunk_len];
    for (row, (h, span)) in hist.into_iter().zip(&spans).enumerate() {
        let (Some((counts, escapes)), Some((lo, _))) = (h, span) else {
            continue;
        };
        let p = precision.max(bits_for(counts.len() + 1));
        table_map[row * chunk_len..][..chunk_len].fill(tables.len() as u16);
        tables.push(Table::from_counts(*lo, &counts, escapes, p)?);
    }
    if tables.is_empty() {
        tables.push(Table::from_counts(0, &[1], 0, precision)?);
    }
    Ok((tables, table_map))
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
        assert!(CodecParams::parse(CodecKind::Ecsq, "t", &[0; 15]).is_err());
        let nan = f32::NAN.to_le_bytes().repeat(4);
        assert!(CodecParams::parse(CodecKind::Ecsq, "t", &nan).is_err());
        assert!(CodecParams::parse(CodecKind::Nwc, "t", &[0; 4]).is_ok());
        assert!(CodecParams::parse(CodecKind::None, "t", &[0]).is_err());
        // Parameters of another family's form are refused, not misread.
        let index = CodecParams::StepIndex(3);
        assert!(codec.dequantize("t", &[0; 16], 16, &[0], &index).is_err());
        let steps = CodecParams::Steps([0.5, 1.0, 2.0, 4.0]);
        let back = CodecParams::parse(CodecKind::Ecsq, "t", &steps.to_bytes()).unwrap();
        assert_eq!(back, steps);
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
