//! Streaming: [`Encoder`] writes a `.nwc` stream into any [`Write`] tensor by tensor, and
//! [`Decoder`] reads one from any [`Read`] as an iterator of decoded tensors — the shape of
//! `zstd::Encoder`/`flate2` and of safetensors' readers. Memory holds one record at a time on
//! either side (a window of them when [`Encoder::write_in_order`] runs tensors in parallel).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use nwc_format::{Header, Payload, ReadOptions, Record, StreamReader, Writer, is_metadata};
use nwc_tensor::{Tensor, WeightSource};

use crate::codec::WeightCodec;
use crate::decode::Decompressor;
use crate::encode::{Compressor, compress_in_order};
use crate::error::{NwcError, Result};
use crate::options::Importance;
use crate::registry::CodecRegistry;
use crate::report::{CompressReport, TensorReport};

/// Writes a `.nwc` stream: the header on creation, then metadata records and tensors in the
/// order given, then the index and footer on [`Encoder::finish`].
///
/// Nothing is buffered beyond the record being written, so a `Write` that is a file, a socket
/// or a `Vec<u8>` all work; the writer never seeks.
pub struct Encoder<'a, 'c, W: Write> {
    compressor: &'a Compressor<'c>,
    writer: Writer<W>,
    reports: Vec<TensorReport>,
    start: Instant,
}

impl<W: Write> std::fmt::Debug for Encoder<'_, '_, W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("compressor", self.compressor)
            .field("tensors", &self.reports.len())
            .finish()
    }
}

impl<'a, 'c, W: Write> Encoder<'a, 'c, W> {
    /// Starts a stream coded by `compressor` (its header goes out now).
    ///
    /// # Errors
    /// [`NwcError::Format`] when writing the header fails.
    pub fn new(compressor: &'a Compressor<'c>, out: W) -> Result<Self> {
        Ok(Self {
            compressor,
            writer: Writer::new(out, compressor.header())?,
            reports: Vec::new(),
            start: Instant::now(),
        })
    }

    /// Writes a metadata record (`name` starts with `nwc.`, `docs/format.md`): bytes that are
    /// part of the file but not of the model (a configuration, a tokenizer), stored as a zstd
    /// frame when longer than [`nwc_format::METADATA_COMPRESS_ABOVE`].
    ///
    /// # Errors
    /// [`NwcError::Config`] for a name outside the metadata namespace; write errors.
    pub fn metadata(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        if !is_metadata(name) {
            return Err(NwcError::Config(format!(
                "metadata record {name:?} must start with {:?}",
                nwc_format::METADATA_PREFIX
            )));
        }
        self.writer
            .write(&nwc_format::metadata_record(name, bytes)?)?;
        Ok(())
    }

    /// Codes `t` (with per-column `importance` when known) and writes its record.
    ///
    /// # Errors
    /// As [`Compressor::compress_tensor`]; write errors.
    pub fn write(&mut self, t: &Tensor, importance: Option<&[f32]>) -> Result<&TensorReport> {
        let (record, report) = self.compressor.compress_tensor(t, importance)?;
        self.write_record(&record, report)
    }

    /// Writes a record coded elsewhere (for example by [`Compressor::compress_tensor_ldlq`]),
    /// with its report, whose `bytes` this sets to the record's size.
    ///
    /// # Errors
    /// Write errors.
    pub fn write_record(
        &mut self,
        record: &Record,
        mut report: TensorReport,
    ) -> Result<&TensorReport> {
        report.bytes = self.writer.write(record)?;
        tracing::debug!(
            tensor = %report.name,
            coded = report.coded,
            bits_per_param = report.bits_per_param(),
            nmse = report.nmse(),
            "compressed"
        );
        self.reports.push(report);
        Ok(self.reports.last().expect("just pushed"))
    }

    /// Codes `n` tensors a window at a time on all cores ([`compress_in_order`]): `load(i)`
    /// fetches item `i`, `work` codes it; records are written in order, and the compressor's
    /// progress callback hears of each.
    ///
    /// # Errors
    /// The first error of `load`, `work` or writing, in order; nothing after it is written.
    pub fn write_in_order<T: Send>(
        &mut self,
        n: usize,
        load: impl FnMut(usize) -> Result<T>,
        work: impl Fn(T) -> Result<(Record, TensorReport)> + Sync,
    ) -> Result<()> {
        let compressor = self.compressor;
        compress_in_order(n, load, work, |i, record, report| {
            let report = self.write_record(&record, report)?;
            tracing::info!(
                tensor = %report.name,
                index = i + 1,
                of = n,
                bits_per_param = report.bits_per_param(),
                "compressed"
            );
            compressor.report_progress(report, i + 1, n);
            Ok(())
        })
    }

