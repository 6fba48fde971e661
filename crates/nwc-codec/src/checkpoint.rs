//! Checkpoints: the trained network's parameters (f16), its configuration, and the integer
//! entropy tables exported from its prior, in one versioned, hashed byte string.
//!
//! The byte layout is specified in `docs/checkpoint.md`. In short (all little-endian):
//!
//! ```text
//! magic "NWCCKPT\0" | u32 version (1, 2 or 3)
//! version ≥ 2: u32 variant (0 autoencoder, 1 trellis refiner); version 1 is an autoencoder
//! config: u32 chunk_len, latent, width, blocks, levels, n_filters, filters[n_filters]
//! f32 lambda (the rate–distortion weight it was trained with) | u64 train_steps
//! u32 n_params; per parameter: version 3: u16 name_len, name (UTF-8 module path);
//!                              u8 ndim, u32 dims[ndim], f16 values
//! autoencoder only:
//!   u32 n_steps; f32 steps[n_steps]; f32 medians[latent]
//!   per step, per channel: a table (i32 min_symbol, u8 precision, u16 n_freqs, u16 freqs[n_freqs])
//! ```
//!
//! Version 3 (written now) names every parameter by its module path (`g_s.blocks.0.fc1.weight`)
//! and loads it by name: a missing, unknown, repeated or misshapen name is an error, so
//! swapped sub-networks cannot load silently. Versions 1 and 2 (the shipped checkpoints, whose
//! hashes identify existing files) are in the module's visit order and load by position,
//! each parameter checked against the shape the configuration's model expects.
//!
//! The checkpoint's identity is the SHA-256 of these bytes; `.nwc` files record it, and a decoder
//! refuses a file made with another checkpoint.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use half::f16;
use nwc_entropy::{FactorizedPrior, Table};
use sha2::{Digest, Sha256};

use crate::config::{CodecConfig, Variant};
use crate::error::{CodecError, Result};
use crate::model::{NwcModel, Refiner};

/// The checkpoint the library ships and uses by default: the small trellis refiner
/// ([`crate::config::Variant::TrellisRefiner`]) trained on real weights by `cargo xtask train --refiner`
/// (see `docs/training.md` for the exact command and log).
pub const DEFAULT_CHECKPOINT: &[u8] = include_bytes!("../assets/default.ckpt");
/// The paper's autoencoder ([`crate::config::Variant::Autoencoder`]), small configuration, the default until
/// the trellis refiner replaced it; kept so files made with it still decode.
pub const AUTOENCODER_CHECKPOINT: &[u8] = include_bytes!("../assets/autoencoder.ckpt");

const MAGIC: &[u8; 8] = b"NWCCKPT\0";
const VERSION: u32 = 3;

/// Latent quantization steps a checkpoint exports tables for: one model, several rates.
pub const DEFAULT_STEPS: [f32; 12] = [
    0.18, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0,
];

/// A loaded checkpoint.
#[derive(Clone)]
pub struct Checkpoint {
    config: CodecConfig,
    lambda: f32,
    train_steps: u64,
    params: Vec<(Vec<usize>, Vec<f16>)>,
    steps: Vec<f32>,
    medians: Vec<f32>,
    tables: Vec<Table>,
    bytes: Vec<u8>,
    hash: [u8; 32],
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("config", &self.config)
            .field("lambda", &self.lambda)
            .field("train_steps", &self.train_steps)
            .field("params", &self.params.len())
            .field("steps", &self.steps)
            .field("hash", &hex(&self.hash))
            .finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every float parameter of a module with its path (`g_s.blocks.0.fc1.weight`), in visit order.
#[derive(Default)]
struct Collect {
    path: Vec<String>,
    params: Vec<(String, Vec<usize>, Vec<f32>)>,
    /// Shapes only: leave the values empty.
    shapes_only: bool,
}

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let dims = t.dims().to_vec();
        let v = if self.shapes_only {
            Vec::new()
        } else {
            t.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 data")
        };
        self.params.push((self.path.join("."), dims, v));
    }
}

struct Load<'a, B: Backend> {
    params: std::slice::Iter<'a, (Vec<usize>, Vec<f16>)>,
    device: B::Device,
    error: Option<String>,
}

