//! Block LDL decomposition and LDLQ: coding a weight matrix block by block, each block with the
//! errors of the blocks already coded pushed into it.

use nalgebra::DMatrix;

use crate::error::{LdlError, Result};

/// `H = L · D · Lᵀ` with `L` unit lower block-triangular (identity diagonal blocks) and `D`
/// block-diagonal.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockLdl {
    block: usize,
    l: DMatrix<f64>,
    d: Vec<DMatrix<f64>>,
}

impl BlockLdl {
    /// Factorizes a symmetric positive definite `h` with blocks of `block` columns (the last
    /// block may be smaller), through its Cholesky factor `C`: `L = C · blockdiag(C)⁻¹`,
    /// `D_k = C_kk C_kkᵀ`.
    ///
    /// # Errors
    /// [`LdlError::Shape`] for a non-square matrix or a zero block size,
    /// [`LdlError::NotPositiveDefinite`] when `h` is not positive definite.
    pub fn new(h: &DMatrix<f64>, block: usize) -> Result<Self> {
        Self::from_owned(h.clone(), block)
    }

    /// [`BlockLdl::new`] in the memory of `h`: the Cholesky factor overwrites it and `L` the
    /// factor, one block column at a time (each block column of `L` reads only its own of `C`),
    /// so a large Hessian is never copied.
    ///
    /// # Errors
    /// As [`BlockLdl::new`].
    pub fn from_owned(h: DMatrix<f64>, block: usize) -> Result<Self> {
        let n = h.nrows();
        if h.ncols() != n || block == 0 || n == 0 {
            return Err(LdlError::Shape(format!(
                "{}×{} matrix in blocks of {block}",
                n,
                h.ncols()
            )));
        }
        let mut l = h;
        cholesky_in_place(&mut l).ok_or(LdlError::NotPositiveDefinite(n))?;
        let mut d = Vec::new();
        for s in (0..n).step_by(block) {
            let e = (s + block).min(n);
            let ckk = l.view((s, s), (e - s, e - s)).clone_owned();
            let inv = ckk
                .clone()
                .try_inverse()
                .ok_or(LdlError::NotPositiveDefinite(n))?;
            let cols = l.view((s, s), (n - s, e - s)) * &inv;
            l.view_mut((s, s), (n - s, e - s)).copy_from(&cols);
            d.push(&ckk * ckk.transpose());
        }
        Ok(Self { block, l, d })
    }

    /// The unit lower block-triangular factor.
    pub fn l(&self) -> &DMatrix<f64> {
        &self.l
    }

    /// The diagonal blocks of `D`.
    pub fn d(&self) -> &[DMatrix<f64>] {
        &self.d
    }

    /// Block size.
    pub fn block(&self) -> usize {
        self.block
    }

    /// `L · D · Lᵀ` (for checking the factorization).
    pub fn reconstruct(&self) -> DMatrix<f64> {
        let n = self.l.nrows();
        let mut dm = DMatrix::zeros(n, n);
        for (k, dk) in self.d.iter().enumerate() {
            let s = k * self.block;
            dm.view_mut((s, s), dk.shape()).copy_from(dk);
        }
        &self.l * dm * self.l.transpose()
    }
}

/// Width of the panels of [`cholesky_in_place`].
const CHOL_PANEL: usize = 192;

/// The lower Cholesky factor of a symmetric positive definite `a`, in place (the strict upper
/// triangle is zeroed); `None` when `a` is not positive definite.
///
/// Right-looking and blocked: each diagonal panel is factored by nalgebra, the panel below it is
/// `A21 · L11⁻ᵀ`, and the trailing lower triangle is updated strip by strip with matrix products
/// (nalgebra's `gemm`, which is `matrixmultiply`'s, threaded and summing each element in a fixed
/// order). Nearly all the work is in those products, so an 8960-wide Hessian factors in seconds
/// where the unblocked algorithm took minutes on one core.
pub(crate) fn cholesky_in_place(a: &mut DMatrix<f64>) -> Option<()> {
    let n = a.nrows();
    debug_assert_eq!(n, a.ncols());
    for k in (0..n).step_by(CHOL_PANEL) {
        let b = CHOL_PANEL.min(n - k);
        let l11 = nalgebra::Cholesky::new(a.view((k, k), (b, b)).clone_owned())?.unpack();
        a.view_mut((k, k), (b, b)).copy_from(&l11);
        let rest = n - k - b;
        if rest == 0 {
            break;
        }
        let inv_t = l11
            .solve_lower_triangular(&DMatrix::identity(b, b))?
            .transpose();
        let a21 = a.view((k + b, k), (rest, b)).clone_owned();
        let mut l21 = DMatrix::zeros(rest, b);
        l21.gemm(1.0, &a21, &inv_t, 0.0);
        a.view_mut((k + b, k), (rest, b)).copy_from(&l21);
        for j in (0..rest).step_by(CHOL_PANEL) {
            let w = CHOL_PANEL.min(rest - j);
            let right = l21.rows(j, w).transpose();
            a.view_mut((k + b + j, k + b + j), (rest - j, w)).gemm(
                -1.0,
                &l21.rows(j, rest - j),
                &right,
                1.0,
            );
        }
    }
    a.fill_upper_triangle(0.0, 1);
    Some(())
}

