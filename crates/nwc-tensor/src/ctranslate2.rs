//! Reading CTranslate2 `model.bin` files (binary versions 1–6), as shipped for Whisper and
//! other converted models: named variables with shape and dtype, stored back to back.
//!
//! Every count and length is checked against the file before anything is allocated.

use std::path::{Path, PathBuf};

use crate::cursor::Cursor;
use crate::error::{Result, TensorError};
use crate::source::{WeightSource, map_file};
use crate::tensor::{DType, Tensor, numel};

fn malformed(reason: impl Into<String>) -> TensorError {
    TensorError::Malformed {
        format: "CTranslate2",
        reason: reason.into(),
    }
}

#[derive(Debug, Clone)]
struct Variable {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

/// A CTranslate2 model file, memory-mapped.
pub struct CTranslate2File {
    path: PathBuf,
    map: memmap2::Mmap,
    spec: String,
    variables: Vec<Variable>,
}

impl std::fmt::Debug for CTranslate2File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CTranslate2File")
            .field("path", &self.path)
            .field("spec", &self.spec)
            .field("variables", &self.variables.len())
            .finish()
    }
}

/// CTranslate2 strings: a u16 length, then bytes ending in a NUL.
fn string(c: &mut Cursor<'_>) -> Result<String> {
    let n = c.u16()?;
    let s = c.take(u64::from(n))?;
    let s = s.strip_suffix(&[0]).unwrap_or(s);
    Ok(String::from_utf8_lossy(s).into_owned())
}

fn dtype(code: u8, name: &str) -> Result<DType> {
    Ok(match code {
        0 => DType::F32,
        1 => DType::I8,
        2 => DType::I16,
        3 => DType::I32,
        4 => DType::F16,
        5 => DType::BF16,
        other => {
            return Err(TensorError::UnsupportedDtype {
                name: name.to_string(),
                dtype: format!("CTranslate2 dtype {other}"),
            });
        }
    })
}

fn parse(b: &[u8]) -> Result<(String, Vec<Variable>)> {
    let mut c = Cursor::new(b, "CTranslate2");
    let version = c.u32()?;
    if !(1..=6).contains(&version) {
        return Err(malformed(format!("unsupported binary version {version}")));
    }
    let spec = if version >= 2 {
        string(&mut c)?
    } else {
        String::new()
    };
    if version >= 3 {
        c.u32()?; // spec revision
    }
    let n = c.u32()? as usize;
    // A variable takes at least 8 bytes of header.
    if n as u64 > c.remaining() / 8 {
        return Err(malformed(format!("{n} variables cannot fit the file")));
    }
    let mut vars = Vec::with_capacity(n);
    for _ in 0..n {
        let name = string(&mut c)?;
        let rank = usize::from(c.u8()?);
        if rank > 8 {
            return Err(malformed(format!("{name}: rank {rank}")));
        }
        let shape = (0..rank)
            .map(|_| c.u32().map(|d| d as usize))
            .collect::<Result<Vec<_>>>()?;
        let dt = if version >= 4 {
            dtype(c.u8()?, &name)?
        } else {
            DType::F32
        };
        let len = if version >= 4 {
            c.u32()? as usize
        } else {
            numel(&shape)
                .and_then(|n| n.checked_mul(4))
                .ok_or_else(|| malformed("size overflows"))?
        };
        let expected = numel(&shape).and_then(|n| n.checked_mul(dt.size()));
        if expected != Some(len) {
            return Err(malformed(format!(
                "{name}: {len} bytes for shape {shape:?} of {dt}"
            )));
        }
        let offset = c.pos;
        c.take(len as u64)?;
        vars.push(Variable {
            name,
            dtype: dt,
            shape,
            offset,
            len,
        });
    }
    Ok((spec, vars))
}

impl CTranslate2File {
    /// Opens a CTranslate2 `model.bin`.
    ///
    /// # Errors
    /// [`TensorError::Io`] when it cannot be read, [`TensorError::Malformed`] when it is not a
    /// valid CTranslate2 file, [`TensorError::UnsupportedDtype`] for quantized types.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let map = map_file(&path)?;
        let (spec, variables) = parse(&map)?;
        Ok(Self {
            path,
            map,
            spec,
            variables,
        })
    }

    /// The model specification name (for example `WhisperSpec`).
    pub fn spec(&self) -> &str {
        &self.spec
    }
}

impl WeightSource for CTranslate2File {
    fn names(&self) -> Vec<String> {
        self.variables.iter().map(|v| v.name.clone()).collect()
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        let v = self
            .variables
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| TensorError::NotFound(name.to_string()))?;
        Tensor::from_bytes(
            name,
            v.dtype,
            v.shape.clone(),
            self.map[v.offset..v.offset + v.len].to_vec(),
        )
    }
}

/// Whether `head` (the first bytes of a file) looks like a CTranslate2 model.
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.len() >= 6
        && (1..=6).contains(&u32::from_le_bytes([head[0], head[1], head[2], head[3]]))
        && head[4..6] != [0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Vec<u8> {
        let mut f = 6u32.to_le_bytes().to_vec();
        let s = |v: &mut Vec<u8>, t: &str| {
            v.extend(((t.len() + 1) as u16).to_le_bytes());
            v.extend(t.as_bytes());
            v.push(0);
        };
        s(&mut f, "WhisperSpec");
        f.extend(3u32.to_le_bytes());
        f.extend(1u32.to_le_bytes());
        s(&mut f, "encoder/w");
        f.push(2);
        f.extend(2u32.to_le_bytes());
        f.extend(3u32.to_le_bytes());
        f.push(4);
        f.extend(12u32.to_le_bytes());
        f.extend([0u8, 0x3c].repeat(6)); // six f16 ones
        f.extend(0u32.to_le_bytes()); // aliases
        f
    }

    #[test]
    fn parses_variables() {
        let (spec, vars) = parse(&tiny()).unwrap();
        assert_eq!(spec, "WhisperSpec");
        assert_eq!(vars[0].name, "encoder/w");
        assert_eq!(vars[0].shape, vec![2, 3]);
        assert_eq!(vars[0].dtype, DType::F16);
        assert!(sniff(&tiny()));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let f = tiny();
        for cut in 0..f.len() - 4 {
            assert!(parse(&f[..cut]).is_err(), "cut {cut}");
        }
    }
}