    /// Codes every tensor of `source`, a window at a time on all cores, with `importance`.
    ///
    /// # Errors
    /// As [`Encoder::write_in_order`].
    pub fn write_source(
        &mut self,
        source: &dyn WeightSource,
        importance: &dyn Importance,
    ) -> Result<()> {
        let names = source.names();
        let compressor = self.compressor;
        self.write_in_order(
            names.len(),
            |i| {
                let t = source.tensor(&names[i])?;
                let imp = t
                    .matrix_dims()
                    .and_then(|(_, cols)| importance.importance(&names[i], cols));
                Ok((t, imp))
            },
            |(t, imp)| compressor.compress_tensor(&t, imp.as_deref()),
        )
    }

    /// The reports of the tensors written so far.
    pub fn reports(&self) -> &[TensorReport] {
        &self.reports
    }

    /// Writes the index and footer and returns the report (the file's measured size included).
    ///
    /// # Errors
    /// Write errors.
    pub fn finish(self) -> Result<CompressReport> {
        Ok(self.finish_into_inner()?.0)
    }

    /// As [`Encoder::finish`], also giving back the writer.
    ///
    /// # Errors
    /// Write errors.
    pub fn finish_into_inner(self) -> Result<(CompressReport, W)> {
        let (out, file_bytes) = self.writer.finish()?;
        let report = CompressReport {
            tensors: self.reports,
            file_bytes,
            seconds: self.start.elapsed().as_secs_f64(),
        };
        Ok((report, out))
    }
}

/// Whole models, through an [`Encoder`].
impl Compressor<'_> {
    /// Compresses every tensor of `source` into a `.nwc` stream, one tensor in memory at a time.
    ///
    /// # Errors
    /// The first error of any tensor; nothing is written past it.
    pub fn compress_model<W: Write>(
        &self,
        source: &dyn WeightSource,
        out: W,
        importance: &dyn Importance,
    ) -> Result<CompressReport> {
        let mut encoder = Encoder::new(self, out)?;
        encoder.write_source(source, importance)?;
        encoder.finish()
    }

    /// Compresses a safetensors or GGUF file into a `.nwc` file.
    ///
    /// # Errors
    /// As [`Compressor::compress_model`], plus I/O errors on either path. On error the partial
    /// output is removed.
    pub fn compress_file(
        &self,
        input: impl AsRef<Path>,
        output: impl AsRef<Path>,
        importance: &dyn Importance,
    ) -> Result<CompressReport> {
        let source = nwc_tensor::open_weights(input)?;
        self.compress_source_to_file(&*source, output, importance)
    }

    /// Compresses `source` into a `.nwc` file, whole or not at all: it is written to
    /// `output.partial` and renamed over `output` only when complete
    /// ([`nwc_tensor::write_whole`]).
    ///
    /// # Errors
    /// As [`Compressor::compress_model`], plus I/O errors; `output` is then left untouched.
    pub fn compress_source_to_file(
        &self,
        source: &dyn WeightSource,
        output: impl AsRef<Path>,
        importance: &dyn Importance,
    ) -> Result<CompressReport> {
        nwc_tensor::write_whole(output.as_ref(), |tmp| {
            let file = std::fs::File::create(tmp).map_err(NwcError::io(tmp))?;
            self.compress_model(source, std::io::BufWriter::new(file), importance)
        })
    }
}

/// The codec a [`Decoder`] decodes with: its own (found from the header) or the caller's.
enum CodecRef<'c> {
    Owned(Box<dyn WeightCodec>),
    Borrowed(&'c dyn WeightCodec),
}

impl CodecRef<'_> {
    fn get(&self) -> &dyn WeightCodec {
        match self {
            CodecRef::Owned(c) => &**c,
            CodecRef::Borrowed(c) => *c,
        }
    }
}

/// Reads a `.nwc` stream from any [`Read`] as an iterator of decoded tensors, in file order,
/// one record in memory at a time. Metadata records are not yielded; [`Decoder::metadata`]
/// holds those read so far. The stream ends at the index (which a stream reader does not need).
pub struct Decoder<'c, R: Read> {
    reader: StreamReader<R>,
    codec: CodecRef<'c>,
    metadata: Vec<(String, Vec<u8>)>,
}

impl<R: Read> std::fmt::Debug for Decoder<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("codec", &self.codec.get().kind())
            .field("metadata", &self.metadata.len())
            .finish()
    }
}

