//! Entropy-constrained trellis-coded quantization (ECTCQ): a space-filling quantizer for
//! normalized weights or for the learned codec's latents.
//!
//! The reproduction grid is `j·δ` for integers `j`, split into the four subsets
//! `D_r = {j ≡ r mod 4}`. An 8-state trellis ([`ContextModel::tcq8`]) lets each value use only
//! the union codebook of its state (`D0 ∪ D2` in even states, `D1 ∪ D3` in odd ones), and the
//! Viterbi search picks the path of least `distortion + λ·bits` through a whole chunk. A value is
//! sent as its index `k` in the union codebook (`j = 2k + u`, `u` the state's parity), with one
//! table per quality level and union, so the decoder follows the state from the symbols alone.
//!
//! At high rate this is worth about 1 dB of MSE over a scalar quantizer at the same entropy
//! (Marcellin & Fischer; JPEG 2000 Part 2 uses the same trellis).

use nwc_entropy::{ContextModel, RateModel, Table, TrellisWalk, reconstruct_chunk, viterbi_chunks};
use nwc_format::CodecKind;
use rayon::prelude::*;

use crate::codec::{
    CodecParams, Quantized, WeightCodec, check_steps, check_target_bits, row_tables,
};
use crate::error::{NwcError, Result};

/// The largest union index a value may need before it is refused (not wrapped).
const MAX_ABS_INDEX: f32 = (1u32 << 29) as f32;

/// How the trellis search runs.
struct Search<'a> {
    model: &'a ContextModel,
    /// 1 / fine step, per quality level.
    inv_steps: &'a [f32],
    lambda: f32,
    passes: usize,
    precision: u32,
}

/// Chunks per parallel task of the trellis search.
const SEARCH_TASK: usize = 64;

/// Runs ECTCQ on chunks: a first pass on distortion alone, then `passes` passes with the rate of
/// tables fitted to the previous pass. Returns the symbols and the final tables / table map
/// (rows `2·level + union`).
fn quantize_chunks(
    search: &Search<'_>,
    name: &str,
    chunks: &[f32],
    chunk_len: usize,
    chunk_levels: &[u8],
) -> Result<(Vec<i32>, Vec<nwc_entropy::Table>, Vec<u16>)> {
    let Search {
        model,
        inv_steps,
        lambda,
        passes,
        precision,
    } = *search;
    // The values in fine steps, once: every pass searches the same numbers.
    let mut scaled = chunks.to_vec();
    for (c, &l) in scaled.chunks_mut(chunk_len).zip(chunk_levels) {
        let inv = inv_steps[usize::from(l)];
        for v in c.iter_mut() {
            *v *= inv;
            if v.is_nan() || v.abs() > MAX_ABS_INDEX {
                return Err(NwcError::Unrepresentable {
                    name: name.to_string(),
                    reason: format!(
                        "a value {v} trellis steps from zero (is the weight finite and the step sane?)"
                    ),
                });
            }
        }
    }
    let n_levels = inv_steps.len();
    let mut rates: Vec<RateModel> = vec![RateModel::flat(); n_levels];
    let mut symbols = vec![0i32; chunks.len()];
    let mut fitted = None;
    for pass in 0..=passes {
        let lam = if pass == 0 { 0.0 } else { lambda };
        // Tasks of SEARCH_TASK chunks; within one, each run of chunks at one level is searched
        // side by side (`viterbi_chunks`).
        symbols
            .par_chunks_mut(SEARCH_TASK * chunk_len)
            .zip(scaled.par_chunks(SEARCH_TASK * chunk_len))
            .zip(chunk_levels.par_chunks(SEARCH_TASK))
            .for_each(|((out, c), levels)| {
                let mut first = 0;
                for run in levels.chunk_by(|a, b| a == b) {
                    let (from, to) = (first * chunk_len, (first + run.len()) * chunk_len);
                    let to = to.min(c.len());
                    let rate = &rates[usize::from(run[0])];
                    viterbi_chunks(
                        model,
                        &c[from..to],
                        chunk_len,
                        lam,
                        rate,
                        &mut out[from..to],
                    );
                    first += run.len();
                }
            });
        let (tables, map) = fit_tables(
            model,
            &symbols,
            chunk_len,
            chunk_levels,
            n_levels,
            precision,
        )?;
        if pass < passes {
            for (l, r) in rates.iter_mut().enumerate() {
                let row = |u: usize| &tables[usize::from(map[(2 * l + u) * chunk_len])];
                *r = RateModel::from_tables([row(0), row(1)]);
            }
        }
        fitted = Some((tables, map));
    }
    let (tables, map) = fitted.expect("at least one pass");
    Ok((symbols, tables, map))
}

