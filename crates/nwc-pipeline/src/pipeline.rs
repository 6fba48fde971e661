//! The compression pipeline: tensors and whole models into `.nwc` files and back.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use half::f16;
use ndarray::ArrayView2;
use nwc_entropy::{Coder, Table};
use nwc_format::{
    CodecKind, CodedPayload, FileReader, Header, Payload, ReadOptions, Record, TableRecord, Writer,
};
use nwc_tensor::{
    ChunkConfig, DType, LevelBands, ScaleAxis, ScaleSums, Tensor, WeightSource, chunk_with_scales,
};

use crate::codec::{CodecParams, Quantized, WeightCodec};
use crate::error::{NwcError, Result};

/// Which tensors are entropy-coded; every other tensor is stored losslessly.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorPolicy {
    /// Tensors with fewer elements are stored losslessly (norms, biases, small heads).
    pub min_elements: usize,
    /// Code embedding tables (names containing `embed` or `wte`/`wpe`) too.
    pub code_embeddings: bool,
    /// Names containing any of these substrings are always stored losslessly.
    pub keep_lossless: Vec<String>,
}

impl Default for TensorPolicy {
    fn default() -> Self {
        Self {
            min_elements: 4096,
            code_embeddings: true,
            keep_lossless: Vec::new(),
        }
    }
}

impl TensorPolicy {
    /// Whether `t` is entropy-coded under this policy: a float tensor with at least two
    /// dimensions and enough elements that is not excluded by name.
    pub fn codes(&self, t: &Tensor) -> bool {
        let name = t.name();
        let is_embedding = ["embed", "wte", "wpe"].iter().any(|p| name.contains(p));
        t.dtype().is_float()
            && t.matrix_dims().is_some()
            && t.numel() >= self.min_elements
            && (self.code_embeddings || !is_embedding)
            && !self.keep_lossless.iter().any(|p| name.contains(p.as_str()))
    }
}

/// Options of a [`Compressor`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompressOptions {
    /// Chunking and normalization.
    pub chunk: ChunkConfig,
    /// Chunks per independently decodable segment (1..=4096).
    pub chunks_per_segment: usize,
    /// Which tensors are coded.
    pub policy: TensorPolicy,
    /// Importance bands that map per-column importance to quality levels.
    pub bands: LevelBands,
    /// Whether [`Compressor::compress_tensor`] decodes what it coded to report the error (the
    /// report's `sq_error` is NaN without). Rate searches turn it off.
    pub report_error: bool,
    /// Matrices with more values than this are coded in row slabs of a quarter of it, so that
    /// coding one holds the tensor, its symbols and one slab's work instead of several copies
    /// of the matrix (the embedding and output projection of a large vocabulary). Scales and
    /// levels always come from the whole matrix; codecs that fit statistics to what they are
    /// given (TCQ's rate model) fit them per slab.
    pub slab_values: usize,
}

impl Default for CompressOptions {
    fn default() -> Self {
        Self {
            chunk: ChunkConfig::default(),
            chunks_per_segment: 4096,
            policy: TensorPolicy::default(),
            bands: LevelBands::default(),
            report_error: true,
            slab_values: 1 << 25,
        }
    }
}

impl CompressOptions {
    /// The defaults, with the chunk length `codec` asks for.
    pub fn for_codec(codec: &dyn WeightCodec) -> Self {
        let mut o = Self::default();
        if let Some(l) = codec.preferred_chunk_len() {
            o.chunk.chunk_len = l;
        }
        o
    }
}

/// What happened to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorReport {
    /// Tensor name.
    pub name: String,
    /// Elements.
    pub n_params: u64,
    /// Bytes of its record in the file (framing included).
    pub bytes: u64,
    /// Whether it was entropy-coded (otherwise stored losslessly).
    pub coded: bool,
    /// Σ (w − ŵ)² over the tensor, as the decoder will reconstruct it (0 for lossless).
    pub sq_error: f64,
    /// Σ w² over the tensor.
    pub sq_signal: f64,
}

impl TensorReport {
    /// Measured bits per parameter of this tensor's record.
    pub fn bits_per_param(&self) -> f64 {
        8.0 * self.bytes as f64 / self.n_params.max(1) as f64
    }

    /// Normalized MSE `Σ(w − ŵ)² / Σ w²` (0 for lossless or all-zero tensors).
    pub fn nmse(&self) -> f64 {
        if self.sq_signal > 0.0 {
            self.sq_error / self.sq_signal
        } else {
            0.0
        }
    }
}

/// The outcome of compressing a model.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressReport {
    /// One entry per tensor, in file order.
    pub tensors: Vec<TensorReport>,
    /// Size of the whole file in bytes (header, index and footer included).
    pub file_bytes: u64,
    /// Wall-clock seconds spent.
    pub seconds: f64,
}

impl CompressReport {
    /// Total parameters.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_params).sum()
    }

    /// Measured rate of the whole file: `8 · file bytes / parameters`.
    pub fn bits_per_param(&self) -> f64 {
        8.0 * self.file_bytes as f64 / self.n_params().max(1) as f64
    }

    /// Measured rate over the coded tensors only (their records' bytes).
    pub fn coded_bits_per_param(&self) -> f64 {
        let (b, n) = self
            .tensors
            .iter()
            .filter(|t| t.coded)
            .fold((0u64, 0u64), |(b, n), t| (b + t.bytes, n + t.n_params));
        8.0 * b as f64 / n.max(1) as f64
    }

    /// Normalized MSE over all coded tensors together.
    pub fn coded_nmse(&self) -> f64 {
        let (e, s) = self
            .tensors
            .iter()
            .filter(|t| t.coded)
            .fold((0.0, 0.0), |(e, s), t| (e + t.sq_error, s + t.sq_signal));
        if s > 0.0 { e / s } else { 0.0 }
    }
}

