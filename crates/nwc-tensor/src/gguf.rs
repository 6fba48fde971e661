//! Reading GGUF files (llama.cpp's format, versions 2 and 3): metadata and tensors, with the
//! block-quantized types dequantized to f32.
//!
//! Every count and offset read from the file is checked against the file's size before anything
//! is allocated, so a malformed file is an error, never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::cursor::Cursor;
use crate::error::{Result, TensorError};
use crate::source::{WeightSource, map_file};
use crate::tensor::{DType, Tensor};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// A GGUF metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool`.
    Bool(bool),
    /// UTF-8 string (invalid UTF-8 is replaced).
    String(String),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
    /// A homogeneous array.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(u64::from(v)),
            GgufValue::U16(v) => Some(u64::from(v)),
            GgufValue::U32(v) => Some(u64::from(v)),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(f64::from(v)),
            GgufValue::F64(v) => Some(v),
            GgufValue::I8(v) => Some(f64::from(v)),
            GgufValue::I16(v) => Some(f64::from(v)),
            GgufValue::I32(v) => Some(f64::from(v)),
            GgufValue::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// GGML tensor types nwc can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(non_camel_case_types)] // GGML's own names
pub enum GgmlType {
    /// f32.
    F32,
    /// f16.
    F16,
    /// bf16.
    BF16,
    /// 32-value blocks: f16 scale, 4-bit values offset by 8.
    Q4_0,
    /// 32-value blocks: f16 scale and f16 minimum, 4-bit values.
    Q4_1,
    /// 32-value blocks: f16 scale, 8-bit signed values.
    Q8_0,
    /// 256-value super-blocks of eight 32-value sub-blocks: f16 scale and minimum, 6-bit
    /// sub-block scales and minimums, 4-bit values.
    Q4_K,
    /// As [`GgmlType::Q4_K`] with a fifth bit per value.
    Q5_K,
    /// 256-value super-blocks of sixteen 16-value sub-blocks: f16 scale, 8-bit sub-block
    /// scales, 6-bit values offset by 32.
    Q6_K,
}

impl GgmlType {
    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// (values per block, bytes per block).
    fn block(self) -> (u64, u64) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4_K => (QK_K, 144),
            GgmlType::Q5_K => (QK_K, 176),
            GgmlType::Q6_K => (QK_K, 210),
        }
    }
}

/// One tensor's entry in the GGUF tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Tensor name.
    pub name: String,
    /// Shape in row-major order (GGUF stores dimensions fastest-first; this is reversed).
    pub shape: Vec<usize>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

/// A GGUF file: metadata and tensor table parsed at open; tensor data read from the file on
/// request (positioned reads, not a memory map, so a process that reads a model tensor by tensor
/// holds only what it keeps).
pub struct GgufFile {
    path: PathBuf,
    file: std::fs::File,
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

fn malformed(reason: impl Into<String>) -> TensorError {
    TensorError::Malformed {
        format: "GGUF",
        reason: reason.into(),
    }
}

/// GGUF strings: a u64 length, then UTF-8 bytes (invalid UTF-8 is replaced).
fn string(c: &mut Cursor<'_>) -> Result<String> {
    let n = c.u64()?;
    Ok(String::from_utf8_lossy(c.take(n)?).into_owned())
}

impl Cursor<'_> {
    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.u8()?),
            1 => GgufValue::I8(self.array::<1>()?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array()?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array()?)),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array()?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array()?)),
            7 => GgufValue::Bool(self.array::<1>()?[0] != 0),
            8 => GgufValue::String(string(self)?),
            9 => {
                if depth > 4 {
                    return Err(malformed("metadata arrays nested too deeply"));
                }
                let elem = self.u32()?;
                let n = self.u64()?;
                // Every element takes at least one byte: a count beyond the bytes left is a lie.
                if n > self.remaining() {
                    return Err(malformed(format!("array of {n} elements exceeds the file")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(elem, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array()?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array()?)),
            other => return Err(malformed(format!("unknown metadata type {other}"))),
        })
    }
}

