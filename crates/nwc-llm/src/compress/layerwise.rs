//! Compressing a Llama or Qwen2 one decoder block at a time, in bounded memory, resumable after
//! a crash (`docs/llm.md`, "Layer by layer").
//!
//! Memory holds one block's weights, the calibration windows' activations between blocks, and
//! that block's Hessians and LDL factors; the output projection and the embedding come last,
//! one at a time. Finished records stream to `OUT.partial`; after every block a checkpoint
//! `OUT.resume` (written whole, then renamed) records the records so far and the activations.
//! A run that finds a checkpoint of the same job cuts `OUT.partial` back to the checkpoint and
//! goes on from the next block, producing the same bytes as a run that was never interrupted.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Instant;

use crate::calib::Hessians;
use crate::stream::{Layerwise, ModelSource};
use crate::weights::{Site, site_of};
use burn::backend::NdArray;
use nwc_format::{Record, Writer};

use nwc_pipeline::{CompressReport, Compressor, NwcError, Result, TensorReport};

use super::calibration::{Calibration, Mode, compress_llama_tensor};
use super::records::{CONFIG_RECORD, TOKENIZER_RECORD, metadata};
use super::resume::Checkpoint;
use super::sequential::Streams;
use super::shard::Shard;
use super::steer::{Coded, Steering};

/// Seconds spent in each stage of a layer-by-layer compression (this run only; a resumed run
/// does not count the blocks finished before).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Reading (and dequantizing) weights.
    pub load: f64,
    /// Forward passes of the calibration windows and Hessian accumulation.
    pub forward: f64,
    /// Damping and block-LDL factorization of the Hessians.
    pub factor: f64,
    /// Coding the tensors (LDLQ and the codec's search).
    pub encode: f64,
    /// Writing records and checkpoints (synced to disk).
    pub write: f64,
}

/// What a layer-by-layer compression did.
#[derive(Debug, Clone)]
pub struct LayerwiseReport {
    /// Per-tensor report and the file size, as [`super::compress_llama`] gives.
    pub report: CompressReport,
    /// Time per stage.
    pub stages: StageTimes,
    /// The block this run started from (0 for a fresh run).
    pub first_block: usize,
}

/// Progress of a layer-by-layer compression, after each record is written.
#[derive(Debug, Clone, Copy)]
pub struct LayerwiseProgress<'a> {
    /// The record just written.
    pub tensor: &'a TensorReport,
    /// Decoder blocks finished (all of them while the head and embedding are coded).
    pub blocks_done: usize,
    /// Decoder blocks in the model.
    pub blocks: usize,
}

/// The fingerprint of a job: the model's bytes, the codec, its settings and options, the mode
/// and the calibration windows. A checkpoint resumes only the job that wrote it.
fn job_fingerprint(
    compressor: &Compressor<'_>,
    src: &dyn ModelSource,
    mode: Mode,
    windows: &[Vec<u32>],
    embed_tokenizer: bool,
) -> [u8; 32] {
    let header = compressor.header();
    let ids: Vec<u8> = windows
        .iter()
        .flat_map(|w| {
            (w.len() as u32)
                .to_le_bytes()
                .into_iter()
                .chain(w.iter().flat_map(|i| i.to_le_bytes()))
        })
        .collect();
    // The codec's settings (step, λ, …) as they act: a fixed probe quantized at every level.
    let codec = compressor.codec();
    let l = codec.preferred_chunk_len().unwrap_or(16);
    let levels: Vec<u8> = (0..codec.n_levels() as u8).collect();
    let probe: Vec<f32> = (0..l * levels.len())
        .map(|i| ((i * 7919) % 97) as f32 / 24.0 - 2.0)
        .collect();
    let acts = match codec.quantize("probe", &probe, l, &levels) {
        Ok(q) => format!("{:?} {:?}", q.symbols, q.params),
        Err(e) => e.to_string(),
    };
    crate::calib::fingerprint(&[
        &src.fingerprint(),
        &[header.codec as u8],
        &header.codec_hash,
        acts.as_bytes(),
        format!("{:?}", compressor.options()).as_bytes(),
        mode.label().as_bytes(),
        &ids,
        &[u8::from(embed_tokenizer)],
    ])
}