/// Per-tensor importance (per input column), for example the diagonal of the layer's Hessian.
/// `None` means "no information": every column gets level 0 (data-free mode).
pub trait Importance {
    /// Importance of each column of tensor `name` (`cols` values), if known.
    fn importance(&self, name: &str, cols: usize) -> Option<Vec<f32>>;
}

/// Data-free mode: no importance, every column at level 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Uniform;

impl Importance for Uniform {
    fn importance(&self, _name: &str, _cols: usize) -> Option<Vec<f32>> {
        None
    }
}

/// Called after each tensor of a model: (report, tensors done, tensors in all).
pub type ProgressFn<'c> = Box<dyn Fn(&TensorReport, usize, usize) + Send + Sync + 'c>;

/// Compresses tensors and models with one codec.
pub struct Compressor<'c> {
    codec: &'c dyn WeightCodec,
    options: CompressOptions,
    pub(crate) progress: Option<ProgressFn<'c>>,
}

impl std::fmt::Debug for Compressor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("codec", &self.codec.kind())
            .field("options", &self.options)
            .finish()
    }
}

/// `path` with `suffix` appended to its file name (`model.nwc` → `model.nwc.partial`).
pub fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Maps an I/O error on `path` to [`NwcError::Io`] naming it.
pub fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NwcError + '_ {
    move |source| NwcError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl<'c> Compressor<'c> {
    /// A compressor with default options.
    pub fn new(codec: &'c dyn WeightCodec) -> Self {
        Self {
            codec,
            options: CompressOptions::for_codec(codec),
            progress: None,
        }
    }

    /// Tells the progress callback ([`Compressor::with_progress`]) that `done` of `total`
    /// tensors are finished, the last with `report` (for model loops outside this crate).
    pub fn report_progress(&self, report: &TensorReport, done: usize, total: usize) {
        if let Some(p) = &self.progress {
            p(report, done, total);
        }
    }

    /// Calls `f` after every tensor of [`Compressor::compress_model`] (for progress bars).
    pub fn with_progress(
        mut self,
        f: impl Fn(&TensorReport, usize, usize) + Send + Sync + 'c,
    ) -> Self {
        self.progress = Some(Box::new(f));
        self
    }

    /// Replaces the options.
    ///
    /// # Errors
    /// [`NwcError::Config`] for a segment size outside 1..=4096 or more importance bands than
    /// the codec has levels.
    pub fn with_options(mut self, options: CompressOptions) -> Result<Self> {
        if !(1..=nwc_entropy::MAX_CHUNKS_PER_SEGMENT).contains(&options.chunks_per_segment) {
            return Err(NwcError::Config(format!(
                "chunks per segment {} outside 1..=4096",
                options.chunks_per_segment
            )));
        }
        if options.bands.n_levels() > self.codec.n_levels() {
            return Err(NwcError::Config(format!(
                "{} importance levels but the codec has {}",
                options.bands.n_levels(),
                self.codec.n_levels()
            )));
        }
        self.options = options;
        Ok(self)
    }

    /// The codec it compresses with.
    pub fn codec(&self) -> &'c dyn WeightCodec {
        self.codec
    }

    /// The options in force.
    pub fn options(&self) -> &CompressOptions {
        &self.options
    }

    /// The file header this compressor writes.
    pub fn header(&self) -> Header {
        Header::new(self.codec.kind(), self.codec.checkpoint_hash())
    }

    /// Compresses one tensor into a record (coded or lossless per the policy), and reports the
    /// error the decoder will see.
    ///
    /// # Errors
    /// NaN/Inf weights ([`nwc_tensor::TensorError::NonFinite`]), bad importance scores, or
    /// values the codec cannot represent.
    pub fn compress_tensor(
        &self,
        t: &Tensor,
        importance: Option<&[f32]>,
    ) -> Result<(Record, TensorReport)> {
        if !self.options.policy.codes(t) {
            let record = Record {
                name: t.name().to_string(),
                dtype: t.dtype(),
                shape: t.shape().iter().map(|&d| d as u64).collect(),
                payload: Payload::Raw(t.bytes().to_vec()),
            };
            let report = TensorReport {
                name: t.name().to_string(),
                n_params: t.numel() as u64,
                bytes: 0,
                coded: false,
                sq_error: 0.0,
                sq_signal: 0.0,
            };
            return Ok((record, report));
        }
        let plan = self.plan(t, importance)?;
        let (name, l, cols) = (t.name(), plan.chunk_len, plan.cols);
        let mut coded = SlabSymbols::new(&plan);
        let mut sq_error = 0.0f64;
        let mut sq_signal = 0.0f64;
        let mut single = None;
        for rows in plan.slabs() {
            let values = t.rows_f32(rows.clone())?;
            sq_signal += sum_sq(&values);
            let w = ArrayView2::from_shape((rows.len(), cols), &values).expect("dims match");
            let ch = chunk_with_scales(w, &self.options.chunk, plan.slab_scales(&rows))
                .map_err(|e| with_name(e, name))?;
            let lv = chunk_levels(&plan.levels, ch.blocks());
            let q = self.codec.quantize(name, ch.data(), l, &lv)?;
            coded.place(&rows, &q.symbols, &q.params, name)?;
            if self.options.report_error {
                // What the decoder will reconstruct, for the report.
                let layout = Layout {
                    rows: rows.len(),
                    cols,
                    chunk_len: l,
                    axis: plan.axis,
                    scales: plan.slab_scales(&rows),
                };
                let out = reconstruct(
                    self.codec,
                    name,
                    t.dtype(),
                    vec![rows.len(), cols],
                    layout,
                    &q.symbols,
                    &lv,
                    &q.params,
                    usize::MAX,
                )?
                .to_f32()?;
                sq_error += sum_sq_diff(&values, &out);
            } else {
                sq_error = f64::NAN;
            }
            if rows.len() == plan.rows {
                single = Some((q.tables, q.table_map));
            }
        }
        // One slab: the codec's own tables; several: tables fitted to all the symbols.
        self.coded(t, &plan, coded, single, sq_error, sq_signal)
    }

    /// The scales (from the whole matrix) and quality levels of a matrix the policy codes.
    fn plan(&self, t: &Tensor, importance: Option<&[f32]>) -> Result<Plan> {
        let (rows, cols) = t.matrix_dims().expect("policy only codes matrices");
        let cfg = &self.options.chunk;
        let levels = match importance {
            Some(imp) if imp.len() != cols => {
                return Err(NwcError::Config(format!(
                    "{}: {} importance scores for {cols} columns",
                    t.name(),
                    imp.len()
                )));
            }
            Some(imp) => self.options.bands.assign(imp)?,
            None => vec![0u8; cols],
        };
        let mut sums = ScaleSums::new(rows, cols, cfg).map_err(|e| with_name(e, t.name()))?;
        let mut plan = Plan {
            rows,
            cols,
            chunk_len: cfg.chunk_len,
            axis: cfg.axis,
            scales: Vec::new(),
            levels,
            slab_values: self.options.slab_values,
        };
        for r in plan.slabs() {
            let values = t.rows_f32(r.clone())?;
            let w = ArrayView2::from_shape((r.len(), cols), &values).expect("dims match");
            sums.add(r.start, w).map_err(|e| with_name(e, t.name()))?;
        }
        plan.scales = sums.finish();
        Ok(plan)
    }

    /// Entropy-codes a matrix's symbols into a record, with `tables` (table list and map) when
    /// given, else tables the codec fits to all the symbols, and reports the squared error the
    /// decoder will see (`sq_error`, NaN when not measured) against the original's energy.
    fn coded(
        &self,
        t: &Tensor,
        plan: &Plan,
        symbols: SlabSymbols,
        tables: Option<(Vec<Table>, Vec<u16>)>,
        sq_error: f64,
        sq_signal: f64,
    ) -> Result<(Record, TensorReport)> {
        let l = plan.chunk_len;
        let (symbols, params) = symbols.finish();
        let (tables, table_map) = match tables {
            Some(t) => t,
            None => self.codec.fit_tables(&symbols, l, &plan.chunk_levels())?,
        };
        let q = Quantized {
            symbols,
            params,
            tables,
            table_map,
        };
        let tables: &[Table] = if q.tables.is_empty() {
            self.codec.tables()
        } else {
            &q.tables
        };
        let coder = Coder::new(tables, &q.table_map, l)?.with_contexts(self.codec.contexts())?;
        let segments = coder.encode_all(
            &q.symbols,
            &plan.chunk_levels(),
            self.options.chunks_per_segment,
        )?;
        let report = TensorReport {
            name: t.name().to_string(),
            n_params: t.numel() as u64,
            bytes: 0,
            coded: true,
            sq_error,
            sq_signal,
        };
        let payload = Payload::Coded(CodedPayload {
            method: self.codec.kind(),
            chunk_len: l as u8,
            scale_axis: plan.axis.code(),
            n_levels: self.codec.n_levels() as u8,
            rows: plan.rows as u64,
            cols: plan.cols as u64,
            scales: plan.scales.iter().map(|s| s.to_bits()).collect(),
            levels: plan.levels.clone(),
            params: q.params.to_bytes(),
            tables: q
                .tables
                .iter()
                .map(|t| TableRecord {
                    min_symbol: t.min_symbol(),
                    precision: t.precision() as u8,
                    freqs: t.freqs().to_vec(),
                })
                .collect(),
            table_map: q.table_map,
            chunks_per_segment: self.options.chunks_per_segment as u32,
            segments,
        });
        let record = Record {
            name: t.name().to_string(),
            dtype: t.dtype(),
            shape: t.shape().iter().map(|&d| d as u64).collect(),
            payload,
        };
        Ok((record, report))
    }

    /// Compresses a matrix with LDLQ error feedback: columns are coded block by block (last block
    /// first, blocks of `ldl.block()` columns), and each block's target is its weights plus the
    /// coding error of the blocks already coded, propagated through the block LDL factor of the
    /// layer's Hessian. The codec itself is in the loop, so the errors fed back are the ones the
    /// decoder will reproduce.
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
        let Some((_, cols)) = t.matrix_dims().filter(|_| self.options.policy.codes(t)) else {
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
            let mut failure: Option<NwcError> = None;
            let out = nwc_ldl::ldlq(&values, n, cols, ldl, |s, target| {
                let bw = target.len() / n;
                let mut data = vec![0.0f32; bw * per_col];
                for r in 0..n {
                    for c in 0..bw {
                        data[c * per_col + r] = target[r * bw + c] / scale(r, s + c);
                    }
                }
                let lv = &slab_levels[s * blocks..(s + bw) * blocks];
                let mut step = || -> Result<Vec<f32>> {
                    let q = self.codec.quantize(name, &data, l, lv)?;
                    let recon = self.codec.dequantize(name, &q.symbols, l, lv, &q.params)?;
                    coded.place_columns(&rows, s, bw, &q.symbols, &q.params, name)?;
                    let mut o = vec![0.0f32; n * bw];
                    for r in 0..n {
                        for c in 0..bw {
                            o[r * bw + c] = recon[c * per_col + r] * scale(r, s + c);
                        }
                    }
                    Ok(o)
                };
                step().map_err(|e| {
                    let msg = e.to_string();
                    failure.get_or_insert(e);
                    msg
                })
            });
            let out = match (out, failure) {
                (_, Some(e)) => return Err(e),
                (r, None) => r?,
            };
            sq_error += sum_sq_diff(&values, &out);
        }
        self.coded(t, &plan, coded, None, sq_error, sq_signal)
    }

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
        let start = Instant::now();
        let mut writer = Writer::new(out, self.header())?;
        let names = source.names();
        let mut tensors = Vec::with_capacity(names.len());
        compress_in_order(
            names.len(),
            |i| {
                let t = source.tensor(&names[i])?;
                let imp = t
                    .matrix_dims()
                    .and_then(|(_, cols)| importance.importance(&names[i], cols));
                Ok((t, imp))
            },
            |(t, imp)| self.compress_tensor(&t, imp.as_deref()),
            |i, record, mut report| {
                report.bytes = writer.write(&record)?;
                tracing::info!(
                    tensor = %names[i],
                    index = i + 1,
                    of = names.len(),
                    coded = report.coded,
                    bits_per_param = report.bits_per_param(),
                    nmse = report.nmse(),
                    "compressed"
                );
                if let Some(p) = &self.progress {
                    p(&report, i + 1, names.len());
                }
                tensors.push(report);
                Ok(())
            },
        )?;
        let (_, file_bytes) = writer.finish()?;
        Ok(CompressReport {
            tensors,
            file_bytes,
            seconds: start.elapsed().as_secs_f64(),
        })
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
            let file = std::fs::File::create(tmp).map_err(io_err(tmp))?;
            self.compress_model(source, std::io::BufWriter::new(file), importance)
        })
    }
}

