//! Streaming accumulation of `H = E[x xᵀ]` and its damping.

use nalgebra::DMatrix;

use crate::error::{LdlError, Result};

/// Accumulates `Σ x xᵀ` over activation rows in f64, one batch at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct HessianAccumulator {
    dim: usize,
    sum: DMatrix<f64>,
    count: u64,
}

impl HessianAccumulator {
    /// An empty accumulator for inputs of width `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            sum: DMatrix::zeros(dim, dim),
            count: 0,
        }
    }

    /// Input width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows accumulated so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds `rows` activation rows (`x`, row-major, `rows × dim`).
    ///
    /// # Errors
    /// [`LdlError::Shape`] when `x` is not `rows × dim`; [`LdlError::Invalid`] for a NaN or
    /// infinity (nothing is added then).
    pub fn add(&mut self, x: &[f32], rows: usize) -> Result<()> {
        if x.len() != rows * self.dim {
            return Err(LdlError::Shape(format!(
                "{} values are not {rows} rows of {}",
                x.len(),
                self.dim
            )));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(LdlError::Invalid("non-finite activation".into()));
        }
        let m = DMatrix::from_iterator(self.dim, rows, x.iter().map(|&v| f64::from(v)));
        // sum += m mᵀ (columns of m are the rows of x).
        self.sum.gemm(1.0, &m, &m.transpose(), 1.0);
        self.count += rows as u64;
        Ok(())
    }

    /// Adds a precomputed Gram matrix `Σ x xᵀ` (`dim × dim`, row-major) of `rows` samples, for
    /// example one computed on a GPU.
    ///
    /// # Errors
    /// [`LdlError::Shape`] for a wrong length, [`LdlError::Invalid`] for non-finite entries.
    pub fn add_gram(&mut self, gram: &[f32], rows: u64) -> Result<()> {
        if gram.len() != self.dim * self.dim {
            return Err(LdlError::Shape(format!(
                "a Gram matrix of {} values for width {}",
                gram.len(),
                self.dim
            )));
        }
        if gram.iter().any(|v| !v.is_finite()) {
            return Err(LdlError::Invalid("non-finite Gram matrix".into()));
        }
        for (s, &g) in self.sum.iter_mut().zip(gram) {
            *s += f64::from(g);
        }
        self.count += rows;
        Ok(())
    }

    /// Rebuilds an accumulator from a stored mean `E[x xᵀ]` and its sample count (the inverse of
    /// [`HessianAccumulator::hessian`] and [`HessianAccumulator::count`]).
    ///
    /// # Errors
    /// [`LdlError::Shape`] when `mean` is not `dim × dim`.
    pub fn from_mean(dim: usize, mean: &[f64], count: u64) -> Result<Self> {
        if mean.len() != dim * dim {
            return Err(LdlError::Shape(format!(
                "{} values for a {dim}×{dim} Hessian",
                mean.len()
            )));
        }
        Ok(Self {
            dim,
            sum: DMatrix::from_row_slice(dim, dim, mean) * count as f64,
            count,
        })
    }

    /// Merges another accumulator (for example from another thread or a resumed run).
    ///
    /// # Errors
    /// [`LdlError::Shape`] for a different width.
    pub fn merge(&mut self, other: &Self) -> Result<()> {
        if other.dim != self.dim {
            return Err(LdlError::Shape(format!(
                "width {} vs {}",
                other.dim, self.dim
            )));
        }
        self.sum += &other.sum;
        self.count += other.count;
        Ok(())
    }

    /// `E[x xᵀ]`.
    ///
    /// # Errors
    /// [`LdlError::Invalid`] when nothing was accumulated.
    pub fn hessian(&self) -> Result<DMatrix<f64>> {
        if self.count == 0 {
            return Err(LdlError::Invalid("no activations accumulated".into()));
        }
        Ok(&self.sum / self.count as f64)
    }

    /// [`HessianAccumulator::hessian`], reusing the sum's memory (no second `dim × dim` matrix).
    ///
    /// # Errors
    /// As [`HessianAccumulator::hessian`].
    pub fn into_hessian(self) -> Result<DMatrix<f64>> {
        if self.count == 0 {
            return Err(LdlError::Invalid("no activations accumulated".into()));
        }
        let mut h = self.sum;
        h /= self.count as f64;
        Ok(h)
    }
}

/// A damped Hessian ready for LDLQ, with the columns no input ever reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Damped {
    /// `H / mean(diag H) + rel · I`, with dead columns' diagonals set to 1.
    pub h: DMatrix<f64>,
    /// Columns whose diagonal was zero: their weights never matter and are zeroed (as GPTQ does).
    pub dead: Vec<usize>,
}

/// Damps a Hessian the way QuIP#/NWC do: dead columns (zero diagonal) get diagonal 1 and are
/// reported, then `H ← H / mean(diag H) + rel · I`.
///
/// # Errors
/// [`LdlError::Shape`] for a non-square matrix, [`LdlError::Invalid`] for non-finite entries, a
/// negative diagonal, or an all-zero Hessian.
pub fn damp(h: &DMatrix<f64>, rel: f64) -> Result<Damped> {
    damp_owned(h.clone(), rel)
}

/// [`damp`] in place of `h` (no copy of a large Hessian).
///
/// # Errors
/// As [`damp`].
pub fn damp_owned(mut h: DMatrix<f64>, rel: f64) -> Result<Damped> {
    let n = h.nrows();
    if h.ncols() != n {
        return Err(LdlError::Shape(format!("{}×{} Hessian", n, h.ncols())));
    }
    if h.iter().any(|v| !v.is_finite()) || h.diagonal().iter().any(|&d| d < 0.0) {
        return Err(LdlError::Invalid(
            "Hessian has non-finite entries or a negative diagonal".into(),
        ));
    }
    let dead: Vec<usize> = (0..n).filter(|&i| h[(i, i)] == 0.0).collect();
    if dead.len() == n {
        return Err(LdlError::Invalid(
            "every column is dead (all-zero Hessian)".into(),
        ));
    }
    let live_mean = (0..n)
        .filter(|i| !dead.contains(i))
        .map(|i| h[(i, i)])
        .sum::<f64>()
        / (n - dead.len()) as f64;
    for &i in &dead {
        h[(i, i)] = live_mean;
    }
    let mean = h.diagonal().mean();
    h /= mean;
    for i in 0..n {
        h[(i, i)] += rel;
    }
    Ok(Damped { h, dead })
}