/// The whole run (`shard: None`) or one shard of it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_layerwise(
    compressor: &Compressor<'_>,
    src: &dyn ModelSource,
    mode: Mode,
    windows: &[Vec<u32>],
    embed_tokenizer: bool,
    shard: Option<Shard>,
    asymmetric: Option<f64>,
    allocation: Option<&Calibration>,
    mut steer: Option<&mut dyn Steering>,
    output: &Path,
    mut progress: impl FnMut(LayerwiseProgress<'_>),
) -> Result<LayerwiseReport> {
    let start = Instant::now();
    if shard.is_some() && steer.is_some() {
        return Err(NwcError::Config(
            "a shard cannot be steered to a rate: the blocks of the other shards are not seen"
                .into(),
        ));
    }
    if shard.is_some() && asymmetric.is_some() {
        return Err(NwcError::Config(
            "a shard cannot use asymmetric calibration: the coded blocks of the shards before it are not seen"
                .into(),
        ));
    }
    // Checked by `LlamaCompression::run_layerwise`: a calibrated mode here has windows.
    let calibrated = mode != Mode::DataFree;
    let asymmetric = asymmetric.filter(|_| calibrated);
    let cfg = src.config().clone();
    let device = Default::default();
    let partial = nwc_tensor::with_suffix(output, ".partial");
    let state_path = nwc_tensor::with_suffix(output, ".resume");
    let mut job_fp = job_fingerprint(compressor, src, mode, windows, embed_tokenizer);
    if let Some(s) = steer.as_deref() {
        job_fp = crate::calib::fingerprint(&[&job_fp, b"rate", &s.bits().to_le_bytes()]);
    }
    if let Some(a) = asymmetric {
        job_fp = crate::calib::fingerprint(&[&job_fp, b"asymmetric", &a.to_le_bytes()]);
    }
    if let Some(c) = allocation {
        job_fp =
            crate::calib::fingerprint(&[&job_fp, b"allocation", c.allocation_key().as_bytes()]);
    }
    // A shard's checkpoint resumes that shard only.
    let fp = match shard {
        None => job_fp,
        Some(s) => crate::calib::fingerprint(&[
            &job_fp,
            &(s.index() as u64).to_le_bytes(),
            &(s.count() as u64).to_le_bytes(),
        ]),
    };
    let blocks = shard.map_or(0..cfg.layers, |s| s.blocks(cfg.layers));
    let mut times = StageTimes::default();

    // Resume, or start afresh.
    let resumed = match std::fs::read(&state_path) {
        Ok(bytes) => match Checkpoint::parse(&bytes, &fp) {
            Ok(c) if std::fs::metadata(&partial).is_ok_and(|m| m.len() >= c.partial_len) => Some(c),
            Ok(_) => {
                tracing::warn!(path = %partial.display(), "partial file shorter than its checkpoint; starting afresh");
                None
            }
            Err(why) => {
                tracing::warn!(path = %state_path.display(), "ignoring checkpoint: {why}");
                None
            }
        },
        Err(_) => None,
    };
    let (mut writer, mut reports, first_block, mut run, mut streams) = match resumed {
        Some(c) => {
            let mut f = OpenOptions::new()
                .write(true)
                .open(&partial)
                .map_err(NwcError::io(&partial))?;
            f.set_len(c.partial_len)
                .and_then(|()| f.seek(SeekFrom::End(0)).map(drop))
                .map_err(NwcError::io(&partial))?;
            let writer = Writer::resume(
                BufWriter::new(f),
                compressor.header(),
                c.partial_len,
                c.index,
            )?;
            if let (Some(s), Some((step, last))) = (steer.as_deref_mut(), c.steer) {
                s.restore(step, last);
            }
            let (w, t, values) = c.activations;
            let (run, streams) = match (calibrated, asymmetric) {
                (false, _) => (None, None),
                (true, None) => (
                    Some(Layerwise::<NdArray>::from_f32(&cfg, values, w, t, &device)?),
                    None,
                ),
                (true, Some(_)) => (None, Some(Streams::from_f32(&cfg, values, w, t)?)),
            };
            tracing::info!(
                block = c.next_block,
                records = writer.index().len(),
                "resuming layer-by-layer compression"
            );
            (writer, c.reports, c.next_block, run, streams)
        }
        None => {
            let f = File::create(&partial).map_err(NwcError::io(&partial))?;
            let mut writer = Writer::new(BufWriter::new(f), compressor.header())?;
            let mut reports = Vec::new();
            let dtype_name = src
                .dtype(crate::weights::EMBED)
                .ok()
                .and_then(crate::weights::torch_dtype)
                .unwrap_or("float32");
            let mut meta = Vec::new();
            if let Some(s) = shard {
                meta.push(s.record(&job_fp)?);
            }
            if shard.is_none_or(|s| s.writes_metadata()) {
                meta.push(metadata(CONFIG_RECORD, &cfg.to_hf_json(dtype_name))?);
                if embed_tokenizer {
                    meta.push(metadata(TOKENIZER_RECORD, &src.tokenizer().to_json()?)?);
                }
            }
            for r in &meta {
                let bytes = writer.write(r)?;
                reports.push(raw_report(r, bytes));
            }
            let t = Instant::now();
            let w: Vec<&[u32]> = windows.iter().map(Vec::as_slice).collect();
            let embed = || Layerwise::<NdArray>::embed(src, &w, &device);
            let (run, streams) = match (calibrated, asymmetric) {
                (false, _) => (None, None),
                (true, None) => (Some(embed()?), None),
                (true, Some(_)) => (
                    None,
                    Some(Streams {
                        original: embed()?,
                        coded: embed()?,
                    }),
                ),
            };
            times.load += t.elapsed().as_secs_f64();
            (writer, reports, 0, run, streams)
        }
    };

    let names = src.names();
    // A steered run's budget: the file's bytes at the target rate, less the index it ends with;
    // what is left of it is shared by what is left to code, at the same bits per parameter.
    let total_params = cfg.n_params() as f64;
    let per_block = cfg.block_params() as f64;
    let rest_params = total_params - cfg.layers as f64 * per_block;
    let index_bytes = [CONFIG_RECORD, TOKENIZER_RECORD]
        .into_iter()
        .chain(names.iter().map(String::as_str))
        .map(|n| 26 + n.len())
        .sum::<usize>()
        + 64;
    let rate_left = |bits: f64, written: u64, params_left: f64| {
        let left = bits * total_params / 8.0 - written as f64 - index_bytes as f64;
        8.0 * left / params_left
    };
    let block_of = |n: &str| -> Option<usize> {
        n.strip_prefix("model.layers.")?
            .split_once('.')?
            .0
            .parse()
            .ok()
    };
    // An asymmetric run's records of the block being coded (to move the coded stream on).
    let block_records = std::cell::RefCell::new(Vec::new());
    let mut sink = |writer: &mut Writer<BufWriter<File>>,
                    reports: &mut Vec<TensorReport>,
                    record: Record,
                    mut report: TensorReport,
                    blocks_done: usize|
     -> Result<()> {
        report.bytes = writer.write(&record)?;
        if asymmetric.is_some() {
            block_records.borrow_mut().push(record);
        }
        tracing::debug!(tensor = %report.name, bits_per_param = report.bits_per_param(), nmse = report.nmse(), "compressed");
        progress(LayerwiseProgress {
            tensor: &report,
            blocks_done,
            blocks: cfg.layers,
        });
        reports.push(report);
        Ok(())
    };
    // Codes `names` and writes their records: streamed as they are coded, or (a steered run)
    // coded whole at the step that lands what is left of the budget on `params_left`, searched
    // when `search`.
    let mut segment = |steer: &mut Option<&mut dyn Steering>,
                       search: bool,
                       params_left: f64,
                       names: &[&String],
                       calibration: Option<&Calibration>,
                       parallel: bool,
                       blocks_done: usize,
                       writer: &mut Writer<BufWriter<File>>,
                       reports: &mut Vec<TensorReport>,
                       times: &mut StageTimes|
     -> Result<()> {
        let Some(s) = steer.as_deref_mut() else {
            return code_tensors(
                compressor,
                src,
                names,
                calibration,
                mode,
                parallel,
                times,
                |record, report| sink(writer, reports, record, report, blocks_done),
            );
        };
        let target = rate_left(s.bits(), writer.position(), params_left);
        let coded = s.code(target, search, &mut |c| {
            let mut coded: Coded = Vec::new();
            code_tensors(
                c,
                src,
                names,
                calibration,
                mode,
                parallel,
                times,
                |r, report| {
                    coded.push((r, report));
                    Ok(())
                },
            )?;
            Ok(coded)
        })?;
        for (record, report) in coded {
            sink(writer, reports, record, report, blocks_done)?;
        }
        Ok(())
    };

    for l in first_block..blocks.end {
        if l < blocks.start {
            // Before this shard's blocks: move the calibration activations on, code nothing.
            if let Some(run) = run.as_mut() {
                let t = Instant::now();
                let w = run.load_block(src, l)?;
                times.load += t.elapsed().as_secs_f64();
                let t = Instant::now();
                run.advance(&w, l, None);
                times.forward += t.elapsed().as_secs_f64();
            }
            continue;
        }
        let block_start = Instant::now();
        let block_names: Vec<&String> = names.iter().filter(|n| block_of(n) == Some(l)).collect();
        // Calibrate: this block's Hessians from the original activations (or, asymmetric, from
        // the coded model's), then move the original activations on.
        let sites = [
            Site::AttnIn(l),
            Site::AttnOut(l),
            Site::MlpIn(l),
            Site::MlpDown(l),
        ];
        let rotated = compressor.options().incoherence;
        let calibration = match (run.as_mut(), streams.as_mut().zip(asymmetric)) {
            (Some(run), _) => {
                let t = Instant::now();
                let w = run.load_block(src, l)?;
                times.load += t.elapsed().as_secs_f64();
                // The block's weights go before its Hessians are factored.
                let c = calibrate(&cfg, rotated, &sites, &mut times, move |sink| {
                    run.advance_mapped(&w, l, &|_, x| Hessians::gram(x), sink);
                    drop(w);
                    Ok(())
                })?;
                Some(c.with_allocation_of(allocation))
            }
            (None, Some((st, alpha))) => {
                let t = Instant::now();
                let w = st.original.load_block(src, l)?;
                times.load += t.elapsed().as_secs_f64();
                let t = Instant::now();
                let c = st.calibrate_block(&cfg, &w, l, &sites, rotated, alpha)?;
                times.forward += t.elapsed().as_secs_f64();
                Some(c.with_allocation_of(allocation))
            }
            (None, None) => None,
        };
        let params_left = (cfg.layers - l) as f64 * per_block + rest_params;
        segment(
            &mut steer,
            false,
            params_left,
            &block_names,
            calibration.as_ref(),
            true,
            l,
            &mut writer,
            &mut reports,
            &mut times,
        )?;
        drop(calibration);
        if let Some(st) = streams.as_mut() {
            let t = Instant::now();
            st.advance_coded(&cfg, compressor.codec(), &block_records.take(), l)?;
            times.forward += t.elapsed().as_secs_f64();
        }
        // Checkpoint: records synced, then the state that points at them.
        let t = Instant::now();
        writer.inner_mut().flush().map_err(NwcError::io(&partial))?;
        writer
            .inner_mut()
            .get_ref()
            .sync_data()
            .map_err(NwcError::io(&partial))?;
        let activations = match (&run, &streams) {
            (Some(r), _) => (r.windows(), windows[0].len(), r.to_f32()),
            (None, Some(st)) => (st.original.windows(), windows[0].len(), st.to_f32()),
            (None, None) => (0, 0, Vec::new()),
        };
        Checkpoint {
            next_block: l + 1,
            partial_len: writer.position(),
            index: writer.index().to_vec(),
            reports: reports.clone(),
            activations,
            steer: steer.as_deref().map(|s| s.state()),
        }
        .save(&state_path, &fp)?;
        times.write += t.elapsed().as_secs_f64();
        tracing::info!(
            block = l,
            of = cfg.layers,
            seconds = block_start.elapsed().as_secs_f64(),
            forward = times.forward,
            factor = times.factor,
            encode = times.encode,
            "block compressed (stage seconds so far)"
        );
    }

    // The rest (final norm, output projection, embedding), one tensor at a time (in the last
    // shard).
    let rest: Vec<&String> = if shard.is_none_or(|s| s.codes_rest()) {
        names.iter().filter(|n| block_of(n).is_none()).collect()
    } else {
        Vec::new()
    };
    // An asymmetric run calibrates the output projection on the coded model's final
    // activations (no target map: a tied embedding is also the input table).
    let head_stream = run.as_ref().or(streams.as_ref().map(|st| &st.coded));
    let head = match head_stream {
        Some(run) if rest.iter().any(|n| site_of(&cfg, n) == Some(Site::Head)) => Some(
            calibrate(
                &cfg,
                compressor.options().incoherence,
                &[Site::Head],
                &mut times,
                |sink| Ok(run.head_input(src, &mut |site, x| sink(site, Hessians::gram(x)))?),
            )?
            .with_allocation_of(allocation),
        ),
        _ => None,
    };
    drop(run);
    drop(streams);
    if !rest.is_empty() {
        segment(
            &mut steer,
            true,
            rest_params,
            &rest,
            head.as_ref(),
            false,
            cfg.layers,
            &mut writer,
            &mut reports,
            &mut times,
        )?;
    }
    let t = Instant::now();
    let (mut inner, file_bytes) = writer.finish()?;
    inner.flush().map_err(NwcError::io(&partial))?;
    inner
        .get_ref()
        .sync_data()
        .map_err(NwcError::io(&partial))?;
    drop(inner);
    std::fs::rename(&partial, output).map_err(NwcError::io(output))?;
    let _ = std::fs::remove_file(&state_path);
    times.write += t.elapsed().as_secs_f64();
    // Metadata records are bytes of the file but not parameters (as in `compress_llama`).
    reports.retain(|r| !nwc_format::is_metadata(&r.name));
    Ok(LayerwiseReport {
        report: CompressReport {
            tensors: reports,
            file_bytes,
            seconds: start.elapsed().as_secs_f64(),
        },
        stages: times,
        first_block,
    })
}

