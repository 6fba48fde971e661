//! Decoding records: [`Decompressor`] (one record into a tensor) and [`decode_records`] (a whole
//! container in parallel).

use nwc_entropy::{Coder, Table};
use nwc_format::{CodecKind, FileReader, Header, Payload, Record};

use crate::codec::WeightCodec;
use crate::coded::CodedTensor;
use crate::error::{NwcError, Result};
use crate::plan::chunk_levels;
use crate::reconstruct::{DECODE_SLAB_VALUES, Layout, Source, reconstruct};
use nwc_tensor::Tensor;

/// Every record of a parsed container, decoded in parallel on the rayon pool, in file order.
///
/// # Errors
/// [`NwcError::CodecMismatch`] when `codec` is not the file's; the first decoding error.
pub fn decode_records(reader: &FileReader<'_>, codec: &dyn WeightCodec) -> Result<Vec<Tensor>> {
    use rayon::prelude::*;
    let d = Decompressor::new(codec);
    d.check_header(reader.header())?;
    (0..reader.index().len())
        .into_par_iter()
        .map(|i| {
            let record = reader.record(i)?;
            // One symbol buffer per thread, reused from record to record and from file to file
            // (no fresh pages to fault in and zero for every tensor). A thread that picks up
            // another record while it waits inside this one's decoding takes a fresh buffer.
            SYMBOLS.with(|cell| match cell.try_borrow_mut() {
                Ok(mut symbols) => d.decompress_record_into(&record, &mut symbols),
                Err(_) => d.decompress_record_into(&record, &mut Vec::new()),
            })
        })
        .collect()
}

thread_local! {
    /// [`decode_records`]'s symbol buffer on this thread.
    static SYMBOLS: std::cell::RefCell<Vec<i32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decodes `.nwc` records with one codec.
pub struct Decompressor<'c> {
    codec: &'c dyn WeightCodec,
}

impl std::fmt::Debug for Decompressor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor")
            .field("codec", &self.codec.kind())
            .finish()
    }
}

impl<'c> Decompressor<'c> {
    /// A decompressor for files written with `codec`.
    pub fn new(codec: &'c dyn WeightCodec) -> Self {
        Self { codec }
    }

    /// Checks that a file's header names this codec (and checkpoint).
    ///
    /// # Errors
    /// [`NwcError::CodecMismatch`] otherwise.
    pub fn check_header(&self, h: &Header) -> Result<()> {
        if h.codec == CodecKind::None {
            return Ok(());
        }
        if h.codec != self.codec.kind() {
            return Err(NwcError::CodecMismatch(format!(
                "the file was coded with {:?}, the decoder is {:?}",
                h.codec,
                self.codec.kind()
            )));
        }
        if h.codec_hash != self.codec.checkpoint_hash() {
            return Err(NwcError::CodecMismatch(format!(
                "the file needs checkpoint {}, the decoder has {}",
                hex::encode(h.codec_hash),
                hex::encode(self.codec.checkpoint_hash())
            )));
        }
        Ok(())
    }

    /// Decodes one record into a tensor.
    ///
    /// # Errors
    /// [`NwcError::Entropy`] for a corrupt stream, [`NwcError::Corrupt`] for inconsistent
    /// parameters, [`NwcError::Tensor`] for invalid scales.
    pub fn decompress_record(&self, r: &Record) -> Result<Tensor> {
        self.decompress_record_into(r, &mut Vec::new())
    }

    /// [`Decompressor::decompress_record`] with `symbols` as the buffer for the decoded
    /// symbols (grown when too short; its contents on entry do not matter).
    ///
    /// # Errors
    /// As [`Decompressor::decompress_record`].
    pub fn decompress_record_into(&self, r: &Record, symbols: &mut Vec<i32>) -> Result<Tensor> {
        let shape: Vec<usize> = r.shape.iter().map(|&d| d as usize).collect();
        if let Payload::Raw(bytes) = &r.payload {
            return Ok(Tensor::from_bytes(&r.name, r.dtype, shape, bytes.clone())?);
        }
        let segments = match &r.payload {
            Payload::Raw(_) => unreachable!("returned above"),
            Payload::Coded(c) => &c.segments,
        };
        let c = CodedTensor::try_from(r)?;
        if c.method != self.codec.kind() {
            return Err(NwcError::CodecMismatch(format!(
                "{} was coded with {:?}, the decoder is {:?}",
                r.name,
                c.method,
                self.codec.kind()
            )));
        }
        if c.n_levels != self.codec.n_levels() {
            return Err(NwcError::Corrupt {
                name: r.name.clone(),
                reason: format!(
                    "{} levels, the codec has {}",
                    c.n_levels,
                    self.codec.n_levels()
                ),
            });
        }
        let stored: Vec<Table> = c
            .tables
            .iter()
            .map(|t| Table::from_freqs(t.min_symbol, u32::from(t.precision), t.freqs.clone()))
            .collect::<std::result::Result<_, _>>()?;
        let tables: &[Table] = if stored.is_empty() {
            self.codec.tables()
        } else {
            &stored
        };
        let l = c.chunk_len;
        let coder = Coder::new(tables, &c.table_map, l)?.with_contexts(self.codec.contexts())?;
        let chunk_levels = chunk_levels(&c.levels, c.rows.div_ceil(l));
        let parts: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
        let layout = Layout {
            rows: c.rows,
            cols: c.cols,
            chunk_len: l,
            axis: c.axis,
            scales: c.scales,
        };
        let source = Source::Coded {
            coder: &coder,
            segments: &parts,
            chunks_per_segment: c.chunks_per_segment,
            buf: symbols,
        };
        if !c.incoherent {
            return reconstruct(
                self.codec,
                &r.name,
                r.dtype,
                shape,
                layout,
                source,
                &chunk_levels,
                &c.params,
                DECODE_SLAB_VALUES,
            );
        }
        // Incoherence: the rotated matrix in f32, rotated back, then rounded to the dtype.
        let rotated = reconstruct(
            self.codec,
            &r.name,
            nwc_tensor::DType::F32,
            shape.clone(),
            layout,
            source,
            &chunk_levels,
            &c.params,
            DECODE_SLAB_VALUES,
        )?;
        let mut v = rotated.to_f32()?;
        nwc_tensor::rotate_matrix(&mut v, c.rows, c.cols, true);
        Ok(Tensor::from_f32(&r.name, r.dtype, shape, &v)?)
    }
}
