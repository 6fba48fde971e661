//! Models larger than memory: tensors loaded one at a time from a file ([`LazyWeights`]), and the
//! forward pass run one decoder block at a time over a set of windows ([`Layerwise`]), so that
//! evaluation and calibration hold one block's weights and the windows' activations, never the
//! whole model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use nwc_tensor::{GgufFile, SafetensorsFile, WeightSource};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::config::LlamaConfig;
use crate::error::{LlmError, Result, io_err};
use crate::eval::{Perplexity, windows};
use crate::model::{BlockContext, BlockTensors, Capture, block_forward, head_logits, rms_norm};
use crate::tokenizer::TextTokenizer;
use crate::weights::{EMBED, FINAL_NORM, LM_HEAD, LlamaWeights, Site, gguf_to_hf};

/// A model whose tensors (Hugging Face names) are handed out one at a time: from memory
/// ([`LlamaWeights`]), from a file ([`LazyWeights`]), or decoded from a `.nwc` on request.
pub trait ModelSource: Sync {
    /// Hyper-parameters.
    fn config(&self) -> &LlamaConfig;
    /// The model's tokenizer.
    fn tokenizer(&self) -> &TextTokenizer;
    /// Every tensor name (Hugging Face names), sorted.
    fn names(&self) -> Vec<String>;
    /// Loads one tensor in its stored dtype (block-quantized GGUF tensors come as F32).
    ///
    /// # Errors
    /// [`LlmError::Weight`] for an unknown name; read or decode errors.
    fn tensor(&self, name: &str) -> Result<nwc_tensor::Tensor>;

    /// The dtype [`ModelSource::tensor`] hands `name` out in (the default loads the tensor).
    ///
    /// # Errors
    /// As [`ModelSource::tensor`].
    fn dtype(&self, name: &str) -> Result<nwc_tensor::DType> {
        Ok(self.tensor(name)?.dtype())
    }

    /// A digest of everything the source would hand out (to tell whether a checkpoint of a long
    /// job belongs to it).
    fn fingerprint(&self) -> [u8; 32];

    /// One tensor as f32 values and its shape.
    ///
    /// # Errors
    /// As [`ModelSource::tensor`].
    fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let t = self.tensor(name)?;
        Ok((t.to_f32()?, t.shape().to_vec()))
    }
}

impl ModelSource for LlamaWeights {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }

    fn tensor(&self, name: &str) -> Result<nwc_tensor::Tensor> {
        self.tensors.get(name).cloned().ok_or_else(|| missing(name))
    }

    fn dtype(&self, name: &str) -> Result<nwc_tensor::DType> {
        self.tensors
            .get(name)
            .map(nwc_tensor::Tensor::dtype)
            .ok_or_else(|| missing(name))
    }

    fn fingerprint(&self) -> [u8; 32] {
        let parts: Vec<&[u8]> = self
            .tensors
            .iter()
            .flat_map(|(n, t)| [n.as_bytes(), t.bytes()])
            .collect();
        crate::calib::fingerprint(&[
            &crate::calib::fingerprint(&parts),
            self.config.to_hf_json("float32").as_bytes(),
        ])
    }
}

fn missing(name: &str) -> LlmError {
    LlmError::Weight {
        name: name.to_string(),
        reason: "missing".into(),
    }
}

enum Files {
    Gguf(GgufFile),
    Hf(Vec<SafetensorsFile>),
}

/// A Llama or Qwen2 in a GGUF file or a Hugging Face directory, memory-mapped: each tensor is read
/// (and dequantized) only when asked for.
pub struct LazyWeights {
    config: LlamaConfig,
    tokenizer: TextTokenizer,
    files: Files,
    /// Hugging Face name → (file index, name in that file).
    names: BTreeMap<String, (usize, String)>,
    path: PathBuf,
}

impl std::fmt::Debug for LazyWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyWeights")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("tensors", &self.names.len())
            .finish()
    }
}

