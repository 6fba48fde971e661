//! The learned NWC codec behind the pipeline's [`WeightCodec`] interface, generic over the burn
//! backend, and the [`Codecs`] registry that decodes learned-codec files from their header.

use std::sync::Mutex;

use rayon::prelude::*;

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use nwc_entropy::{ContextModel, Table};
use nwc_format::{CodecKind, Header};
use nwc_pipeline::{
    Builtin, CodecParams, CodecRegistry, NwcError, Quantized, RateControl, Result, TcqCodec,
    WeightCodec,
};

use crate::checkpoint::{AUTOENCODER_CHECKPOINT, Checkpoint, DEFAULT_CHECKPOINT};
use crate::config::Variant;
use crate::error::CodecError;
use crate::model::{NwcModel, Refiner};

/// Chunks per network call. Batches are independent (every op is per row), so they run in
/// parallel on the rayon pool; at this size one batch's activations stay in a core's cache.
/// Fixed, not derived from the thread count, so output never depends on it.
const BATCH: usize = 4096;

/// The nominal rates (bits per value, [`nwc_entropy::tcq_bits_for_step`] of a level's step) at
/// which the trellis refiner runs by default; levels outside decode as plain TCQ. Measured on
/// SmolLM2 at exact file rates with levels + LDLQ, by `llama-perplexity` against plain TCQ
/// (`docs/llm-rival.md`; level 0 sits at 1.80, 2.82 and 3.80 nominal bits in 2-, 3- and 4-bit
/// files, level 1 0.75 bits higher): refining every level loses at 2 bits (1.45×) and 4 bits
/// (1.019×) and wins at 3 (0.977×); refining only this band wins at 2 bits (0.900×, level 1
/// alone) and 3 bits (0.976×, levels 0 and 1); a band ending at 3.5 (level 1 of a 3-bit file
/// plain) gave 0.995× at 3 bits. At 4 bits nothing is refined and the file is TCQ's. On held-out
/// weights the refiner changes MSE by −1.2 % at 2 bits, −0.35 % at 2.5, −0.12 % at 3 and nothing
/// from 3.5 up (`docs/rd.md`). Outside the band it buys nothing, the record says so, and
/// decoding costs what TCQ's costs.
pub const REFINER_BITS: std::ops::RangeInclusive<f32> = 2.5..=3.75;

/// Copies of a network, one per concurrent caller: burn modules are `Send` but not `Sync`, so a
/// thread takes a copy out, runs it and puts it back (copies share their weights' storage).
struct Pool<M> {
    template: Mutex<M>,
    free: Mutex<Vec<M>>,
}

impl<M: Clone> Pool<M> {
    fn new(m: M) -> Self {
        Self {
            template: Mutex::new(m),
            free: Mutex::new(Vec::new()),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        let free = lock(&self.free).pop();
        let m = free.unwrap_or_else(|| lock(&self.template).clone());
        let r = f(&m);
        lock(&self.free).push(m);
        r
    }
}

/// A lock that survives a panic elsewhere (the data is only ever read or pushed whole).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The network a checkpoint holds.
enum Net<B: Backend> {
    Autoencoder(Box<Pool<NwcModel<B>>>),
    Refiner(Box<Pool<Refiner<B>>>),
}

/// The learned codec, in the variant its checkpoint holds:
///
/// - **Trellis refiner** (the shipped checkpoint): chunks are coded by entropy-constrained TCQ
///   ([`TcqCodec`]) at a continuous step, with tables fitted to each tensor, and decoded by the
///   learned synthesis, which corrects the trellis' grid positions given the step and the
///   quality level — on the levels whose step lies in [`REFINER_BITS`] (where it was measured
///   to pay; [`NwcCodec::with_refiner_bits`] sets another band); the other levels decode as
///   plain TCQ, at TCQ's speed. File kind [`CodecKind::NwcTrellis`].
/// - **Autoencoder** (the paper's): g_a maps each chunk to a latent, latents are rounded around
///   the prior's medians with a step chosen from the checkpoint's list (which sets the rate), and
///   g_s maps them back. Entropy tables come from the checkpoint, so records store none. File
///   kind [`CodecKind::Nwc`].
pub struct NwcCodec<B: Backend> {
    checkpoint: Checkpoint,
    net: Net<B>,
    device: B::Device,
    step_index: usize,
    tcq: TcqCodec,
    /// The refiner as plain `f32` matrix products, on burn's CPU backend (`NdArray`), where it
    /// replaces the tensor-per-operation forward pass.
    cpu: Option<crate::cpu_refiner::CpuRefiner>,
    /// Nominal rates at which the refiner runs ([`REFINER_BITS`] unless set).
    refiner_bits: std::ops::RangeInclusive<f32>,
}

impl<B: Backend> std::fmt::Debug for NwcCodec<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NwcCodec")
            .field("checkpoint", &self.checkpoint)
            .field("step", &self.step())
            .finish()
    }
}