/// One histogram table per (level, union) that occurs; the table map has `2·n_levels` rows,
/// row `2·level + union`. The union of each symbol comes from walking the trellis.
pub(crate) fn fit_tables(
    model: &ContextModel,
    symbols: &[i32],
    chunk_len: usize,
    chunk_levels: &[u8],
    n_levels: usize,
    precision: u32,
) -> Result<(Vec<nwc_entropy::Table>, Vec<u16>)> {
    // With two contexts (every shipped trellis) a context is the walk's unit, four symbols to a
    // dependent step; otherwise the model is walked symbol by symbol.
    let walk = (model.n_contexts() <= 2).then(|| TrellisWalk::new(model));
    row_tables(
        symbols,
        chunk_len,
        chunk_levels,
        2 * n_levels,
        precision,
        |l, chunk, rows| {
            // Rows past `2·n_levels` (a level out of range) are ignored by `row_tables`.
            let base = (2 * usize::from(l)).min(255) as u8;
            if let Some(walk) = &walk {
                walk.units(chunk, rows);
                for r in rows.iter_mut() {
                    *r = base.saturating_add(*r);
                }
                return;
            }
            let mut q = 0u8;
            for (&k, row) in chunk.iter().zip(rows) {
                *row = (2 * usize::from(l) + model.context(q)).min(255) as u8;
                q = model.next(q, k);
            }
        },
    )
}

/// Rate–distortion trade-off of the search, in squared fine steps per bit (measured best on
/// held-out MiniLM weights, `docs/rd.md`).
pub const DEFAULT_TCQ_LAMBDA: f32 = 0.15;

/// Values per trellis run (the chunk length TCQ asks the pipeline for): the trellis restarts
/// with every chunk, so longer chunks lose less at the start of each run.
pub const DEFAULT_TCQ_RUN: usize = 64;

/// Entropy-constrained trellis-coded quantization of normalized weights, the space-filling
/// baseline: `8` states, fine step `δ[level]`, tables fitted to each tensor per level and union
/// codebook (stored in the record).
///
/// It plugs into the pipeline like [`EcsqCodec`](crate::EcsqCodec), at about 0.8× its MSE at the
/// same measured rate.
#[derive(Debug, Clone, PartialEq)]
pub struct TcqCodec {
    run: usize,
    steps: [f32; 4],
    lambda: f32,
    passes: usize,
    precision: u32,
    model: ContextModel,
}

impl TcqCodec {
    /// A codec with fine step `step` for level 0 and [`LEVEL_STEP_RATIOS`](crate::codec::LEVEL_STEP_RATIOS)
    /// for the others.
    ///
    /// # Errors
    /// [`NwcError::Config`] unless `step` is finite and positive.
    pub fn with_step(step: f32) -> Result<Self> {
        Self {
            run: DEFAULT_TCQ_RUN,
            steps: crate::codec::LEVEL_STEP_RATIOS,
            lambda: DEFAULT_TCQ_LAMBDA,
            passes: 2,
            precision: nwc_entropy::DEFAULT_PRECISION,
            model: ContextModel::tcq8(),
        }
        .with_level0_step(step)
    }

    /// The preset for roughly `bits` bits per value on unit-RMS weights at level 0 (the
    /// high-rate estimate; [`crate::tune_to_rate`] hits a file rate exactly).
    ///
    /// # Errors
    /// [`NwcError::Config`] for a target outside `0.5..=16`.
    pub fn for_bits(bits: f32) -> Result<Self> {
        check_target_bits(bits)?;
        Self::with_step(nwc_entropy::tcq_step_for_bits(bits))
    }

