//! Symbols back to a tensor: dequantization, chunks reassembled with their scales and rounded
//! to the output type, a slab of rows at a time. The decoder and the compressor's error report
//! share it, so the report measures exactly what decoding yields.

use half::f16;
use nwc_tensor::{DType, ScaleAxis, Tensor};

use crate::codec::{CodecParams, WeightCodec};
use crate::error::{NwcError, Result};
use crate::plan::row_slabs;

/// Where a coded tensor's chunks sit: the matrix view, the chunk length and the scales.
pub(crate) struct Layout {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) chunk_len: usize,
    pub(crate) axis: ScaleAxis,
    pub(crate) scales: Vec<f16>,
}

/// Values per row slab when a decoder reassembles a large matrix (dequantization is per chunk,
/// so the slab size never changes the result, only the memory: the symbols, the output and one
/// slab in between; test `slab_decoding_is_whole_decoding`).
pub(crate) const DECODE_SLAB_VALUES: usize = 1 << 23;

/// Symbols to the tensor a decoder returns: the codec's dequantization, chunks reassembled with
/// their scales, rounding to `dtype`, a slab of rows at a time. The decoder and the
/// compressor's error report share it, so the report measures exactly what decoding yields.
#[allow(clippy::too_many_arguments)]
pub(crate) fn reconstruct(
    codec: &dyn WeightCodec,
    name: &str,
    dtype: DType,
    shape: Vec<usize>,
    layout: Layout,
    symbols: &[i32],
    chunk_levels: &[u8],
    params: &CodecParams,
    slab_values: usize,
) -> Result<Tensor> {
    let Layout {
        rows,
        cols,
        chunk_len: l,
        axis,
        scales,
    } = layout;
    let corrupt = |reason: String| NwcError::Corrupt {
        name: name.to_string(),
        reason,
    };
    let blocks = rows.div_ceil(l.max(1));
    let n_scales = match axis {
        ScaleAxis::Column => cols,
        ScaleAxis::Row => rows,
    };
    if l == 0
        || scales.len() != n_scales
        || Some(chunk_levels.len()) != cols.checked_mul(blocks)
        || Some(symbols.len()) != chunk_levels.len().checked_mul(l)
    {
        return Err(corrupt(format!(
            "{} symbols, {} chunk levels and {} scales for {rows}×{cols} in chunks of {l}",
            symbols.len(),
            chunk_levels.len(),
            scales.len()
        )));
    }
    let scale_f32: Vec<f32> = scales.iter().map(|s| s.to_f32()).collect();
    if let Some(s) = scale_f32.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(corrupt(format!("scale {s} is not finite and positive")));
    }
    if rows == 0 || cols == 0 || l > nwc_tensor::MAX_CHUNK_LEN {
        return Err(corrupt(format!(
            "{rows}×{cols} in chunks of {l} is not valid"
        )));
    }
    let size = match dtype {
        DType::F32 | DType::F16 | DType::BF16 => dtype.size(),
        other => {
            return Err(nwc_tensor::TensorError::UnsupportedDtype {
                name: name.to_string(),
                dtype: other.to_string(),
            }
            .into());
        }
    };
    let per_col = blocks * l;
    let slabs = row_slabs(rows, cols, l, slab_values, slab_values);
    let mut bytes = vec![0u8; rows * cols * size];
    for slab in &slabs {
        let sb = slab.len().div_ceil(l);
        let (s, lv) = if slabs.len() == 1 {
            (
                std::borrow::Cow::Borrowed(symbols),
                std::borrow::Cow::Borrowed(chunk_levels),
            )
        } else {
            let first = slab.start / l;
            let mut s = Vec::with_capacity(cols * sb * l);
            let mut lv = Vec::with_capacity(cols * sb);
            for c in 0..cols {
                s.extend_from_slice(&symbols[c * per_col + slab.start..][..sb * l]);
                lv.extend_from_slice(&chunk_levels[c * blocks + first..][..sb]);
            }
            (s.into(), lv.into())
        };
        let recon = codec.dequantize(name, &s, l, &lv, params)?;
        if recon.len() != cols * sb * l {
            return Err(corrupt(format!(
                "the codec returned {} values for {} chunks of {l}",
                recon.len(),
                cols * sb
            )));
        }
        let out = &mut bytes[slab.start * cols * size..slab.end * cols * size];
        let view = Unchunk {
            recon: &recon,
            per_col: sb * l,
            cols,
            scales: match axis {
                ScaleAxis::Column => &scale_f32,
                ScaleAxis::Row => &scale_f32[slab.clone()],
            },
            by_row: axis == ScaleAxis::Row,
        };
        match dtype {
            DType::F32 => view.write(out, f32::to_le_bytes),
            DType::F16 => view.write(out, |v| f16::from_f32(v).to_le_bytes()),
            _ => view.write(out, |v| half::bf16::from_f32(v).to_le_bytes()),
        }
    }
    Ok(Tensor::from_bytes(name, dtype, shape, bytes)?)
}