impl<B: Backend> NwcCodec<B> {
    /// A codec from a checkpoint, on `device`, at the step closest to 1 (the trained rate).
    ///
    /// # Errors
    /// [`NwcError::Config`] when the checkpoint's latent is not one symbol per weight.
    pub fn new(checkpoint: Checkpoint, device: &B::Device) -> Result<Self> {
        let cfg = checkpoint.config();
        if cfg.latent != cfg.chunk_len {
            return Err(NwcError::Config(format!(
                "latent {} ≠ chunk length {}: the container codes one symbol per weight",
                cfg.latent, cfg.chunk_len
            )));
        }
        let config = |e: CodecError| NwcError::Config(e.to_string());
        let net = match cfg.variant {
            Variant::Autoencoder => Net::Autoencoder(Box::new(Pool::new(
                checkpoint.model::<B>(device).map_err(config)?,
            ))),
            Variant::TrellisRefiner => Net::Refiner(Box::new(Pool::new(
                checkpoint.refiner::<B>(device).map_err(config)?,
            ))),
        };
        let step_index = checkpoint
            .steps()
            .iter()
            .enumerate()
            .min_by(|a, b| (a.1 - 1.0).abs().total_cmp(&(b.1 - 1.0).abs()))
            .map_or(0, |(i, _)| i);
        // The refiner's TCQ runs must be whole network chunks.
        let run = (nwc_pipeline::DEFAULT_TCQ_RUN / cfg.chunk_len).max(1) * cfg.chunk_len;
        let tcq = TcqCodec::for_bits(4.0)?.run_len(run.min(64))?;
        let on_cpu =
            std::any::TypeId::of::<B>() == std::any::TypeId::of::<burn::backend::NdArray>();
        let cpu = match &net {
            Net::Refiner(pool) if on_cpu => Some(pool.with(crate::cpu_refiner::CpuRefiner::of)),
            _ => None,
        };
        Ok(Self {
            checkpoint,
            net,
            device: device.clone(),
            step_index,
            tcq,
            cpu,
            refiner_bits: REFINER_BITS,
        })
    }

    /// Runs the trellis refiner on the levels whose step's nominal rate
    /// ([`nwc_entropy::tcq_bits_for_step`]) lies in `bits`; the other levels are coded and
    /// decoded as plain TCQ, and each record says which levels are refined. The default is
    /// [`REFINER_BITS`]; `0.0..=f32::INFINITY` refines every level (the files of earlier
    /// versions), an empty range none.
    pub fn with_refiner_bits(mut self, bits: std::ops::RangeInclusive<f32>) -> Self {
        self.refiner_bits = bits;
        self
    }

