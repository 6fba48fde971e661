//! Dtype-tagged tensors held as little-endian bytes, and their conversion to and from f32.

use half::{bf16, f16};

use crate::error::{Result, TensorError};

/// Element types a tensor can have. The numeric codes are those of `docs/format.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16.
    BF16,
    /// IEEE binary64.
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Boolean, one byte.
    Bool,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
}

impl DType {
    const ALL: [DType; 13] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F64,
        DType::I8,
        DType::I16,
        DType::Bool,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 | DType::U8 | DType::Bool => 1,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F64 | DType::I64 | DType::U64 => 8,
        }
    }

    /// The code `docs/format.md` gives this dtype.
    pub fn code(self) -> u8 {
        Self::ALL.iter().position(|&d| d == self).expect("listed") as u8
    }

    /// The dtype of a format code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// Whether values of this dtype can be converted to f32 and coded lossily.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// A named tensor: dtype, shape and its elements as little-endian bytes in row-major order.
///
/// Bytes are kept as they were read, so a tensor nwc stores losslessly comes back bit-exact
/// whatever its dtype.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Tensor {
    /// A tensor from raw little-endian bytes.
    ///
    /// # Errors
    /// [`TensorError::Shape`] when the byte length does not match shape × element size.
    pub fn from_bytes(
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        bytes: Vec<u8>,
    ) -> Result<Self> {
        let name = name.into();
        let numel = numel(&shape).ok_or_else(|| TensorError::Shape {
            name: name.clone(),
            reason: format!("shape {shape:?} overflows"),
        })?;
        if numel.checked_mul(dtype.size()) != Some(bytes.len()) {
            return Err(TensorError::Shape {
                name,
                reason: format!(
                    "{} bytes for shape {shape:?} of {dtype} ({numel} elements)",
                    bytes.len()
                ),
            });
        }
        Ok(Self {
            name,
            dtype,
            shape,
            bytes,
        })
    }

    /// A float tensor from f32 values, rounded to `dtype` (round-to-nearest-even).
    ///
    /// # Errors
    /// [`TensorError::UnsupportedDtype`] unless `dtype` is F32, F16 or BF16;
    /// [`TensorError::Shape`] when the value count does not match the shape.
    pub fn from_f32(
        name: impl Into<String>,
        dtype: DType,
        shape: Vec<usize>,
        values: &[f32],
    ) -> Result<Self> {
        let name = name.into();
        let mut bytes = Vec::with_capacity(values.len() * dtype.size());
        Self::extend_bytes_f32(&name, dtype, values, &mut bytes)?;
        Self::from_bytes(name, dtype, shape, bytes)
    }

    /// Appends `values` to `out` as little-endian `dtype` elements, rounded to nearest even:
    /// the bytes of [`Tensor::from_f32`], for a tensor built a slab of rows at a time.
    ///
    /// # Errors
    /// [`TensorError::UnsupportedDtype`] (naming `name`) for non-float dtypes.
    pub fn extend_bytes_f32(
        name: &str,
        dtype: DType,
        values: &[f32],
        out: &mut Vec<u8>,
    ) -> Result<()> {
        match dtype {
            DType::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
            DType::F16 => out.extend(values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
            DType::BF16 => {
                out.extend(values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()));
            }
            other => {
                return Err(TensorError::UnsupportedDtype {
                    name: name.to_string(),
                    dtype: other.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Its shape (row-major).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Consumes the tensor, returning its bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The elements as f32 (exact for all three float dtypes).
    ///
    /// # Errors
    /// [`TensorError::UnsupportedDtype`] for non-float dtypes.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        self.elements_f32(0..self.numel())
    }

    /// Rows `rows` of the [`Tensor::matrix_dims`] view as f32, row-major: a slab of a matrix too
    /// large to convert whole.
    ///
    /// # Errors
    /// [`TensorError::Shape`] for a tensor that is not a matrix or rows past its end;
    /// [`TensorError::UnsupportedDtype`] for non-float dtypes.
    pub fn rows_f32(&self, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        match self.matrix_dims() {
            Some((n, cols)) if rows.start <= rows.end && rows.end <= n => {
                self.elements_f32(rows.start * cols..rows.end * cols)
            }
            _ => Err(TensorError::Shape {
                name: self.name.clone(),
                reason: format!("rows {rows:?} of a tensor of shape {:?}", self.shape),
            }),
        }
    }

    fn elements_f32(&self, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let size = self.dtype.size();
        let b = &self.bytes[range.start * size..range.end * size];
        Ok(match self.dtype {
            DType::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            DType::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(TensorError::UnsupportedDtype {
                    name: self.name.clone(),
                    dtype: other.to_string(),
                });
            }
        })
    }

    /// The `(rows, cols)` matrix view nwc codes: rows = `shape[0]`, cols = the product of the
    /// remaining dimensions. `None` for tensors with fewer than two dimensions.
    pub fn matrix_dims(&self) -> Option<(usize, usize)> {
        if self.shape.len() < 2 || self.shape[0] == 0 {
            return None;
        }
        Some((self.shape[0], self.numel() / self.shape[0]))
    }
}

/// The element count of a shape, `None` on overflow.
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtype_codes_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
        }
        assert_eq!(DType::from_code(13), None);
        assert_eq!(DType::F32.code(), 0);
        assert_eq!(DType::U64.code(), 12);
    }

    #[test]
    fn float_conversion_round_trips() {
        let v = [1.0f32, -2.5, 0.0, 65504.0];
        for d in [DType::F32, DType::F16, DType::BF16] {
            let t = Tensor::from_f32("t", d, vec![2, 2], &v).unwrap();
            assert_eq!(t.to_f32().unwrap()[..3], v[..3]);
            assert_eq!(t.matrix_dims(), Some((2, 2)));
        }
        assert!(Tensor::from_f32("t", DType::I8, vec![4], &v).is_err());
        assert!(Tensor::from_f32("t", DType::F32, vec![3], &v).is_err());
        let i = Tensor::from_bytes("i", DType::I64, vec![1], vec![0; 8]).unwrap();
        assert!(i.to_f32().is_err());
        assert_eq!(i.matrix_dims(), None);
    }
}
