//! In-memory records and their byte encoding (`docs/format.md`, "Record").

use nwc_tensor::{DType, numel};

use crate::error::{FormatError, Result};

/// Prefix of metadata record names (`docs/format.md`, "Metadata records").
pub const METADATA_PREFIX: &str = "nwc.";

/// Whether a record name denotes metadata rather than a model parameter.
pub fn is_metadata(name: &str) -> bool {
    name.starts_with(METADATA_PREFIX)
}

/// Metadata text longer than this is stored as a zstd frame (`docs/format.md`).
pub const METADATA_COMPRESS_ABOVE: usize = 4096;
/// The most bytes a metadata frame may decode to.
pub const MAX_METADATA_BYTES: usize = 1 << 28;
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// The metadata record `name` holding `text`: the text itself, or a zstd frame of it when it
/// is longer than [`METADATA_COMPRESS_ABOVE`] bytes.
///
/// # Errors
/// [`FormatError::Corrupt`] for a name outside the metadata namespace; [`FormatError::Io`]
/// when compression fails.
pub fn metadata_record(name: &str, text: &[u8]) -> Result<Record> {
    if !is_metadata(name) {
        return Err(FormatError::Corrupt(format!(
            "metadata record {name:?} must start with {METADATA_PREFIX:?}"
        )));
    }
    let bytes = if text.len() > METADATA_COMPRESS_ABOVE {
        zstd::bulk::compress(text, 19)?
    } else {
        text.to_vec()
    };
    Ok(Record {
        name: name.to_string(),
        dtype: DType::U8,
        shape: vec![bytes.len() as u64],
        payload: Payload::Raw(bytes),
    })
}

/// The text a metadata record's bytes hold: the bytes themselves, or what their zstd frame
/// decodes to.
///
/// # Errors
/// [`FormatError::Corrupt`] for a damaged frame or one that decodes to more than
/// [`MAX_METADATA_BYTES`].
pub fn metadata_content(bytes: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    if !bytes.starts_with(&ZSTD_MAGIC) {
        return Ok(bytes.to_vec());
    }
    let bad = |e: std::io::Error| FormatError::Corrupt(format!("metadata frame: {e}"));
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(bytes)
        .map_err(bad)?
        .take(MAX_METADATA_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(bad)?;
    if out.len() > MAX_METADATA_BYTES {
        return Err(FormatError::Corrupt(format!(
            "metadata frame decodes to more than {MAX_METADATA_BYTES} bytes"
        )));
    }
    Ok(out)
}

/// Which codec family coded a file or a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodecKind {
    /// No codec: every tensor is stored losslessly.
    None,
    /// Uniform scalar quantization + the entropy coder (the ECSQ baseline).
    Ecsq,
    /// The learned NWC codec.
    Nwc,
    /// Entropy-constrained trellis-coded quantization (8-state trellis, no network).
    Tcq,
    /// The learned codec's trellis variant: TCQ-coded weights decoded by a learned synthesis
    /// network (needs its checkpoint).
    NwcTrellis,
}

impl CodecKind {
    /// Table-map rows per quality level: the coding contexts of the method (`docs/format.md`,
    /// "Trellis contexts"). 2 for TCQ (one per union codebook), 1 otherwise.
    pub fn contexts(self) -> usize {
        match self {
            CodecKind::Tcq | CodecKind::NwcTrellis => 2,
            CodecKind::None | CodecKind::Ecsq | CodecKind::Nwc => 1,
        }
    }

    /// Whether the table map stores one table per position of a chunk (`true`), or one per row,
    /// the same for every position (`false`: the trellis methods, whose symbols are not tied to a
    /// position). In memory a [`CodedPayload::table_map`] always has an entry per position.
    pub fn per_position_tables(self) -> bool {
        !matches!(self, CodecKind::Tcq | CodecKind::NwcTrellis)
    }

    /// The format code.
    pub fn code(self) -> u8 {
        match self {
            CodecKind::None => 0,
            CodecKind::Ecsq => 1,
            CodecKind::Nwc => 2,
            CodecKind::Tcq => 3,
            CodecKind::NwcTrellis => 4,
        }
    }

    /// The kind of a format code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(CodecKind::None),
            1 => Some(CodecKind::Ecsq),
            2 => Some(CodecKind::Nwc),
            3 => Some(CodecKind::Tcq),
            4 => Some(CodecKind::NwcTrellis),
            _ => None,
        }
    }
}

