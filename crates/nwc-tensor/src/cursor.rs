//! A bounds-checked little-endian reader over a byte slice: the one byte cursor of every binary
//! reader in nwc (GGUF, CTranslate2, the `.nwc` container, codec checkpoints, Hessian caches,
//! layer-by-layer resume checkpoints). Every read checks the bytes left first, so a lying length
//! is an error, not a panic.

use crate::error::{Result, TensorError};

/// A little-endian reader over bytes whose every read is bounds-checked.
#[derive(Debug)]
pub struct Cursor<'a> {
    data: &'a [u8],
    pub(crate) pos: usize,
    format: &'static str,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `data`; errors name `format`.
    pub fn new(data: &'a [u8], format: &'static str) -> Self {
        Self {
            data,
            pos: 0,
            format,
        }
    }

    /// A [`TensorError::Malformed`] for this format.
    pub fn malformed(&self, reason: impl Into<String>) -> TensorError {
        TensorError::Malformed {
            format: self.format,
            reason: reason.into(),
        }
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] when fewer are left.
    pub fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                self.malformed(format!("unexpected end of file at byte {}", self.pos))
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next `N` bytes as an array.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] at the end of the data.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N as u64)?.try_into().expect("N bytes"))
    }

    /// The next byte.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] at the end of the data.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    /// The next little-endian `u16`.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] at the end of the data.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// The next little-endian `u32`.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] at the end of the data.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// The next little-endian `u64`.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] at the end of the data.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// The next little-endian `i32`.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] at the end of the data.
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    /// The next little-endian `f32`.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] at the end of the data.
    pub fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.array()?))
    }

    /// The next little-endian `f64`.
    ///
    /// # Errors
    /// [`TensorError::Malformed`] at the end of the data.
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// Bytes read so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes left.
    pub fn remaining(&self) -> u64 {
        (self.data.len() - self.pos) as u64
    }
}
