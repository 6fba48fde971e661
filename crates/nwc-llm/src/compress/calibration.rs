//! What calibration gives the compressor: the mode, each site's importances and LDL factor,
//! and the coding of one tensor with them.

use std::collections::BTreeMap;

use burn::tensor::backend::AutodiffBackend;

use nwc_format::Record;
use nwc_ldl::BlockLdl;
use nwc_pipeline::{CompressOptions, Compressor, NwcError, Result, StepAllocation};
use nwc_tensor::Tensor;

use crate::calib::Hessians;
use crate::config::LlamaConfig;
use crate::finetune::FtConfig;
use crate::sensitivity::Fisher;
use crate::weights::{LlamaWeights, Site, site_of};

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

/// One site's calibration: importance per column, the LDL factor of the damped Hessian, and
/// the LDL pivots in the Hessian's own units.
#[derive(Debug, Clone)]
struct SiteCalibration {
    importance: Vec<f32>,
    ldl: BlockLdl,
    /// The diagonal of the block-diagonal `D` of `H = L D Lᵀ`, undamped back to `H`'s scale:
    /// what a squared error in each column costs once LDLQ has fed the errors of the columns
    /// coded before it forward.
    pivots: Vec<f32>,
    /// Asymmetric calibration's target map `P` (`dim × dim`): the site's matrices are coded as
    /// `W P`, the least-squares fit of the original layer's outputs from the inputs the model
    /// coded so far produces ([`Calibration::take_all_asymmetric`]); `None` codes `W`.
    target: Option<nalgebra::DMatrix<f64>>,
}

impl SiteCalibration {
    fn lambda(&self, w: ColumnWeight) -> &[f32] {
        match w {
            ColumnWeight::Pivot => &self.pivots,
            ColumnWeight::Diagonal => &self.importance,
        }
    }

    fn new(site: Site, mut h: nalgebra::DMatrix<f64>, rotate: bool) -> Result<Self> {
        if rotate {
            rotate_hessian(&mut h);
        }
        let importance: Vec<f32> = h.diagonal().iter().map(|&v| v as f32).collect();
        // `damp_owned` divides by the mean diagonal of the live columns.
        let live: Vec<f64> = h.diagonal().iter().copied().filter(|&v| v > 0.0).collect();
        let unit = live.iter().sum::<f64>() / live.len().max(1) as f64;
        let d = nwc_ldl::damp_owned(h, nwc_ldl::DAMPING)?;
        if !d.dead.is_empty() {
            tracing::debug!(site = %site.key(), dead = d.dead.len(), "dead input columns");
        }
        let ldl = BlockLdl::from_owned(d.h, nwc_ldl::LDL_BLOCK)?;
        let mut pivots: Vec<f32> = ldl
            .d()
            .iter()
            .flat_map(|b| {
                b.diagonal()
                    .iter()
                    .map(|&v| (v * unit) as f32)
                    .collect::<Vec<_>>()
            })
            .collect();
        for &i in &d.dead {
            pivots[i] = 0.0;
        }
        Ok(Self {
            importance,
            ldl,
            pivots,
            target: None,
        })
    }
}

/// `P = I + α (C − Ĥ) Ĥ⁻¹` (`C Ĥ⁻¹` at `α = 1`), with `Ĥ` damped as LDLQ damps it (`DAMPING`
/// times its mean live diagonal) in the correction only: the map that takes a layer's weights
/// `W` to the `W P` whose outputs on the coded model's inputs `x̂` best fit `W x` (least squares
/// over the calibration tokens, ridge-regularized), blended with the identity by `alpha`. Where
/// the two models' inputs agree (`C = Ĥ`) it is exactly the identity: damping `C Ĥ⁻¹` as a whole
/// would instead shrink every direction of small input variance (measured: 178 perplexity at 4
/// bits on SmolLM2 against 21).
fn target_map(
    h: &nalgebra::DMatrix<f64>,
    cross: &nalgebra::DMatrix<f64>,
    alpha: f64,
) -> Result<nalgebra::DMatrix<f64>> {
    let n = h.nrows();
    if cross.shape() != (n, n) {
        return Err(NwcError::Config(format!(
            "cross-covariance {:?} for a {n}×{n} Hessian",
            cross.shape()
        )));
    }
    let live: Vec<f64> = h.diagonal().iter().copied().filter(|&v| v > 0.0).collect();
    let unit = live.iter().sum::<f64>() / live.len().max(1) as f64;
    let mut hd = h.clone();
    for i in 0..n {
        hd[(i, i)] += nwc_ldl::DAMPING * unit.max(f64::MIN_POSITIVE);
    }
    let chol = hd.cholesky().ok_or_else(|| {
        NwcError::Config(
            "asymmetric calibration: the damped Hessian is not positive definite".into(),
        )
    })?;
    // P − I = α (C − Ĥ) Ĥ⁻¹, so (P − I)ᵀ = α Ĥ⁻¹ (C − Ĥ)ᵀ (Ĥ symmetric).
    let mut p = chol.solve(&(cross - h).transpose()).transpose() * alpha;
    for i in 0..n {
        p[(i, i)] += 1.0;
    }
    if p.iter().any(|v| !v.is_finite()) {
        return Err(NwcError::Config(
            "asymmetric calibration: non-finite target map".into(),
        ));
    }
    Ok(p)
}