impl LazyWeights {
    /// Opens a GGUF file or a Hugging Face directory (`config.json`, `*.safetensors`,
    /// `tokenizer.json`) without reading any tensor, and checks that every tensor the
    /// architecture needs is present.
    ///
    /// # Errors
    /// Missing files, another architecture, missing tensors.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let w = if path.is_dir() {
            Self::open_hf(path)?
        } else {
            Self::open_gguf(path)?
        };
        for (name, _) in LlamaWeights::expected_shapes(&w.config) {
            if !w.names.contains_key(&name) {
                return Err(missing(&name));
            }
        }
        Ok(w)
    }

    fn open_gguf(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let mut config = LlamaConfig::from_gguf(file.metadata())?;
        let tokenizer = TextTokenizer::from_gguf(file.metadata())?;
        let mut names = BTreeMap::new();
        for name in file.names() {
            match gguf_to_hf(&name) {
                Some(hf) => {
                    names.insert(hf, (0, name));
                }
                None => tracing::debug!(name, "skipping GGUF tensor with no Llama role"),
            }
        }
        config.tie_embeddings = !names.contains_key(LM_HEAD);
        Ok(Self {
            config,
            tokenizer,
            files: Files::Gguf(file),
            names,
            path: path.to_path_buf(),
        })
    }

    fn open_hf(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let config = LlamaConfig::from_hf_json(&text)?;
        let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(LlmError::Config(format!(
                "{} holds no .safetensors file",
                dir.display()
            )));
        }
        let mut files = Vec::with_capacity(paths.len());
        let mut names = BTreeMap::new();
        for (i, p) in paths.iter().enumerate() {
            let st = SafetensorsFile::open(p)?;
            for n in st.names() {
                names.insert(n.clone(), (i, n));
            }
            files.push(st);
        }
        Ok(Self {
            config,
            tokenizer,
            files: Files::Hf(files),
            names,
            path: dir.to_path_buf(),
        })
    }

    /// Reads every tensor into memory.
    ///
    /// # Errors
    /// Read errors, mis-shaped tensors.
    pub fn load_all(self) -> Result<LlamaWeights> {
        let tensors = self
            .names
            .keys()
            .map(|n| Ok((n.clone(), self.tensor(n)?)))
            .collect::<Result<BTreeMap<_, _>>>()?;
        LlamaWeights::from_parts(self.config, tensors, self.tokenizer)
    }

    /// The file or directory it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl ModelSource for LazyWeights {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn names(&self) -> Vec<String> {
        self.names.keys().cloned().collect()
    }

    fn tensor(&self, name: &str) -> Result<nwc_tensor::Tensor> {
        let (i, stored) = self.names.get(name).ok_or_else(|| missing(name))?;
        match &self.files {
            Files::Gguf(f) => crate::weights::gguf_tensor(f, &self.config, stored, name),
            Files::Hf(files) => Ok(files[*i].tensor(stored)?),
        }
    }

    fn dtype(&self, name: &str) -> Result<nwc_tensor::DType> {
        let (i, stored) = self.names.get(name).ok_or_else(|| missing(name))?;
        Ok(match &self.files {
            // Unpermuted Q/K rows are rebuilt in f32.
            Files::Gguf(_) if crate::weights::permuted_heads(&self.config, name).is_some() => {
                nwc_tensor::DType::F32
            }
            Files::Gguf(f) => f.dtype(stored)?,
            Files::Hf(files) => files[*i].dtype(stored)?,
        })
    }

    fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (_, stored) = self.names.get(name).ok_or_else(|| missing(name))?;
        match &self.files {
            Files::Gguf(f) if crate::weights::permuted_heads(&self.config, name).is_none() => {
                Ok(f.tensor_f32(stored)?)
            }
            _ => {
                let t = self.tensor(name)?;
                Ok((t.to_f32()?, t.shape().to_vec()))
            }
        }
    }

    /// SHA-256 over the bytes of every file it reads (streamed; about a second per GB), the same
    /// digest as [`crate::calib::fingerprint`] over their contents.
    fn fingerprint(&self) -> [u8; 32] {
        let paths: Vec<&Path> = match &self.files {
            Files::Gguf(f) => vec![f.path()],
            Files::Hf(files) => files.iter().map(SafetensorsFile::path).collect(),
        };
        let mut h = Sha256::new();
        for p in paths {
            // A file that cannot be read now hashes as empty: the run then fails at its first
            // read, and a checkpoint never matches a model it cannot see.
            let Ok(mut f) = std::fs::File::open(p) else {
                h.update(0u64.to_le_bytes());
                continue;
            };
            let len = f.metadata().map_or(0, |m| m.len());
            h.update(len.to_le_bytes());
            let mut buf = vec![0u8; 1 << 22];
            loop {
                match std::io::Read::read(&mut f, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => h.update(&buf[..n]),
                }
            }
        }
        h.finalize().into()
    }
}