/// Compresses `n` tensors a window at a time on the rayon pool and hands each result to `sink`
/// in order. Several tensors at once keep every core busy where one tensor's work is sequential
/// (LDLQ's column blocks, small matrices); the window bounds memory to a few tensors. The
/// output does not depend on the thread count: every tensor's coding is deterministic. The
/// first error in order is returned and nothing after it reaches `sink`.
///
/// # Errors
/// The first error of `load`, `work` or `sink`, in order.
pub fn compress_in_order<T: Send>(
    n: usize,
    load: impl FnMut(usize) -> Result<T>,
    work: impl Fn(T) -> Result<(Record, TensorReport)> + Sync,
    sink: impl FnMut(usize, Record, TensorReport) -> Result<()>,
) -> Result<()> {
    compress_in_windows(n, 2 * rayon::current_num_threads(), load, work, sink)
}

/// [`compress_in_order`] with `window` tensors at a time (1 for tensors so large that one at a
/// time is all memory allows; each is still coded in parallel inside).
///
/// # Errors
/// As [`compress_in_order`].
pub fn compress_in_windows<T: Send>(
    n: usize,
    window: usize,
    mut load: impl FnMut(usize) -> Result<T>,
    work: impl Fn(T) -> Result<(Record, TensorReport)> + Sync,
    mut sink: impl FnMut(usize, Record, TensorReport) -> Result<()>,
) -> Result<()> {
    use rayon::prelude::*;
    let window = window.max(1);
    let mut start = 0;
    while start < n {
        let end = (start + window).min(n);
        let items = (start..end).map(&mut load).collect::<Result<Vec<T>>>()?;
        let done: Vec<Result<(Record, TensorReport)>> = items.into_par_iter().map(&work).collect();
        for (k, r) in done.into_iter().enumerate() {
            let (record, report) = r?;
            sink(start + k, record, report)?;
        }
        start = end;
    }
    Ok(())
}

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
        .map(|i| d.decompress_record(&reader.record(i)?))
        .collect()
}