impl GgufFile {
    /// Opens a GGUF file and parses its metadata and tensor table.
    ///
    /// # Errors
    /// [`TensorError::Io`] when the file cannot be read; [`TensorError::Malformed`] for a wrong
    /// magic, an unsupported version, truncation or out-of-range offsets;
    /// [`TensorError::UnsupportedDtype`] for a tensor type nwc does not dequantize.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let map = map_file(&path)?;
        let (version, metadata, tensors) = parse(&map)?;
        drop(map);
        let file = std::fs::File::open(&path).map_err(|source| TensorError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            path,
            file,
            version,
            metadata,
            tensors,
        })
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// All metadata key–value pairs.
    pub fn metadata(&self) -> &BTreeMap<String, GgufValue> {
        &self.metadata
    }

    /// The tensor table, in file order.
    pub fn tensor_infos(&self) -> &[GgufTensorInfo] {
        &self.tensors
    }

    /// One tensor's values as f32 and its shape, dequantized straight from the file's bytes (no
    /// intermediate [`Tensor`] for block-quantized types: a large matrix is held once, not twice).
    ///
    /// # Errors
    /// [`TensorError::NotFound`] for an unknown name; read errors.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let info = self.info(name)?;
        let values = match info.ggml_type {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => self.tensor(name)?.to_f32()?,
            q => dequantize(q, &self.read(info)?),
        };
        Ok((values, info.shape.clone()))
    }

    /// The dtype [`WeightSource::tensor`] hands this tensor out in (F32 for block-quantized
    /// types), without reading it.
    ///
    /// # Errors
    /// [`TensorError::NotFound`] for an unknown name.
    pub fn dtype(&self, name: &str) -> Result<DType> {
        Ok(match self.info(name)?.ggml_type {
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            _ => DType::F32,
        })
    }

    fn info(&self, name: &str) -> Result<&GgufTensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| TensorError::NotFound(name.to_string()))
    }

    /// The data of one tensor, read from the file (offsets were checked against the file's
    /// length at open).
    fn read(&self, info: &GgufTensorInfo) -> Result<Vec<u8>> {
        let io = |source| TensorError::Io {
            path: self.path.clone(),
            source,
        };
        let mut buf = vec![0u8; info.size as usize];
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.file.read_exact_at(&mut buf, info.offset).map_err(io)?;
        }
        #[cfg(not(unix))]
        {
            // A handle of its own: reads from several threads never share a position.
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&self.path).map_err(io)?;
            f.seek(SeekFrom::Start(info.offset)).map_err(io)?;
            f.read_exact(&mut buf).map_err(io)?;
        }
        Ok(buf)
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn parse(data: &[u8]) -> Result<(u32, BTreeMap<String, GgufValue>, Vec<GgufTensorInfo>)> {
    let mut c = Cursor::new(data, "GGUF");
    if &c.array::<4>()? != MAGIC {
        return Err(malformed("wrong magic (not a GGUF file)"));
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(malformed(format!("unsupported version {version}")));
    }
    let n_tensors = c.u64()?;
    let n_kv = c.u64()?;
    if n_tensors > c.remaining() || n_kv > c.remaining() {
        return Err(malformed("counts exceed the file size"));
    }
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = string(&mut c)?;
        let ty = c.u32()?;
        let v = c.value(ty, 0)?;
        metadata.insert(key, v);
    }
    let alignment = metadata
        .get("general.alignment")
        .and_then(GgufValue::as_u64)
        .unwrap_or(DEFAULT_ALIGNMENT);
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(malformed(format!(
            "alignment {alignment} is not a power of two"
        )));
    }
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let name = string(&mut c)?;
        let n_dims = c.u32()?;
        if n_dims > 8 {
            return Err(malformed(format!("tensor {name} has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64()?);
        }
        let code = c.u32()?;
        let offset = c.u64()?;
        let ggml_type = GgmlType::from_code(code).ok_or_else(|| TensorError::UnsupportedDtype {
            name: name.clone(),
            dtype: format!("ggml type {code}"),
        })?;
        raw.push((name, dims, ggml_type, offset));
    }
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ggml_type, offset) in raw {
        let numel = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| malformed(format!("tensor {name}: shape overflows")))?;
        let (per_block, block_bytes) = ggml_type.block();
        if dims.first().is_some_and(|&d| d % per_block != 0) {
            return Err(malformed(format!(
                "tensor {name}: row of {} values is not whole blocks of {per_block}",
                dims[0]
            )));
        }
        let size = (numel / per_block)
            .checked_mul(block_bytes)
            .ok_or_else(|| malformed(format!("tensor {name}: size overflows")))?;
        let start = data_start
            .checked_add(offset)
            .filter(|s| s.checked_add(size).is_some_and(|e| e <= data.len() as u64))
            .ok_or_else(|| malformed(format!("tensor {name}: data lies outside the file")))?;
        let shape = dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).map_err(|_| malformed("dimension overflows")))
            .collect::<Result<Vec<_>>>()?;
        tensors.push(GgufTensorInfo {
            name,
            shape,
            ggml_type,
            offset: start,
            size,
        });
    }
    Ok((version, metadata, tensors))
}

