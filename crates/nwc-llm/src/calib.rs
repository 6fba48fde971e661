//! Calibration: `H = E[x xᵀ]` of every linear-layer input, streamed over text windows, cached on
//! disk and resumable.
//!
//! Cache file (little-endian): `b"NWCHESS1"`, 32-byte fingerprint (model, text, context), u64
//! windows done, u32 site count, then per site: u16 key length, key (UTF-8), u32 width `d`, u64
//! sample count, `d(d+1)/2` f32 of the upper triangle of the mean, row by row; last, the SHA-256
//! of everything before it.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use nalgebra::DMatrix;
use nwc_ldl::HessianAccumulator;
use sha2::{Digest, Sha256};

use crate::error::{LlmError, Result, io_err};
use crate::eval::{ids_tensor, windows};
use crate::model::Llama;
use crate::weights::{LlamaWeights, Site};

const MAGIC: &[u8; 8] = b"NWCHESS1";

/// One Hessian per linear-layer input site.
#[derive(Debug, Clone)]
pub struct Hessians {
    sites: BTreeMap<Site, HessianAccumulator>,
    windows: usize,
}

impl Hessians {
    /// Empty accumulators for every site of `model`.
    pub fn new<B: Backend>(model: &Llama<B>) -> Self {
        let cfg = model.config();
        Self::for_sites(cfg, &Site::all(cfg))
    }

    /// Empty accumulators for the given sites of a model configured by `cfg` (one decoder
    /// block's, for layer-by-layer calibration).
    pub fn for_sites(cfg: &crate::config::LlamaConfig, sites: &[Site]) -> Self {
        Self {
            sites: sites
                .iter()
                .map(|&s| (s, HessianAccumulator::new(s.dim(cfg))))
                .collect(),
            windows: 0,
        }
    }

    /// Adds the rows of `x: [tokens, width]`, the input seen at `site`.
    ///
    /// # Errors
    /// [`LlmError::Input`] for a site without an accumulator; [`LlmError::Ldl`] for a width
    /// mismatch or non-finite values.
    pub fn add<B: Backend>(&mut self, site: Site, x: burn::tensor::Tensor<B, 2>) -> Result<()> {
        self.add_gram(site, Self::gram(x))
    }

    /// `(Σ x xᵀ, rows)` of `x: [tokens, width]`, row-major: what [`Hessians::add_gram`] adds
    /// (computed apart so that windows can run in parallel).
    pub fn gram<B: Backend>(x: burn::tensor::Tensor<B, 2>) -> (Vec<f32>, u64) {
        let rows = x.dims()[0] as u64;
        let g = x.clone().transpose().matmul(x);
        (
            g.into_data().convert::<f32>().to_vec::<f32>().expect("f32"),
            rows,
        )
    }

    /// Adds a [`Hessians::gram`] at `site`.
    ///
    /// # Errors
    /// As [`Hessians::add`].
    pub fn add_gram(&mut self, site: Site, (g, rows): (Vec<f32>, u64)) -> Result<()> {
        let acc = self
            .sites
            .get_mut(&site)
            .ok_or_else(|| LlmError::Input(format!("no Hessian for site {}", site.key())))?;
        Ok(acc.add_gram(&g, rows)?)
    }

    /// `(Σ x̂ xᵀ, rows)` of `x` and `xq` (`[tokens, width]` each, the same tokens), row-major:
    /// added by [`Hessians::add_gram`] to a second `Hessians`, it accumulates the
    /// cross-covariance `Σ x x̂ᵀ` of what a site sees in the original model (`x`) and in the
    /// model coded so far (`xq`), which asymmetric calibration needs. (`add_gram` reads a
    /// row-major matrix into a column-major sum, so the sum at (i, j) gets this product's row j,
    /// column i, `Σ x̂_j x_i`.)
    ///
    /// # Errors
    /// [`LlmError::Input`] when the two differ in shape.
    pub fn cross_gram<B: Backend>(
        x: burn::tensor::Tensor<B, 2>,
        xq: burn::tensor::Tensor<B, 2>,
    ) -> Result<(Vec<f32>, u64)> {
        if x.dims() != xq.dims() {
            return Err(LlmError::Input(format!(
                "activations {:?} and {:?} differ in shape",
                x.dims(),
                xq.dims()
            )));
        }
        let rows = x.dims()[0] as u64;
        let g = xq.transpose().matmul(x);
        Ok((
            g.into_data().convert::<f32>().to_vec::<f32>().expect("f32"),
            rows,
        ))
    }