fn with_name(e: nwc_tensor::TensorError, name: &str) -> NwcError {
    match e {
        nwc_tensor::TensorError::NonFinite { value, row, col } => NwcError::Unrepresentable {
            name: name.to_string(),
            reason: format!("non-finite value {value} at row {row}, column {col}"),
        },
        other => other.into(),
    }
}

fn chunk_levels(levels: &[u8], blocks: usize) -> Vec<u8> {
    levels
        .iter()
        .flat_map(|&l| std::iter::repeat_n(l, blocks))
        .collect()
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
                hex(&h.codec_hash),
                hex(&self.codec.checkpoint_hash())
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
        let shape: Vec<usize> = r.shape.iter().map(|&d| d as usize).collect();
        let c = match &r.payload {
            Payload::Raw(bytes) => {
                return Ok(Tensor::from_bytes(&r.name, r.dtype, shape, bytes.clone())?);
            }
            Payload::Coded(c) => c,
        };
        let corrupt = |reason: String| NwcError::Corrupt {
            name: r.name.clone(),
            reason,
        };
        if c.method != self.codec.kind() {
            return Err(NwcError::CodecMismatch(format!(
                "{} was coded with {:?}, the decoder is {:?}",
                r.name,
                c.method,
                self.codec.kind()
            )));
        }
        if usize::from(c.n_levels) != self.codec.n_levels() {
            return Err(corrupt(format!(
                "{} levels, the codec has {}",
                c.n_levels,
                self.codec.n_levels()
            )));
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
        let l = usize::from(c.chunk_len);
        let coder = Coder::new(tables, &c.table_map, l)?.with_contexts(self.codec.contexts())?;
        let (rows, cols) = (c.rows as usize, c.cols as usize);
        let blocks = rows.div_ceil(l);
        let chunk_levels = chunk_levels(&c.levels, blocks);
        let mut symbols = vec![0i32; chunk_levels.len() * l];
        let parts: Vec<&[u8]> = c.segments.iter().map(Vec::as_slice).collect();
        coder.decode_all(
            &parts,
            &chunk_levels,
            c.chunks_per_segment as usize,
            &mut symbols,
        )?;
        let axis = ScaleAxis::from_code(c.scale_axis)
            .ok_or_else(|| corrupt(format!("scale axis {}", c.scale_axis)))?;
        let scales: Vec<f16> = c.scales.iter().map(|&b| f16::from_bits(b)).collect();
        let layout = Layout {
            rows,
            cols,
            chunk_len: l,
            axis,
            scales,
        };
        reconstruct(
            self.codec,
            &r.name,
            r.dtype,
            shape,
            layout,
            &symbols,
            &chunk_levels,
            &CodecParams::parse(self.codec.kind(), &r.name, &c.params)?,
            DECODE_SLAB_VALUES,
        )
    }
}

