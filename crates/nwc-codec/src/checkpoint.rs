//! Checkpoints: the trained network's parameters (f16), its configuration, and the integer
//! entropy tables exported from its prior, in one versioned, hashed byte string.
//!
//! Layout (all little-endian):
//!
//! ```text
//! magic "NWCCKPT\0" | u32 version (1 or 2)
//! version 2 only: u32 variant (0 autoencoder, 1 trellis refiner); version 1 is an autoencoder
//! config: u32 chunk_len, latent, width, blocks, levels, n_filters, filters[n_filters]
//! f32 lambda (the rate–distortion weight it was trained with) | u64 train_steps
//! u32 n_params; per parameter: u8 ndim, u32 dims[ndim], f16 values
//! autoencoder only:
//!   u32 n_steps; f32 steps[n_steps]; f32 medians[latent]
//!   per step, per channel: a table (i32 min_symbol, u8 precision, u16 n_freqs, u16 freqs[n_freqs])
//! ```
//!
//! Parameters are stored in the module's visit order (autoencoder: g_a, g_s, bottleneck;
//! refiner: g_s), and each must have the shape the configuration's model expects.
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

const MAGIC: &[u8; 8] = b"NWCCKPT\0";
const VERSION: u32 = 2;

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

struct Collect(Vec<(Vec<usize>, Vec<f32>)>);

impl<B: Backend> ModuleVisitor<B> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val();
        let dims = t.dims().to_vec();
        let v = t
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .expect("f32 data");
        self.0.push((dims, v));
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

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                CodecError::CorruptCheckpoint(format!("truncated at byte {}", self.pos))
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn f32(&mut self) -> Result<f32> {
        Ok(f32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    /// A count whose items take at least `min_bytes` each: refused when it cannot fit.
    fn count(&mut self, min_bytes: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_bytes.max(1)) > self.b.len() - self.pos {
            return Err(CodecError::CorruptCheckpoint(format!(
                "count {n} exceeds the data"
            )));
        }
        Ok(n)
    }
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
        let mut c = Collect(Vec::new());
        model.visit(&mut c);
        let (mut b, params) = encode_params(config, lambda, train_steps, c.0);
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
        let mut c = Collect(Vec::new());
        model.visit(&mut c);
        let (b, _) = encode_params(config, 0.0, train_steps, c.0);
        Self::from_bytes(&b)
    }

    #[allow(clippy::type_complexity)]
    fn parse_params(
        b: &[u8],
    ) -> Result<(CodecConfig, f32, u64, Vec<(Vec<usize>, Vec<f16>)>, usize)> {
        let mut r = Reader { b, pos: 0 };
        if r.take(8)? != MAGIC {
            return Err(CodecError::CorruptCheckpoint(
                "wrong magic (not an nwc checkpoint)".into(),
            ));
        }
        let version = r.u32()?;
        let variant = match version {
            1 => Variant::Autoencoder,
            2 => {
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
            params.push((dims, vals));
        }
        Ok((config, lambda, train_steps, params, r.pos))
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
        let mut r = Reader { b: bytes, pos };
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
        if r.pos != bytes.len() {
            return Err(CodecError::CorruptCheckpoint(format!(
                "{} trailing bytes",
                bytes.len() - r.pos
            )));
        }
        // The parameters must fit the configuration's model exactly.
        let expected = expected_shapes(&config);
        if expected.len() != params.len() || expected.iter().zip(&params).any(|(e, (d, _))| e != d)
        {
            return Err(CodecError::CorruptCheckpoint(
                "parameters do not match the configuration".into(),
            ));
        }
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

/// Shapes of every parameter of a model with `config`, in visit order.
fn expected_shapes(config: &CodecConfig) -> Vec<Vec<usize>> {
    use burn::backend::NdArray;
    struct Shapes(Vec<Vec<usize>>);
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().dims().to_vec());
        }
    }
    let mut s = Shapes(Vec::new());
    match config.variant {
        Variant::Autoencoder => NwcModel::<NdArray>::new(config, &Default::default()).visit(&mut s),
        Variant::TrellisRefiner => {
            Refiner::<NdArray>::new(config, &Default::default()).visit(&mut s);
        }
    }
    s.0
}

/// The bytes up to and including the parameters, and the parameters as stored (f16).
#[allow(clippy::type_complexity)]
fn encode_params(
    config: &CodecConfig,
    lambda: f32,
    train_steps: u64,
    raw: Vec<(Vec<usize>, Vec<f32>)>,
) -> (Vec<u8>, Vec<(Vec<usize>, Vec<f16>)>) {
    let params: Vec<(Vec<usize>, Vec<f16>)> = raw
        .into_iter()
        .map(|(d, v)| (d, v.into_iter().map(f16::from_f32).collect()))
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
    for (dims, v) in &params {
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