    /// Which levels the refiner runs on at level steps `steps` (bit `l` for level `l`).
    pub fn refined_levels(&self, steps: &[f32; 4]) -> u8 {
        steps
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                self.refiner_bits
                    .contains(&nwc_entropy::tcq_bits_for_step(**s))
            })
            .fold(0, |m, (l, _)| m | 1 << l)
    }

    /// Whether the checkpoint holds the trellis refiner (continuous rate control, TCQ-coded).
    pub fn is_trellis(&self) -> bool {
        matches!(self.net, Net::Refiner(_))
    }

    /// The trellis variant at fine step `step` for level 0 (the rate control: larger steps give
    /// fewer bits).
    ///
    /// # Errors
    /// [`NwcError::Config`] for the autoencoder variant (its steps are the checkpoint's list:
    /// [`NwcCodec::with_step_index`]) or a step that is not finite and positive.
    pub fn with_step(mut self, step: f32) -> Result<Self> {
        if !self.is_trellis() {
            return Err(NwcError::Config(
                "the autoencoder checkpoint has discrete steps: use with_step_index".into(),
            ));
        }
        self.tcq = self.tcq.with_level0_step(step)?;
        Ok(self)
    }

    /// The checkpoint the library ships, on `device`.
    ///
    /// # Errors
    /// Never for the shipped checkpoint (its validity is tested).
    pub fn default_on(device: &B::Device) -> Result<Self> {
        let c = Checkpoint::from_bytes(DEFAULT_CHECKPOINT)
            .map_err(|e| NwcError::Config(format!("shipped checkpoint: {e}")))?;
        Self::new(c, device)
    }

    /// Chooses the latent quantization step by index into [`Checkpoint::steps`]: larger steps
    /// give fewer bits and more error.
    ///
    /// # Errors
    /// [`NwcError::Config`] for an index past the list.
    pub fn with_step_index(mut self, index: usize) -> Result<Self> {
        if self.is_trellis() {
            return Err(NwcError::Config(
                "the trellis checkpoint has a continuous step: use with_step".into(),
            ));
        }
        if index >= self.checkpoint.steps().len() {
            return Err(NwcError::Config(format!(
                "step index {index}, the checkpoint has {} steps",
                self.checkpoint.steps().len()
            )));
        }
        self.step_index = index;
        Ok(self)
    }

    /// The quantization step in use: the latent step (autoencoder) or the level-0 fine step of
    /// the trellis.
    pub fn step(&self) -> f32 {
        match self.net {
            Net::Autoencoder(_) => self.checkpoint.steps()[self.step_index],
            Net::Refiner(_) => self.tcq.steps()[0],
        }
    }

    /// The device the network runs on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Estimated coded bits per value at every latent step of the checkpoint, for normalized
    /// chunks `sample` (level 0): the analysis transform runs once, then each step's rounding is
    /// priced with its own tables. Side information (scales, headers) is not included.
    ///
    /// # Errors
    /// [`NwcError::Config`] when `sample` is empty or not whole chunks.
    pub fn rates_per_step(&self, sample: &[f32]) -> Result<Vec<f64>> {
        if self.is_trellis() {
            return Err(NwcError::Config(
                "the trellis checkpoint has a continuous step: use nwc::tune_to_rate".into(),
            ));
        }
        let c = self.checkpoint.config().latent;
        if sample.is_empty() || !sample.len().is_multiple_of(c) {
            return Err(NwcError::Config(format!(
                "{} sample values are not whole chunks of {c}",
                sample.len()
            )));
        }
        let levels = vec![0u8; sample.len() / c];
        let y = self.run(sample, c, &levels, true);
        let medians = self.checkpoint.medians();
        let tables = self.checkpoint.tables();
        Ok(self
            .checkpoint
            .steps()
            .iter()
            .enumerate()
            .map(|(i, &step)| {
                let bits: f64 = y
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| {
                        let q = ((v - medians[k % c]) / step).round() as i32;
                        tables[i * c + k % c].cost_bits(q)
                    })
                    .sum();
                bits / sample.len() as f64
            })
            .collect())
    }

    /// The latent step index whose estimated rate on `sample` is closest to `bits` per value.
    ///
    /// # Errors
    /// As [`NwcCodec::rates_per_step`].
    pub fn step_index_for_rate(&self, sample: &[f32], bits: f64) -> Result<usize> {
        let rates = self.rates_per_step(sample)?;
        Ok(rates
            .iter()
            .enumerate()
            .min_by(|a, b| (a.1 - bits).abs().total_cmp(&(b.1 - bits).abs()))
            .map(|(i, _)| i)
            .unwrap_or(0))
    }

    fn levels_tensor(&self, levels: &[u8]) -> Tensor<B, 1, Int> {
        let v: Vec<i64> = levels.iter().map(|&l| i64::from(l)).collect();
        Tensor::from_data(TensorData::new(v, [levels.len()]), &self.device)
    }

    fn run(&self, input: &[f32], chunk_len: usize, levels: &[u8], analyze: bool) -> Vec<f32> {
        let Net::Autoencoder(pool) = &self.net else {
            unreachable!("run is only called for the autoencoder");
        };
        let batches: Vec<Vec<f32>> = input
            .par_chunks(BATCH * chunk_len)
            .zip(levels.par_chunks(BATCH))
            .map(|(x, l)| {
                pool.with(|model| {
                    let t = Tensor::<B, 2>::from_data(
                        TensorData::new(x.to_vec(), [l.len(), chunk_len]),
                        &self.device,
                    );
                    let lv = self.levels_tensor(l);
                    let y = if analyze {
                        model.analyze(t, lv)
                    } else {
                        model.synthesize(t, lv)
                    };
                    y.into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .expect("f32 data")
                })
            })
            .collect();
        batches.concat()
    }

    /// The refiner's decode: grid positions (in steps) of `l`-value network chunks, with their
    /// steps and levels, to normalized values.
    fn refine(&self, j: &[f32], steps: &[f32], levels: &[u8]) -> Vec<f32> {
        let Net::Refiner(pool) = &self.net else {
            unreachable!("refine is only called for the refiner");
        };
        let l = self.checkpoint.config().chunk_len;
        if let Some(cpu) = &self.cpu {
            let mut v = cpu.forward(j, steps, levels);
            v.par_chunks_mut(l * BATCH)
                .zip(steps.par_chunks(BATCH))
                .for_each(|(v, s)| {
                    for (c, &st) in v.chunks_mut(l).zip(s) {
                        c.iter_mut().for_each(|q| *q *= st);
                    }
                });
            return v;
        }
        let batches: Vec<Vec<f32>> = j
            .par_chunks(BATCH * l)
            .zip(steps.par_chunks(BATCH))
            .zip(levels.par_chunks(BATCH))
            .map(|((x, s), lv)| {
                let n = s.len();
                let v = pool.with(|model| {
                    let jt = Tensor::<B, 2>::from_data(
                        TensorData::new(x.to_vec(), [n, l]),
                        &self.device,
                    );
                    let st =
                        Tensor::<B, 1>::from_data(TensorData::new(s.to_vec(), [n]), &self.device);
                    model
                        .forward(jt, st, self.levels_tensor(lv))
                        .into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .expect("f32 data")
                });
                v.chunks(l)
                    .zip(s)
                    .flat_map(|(c, &st)| c.iter().map(move |&q| q * st))
                    .collect()
            })
            .collect();
        batches.concat()
    }
}