/// How a matrix the policy codes is coded: its shape, scales (from the whole matrix) and
/// per-column quality levels.
struct Plan {
    rows: usize,
    cols: usize,
    chunk_len: usize,
    axis: ScaleAxis,
    scales: Vec<f16>,
    levels: Vec<u8>,
    /// [`CompressOptions::slab_values`].
    slab_values: usize,
}

impl Plan {
    /// The row ranges the matrix is coded in: all of it, or slabs whose lengths are multiples
    /// of the chunk length (so a chunk never straddles two).
    fn slabs(&self) -> Vec<std::ops::Range<usize>> {
        row_slabs(
            self.rows,
            self.cols,
            self.chunk_len,
            self.slab_values,
            self.slab_values / 4,
        )
    }

    /// The scales that apply to rows `rows`.
    fn slab_scales(&self, rows: &std::ops::Range<usize>) -> Vec<f16> {
        match self.axis {
            ScaleAxis::Column => self.scales.clone(),
            ScaleAxis::Row => self.scales[rows.clone()].to_vec(),
        }
    }

    /// Chunks per column.
    fn blocks(&self) -> usize {
        self.rows.div_ceil(self.chunk_len)
    }

    /// The level of every chunk of the whole matrix.
    fn chunk_levels(&self) -> Vec<u8> {
        chunk_levels(&self.levels, self.blocks())
    }
}

/// The whole matrix's symbols, filled slab by slab (chunk `c · blocks + b` of the whole holds
/// column `c`'s rows `b · chunk_len ..`), and the codec parameters every slab must agree on.
struct SlabSymbols {
    per_col: usize,
    symbols: Vec<i32>,
    params: Option<CodecParams>,
}

impl SlabSymbols {
    fn new(plan: &Plan) -> Self {
        let per_col = plan.blocks() * plan.chunk_len;
        Self {
            per_col,
            symbols: vec![0; plan.cols * per_col],
            params: None,
        }
    }

    /// Places a slab's symbols (all its columns).
    fn place(
        &mut self,
        rows: &std::ops::Range<usize>,
        symbols: &[i32],
        params: &CodecParams,
        name: &str,
    ) -> Result<()> {
        let cols = self.symbols.len() / self.per_col;
        self.place_columns(rows, 0, cols, symbols, params, name)
    }

    /// Places the symbols of columns `first .. first + n` of the slab of rows `rows` (chunked as
    /// the slab: each column padded to whole chunks).
    fn place_columns(
        &mut self,
        rows: &std::ops::Range<usize>,
        first: usize,
        n: usize,
        symbols: &[i32],
        params: &CodecParams,
        name: &str,
    ) -> Result<()> {
        match &self.params {
            Some(p) if p != params => {
                return Err(NwcError::Config(format!(
                    "{name}: the codec's parameters changed between blocks"
                )));
            }
            Some(_) => {}
            None => self.params = Some(params.clone()),
        }
        let slab_per_col = symbols.len() / n.max(1);
        for (c, col) in symbols.chunks_exact(slab_per_col).enumerate() {
            let at = (first + c) * self.per_col + rows.start;
            // The last slab's padding is the whole matrix's padding.
            let len = slab_per_col.min(self.per_col - rows.start);
            self.symbols[at..at + len].copy_from_slice(&col[..len]);
        }
        Ok(())
    }

    fn finish(self) -> (Vec<i32>, CodecParams) {
        (self.symbols, self.params.unwrap_or_default())
    }
}

fn sum_sq(values: &[f32]) -> f64 {
    values.iter().map(|&a| f64::from(a) * f64::from(a)).sum()
}

fn sum_sq_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a - b) * f64::from(a - b))
        .sum()
}

