//! LDLQ inside the compressor: a matrix coded column block by column block, each block's
//! coding error fed into the blocks not yet coded through the Hessian's LDL factor.

use nwc_tensor::{ScaleAxis, Tensor};

use nwc_format::Record;

use crate::encode::Compressor;
use crate::error::{NwcError, Result};
use crate::plan::{SlabSymbols, chunk_levels, sum_sq, sum_sq_diff};
use crate::report::TensorReport;

impl Compressor<'_> {
    /// Compresses a matrix with LDLQ error feedback: columns are coded block by block (last block
    /// first, blocks of `ldl.block()` columns), and each block's target is its weights plus the
    /// coding error of the blocks already coded, propagated through the block LDL factor of the
    /// layer's Hessian. The codec itself is in the loop, so the errors fed back are the ones the
    /// decoder will reproduce.
    ///
    /// With [`crate::CompressOptions::incoherence`] the loop runs on the rotated matrix, and
    /// `importance` and `ldl` must be those of the rotated Hessian `V H Vᵀ`.
    ///
    /// Scales are fixed from the original matrix before the loop, so normalization stays
    /// invertible. The feedback never crosses rows, so a large matrix runs the loop one slab of
    /// rows at a time. The report's error is the loop's own reconstruction (for f32 tensors
    /// exactly what the decoder returns; other dtypes add one rounding).
    ///
    /// # Errors
    /// As [`Compressor::compress_tensor`], plus [`NwcError::Config`] when the tensor is not a
    /// coded matrix or the factor's width differs from its columns.
    pub fn compress_tensor_ldlq(
        &self,
        t: &Tensor,
        importance: Option<&[f32]>,
        ldl: &nwc_ldl::BlockLdl,
    ) -> Result<(Record, TensorReport)> {
        let name = t.name();
        let Some((_, cols)) = t.matrix_dims().filter(|_| self.options().policy.codes(t)) else {
            return Err(NwcError::Config(format!(
                "{name}: LDLQ needs a matrix the policy codes"
            )));
        };
        if ldl.l().nrows() != cols {
            return Err(NwcError::Config(format!(
                "{name}: a {}-column LDL factor for {cols} columns",
                ldl.l().nrows()
            )));
        }
        let original = t;
        let rotated = self.rotated(t)?;
        let t = rotated.as_ref().unwrap_or(t);
        let plan = self.plan(t, importance)?;
        let l = plan.chunk_len;
        let scales: Vec<f32> = plan.scales.iter().map(|s| s.to_f32()).collect();
        let mut coded = SlabSymbols::new(&plan);
        let mut sq_error = 0.0f64;
        let mut sq_signal = 0.0f64;
        for rows in plan.slabs() {
            let values = t.rows_f32(rows.clone())?;
            sq_signal += sum_sq(&values);
            let n = rows.len();
            let blocks = n.div_ceil(l);
            let per_col = blocks * l;
            let scale = |r: usize, c: usize| match plan.axis {
                ScaleAxis::Column => scales[c],
                ScaleAxis::Row => scales[rows.start + r],
            };
            let slab_levels = chunk_levels(&plan.levels, blocks);
            let out = nwc_ldl::ldlq::<NwcError>(&values, n, cols, ldl, |s, target| {
                let bw = target.len() / n;
                let mut data = vec![0.0f32; bw * per_col];
                for r in 0..n {
                    for c in 0..bw {
                        data[c * per_col + r] = target[r * bw + c] / scale(r, s + c);
                    }
                }
                let lv = &slab_levels[s * blocks..(s + bw) * blocks];
                let q = self.codec().quantize(name, &data, l, lv)?;
                let recon = self
                    .codec()
                    .dequantize(name, &q.symbols, l, lv, &q.params)?;
                coded.place_columns(&rows, s, bw, &q.symbols, &q.params, name)?;
                let mut o = vec![0.0f32; n * bw];
                for r in 0..n {
                    for c in 0..bw {
                        o[r * bw + c] = recon[c * per_col + r] * scale(r, s + c);
                    }
                }
                Ok(o)
            })?;
            sq_error += sum_sq_diff(&values, &out);
        }
        let (mut record, report) = self.coded(t, &plan, coded, None, sq_error, sq_signal)?;
        record.dtype = original.dtype();
        Ok((record, report))
    }
}