/// The forward pass one block at a time over a fixed set of windows (token ids, one length):
/// activations `[1, t, hidden]` per window stay in memory, each block's weights are loaded from
/// the source, used for every window, and dropped.
pub struct Layerwise<B: Backend> {
    xs: Vec<Tensor<B, 3>>,
    ctx: BlockContext<B>,
    device: B::Device,
}

impl<B: Backend> std::fmt::Debug for Layerwise<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layerwise")
            .field("windows", &self.xs.len())
            .finish()
    }
}

impl<B: Backend> Layerwise<B> {
    /// Embeds `windows` (all of one length ≥ 1) with the source's token embedding.
    ///
    /// # Errors
    /// [`LlmError::Input`] for no windows, windows of different lengths or tokens outside the
    /// vocabulary; the embedding's load errors.
    pub fn embed(src: &dyn ModelSource, windows: &[&[u32]], device: &B::Device) -> Result<Self> {
        let cfg = src.config();
        let t = windows.first().map_or(0, |w| w.len());
        if t == 0 || windows.iter().any(|w| w.len() != t) {
            return Err(LlmError::Input(
                "layer-wise windows must be non-empty and of one length".into(),
            ));
        }
        let (emb, shape) = src.f32(EMBED)?;
        if shape != [cfg.vocab, cfg.hidden] {
            return Err(LlmError::Weight {
                name: EMBED.into(),
                reason: format!("shape {shape:?}, expected [{}, {}]", cfg.vocab, cfg.hidden),
            });
        }
        let h = cfg.hidden;
        let xs = windows
            .iter()
            .map(|w| {
                let mut v = Vec::with_capacity(t * h);
                for &id in *w {
                    let row = emb
                        .get(id as usize * h..(id as usize + 1) * h)
                        .ok_or_else(|| {
                            LlmError::Input(format!(
                                "token {id} outside the vocabulary of {}",
                                cfg.vocab
                            ))
                        })?;
                    v.extend_from_slice(row);
                }
                Ok(Tensor::from_data(TensorData::new(v, [1, t, h]), device))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            xs,
            ctx: BlockContext::new(cfg, t, device),
            device: device.clone(),
        })
    }

    /// Activations restored from [`Layerwise::to_f32`] (a checkpoint).
    ///
    /// # Errors
    /// [`LlmError::Input`] when the values do not fill `windows` windows of `t` tokens.
    pub fn from_f32(
        cfg: &LlamaConfig,
        values: Vec<f32>,
        windows: usize,
        t: usize,
        device: &B::Device,
    ) -> Result<Self> {
        let per = t * cfg.hidden;
        if windows == 0 || t == 0 || values.len() != windows * per {
            return Err(LlmError::Input(format!(
                "{} activation values for {windows} windows of {t} tokens × {}",
                values.len(),
                cfg.hidden
            )));
        }
        let xs = values
            .chunks_exact(per)
            .map(|c| Tensor::from_data(TensorData::new(c.to_vec(), [1, t, cfg.hidden]), device))
            .collect();
        Ok(Self {
            xs,
            ctx: BlockContext::new(cfg, t, device),
            device: device.clone(),
        })
    }

    /// All activations, window after window, as f32 values (for a checkpoint).
    pub fn to_f32(&self) -> Vec<f32> {
        self.xs
            .iter()
            .flat_map(|x| {
                x.clone()
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32")
            })
            .collect()
    }

    /// Windows held.
    pub fn windows(&self) -> usize {
        self.xs.len()
    }

    /// Loads block `l` from `src`.
    ///
    /// # Errors
    /// Missing or mis-shaped tensors.
    pub fn load_block(&self, src: &dyn ModelSource, l: usize) -> Result<BlockTensors<B>> {
        BlockTensors::load(src.config(), l, &self.device, |n| src.f32(n))
    }

    /// Runs block `l` with weights `w` over every window, calling `cap` with the input of each
    /// linear-layer group, window by window. Windows run in parallel; `cap` sees them in order.
    pub fn advance(&mut self, w: &BlockTensors<B>, l: usize, cap: Option<Capture<'_, B>>) {
        match cap {
            None => {
                let ctx = &self.ctx;
                self.xs
                    .par_iter_mut()
                    .for_each(|x| *x = block_forward(x.clone(), w, ctx, l, &mut None));
            }
            Some(cap) => self.advance_mapped(w, l, &|_, x| x, &mut |site, x| cap(site, x)),
        }
    }