/// Where a coded tensor's chunks sit: the matrix view, the chunk length and the scales.
struct Layout {
    rows: usize,
    cols: usize,
    chunk_len: usize,
    axis: ScaleAxis,
    scales: Vec<f16>,
}

/// Values per row slab when a decoder reassembles a large matrix (dequantization is per chunk,
/// so the slab size never changes the result, only the memory: the symbols, the output and one
/// slab in between; test `slab_decoding_is_whole_decoding`).
const DECODE_SLAB_VALUES: usize = 1 << 23;

/// The row ranges of a `rows × cols` matrix: all of it when it has at most `whole` values, else
/// slabs of about `slab` values whose lengths are multiples of `chunk_len` (so no chunk
/// straddles two).
fn row_slabs(
    rows: usize,
    cols: usize,
    chunk_len: usize,
    whole: usize,
    slab: usize,
) -> Vec<std::ops::Range<usize>> {
    let per = if rows.saturating_mul(cols) <= whole {
        rows
    } else {
        (slab / cols.max(1) / chunk_len * chunk_len).max(chunk_len)
    };
    (0..rows)
        .step_by(per.max(1))
        .map(|r| r..(r + per).min(rows))
        .collect()
}

/// Symbols to the tensor a decoder returns: the codec's dequantization, chunks reassembled with
/// their scales, rounding to `dtype`, a slab of rows at a time. The decoder and the
/// compressor's error report share it, so the report measures exactly what decoding yields.
#[allow(clippy::too_many_arguments)]
fn reconstruct(
    codec: &dyn WeightCodec,
    name: &str,
    dtype: DType,
    shape: Vec<usize>,
    layout: Layout,
    symbols: &[i32],
    chunk_levels: &[u8],
    params: &CodecParams,
    slab_values: usize,
) -> Result<Tensor> {
    let Layout {
        rows,
        cols,
        chunk_len: l,
        axis,
        scales,
    } = layout;
    let corrupt = |reason: String| NwcError::Corrupt {
        name: name.to_string(),
        reason,
    };
    let blocks = rows.div_ceil(l.max(1));
    let n_scales = match axis {
        ScaleAxis::Column => cols,
        ScaleAxis::Row => rows,
    };
    if l == 0
        || scales.len() != n_scales
        || Some(chunk_levels.len()) != cols.checked_mul(blocks)
        || Some(symbols.len()) != chunk_levels.len().checked_mul(l)
    {
        return Err(corrupt(format!(
            "{} symbols, {} chunk levels and {} scales for {rows}×{cols} in chunks of {l}",
            symbols.len(),
            chunk_levels.len(),
            scales.len()
        )));
    }
    let scale_f32: Vec<f32> = scales.iter().map(|s| s.to_f32()).collect();
    if let Some(s) = scale_f32.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
        return Err(corrupt(format!("scale {s} is not finite and positive")));
    }
    if rows == 0 || cols == 0 || l > nwc_tensor::MAX_CHUNK_LEN {
        return Err(corrupt(format!(
            "{rows}×{cols} in chunks of {l} is not valid"
        )));
    }
    let size = match dtype {
        DType::F32 | DType::F16 | DType::BF16 => dtype.size(),
        other => {
            return Err(nwc_tensor::TensorError::UnsupportedDtype {
                name: name.to_string(),
                dtype: other.to_string(),
            }
            .into());
        }
    };
    let per_col = blocks * l;
    let slabs = row_slabs(rows, cols, l, slab_values, slab_values);
    let mut bytes = vec![0u8; rows * cols * size];
    for slab in &slabs {
        let sb = slab.len().div_ceil(l);
        let (s, lv) = if slabs.len() == 1 {
            (
                std::borrow::Cow::Borrowed(symbols),
                std::borrow::Cow::Borrowed(chunk_levels),
            )
        } else {
            let first = slab.start / l;
            let mut s = Vec::with_capacity(cols * sb * l);
            let mut lv = Vec::with_capacity(cols * sb);
            for c in 0..cols {
                s.extend_from_slice(&symbols[c * per_col + slab.start..][..sb * l]);
                lv.extend_from_slice(&chunk_levels[c * blocks + first..][..sb]);
            }
            (s.into(), lv.into())
        };
        let recon = codec.dequantize(name, &s, l, &lv, params)?;
        if recon.len() != cols * sb * l {
            return Err(corrupt(format!(
                "the codec returned {} values for {} chunks of {l}",
                recon.len(),
                cols * sb
            )));
        }
        let out = &mut bytes[slab.start * cols * size..slab.end * cols * size];
        let view = Unchunk {
            recon: &recon,
            per_col: sb * l,
            cols,
            scales: match axis {
                ScaleAxis::Column => &scale_f32,
                ScaleAxis::Row => &scale_f32[slab.clone()],
            },
            by_row: axis == ScaleAxis::Row,
        };
        match dtype {
            DType::F32 => view.write(out, f32::to_le_bytes),
            DType::F16 => view.write(out, |v| f16::from_f32(v).to_le_bytes()),
            _ => view.write(out, |v| half::bf16::from_f32(v).to_le_bytes()),
        }
    }
    Ok(Tensor::from_bytes(name, dtype, shape, bytes)?)
}

/// A slab's dequantized chunks (column-major: column `c`'s rows at `c · per_col ..`) on their
/// way to row-major output bytes: each value times its column's or row's scale, in `f32`, then
/// converted to the output type — the arithmetic of [`nwc_tensor::Chunked::to_matrix`] and
/// [`Tensor::extend_bytes_f32`], fused into one pass over tiles, bands of rows in parallel.
struct Unchunk<'a> {
    recon: &'a [f32],
    per_col: usize,
    cols: usize,
    /// One per column, or (with `by_row`) one per row of the slab.
    scales: &'a [f32],
    by_row: bool,
}