/// Values per K-quant super-block.
const QK_K: u64 = 256;

/// Scale and minimum (6 bits each) of sub-block `j` of a Q4_K/Q5_K super-block, from its 12
/// packed bytes (`get_scale_min_k4` in GGML).
fn scale_min_k4(j: usize, q: &[u8]) -> (f32, f32) {
    let (d, m) = if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    };
    (f32::from(d), f32::from(m))
}

/// Q4_K and Q5_K super-blocks (GGML's `dequantize_row_q4_K` / `_q5_K`, in its operation order,
/// so the values are bit-identical to GGML's).
fn dequantize_q45k(data: &[u8], five: bool) -> Vec<f32> {
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    let block = if five { 176 } else { 144 };
    let mut out = Vec::with_capacity(data.len() / block * QK_K as usize);
    for b in data.chunks_exact(block) {
        let (d, min) = (h(&b[0..2]), h(&b[2..4]));
        let scales = &b[4..16];
        let (qh, qs) = if five {
            (&b[16..48], &b[48..176])
        } else {
            (&b[0..0], &b[16..144])
        };
        for (k, q) in qs.chunks_exact(32).enumerate() {
            let (sc1, m1) = scale_min_k4(2 * k, scales);
            let (sc2, m2) = scale_min_k4(2 * k + 1, scales);
            let (d1, m1, d2, m2) = (d * sc1, min * m1, d * sc2, min * m2);
            let high = |l: usize, bit: usize| {
                if five && qh[l] & (1 << bit) != 0 {
                    16.0
                } else {
                    0.0
                }
            };
            out.extend(
                q.iter()
                    .enumerate()
                    .map(|(l, &v)| d1 * (f32::from(v & 0x0f) + high(l, 2 * k)) - m1),
            );
            out.extend(
                q.iter()
                    .enumerate()
                    .map(|(l, &v)| d2 * (f32::from(v >> 4) + high(l, 2 * k + 1)) - m2),
            );
        }
    }
    out
}

/// Q6_K super-blocks (GGML's `dequantize_row_q6_K`, in its operation order).
fn dequantize_q6k(data: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len() / 210 * QK_K as usize);
    for b in data.chunks_exact(210) {
        let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
        for half in 0..2 {
            let ql = &b[64 * half..64 * half + 64];
            let qh = &b[128 + 32 * half..128 + 32 * half + 32];
            let sc = &b[192 + 8 * half..192 + 8 * half + 8];
            let mut y = [0.0f32; 128];
            for l in 0..32 {
                let is = l / 16;
                let q = |lo: u8, shift: u32| {
                    f32::from(((lo | (((qh[l] >> shift) & 3) << 4)) as i8) - 32)
                };
                let s = |i: usize| d * f32::from(sc[i] as i8);
                y[l] = s(is) * q(ql[l] & 0x0f, 0);
                y[l + 32] = s(is + 2) * q(ql[l + 32] & 0x0f, 2);
                y[l + 64] = s(is + 4) * q(ql[l] >> 4, 4);
                y[l + 96] = s(is + 6) * q(ql[l + 32] >> 4, 6);
            }
            out.extend_from_slice(&y);
        }
    }
    out
}