impl<B: Backend> WeightCodec for NwcCodec<B>
where
    B::Device: Send + Sync,
{
    fn kind(&self) -> CodecKind {
        match self.net {
            Net::Autoencoder(_) => CodecKind::Nwc,
            Net::Refiner(_) => CodecKind::NwcTrellis,
        }
    }

    fn preferred_chunk_len(&self) -> Option<usize> {
        match self.net {
            Net::Autoencoder(_) => None,
            Net::Refiner(_) => self.tcq.preferred_chunk_len(),
        }
    }

    fn contexts(&self) -> Option<&ContextModel> {
        match self.net {
            Net::Autoencoder(_) => None,
            Net::Refiner(_) => self.tcq.contexts(),
        }
    }

    fn checkpoint_hash(&self) -> [u8; 32] {
        self.checkpoint.hash()
    }

    fn n_levels(&self) -> usize {
        self.checkpoint.config().levels
    }

    fn tables(&self) -> &[Table] {
        self.checkpoint.tables()
    }

    fn quantize(
        &self,
        name: &str,
        chunks: &[f32],
        chunk_len: usize,
        chunk_levels: &[u8],
    ) -> Result<Quantized> {
        if self.is_trellis() {
            // The analysis side of the trellis variant is the trellis search itself.
            self.check_trellis_chunks(chunk_len)?;
            let mut q = self.tcq.quantize(name, chunks, chunk_len, chunk_levels)?;
            let steps = q.params.steps(name)?;
            let refine = self.refined_levels(&steps);
            if refine != 0b1111 {
                q.params = CodecParams::TrellisSteps { steps, refine };
            }
            return Ok(q);
        }
        let c = self.checkpoint.config().latent;
        if chunk_len != self.checkpoint.config().chunk_len {
            return Err(NwcError::Config(format!(
                "chunk length {chunk_len}, the codec needs {}",
                self.checkpoint.config().chunk_len
            )));
        }
        let y = self.run(chunks, chunk_len, chunk_levels, true);
        let medians = self.checkpoint.medians();
        let step = self.step();
        let symbols = y
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let q = ((v - medians[i % c]) / step).round();
                if q.is_finite() && q.abs() <= (1u32 << 30) as f32 {
                    Ok(q as i32)
                } else {
                    Err(NwcError::Unrepresentable {
                        name: name.to_string(),
                        reason: format!("latent {v} cannot be quantized"),
                    })
                }
            })
            .collect::<Result<Vec<i32>>>()?;
        let (_, table_map) = self.fit_tables(&symbols, chunk_len, chunk_levels)?;
        Ok(Quantized {
            symbols,
            params: CodecParams::StepIndex(self.step_index as u32),
            tables: Vec::new(),
            table_map,
        })
    }

    fn fit_tables(
        &self,
        symbols: &[i32],
        chunk_len: usize,
        chunk_levels: &[u8],
    ) -> Result<(Vec<Table>, Vec<u16>)> {
        if self.is_trellis() {
            return self.tcq.fit_tables(symbols, chunk_len, chunk_levels);
        }
        // The checkpoint's tables for the latent step in use, one per latent channel.
        let c = self.checkpoint.config().latent;
        let base = (self.step_index * c) as u16;
        let table_map = (0..self.n_levels())
            .flat_map(|_| (0..c as u16).map(move |i| base + i))
            .collect();
        Ok((Vec::new(), table_map))
    }

    fn dequantize(
        &self,
        name: &str,
        symbols: &[i32],
        chunk_len: usize,
        chunk_levels: &[u8],
        params: &CodecParams,
    ) -> Result<Vec<f32>> {
        let corrupt = |reason: String| NwcError::Corrupt {
            name: name.to_string(),
            reason,
        };
        if self.is_trellis() {
            self.check_trellis_chunks(chunk_len)
                .map_err(|e| corrupt(e.to_string()))?;
            if symbols.len() != chunk_levels.len() * chunk_len {
                return Err(corrupt(format!(
                    "{} symbols for {} chunks of {chunk_len}",
                    symbols.len(),
                    chunk_levels.len()
                )));
            }
            let refine = params.refined_levels();
            if refine == 0 {
                return self
                    .tcq
                    .dequantize(name, symbols, chunk_len, chunk_levels, params);
            }
            // Grid positions in steps (the TCQ decode at unit steps), then the refiner on the
            // refined levels' network chunks.
            nwc_pipeline::check_levels(name, chunk_levels)?;
            let steps = params.steps(name)?;
            let mut grid = self.tcq.grid(symbols, chunk_len);
            let l = self.checkpoint.config().chunk_len;
            let per = chunk_len / l;
            let sub_levels: Vec<u8> = chunk_levels
                .iter()
                .flat_map(|&lv| std::iter::repeat_n(lv, per))
                .collect();
            let step_of = |lv: u8| steps[usize::from(lv)];
            let refined = |lv: u8| refine & (1 << lv) != 0;
            if refine == 0b1111 {
                let sub_steps: Vec<f32> = sub_levels.iter().map(|&lv| step_of(lv)).collect();
                return Ok(self.refine(&grid, &sub_steps, &sub_levels));
            }
            let picked: Vec<usize> = (0..sub_levels.len())
                .filter(|&i| refined(sub_levels[i]))
                .collect();
            let j: Vec<f32> = picked
                .iter()
                .flat_map(|&i| grid[i * l..(i + 1) * l].iter().copied())
                .collect();
            let lv: Vec<u8> = picked.iter().map(|&i| sub_levels[i]).collect();
            let st: Vec<f32> = lv.iter().map(|&v| step_of(v)).collect();
            let out = self.refine(&j, &st, &lv);
            grid.par_chunks_mut(l)
                .zip(sub_levels.par_iter())
                .filter(|(_, lv)| !refined(**lv))
                .for_each(|(c, &lv)| c.iter_mut().for_each(|v| *v *= step_of(lv)));
            for (k, &i) in picked.iter().enumerate() {
                grid[i * l..(i + 1) * l].copy_from_slice(&out[k * l..(k + 1) * l]);
            }
            return Ok(grid);
        }
        let CodecParams::StepIndex(index) = *params else {
            return Err(corrupt(format!("expected a step index, found {params:?}")));
        };
        let index = index as usize;
        let step = *self
            .checkpoint
            .steps()
            .get(index)
            .ok_or_else(|| corrupt(format!("step index {index}")))?;
        let c = self.checkpoint.config().latent;
        if chunk_len != c {
            return Err(corrupt(format!(
                "chunk length {chunk_len}, the codec needs {c}"
            )));
        }
        let medians = self.checkpoint.medians();
        let y_hat: Vec<f32> = symbols
            .iter()
            .enumerate()
            .map(|(i, &q)| q as f32 * step + medians[i % c])
            .collect();
        Ok(self.run(&y_hat, chunk_len, chunk_levels, false))
    }

    fn chunk_dequantizer<'a>(
        &'a self,
        name: &str,
        chunk_levels: &[u8],
        params: &CodecParams,
    ) -> Result<Option<nwc_pipeline::ChunkDequantizer<'a>>> {
        // Records without a refined level decode exactly as TCQ, chunk by chunk.
        if self.is_trellis() && params.refined_levels() == 0 {
            return self.tcq.chunk_dequantizer(name, chunk_levels, params);
        }
        Ok(None)
    }
}