    /// [`Layerwise::advance`] with each linear-layer group's input first mapped by `map` (in
    /// parallel, for example to its Gram matrix), then handed to `sink` window by window, in
    /// order (so sums over windows do not depend on the thread count).
    pub fn advance_mapped<T: Send>(
        &mut self,
        w: &BlockTensors<B>,
        l: usize,
        map: &(dyn Fn(Site, Tensor<B, 2>) -> T + Sync),
        sink: &mut dyn FnMut(Site, T),
    ) {
        let ctx = &self.ctx;
        for chunk in self.xs.chunks_mut(rayon::current_num_threads().max(1)) {
            let out: Vec<Vec<(Site, T)>> = chunk
                .par_iter_mut()
                .map(|x| {
                    let mut seen = Vec::new();
                    let mut keep = |site: Site, t: Tensor<B, 2>| seen.push((site, t));
                    *x = block_forward(x.clone(), w, ctx, l, &mut Some(&mut keep));
                    seen.into_iter().map(|(s, t)| (s, map(s, t))).collect()
                })
                .collect();
            for (site, t) in out.into_iter().flatten() {
                sink(site, t);
            }
        }
    }

    /// Runs block `l` with weights `w` over every window of this stream (the original model's
    /// activations), and over every window of `coded` (the activations of the model coded so
    /// far, which are left as they are), mapping each linear-layer group's input in both by
    /// `map(site, x, x̂)` (in parallel) and handing the results to `sink` window by window, in
    /// order.
    ///
    /// # Errors
    /// [`LlmError::Input`] when the two streams hold different windows.
    pub fn advance_paired<T: Send>(
        &mut self,
        coded: &Self,
        w: &BlockTensors<B>,
        l: usize,
        map: &(dyn Fn(Site, Tensor<B, 2>, Tensor<B, 2>) -> T + Sync),
        sink: &mut dyn FnMut(Site, T),
    ) -> Result<()> {
        if self.xs.len() != coded.xs.len()
            || self
                .xs
                .iter()
                .zip(&coded.xs)
                .any(|(a, b)| a.dims() != b.dims())
        {
            return Err(LlmError::Input(
                "the original and coded activation streams differ".into(),
            ));
        }
        let ctx = &self.ctx;
        let threads = rayon::current_num_threads().max(1);
        for (chunk, coded) in self.xs.chunks_mut(threads).zip(coded.xs.chunks(threads)) {
            let out: Vec<Vec<(Site, T)>> = chunk
                .par_iter_mut()
                .zip(coded)
                .map(|(x, xq)| {
                    let mut seen = Vec::new();
                    let mut keep = |site: Site, t: Tensor<B, 2>| seen.push((site, t));
                    *x = block_forward(x.clone(), w, ctx, l, &mut Some(&mut keep));
                    let mut pairs = Vec::new();
                    let mut pair = |site: Site, tq: Tensor<B, 2>| {
                        if let Some(i) = seen.iter().position(|(s, _)| *s == site) {
                            let (_, t) = seen.swap_remove(i);
                            pairs.push((site, map(site, t, tq)));
                        }
                    };
                    let _ = block_forward(xq.clone(), w, ctx, l, &mut Some(&mut pair));
                    pairs
                })
                .collect();
            for (site, t) in out.into_iter().flatten() {
                sink(site, t);
            }
        }
        Ok(())
    }

    /// The final norm's output of every window, handed to `cap` as [`Site::Head`]'s input (what
    /// calibrating the output projection needs, without computing logits).
    ///
    /// # Errors
    /// The final norm's load errors.
    pub fn head_input(&self, src: &dyn ModelSource, cap: Capture<'_, B>) -> Result<()> {
        let (nv, ns) = src.f32(FINAL_NORM)?;
        let norm = Tensor::<B, 1>::from_data(
            TensorData::new(nv, [ns.iter().product::<usize>()]),
            &self.device,
        );
        for x in &self.xs {
            let [b, t, d] = x.dims();
            let xn = rms_norm(x.clone(), &norm, src.config().rms_eps);
            cap(Site::Head, xn.reshape([b * t, d]));
        }
        Ok(())
    }

    fn load_head(&self, src: &dyn ModelSource) -> Result<(Tensor<B, 1>, Tensor<B, 2>)> {
        let cfg = src.config();
        let (nv, ns) = src.f32(FINAL_NORM)?;
        if ns != [cfg.hidden] {
            return Err(LlmError::Weight {
                name: FINAL_NORM.into(),
                reason: format!("shape {ns:?}, expected [{}]", cfg.hidden),
            });
        }
        let norm = Tensor::<B, 1>::from_data(TensorData::new(nv, [cfg.hidden]), &self.device);
        let head_name = if cfg.tie_embeddings { EMBED } else { LM_HEAD };
        let (hv, hs) = src.f32(head_name)?;
        if hs != [cfg.vocab, cfg.hidden] {
            return Err(LlmError::Weight {
                name: head_name.into(),
                reason: format!("shape {hs:?}, expected [{}, {}]", cfg.vocab, cfg.hidden),
            });
        }
        let head = Tensor::<B, 2>::from_data(TensorData::new(hv, [hs[0], hs[1]]), &self.device);
        Ok((norm, head))
    }

