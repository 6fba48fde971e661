//! Chunk-by-chunk dequantization ([`ChunkDequantizer`]) and, for codecs whose values are a step
//! times a grid position ([`ChunkGrid`]), the decoder's walk of eight columns side by side: one
//! column per vector lane, each row of eight lanes scaled, converted and stored straight into
//! its output row.

use nwc_entropy::Walk8;

/// One chunk's dequantization, `chunk(out, symbols, level)` (what a codec's
/// `WeightCodec::chunk_dequantizer` returns), and when the codec's values are
/// `steps[level] · g(k)`, that grid as well, so the decoder can walk eight chunks at a time;
/// both give exactly the same values.
pub struct ChunkDequantizer<'a> {
    chunk: Box<ChunkFn<'a>>,
    grid: Option<ChunkGrid>,
}

/// `chunk(out, symbols, level)`.
type ChunkFn<'a> = dyn Fn(&mut [f32], &[i32], u8) + Send + Sync + 'a;

impl std::fmt::Debug for ChunkDequantizer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkDequantizer")
            .field("grid", &self.grid)
            .finish_non_exhaustive()
    }
}

impl<'a> ChunkDequantizer<'a> {
    /// A dequantizer that runs `chunk(out, symbols, level)` on every chunk.
    pub fn new(chunk: impl Fn(&mut [f32], &[i32], u8) + Send + Sync + 'a) -> Self {
        Self {
            chunk: Box::new(chunk),
            grid: None,
        }
    }

    /// The same dequantizer, declaring that `chunk` computes exactly `grid`'s values (for
    /// every level the record's chunks use), so the decoder may compute them eight chunks at a
    /// time instead.
    pub fn with_grid(mut self, grid: ChunkGrid) -> Self {
        self.grid = Some(grid);
        self
    }

    /// One chunk's values into `out`.
    #[inline]
    pub fn chunk(&self, out: &mut [f32], symbols: &[i32], level: u8) {
        (self.chunk)(out, symbols, level)
    }

    /// The grid, when declared.
    pub fn grid(&self) -> Option<&ChunkGrid> {
        self.grid.as_ref()
    }
}

/// Values `steps[level] · g` in `f32`, where `g` is the symbol itself (`walk` `None`: scalar
/// quantization) or its grid position `2·k + unit(state)` along a trellis of at most eight
/// states that starts every chunk in state 0 (trellis-coded quantization).
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkGrid {
    /// The step of each quality level.
    pub steps: Vec<f32>,
    /// The trellis, if any.
    pub walk: Option<Walk8>,
}

/// What [`write_group`] writes: the symbols of a run of whole columns, their levels, and where
/// they land in a band of output rows.
pub(crate) struct Group<'a> {
    /// The run's symbols, column after column, chunk after chunk.
    pub(crate) symbols: &'a [i32],
    /// The run's chunk levels.
    pub(crate) levels: &'a [u8],
    pub(crate) chunk_len: usize,
    /// Chunks per column.
    pub(crate) blocks: usize,
    /// Columns of the whole matrix.
    pub(crate) cols: usize,
    /// The first column of the run.
    pub(crate) lo: usize,
    /// One per column, or (with `by_row`) one per row of the matrix.
    pub(crate) scales: &'a [f32],
    pub(crate) by_row: bool,
}

/// Columns written side by side by [`write_group`].
pub(crate) const LANES: usize = 8;

/// Columns `c .. c + LANES` of a band of rows, one column per lane ([`simd::write_group`]).
pub(crate) use simd::write_group;

#[cfg(not(target_arch = "x86_64"))]
mod simd {
    use crate::dequant::{ChunkGrid, Group};

