//! Chunk-and-normalize: a weight matrix becomes unit-scale 16-value column chunks and back.

use half::f16;
use ndarray::{Array2, ArrayView2};

use crate::error::{Result, TensorError};

/// Which axis carries one normalization scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleAxis {
    /// One scale per input column (the paper). Chunks lie within a column, so a chunk shares one
    /// scale, and the scale follows the column that LDLQ walks.
    #[default]
    Column,
    /// One scale per output row (the authors' released code).
    Row,
}

impl ScaleAxis {
    /// The code `docs/format.md` gives this axis.
    pub fn code(self) -> u8 {
        match self {
            ScaleAxis::Column => 0,
            ScaleAxis::Row => 1,
        }
    }

    /// The axis of a format code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(ScaleAxis::Column),
            1 => Some(ScaleAxis::Row),
            _ => None,
        }
    }
}

/// How a scale is rounded before it is stored (as f16).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScaleRounding {
    /// The nearest f16 (the paper). Normalizing and denormalizing then costs at most one f32
    /// rounding: the inverse is exact to within 1 ulp.
    #[default]
    Fp16,
    /// The nearest power of two (in the log domain). Dividing and multiplying by a power of two is
    /// exact, so normalization round-trips bit for bit, at the price of normalized scales anywhere
    /// in `[1/√2, √2)`.
    PowerOfTwo,
}

/// Chunking parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkConfig {
    /// Values per chunk (16 in the paper).
    pub chunk_len: usize,
    /// Which axis is normalized.
    pub axis: ScaleAxis,
    /// How scales are rounded.
    pub rounding: ScaleRounding,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        Self {
            chunk_len: 16,
            axis: ScaleAxis::Column,
            rounding: ScaleRounding::Fp16,
        }
    }
}

/// The largest chunk length the format allows.
pub const MAX_CHUNK_LEN: usize = 64;

/// A normalized matrix cut into column chunks.
///
/// Chunk `k = c · blocks + b` holds rows `b·chunk_len ..` of column `c` divided by their scale;
/// rows past the end of the matrix are zero padding.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunked {
    rows: usize,
    cols: usize,
    chunk_len: usize,
    axis: ScaleAxis,
    scales: Vec<f16>,
    data: Vec<f32>,
}

/// The root mean square of the values as an f16 scale, clamped into f16's normal range. An
/// all-zero line gets scale 1 (there is nothing to normalize), so nothing ever divides by zero.
fn scale_of(sum_sq: f64, n: usize, rounding: ScaleRounding) -> f16 {
    let rms = (sum_sq / n.max(1) as f64).sqrt();
    if rms == 0.0 {
        return f16::ONE;
    }
    let min = f64::from(f16::MIN_POSITIVE.to_f32());
    let max = f64::from(f16::MAX.to_f32());
    let rms = rms.clamp(min, max);
    match rounding {
        ScaleRounding::Fp16 => f16::from_f64(rms),
        ScaleRounding::PowerOfTwo => f16::from_f64(rms.log2().round().clamp(-14.0, 15.0).exp2()),
    }
}

/// Normalizes and chunks a matrix.
///
/// # Errors
/// [`TensorError::NonFinite`] for a NaN or infinity (nothing sensible can be coded);
/// [`TensorError::Shape`] for an empty matrix or a chunk length outside `1..=64`.
pub fn chunk(w: ArrayView2<'_, f32>, cfg: &ChunkConfig) -> Result<Chunked> {
    let (rows, cols) = w.dim();
    let mut sums = ScaleSums::new(rows, cols, cfg)?;
    sums.add(0, w)?;
    chunk_with_scales(w, cfg, sums.finish())
}

/// The normalization scales of a matrix that arrives in row slabs (a matrix too large to hold
/// twice is normalized slab by slab, with the scales of the whole): [`ScaleSums::add`] each
/// slab, then [`ScaleSums::finish`]. [`chunk`] is this with one slab.
#[derive(Debug, Clone)]
pub struct ScaleSums {
    rows: usize,
    cols: usize,
    cfg: ChunkConfig,
    sums: Vec<f64>,
}

impl ScaleSums {
    /// Sums for a `rows × cols` matrix.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for an empty matrix or a chunk length outside `1..=64`.
    pub fn new(rows: usize, cols: usize, cfg: &ChunkConfig) -> Result<Self> {
        let shape_err = |reason: String| TensorError::Shape {
            name: String::new(),
            reason,
        };
        if rows == 0 || cols == 0 {
            return Err(shape_err(format!(
                "cannot chunk an empty {rows}×{cols} matrix"
            )));
        }
        if cfg.chunk_len == 0 || cfg.chunk_len > MAX_CHUNK_LEN {
            return Err(shape_err(format!(
                "chunk length {} outside 1..={MAX_CHUNK_LEN}",
                cfg.chunk_len
            )));
        }
        let n = match cfg.axis {
            ScaleAxis::Column => cols,
            ScaleAxis::Row => rows,
        };
        Ok(Self {
            rows,
            cols,
            cfg: *cfg,
            sums: vec![0.0; n],
        })
    }