/// Accumulates the Hessians of `sites` from the Gram matrices ([`Hessians::gram`]) `forward`
/// hands its sink, then factors them (each freed once factored), timing both stages.
fn calibrate(
    cfg: &crate::config::LlamaConfig,
    rotated: bool,
    sites: &[Site],
    times: &mut StageTimes,
    forward: impl FnOnce(&mut dyn FnMut(Site, (Vec<f32>, u64))) -> Result<()>,
) -> Result<Calibration> {
    let t = Instant::now();
    let mut h = Hessians::for_sites(cfg, sites);
    let mut err = None;
    forward(&mut |site, g| {
        if let Err(e) = h.add_gram(site, g)
            && err.is_none()
        {
            err = Some(e);
        }
    })?;
    if let Some(e) = err {
        return Err(e.into());
    }
    times.forward += t.elapsed().as_secs_f64();
    let t = Instant::now();
    let c = Calibration::take_all(h, rotated)?;
    times.factor += t.elapsed().as_secs_f64();
    Ok(c)
}

fn raw_report(r: &Record, bytes: u64) -> TensorReport {
    TensorReport {
        name: r.name.clone(),
        n_params: r.numel(),
        bytes,
        coded: false,
        sq_error: 0.0,
        sq_signal: 0.0,
    }
}