impl<B: Backend> NwcCodec<B> {
    fn check_trellis_chunks(&self, chunk_len: usize) -> Result<()> {
        let l = self.checkpoint.config().chunk_len;
        if chunk_len == 0 || !chunk_len.is_multiple_of(l) {
            return Err(NwcError::Config(format!(
                "chunk length {chunk_len} is not a multiple of the network's {l}"
            )));
        }
        Ok(())
    }
}

impl<B: Backend> RateControl for NwcCodec<B>
where
    B::Device: Send + Sync,
{
    fn log2_step(&self) -> f32 {
        self.step().log2()
    }

    fn with_log2_step(&self, log2_step: f32) -> Result<Self> {
        Ok(NwcCodec::new(self.checkpoint().clone(), self.device())?
            .with_step(log2_step.exp2())?
            .with_refiner_bits(self.refiner_bits.clone()))
    }
}

/// Every codec this build can decode from a file header, on backend `B`'s `device`: the
/// pipeline's [`Builtin`] ones and the learned codec (the checkpoint this crate embeds, matched
/// by hash, or a checkpoint file the caller supplies).
#[derive(Debug, Clone, Default)]
pub struct Codecs<B: Backend> {
    device: B::Device,
}

impl<B: Backend> Codecs<B> {
    /// The registry for decoding on `device`.
    pub fn on(device: &B::Device) -> Self {
        Self {
            device: device.clone(),
        }
    }
}