/// Dequantizes GGML data to f32 (exact: every supported type is a scaled integer or a float,
/// computed in GGML's own operation order).
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let h = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
    match ty {
        GgmlType::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        GgmlType::F16 => data.chunks_exact(2).map(h).collect(),
        GgmlType::BF16 => data
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        GgmlType::Q8_0 => data
            .chunks_exact(34)
            .flat_map(|b| {
                let d = h(&b[0..2]);
                b[2..34].iter().map(move |&q| f32::from(q as i8) * d)
            })
            .collect(),
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let mut out = Vec::with_capacity(data.len() / 18 * 32);
            let (block, qs_at) = if ty == GgmlType::Q4_0 {
                (18, 2)
            } else {
                (20, 4)
            };
            for b in data.chunks_exact(block) {
                let d = h(&b[0..2]);
                let (m, offset) = if ty == GgmlType::Q4_0 {
                    (0.0, 8.0)
                } else {
                    (h(&b[2..4]), 0.0)
                };
                let qs = &b[qs_at..qs_at + 16];
                // Low nibbles hold values 0..16 of the block, high nibbles values 16..32.
                out.extend(qs.iter().map(|&q| (f32::from(q & 0x0f) - offset) * d + m));
                out.extend(qs.iter().map(|&q| (f32::from(q >> 4) - offset) * d + m));
            }
            out
        }
        GgmlType::Q4_K => dequantize_q45k(data, false),
        GgmlType::Q5_K => dequantize_q45k(data, true),
        GgmlType::Q6_K => dequantize_q6k(data),
    }
}

impl WeightSource for GgufFile {
    fn names(&self) -> Vec<String> {
        self.tensors.iter().map(|t| t.name.clone()).collect()
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.info(name)?;
        let bytes = self.read(info)?;
        match info.ggml_type {
            // Float types are passed through bit-exact in their own dtype.
            GgmlType::F32 => Tensor::from_bytes(name, DType::F32, info.shape.clone(), bytes),
            GgmlType::F16 => Tensor::from_bytes(name, DType::F16, info.shape.clone(), bytes),
            GgmlType::BF16 => Tensor::from_bytes(name, DType::BF16, info.shape.clone(), bytes),
            q => Tensor::from_f32(name, DType::F32, info.shape.clone(), &dequantize(q, &bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    }

    /// A minimal GGUF v3 file with one Q4_1 tensor of shape (2, 32) and one metadata array.
    fn tiny_gguf() -> Vec<u8> {
        let mut f = b"GGUF".to_vec();
        f.extend(3u32.to_le_bytes());
        f.extend(1u64.to_le_bytes());
        f.extend(1u64.to_le_bytes());
        f.extend(string("tokenizer.ggml.tokens"));
        f.extend(9u32.to_le_bytes());
        f.extend(8u32.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        f.extend(string("a"));
        f.extend(string("b"));
        f.extend(string("w"));
        f.extend(2u32.to_le_bytes());
        f.extend(32u64.to_le_bytes());
        f.extend(2u64.to_le_bytes());
        f.extend(3u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        while !f.len().is_multiple_of(32) {
            f.push(0);
        }
        for row in 0..2u8 {
            f.extend(f16::from_f32(0.5).to_le_bytes());
            f.extend(f16::from_f32(f32::from(row)).to_le_bytes());
            f.extend((0..16u8).map(|i| i | ((15 - i) << 4)));
        }
        f
    }

    #[test]
    fn parses_and_dequantizes_q4_1() {
        let f = tiny_gguf();
        let (v, meta, tensors) = parse(&f).unwrap();
        assert_eq!(v, 3);
        assert_eq!(meta["tokenizer.ggml.tokens"].as_array().unwrap().len(), 2);
        assert_eq!(tensors[0].shape, vec![2, 32]);
        let data = &f[tensors[0].offset as usize..][..tensors[0].size as usize];
        let w = dequantize(GgmlType::Q4_1, data);
        assert_eq!(w.len(), 64);
        assert_eq!(w[0], 0.0);
        assert_eq!(w[15], 7.5);
        assert_eq!(w[16], 7.5);
        assert_eq!(w[32 + 1], 1.5);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let f = tiny_gguf();
        for cut in 0..f.len() {
            assert!(parse(&f[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_counts_are_errors() {
        let mut f = tiny_gguf();
        f[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&f).is_err());
        let mut f = tiny_gguf();
        f[0] = b'X';
        assert!(parse(&f).is_err());
    }
}