/// A slab's dequantized chunks (column-major: column `c`'s rows at `c · per_col ..`) on their
/// way to row-major output bytes: each value times its column's or row's scale, in `f32`, then
/// converted to the output type — the arithmetic of [`nwc_tensor::Chunked::to_matrix`] and
/// [`Tensor::extend_bytes_f32`], fused into one pass over tiles, bands of rows in parallel.
struct Unchunk<'a> {
    recon: &'a [f32],
    per_col: usize,
    cols: usize,
    /// One per column, or (with `by_row`) one per row of the slab.
    scales: &'a [f32],
    by_row: bool,
}

/// Rows per parallel band and columns per tile of the transposition (a tile of the input,
/// `TILE` columns × `BAND` rows, stays in L1).
const BAND: usize = 64;
const TILE: usize = 32;

impl Unchunk<'_> {
    fn write<const N: usize>(&self, out: &mut [u8], conv: impl Fn(f32) -> [u8; N] + Sync) {
        use rayon::prelude::*;
        let cols = self.cols;
        out.par_chunks_mut(BAND * cols * N)
            .enumerate()
            .for_each(|(band, o)| {
                let r0 = band * BAND;
                let n_rows = o.len() / (cols * N);
                for c0 in (0..cols).step_by(TILE) {
                    let c1 = (c0 + TILE).min(cols);
                    for r in 0..n_rows {
                        let line = &mut o[(r * cols + c0) * N..(r * cols + c1) * N];
                        for (c, dst) in (c0..c1).zip(line.chunks_exact_mut(N)) {
                            let s = self.scales[if self.by_row { r0 + r } else { c }];
                            let v = self.recon[c * self.per_col + r0 + r] * s;
                            dst.copy_from_slice(&conv(v));
                        }
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::WeightCodec;
    use crate::plan::row_slabs;
    use ndarray::ArrayView2;
    use nwc_tensor::ChunkConfig;

    /// Decoding a matrix a slab of rows at a time gives the tensor decoding it whole gives, for
    /// both scale axes, a trellis codec (state carried along each chunk) and a row count that
    /// leaves a partial last chunk.
    #[test]
    fn slab_decoding_is_whole_decoding() {
        let (rows, cols, l) = (203, 5, 16);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * (1.0 + (i % cols) as f32))
            .collect();
        let tcq = crate::tcq::TcqCodec::with_step(0.2).unwrap();
        for axis in [ScaleAxis::Column, ScaleAxis::Row] {
            let cfg = ChunkConfig {
                chunk_len: l,
                axis,
                ..ChunkConfig::default()
            };
            let ch =
                nwc_tensor::chunk(ArrayView2::from_shape((rows, cols), &values).unwrap(), &cfg)
                    .unwrap();
            let lv: Vec<u8> = (0..ch.n_chunks()).map(|k| (k % 3) as u8).collect();
            let q = tcq.quantize("w", ch.data(), l, &lv).unwrap();
            let decode = |slab_values| {
                let layout = Layout {
                    rows,
                    cols,
                    chunk_len: l,
                    axis,
                    scales: ch.scales().to_vec(),
                };
                reconstruct(
                    &tcq,
                    "w",
                    DType::F32,
                    vec![rows, cols],
                    layout,
                    &q.symbols,
                    &lv,
                    &q.params,
                    slab_values,
                )
                .unwrap()
            };
            let whole = decode(usize::MAX);
            // 32 rows per slab: 7 slabs, the last of 11 rows.
            assert_eq!(row_slabs(rows, cols, l, 160, 160).len(), 7);
            assert_eq!(decode(160), whole, "{axis:?}");
            assert_eq!(decode(1), whole, "{axis:?}");
        }
    }
}