impl<B: Backend> CodecRegistry for Codecs<B>
where
    B::Device: Send + Sync,
{
    fn decoder(&self, h: &Header, checkpoint: Option<&Path>) -> Result<Box<dyn WeightCodec>> {
        if !matches!(h.codec, CodecKind::Nwc | CodecKind::NwcTrellis) {
            return Builtin.decoder(h, checkpoint);
        }
        let (c, what) = match checkpoint {
            Some(path) => (
                Checkpoint::load(path).map_err(|e| NwcError::InFile {
                    path: path.to_path_buf(),
                    source: Box::new(NwcError::Model(Box::new(e))),
                })?,
                format!("{} is", path.display()),
            ),
            None => {
                let bytes = if h.codec == CodecKind::Nwc {
                    AUTOENCODER_CHECKPOINT
                } else {
                    DEFAULT_CHECKPOINT
                };
                let c = Checkpoint::from_bytes(bytes)
                    .map_err(|e| NwcError::Config(format!("shipped checkpoint: {e}")))?;
                (c, "this build carries".to_string())
            }
        };
        let codec = NwcCodec::<B>::new(c, &self.device)?;
        if codec.checkpoint_hash() != h.codec_hash {
            return Err(NwcError::CodecMismatch(format!(
                "the file needs the NWC checkpoint {}, {what} {}",
                hex::encode(h.codec_hash),
                hex::encode(codec.checkpoint_hash())
            )));
        }
        Ok(Box::new(codec))
    }
}