impl<B: Backend> ModuleMapper<B> for Load<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        match self.params.next() {
            Some((shape, values)) if shape.as_slice() == dims.as_slice() => {
                let v: Vec<f32> = values.iter().map(|h| h.to_f32()).collect();
                let t = Tensor::from_data(TensorData::new(v, dims), &self.device);
                Param::from_mapped_value(id, t, mapper)
            }
            other => {
                self.error.get_or_insert(format!(
                    "parameter of shape {dims:?} found {:?} in the checkpoint",
                    other.map(|(s, _)| s)
                ));
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

/// The checkpoint's view of the one byte cursor ([`nwc_tensor::Cursor`]): running out of bytes
/// is a [`CodecError::CorruptCheckpoint`] saying where.
struct Reader<'a>(nwc_tensor::Cursor<'a>);

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self(nwc_tensor::Cursor::new(b, "checkpoint"))
    }
    fn pos(&self) -> usize {
        self.0.position()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        self.0.take(n as u64).map_err(corrupt)
    }
    fn u8(&mut self) -> Result<u8> {
        self.0.u8().map_err(corrupt)
    }
    fn u16(&mut self) -> Result<u16> {
        self.0.u16().map_err(corrupt)
    }
    fn u32(&mut self) -> Result<u32> {
        self.0.u32().map_err(corrupt)
    }
    fn i32(&mut self) -> Result<i32> {
        self.0.i32().map_err(corrupt)
    }
    fn u64(&mut self) -> Result<u64> {
        self.0.u64().map_err(corrupt)
    }
    fn f32(&mut self) -> Result<f32> {
        self.0.f32().map_err(corrupt)
    }
    /// A count whose items take at least `min_bytes` each: refused when it cannot fit.
    fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes.max(1)) as u64 > self.0.remaining() {
            return Err(CodecError::CorruptCheckpoint(format!(
                "count {n} exceeds the data"
            )));
        }
        Ok(n)
    }
}

fn corrupt(e: nwc_tensor::TensorError) -> CodecError {
    CodecError::CorruptCheckpoint(match e {
        nwc_tensor::TensorError::Malformed { reason, .. } => reason,
        e => e.to_string(),
    })
}

impl Checkpoint {
    /// Exports a model: parameters rounded to f16, and for each quantization step the integer
    /// tables of every latent channel, built from the *stored* (f16-rounded) prior parameters.
    ///
    /// # Errors
    /// [`CodecError::Entropy`] when the prior does not yield valid tables (an untrained prior
    /// with too wide quantiles at a tiny step, for example).
    pub fn from_model<B: Backend>(
        model: &NwcModel<B>,
        config: &CodecConfig,
        lambda: f32,
        train_steps: u64,
        steps: &[f32],
    ) -> Result<Self> {
        if config.variant != Variant::Autoencoder {
            return Err(CodecError::Config(
                "an autoencoder checkpoint needs an autoencoder configuration".into(),
            ));
        }
        let mut c = Collect::default();
        model.visit(&mut c);
        let (mut b, params) = encode_params(config, lambda, train_steps, c.params);
        // Tables from the stored (f16-rounded) parameters, so a loaded checkpoint reproduces them
        // exactly.
        let prior = FactorizedPrior::new(&prior_params_from(config, &params)?)?;
        let medians = prior.medians();
        b.extend((steps.len() as u32).to_le_bytes());
        for s in steps {
            b.extend(s.to_le_bytes());
        }
        for m in &medians {
            b.extend(m.to_le_bytes());
        }
        for &s in steps {
            for ch in 0..config.latent {
                let t = prior.table_with_step(ch, f64::from(s), nwc_entropy::DEFAULT_PRECISION)?;
                b.extend(t.min_symbol().to_le_bytes());
                b.push(t.precision() as u8);
                b.extend((t.freqs().len() as u16).to_le_bytes());
                for f in t.freqs() {
                    b.extend(f.to_le_bytes());
                }
            }
        }
        Self::from_bytes(&b)
    }

    /// Exports a trained trellis refiner (parameters rounded to f16). It carries no tables: the
    /// trellis-coded variant fits its tables to each tensor.
    ///
    /// # Errors
    /// [`CodecError::Config`] unless `config` is a refiner configuration.
    pub fn from_refiner<B: Backend>(
        model: &Refiner<B>,
        config: &CodecConfig,
        train_steps: u64,
    ) -> Result<Self> {
        if config.variant != Variant::TrellisRefiner {
            return Err(CodecError::Config(
                "a refiner checkpoint needs a refiner configuration".into(),
            ));
        }
        let mut c = Collect::default();
        model.visit(&mut c);
        let (b, _) = encode_params(config, 0.0, train_steps, c.params);
        Self::from_bytes(&b)
    }