    /// Counts one more window (after its [`Hessians::add`] calls).
    pub fn end_window(&mut self) {
        self.windows += 1;
    }

    /// The sites held.
    pub fn sites(&self) -> impl Iterator<Item = Site> + '_ {
        self.sites.keys().copied()
    }

    /// Removes a site's accumulator and returns its `E[x xᵀ]` (freeing the sum).
    ///
    /// # Errors
    /// As [`Hessians::hessian`].
    pub fn take(&mut self, site: Site) -> Result<DMatrix<f64>> {
        let acc = self
            .sites
            .remove(&site)
            .ok_or_else(|| LlmError::Input(format!("no Hessian for site {}", site.key())))?;
        Ok(acc.into_hessian()?)
    }

    /// Calibration windows accumulated so far.
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// The accumulator of a site.
    pub fn site(&self, site: Site) -> Option<&HessianAccumulator> {
        self.sites.get(&site)
    }

    /// `E[x xᵀ]` at a site.
    ///
    /// # Errors
    /// [`LlmError::Input`] for an unknown site, [`LlmError::Ldl`] when nothing was accumulated.
    pub fn hessian(&self, site: Site) -> Result<DMatrix<f64>> {
        let acc = self
            .sites
            .get(&site)
            .ok_or_else(|| LlmError::Input(format!("no Hessian for site {}", site.key())))?;
        Ok(acc.hessian()?)
    }

    /// Runs `model` over one window of token ids, adding every site's `Σ x xᵀ`.
    ///
    /// # Errors
    /// Tokens outside the vocabulary, or non-finite activations.
    pub fn accumulate<B: Backend>(
        &mut self,
        model: &Llama<B>,
        window: &[u32],
        device: &B::Device,
    ) -> Result<()> {
        let ids = ids_tensor::<B>(window, model.config().vocab, device)?;
        let mut err = None;
        let mut cap = |site: Site, x: burn::tensor::Tensor<B, 2>| {
            if let Err(e) = self.add(site, x)
                && err.is_none()
            {
                err = Some(e);
            }
        };
        let _ = model.forward_capture(ids, Some(&mut cap));
        if let Some(e) = err {
            return Err(e);
        }
        self.windows += 1;
        Ok(())
    }

    /// Accumulates up to `n_windows` windows of `ctx` tokens of `ids`, resuming from and saving
    /// to `cache` (every `save_every` windows and at the end) when given. A cache with another
    /// fingerprint or damaged bytes is ignored with a warning and rebuilt; one holding more
    /// windows than requested is rebuilt too, so the result always covers exactly the windows
    /// asked for.
    ///
    /// # Errors
    /// Too little text, or an unwritable cache.
    #[allow(clippy::too_many_arguments)]
    pub fn collect<B: Backend>(
        model: &Llama<B>,
        ids: &[u32],
        ctx: usize,
        n_windows: usize,
        cache: Option<&Path>,
        fingerprint: [u8; 32],
        device: &B::Device,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let ws = windows(ids, ctx, n_windows)?;
        let mut h = match cache.filter(|p| p.exists()) {
            Some(p) => match Self::load(p, fingerprint) {
                // A cache past the requested count cannot be rolled back: recompute.
                Ok(h) if h.windows > ws.len() => {
                    tracing::info!(
                        path = %p.display(),
                        cached = h.windows,
                        requested = ws.len(),
                        "Hessian cache holds more windows than requested; recomputing"
                    );
                    Self::new(model)
                }
                Ok(h) => {
                    tracing::info!(path = %p.display(), windows = h.windows, "resuming Hessians from cache");
                    h
                }
                Err(e) => {
                    tracing::warn!("ignoring Hessian cache: {e}");
                    Self::new(model)
                }
            },
            None => Self::new(model),
        };
        let save_every = 8;
        while h.windows < ws.len() {
            h.accumulate(model, ws[h.windows], device)?;
            progress(h.windows, ws.len());
            if let Some(p) = cache
                && (h.windows % save_every == 0 || h.windows == ws.len())
            {
                h.save(p, fingerprint)?;
            }
        }
        Ok(h)
    }

    /// Writes the cache file.
    ///
    /// # Errors
    /// [`LlmError::Io`] when it cannot be written.
    pub fn save(&self, path: &Path, fingerprint: [u8; 32]) -> Result<()> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&fingerprint);
        b.extend_from_slice(&(self.windows as u64).to_le_bytes());
        b.extend_from_slice(&(self.sites.len() as u32).to_le_bytes());
        for (site, acc) in &self.sites {
            let key = site.key();
            b.extend_from_slice(&(key.len() as u16).to_le_bytes());
            b.extend_from_slice(key.as_bytes());
            let d = acc.dim();
            b.extend_from_slice(&(d as u32).to_le_bytes());
            b.extend_from_slice(&acc.count().to_le_bytes());
            let mean = if acc.count() == 0 {
                DMatrix::zeros(d, d)
            } else {
                acc.hessian()?
            };
            for r in 0..d {
                for c in r..d {
                    b.extend_from_slice(&(mean[(r, c)] as f32).to_le_bytes());
                }
            }
        }
        let digest: [u8; 32] = Sha256::digest(&b).into();
        b.extend_from_slice(&digest);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        // Write then rename, so an interrupted save never leaves a half-written cache.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &b).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    }

    /// Reads a cache file written for `fingerprint`.
    ///
    /// # Errors
    /// [`LlmError::Cache`] for another fingerprint or damaged bytes.
    pub fn load(path: &Path, fingerprint: [u8; 32]) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let bad = |reason: &str| LlmError::Cache {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        if bytes.len() < 8 + 32 + 8 + 4 + 32 || &bytes[..8] != MAGIC {
            return Err(bad("not a Hessian cache"));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(bad("checksum mismatch"));
        }
        if body[8..40] != fingerprint {
            return Err(bad("written for another model, text or context"));
        }
        let mut c = nwc_tensor::Cursor::new(&body[40..], "Hessian cache");
        let truncated = |_| bad("truncated");
        let windows = c.u64().map_err(truncated)? as usize;
        let n = c.u32().map_err(truncated)? as usize;
        let mut sites = BTreeMap::new();
        for _ in 0..n {
            let kl = c.u16().map_err(truncated)?;
            let key = std::str::from_utf8(c.take(u64::from(kl)).map_err(truncated)?)
                .map_err(|_| bad("site key is not UTF-8"))?
                .to_string();
            let d = c.u32().map_err(truncated)? as usize;
            let count = c.u64().map_err(truncated)?;
            let tri = d
                .checked_mul(d + 1)
                .map(|v| v / 2)
                .and_then(|v| v.checked_mul(4))
                .ok_or_else(|| bad("absurd width"))?;
            let raw = c.take(tri as u64).map_err(truncated)?;
            let mut mean = vec![0.0f64; d * d];
            let mut it = raw
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().expect("4 bytes"))));
            for r in 0..d {
                for c in r..d {
                    let v = it.next().expect("length checked");
                    mean[r * d + c] = v;
                    mean[c * d + r] = v;
                }
            }
            let site = parse_site(&key).ok_or_else(|| bad("unknown site key"))?;
            sites.insert(site, HessianAccumulator::from_mean(d, &mean, count)?);
        }
        Ok(Self { sites, windows })
    }
}

