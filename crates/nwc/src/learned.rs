//! The learned NWC codec behind the [`WeightCodec`] interface, generic over the burn backend.

use std::sync::Mutex;

use nwc_codec::burn::tensor::backend::Backend;
use nwc_codec::burn::tensor::{Int, Tensor, TensorData};
use nwc_codec::{Checkpoint, NwcModel};
use nwc_entropy::Table;
use nwc_format::CodecKind;

use crate::codec::{Quantized, WeightCodec};
use crate::error::{NwcError, Result};

/// Chunks per network call: bounds the memory of one forward pass.
const BATCH: usize = 1 << 16;

/// The learned codec: g_a maps each chunk to a latent, latents are rounded around the prior's
/// medians with a step chosen from the checkpoint's list (which sets the rate), and g_s maps
/// them back. Entropy tables come from the checkpoint, so records store none.
pub struct NwcCodec<B: Backend> {
    checkpoint: Checkpoint,
    model: Mutex<NwcModel<B>>,
    device: B::Device,
    step_index: usize,
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
        let model = checkpoint
            .model::<B>(device)
            .map_err(|e| NwcError::Config(e.to_string()))?;
        let step_index = checkpoint
            .steps()
            .iter()
            .enumerate()
            .min_by(|a, b| (a.1 - 1.0).abs().total_cmp(&(b.1 - 1.0).abs()))
            .map(|(i, _)| i)
            .expect("a checkpoint has steps");
        Ok(Self {
            checkpoint,
            model: Mutex::new(model),
            device: device.clone(),
            step_index,
        })
    }

    /// The checkpoint the library ships, on `device`.
    ///
    /// # Errors
    /// Never for the shipped checkpoint (its validity is tested).
    pub fn default_on(device: &B::Device) -> Result<Self> {
        let c = Checkpoint::from_bytes(nwc_codec::DEFAULT_CHECKPOINT)
            .map_err(|e| NwcError::Config(format!("shipped checkpoint: {e}")))?;
        Self::new(c, device)
    }

    /// Chooses the latent quantization step by index into [`Checkpoint::steps`]: larger steps
    /// give fewer bits and more error.
    ///
    /// # Errors
    /// [`NwcError::Config`] for an index past the list.
    pub fn with_step_index(mut self, index: usize) -> Result<Self> {
        if index >= self.checkpoint.steps().len() {
            return Err(NwcError::Config(format!(
                "step index {index}, the checkpoint has {} steps",
                self.checkpoint.steps().len()
            )));
        }
        self.step_index = index;
        Ok(self)
    }

    /// The latent quantization step in use.
    pub fn step(&self) -> f32 {
        self.checkpoint.steps()[self.step_index]
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
        let model = self
            .model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = Vec::with_capacity(input.len());
        for (x, l) in input.chunks(BATCH * chunk_len).zip(levels.chunks(BATCH)) {
            let n = l.len();
            let t = Tensor::<B, 2>::from_data(
                TensorData::new(x.to_vec(), [n, chunk_len]),
                &self.device,
            );
            let lv = self.levels_tensor(l);
            let y = if analyze {
                model.analyze(t, lv)
            } else {
                model.synthesize(t, lv)
            };
            out.extend(
                y.into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32 data"),
            );
        }
        out
    }
}

impl<B: Backend> WeightCodec for NwcCodec<B>
where
    B::Device: Send + Sync,
{
    fn kind(&self) -> CodecKind {
        CodecKind::Nwc
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
            params: (self.step_index as u32).to_le_bytes().to_vec(),
            tables: Vec::new(),
            table_map,
        })
    }

    fn fit_tables(
        &self,
        _symbols: &[i32],
        _chunk_len: usize,
        _chunk_levels: &[u8],
    ) -> Result<(Vec<Table>, Vec<u16>)> {
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
        params: &[u8],
    ) -> Result<Vec<f32>> {
        let corrupt = |reason: String| NwcError::Corrupt {
            name: name.to_string(),
            reason,
        };
        let index = <[u8; 4]>::try_from(params)
            .map(u32::from_le_bytes)
            .map_err(|_| corrupt(format!("NWC parameters of {} bytes", params.len())))?
            as usize;
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
}
