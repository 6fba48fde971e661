//! What calibration gives the compressor: the mode, each site's importances and LDL factor,
//! and the coding of one tensor with them.

use std::collections::BTreeMap;

use nwc_format::Record;
use nwc_ldl::BlockLdl;
use nwc_pipeline::{Compressor, NwcError, Result};
use nwc_tensor::Tensor;

use crate::calib::Hessians;
use crate::config::LlamaConfig;
use crate::finetune::FtConfig;
use crate::weights::{Site, site_of};

/// How much calibration information the compressor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// No calibration: every column at level 0, no feedback.
    DataFree,
    /// Quality level per input column from diag(H) bands.
    Levels,
    /// Levels, and LDLQ error feedback through the block LDL factor of H.
    LevelsLdlq,
    /// Levels, LDLQ, then block-wise recovery fine-tuning of per-column scales and norms
    /// ([`crate::finetune::finetune_blocks`]; needs [`Calibration::with_finetune`]).
    LevelsLdlqFt,
}

impl Mode {
    /// All four, from least to most calibration.
    pub const ALL: [Mode; 4] = [
        Mode::DataFree,
        Mode::Levels,
        Mode::LevelsLdlq,
        Mode::LevelsLdlqFt,
    ];

    /// A short label for tables.
    pub fn label(self) -> &'static str {
        match self {
            Mode::DataFree => "data-free",
            Mode::Levels => "levels",
            Mode::LevelsLdlq => "levels+LDLQ",
            Mode::LevelsLdlqFt => "levels+LDLQ+FT",
        }
    }
}

/// One site's calibration: importance per column and the LDL factor of the damped Hessian.
#[derive(Debug, Clone)]
struct SiteCalibration {
    importance: Vec<f32>,
    ldl: BlockLdl,
}

impl SiteCalibration {
    fn new(site: Site, mut h: nalgebra::DMatrix<f64>, rotate: bool) -> Result<Self> {
        if rotate {
            rotate_hessian(&mut h);
        }
        let importance: Vec<f32> = h.diagonal().iter().map(|&v| v as f32).collect();
        let d = nwc_ldl::damp_owned(h, nwc_ldl::DAMPING)?;
        if !d.dead.is_empty() {
            tracing::debug!(site = %site.key(), dead = d.dead.len(), "dead input columns");
        }
        let ldl = BlockLdl::from_owned(d.h, nwc_ldl::LDL_BLOCK)?;
        Ok(Self { importance, ldl })
    }
}

/// `H ← V H Vᵀ` with `V` the incoherence rotation of its size ([`nwc_tensor::Rotation`]): the
/// Hessian of a layer whose weights are coded as `U W Vᵀ`.
fn rotate_hessian(h: &mut nalgebra::DMatrix<f64>) {
    let n = h.nrows();
    let rot = nwc_tensor::Rotation::new(n);
    // Column-major: rotate every column (V H), transpose, rotate every column again.
    for col in h.as_mut_slice().chunks_exact_mut(n.max(1)) {
        rot.forward(col);
    }
    h.transpose_mut();
    for col in h.as_mut_slice().chunks_exact_mut(n.max(1)) {
        rot.forward(col);
    }
}

/// The block LDL factor (block [`nwc_ldl::LDL_BLOCK`]) of every linear-layer input's damped
/// Hessian, and its column importances, computed once and shared by every method that uses them.
#[derive(Debug, Clone)]
pub struct Calibration {
    sites: BTreeMap<Site, SiteCalibration>,
    /// Whether the Hessians were rotated for incoherence processing.
    rotated: bool,
    pub(crate) finetune: Option<(Vec<Vec<u32>>, FtConfig)>,
}

impl Calibration {
    /// Damps every Hessian (dead columns, then `H/mean(diag) + 0.01·I`, as GPTQ/QuIP# do) and
    /// factors it.
    ///
    /// # Errors
    /// [`NwcError::Ldl`] when a Hessian is empty or cannot be factored even after damping.
    pub fn new(hessians: &Hessians, cfg: &LlamaConfig) -> Result<Self> {
        Self::build(hessians, cfg, false)
    }