    /// Adds the rows `first ..` of the matrix.
    ///
    /// # Errors
    /// [`TensorError::NonFinite`] (with the row in the whole matrix) for a NaN or infinity;
    /// [`TensorError::Shape`] when the slab does not fit the matrix.
    pub fn add(&mut self, first: usize, slab: ArrayView2<'_, f32>) -> Result<()> {
        let (rows, cols) = slab.dim();
        if cols != self.cols || first + rows > self.rows {
            return Err(TensorError::Shape {
                name: String::new(),
                reason: format!(
                    "rows {first}..{} × {cols} of a {}×{} matrix",
                    first + rows,
                    self.rows,
                    self.cols
                ),
            });
        }
        if let Some(((row, col), &value)) = slab.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(TensorError::NonFinite {
                value,
                row: first + row,
                col,
            });
        }
        match self.cfg.axis {
            ScaleAxis::Column => {
                for row in slab.rows() {
                    for (s, &v) in self.sums.iter_mut().zip(row) {
                        *s += f64::from(v) * f64::from(v);
                    }
                }
            }
            ScaleAxis::Row => {
                for (s, r) in self.sums[first..].iter_mut().zip(slab.rows()) {
                    *s += r.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>();
                }
            }
        }
        Ok(())
    }

    /// The scales (one per column or per row, as the configuration's axis says).
    pub fn finish(self) -> Vec<f16> {
        let n = match self.cfg.axis {
            ScaleAxis::Column => self.rows,
            ScaleAxis::Row => self.cols,
        };
        self.sums
            .iter()
            .map(|&s| scale_of(s, n, self.cfg.rounding))
            .collect()
    }
}

/// Normalizes and chunks a matrix (or a slab of rows of one) with given scales: one per column,
/// or one per row of `w` for [`ScaleAxis::Row`].
///
/// # Errors
/// [`TensorError::Shape`] for an empty matrix, a chunk length outside `1..=64` or a wrong number
/// of scales (scales that are not finite and positive too).
pub fn chunk_with_scales(
    w: ArrayView2<'_, f32>,
    cfg: &ChunkConfig,
    scales: Vec<f16>,
) -> Result<Chunked> {
    let (rows, cols) = w.dim();
    let l = cfg.chunk_len;
    let blocks = rows.div_ceil(l.max(1));
    let mut data = vec![0.0f32; cols * blocks * l];
    {
        let n = match cfg.axis {
            ScaleAxis::Column => cols,
            ScaleAxis::Row => rows,
        };
        if scales.len() == n {
            let scale = |r: usize, c: usize| match cfg.axis {
                ScaleAxis::Column => scales[c].to_f32(),
                ScaleAxis::Row => scales[r].to_f32(),
            };
            for ((r, c), &v) in w.indexed_iter() {
                data[c * blocks * l + r] = v / scale(r, c);
            }
        }
    }
    Chunked::from_parts(rows, cols, l, cfg.axis, scales, data)
}

