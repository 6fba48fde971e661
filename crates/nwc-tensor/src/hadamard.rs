//! Incoherence processing (QuIP#): a seeded random-sign, block Walsh–Hadamard rotation of a
//! length-`n` axis. `V = H_b · diag(s)` with `s` random signs and `H_b` the orthonormal
//! Walsh–Hadamard matrix applied to consecutive blocks of `b` values, `b` the largest power of two
//! dividing `n` (capped at 2¹⁵). `V` is orthogonal, so `W ↦ U W Vᵀ` keeps every Frobenius norm
//! and the layer's proxy loss `tr(E H Eᵀ)` becomes `tr(Ẽ (V H Vᵀ) Ẽᵀ)`; outliers are spread over
//! whole blocks, which is what makes a matrix easy to quantize. The signs depend only on `n`
//! (and a fixed seed), so every matrix with the same input width shares one `V` and one Hessian
//! rotation, and nothing needs to be stored to undo it (`docs/format.md`, "Incoherence").

/// The largest block [`Rotation`] uses.
pub const MAX_BLOCK: usize = 1 << 15;

/// The rotation `V` of one axis length.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    block: usize,
    signs: Vec<bool>,
}

impl Rotation {
    /// The rotation of axis length `n` (the identity on blocks of 1 when `n` is odd).
    pub fn new(n: usize) -> Self {
        let block = if n == 0 {
            1
        } else {
            (1usize << n.trailing_zeros()).min(MAX_BLOCK)
        };
        // SplitMix64 from a fixed seed and the length: reproducible on every machine.
        let mut state = 0x6e77_635f_7268_7431u64 ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let signs = (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) & 1 == 1
            })
            .collect();
        Self { block, signs }
    }

    /// The axis length.
    pub fn len(&self) -> usize {
        self.signs.len()
    }

    /// Whether the axis is empty.
    pub fn is_empty(&self) -> bool {
        self.signs.is_empty()
    }

    /// The Hadamard block size.
    pub fn block(&self) -> usize {
        self.block
    }

    /// `x ← V x` (`x` of length [`Rotation::len`]).
    pub fn forward<T: Real>(&self, x: &mut [T]) {
        debug_assert_eq!(x.len(), self.len());
        for (v, &neg) in x.iter_mut().zip(&self.signs) {
            if neg {
                *v = -*v;
            }
        }
        self.hadamard(x);
    }

    /// `x ← Vᵀ x`, the inverse of [`Rotation::forward`].
    pub fn inverse<T: Real>(&self, x: &mut [T]) {
        debug_assert_eq!(x.len(), self.len());
        self.hadamard(x);
        for (v, &neg) in x.iter_mut().zip(&self.signs) {
            if neg {
                *v = -*v;
            }
        }
    }

    /// The orthonormal Walsh–Hadamard transform of every block (its own inverse).
    fn hadamard<T: Real>(&self, x: &mut [T]) {
        let b = self.block;
        if b == 1 {
            return;
        }
        let norm = T::from_f64(1.0 / (b as f64).sqrt());
        for blk in x.chunks_exact_mut(b) {
            let mut h = 1;
            while h < b {
                for i in (0..b).step_by(2 * h) {
                    for j in i..i + h {
                        let (a, c) = (blk[j], blk[j + h]);
                        blk[j] = a + c;
                        blk[j + h] = a - c;
                    }
                }
                h *= 2;
            }
            blk.iter_mut().for_each(|v| *v = *v * norm);
        }
    }

    /// `W ← W Vᵀ` for a row-major `rows × n` matrix: every row rotated.
    pub fn rotate_rows<T: Real>(&self, w: &mut [T], inverse: bool) {
        let n = self.len().max(1);
        for row in w.chunks_exact_mut(n) {
            if inverse {
                self.inverse(row);
            } else {
                self.forward(row);
            }
        }
    }

    /// `W ← U W` for a row-major `n × cols` matrix: every column rotated (a column at a time
    /// through a scratch vector).
    pub fn rotate_cols<T: Real>(&self, w: &mut [T], cols: usize, inverse: bool) {
        let n = self.len();
        let mut col = vec![T::from_f64(0.0); n];
        for c in 0..cols {
            for (r, v) in col.iter_mut().enumerate() {
                *v = w[r * cols + c];
            }
            if inverse {
                self.inverse(&mut col);
            } else {
                self.forward(&mut col);
            }
            for (r, v) in col.iter().enumerate() {
                w[r * cols + c] = *v;
            }
        }
    }
}

/// `f32` or `f64`: what a [`Rotation`] rotates.
pub trait Real:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Neg<Output = Self>
{
    /// The value of `v` in this type.
    fn from_f64(v: f64) -> Self;
}

impl Real for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
}

impl Real for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
}

/// `U W Vᵀ` (or, with `inverse`, `Uᵀ W V`) of a row-major `rows × cols` matrix, in place, with
/// `U` the rotation of `rows` and `V` that of `cols`.
pub fn rotate_matrix<T: Real>(w: &mut [T], rows: usize, cols: usize, inverse: bool) {
    Rotation::new(cols).rotate_rows(w, inverse);
    Rotation::new(rows).rotate_cols(w, cols, inverse);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forward then inverse is the identity, the rotation keeps norms, and an outlier is
    /// spread over its whole block.
    #[test]
    fn rotations_are_orthogonal_and_spread_outliers() {
        for n in [1, 6, 64, 576, 1536, 3 * (1 << 16)] {
            let r = Rotation::new(n);
            assert_eq!(r.len(), n);
            let x: Vec<f64> = (0..n)
                .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
                .collect();
            let mut y = x.clone();
            r.forward(&mut y);
            let (nx, ny): (f64, f64) =
                (x.iter().map(|v| v * v).sum(), y.iter().map(|v| v * v).sum());
            assert!((nx - ny).abs() <= 1e-9 * nx.max(1.0), "n {n}: {nx} vs {ny}");
            r.inverse(&mut y);
            for (a, b) in x.iter().zip(&y) {
                assert!((a - b).abs() < 1e-9, "n {n}");
            }
        }
        assert_eq!(Rotation::new(576).block(), 64);
        assert_eq!(Rotation::new(1536).block(), 512);
        assert_eq!(Rotation::new(3 << 16).block(), MAX_BLOCK);
        let r = Rotation::new(64);
        let mut spike = vec![0.0f32; 64];
        spike[5] = 8.0;
        r.forward(&mut spike);
        assert!(
            spike.iter().all(|v| (v.abs() - 1.0).abs() < 1e-6),
            "{spike:?}"
        );
    }

    /// The matrix rotation and its inverse; the same length gives the same signs every time.
    #[test]
    fn matrix_rotation_round_trips() {
        let (rows, cols) = (48, 20);
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 3.0)
            .collect();
        let mut v = w.clone();
        rotate_matrix(&mut v, rows, cols, false);
        assert_ne!(v, w);
        rotate_matrix(&mut v, rows, cols, true);
        for (a, b) in w.iter().zip(&v) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert_eq!(Rotation::new(96), Rotation::new(96));
        assert_ne!(
            Rotation::new(96).signs,
            Rotation::new(97).signs[..96].to_vec()
        );
    }
}