/// `W P` for a row-major `rows × cols` matrix `w` and a `cols × cols` map `p`, row-major.
fn apply_target(w: &[f32], cols: usize, p: &nalgebra::DMatrix<f64>) -> Vec<f32> {
    let rows = w.len() / cols.max(1);
    let m = nalgebra::DMatrix::from_row_iterator(rows, cols, w.iter().map(|&v| f64::from(v)));
    let out = m * p;
    let mut v = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        v.extend(out.row(r).iter().map(|&x| x as f32));
    }
    v
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
    allocation: Option<Allocation>,
}

/// Rate allocation across a model's matrices ([`Calibration::with_allocation`]).
#[derive(Debug, Clone)]
struct Allocation {
    /// Per matrix, the weight at which a column keeps the codec's step: the geometric mean of
    /// `c_t · λ_j · s_j²` over every calibrated column of the model (weighted by rows), or over
    /// the matrix's own columns when [`AllocationOptions::across_matrices`] is off.
    reference: BTreeMap<String, f64>,
    /// Each matrix's loss sensitivity `c_t` (loss per unit of Hessian-weighted error); 1 for
    /// every matrix without an estimate.
    sensitivity: BTreeMap<String, f64>,
    options: AllocationOptions,
}

/// What a column's squared error is weighted by in [`Calibration::with_allocation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnWeight {
    /// The LDL pivot: what the error costs once LDLQ has fed the errors of the columns before
    /// it forward.
    #[default]
    Pivot,
    /// The Hessian's diagonal: what the error costs without feedback.
    Diagonal,
}

/// How [`Calibration::with_allocation`] spreads the rate.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AllocationOptions {
    /// The clamp on each column's step multiplier.
    pub range: StepAllocation,
    /// Each column's loss weight.
    pub weight: ColumnWeight,
    /// One normalization for the whole model, so that bits move between matrices too (on), or
    /// one per matrix, so that each matrix keeps its mean step and only its columns trade bits
    /// (off).
    pub across_matrices: bool,
}

