//! The file: header, framed records, index and footer; a streaming writer and two readers.

use std::collections::HashSet;
use std::io::{Read, Write};

use crate::error::{FormatError, Result};
use crate::record::{Bytes, CodecKind, Record, decode_body, encode_body};

/// The first 8 bytes of every `.nwc` file.
pub const MAGIC: [u8; 8] = *b"\x89NWC\r\n\x1a\n";
/// The last 8 bytes of every complete `.nwc` file.
pub const END_MAGIC: [u8; 8] = *b"NWCEND\r\n";
/// Major version this crate writes and reads.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version this crate writes.
pub const VERSION_MINOR: u16 = 0;
/// Size of the header in bytes.
pub const HEADER_LEN: usize = 56;
/// Size of the footer in bytes.
pub const FOOTER_LEN: usize = 32;
const RECORD_MAGIC: [u8; 4] = *b"TNSR";
const INDEX_MAGIC: [u8; 4] = *b"INDX";

/// The file header: which codec (and which checkpoint) the tensors need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Codec family of the coded tensors.
    pub codec: CodecKind,
    /// SHA-256 of the codec checkpoint (all zero when no checkpoint is needed).
    pub codec_hash: [u8; 32],
    /// Minor version of the file (informational).
    pub version_minor: u16,
}

impl Header {
    /// A version-1.0 header.
    pub fn new(codec: CodecKind, codec_hash: [u8; 32]) -> Self {
        Self {
            codec,
            codec_hash,
            version_minor: VERSION_MINOR,
        }
    }

    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
        b[10..12].copy_from_slice(&self.version_minor.to_le_bytes());
        b[12] = self.codec.code();
        b[16..48].copy_from_slice(&self.codec_hash);
        let crc = crc32fast::hash(&b[..52]);
        b[52..56].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn parse(b: &[u8], opts: &ReadOptions) -> Result<Self> {
        if b.len() < 8 || b[..8] != MAGIC {
            return Err(if b.len() < 8 && MAGIC.starts_with(b) {
                FormatError::Truncated("file shorter than its magic".into())
            } else {
                FormatError::BadMagic
            });
        }
        if b.len() < HEADER_LEN {
            return Err(FormatError::Truncated(
                "file shorter than its header".into(),
            ));
        }
        let major = u16::from_le_bytes([b[8], b[9]]);
        let minor = u16::from_le_bytes([b[10], b[11]]);
        if major != VERSION_MAJOR {
            return Err(FormatError::UnsupportedVersion { major, minor });
        }
        let crc = u32::from_le_bytes(b[52..56].try_into().expect("4 bytes"));
        if opts.verify_checksums && crc != crc32fast::hash(&b[..52]) {
            return Err(FormatError::ChecksumMismatch {
                what: "the header (bytes 0..56)".into(),
            });
        }
        let codec = CodecKind::from_code(b[12])
            .ok_or_else(|| FormatError::Corrupt(format!("codec kind {}", b[12])))?;
        if b[13..16] != [0, 0, 0] || b[48..52] != [0, 0, 0, 0] {
            return Err(FormatError::Corrupt(
                "reserved header bytes or flags are set".into(),
            ));
        }
        Ok(Self {
            codec,
            codec_hash: b[16..48].try_into().expect("32 bytes"),
            version_minor: minor,
        })
    }
}

/// What a reader checks and how much it is willing to allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadOptions {
    /// Verify every CRC (on by default; the fuzzer turns it off to reach deeper code).
    pub verify_checksums: bool,
    /// The most elements one tensor may claim (default 2³⁴).
    pub max_elements: u64,
}

impl Default for ReadOptions {
    fn default() -> Self {
        Self {
            verify_checksums: true,
            max_elements: 1 << 34,
        }
    }
}

/// One entry of the trailing index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// Tensor name.
    pub name: String,
    /// File offset of the record.
    pub offset: u64,
    /// Total bytes of the record (framing included).
    pub length: u64,
    /// Elements of the tensor.
    pub n_params: u64,
}

fn frame(record: &Record) -> Result<Vec<u8>> {
    let body = encode_body(record)?;
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend(RECORD_MAGIC);
    out.extend((body.len() as u64).to_le_bytes());
    out.extend(&body);
    out.extend(crc32fast::hash(&body).to_le_bytes());
    Ok(out)
}

/// Writes a `.nwc` file front to back, one record at a time; [`Writer::finish`] adds the index
/// and footer. A file whose writer was not finished has no footer and is rejected by readers.
#[derive(Debug)]
pub struct Writer<W: Write> {
    inner: W,
    header: Header,
    pos: u64,
    index: Vec<IndexEntry>,
    names: HashSet<String>,
}