impl<R: Read> Decoder<'static, R> {
    /// Reads the header and finds the codec it names in `registry` ([`crate::Builtin`], or
    /// `nwc_codec::Codecs` for learned-codec files; `checkpoint` for a learned codec's
    /// checkpoint file the build does not embed).
    ///
    /// # Errors
    /// [`NwcError::Format`] for a bad header; [`NwcError::CodecMismatch`] when the registry
    /// lacks the file's codec.
    pub fn new(input: R, registry: &dyn CodecRegistry, checkpoint: Option<&Path>) -> Result<Self> {
        let reader = StreamReader::new(input, ReadOptions::default())?;
        let codec = registry.decoder(reader.header(), checkpoint)?;
        Ok(Self {
            reader,
            codec: CodecRef::Owned(codec),
            metadata: Vec::new(),
        })
    }
}

impl<'c, R: Read> Decoder<'c, R> {
    /// Reads the header and decodes with `codec`.
    ///
    /// # Errors
    /// [`NwcError::Format`] for a bad header; [`NwcError::CodecMismatch`] when the file was
    /// not coded with `codec`.
    pub fn with_codec(input: R, codec: &'c dyn WeightCodec) -> Result<Self> {
        let reader = StreamReader::new(input, ReadOptions::default())?;
        Decompressor::new(codec).check_header(reader.header())?;
        Ok(Self {
            reader,
            codec: CodecRef::Borrowed(codec),
            metadata: Vec::new(),
        })
    }

    /// The stream's header.
    pub fn header(&self) -> &Header {
        self.reader.header()
    }

    /// The metadata records read so far (all of them once the iterator has ended), as
    /// (name, content) — frames decompressed.
    pub fn metadata(&self) -> &[(String, Vec<u8>)] {
        &self.metadata
    }
}

impl<R: Read> Iterator for Decoder<'_, R> {
    type Item = Result<Tensor>;

    fn next(&mut self) -> Option<Result<Tensor>> {
        loop {
            let record = match self.reader.next_record() {
                Ok(Some(r)) => r,
                Ok(None) => return None,
                Err(e) => return Some(Err(e.into())),
            };
            match record.payload {
                Payload::Raw(bytes) if is_metadata(&record.name) => {
                    match nwc_format::metadata_content(&bytes) {
                        Ok(text) => self.metadata.push((record.name, text)),
                        Err(e) => return Some(Err(e.into())),
                    }
                }
                _ => return Some(Decompressor::new(self.codec.get()).decompress_record(&record)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::EcsqCodec;
    use crate::registry::Builtin;

    fn tensors() -> Vec<Tensor> {
        let w: Vec<f32> = (0..96 * 80)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 97.0)
            .collect();
        vec![
            Tensor::from_f32("a.weight", nwc_tensor::DType::F32, vec![96, 80], &w).unwrap(),
            Tensor::from_f32("a.bias", nwc_tensor::DType::F32, vec![3], &[1.0, 2.0, 3.0]).unwrap(),
        ]
    }

    /// A stream written by the encoder is the file `compress_model` writes, and the decoder
    /// gives back what `NwcFile` decodes; metadata comes out beside the tensors.
    #[test]
    fn streams_match_files() {
        let codec = EcsqCodec::for_bits(4.0).unwrap();
        let c = Compressor::new(&codec);
        let mut bytes = Vec::new();
        let mut enc = Encoder::new(&c, &mut bytes).unwrap();
        enc.metadata("nwc.test.note", b"hello").unwrap();
        assert!(enc.metadata("not.metadata", b"x").is_err());
        for t in tensors() {
            enc.write(&t, None).unwrap();
        }
        let report = enc.finish().unwrap();
        assert_eq!(report.file_bytes, bytes.len() as u64);
        assert_eq!(report.tensors.len(), 2);

        let file = crate::file::NwcFile::from_bytes(bytes.clone()).unwrap();
        let whole = file.decode_all(&codec).unwrap();
        let mut dec = Decoder::new(&bytes[..], &Builtin, None).unwrap();
        let streamed: Vec<Tensor> = dec.by_ref().collect::<Result<_>>().unwrap();
        assert_eq!(
            dec.metadata(),
            &[("nwc.test.note".to_string(), b"hello".to_vec())]
        );
        let params: Vec<&Tensor> = whole.iter().filter(|t| !is_metadata(t.name())).collect();
        assert_eq!(streamed.iter().collect::<Vec<_>>(), params);

        // A truncated stream is an error, never a panic or a silent end.
        let cut = &bytes[..bytes.len() / 2];
        let out: Vec<Result<Tensor>> = Decoder::new(cut, &Builtin, None).unwrap().collect();
        assert!(out.iter().any(Result::is_err));
    }
}