/// Codes the tensors `names` of `src` with the calibration of their sites (per `mode`), in
/// order, handing each record to `sink`: several at once when `parallel` (a block's
/// projections), else one at a time (the large embedding and output projection).
#[allow(clippy::too_many_arguments)]
fn code_tensors(
    compressor: &Compressor<'_>,
    src: &dyn ModelSource,
    names: &[&String],
    calibration: Option<&Calibration>,
    mode: Mode,
    parallel: bool,
    times: &mut StageTimes,
    mut sink: impl FnMut(Record, TensorReport) -> Result<()>,
) -> Result<()> {
    let cfg = src.config();
    let t = Instant::now();
    let mut load_s = 0.0;
    let mut write_s = 0.0;
    nwc_pipeline::compress_in_windows(
        names.len(),
        if parallel {
            2 * rayon::current_num_threads()
        } else {
            1
        },
        |i| {
            let t = Instant::now();
            let r = src.tensor(names[i]);
            load_s += t.elapsed().as_secs_f64();
            Ok(r?)
        },
        |t| compress_llama_tensor(compressor, cfg, &t, calibration, mode),
        |_, record, report| {
            let t = Instant::now();
            let r = sink(record, report);
            write_s += t.elapsed().as_secs_f64();
            r
        },
    )?;
    times.load += load_s;
    times.write += write_s;
    times.encode += t.elapsed().as_secs_f64() - load_s - write_s;
    Ok(())
}