    /// Sets the search's rate–distortion trade-off (squared fine steps per bit, ≥ 0).
    ///
    /// # Errors
    /// [`NwcError::Config`] for a negative or non-finite value.
    pub fn lambda(mut self, lambda: f32) -> Result<Self> {
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(NwcError::Config(format!("TCQ lambda {lambda}")));
        }
        self.lambda = lambda;
        Ok(self)
    }

    /// Sets the trellis run length, the chunk length the codec asks the pipeline for (1..=64).
    ///
    /// # Errors
    /// [`NwcError::Config`] outside 1..=64.
    pub fn run_len(mut self, run: usize) -> Result<Self> {
        if !(1..=64).contains(&run) {
            return Err(NwcError::Config(format!(
                "TCQ run of {run} values, expected 1..=64"
            )));
        }
        self.run = run;
        Ok(self)
    }

    /// The fine step of each level.
    pub fn steps(&self) -> [f32; 4] {
        self.steps
    }

    /// The same codec with fine step `step` at level 0 (the others keep their ratios).
    ///
    /// # Errors
    /// [`NwcError::Config`] unless `step` is finite and positive.
    pub fn with_level0_step(&self, step: f32) -> Result<Self> {
        let steps = crate::codec::LEVEL_STEP_RATIOS.map(|r| r * step);
        check_steps(&steps, "TCQ")?;
        Ok(Self {
            steps,
            ..self.clone()
        })
    }

    /// Grid positions (in fine steps) of union indices, chunk by chunk (`chunk_len` values, the
    /// trellis restarting with each).
    pub fn grid(&self, symbols: &[i32], chunk_len: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; symbols.len()];
        let per_task = crate::codec::DEQUANT_TASK.div_ceil(chunk_len.max(1)) * chunk_len.max(1);
        out.par_chunks_mut(per_task)
            .zip(symbols.par_chunks(per_task))
            .for_each(|(o, s)| {
                for (o, s) in o
                    .chunks_mut(chunk_len.max(1))
                    .zip(s.chunks(chunk_len.max(1)))
                {
                    reconstruct_chunk(&self.model, s, o);
                }
            });
        out
    }
}

/// Checks that every chunk level is one of TCQ's four (a decoded record's levels are data).
///
/// # Errors
/// [`NwcError::Corrupt`] naming the first bad level.
pub fn check_levels(name: &str, chunk_levels: &[u8]) -> Result<()> {
    match chunk_levels.iter().find(|&&l| l >= 4) {
        Some(l) => Err(NwcError::Corrupt {
            name: name.to_string(),
            reason: format!("quality level {l}, TCQ has 4"),
        }),
        None => Ok(()),
    }
}

impl WeightCodec for TcqCodec {
    fn kind(&self) -> CodecKind {
        CodecKind::Tcq
    }

    fn n_levels(&self) -> usize {
        4
    }

    fn preferred_chunk_len(&self) -> Option<usize> {
        Some(self.run)
    }

    fn contexts(&self) -> Option<&ContextModel> {
        Some(&self.model)
    }

    fn quantize(
        &self,
        name: &str,
        chunks: &[f32],
        chunk_len: usize,
        chunk_levels: &[u8],
    ) -> Result<Quantized> {
        check_levels(name, chunk_levels)?;
        let inv = self.steps.map(|s| 1.0 / s);
        let search = Search {
            model: &self.model,
            inv_steps: &inv,
            lambda: self.lambda,
            passes: self.passes,
            precision: self.precision,
        };
        let (symbols, tables, table_map) =
            quantize_chunks(&search, name, chunks, chunk_len, chunk_levels)?;
        Ok(Quantized {
            symbols,
            params: CodecParams::Steps(self.steps),
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
        fit_tables(
            &self.model,
            symbols,
            chunk_len,
            chunk_levels,
            4,
            self.precision,
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
            .expect("TCQ dequantizes chunk by chunk");
        crate::codec::dequantize_chunks(name, symbols, chunk_len, chunk_levels, &chunk)
    }

    fn chunk_dequantizer<'a>(
        &'a self,
        name: &str,
        chunk_levels: &[u8],
        params: &CodecParams,
    ) -> Result<Option<crate::codec::ChunkDequantizer<'a>>> {
        check_levels(name, chunk_levels)?;
        let steps = params.steps(name)?;
        // The trellis walk and the step in one pass.
        let walk = nwc_entropy::TrellisWalk::new(&self.model);
        let grid = walk.eight().map(|w| crate::codec::ChunkGrid {
            steps: steps.to_vec(),
            walk: Some(w),
        });
        let chunk = crate::codec::ChunkDequantizer::new(move |o: &mut [f32], s: &[i32], l: u8| {
            walk.reconstruct(s, steps[usize::from(l)], o);
        });
        Ok(Some(match grid {
            Some(g) => chunk.with_grid(g),
            None => chunk,
        }))
    }
}