    #[allow(clippy::type_complexity)]
    fn parse_params(
        b: &[u8],
    ) -> Result<(CodecConfig, f32, u64, Vec<(Vec<usize>, Vec<f16>)>, usize)> {
        let (config, lambda, train_steps, named, pos) = Self::parse_named_params(b)?;
        let expected = expected_shapes(&config);
        let bad = |m: String| CodecError::CorruptCheckpoint(m);
        let params = if named.iter().all(|(n, ..)| n.is_none()) {
            // Versions 1 and 2: visit order, checked shape by shape.
            if expected.len() != named.len()
                || expected
                    .iter()
                    .zip(&named)
                    .any(|((_, e), (_, d, _))| e != d)
            {
                return Err(bad("parameters do not match the configuration".into()));
            }
            named.into_iter().map(|(_, d, v)| (d, v)).collect()
        } else {
            // Version 3: by name, placed into the model's visit order.
            let mut by_name = std::collections::HashMap::new();
            for (n, d, v) in named {
                let n = n.unwrap_or_default();
                if by_name.insert(n.clone(), (d, v)).is_some() {
                    return Err(bad(format!("parameter {n} appears twice")));
                }
            }
            let mut params = Vec::with_capacity(expected.len());
            for (name, shape) in &expected {
                let (d, v) = by_name
                    .remove(name)
                    .ok_or_else(|| bad(format!("parameter {name} is missing")))?;
                if &d != shape {
                    return Err(bad(format!(
                        "parameter {name} has shape {d:?}, the configuration's model {shape:?}"
                    )));
                }
                params.push((d, v));
            }
            if let Some(extra) = by_name.keys().min() {
                return Err(bad(format!("unknown parameter {extra}")));
            }
            params
        };
        Ok((config, lambda, train_steps, params, pos))
    }