/// A stored entropy table (validated semantically by `nwc-entropy` when it is used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRecord {
    /// Value of the first in-range symbol.
    pub min_symbol: i32,
    /// Frequencies sum to `2^precision`.
    pub precision: u8,
    /// In-range frequencies, then the escape frequency.
    pub freqs: Vec<u16>,
}

/// The payload of an entropy-coded tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodedPayload {
    /// The codec family ([`CodecKind::Ecsq`] or [`CodecKind::Nwc`]).
    pub method: CodecKind,
    /// Values per chunk.
    pub chunk_len: u8,
    /// Normalization axis code (0 column, 1 row).
    pub scale_axis: u8,
    /// Number of quality levels.
    pub n_levels: u8,
    /// Rows of the matrix view (`shape[0]`).
    pub rows: u64,
    /// Columns of the matrix view.
    pub cols: u64,
    /// Scales as f16 bit patterns.
    pub scales: Vec<u16>,
    /// Quality level of every column (stored packed, 2 bits each).
    pub levels: Vec<u8>,
    /// Method parameters.
    pub params: Vec<u8>,
    /// Tables stored in the record (empty: the codec checkpoint's tables).
    pub tables: Vec<TableRecord>,
    /// `n_levels × contexts × chunk_len` table indices ([`CodecKind::contexts`]).
    pub table_map: Vec<u16>,
    /// Chunks per segment.
    pub chunks_per_segment: u32,
    /// The rANS segments.
    pub segments: Vec<Vec<u8>>,
}

impl CodedPayload {
    /// Chunks per column.
    pub fn blocks(&self) -> u64 {
        self.rows.div_ceil(u64::from(self.chunk_len.max(1)))
    }

    /// Total number of chunks.
    pub fn n_chunks(&self) -> u64 {
        self.cols * self.blocks()
    }
}

/// How a tensor is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Losslessly: the tensor's bytes.
    Raw(Vec<u8>),
    /// Entropy-coded.
    Coded(CodedPayload),
}

/// One tensor of a `.nwc` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Unique name.
    pub name: String,
    /// Dtype of the decoded tensor.
    pub dtype: DType,
    /// Shape, row-major.
    pub shape: Vec<u64>,
    /// The data.
    pub payload: Payload,
}

impl Record {
    /// Number of elements.
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// Limits of the format (see `docs/format.md`).
pub(crate) const MAX_NAME_LEN: usize = 4096;
pub(crate) const MAX_NDIM: usize = 8;
pub(crate) const MAX_ELEMENTS: u64 = 1 << 48;
pub(crate) const MAX_PARAMS_LEN: u32 = 65536;
pub(crate) const MAX_TABLES: u16 = 256;
pub(crate) const MAX_CHUNK_LEN: u8 = 64;
pub(crate) const MAX_LEVELS: u8 = 4;
pub(crate) const MAX_CHUNKS_PER_SEGMENT: u32 = 4096;
pub(crate) const MIN_SEGMENT_LEN: u32 = 32;

/// Packs 2-bit levels, four per byte, column `c` in bits `2·(c mod 4)`.
pub fn pack_levels(levels: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; levels.len().div_ceil(4)];
    for (c, &l) in levels.iter().enumerate() {
        out[c / 4] |= (l & 3) << (2 * (c % 4));
    }
    out
}

/// Unpacks `n` 2-bit levels.
pub fn unpack_levels(packed: &[u8], n: usize) -> Vec<u8> {
    (0..n)
        .map(|c| (packed[c / 4] >> (2 * (c % 4))) & 3)
        .collect()
}

fn invalid(m: impl Into<String>) -> FormatError {
    FormatError::Invalid(m.into())
}

/// Serializes a record body, checking everything the reader will check.
pub(crate) fn encode_body(r: &Record) -> Result<Vec<u8>> {
    if r.name.is_empty() || r.name.len() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "name of {} bytes (1..=4096)",
            r.name.len()
        )));
    }
    if r.shape.len() > MAX_NDIM {
        return Err(invalid(format!(
            "{}: {} dimensions (max 8)",
            r.name,
            r.shape.len()
        )));
    }
    let dims: Vec<usize> = r.shape.iter().map(|&d| d as usize).collect();
    let n = numel(&dims)
        .map(|n| n as u64)
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| invalid(format!("{}: shape {:?} too large", r.name, r.shape)))?;
    let mut b = Vec::new();
    b.extend((r.name.len() as u16).to_le_bytes());
    b.extend(r.name.as_bytes());
    b.push(r.dtype.code());
    b.push(r.shape.len() as u8);
    for d in &r.shape {
        b.extend(d.to_le_bytes());
    }
    match &r.payload {
        Payload::Raw(data) => {
            if data.len() as u64 != n * r.dtype.size() as u64 {
                return Err(invalid(format!(
                    "{}: {} raw bytes for {n} elements",
                    r.name,
                    data.len()
                )));
            }
            b.push(0);
            b.extend((data.len() as u64).to_le_bytes());
            b.extend(data);
        }
        Payload::Coded(c) => {
            b.push(1);
            encode_coded(&mut b, r, n, c)?;
        }
    }
    Ok(b)
}