impl<W: Write> Writer<W> {
    /// Starts a file by writing its header.
    ///
    /// # Errors
    /// [`FormatError::Io`] when writing fails.
    pub fn new(mut inner: W, header: Header) -> Result<Self> {
        inner.write_all(&header.to_bytes())?;
        Ok(Self {
            inner,
            header,
            pos: HEADER_LEN as u64,
            index: Vec::new(),
            names: HashSet::new(),
        })
    }

    /// Continues a file whose header and records up to `pos` are already in `inner` (an
    /// interrupted write, cut back to its last complete record): `index` lists those records.
    /// The result is byte-identical to a writer that wrote them itself.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] when the index does not tile the bytes from the header to `pos`
    /// or repeats a name.
    pub fn resume(inner: W, header: Header, pos: u64, index: Vec<IndexEntry>) -> Result<Self> {
        let mut at = HEADER_LEN as u64;
        let mut names = HashSet::new();
        for e in &index {
            if e.offset != at || !names.insert(e.name.clone()) {
                return Err(FormatError::Invalid(format!(
                    "resume index entry {} at offset {} (expected {at}), or a repeated name",
                    e.name, e.offset
                )));
            }
            at = at.saturating_add(e.length);
        }
        if at != pos {
            return Err(FormatError::Invalid(format!(
                "resume index ends at {at}, the file at {pos}"
            )));
        }
        Ok(Self {
            inner,
            header,
            pos,
            index,
            names,
        })
    }

    /// The writer it writes to (to flush or sync it between records).
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The records written so far.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Appends one record and returns its length in bytes.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] for a duplicate name, a coded record whose method differs from
    /// the header's codec, or a record the format cannot represent; [`FormatError::Io`].
    pub fn write(&mut self, record: &Record) -> Result<u64> {
        if self.names.contains(&record.name) {
            return Err(FormatError::Invalid(format!(
                "duplicate tensor name {}",
                record.name
            )));
        }
        if let crate::record::Payload::Coded(c) = &record.payload
            && c.method != self.header.codec
        {
            return Err(FormatError::Invalid(format!(
                "{}: coded with {:?} in a {:?} file",
                record.name, c.method, self.header.codec
            )));
        }
        let bytes = frame(record)?;
        self.inner.write_all(&bytes)?;
        self.index.push(IndexEntry {
            name: record.name.clone(),
            offset: self.pos,
            length: bytes.len() as u64,
            n_params: record.numel(),
        });
        self.names.insert(record.name.clone());
        self.pos += bytes.len() as u64;
        Ok(bytes.len() as u64)
    }

    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Writes the index and footer, flushes, and returns the inner writer and the file size.
    ///
    /// # Errors
    /// [`FormatError::Io`] when writing fails.
    pub fn finish(mut self) -> Result<(W, u64)> {
        let mut idx = Vec::new();
        idx.extend(INDEX_MAGIC);
        idx.extend((self.index.len() as u64).to_le_bytes());
        for e in &self.index {
            idx.extend((e.name.len() as u16).to_le_bytes());
            idx.extend(e.name.as_bytes());
            idx.extend(e.offset.to_le_bytes());
            idx.extend(e.length.to_le_bytes());
            idx.extend(e.n_params.to_le_bytes());
        }
        let mut footer = Vec::with_capacity(FOOTER_LEN);
        footer.extend(self.pos.to_le_bytes());
        footer.extend((idx.len() as u64).to_le_bytes());
        footer.extend(crc32fast::hash(&idx).to_le_bytes());
        footer.extend([0u8; 4]);
        footer.extend(END_MAGIC);
        self.inner.write_all(&idx)?;
        self.inner.write_all(&footer)?;
        self.inner.flush()?;
        let size = self.pos + idx.len() as u64 + FOOTER_LEN as u64;
        Ok((self.inner, size))
    }
}

/// Random-access reader over a whole file in memory (or memory-mapped).
#[derive(Debug)]
pub struct FileReader<'a> {
    data: &'a [u8],
    header: Header,
    index: Vec<IndexEntry>,
    opts: ReadOptions,
}