    #[allow(clippy::type_complexity)]
    fn parse_named_params(
        b: &[u8],
    ) -> Result<(
        CodecConfig,
        f32,
        u64,
        Vec<(Option<String>, Vec<usize>, Vec<f16>)>,
        usize,
    )> {
        let mut r = Reader::new(b);
        if r.take(8)? != MAGIC {
            return Err(CodecError::CorruptCheckpoint(
                "wrong magic (not an nwc checkpoint)".into(),
            ));
        }
        let version = r.u32()?;
        let variant = match version {
            1 => Variant::Autoencoder,
            2 | 3 => {
                let code = r.u32()?;
                Variant::from_code(code).ok_or_else(|| {
                    CodecError::CorruptCheckpoint(format!("network variant {code}"))
                })?
            }
            v => return Err(CodecError::UnsupportedVersion(v)),
        };
        let mut v = [0usize; 6];
        for x in &mut v {
            *x = r.u32()? as usize;
        }
        if v[5] > 8 {
            return Err(CodecError::CorruptCheckpoint(format!("{} filters", v[5])));
        }
        let filters = (0..v[5])
            .map(|_| r.u32().map(|f| f as usize))
            .collect::<Result<Vec<_>>>()?;
        let config = CodecConfig {
            variant,
            chunk_len: v[0],
            latent: v[1],
            width: v[2],
            blocks: v[3],
            levels: v[4],
            filters,
        };
        config
            .validate()
            .map_err(|e| CodecError::CorruptCheckpoint(e.to_string()))?;
        let lambda = r.f32()?;
        let train_steps = r.u64()?;
        let n = r.count(3)?;
        let mut params = Vec::with_capacity(n);
        for _ in 0..n {
            let name = if version >= 3 {
                let len = usize::from(r.u16()?);
                let raw = r.take(len)?;
                Some(
                    std::str::from_utf8(raw)
                        .map_err(|_| {
                            CodecError::CorruptCheckpoint("parameter name is not UTF-8".into())
                        })?
                        .to_string(),
                )
            } else {
                None
            };
            let ndim = usize::from(r.u8()?);
            if ndim > 4 {
                return Err(CodecError::CorruptCheckpoint(format!("{ndim}-d parameter")));
            }
            let dims = (0..ndim)
                .map(|_| r.u32().map(|d| d as usize))
                .collect::<Result<Vec<_>>>()?;
            let numel = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let raw = r.take(numel.and_then(|n| n.checked_mul(2)).ok_or_else(|| {
                CodecError::CorruptCheckpoint("parameter size overflows".into())
            })?)?;
            let vals = raw
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]))
                .collect();
            params.push((name, dims, vals));
        }
        Ok((config, lambda, train_steps, params, r.pos()))
    }

    /// Parses and validates a checkpoint.
    ///
    /// # Errors
    /// [`CodecError::CorruptCheckpoint`] or [`CodecError::UnsupportedVersion`]; never panics.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (config, lambda, train_steps, params, pos) = Self::parse_params(bytes)?;
        if params.iter().flat_map(|(_, v)| v).any(|x| !x.is_finite()) {
            return Err(CodecError::CorruptCheckpoint("non-finite parameter".into()));
        }
        let mut r = Reader::new(bytes);
        r.take(pos)?;
        let refiner = config.variant == Variant::TrellisRefiner;
        let n_steps = if refiner { 0 } else { r.count(4)? };
        let steps = (0..n_steps).map(|_| r.f32()).collect::<Result<Vec<_>>>()?;
        if (steps.is_empty() && !refiner) || steps.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(CodecError::CorruptCheckpoint(format!("steps {steps:?}")));
        }
        let medians = (0..if refiner { 0 } else { config.latent })
            .map(|_| r.f32())
            .collect::<Result<Vec<_>>>()?;
        if medians.iter().any(|m| !m.is_finite()) {
            return Err(CodecError::CorruptCheckpoint("non-finite median".into()));
        }
        let mut tables = Vec::with_capacity(n_steps * config.latent);
        for _ in 0..n_steps * config.latent {
            let min = r.i32()?;
            let precision = u32::from(r.u8()?);
            let n = usize::from(r.u16()?);
            let raw = r.take(2 * n)?;
            let freqs = raw
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            tables.push(Table::from_freqs(min, precision, freqs)?);
        }
        if r.pos() != bytes.len() {
            return Err(CodecError::CorruptCheckpoint(format!(
                "{} trailing bytes",
                bytes.len() - r.pos()
            )));
        }
        // The parameters fit the configuration's model exactly (checked in `parse_params`).
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        Ok(Self {
            config,
            lambda,
            train_steps,
            params,
            steps,
            medians,
            tables,
            bytes: bytes.to_vec(),
            hash,
        })
    }

    /// Reads a checkpoint file.
    ///
    /// # Errors
    /// [`CodecError::Io`] or as [`Checkpoint::from_bytes`].
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| CodecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }

    /// Writes the checkpoint to a file.
    ///
    /// # Errors
    /// [`CodecError::Io`].
    pub fn save(&self, path: impl AsRef<std::path::Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, &self.bytes).map_err(|source| CodecError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The network's configuration.
    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    /// The λ it was trained with.
    pub fn lambda(&self) -> f32 {
        self.lambda
    }

    /// Optimizer steps it was trained for.
    pub fn train_steps(&self) -> u64 {
        self.train_steps
    }

    /// SHA-256 of the checkpoint bytes: its identity in `.nwc` files.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// The checkpoint's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Latent quantization steps with exported tables.
    pub fn steps(&self) -> &[f32] {
        &self.steps
    }

    /// Channel medians (latents are coded as `round((y − median) / step)`).
    pub fn medians(&self) -> &[f32] {
        &self.medians
    }

    /// All tables: `steps().len() × latent`, table of step `s`, channel `c` at `s · latent + c`.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// Instantiates the network on `device` with the stored (f16) parameters.
    ///
    /// # Errors
    /// [`CodecError::CorruptCheckpoint`] if a parameter does not fit (cannot happen for a
    /// checkpoint that passed [`Checkpoint::from_bytes`]).
    pub fn model<B: Backend>(&self, device: &B::Device) -> Result<NwcModel<B>> {
        if self.config.variant != Variant::Autoencoder {
            return Err(CodecError::Config(
                "the checkpoint holds a trellis refiner, not an autoencoder".into(),
            ));
        }
        self.load_params(NwcModel::<B>::new(&self.config, device), device)
    }

    /// Instantiates the trellis refiner on `device` with the stored (f16) parameters.
    ///
    /// # Errors
    /// [`CodecError::Config`] when the checkpoint holds an autoencoder.
    pub fn refiner<B: Backend>(&self, device: &B::Device) -> Result<Refiner<B>> {
        if self.config.variant != Variant::TrellisRefiner {
            return Err(CodecError::Config(
                "the checkpoint holds an autoencoder, not a trellis refiner".into(),
            ));
        }
        self.load_params(Refiner::<B>::new(&self.config, device), device)
    }

    fn load_params<B: Backend, M: Module<B>>(&self, model: M, device: &B::Device) -> Result<M> {
        let mut load = Load::<B> {
            params: self.params.iter(),
            device: device.clone(),
            error: None,
        };
        let model = model.map(&mut load);
        match load.error {
            Some(e) => Err(CodecError::CorruptCheckpoint(e)),
            None => Ok(model),
        }
    }
}

