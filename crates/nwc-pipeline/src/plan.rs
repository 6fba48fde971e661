//! How a matrix is coded before any symbol exists: its scales and levels (a [`Plan`]), the
//! row slabs it is coded in, and the whole matrix's symbols gathered slab by slab.

use half::f16;
use nwc_tensor::ScaleAxis;

use crate::codec::CodecParams;
use crate::error::{NwcError, Result};

/// How a matrix the policy codes is coded: its shape, scales (from the whole matrix) and
/// per-column quality levels.
pub(crate) struct Plan {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) chunk_len: usize,
    pub(crate) axis: ScaleAxis,
    pub(crate) scales: Vec<f16>,
    pub(crate) levels: Vec<u8>,
    /// [`CompressOptions::slab_values`].
    pub(crate) slab_values: usize,
}

impl Plan {
    /// The row ranges the matrix is coded in: all of it, or slabs whose lengths are multiples
    /// of the chunk length (so a chunk never straddles two).
    pub(crate) fn slabs(&self) -> Vec<std::ops::Range<usize>> {
        row_slabs(
            self.rows,
            self.cols,
            self.chunk_len,
            self.slab_values,
            self.slab_values / 4,
        )
    }

    /// The scales that apply to rows `rows`.
    pub(crate) fn slab_scales(&self, rows: &std::ops::Range<usize>) -> Vec<f16> {
        match self.axis {
            ScaleAxis::Column => self.scales.clone(),
            ScaleAxis::Row => self.scales[rows.clone()].to_vec(),
        }
    }

    /// Chunks per column.
    pub(crate) fn blocks(&self) -> usize {
        self.rows.div_ceil(self.chunk_len)
    }

    /// The level of every chunk of the whole matrix.
    pub(crate) fn chunk_levels(&self) -> Vec<u8> {
        chunk_levels(&self.levels, self.blocks())
    }
}

/// The whole matrix's symbols, filled slab by slab (chunk `c · blocks + b` of the whole holds
/// column `c`'s rows `b · chunk_len ..`), and the codec parameters every slab must agree on.
pub(crate) struct SlabSymbols {
    per_col: usize,
    symbols: Vec<i32>,
    params: Option<CodecParams>,
}

impl SlabSymbols {
    pub(crate) fn new(plan: &Plan) -> Self {
        let per_col = plan.blocks() * plan.chunk_len;
        Self {
            per_col,
            symbols: vec![0; plan.cols * per_col],
            params: None,
        }
    }

    /// Places a slab's symbols (all its columns).
    pub(crate) fn place(
        &mut self,
        rows: &std::ops::Range<usize>,
        symbols: &[i32],
        params: &CodecParams,
        name: &str,
    ) -> Result<()> {
        let cols = self.symbols.len() / self.per_col;
        self.place_columns(rows, 0, cols, symbols, params, name)
    }

    /// Places the symbols of columns `first .. first + n` of the slab of rows `rows` (chunked as
    /// the slab: each column padded to whole chunks).
    pub(crate) fn place_columns(
        &mut self,
        rows: &std::ops::Range<usize>,
        first: usize,
        n: usize,
        symbols: &[i32],
        params: &CodecParams,
        name: &str,
    ) -> Result<()> {
        match &self.params {
            Some(p) if p != params => {
                return Err(NwcError::Config(format!(
                    "{name}: the codec's parameters changed between blocks"
                )));
            }
            Some(_) => {}
            None => self.params = Some(params.clone()),
        }
        let slab_per_col = symbols.len() / n.max(1);
        for (c, col) in symbols.chunks_exact(slab_per_col).enumerate() {
            let at = (first + c) * self.per_col + rows.start;
            // The last slab's padding is the whole matrix's padding.
            let len = slab_per_col.min(self.per_col - rows.start);
            self.symbols[at..at + len].copy_from_slice(&col[..len]);
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> (Vec<i32>, CodecParams) {
        (self.symbols, self.params.unwrap_or_default())
    }
}

pub(crate) fn sum_sq(values: &[f32]) -> f64 {
    values.iter().map(|&a| f64::from(a) * f64::from(a)).sum()
}

pub(crate) fn sum_sq_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a - b) * f64::from(a - b))
        .sum()
}

/// A tensor error of tensor `name`, a non-finite value reported as unrepresentable.
pub(crate) fn with_name(e: nwc_tensor::TensorError, name: &str) -> NwcError {
    match e {
        nwc_tensor::TensorError::NonFinite { value, row, col } => NwcError::Unrepresentable {
            name: name.to_string(),
            reason: format!("non-finite value {value} at row {row}, column {col}"),
        },
        other => other.into(),
    }
}

/// The level of every chunk: each column's level repeated for its `blocks` chunks.
pub(crate) fn chunk_levels(levels: &[u8], blocks: usize) -> Vec<u8> {
    levels
        .iter()
        .flat_map(|&l| std::iter::repeat_n(l, blocks))
        .collect()
}

/// The row ranges of a `rows × cols` matrix: all of it when it has at most `whole` values, else
/// slabs of about `slab` values whose lengths are multiples of `chunk_len` (so no chunk
/// straddles two).
pub(crate) fn row_slabs(
    rows: usize,
    cols: usize,
    chunk_len: usize,
    whole: usize,
    slab: usize,
) -> Vec<std::ops::Range<usize>> {
    let per = if rows.saturating_mul(cols) <= whole {
        rows
    } else {
        (slab / cols.max(1) / chunk_len * chunk_len).max(chunk_len)
    };
    (0..rows)
        .step_by(per.max(1))
        .map(|r| r..(r + per).min(rows))
        .collect()
}
