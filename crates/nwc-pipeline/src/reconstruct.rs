//! Symbols back to a tensor: dequantization, chunks reassembled with their scales and rounded
//! to the output type, a slab of rows at a time. The decoder and the compressor's error report
//! share it, so the report measures exactly what decoding yields.

use half::f16;
use nwc_tensor::{DType, ScaleAxis, Tensor};

use crate::codec::{CodecParams, WeightCodec};
use crate::dequant::{Group, LANES, write_group};
use crate::error::{NwcError, Result};
use crate::plan::row_slabs;
use nwc_entropy::Coder;

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
/// slab in between; test `slab_and_fused_decoding_are_whole_decoding`).
pub(crate) const DECODE_SLAB_VALUES: usize = 1 << 23;

/// Where [`reconstruct`] finds a tensor's symbols.
pub(crate) enum Source<'a> {
    /// Decoded already, all of them.
    Decoded(&'a [i32]),
    /// Still entropy-coded: with a codec that dequantizes chunk by chunk, decoded a run of
    /// segments at a time into `buf` and reassembled while they are in cache (the symbols of a
    /// whole tensor never sit in memory); otherwise decoded whole into `buf` first.
    Coded {
        coder: &'a Coder<'a>,
        segments: &'a [&'a [u8]],
        chunks_per_segment: usize,
        /// Reused between calls; its contents on entry do not matter.
        buf: &'a mut Vec<i32>,
    },
}

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
    source: Source<'_>,
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
        || chunk_levels.len() != cols * blocks
        || matches!(source, Source::Decoded(s) if Some(s.len()) != chunk_levels.len().checked_mul(l))
    {
        return Err(corrupt(format!(
            "{} chunk levels and {} scales for {rows}×{cols} in chunks of {l}",
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
    let mut bytes = vec![0u8; rows * cols * size];
    if let Some(deq) = codec.chunk_dequantizer(name, chunk_levels, params)? {
        // Chunk by chunk: dequantized a tile at a time on the way to the output bytes.
        let mut write = |symbols: &[i32], levels: &[u8], columns: std::ops::Range<usize>| {
            let view = Fused {
                symbols,
                levels,
                chunk_len: l,
                blocks,
                cols,
                columns,
                scales: &scale_f32,
                by_row: axis == ScaleAxis::Row,
                deq: &deq,
            };
            match dtype {
                DType::F32 => view.write(&mut bytes, f32::to_le_bytes),
                DType::F16 => view.write(&mut bytes, |v| f16::from_f32(v).to_le_bytes()),
                _ => view.write(&mut bytes, |v| half::bf16::from_f32(v).to_le_bytes()),
            }
        };
        match source {
            Source::Decoded(symbols) => write(symbols, chunk_levels, 0..cols),
            Source::Coded {
                coder,
                segments,
                chunks_per_segment: cps,
                buf,
            } => {
                if cps == 0 || segments.len() != chunk_levels.len().div_ceil(cps) {
                    return Err(corrupt(format!(
                        "{} segments of {cps} chunks for {} chunks",
                        segments.len(),
                        chunk_levels.len()
                    )));
                }
                // Runs of segments that hold at least `STREAM_COLUMNS` columns and give every
                // thread two pairs to decode; whole columns are written as soon as they are in.
                let threads = rayon::current_num_threads();
                let group = (4 * threads).max((STREAM_COLUMNS * blocks).div_ceil(cps));
                let (mut base, mut have) = (0usize, 0usize);
                for (g, run) in segments.chunks(group).enumerate() {
                    let first = g * group;
                    let c0 = first * cps;
                    let c1 = ((first + run.len()) * cps).min(chunk_levels.len());
                    let need = (have + c1 - c0) * l;
                    if buf.len() < need {
                        buf.resize(need, 0);
                    }
                    coder.decode_segments(
                        run,
                        first,
                        &chunk_levels[c0..c1],
                        cps,
                        &mut buf[have * l..need],
                    )?;
                    have += c1 - c0;
                    let (lo, mut hi) = (base / blocks, (base + have) / blocks);
                    // Whole groups of eight columns for the lanes until the last run.
                    if hi < cols {
                        hi = lo + (hi - lo) / LANES * LANES;
                    }
                    if hi > lo {
                        let done = (hi - lo) * blocks;
                        write(&buf[..done * l], &chunk_levels[base..base + done], lo..hi);
                        buf.copy_within(done * l..have * l, 0);
                        (base, have) = (base + done, have - done);
                    }
                }
            }
        }
        return Ok(Tensor::from_bytes(name, dtype, shape, bytes)?);
    }
    let symbols: &[i32] = match source {
        Source::Decoded(s) => s,
        Source::Coded {
            coder,
            segments,
            chunks_per_segment,
            buf,
        } => {
            let n = chunk_levels.len() * l;
            if buf.len() < n {
                buf.resize(n, 0);
            }
            let out = &mut buf[..n];
            coder.decode_all(segments, chunk_levels, chunks_per_segment, out)?;
            out
        }
    };
    let slabs = row_slabs(rows, cols, l, slab_values, slab_values);
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
/// [`Fused`]'s rows per parallel band, and rows × columns per tile inside it: a band is walked
/// tile column by tile column, so each column's symbols are read in one forward run that the
/// hardware prefetcher follows, and each output row of a tile is one cache line of `f32`.
const FUSED_BAND: usize = 1024;
const FUSED_SUB: usize = 256;
const FUSED_TILE: usize = 16;

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

/// Columns a streamed decode reassembles at a time, at least (so that every output row gets
/// whole cache lines).
const STREAM_COLUMNS: usize = 16;

/// A run of whole columns' symbols on their way to row-major output bytes with a codec that
/// dequantizes chunk by chunk ([`WeightCodec::chunk_dequantizer`]): for every band of rows (a
/// whole number of chunks) and tile of columns, the tile's chunks are dequantized into a small
/// buffer, then scaled, converted and written row by row, as [`Unchunk`] does from a whole
/// tensor's values — the same arithmetic, so the same bytes, without that tensor in memory.
struct Fused<'a> {
    /// The symbols of `columns`, column after column.
    symbols: &'a [i32],
    /// The chunk levels of `columns`.
    levels: &'a [u8],
    chunk_len: usize,
    /// Chunks per column.
    blocks: usize,
    /// Columns of the whole matrix.
    cols: usize,
    /// The columns written.
    columns: std::ops::Range<usize>,
    scales: &'a [f32],
    by_row: bool,
    deq: &'a crate::dequant::ChunkDequantizer<'a>,
}

impl Fused<'_> {
    fn write<const N: usize>(&self, out: &mut [u8], conv: impl Fn(f32) -> [u8; N] + Sync) {
        use rayon::prelude::*;
        let (l, cols) = (self.chunk_len, self.cols);
        let band = l * FUSED_BAND.div_ceil(l);
        out.par_chunks_mut(band * cols * N)
            .enumerate()
            .for_each(|(bi, o)| {
                pulp::Arch::new().dispatch(Band {
                    fused: self,
                    bi,
                    out: o,
                    conv: &conv,
                });
            });
    }

    /// Band `bi` of rows into `o` (see [`Fused`]).
    #[inline(always)]
    fn band<const N: usize>(&self, bi: usize, o: &mut [u8], conv: &impl Fn(f32) -> [u8; N]) {
        let (l, cols) = (self.chunk_len, self.cols);
        let band = l * FUSED_BAND.div_ceil(l);
        let sub = l * FUSED_SUB.div_ceil(l);
        let n_band_rows = o.len() / (cols * N);
        let mut buf = vec![0f32; FUSED_TILE * sub];
        let (lo, hi) = (self.columns.start, self.columns.end);
        if let Some(grid) = self.deq.grid() {
            // Eight columns at a time, one row of chunks across every column before the next,
            // so the stores run along sixteen output rows; what the lanes cannot take (a
            // group they refuse, the last columns) goes chunk by chunk.
            let group = Group {
                symbols: self.symbols,
                levels: self.levels,
                chunk_len: l,
                blocks: self.blocks,
                cols,
                lo,
                scales: self.scales,
                by_row: self.by_row,
            };
            for s0 in (0..n_band_rows).step_by(l) {
                let (r0, n_rows) = (bi * band + s0, (n_band_rows - s0).min(l));
                let mut c0 = lo;
                while c0 + LANES <= hi {
                    if !write_group(&group, grid, c0, r0, s0, n_rows, o, conv) {
                        self.chunks_into(c0..c0 + LANES, r0, s0, n_rows, o, &mut buf, conv);
                    }
                    c0 += LANES;
                }
                if c0 < hi {
                    self.chunks_into(c0..hi, r0, s0, n_rows, o, &mut buf, conv);
                }
            }
            return;
        }
        for tile in (lo..hi).step_by(FUSED_TILE) {
            let c1 = (tile + FUSED_TILE).min(hi);
            for s0 in (0..n_band_rows).step_by(sub) {
                let (r0, n_rows) = (bi * band + s0, (n_band_rows - s0).min(sub));
                self.chunks_into(tile..c1, r0, s0, n_rows, o, &mut buf, conv);
            }
        }
    }

    /// Columns `c0..c1` (at most [`FUSED_TILE`]) of rows `s0 .. s0 + n_rows` (at most
    /// [`FUSED_SUB`] rounded up to whole chunks) of band `o`, where row `s0` is matrix row `r0`:
    /// the chunks dequantized one by one into `buf`, then scaled, converted and written row by
    /// row.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn chunks_into<const N: usize>(
        &self,
        columns: std::ops::Range<usize>,
        r0: usize,
        s0: usize,
        n_rows: usize,
        o: &mut [u8],
        buf: &mut [f32],
        conv: &impl Fn(f32) -> [u8; N],
    ) {
        let (l, cols) = (self.chunk_len, self.cols);
        let (c0, c1) = (columns.start, columns.end);
        let (k0, nk) = (r0 / l, n_rows.div_ceil(l));
        let span = nk * l;
        for (c, col) in (c0..c1).zip(buf.chunks_exact_mut(span)) {
            let first = (c - self.columns.start) * self.blocks + k0;
            for (k, dst) in col.chunks_exact_mut(l).enumerate() {
                let q = &self.symbols[(first + k) * l..][..l];
                self.deq.chunk(dst, q, self.levels[first + k]);
            }
        }
        for r in 0..n_rows {
            let line = &mut o[((s0 + r) * cols + c0) * N..((s0 + r) * cols + c1) * N];
            for ((c, dst), col) in (c0..c1)
                .zip(line.chunks_exact_mut(N))
                .zip(buf.chunks_exact(span))
            {
                let s = self.scales[if self.by_row { r0 + r } else { c }];
                dst.copy_from_slice(&conv(col[r] * s));
            }
        }
    }
}

/// One band of [`Fused::write`] as a [`pulp::WithSimd`] operation: the scaling, transposition
/// and conversion compiled once more for AVX2 and picked at run time (the same arithmetic).
struct Band<'x, 'a, F> {
    fused: &'x Fused<'a>,
    bi: usize,
    out: &'x mut [u8],
    conv: &'x F,
}

impl<const N: usize, F: Fn(f32) -> [u8; N]> pulp::WithSimd for Band<'_, '_, F> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.fused.band(self.bi, self.out, self.conv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::WeightCodec;
    use crate::plan::row_slabs;
    use ndarray::ArrayView2;
    use nwc_tensor::ChunkConfig;

    /// A codec without [`WeightCodec::chunk_dequantizer`]: the whole-tensor path.
    struct Whole<'a>(&'a dyn WeightCodec);

    impl WeightCodec for Whole<'_> {
        fn kind(&self) -> nwc_format::CodecKind {
            self.0.kind()
        }
        fn n_levels(&self) -> usize {
            self.0.n_levels()
        }
        fn quantize(
            &self,
            name: &str,
            chunks: &[f32],
            chunk_len: usize,
            chunk_levels: &[u8],
        ) -> Result<crate::codec::Quantized> {
            self.0.quantize(name, chunks, chunk_len, chunk_levels)
        }
        fn fit_tables(
            &self,
            symbols: &[i32],
            chunk_len: usize,
            chunk_levels: &[u8],
        ) -> Result<(Vec<nwc_entropy::Table>, Vec<u16>)> {
            self.0.fit_tables(symbols, chunk_len, chunk_levels)
        }
        fn dequantize(
            &self,
            name: &str,
            symbols: &[i32],
            chunk_len: usize,
            chunk_levels: &[u8],
            params: &CodecParams,
        ) -> Result<Vec<f32>> {
            self.0
                .dequantize(name, symbols, chunk_len, chunk_levels, params)
        }
    }

    /// Decoding a matrix a slab of rows at a time gives the tensor decoding it whole gives, and
    /// the fused chunk-by-chunk path of ECSQ and TCQ gives exactly the bytes of the whole-tensor
    /// path: both scale axes, chunk lengths that do and do not divide the band, a partial last
    /// chunk, f32 and f16 output.
    #[test]
    fn slab_and_fused_decoding_are_whole_decoding() {
        let (rows, cols) = (203, 37);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * (1.0 + (i % cols) as f32))
            .collect();
        let tcq = crate::tcq::TcqCodec::with_step(0.2).unwrap();
        let ecsq = crate::codec::EcsqCodec::with_step(0.1).unwrap();
        let codecs: [&dyn WeightCodec; 2] = [&tcq, &ecsq];
        for (codec, l, axis, dtype) in codecs.into_iter().flat_map(|c| {
            [16, 48, 64].into_iter().flat_map(move |l| {
                [ScaleAxis::Column, ScaleAxis::Row]
                    .into_iter()
                    .flat_map(move |a| [DType::F32, DType::F16].map(|d| (c, l, a, d)))
            })
        }) {
            let cfg = ChunkConfig {
                chunk_len: l,
                axis,
                ..ChunkConfig::default()
            };
            let ch =
                nwc_tensor::chunk(ArrayView2::from_shape((rows, cols), &values).unwrap(), &cfg)
                    .unwrap();
            let lv: Vec<u8> = (0..ch.n_chunks()).map(|k| (k % 3) as u8).collect();
            let q = codec.quantize("w", ch.data(), l, &lv).unwrap();
            let layout = || Layout {
                rows,
                cols,
                chunk_len: l,
                axis,
                scales: ch.scales().to_vec(),
            };
            let decode_symbols = |c: &dyn WeightCodec, symbols: &[i32], slab_values| {
                let source = Source::Decoded(symbols);
                reconstruct(
                    c,
                    "w",
                    dtype,
                    vec![rows, cols],
                    layout(),
                    source,
                    &lv,
                    &q.params,
                    slab_values,
                )
                .unwrap()
            };
            let decode =
                |c: &dyn WeightCodec, slab_values| decode_symbols(c, &q.symbols, slab_values);
            let what = format!("{:?} l={l} {axis:?} {dtype:?}", codec.kind());
            let fused = decode(codec, usize::MAX);
            let whole = Whole(codec);
            assert_eq!(decode(&whole, usize::MAX), fused, "{what}");
            // Symbols a damaged file may hold, past the trellis's i32 grid: the groups that
            // hold them go chunk by chunk, the others eight columns at a time.
            let mut bad = q.symbols.clone();
            let n = bad.len();
            (bad[3 * l + 5], bad[n - 2]) = (1 << 30, -(1 << 30) - 1);
            assert_eq!(
                decode_symbols(&whole, &bad, usize::MAX),
                decode_symbols(codec, &bad, usize::MAX),
                "{what} damaged"
            );
            assert_eq!(decode(&whole, 160 * cols / 5), fused, "{what}");
            assert_eq!(decode(&whole, 1), fused, "{what}");
            // Streamed from the entropy-coded segments, a few at a time: segments that end
            // inside a column, runs of segments that hold less than a column, and more.
            let tables = if q.tables.is_empty() {
                codec.tables()
            } else {
                &q.tables
            };
            let coder = nwc_entropy::Coder::new(tables, &q.table_map, l)
                .unwrap()
                .with_contexts(codec.contexts())
                .unwrap();
            for cps in [1, 3, 7, 1000] {
                let segments = coder.encode_all(&q.symbols, &lv, cps).unwrap();
                let parts: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
                let mut buf = vec![7; 5];
                let streamed = reconstruct(
                    codec,
                    "w",
                    dtype,
                    vec![rows, cols],
                    layout(),
                    Source::Coded {
                        coder: &coder,
                        segments: &parts,
                        chunks_per_segment: cps,
                        buf: &mut buf,
                    },
                    &lv,
                    &q.params,
                    usize::MAX,
                )
                .unwrap();
                assert_eq!(streamed, fused, "{what} streamed, {cps} chunks per segment");
            }
        }
        assert_eq!(row_slabs(rows, 5, 16, 160, 160).len(), 7);
    }
}