impl<'a> FileReader<'a> {
    /// Parses the header, footer and index (records are parsed on demand).
    ///
    /// # Errors
    /// [`FormatError::BadMagic`], [`FormatError::UnsupportedVersion`],
    /// [`FormatError::Truncated`] (no footer), [`FormatError::ChecksumMismatch`] or
    /// [`FormatError::Corrupt`].
    pub fn new(data: &'a [u8], opts: ReadOptions) -> Result<Self> {
        let header = Header::parse(data, &opts)?;
        if data.len() < HEADER_LEN + FOOTER_LEN || data[data.len() - 8..] != END_MAGIC {
            return Err(FormatError::Truncated(
                "no footer: the file is incomplete or was cut short".into(),
            ));
        }
        let f = &data[data.len() - FOOTER_LEN..];
        let index_offset = u64::from_le_bytes(f[0..8].try_into().expect("8"));
        let index_len = u64::from_le_bytes(f[8..16].try_into().expect("8"));
        let index_crc = u32::from_le_bytes(f[16..20].try_into().expect("4"));
        if f[20..24] != [0, 0, 0, 0] {
            return Err(FormatError::Corrupt("reserved footer bytes are set".into()));
        }
        let footer_start = (data.len() - FOOTER_LEN) as u64;
        if index_offset < HEADER_LEN as u64
            || index_offset.checked_add(index_len) != Some(footer_start)
        {
            return Err(FormatError::Corrupt(
                "footer points outside the file".into(),
            ));
        }
        let idx = &data[index_offset as usize..footer_start as usize];
        if opts.verify_checksums && crc32fast::hash(idx) != index_crc {
            return Err(FormatError::ChecksumMismatch {
                what: format!("the index at byte {index_offset}"),
            });
        }
        let index = parse_index(idx, index_offset)?;
        Ok(Self {
            data,
            header,
            index,
            opts,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Every record's name, offset, length and element count, in file order.
    pub fn index(&self) -> &[IndexEntry] {
        &self.index
    }

    /// Total elements of all parameter tensors (metadata records excluded).
    pub fn n_params(&self) -> u64 {
        self.index
            .iter()
            .filter(|e| !crate::record::is_metadata(&e.name))
            .map(|e| e.n_params)
            .sum()
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Parses record `i` of the index.
    ///
    /// # Errors
    /// As [`StreamReader::next_record`], plus [`FormatError::Corrupt`] when the record does not
    /// match its index entry.
    pub fn record(&self, i: usize) -> Result<Record> {
        let e = self
            .index
            .get(i)
            .ok_or_else(|| FormatError::Corrupt(format!("no record {i}")))?;
        let bytes = &self.data[e.offset as usize..(e.offset + e.length) as usize];
        // Parsed where it lies (no copy of the body): the stream reader's framing and checks.
        let rec = match bytes {
            [m0, m1, m2, m3, rest @ ..] if [*m0, *m1, *m2, *m3] == RECORD_MAGIC => {
                let (len, rest) = rest
                    .split_at_checked(8)
                    .ok_or_else(|| FormatError::Truncated("record length cut short".into()))?;
                let body_len = u64::from_le_bytes(len.try_into().expect("eight bytes"));
                match usize::try_from(body_len)
                    .ok()
                    .and_then(|n| rest.split_at_checked(n))
                    .and_then(|(body, crc)| Some((body, crc.first_chunk::<4>()?)))
                {
                    Some((body, crc)) => finish_record(body, *crc, self.header.codec, &self.opts),
                    None => Err(FormatError::Truncated(format!(
                        "record of {body_len} bytes cut short"
                    ))),
                }
                .map_err(|err| at_offset(err, e.offset))?
            }
            _ => {
                return Err(FormatError::Corrupt(format!(
                    "index entry {i} is not a record"
                )));
            }
        };
        if rec.name != e.name || rec.numel() != e.n_params {
            return Err(FormatError::Corrupt(format!(
                "record {} does not match its index entry {}",
                rec.name, e.name
            )));
        }
        Ok(rec)
    }

    /// Parses the record of a tensor by name.
    ///
    /// # Errors
    /// [`FormatError::Corrupt`] when there is no such tensor, or as [`FileReader::record`].
    pub fn record_by_name(&self, name: &str) -> Result<Record> {
        let i = self
            .index
            .iter()
            .position(|e| e.name == name)
            .ok_or_else(|| FormatError::Corrupt(format!("no tensor named {name:?}")))?;
        self.record(i)
    }
}

fn parse_index(idx: &[u8], index_offset: u64) -> Result<Vec<IndexEntry>> {
    let mut r = Bytes::new(idx);
    if r.take(4, "index magic")? != INDEX_MAGIC {
        return Err(FormatError::Corrupt("index magic".into()));
    }
    let n = r.u64("index count")?;
    // An entry takes at least 27 bytes.
    if n > r.remaining() as u64 / 27 {
        return Err(FormatError::Corrupt(format!("index claims {n} entries")));
    }
    let mut entries = Vec::with_capacity(n as usize);
    let mut expected = HEADER_LEN as u64;
    let mut names = HashSet::new();
    for _ in 0..n {
        let name = r.name()?;
        let offset = r.u64("index offset")?;
        let length = r.u64("index length")?;
        let n_params = r.u64("index params")?;
        // Records are contiguous, in order, and end where the index begins.
        if offset != expected
            || length < 16
            || offset.checked_add(length).is_none_or(|e| e > index_offset)
        {
            return Err(FormatError::Corrupt(format!(
                "index entry {name} is out of place"
            )));
        }
        if !names.insert(name.clone()) {
            return Err(FormatError::Corrupt(format!(
                "duplicate tensor name {name}"
            )));
        }
        expected = offset + length;
        entries.push(IndexEntry {
            name,
            offset,
            length,
            n_params,
        });
    }
    if expected != index_offset || r.remaining() != 0 {
        return Err(FormatError::Corrupt(
            "index does not cover the records exactly".into(),
        ));
    }
    Ok(entries)
}

/// Sequential reader over any `Read`: one record at a time, memory bounded by the largest record.
#[derive(Debug)]
pub struct StreamReader<R: Read> {
    inner: R,
    header: Header,
    opts: ReadOptions,
    done: bool,
    /// File offset of the next record (for error messages).
    offset: u64,
}

impl<R: Read> StreamReader<R> {
    /// Reads and checks the header.
    ///
    /// # Errors
    /// As [`FileReader::new`] for the header.
    pub fn new(mut inner: R, opts: ReadOptions) -> Result<Self> {
        let mut h = Vec::with_capacity(HEADER_LEN);
        (&mut inner).take(HEADER_LEN as u64).read_to_end(&mut h)?;
        let header = Header::parse(&h, &opts)?;
        Ok(Self {
            inner,
            header,
            opts,
            done: false,
            offset: HEADER_LEN as u64,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next record, or `None` at the index (the end of the records).
    ///
    /// # Errors
    /// [`FormatError::Truncated`] when the input ends inside a record,
    /// [`FormatError::ChecksumMismatch`], [`FormatError::Corrupt`], [`FormatError::TooLarge`],
    /// [`FormatError::Io`].
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let start = self.offset;
        self.read_record().map_err(|e| at_offset(e, start))
    }

    fn read_record(&mut self) -> Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let mut magic = [0u8; 4];
        if read_full(&mut self.inner, &mut magic)? < 4 {
            self.done = true;
            return Err(FormatError::Truncated("input ends before the index".into()));
        }
        if magic == INDEX_MAGIC {
            self.done = true;
            return Ok(None);
        }
        if magic != RECORD_MAGIC {
            self.done = true;
            return Err(FormatError::Corrupt(
                "expected a record or the index".into(),
            ));
        }
        let mut len = [0u8; 8];
        if read_full(&mut self.inner, &mut len)? < 8 {
            self.done = true;
            return Err(FormatError::Truncated("record length cut short".into()));
        }
        let body_len = u64::from_le_bytes(len);
        // Read through `take`: memory grows with the bytes actually present, so a hostile length
        // cannot force a huge allocation up front.
        let mut body = Vec::new();
        (&mut self.inner).take(body_len).read_to_end(&mut body)?;
        let mut crc = [0u8; 4];
        if (body.len() as u64) < body_len || read_full(&mut self.inner, &mut crc)? < 4 {
            self.done = true;
            return Err(FormatError::Truncated(format!(
                "record of {body_len} bytes cut short"
            )));
        }
        self.offset += 16 + body_len;
        match finish_record(&body, crc, self.header.codec, &self.opts) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }
}

/// A record's body, once framed: its checksum checked (when asked) and its fields parsed.
fn finish_record(
    body: &[u8],
    crc: [u8; 4],
    codec: CodecKind,
    opts: &ReadOptions,
) -> Result<Record> {
    if opts.verify_checksums && u32::from_le_bytes(crc) != crc32fast::hash(body) {
        let name = Bytes::new(body).name().unwrap_or_else(|_| "?".into());
        return Err(FormatError::ChecksumMismatch {
            what: format!("record {name}"),
        });
    }
    decode_body(body, codec, opts.max_elements)
}

impl<R: Read> Iterator for StreamReader<R> {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

/// `e` with the file offset of the record it concerns (a damaged file's error says where).
fn at_offset(e: FormatError, offset: u64) -> FormatError {
    match e {
        FormatError::ChecksumMismatch { what } => FormatError::ChecksumMismatch {
            what: format!("{what} at byte {offset}"),
        },
        FormatError::Truncated(m) => {
            FormatError::Truncated(format!("{m} (record at byte {offset})"))
        }
        FormatError::Corrupt(m) => FormatError::Corrupt(format!("{m} (record at byte {offset})")),
        e => e,
    }
}
