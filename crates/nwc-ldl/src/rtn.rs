//! The baselines users would pick instead of NWC: per-group round-to-nearest (RTN) and GPTQ
//! (LDLQ feedback with the same grid), serialized so their rate is *measured* in bytes.

use half::f16;

use crate::error::{LdlError, Result};
use crate::ldl::{BlockLdl, ldlq};

/// Asymmetric min/max round-to-nearest with one grid per `group` consecutive columns of a row
/// (the GPTQ/AWQ "g128" layout). Each group stores an f16 scale and an f16 minimum, then its
/// `bits`-bit codes, bit-packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupRtn {
    bits: u32,
    group: usize,
}

/// A quantized matrix: dequantized values and the bytes that store it.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// Dequantized weights, row-major.
    pub values: Vec<f32>,
    /// The serialized groups (scales, minima and codes).
    pub bytes: Vec<u8>,
}

impl GroupRtn {
    /// A grid of `bits` bits (1..=8) per weight and groups of `group` columns.
    ///
    /// # Errors
    /// [`LdlError::Invalid`] outside those ranges.
    pub fn new(bits: u32, group: usize) -> Result<Self> {
        if !(1..=8).contains(&bits) || group == 0 {
            return Err(LdlError::Invalid(format!(
                "RTN with {bits} bits in groups of {group}"
            )));
        }
        Ok(Self { bits, group })
    }

    /// Bits per weight of the codes.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Columns per group.
    pub fn group(&self) -> usize {
        self.group
    }

    /// Quantizes a `rows × cols` row-major matrix; groups start at column 0.
    ///
    /// # Errors
    /// [`LdlError::Shape`] for a length mismatch, [`LdlError::Invalid`] for non-finite weights.
    pub fn quantize(&self, w: &[f32], rows: usize, cols: usize) -> Result<Packed> {
        if w.len() != rows * cols {
            return Err(LdlError::Shape(format!(
                "{} values as {rows}×{cols}",
                w.len()
            )));
        }
        if w.iter().any(|v| !v.is_finite()) {
            return Err(LdlError::Invalid("non-finite weight".into()));
        }
        let levels = ((1u32 << self.bits) - 1) as f32;
        let mut values = vec![0.0f32; w.len()];
        let mut bytes = Vec::new();
        for r in 0..rows {
            for g0 in (0..cols).step_by(self.group) {
                let g1 = (g0 + self.group).min(cols);
                let row = &w[r * cols + g0..r * cols + g1];
                let lo = row.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let scale = f16::from_f32(((hi - lo) / levels).max(1e-8))
                    .to_f32()
                    .max(f32::MIN_POSITIVE);
                let min = f16::from_f32(lo).to_f32();
                bytes.extend_from_slice(&f16::from_f32(scale).to_le_bytes());
                bytes.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                let mut acc = 0u32;
                let mut nbits = 0;
                for (k, &v) in row.iter().enumerate() {
                    let q = ((v - min) / scale).round().clamp(0.0, levels);
                    values[r * cols + g0 + k] = q * scale + min;
                    acc |= (q as u32) << nbits;
                    nbits += self.bits;
                    while nbits >= 8 {
                        bytes.push(acc as u8);
                        acc >>= 8;
                        nbits -= 8;
                    }
                }
                if nbits > 0 {
                    bytes.push(acc as u8);
                }
            }
        }
        Ok(Packed { values, bytes })
    }
}

/// GPTQ: LDLQ error feedback with [`GroupRtn`] as the quantizer, each group's grid fitted to its
/// feedback-updated weights (GPTQ's static groups). `ldl.block()` must be a multiple of the
/// group size so groups never straddle blocks.
///
/// # Errors
/// [`LdlError::Shape`] for mismatched sizes or block and group sizes that do not nest.
pub fn gptq(w: &[f32], rows: usize, cols: usize, ldl: &BlockLdl, rtn: GroupRtn) -> Result<Packed> {
    if !ldl.block().is_multiple_of(rtn.group()) {
        return Err(LdlError::Shape(format!(
            "LDL block {} is not a multiple of the group size {}",
            ldl.block(),
            rtn.group()
        )));
    }
    let mut pieces: Vec<(usize, Vec<u8>)> = Vec::new();
    let values = ldlq(w, rows, cols, ldl, |s, target| {
        let bw = target.len() / rows;
        let p = rtn.quantize(target, rows, bw)?;
        pieces.push((s, p.bytes));
        Ok(p.values)
    })?;
    pieces.sort_by_key(|(s, _)| *s);
    Ok(Packed {
        values,
        bytes: pieces.into_iter().flat_map(|(_, b)| b).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtn_error_within_half_a_step_and_size_exact() {
        let (rows, cols) = (3, 300);
        let w: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        for bits in [2, 3, 4, 8] {
            let q = GroupRtn::new(bits, 128)
                .unwrap()
                .quantize(&w, rows, cols)
                .unwrap();
            let step = 2.0 / ((1u32 << bits) - 1) as f32;
            for (a, b) in w.iter().zip(&q.values) {
                assert!((a - b).abs() <= step / 2.0 + 2e-3, "{bits}: {a} vs {b}");
            }
            // Groups of 128, 128, 44 per row: 4 bytes of header and ⌈n·bits/8⌉ of codes each.
            let per_row: usize = [128usize, 128, 44]
                .iter()
                .map(|n| 4 + (n * bits as usize).div_ceil(8))
                .sum();
            assert_eq!(q.bytes.len(), rows * per_row);
        }
        assert!(GroupRtn::new(0, 128).is_err());
        assert!(
            GroupRtn::new(4, 128)
                .unwrap()
                .quantize(&[f32::NAN], 1, 1)
                .is_err()
        );
    }
}