/// Rows per parallel band and columns per tile of the transposition (a tile of the input,
/// `TILE` columns × `BAND` rows, stays in L1).
const BAND: usize = 64;
const TILE: usize = 32;

impl Unchunk<'_> {
    fn write<const N: usize>(&self, out: &mut [u8], conv: impl Fn(f32) -> [u8; N] + Sync) {
        use rayon::prelude::*;
        let cols = self.cols;
        out.par_chunks_mut(BAND * cols * N)
            .enumerate()
            .for_each(|(band, o)| {
                let r0 = band * BAND;
                let n_rows = o.len() / (cols * N);
                for c0 in (0..cols).step_by(TILE) {
                    let c1 = (c0 + TILE).min(cols);
                    for r in 0..n_rows {
                        let line = &mut o[(r * cols + c0) * N..(r * cols + c1) * N];
                        for (c, dst) in (c0..c1).zip(line.chunks_exact_mut(N)) {
                            let s = self.scales[if self.by_row { r0 + r } else { c }];
                            let v = self.recon[c * self.per_col + r0 + r] * s;
                            dst.copy_from_slice(&conv(v));
                        }
                    }
                }
            });
    }
}

/// Lower-case hex of `b` (checkpoint hashes in messages).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A `.nwc` file opened for reading (memory-mapped).
pub struct NwcFile {
    map: memmap2::Mmap,
    options: ReadOptions,
}

impl std::fmt::Debug for NwcFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NwcFile")
            .field("bytes", &self.map.len())
            .finish()
    }
}

impl NwcFile {
    /// Opens a file and checks its header, index and footer.
    ///
    /// # Errors
    /// [`NwcError::Io`] when it cannot be read, [`NwcError::InFile`] (a
    /// [`NwcError::Format`] and the path) when it is not a valid, complete `.nwc` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(io_err(path))?;
        // SAFETY: read-only private map; the file must not be truncated while open (as for every
        // mmap-based model loader).
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err(path))?;
        let options = ReadOptions::default();
        FileReader::new(&map, options).map_err(|e| NwcError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e.into()),
        })?;
        Ok(Self { map, options })
    }

    /// Whether the file holds a record named `name` (a tensor or a metadata record).
    ///
    /// # Errors
    /// As [`NwcFile::reader`].
    pub fn has_record(&self, name: &str) -> Result<bool> {
        Ok(self.reader()?.index().iter().any(|e| e.name == name))
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The parsed container.
    ///
    /// # Errors
    /// Never after a successful [`NwcFile::open`] in practice; the container is re-parsed.
    pub fn reader(&self) -> Result<FileReader<'_>> {
        Ok(FileReader::new(&self.map, self.options)?)
    }

    /// Measured rate of the whole file.
    ///
    /// # Errors
    /// As [`NwcFile::reader`].
    pub fn bits_per_param(&self) -> Result<f64> {
        let r = self.reader()?;
        Ok(8.0 * r.file_len() as f64 / r.n_params().max(1) as f64)
    }

    /// Decodes every tensor, in file order, calling `f` on each (one in memory at a time).
    ///
    /// # Errors
    /// [`NwcError::CodecMismatch`] when `codec` is not the file's, or the first decoding error.
    pub fn for_each_tensor(
        &self,
        codec: &dyn WeightCodec,
        mut f: impl FnMut(Tensor) -> Result<()>,
    ) -> Result<()> {
        let r = self.reader()?;
        let d = Decompressor::new(codec);
        d.check_header(r.header())?;
        for i in 0..r.index().len() {
            f(d.decompress_record(&r.record(i)?)?)?;
        }
        Ok(())
    }

    /// Decodes every tensor, records in parallel on the rayon pool (each record's segments are
    /// parallel too), returned in file order. Holds the whole decoded model in memory; use
    /// [`NwcFile::for_each_tensor`] to hold one tensor at a time.
    ///
    /// # Errors
    /// As [`NwcFile::for_each_tensor`]; the first error in file order.
    pub fn decode_all(&self, codec: &dyn WeightCodec) -> Result<Vec<Tensor>> {
        decode_records(&self.reader()?, codec)
    }

    /// Decodes one tensor by name.
    ///
    /// # Errors
    /// As [`NwcFile::for_each_tensor`].
    pub fn tensor(&self, codec: &dyn WeightCodec, name: &str) -> Result<Tensor> {
        let r = self.reader()?;
        let d = Decompressor::new(codec);
        d.check_header(r.header())?;
        d.decompress_record(&r.record_by_name(name)?)
    }

    /// The codec that decodes this file, found from its header by `registry`: [`Builtin`]
    /// knows lossless, ECSQ and TCQ files; `nwc_codec::Codecs` adds the learned codec (the
    /// checkpoint this build embeds, matched by hash, or the checkpoint file `checkpoint`). The
    /// `nwc` facade's `nwc::decoder` picks the widest registry its features allow.
    ///
    /// # Errors
    /// [`NwcError::CodecMismatch`] when the file's codec is not in `registry` or the checkpoint's
    /// hash is not the one the file names; the registry's errors for a checkpoint file.
    pub fn decoder(
        &self,
        registry: &dyn CodecRegistry,
        checkpoint: Option<&Path>,
    ) -> Result<Box<dyn WeightCodec>> {
        registry.decoder(self.reader()?.header(), checkpoint)
    }

    /// Decodes the whole file into a safetensors file: shapes as in the original, dtypes too
    /// unless `dtype` (a float dtype) is given for the float tensors; metadata records are left
    /// out. Written whole or not at all.
    ///
    /// # Errors
    /// As [`NwcFile::for_each_tensor`], plus I/O errors; [`NwcError::Config`] for a `dtype` that
    /// is not F32, F16 or BF16.
    pub fn to_safetensors(
        &self,
        codec: &dyn WeightCodec,
        output: impl AsRef<Path>,
        dtype: Option<DType>,
    ) -> Result<()> {
        if let Some(d) = dtype.filter(|d| !d.is_float()) {
            return Err(NwcError::Config(format!("cannot write weights as {d}")));
        }
        let mut all = Vec::new();
        self.for_each_tensor(codec, |t| {
            if nwc_format::is_metadata(t.name()) {
                return Ok(());
            }
            all.push(match dtype {
                Some(d) if d != t.dtype() && t.dtype().is_float() => {
                    Tensor::from_f32(t.name(), d, t.shape().to_vec(), &t.to_f32()?)?
                }
                _ => t,
            });
            Ok(())
        })?;
        nwc_tensor::write_safetensors(output, &all)?;
        Ok(())
    }
}