impl Chunked {
    /// Reassembles chunked data (for example a decoder's output) with its scales.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the lengths do not fit `rows × cols` or a scale is not finite
    /// and positive.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        chunk_len: usize,
        axis: ScaleAxis,
        scales: Vec<f16>,
        data: Vec<f32>,
    ) -> Result<Self> {
        let err = |reason: String| {
            Err(TensorError::Shape {
                name: String::new(),
                reason,
            })
        };
        if rows == 0 || cols == 0 || chunk_len == 0 || chunk_len > MAX_CHUNK_LEN {
            return err(format!(
                "{rows}×{cols} in chunks of {chunk_len} is not valid"
            ));
        }
        let n_scales = match axis {
            ScaleAxis::Column => cols,
            ScaleAxis::Row => rows,
        };
        if scales.len() != n_scales {
            return err(format!("{} scales, expected {n_scales}", scales.len()));
        }
        if let Some(s) = scales.iter().find(|s| !(s.is_finite() && s.to_f32() > 0.0)) {
            return err(format!("scale {s} is not finite and positive"));
        }
        let expected = rows
            .div_ceil(chunk_len)
            .checked_mul(chunk_len)
            .and_then(|v| v.checked_mul(cols));
        if expected != Some(data.len()) {
            return err(format!(
                "{} values do not fill {rows}×{cols} chunks",
                data.len()
            ));
        }
        Ok(Self {
            rows,
            cols,
            chunk_len,
            axis,
            scales,
            data,
        })
    }

    /// Rows of the original matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of the original matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Values per chunk.
    pub fn chunk_len(&self) -> usize {
        self.chunk_len
    }

    /// Chunks per column, `ceil(rows / chunk_len)`.
    pub fn blocks(&self) -> usize {
        self.rows.div_ceil(self.chunk_len)
    }

    /// Total number of chunks.
    pub fn n_chunks(&self) -> usize {
        self.cols * self.blocks()
    }

    /// The normalization axis.
    pub fn axis(&self) -> ScaleAxis {
        self.axis
    }

    /// The stored scales (per column or per row).
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }

    /// All chunks, back to back (`n_chunks × chunk_len` values).
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// All chunks, mutable (a codec writes its reconstruction here).
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// The column a chunk belongs to.
    pub fn column_of_chunk(&self, k: usize) -> usize {
        k / self.blocks()
    }

    /// Undoes chunking and normalization (padding dropped), in f32.
    pub fn to_matrix(&self) -> Array2<f32> {
        let (l, blocks) = (self.chunk_len, self.blocks());
        Array2::from_shape_fn((self.rows, self.cols), |(r, c)| {
            let s = match self.axis {
                ScaleAxis::Column => self.scales[c],
                ScaleAxis::Row => self.scales[r],
            };
            self.data[c * blocks * l + r] * s.to_f32()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn padding_zero_and_constant_columns() {
        // 20 rows: 2 blocks of 16, the second padded. Column 1 is all zero, column 2 constant.
        let w = Array2::from_shape_fn((20, 3), |(r, c)| match c {
            0 => r as f32 - 9.5,
            1 => 0.0,
            _ => -3.0,
        });
        let ch = chunk(w.view(), &ChunkConfig::default()).unwrap();
        assert_eq!((ch.blocks(), ch.n_chunks()), (2, 6));
        assert_eq!(ch.scales()[1], f16::ONE);
        assert_eq!(ch.scales()[2].to_f32(), 3.0);
        assert!(
            ch.data()[16 + 4..32].iter().all(|&v| v == 0.0),
            "padding is zero"
        );
        assert!(ch.data().iter().all(|v| v.is_finite()));
        let back = ch.to_matrix();
        for (a, b) in back.iter().zip(w.iter()) {
            assert!((a - b).abs() <= b.abs() * 2.0 * f32::EPSILON);
        }
    }

    #[test]
    fn non_finite_and_empty_are_errors() {
        let mut w = Array2::<f32>::ones((16, 2));
        w[[3, 1]] = f32::NAN;
        match chunk(w.view(), &ChunkConfig::default()) {
            Err(TensorError::NonFinite { row: 3, col: 1, .. }) => {}
            other => panic!("expected NonFinite, got {other:?}"),
        }
        w[[3, 1]] = f32::INFINITY;
        assert!(chunk(w.view(), &ChunkConfig::default()).is_err());
        let e = Array2::<f32>::zeros((0, 4));
        assert!(chunk(e.view(), &ChunkConfig::default()).is_err());
        let cfg = ChunkConfig {
            chunk_len: 0,
            ..ChunkConfig::default()
        };
        assert!(chunk(Array2::<f32>::ones((4, 4)).view(), &cfg).is_err());
    }

    #[test]
    fn extreme_magnitudes_stay_finite() {
        let w = Array2::from_shape_fn(
            (16, 2),
            |(r, c)| if c == 0 { 1e-30 * r as f32 } else { 3e38 },
        );
        let ch = chunk(w.view(), &ChunkConfig::default()).unwrap();
        assert!(ch.data().iter().all(|v| v.is_finite()));
        assert!(
            ch.scales()
                .iter()
                .all(|s| s.is_finite() && s.to_f32() > 0.0)
        );
    }

    #[test]
    fn from_parts_validates() {
        let s = vec![f16::ONE; 2];
        assert!(
            Chunked::from_parts(16, 2, 16, ScaleAxis::Column, s.clone(), vec![0.0; 32]).is_ok()
        );
        assert!(
            Chunked::from_parts(16, 2, 16, ScaleAxis::Column, s.clone(), vec![0.0; 31]).is_err()
        );
        assert!(Chunked::from_parts(16, 2, 16, ScaleAxis::Row, s.clone(), vec![0.0; 32]).is_err());
        let z = vec![f16::ZERO; 2];
        assert!(Chunked::from_parts(16, 2, 16, ScaleAxis::Column, z, vec![0.0; 32]).is_err());
    }

    proptest! {
        #[test]
        fn power_of_two_scales_round_trip_bit_exactly(
            rows in 1usize..40, cols in 1usize..6, seed in any::<u64>(), row_axis in any::<bool>()
        ) {
            let mut x = seed;
            let w = Array2::from_shape_fn((rows, cols), |_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.02
            });
            let cfg = ChunkConfig {
                chunk_len: 16,
                axis: if row_axis { ScaleAxis::Row } else { ScaleAxis::Column },
                rounding: ScaleRounding::PowerOfTwo,
            };
            let ch = chunk(w.view(), &cfg).unwrap();
            prop_assert_eq!(ch.to_matrix(), w.clone());
            // The default f16 scales are exact to within one rounding.
            let ch = chunk(w.view(), &ChunkConfig { rounding: ScaleRounding::Fp16, ..cfg }).unwrap();
            for (a, b) in ch.to_matrix().iter().zip(w.iter()) {
                prop_assert!((a - b).abs() <= b.abs() * f32::EPSILON * 1.001 + f32::MIN_POSITIVE);
            }
        }
    }
}