impl AllocationOptions {
    /// The setting `docs/allocation.md` measured to win with Fisher sensitivities at 3 bits or
    /// fewer: errors weighted by diag(H), steps within 1/16..16 of the file's, normalized
    /// across the model.
    pub const FISHER: Self = Self {
        range: StepAllocation {
            min: 1.0 / 16.0,
            max: 16.0,
        },
        weight: ColumnWeight::Diagonal,
        across_matrices: true,
    };
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
            allocation: None,
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
            allocation: None,
        })
    }

    /// Asymmetric calibration of the sites in `coded` (layer-by-layer compression, one
    /// block's): levels and LDL factors come from `coded`, the Hessians `E[x̂ x̂ᵀ]` of the inputs
    /// the model coded so far produces, and every matrix of a site in `cross` (`E[x x̂ᵀ]`, with
    /// `x` the original model's input at the same tokens) is coded as `W P`
    /// ([`target_map`], blended by `alpha` in 0..=1), so that the coded layer reproduces the
    /// original layer's outputs from the inputs it will actually see (GPTAQ's objective
    /// `‖W x − Ŵ x̂‖²`, which LDLQ then minimizes under `Ĥ`).
    pub(crate) fn take_all_asymmetric(
        mut coded: Hessians,
        mut cross: Hessians,
        rotated: bool,
        alpha: f64,
    ) -> Result<Self> {
        let mut sites = BTreeMap::new();
        for site in coded.sites().collect::<Vec<_>>() {
            let h = coded.take(site)?;
            let target = match cross.take(site) {
                Ok(c) => Some(target_map(&h, &c, alpha)?),
                Err(_) => None,
            };
            let mut cal = SiteCalibration::new(site, h, rotated)?;
            cal.target = target;
            sites.insert(site, cal);
        }
        Ok(Self {
            sites,
            rotated,
            finetune: None,
            allocation: None,
        })
    }

    /// This calibration with `other`'s rate allocation ([`Calibration::with_allocation`]; none
    /// when `other` has none): its per-matrix references and sensitivities, applied to this
    /// calibration's own column weights (layer-by-layer compression, where each block's
    /// calibration is made as the run goes but the allocation is the whole model's).
    pub(crate) fn with_allocation_of(mut self, other: Option<&Calibration>) -> Self {
        if let Some(o) = other {
            self.allocation = o.allocation.clone();
        }
        self
    }

    /// Adds what [`Mode::LevelsLdlqFt`] needs: calibration windows (token ids, one length) and
    /// the fine-tuning settings.
    pub fn with_finetune(mut self, windows: Vec<Vec<u32>>, config: FtConfig) -> Self {
        self.finetune = Some((windows, config));
        self
    }

    /// Turns on rate allocation by column ([`StepAllocation`]) for every matrix with a site:
    /// each column's step goes as `1/√(c_t · λ_j)`, with `λ_j` its loss weight
    /// ([`ColumnWeight`]) and `c_t` the matrix's loss sensitivity from `sensitivity` (1 when
    /// absent), normalized per [`AllocationOptions::across_matrices`]. `weights` give the column
    /// scales the normalization needs.
    ///
    /// # Errors
    /// [`NwcError::Config`] when a matrix with a site cannot be read as f32, a sensitivity is
    /// not finite and positive, or no matrix has a calibrated column.
    pub fn with_allocation(
        mut self,
        weights: &LlamaWeights,
        sensitivity: BTreeMap<String, f64>,
        options: AllocationOptions,
    ) -> Result<Self> {
        if let Some((n, c)) = sensitivity
            .iter()
            .find(|(_, c)| !(c.is_finite() && **c > 0.0))
        {
            return Err(NwcError::Config(format!(
                "{n}: loss sensitivity {c} is not finite and positive"
            )));
        }
        // Σ rows · ln(w) and Σ rows, per matrix.
        let mut logs: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for (name, t) in &weights.tensors {
            let (Some(site), Some((rows, cols))) =
                (site_of(&weights.config, name), t.matrix_dims())
            else {
                continue;
            };
            let Some(cal) = self.sites.get(&site) else {
                continue;
            };
            let c_t = sensitivity.get(name).copied().unwrap_or(1.0);
            let sq = column_sq(&t.to_f32()?, cols);
            let (mut sum_log, mut count) = (0.0f64, 0.0f64);
            for (s, &l) in sq.iter().zip(cal.lambda(options.weight)) {
                let w = c_t * f64::from(l) * s;
                if w > 0.0 {
                    sum_log += rows as f64 * w.ln();
                    count += rows as f64;
                }
            }
            if count > 0.0 {
                logs.insert(name.clone(), (sum_log, count));
            }
        }
        if logs.is_empty() {
            return Err(NwcError::Config(
                "rate allocation: no calibrated matrix in the model".into(),
            ));
        }
        let reference = if options.across_matrices {
            let (l, c) = logs
                .values()
                .fold((0.0, 0.0), |(l, c), (dl, dc)| (l + dl, c + dc));
            logs.keys().map(|n| (n.clone(), (l / c).exp())).collect()
        } else {
            logs.into_iter()
                .map(|(n, (l, c))| (n, (l / c).exp()))
                .collect()
        };
        self.allocation = Some(Allocation {
            reference,
            sensitivity,
            options,
        });
        Ok(self)
    }

    /// [`Calibration::with_allocation`] with each matrix's sensitivity from the Fisher
    /// information of `windows` ([`Fisher::measure`] on autodiff backend `B`, then
    /// [`Calibration::sensitivities`]); `progress(done, total)` after each window.
    ///
    /// # Errors
    /// As [`Fisher::measure`], [`Calibration::sensitivities`] and
    /// [`Calibration::with_allocation`].
    pub fn with_fisher_allocation<B: AutodiffBackend>(
        self,
        weights: &LlamaWeights,
        windows: &[Vec<u32>],
        device: &B::Device,
        options: AllocationOptions,
        progress: impl Fn(usize, usize),
    ) -> Result<Self> {
        let fisher = Fisher::measure::<B>(weights, windows, device, progress)?;
        let sensitivity = self.sensitivities(weights, &fisher)?;
        for (n, c) in &sensitivity {
            tracing::debug!(tensor = %n, sensitivity = c, "fisher");
        }
        self.with_allocation(weights, sensitivity, options)
    }

    /// Each matrix's loss sensitivity `c_t` from the Fisher information: the loss a
    /// perturbation of uniform normalized size costs, over the Hessian-weighted error it causes,
    /// `Σ_j F_j s_j² / (rows · Σ_j H_jj s_j²)` (`F_j` the column's Fisher information summed
    /// over rows, `s_j` its scale), for [`Calibration::with_allocation`]. Matrices without a site
    /// or without Fisher information are left out (sensitivity 1).
    ///
    /// # Errors
    /// [`NwcError::Config`] when a matrix cannot be read as f32.
    pub fn sensitivities(
        &self,
        weights: &LlamaWeights,
        fisher: &Fisher,
    ) -> Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        for (name, t) in &weights.tensors {
            let (Some(site), Some((rows, cols)), Some(f)) = (
                site_of(&weights.config, name),
                t.matrix_dims(),
                fisher.columns.get(name),
            ) else {
                continue;
            };
            let Some(cal) = self.sites.get(&site).filter(|_| f.len() == cols) else {
                continue;
            };
            let sq = column_sq(&t.to_f32()?, cols);
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for ((s, &fj), &h) in sq.iter().zip(f).zip(&cal.importance) {
                num += fj * s;
                den += rows as f64 * f64::from(h) * s;
            }
            if num > 0.0 && den > 0.0 && (num / den).is_finite() {
                out.insert(name.clone(), num / den);
            }
        }
        Ok(out)
    }

    /// The allocation's settings and per-matrix values as text (a job's fingerprint).
    pub(crate) fn allocation_key(&self) -> String {
        format!("{:?}", self.allocation)
    }

    /// Whether [`Calibration::with_allocation`] is on.
    pub fn allocates(&self) -> bool {
        self.allocation.is_some()
    }

    /// The column weights [`StepAllocation`] codes `name` (at `site`) with, normalized by its
    /// reference; `None` without allocation or for a matrix without calibrated columns.
    fn column_weights(&self, name: &str, site: Site) -> Option<Vec<f32>> {
        let a = self.allocation.as_ref()?;
        let cal = self.sites.get(&site)?;
        let reference = *a.reference.get(name)?;
        let c_t = a.sensitivity.get(name).copied().unwrap_or(1.0);
        Some(
            cal.lambda(a.options.weight)
                .iter()
                .map(|&v| (f64::from(v) * c_t / reference) as f32)
                .collect(),
        )
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

/// The mean square of each column of a row-major matrix of `cols` columns.
fn column_sq(v: &[f32], cols: usize) -> Vec<f64> {
    let mut sq = vec![0.0f64; cols];
    for row in v.chunks_exact(cols) {
        for (s, &x) in sq.iter_mut().zip(row) {
            *s += f64::from(x) * f64::from(x);
        }
    }
    let rows = (v.len() / cols.max(1)).max(1) as f64;
    sq.iter_mut().for_each(|s| *s /= rows);
    sq
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
    // With rate allocation, the matrix's column weights replace its importance, coded by a
    // compressor that folds them into the scales.
    let mut allocating = None;
    let mut weights = None;
    if let Some((c, s)) = calibration.zip(site).filter(|_| mode != Mode::DataFree)
        && let Some(w) = c.column_weights(t.name(), s)
    {
        let options = CompressOptions {
            allocation: c.allocation.as_ref().map(|a| a.options.range),
            ..compressor.options().clone()
        };
        allocating = Some(Compressor::new(compressor.codec()).with_options(options)?);
        weights = Some(w);
    }
    let compressor = allocating.as_ref().unwrap_or(compressor);
    // Asymmetric calibration: code `W P` in place of `W`.
    let mut mapped = None;
    if let Some((c, s)) = calibration.zip(site).filter(|_| mode != Mode::DataFree)
        && let Some(p) = c.sites.get(&s).and_then(|s| s.target.as_ref())
        && let Some((_, cols)) = t.matrix_dims().filter(|&(_, cols)| cols == p.nrows())
    {
        let v = apply_target(&t.to_f32()?, cols, p);
        let dtype = if t.dtype().is_float() {
            t.dtype()
        } else {
            nwc_tensor::DType::F32
        };
        mapped = Some(Tensor::from_f32(t.name(), dtype, t.shape().to_vec(), &v)?);
    }
    let t = mapped.as_ref().unwrap_or(t);
    let calibrated = calibration
        .zip(site)
        .and_then(|(c, s)| Some((weights.as_deref().or(c.importance(s))?, c.ldl(s)?)));
    match (calibrated, mode) {
        (Some((imp, ldl)), Mode::LevelsLdlq | Mode::LevelsLdlqFt) => {
            compressor.compress_tensor_ldlq(t, Some(imp), ldl)
        }
        (Some((imp, _)), _) => compressor.compress_tensor(t, Some(imp)),
        (None, _) => compressor.compress_tensor(t, None),
    }
}