/// Compresses one tensor and decodes it again in memory (no file), returning the decoded tensor
/// and the report with the record's measured size.
///
/// # Errors
/// As [`Compressor::compress_tensor`] and [`Decompressor::decompress_record`].
pub fn round_trip_tensor(
    codec: &dyn WeightCodec,
    t: &Tensor,
    options: &CompressOptions,
) -> Result<(Tensor, TensorReport)> {
    let c = Compressor::new(codec).with_options(options.clone())?;
    let (record, mut report) = c.compress_tensor(t, None)?;
    let mut w = Writer::new(Vec::new(), c.header())?;
    report.bytes = w.write(&record)?;
    let out = Decompressor::new(codec).decompress_record(&record)?;
    Ok((out, report))
}

/// Builds the codec that decodes a file, from the file's header: the seam through which codec
/// crates above this one (the learned codec) make their files decodable from the file alone.
pub trait CodecRegistry {
    /// The decoder for a file with header `h`; `checkpoint` is a checkpoint file the caller
    /// supplies for codecs that need one (ignored by the others).
    ///
    /// # Errors
    /// [`NwcError::CodecMismatch`] when the registry does not know the file's codec or the
    /// checkpoint is not the one the file names.
    fn decoder(&self, h: &Header, checkpoint: Option<&Path>) -> Result<Box<dyn WeightCodec>>;
}

/// The codecs of this crate: lossless-only, ECSQ and TCQ files decode on the CPU with nothing
/// more. A learned-codec file is a [`NwcError::CodecMismatch`] naming the missing feature.
#[derive(Debug, Clone, Copy, Default)]
pub struct Builtin;

impl CodecRegistry for Builtin {
    fn decoder(&self, h: &Header, _checkpoint: Option<&Path>) -> Result<Box<dyn WeightCodec>> {
        match h.codec {
            CodecKind::None | CodecKind::Ecsq => {
                Ok(Box::new(crate::codec::EcsqCodec::with_step(1.0)?))
            }
            CodecKind::Tcq => Ok(Box::new(crate::tcq::TcqCodec::with_step(1.0)?)),
            CodecKind::Nwc | CodecKind::NwcTrellis => Err(NwcError::CodecMismatch(format!(
                "the file is coded with the learned codec (checkpoint {}), which needs nwc's \
                 `learned` feature (nwc_codec::Codecs)",
                hex(&h.codec_hash)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decoding a matrix a slab of rows at a time gives the tensor decoding it whole gives, for
    /// both scale axes, a trellis codec (state carried along each chunk) and a row count that
    /// leaves a partial last chunk.
    #[test]
    fn slab_decoding_is_whole_decoding() {
        let (rows, cols, l) = (203, 5, 16);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * (1.0 + (i % cols) as f32))
            .collect();
        let tcq = crate::tcq::TcqCodec::with_step(0.2).unwrap();
        for axis in [ScaleAxis::Column, ScaleAxis::Row] {
            let cfg = ChunkConfig {
                chunk_len: l,
                axis,
                ..ChunkConfig::default()
            };
            let ch =
                nwc_tensor::chunk(ArrayView2::from_shape((rows, cols), &values).unwrap(), &cfg)
                    .unwrap();
            let lv: Vec<u8> = (0..ch.n_chunks()).map(|k| (k % 3) as u8).collect();
            let q = tcq.quantize("w", ch.data(), l, &lv).unwrap();
            let decode = |slab_values| {
                let layout = Layout {
                    rows,
                    cols,
                    chunk_len: l,
                    axis,
                    scales: ch.scales().to_vec(),
                };
                reconstruct(
                    &tcq,
                    "w",
                    DType::F32,
                    vec![rows, cols],
                    layout,
                    &q.symbols,
                    &lv,
                    &q.params,
                    slab_values,
                )
                .unwrap()
            };
            let whole = decode(usize::MAX);
            // 32 rows per slab: 7 slabs, the last of 11 rows.
            assert_eq!(row_slabs(rows, cols, l, 160, 160).len(), 7);
            assert_eq!(decode(160), whole, "{axis:?}");
            assert_eq!(decode(1), whole, "{axis:?}");
        }
    }
}