    /// The logits of every window, `t × vocab` values each (row-major), after the last block.
    ///
    /// # Errors
    /// The final norm's or output projection's load errors.
    pub fn logits(&self, src: &dyn ModelSource) -> Result<Vec<Vec<f32>>> {
        let (norm, head) = self.load_head(src)?;
        Ok(self
            .xs
            .iter()
            .map(|x| {
                head_logits(x.clone(), &norm, &head, src.config().rms_eps, &mut None)
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32")
            })
            .collect())
    }

    /// Final norm and output projection: the summed next-token NLL (nats) of `targets[i]` (one
    /// id per position of window `i`), and the Head site's input through `cap`.
    ///
    /// # Errors
    /// [`LlmError::Input`] for targets of the wrong count or outside the vocabulary; load errors.
    pub fn head_nll(
        &self,
        src: &dyn ModelSource,
        targets: &[&[u32]],
        mut cap: Option<Capture<'_, B>>,
    ) -> Result<f64> {
        let cfg = src.config();
        if targets.len() != self.xs.len() {
            return Err(LlmError::Input(format!(
                "{} target windows for {} windows",
                targets.len(),
                self.xs.len()
            )));
        }
        let (norm, head) = self.load_head(src)?;
        let mut total = 0.0;
        for (x, tg) in self.xs.iter().zip(targets) {
            let t = x.dims()[1];
            if tg.len() != t {
                return Err(LlmError::Input(format!(
                    "{} targets for {t} positions",
                    tg.len()
                )));
            }
            // Positions in slices, so that the logits of a large vocabulary are never whole.
            const SLICE: usize = 128;
            for s in (0..t).step_by(SLICE) {
                let n = SLICE.min(t - s);
                let xs = x.clone().narrow(1, s, n);
                let logits = head_logits(xs, &norm, &head, cfg.rms_eps, &mut cap);
                let ids = crate::eval::ids_tensor::<B>(&tg[s..s + n], cfg.vocab, &self.device)?;
                let lp = log_softmax(logits, 2).gather(2, ids.reshape([1, n, 1]));
                let sum: f64 = lp
                    .sum()
                    .into_data()
                    .convert::<f64>()
                    .to_vec::<f64>()
                    .expect("f64")[0];
                total -= sum;
            }
        }
        Ok(total)
    }
}

/// Perplexity of the model in `src` on up to `max_windows` windows of `ctx` tokens of `ids`, one
/// block at a time (the same windows and figure as [`crate::eval::perplexity`]), calling
/// `progress(done, total)` after each block.
///
/// # Errors
/// Too little text, tokens outside the vocabulary, missing or mis-shaped tensors.
pub fn layerwise_perplexity<B: Backend>(
    src: &dyn ModelSource,
    ids: &[u32],
    ctx: usize,
    max_windows: usize,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    let ws = windows(ids, ctx, max_windows)?;
    let inputs: Vec<&[u32]> = ws.iter().map(|w| &w[..ctx - 1]).collect();
    let targets: Vec<&[u32]> = ws.iter().map(|w| &w[1..]).collect();
    let layers = src.config().layers;
    let mut run = Layerwise::<B>::embed(src, &inputs, device)?;
    for l in 0..layers {
        let w = run.load_block(src, l)?;
        run.advance(&w, l, None);
        progress(l + 1, layers + 1);
    }
    let total = run.head_nll(src, &targets, None)?;
    progress(layers + 1, layers + 1);
    Ok(Perplexity::from_total(total, ws.len(), ctx))
}

/// Opening weights whole lives here, above the lazy loader it goes through (`weights` stays
/// below `stream`).
impl LlamaWeights {
    /// Opens a GGUF file or a Hugging Face directory (`config.json`, `*.safetensors`,
    /// `tokenizer.json`).
    ///
    /// # Errors
    /// Missing files, another architecture, missing or mis-shaped tensors.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        crate::stream::LazyWeights::open(path)?.load_all()
    }
}