/// Codes `w` (`rows × cols`, row-major; rows are output features, columns input features) block
/// of columns by block, last block first. Each block's target is
/// `W[:, s:e] + (W − Ŵ)[:, e:] · L[e:, s:e]`: the errors of the blocks already coded, pushed into
/// this one through the Hessian's LDL factor. `quantize(start, target)` gets the `rows × width`
/// target (row-major) and returns its reconstruction in the same layout.
///
/// Returns `Ŵ`. With `H = L D Lᵀ`, this greedily minimizes `tr((W − Ŵ) H (W − Ŵ)ᵀ)` block by
/// block (QuIP's LDLQ, which equals GPTQ/OPTQ).
///
/// The quantizer's own error type `E` comes back unchanged (the first error stops the loop);
/// this function's errors convert into it.
///
/// # Errors
/// The quantizer's first error; [`LdlError::Shape`] when sizes disagree and
/// [`LdlError::Quantizer`] when the quantizer returns the wrong number of values, as `E`.
pub fn ldlq<E: From<LdlError>>(
    w: &[f32],
    rows: usize,
    cols: usize,
    ldl: &BlockLdl,
    mut quantize: impl FnMut(usize, &[f32]) -> std::result::Result<Vec<f32>, E>,
) -> std::result::Result<Vec<f32>, E> {
    if w.len() != rows * cols || ldl.l.nrows() != cols {
        return Err(E::from(LdlError::Shape(format!(
            "{} weights as {rows}×{cols} with a {}-column Hessian",
            w.len(),
            ldl.l.nrows()
        ))));
    }
    let wm = DMatrix::from_row_slice(rows, cols, w).map(f64::from);
    let mut err = DMatrix::<f64>::zeros(rows, cols);
    let mut out = vec![0.0f32; rows * cols];
    let starts: Vec<usize> = (0..cols).step_by(ldl.block).collect();
    for &s in starts.iter().rev() {
        let e = (s + ldl.block).min(cols);
        let bw = e - s;
        let mut target = wm.view((0, s), (rows, bw)).clone_owned();
        if e < cols {
            target += err.view((0, e), (rows, cols - e)) * ldl.l.view((e, s), (cols - e, bw));
        }
        let t: Vec<f32> = (0..rows)
            .flat_map(|r| (0..bw).map(move |c| (r, c)))
            .map(|(r, c)| target[(r, c)] as f32)
            .collect();
        let q = quantize(s, &t)?;
        if q.len() != rows * bw {
            return Err(E::from(LdlError::Quantizer {
                start: s,
                reason: format!("returned {} values for a {rows}×{bw} block", q.len()),
            }));
        }
        for r in 0..rows {
            for c in 0..bw {
                let v = q[r * bw + c];
                out[r * cols + s + c] = v;
                err[(r, s + c)] = wm[(r, s + c)] - f64::from(v);
            }
        }
    }
    Ok(out)
}

/// The layer-output proxy loss `tr((W − Ŵ) H (W − Ŵ)ᵀ)`.
///
/// # Panics
/// If the sizes disagree.
pub fn proxy_loss(w: &[f32], w_hat: &[f32], rows: usize, cols: usize, h: &DMatrix<f64>) -> f64 {
    let e = DMatrix::from_iterator(
        cols,
        rows,
        w.iter().zip(w_hat).map(|(a, b)| f64::from(a - b)),
    )
    .transpose();
    (&e * h * e.transpose()).trace()
}

#[cfg(test)]
mod cholesky_tests {
    use nalgebra::DMatrix;

    #[test]
    fn blocked_cholesky_matches_nalgebras() {
        // Sizes below, at and across panel boundaries.
        for n in [1, 5, 192, 193, 500] {
            let x = DMatrix::from_fn(n, n + 7, |i, j| {
                (((i * 31 + j * 17) % 23) as f64 - 11.0) / 7.0
            });
            let h = &x * x.transpose() + DMatrix::identity(n, n) * 0.5;
            let want = nalgebra::Cholesky::new(h.clone()).unwrap().unpack();
            let mut got = h.clone();
            super::cholesky_in_place(&mut got).unwrap();
            let err = (&got - &want).abs().max();
            assert!(err < 1e-9 * want.abs().max(), "n={n}: {err}");
        }
        let mut not_pd = DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 2.0, 1.0]);
        assert!(super::cholesky_in_place(&mut not_pd).is_none());
    }
}