    /// As [`Calibration::new`], for incoherence processing
    /// ([`nwc_pipeline::CompressOptions::incoherence`]): every Hessian is rotated to `V H Vᵀ`
    /// before it is damped and factored, and the importances are that matrix's diagonal.
    ///
    /// # Errors
    /// As [`Calibration::new`].
    pub fn with_incoherence(hessians: &Hessians, cfg: &LlamaConfig) -> Result<Self> {
        Self::build(hessians, cfg, true)
    }

    fn build(hessians: &Hessians, cfg: &LlamaConfig, rotated: bool) -> Result<Self> {
        let mut sites = BTreeMap::new();
        for site in Site::all(cfg) {
            sites.insert(
                site,
                SiteCalibration::new(site, hessians.hessian(site)?, rotated)?,
            );
        }
        Ok(Self {
            sites,
            rotated,
            finetune: None,
        })
    }

    /// Whether the Hessians were rotated ([`Calibration::with_incoherence`]).
    pub fn is_rotated(&self) -> bool {
        self.rotated
    }

    /// Calibration of the sites in `hessians` only, each accumulator freed as soon as it is
    /// factored (layer-by-layer compression holds one block's).
    pub(crate) fn take_all(mut hessians: Hessians, rotated: bool) -> Result<Self> {
        let mut sites = BTreeMap::new();
        for site in hessians.sites().collect::<Vec<_>>() {
            let h = hessians.take(site)?;
            sites.insert(site, SiteCalibration::new(site, h, rotated)?);
        }
        Ok(Self {
            sites,
            rotated,
            finetune: None,
        })
    }

    /// Adds what [`Mode::LevelsLdlqFt`] needs: calibration windows (token ids, one length) and
    /// the fine-tuning settings.
    pub fn with_finetune(mut self, windows: Vec<Vec<u32>>, config: FtConfig) -> Self {
        self.finetune = Some((windows, config));
        self
    }

    /// diag(H) of a site: the importance of each input column.
    pub fn importance(&self, site: Site) -> Option<&[f32]> {
        self.sites.get(&site).map(|s| s.importance.as_slice())
    }

    /// The block LDL factor of a site's damped Hessian.
    pub fn ldl(&self, site: Site) -> Option<&BlockLdl> {
        self.sites.get(&site).map(|s| &s.ldl)
    }
}

/// Codes one tensor of a Llama per `mode`: a matrix whose input site `calibration` holds gets
/// that site's levels (and LDLQ in the LDLQ modes); everything else is coded uncalibrated (or
/// stored, per the policy).
pub(crate) fn compress_llama_tensor(
    compressor: &Compressor<'_>,
    cfg: &LlamaConfig,
    t: &Tensor,
    calibration: Option<&Calibration>,
    mode: Mode,
) -> Result<(Record, nwc_pipeline::TensorReport)> {
    let site = site_of(cfg, t.name()).filter(|_| compressor.options().policy.codes(t));
    if let Some(c) = calibration.filter(|c| c.rotated != compressor.options().incoherence) {
        return Err(NwcError::Config(format!(
            "{}: calibration {} rotated but incoherence processing is {}",
            t.name(),
            if c.rotated { "is" } else { "is not" },
            if compressor.options().incoherence {
                "on"
            } else {
                "off"
            }
        )));
    }
    let calibrated = calibration
        .zip(site)
        .and_then(|(c, s)| Some((c.importance(s)?, c.ldl(s)?)));
    match (calibrated, mode) {
        (Some((imp, ldl)), Mode::LevelsLdlq | Mode::LevelsLdlqFt) => {
            compressor.compress_tensor_ldlq(t, Some(imp), ldl)
        }
        (Some((imp, _)), _) => compressor.compress_tensor(t, Some(imp)),
        (None, _) => compressor.compress_tensor(t, None),
    }
}