fn encode_coded(b: &mut Vec<u8>, r: &Record, n: u64, c: &CodedPayload) -> Result<()> {
    let name = &r.name;
    let ok = r.dtype.is_float()
        && c.method != CodecKind::None
        && (1..=MAX_CHUNK_LEN).contains(&c.chunk_len)
        && c.scale_axis <= 3
        && (1..=MAX_LEVELS).contains(&c.n_levels)
        && r.shape.len() >= 2
        && c.rows == r.shape[0]
        && c.rows > 0
        && c.rows * c.cols == n
        && c.scales.len() as u64
            == if c.scale_axis & 1 == 0 {
                c.cols
            } else {
                c.rows
            }
        && c.levels.len() as u64 == c.cols
        && c.levels.iter().all(|&l| l < c.n_levels)
        && c.params.len() as u32 <= MAX_PARAMS_LEN
        && c.tables.len() <= usize::from(MAX_TABLES)
        && c.table_map.len()
            == usize::from(c.n_levels) * c.method.contexts() * usize::from(c.chunk_len)
        && (1..=MAX_CHUNKS_PER_SEGMENT).contains(&c.chunks_per_segment)
        && c.segments.len() as u64 == c.n_chunks().div_ceil(u64::from(c.chunks_per_segment))
        && c.segments.iter().all(|s| {
            s.len() >= MIN_SEGMENT_LEN as usize && s.len() % 4 == 0 && s.len() <= u32::MAX as usize
        });
    if !ok {
        return Err(invalid(format!("{name}: inconsistent coded payload")));
    }
    b.extend([c.method.code(), c.chunk_len, c.scale_axis, c.n_levels]);
    b.extend(c.rows.to_le_bytes());
    b.extend(c.cols.to_le_bytes());
    for s in &c.scales {
        b.extend(s.to_le_bytes());
    }
    b.extend(pack_levels(&c.levels));
    b.extend((c.params.len() as u32).to_le_bytes());
    b.extend(&c.params);
    b.extend((c.tables.len() as u16).to_le_bytes());
    for t in &c.tables {
        if !(2..=4097).contains(&t.freqs.len()) {
            return Err(invalid(format!(
                "{name}: table with {} frequencies",
                t.freqs.len()
            )));
        }
        b.extend(t.min_symbol.to_le_bytes());
        b.push(t.precision);
        b.extend((t.freqs.len() as u16).to_le_bytes());
        for f in &t.freqs {
            b.extend(f.to_le_bytes());
        }
    }
    if c.method.per_position_tables() {
        for t in &c.table_map {
            b.extend(t.to_le_bytes());
        }
    } else {
        for row in c.table_map.chunks_exact(usize::from(c.chunk_len)) {
            if row.iter().any(|&t| t != row[0]) {
                return Err(invalid(format!(
                    "{name}: a {:?} table-map row names more than one table",
                    c.method
                )));
            }
            b.extend(row[0].to_le_bytes());
        }
    }
    b.extend(c.chunks_per_segment.to_le_bytes());
    b.extend((c.segments.len() as u32).to_le_bytes());
    for s in &c.segments {
        b.extend((s.len() as u32).to_le_bytes());
    }
    for s in &c.segments {
        b.extend(s);
    }
    Ok(())
}

/// The container's view of the one byte cursor ([`nwc_tensor::Cursor`]): every read names
/// the field it was reading when the bytes run out.
pub(crate) struct Bytes<'a>(nwc_tensor::Cursor<'a>);