/// Path and shape of every parameter of a model with `config`, in visit order.
fn expected_shapes(config: &CodecConfig) -> Vec<(String, Vec<usize>)> {
    use burn::backend::NdArray;
    let mut s = Collect {
        shapes_only: true,
        ..Collect::default()
    };
    match config.variant {
        Variant::Autoencoder => NwcModel::<NdArray>::new(config, &Default::default()).visit(&mut s),
        Variant::TrellisRefiner => {
            Refiner::<NdArray>::new(config, &Default::default()).visit(&mut s);
        }
    }
    s.params.into_iter().map(|(n, d, _)| (n, d)).collect()
}

/// The bytes up to and including the parameters, and the parameters as stored (f16).
#[allow(clippy::type_complexity)]
fn encode_params(
    config: &CodecConfig,
    lambda: f32,
    train_steps: u64,
    raw: Vec<(String, Vec<usize>, Vec<f32>)>,
) -> (Vec<u8>, Vec<(Vec<usize>, Vec<f16>)>) {
    let names: Vec<String> = raw.iter().map(|(n, ..)| n.clone()).collect();
    let params: Vec<(Vec<usize>, Vec<f16>)> = raw
        .into_iter()
        .map(|(_, d, v)| (d, v.into_iter().map(f16::from_f32).collect()))
        .collect();
    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    b.extend(VERSION.to_le_bytes());
    b.extend(config.variant.code().to_le_bytes());
    for v in [
        config.chunk_len,
        config.latent,
        config.width,
        config.blocks,
        config.levels,
        config.filters.len(),
    ] {
        b.extend((v as u32).to_le_bytes());
    }
    for f in &config.filters {
        b.extend((*f as u32).to_le_bytes());
    }
    b.extend(lambda.to_le_bytes());
    b.extend(train_steps.to_le_bytes());
    b.extend((params.len() as u32).to_le_bytes());
    for (name, (dims, v)) in names.iter().zip(&params) {
        b.extend((name.len() as u16).to_le_bytes());
        b.extend(name.as_bytes());
        b.push(dims.len() as u8);
        for d in dims {
            b.extend((*d as u32).to_le_bytes());
        }
        for x in v {
            b.extend(x.to_le_bytes());
        }
    }
    (b, params)
}

/// The prior's parameters are the last ones visited: matrices, biases, factors, quantiles.
fn prior_params_from(
    config: &CodecConfig,
    params: &[(Vec<usize>, Vec<f16>)],
) -> Result<nwc_entropy::PriorParams> {
    let k = config.filters.len() + 1;
    let n_prior = 3 * k;
    if params.len() < n_prior {
        return Err(CodecError::CorruptCheckpoint("too few parameters".into()));
    }
    let p: Vec<Vec<f32>> = params[params.len() - n_prior..]
        .iter()
        .map(|(_, v)| v.iter().map(|h| h.to_f32()).collect())
        .collect();
    Ok(nwc_entropy::PriorParams {
        channels: config.latent,
        filters: config.filters.clone(),
        matrices: p[0..k].to_vec(),
        biases: p[k..2 * k].to_vec(),
        factors: p[2 * k..3 * k - 1].to_vec(),
        quantiles: p[3 * k - 1].clone(),
    })
}