fn parse_site(key: &str) -> Option<Site> {
    if key == "head" {
        return Some(Site::Head);
    }
    let (l, kind) = key.split_once('.')?;
    let l: usize = l.parse().ok()?;
    Some(match kind {
        "attn_in" => Site::AttnIn(l),
        "attn_out" => Site::AttnOut(l),
        "mlp_in" => Site::MlpIn(l),
        "mlp_down" => Site::MlpDown(l),
        _ => return None,
    })
}

/// The cache fingerprint of calibrating `weights` on token ids `ids` in windows of `ctx` tokens
/// (the window count is not part of it: [`Hessians::collect`] extends a shorter cache).
pub fn calibration_fingerprint(weights: &LlamaWeights, ids: &[u32], ctx: usize) -> [u8; 32] {
    let model: Vec<&[u8]> = weights
        .tensors
        .iter()
        .flat_map(|(n, t)| [n.as_bytes(), t.bytes()])
        .collect();
    let ids: Vec<u8> = ids.iter().flat_map(|i| i.to_le_bytes()).collect();
    fingerprint(&[&fingerprint(&model), &ids, &(ctx as u64).to_le_bytes()])
}

/// The file name a Hessian cache with this fingerprint goes by.
pub fn cache_file_name(fingerprint: &[u8; 32]) -> String {
    let hex: String = fingerprint[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("hessians-{hex}.bin")
}

/// A fingerprint for a cache: SHA-256 over the parts given (model bytes, text, context, …).
pub fn fingerprint(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().into()
}