impl<'a> Bytes<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Self(nwc_tensor::Cursor::new(data, ".nwc"))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.0.remaining() as usize
    }

    fn short(&self, n: u64, what: &str) -> FormatError {
        FormatError::Corrupt(format!(
            "{what}: {n} bytes announced, {} left",
            self.remaining()
        ))
    }

    pub(crate) fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let e = self.short(n, what);
        self.0.take(n).map_err(|_| e)
    }

    fn arr<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let e = self.short(N as u64, what);
        self.0.array().map_err(|_| e)
    }
    pub(crate) fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.arr::<1>(what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.arr(what)?))
    }
    pub(crate) fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.arr(what)?))
    }
    pub(crate) fn i32(&mut self, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.arr(what)?))
    }
    pub(crate) fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.arr(what)?))
    }
    pub(crate) fn name(&mut self) -> Result<String> {
        let n = self.u16("name length")?;
        if n == 0 || usize::from(n) > MAX_NAME_LEN {
            return Err(FormatError::Corrupt(format!("name length {n}")));
        }
        String::from_utf8(self.take(u64::from(n), "name")?.to_vec())
            .map_err(|_| FormatError::Corrupt("name is not UTF-8".into()))
    }
}

fn corrupt(name: &str, m: impl std::fmt::Display) -> FormatError {
    FormatError::Corrupt(format!("tensor {name}: {m}"))
}

/// Parses a record body. `codec` is the header's codec kind; `max_elements` the caller's cap.
pub(crate) fn decode_body(body: &[u8], codec: CodecKind, max_elements: u64) -> Result<Record> {
    let mut r = Bytes::new(body);
    let name = r.name()?;
    let dcode = r.u8("dtype")?;
    let dtype = DType::from_code(dcode).ok_or_else(|| corrupt(&name, format!("dtype {dcode}")))?;
    let ndim = usize::from(r.u8("ndim")?);
    if ndim > MAX_NDIM {
        return Err(corrupt(&name, format!("{ndim} dimensions")));
    }
    let mut shape = Vec::with_capacity(ndim);
    for _ in 0..ndim {
        shape.push(r.u64("shape")?);
    }
    let n = shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| corrupt(&name, format!("shape {shape:?} too large")))?;
    if n > max_elements {
        return Err(FormatError::TooLarge {
            name,
            elements: n,
            limit: max_elements,
        });
    }
    let payload = match r.u8("encoding")? {
        0 => {
            let len = r.u64("data length")?;
            if len != n * dtype.size() as u64 {
                return Err(corrupt(&name, format!("{len} raw bytes for {n} elements")));
            }
            Payload::Raw(r.take(len, "raw data")?.to_vec())
        }
        1 => Payload::Coded(decode_coded(&mut r, &name, dtype, &shape, n, codec)?),
        e => return Err(corrupt(&name, format!("encoding {e}"))),
    };
    if r.remaining() != 0 {
        return Err(corrupt(
            &name,
            format!("{} trailing bytes in the record", r.remaining()),
        ));
    }
    Ok(Record {
        name,
        dtype,
        shape,
        payload,
    })
}