    /// No lanes on this architecture: every group goes chunk by chunk.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_group<const N: usize>(
        _: &Group<'_>,
        _: &ChunkGrid,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: &mut [u8],
        _: &impl Fn(f32) -> [u8; N],
    ) -> bool {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use crate::dequant::{ChunkGrid, Group, LANES};
    use core::arch::x86_64::__m256i;
    use pulp::x86::V3;
    use pulp::{cast, f32x8, i32x8};

    /// Eight vectors of eight symbols (vector `i`: eight consecutive symbols of column `i`)
    /// transposed: vector `j` holds symbol `j` of every column.
    #[inline(always)]
    fn transpose(simd: V3, a: [__m256i; 8]) -> [__m256i; 8] {
        let x = simd.avx2;
        let t = [
            x._mm256_unpacklo_epi32(a[0], a[1]),
            x._mm256_unpackhi_epi32(a[0], a[1]),
            x._mm256_unpacklo_epi32(a[2], a[3]),
            x._mm256_unpackhi_epi32(a[2], a[3]),
            x._mm256_unpacklo_epi32(a[4], a[5]),
            x._mm256_unpackhi_epi32(a[4], a[5]),
            x._mm256_unpacklo_epi32(a[6], a[7]),
            x._mm256_unpackhi_epi32(a[6], a[7]),
        ];
        // u[j]: symbols j (low half) and j + 4 (high half) of columns 0–3, then of 4–7.
        let u = [
            x._mm256_unpacklo_epi64(t[0], t[2]),
            x._mm256_unpackhi_epi64(t[0], t[2]),
            x._mm256_unpacklo_epi64(t[1], t[3]),
            x._mm256_unpackhi_epi64(t[1], t[3]),
            x._mm256_unpacklo_epi64(t[4], t[6]),
            x._mm256_unpackhi_epi64(t[4], t[6]),
            x._mm256_unpacklo_epi64(t[5], t[7]),
            x._mm256_unpackhi_epi64(t[5], t[7]),
        ];
        [
            x._mm256_permute2x128_si256::<0x20>(u[0], u[4]),
            x._mm256_permute2x128_si256::<0x20>(u[1], u[5]),
            x._mm256_permute2x128_si256::<0x20>(u[2], u[6]),
            x._mm256_permute2x128_si256::<0x20>(u[3], u[7]),
            x._mm256_permute2x128_si256::<0x31>(u[0], u[4]),
            x._mm256_permute2x128_si256::<0x31>(u[1], u[5]),
            x._mm256_permute2x128_si256::<0x31>(u[2], u[6]),
            x._mm256_permute2x128_si256::<0x31>(u[3], u[7]),
        ]
    }

    /// Columns `c .. c + LANES` of rows `s0 .. s0 + n_rows` of a band of output `o` (row `s0` of
    /// the band is matrix row `r0`, at chunk `r0 / chunk_len`), computed one column per lane.
    /// Returns `false` where it cannot (no AVX2, a chunk length that is not a multiple of 8,
    /// symbols too large for the trellis's `i32` grid positions), perhaps having written some of
    /// the group: the caller then writes the whole group chunk by chunk. Same arithmetic as that
    /// path, so the same bytes.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_group<const N: usize>(
        g: &Group<'_>,
        grid: &ChunkGrid,
        c: usize,
        r0: usize,
        s0: usize,
        n_rows: usize,
        o: &mut [u8],
        conv: &impl Fn(f32) -> [u8; N],
    ) -> bool {
        let l = g.chunk_len;
        let Some(simd) = V3::try_new() else {
            return false;
        };
        if l == 0 || !l.is_multiple_of(8) || !r0.is_multiple_of(l) {
            return false;
        }
        let (k0, nk) = (r0 / l, n_rows.div_ceil(l));
        // Chunk `k` of lane `i` is chunk `first + i · blocks + k` of the run.
        let first = (c - g.lo) * g.blocks + k0;
        let last = first + (LANES - 1) * g.blocks + nk;
        if last > g.levels.len() || last * l > g.symbols.len() {
            return false;
        }
        let x = simd.avx2;
        let (zero, one) = (simd.splat_i32x8(0), simd.splat_i32x8(1));
        let tables = grid.walk.map(|w| {
            let t: [__m256i; 3] = [cast(w.unit), cast(w.next[0]), cast(w.next[1])];
            t
        });
        let col_scales: Option<f32x8> = (!g.by_row).then(|| {
            let s: [f32; LANES] = g.scales[c..c + LANES].try_into().unwrap();
            cast(s)
        });
        let cols = g.cols;
        for k in 0..nk {
            let mut steps = [0f32; LANES];
            for (i, s) in steps.iter_mut().enumerate() {
                *s = grid.steps[usize::from(g.levels[first + i * g.blocks + k])];
            }
            let steps: f32x8 = cast(steps);
            let mut q: __m256i = cast(zero);
            for j0 in (0..l).step_by(8) {
                let base = k * l + j0;
                if base >= n_rows {
                    break;
                }
                let mut a = [cast(zero); 8];
                for (i, a) in a.iter_mut().enumerate() {
                    let s: [i32; 8] = g.symbols[(first + i * g.blocks + k) * l + j0..][..8]
                        .try_into()
                        .unwrap();
                    *a = cast(s);
                }
                // Grid positions `2·k + u` are exact in `i32` when every |k| < 2^30; a damaged
                // file may hold more, and the group goes chunk by chunk (over what is written).
                if tables.is_some() {
                    let mut wide = zero;
                    for &v in &a {
                        let v: i32x8 = cast(v);
                        let w = simd.xor_i32x8(
                            simd.shr_const_i32x8::<30>(v),
                            simd.shr_const_i32x8::<31>(v),
                        );
                        wide = simd.or_i32x8(wide, w);
                    }
                    if cast::<_, [i32; 8]>(wide) != [0; 8] {
                        return false;
                    }
                }
                let rows = transpose(simd, a);
                for (j, &kv) in rows.iter().enumerate().take(n_rows - base) {
                    let gv: i32x8 = match tables {
                        Some([unit, next0, next1]) => {
                            let u = x._mm256_permutevar8x32_epi32(unit, q);
                            let n0 = x._mm256_permutevar8x32_epi32(next0, q);
                            let n1 = x._mm256_permutevar8x32_epi32(next1, q);
                            let kv: i32x8 = cast(kv);
                            let odd = simd.cmp_eq_i32x8(simd.and_i32x8(kv, one), one);
                            q = cast(simd.select_i32x8(odd, cast(n1), cast(n0)));
                            simd.or_i32x8(simd.shl_const_i32x8::<1>(kv), cast(u))
                        }
                        None => cast(kv),
                    };
                    let v = simd.mul_f32x8(cast(simd.avx._mm256_cvtepi32_ps(cast(gv))), steps);
                    let r = base + j;
                    let s = match col_scales {
                        Some(s) => s,
                        None => simd.splat_f32x8(g.scales[r0 + r]),
                    };
                    let v: [f32; LANES] = cast(simd.mul_f32x8(v, s));
                    let line = &mut o[((s0 + r) * cols + c) * N..][..LANES * N];
                    for (dst, &v) in line.chunks_exact_mut(N).zip(&v) {
                        dst.copy_from_slice(&conv(v));
                    }
                }
            }
        }
        true
    }
}
