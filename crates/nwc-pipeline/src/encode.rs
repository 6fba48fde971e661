//! Encoding: [`Compressor`] codes tensors into records and models into `.nwc` streams and
//! files; [`compress_in_order`] runs a model's tensors a window at a time on all cores.

use ndarray::ArrayView2;
use nwc_entropy::{Coder, Table};
use nwc_format::{Header, Payload, Record, TableRecord, Writer};
use nwc_tensor::{ScaleSums, Tensor, chunk_with_scales};

use crate::codec::{Quantized, WeightCodec};
use crate::coded::CodedTensor;
use crate::decode::Decompressor;
use crate::error::{NwcError, Result};
use crate::options::CompressOptions;
use crate::plan::{Plan, SlabSymbols, chunk_levels, sum_sq, sum_sq_diff, with_name};
use crate::reconstruct::{Layout, Source, reconstruct};
use crate::report::TensorReport;

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
        let original = t;
        let rotated = self.rotated(t)?;
        let t = rotated.as_ref().unwrap_or(t);
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
                    Source::Decoded(&q.symbols),
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
        let (mut record, report) = self.coded(t, &plan, coded, single, sq_error, sq_signal)?;
        record.dtype = original.dtype();
        Ok((record, report))
    }

    /// With [`CompressOptions::incoherence`], the matrix `t` rotated to `U W Vᵀ` in `f32` (the
    /// record keeps `t`'s dtype; the decoder rounds to it after rotating back); else `None`.
    ///
    /// # Errors
    /// [`NwcError::Unrepresentable`] for a NaN or infinite weight, named at its place in `t`
    /// (rotating would smear it over a block).
    pub(crate) fn rotated(&self, t: &Tensor) -> Result<Option<Tensor>> {
        let Some((rows, cols)) = t.matrix_dims().filter(|_| self.options.incoherence) else {
            return Ok(None);
        };
        let mut v = t.to_f32()?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(NwcError::Unrepresentable {
                name: t.name().to_string(),
                reason: format!(
                    "non-finite value {} at row {}, column {}",
                    v[i],
                    i / cols,
                    i % cols
                ),
            });
        }
        nwc_tensor::rotate_matrix(&mut v, rows, cols, false);
        Ok(Some(Tensor::from_f32(
            t.name(),
            nwc_tensor::DType::F32,
            t.shape().to_vec(),
            &v,
        )?))
    }

    /// The scales (from the whole matrix) and quality levels of a matrix the policy codes; with
    /// [`CompressOptions::allocation`], scales with each column's step multiplier folded in and
    /// every level 0.
    pub(crate) fn plan(&self, t: &Tensor, importance: Option<&[f32]>) -> Result<Plan> {
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
            Some(_) if self.options.allocation.is_some() => vec![0u8; cols],
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
        if let (Some(a), Some(imp)) = (self.options.allocation, importance) {
            a.fold(t.name(), &mut plan.scales, imp, cfg)?;
        }
        Ok(plan)
    }

    /// Entropy-codes a matrix's symbols into a record, with `tables` (table list and map) when
    /// given, else tables the codec fits to all the symbols, and reports the squared error the
    /// decoder will see (`sq_error`, NaN when not measured) against the original's energy.
    pub(crate) fn coded(
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
        let coded = CodedTensor {
            method: self.codec.kind(),
            chunk_len: l,
            axis: plan.axis,
            incoherent: self.options.incoherence,
            n_levels: self.codec.n_levels(),
            rows: plan.rows,
            cols: plan.cols,
            scales: plan.scales.clone(),
            levels: plan.levels.clone(),
            params: q.params,
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
            chunks_per_segment: self.options.chunks_per_segment,
        };
        let payload = Payload::Coded(coded.into_payload(segments));
        let record = Record {
            name: t.name().to_string(),
            dtype: t.dtype(),
            shape: t.shape().iter().map(|&d| d as u64).collect(),
            payload,
        };
        Ok((record, report))
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