fn decode_coded(
    r: &mut Bytes<'_>,
    name: &str,
    dtype: DType,
    shape: &[u64],
    n: u64,
    codec: CodecKind,
) -> Result<CodedPayload> {
    let bad = |m: String| Err(corrupt(name, m));
    if !dtype.is_float() {
        return bad(format!("coded tensor of dtype {dtype}"));
    }
    let mcode = r.u8("method")?;
    let method = CodecKind::from_code(mcode).filter(|&m| m != CodecKind::None);
    let Some(method) = method else {
        return bad(format!("method {mcode}"));
    };
    if method != codec {
        return bad(format!("method {method:?} in a file of codec {codec:?}"));
    }
    let chunk_len = r.u8("chunk_len")?;
    let scale_axis = r.u8("scale_axis")?;
    let n_levels = r.u8("n_levels")?;
    if !(1..=MAX_CHUNK_LEN).contains(&chunk_len)
        || scale_axis > 3
        || !(1..=MAX_LEVELS).contains(&n_levels)
    {
        return bad(format!(
            "chunk_len {chunk_len}, scale_axis {scale_axis}, n_levels {n_levels}"
        ));
    }
    let rows = r.u64("rows")?;
    let cols = r.u64("cols")?;
    if shape.len() < 2 || rows != shape[0] || rows == 0 || rows.checked_mul(cols) != Some(n) {
        return bad(format!("{rows}×{cols} does not view shape {shape:?}"));
    }
    let n_scales = if scale_axis & 1 == 0 { cols } else { rows };
    let raw = r.take(n_scales.saturating_mul(2), "scales")?;
    let scales: Vec<u16> = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let packed = r.take(cols.div_ceil(4), "levels")?;
    let levels = unpack_levels(packed, cols as usize);
    if let Some(l) = levels.iter().find(|&&l| l >= n_levels) {
        return bad(format!("level {l} with {n_levels} levels"));
    }
    if cols % 4 != 0 && packed[packed.len() - 1] >> (2 * (cols % 4)) != 0 {
        return bad("unused level bits are not zero".into());
    }
    let params_len = r.u32("params length")?;
    if params_len > MAX_PARAMS_LEN {
        return bad(format!("params length {params_len}"));
    }
    let params = r.take(u64::from(params_len), "params")?.to_vec();
    let n_tables = r.u16("table count")?;
    if n_tables > MAX_TABLES {
        return bad(format!("{n_tables} tables"));
    }
    let mut tables = Vec::with_capacity(usize::from(n_tables));
    for _ in 0..n_tables {
        let min_symbol = r.i32("table min_symbol")?;
        let precision = r.u8("table precision")?;
        let n_freqs = r.u16("table size")?;
        if !(2..=4097).contains(&n_freqs) || !(8..=16).contains(&precision) {
            return bad(format!(
                "table of {n_freqs} frequencies at precision {precision}"
            ));
        }
        let raw = r.take(u64::from(n_freqs) * 2, "table frequencies")?;
        let freqs = raw
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        tables.push(TableRecord {
            min_symbol,
            precision,
            freqs,
        });
    }
    let map_rows = u64::from(n_levels) * method.contexts() as u64;
    let per_row = if method.per_position_tables() {
        u64::from(chunk_len)
    } else {
        1
    };
    let raw = r.take(map_rows * per_row * 2, "table map")?;
    let stored = raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    let table_map: Vec<u16> = if method.per_position_tables() {
        stored.collect()
    } else {
        stored
            .flat_map(|t| std::iter::repeat_n(t, usize::from(chunk_len)))
            .collect()
    };
    if n_tables > 0 && table_map.iter().any(|&t| t >= n_tables) {
        return bad("table map refers to a missing table".into());
    }
    let chunks_per_segment = r.u32("chunks per segment")?;
    if !(1..=MAX_CHUNKS_PER_SEGMENT).contains(&chunks_per_segment) {
        return bad(format!("{chunks_per_segment} chunks per segment"));
    }
    let n_segments = r.u32("segment count")?;
    let n_chunks = cols * rows.div_ceil(u64::from(chunk_len));
    if u64::from(n_segments) != n_chunks.div_ceil(u64::from(chunks_per_segment)) {
        return bad(format!("{n_segments} segments for {n_chunks} chunks"));
    }
    // Each segment costs 4 length bytes + at least 32 data bytes: check before allocating.
    if u64::from(n_segments) * 36 > r.remaining() as u64 {
        return bad(format!(
            "{n_segments} segments cannot fit in {} bytes",
            r.remaining()
        ));
    }
    let mut lens = Vec::with_capacity(n_segments as usize);
    for _ in 0..n_segments {
        let l = r.u32("segment length")?;
        if l < MIN_SEGMENT_LEN || l % 4 != 0 {
            return bad(format!("segment of {l} bytes"));
        }
        lens.push(l);
    }
    let mut segments = Vec::with_capacity(lens.len());
    for l in lens {
        segments.push(r.take(u64::from(l), "segment")?.to_vec());
    }
    Ok(CodedPayload {
        method,
        chunk_len,
        scale_axis,
        n_levels,
        rows,
        cols,
        scales,
        levels,
        params,
        tables,
        table_map,
        chunks_per_segment,
        segments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short metadata stays text, long metadata becomes a frame that decodes back to it;
    /// damaged frames and non-metadata names are errors.
    #[test]
    fn metadata_round_trips_and_compresses() {
        let short = metadata_record("nwc.x", b"{\"a\": 1}").unwrap();
        assert_eq!(short.payload, Payload::Raw(b"{\"a\": 1}".to_vec()));
        let long: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("\"tok{}\": {i},", i % 97).into_bytes())
            .collect();
        let rec = metadata_record("nwc.y", &long).unwrap();
        let Payload::Raw(bytes) = &rec.payload else {
            panic!("raw")
        };
        assert!(
            bytes.len() * 4 < long.len(),
            "{} of {}",
            bytes.len(),
            long.len()
        );
        assert_eq!(rec.shape, vec![bytes.len() as u64]);
        assert_eq!(metadata_content(bytes).unwrap(), long);
        assert_eq!(metadata_content(b"{}").unwrap(), b"{}");
        for cut in [4, 9, bytes.len() / 2, bytes.len() - 1] {
            assert!(metadata_content(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(metadata_record("model.weight", b"x").is_err());
    }
}
