//! Loading a Llama's weights from a GGUF file or a Hugging Face directory, under Hugging Face
//! tensor names.

use std::collections::BTreeMap;
use std::path::Path;

use nwc_tensor::{DType, GgufFile, Tensor, WeightSource};

use crate::config::LlamaConfig;
use crate::error::{LlmError, Result, io_err};
use crate::tokenizer::TextTokenizer;

/// Hugging Face name of the token embedding.
pub const EMBED: &str = "model.embed_tokens.weight";
/// Hugging Face name of the final RMSNorm weight.
pub const FINAL_NORM: &str = "model.norm.weight";
/// Hugging Face name of the untied output projection.
pub const LM_HEAD: &str = "lm_head.weight";

/// The linear layers of one decoder layer, in Hugging Face naming.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proj {
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// SwiGLU gate.
    Gate,
    /// SwiGLU up projection.
    Up,
    /// SwiGLU down projection.
    Down,
}

impl Proj {
    /// All seven projections.
    pub const ALL: [Proj; 7] = [
        Proj::Q,
        Proj::K,
        Proj::V,
        Proj::O,
        Proj::Gate,
        Proj::Up,
        Proj::Down,
    ];

    /// The tensor name of this projection in layer `layer`.
    pub fn name(self, layer: usize) -> String {
        let (block, p) = match self {
            Proj::Q => ("self_attn", "q_proj"),
            Proj::K => ("self_attn", "k_proj"),
            Proj::V => ("self_attn", "v_proj"),
            Proj::O => ("self_attn", "o_proj"),
            Proj::Gate => ("mlp", "gate_proj"),
            Proj::Up => ("mlp", "up_proj"),
            Proj::Down => ("mlp", "down_proj"),
        };
        format!("model.layers.{layer}.{block}.{p}.weight")
    }

    /// The name of this projection's bias in layer `layer`, for the projections that can have
    /// one (Q, K and V in Qwen2).
    pub fn bias_name(self, layer: usize) -> Option<String> {
        matches!(self, Proj::Q | Proj::K | Proj::V)
            .then(|| self.name(layer).replace(".weight", ".bias"))
    }

    /// The input this projection reads (projections that read the same input share a Hessian).
    pub fn site(self, layer: usize) -> Site {
        match self {
            Proj::Q | Proj::K | Proj::V => Site::AttnIn(layer),
            Proj::O => Site::AttnOut(layer),
            Proj::Gate | Proj::Up => Site::MlpIn(layer),
            Proj::Down => Site::MlpDown(layer),
        }
    }
}

/// The input of a group of linear layers: where calibration collects `H = E[x xᵀ]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Site {
    /// Normalized input of q/k/v in a layer.
    AttnIn(usize),
    /// Attention output (input of o_proj).
    AttnOut(usize),
    /// Normalized input of gate/up.
    MlpIn(usize),
    /// SwiGLU product (input of down_proj).
    MlpDown(usize),
    /// Final normalized hidden state (input of the output projection, tied or not).
    Head,
}

impl Site {
    /// A stable text key (used in cache files).
    pub fn key(self) -> String {
        match self {
            Site::AttnIn(l) => format!("{l}.attn_in"),
            Site::AttnOut(l) => format!("{l}.attn_out"),
            Site::MlpIn(l) => format!("{l}.mlp_in"),
            Site::MlpDown(l) => format!("{l}.mlp_down"),
            Site::Head => "head".into(),
        }
    }

    /// Every site of a model, in forward order.
    pub fn all(cfg: &LlamaConfig) -> Vec<Site> {
        let mut v = Vec::with_capacity(4 * cfg.layers + 1);
        for l in 0..cfg.layers {
            v.extend([
                Site::AttnIn(l),
                Site::AttnOut(l),
                Site::MlpIn(l),
                Site::MlpDown(l),
            ]);
        }
        v.push(Site::Head);
        v
    }

    /// Width of the input at this site.
    pub fn dim(self, cfg: &LlamaConfig) -> usize {
        match self {
            Site::MlpDown(_) => cfg.intermediate,
            Site::AttnOut(_) => cfg.heads * cfg.head_dim(),
            _ => cfg.hidden,
        }
    }
}

/// The site whose input feeds the matrix called `name`, if it is a linear layer (the tied
/// embedding counts as the output projection).
pub fn site_of(cfg: &LlamaConfig, name: &str) -> Option<Site> {
    if name == LM_HEAD || (cfg.tie_embeddings && name == EMBED) {
        return Some(Site::Head);
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, _) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    Proj::ALL
        .into_iter()
        .find(|p| p.name(layer) == name)
        .map(|p| p.site(layer))
}

/// A Llama's configuration, weights (Hugging Face names) and tokenizer.
#[derive(Debug)]
pub struct LlamaWeights {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    /// Every tensor, under its Hugging Face name, in its stored dtype (GGUF block formats are
    /// dequantized to f32).
    pub tensors: BTreeMap<String, Tensor>,
    /// The tokenizer that came with the model.
    pub tokenizer: TextTokenizer,
}

impl LlamaWeights {
    /// Builds weights from parts (for example a decoded `.nwc` file), checking every shape.
    ///
    /// # Errors
    /// [`LlmError::Weight`] for a missing or mis-shaped tensor.
    pub fn from_parts(
        config: LlamaConfig,
        tensors: BTreeMap<String, Tensor>,
        tokenizer: TextTokenizer,
    ) -> Result<Self> {
        config.validate()?;
        let w = Self {
            config,
            tensors,
            tokenizer,
        };
        w.check()?;
        Ok(w)
    }

    /// The expected shape of every tensor the architecture needs.
    pub fn expected_shapes(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
        let (h, hd, i) = (cfg.hidden, cfg.head_dim(), cfg.intermediate);
        let mut v = vec![(EMBED.to_string(), vec![cfg.vocab, h])];
        for l in 0..cfg.layers {
            let shape = |p: Proj| match p {
                Proj::Q => vec![cfg.heads * hd, h],
                Proj::K | Proj::V => vec![cfg.kv_heads * hd, h],
                Proj::O => vec![h, cfg.heads * hd],
                Proj::Gate | Proj::Up => vec![i, h],
                Proj::Down => vec![h, i],
            };
            for p in Proj::ALL {
                v.push((p.name(l), shape(p)));
                if let Some(b) = p.bias_name(l).filter(|_| cfg.family.qkv_bias()) {
                    v.push((b, vec![shape(p)[0]]));
                }
            }
            v.push((format!("model.layers.{l}.input_layernorm.weight"), vec![h]));
            v.push((
                format!("model.layers.{l}.post_attention_layernorm.weight"),
                vec![h],
            ));
        }
        v.push((FINAL_NORM.to_string(), vec![h]));
        if !cfg.tie_embeddings {
            v.push((LM_HEAD.to_string(), vec![cfg.vocab, h]));
        }
        v
    }

    fn check(&self) -> Result<()> {
        for (name, shape) in Self::expected_shapes(&self.config) {
            let t = self.tensors.get(&name).ok_or_else(|| LlmError::Weight {
                name: name.clone(),
                reason: "missing".into(),
            })?;
            if t.shape() != shape.as_slice() {
                return Err(LlmError::Weight {
                    name,
                    reason: format!("shape {:?}, expected {shape:?}", t.shape()),
                });
            }
            if !t.dtype().is_float() {
                return Err(LlmError::Weight {
                    name,
                    reason: format!("dtype {} is not a float type", t.dtype()),
                });
            }
        }
        Ok(())
    }

    /// The tensor `name` as f32 values.
    ///
    /// # Errors
    /// [`LlmError::Weight`] when it is missing.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.tensors.get(name).ok_or_else(|| LlmError::Weight {
            name: name.to_string(),
            reason: "missing".into(),
        })?;
        Ok(t.to_f32()?)
    }

    /// Writes a Hugging Face directory that other runtimes load unchanged: `config.json`,
    /// `model.safetensors` (every tensor in `dtype`) and `tokenizer.json`.
    ///
    /// # Errors
    /// [`LlmError::Io`] when the directory cannot be written; [`LlmError::Tensor`] for a dtype
    /// other than F32, F16 or BF16.
    pub fn save_hf(&self, dir: &Path, dtype: DType) -> Result<()> {
        let torch_dtype = torch_dtype(dtype).ok_or_else(|| {
            LlmError::Config(format!(
                "cannot export weights as {dtype} (F32, F16 or BF16)"
            ))
        })?;
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        // Each file whole or not at all (written beside, renamed when complete).
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            nwc_tensor::write_whole(&path, |tmp| {
                std::fs::write(tmp, &text).map_err(|source| nwc_tensor::TensorError::Write {
                    path: path.clone(),
                    source,
                })
            })
        };
        write("config.json", self.config.to_hf_json(torch_dtype))?;
        write("tokenizer.json", self.tokenizer.to_json()?)?;
        let tensors = self
            .tensors
            .iter()
            .map(|(name, t)| {
                Tensor::from_f32(name.clone(), dtype, t.shape().to_vec(), &t.to_f32()?)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        nwc_tensor::write_safetensors(dir.join("model.safetensors"), &tensors)?;
        Ok(())
    }

    /// Writes the model as a GGUF file llama.cpp loads: its configuration and tokenizer as
    /// metadata, every matrix in `dtype` (F32, F16 or BF16) and every 1-D tensor (norms, biases)
    /// in F32 whatever `dtype` says, as llama.cpp's converter writes them (its kernels add an F16
    /// norm to F32 activations nowhere), under its GGUF name, Llama's Q/K rows in the order
    /// llama.cpp's converter gives them. Written whole or not at all.
    ///
    /// # Errors
    /// [`LlmError::Config`] for another dtype; [`LlmError::Tokenizer`] for a tokenizer GGUF
    /// cannot hold; write errors naming the path.
    pub fn save_gguf(&self, path: &Path, dtype: DType) -> Result<()> {
        if torch_dtype(dtype).is_none() {
            return Err(LlmError::Config(format!(
                "cannot export weights as {dtype} (F32, F16 or BF16)"
            )));
        }
        let mut meta = self.config.gguf_metadata();
        let file_type = match dtype {
            DType::F32 => 0,
            DType::F16 => 1,
            _ => 32,
        };
        meta.push((
            "general.file_type".into(),
            nwc_tensor::GgufValue::U32(file_type),
        ));
        meta.extend(self.tokenizer.gguf_metadata()?);
        let names = hf_to_gguf_names(&self.config);
        let mut tensors = Vec::with_capacity(self.tensors.len());
        for (hf, t) in &self.tensors {
            let name = names.get(hf.as_str()).ok_or_else(|| LlmError::Weight {
                name: hf.clone(),
                reason: "no GGUF name".into(),
            })?;
            let v = match permuted_heads(&self.config, hf) {
                Some(heads) => permute(t, hf, heads)?,
                None => t.to_f32()?,
            };
            let out = if t.shape().len() <= 1 {
                DType::F32
            } else {
                dtype
            };
            tensors.push(Tensor::from_f32(name.clone(), out, t.shape().to_vec(), &v)?);
        }
        nwc_tensor::write_gguf(path, &meta, &tensors)?;
        Ok(())
    }

    /// Parameters in all tensors.
    pub fn n_params(&self) -> usize {
        self.tensors.values().map(Tensor::numel).sum()
    }
}

/// The `torch_dtype` name Hugging Face's `config.json` uses for a float dtype.
pub fn torch_dtype(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 => Some("float32"),
        DType::F16 => Some("float16"),
        DType::BF16 => Some("bfloat16"),
        _ => None,
    }
}

/// GGUF tensor `name` under its Hugging Face name `hf`, Q/K rows put back in Hugging Face order
/// for the families whose converter permutes them.
pub(crate) fn gguf_tensor(
    file: &GgufFile,
    cfg: &LlamaConfig,
    name: &str,
    hf: &str,
) -> Result<Tensor> {
    let t = file.tensor(name)?;
    Ok(match permuted_heads(cfg, hf) {
        Some(heads) => unpermute(&t, hf, heads)?,
        None => rename(t, hf),
    })
}

/// The head count whose rows llama.cpp's converter permuted in the GGUF tensor stored for `hf`
/// (Llama's Q and K), or `None` when it is stored as Hugging Face has it.
pub(crate) fn permuted_heads(cfg: &LlamaConfig, hf: &str) -> Option<usize> {
    if cfg.family != crate::config::Family::Llama {
        None
    } else if hf.ends_with("q_proj.weight") {
        Some(cfg.heads)
    } else if hf.ends_with("k_proj.weight") {
        Some(cfg.kv_heads)
    } else {
        None
    }
}

fn rename(t: Tensor, name: &str) -> Tensor {
    let (dtype, shape) = (t.dtype(), t.shape().to_vec());
    Tensor::from_bytes(name, dtype, shape, t.into_bytes()).expect("same bytes, same shape")
}

/// llama.cpp's converter reorders each head's Q/K rows from "two halves" (Hugging Face's RoPE) to
/// "interleaved pairs": GGUF row `2i + j` of a head is HF row `j·(d/2) + i`. This undoes it.
fn unpermute(t: &Tensor, name: &str, heads: usize) -> Result<Tensor> {
    let (rows, cols) = t.matrix_dims().unwrap_or_default();
    let out = reorder_heads(t, name, heads, false)?;
    Ok(Tensor::from_f32(name, DType::F32, vec![rows, cols], &out)?)
}

/// llama.cpp's converter's row order for Llama's Q/K (the inverse of [`unpermute`]).
fn permute(t: &Tensor, name: &str, heads: usize) -> Result<Vec<f32>> {
    reorder_heads(t, name, heads, true)
}

/// Moves each head's rows between Hugging Face order and llama.cpp's (GGUF row `2i + j` of a
/// head is HF row `j·(d/2) + i`): to GGUF order when `to_gguf`, back otherwise.
fn reorder_heads(t: &Tensor, name: &str, heads: usize, to_gguf: bool) -> Result<Vec<f32>> {
    let (rows, cols) = t.matrix_dims().ok_or_else(|| LlmError::Weight {
        name: name.to_string(),
        reason: "not a matrix".into(),
    })?;
    if heads == 0 || rows % heads != 0 || !(rows / heads).is_multiple_of(2) {
        return Err(LlmError::Weight {
            name: name.to_string(),
            reason: format!("{rows} rows do not split into {heads} heads of even width"),
        });
    }
    let v = t.to_f32()?;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0f32; v.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let (gguf, hf) = (h * hd + 2 * i + j, h * hd + j * half + i);
                let (src, dst) = if to_gguf { (hf, gguf) } else { (gguf, hf) };
                out[dst * cols..][..cols].copy_from_slice(&v[src * cols..][..cols]);
            }
        }
    }
    Ok(out)
}

/// The GGUF name of every Hugging Face tensor name of a model of this configuration (the
/// inverse of [`gguf_to_hf`], built from it).
fn hf_to_gguf_names(cfg: &LlamaConfig) -> BTreeMap<String, String> {
    let mut gguf = vec![
        "token_embd.weight".to_string(),
        "output_norm.weight".to_string(),
        "output.weight".to_string(),
    ];
    for l in 0..cfg.layers {
        for part in [
            "attn_q.weight",
            "attn_k.weight",
            "attn_v.weight",
            "attn_output.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
            "attn_norm.weight",
            "ffn_norm.weight",
            "attn_q.bias",
            "attn_k.bias",
            "attn_v.bias",
        ] {
            gguf.push(format!("blk.{l}.{part}"));
        }
    }
    gguf.into_iter()
        .filter_map(|g| Some((gguf_to_hf(&g)?, g)))
        .collect()
}

/// Hugging Face name of a GGUF tensor name (`None` for tensors with no role here).
pub fn gguf_to_hf(name: &str) -> Option<String> {
    match name {
        "token_embd.weight" => return Some(EMBED.into()),
        "output_norm.weight" => return Some(FINAL_NORM.into()),
        "output.weight" => return Some(LM_HEAD.into()),
        _ => {}
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    if let Some(b) = part.strip_suffix(".bias") {
        let proj = match b {
            "attn_q" => Proj::Q,
            "attn_k" => Proj::K,
            "attn_v" => Proj::V,
            _ => return None,
        };
        return proj.bias_name(layer);
    }
    let proj = match part {
        "attn_q.weight" => Proj::Q,
        "attn_k.weight" => Proj::K,
        "attn_v.weight" => Proj::V,
        "attn_output.weight" => Proj::O,
        "ffn_gate.weight" => Proj::Gate,
        "ffn_up.weight" => Proj::Up,
        "ffn_down.weight" => Proj::Down,
        "attn_norm.weight" => {
            return Some(format!("model.layers.{layer}.input_layernorm.weight"));
        }
        "ffn_norm.weight" => {
            return Some(format!(
                "model.layers.{layer}.post_attention_layernorm.weight"
            ));
        }
        _ => return None,
    };
    Some(proj.name(layer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_the_converter() {
        // Converter: reshape(heads, 2, d/2, cols).swapaxes(1, 2); written out by hand.
        let (heads, hd, cols) = (2, 4, 3);
        let rows = heads * hd;
        let hf: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let mut gguf = vec![0.0; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..hd / 2 {
                    let src = h * hd + j * (hd / 2) + i;
                    let dst = h * hd + 2 * i + j;
                    gguf[dst * cols..][..cols].copy_from_slice(&hf[src * cols..][..cols]);
                }
            }
        }
        let t = Tensor::from_f32("q", DType::F32, vec![rows, cols], &gguf).unwrap();
        let back = unpermute(&t, "q", heads).unwrap().to_f32().unwrap();
        assert_eq!(back, hf);
        assert!(unpermute(&t, "q", 3).is_err());
        // And the exporter's permutation is the converter's.
        let hf_t = Tensor::from_f32("q", DType::F32, vec![rows, cols], &hf).unwrap();
        assert_eq!(permute(&hf_t, "q", heads).unwrap(), gguf);
    }

    #[test]
    fn names_and_sites() {
        assert_eq!(
            gguf_to_hf("blk.3.ffn_down.weight").unwrap(),
            "model.layers.3.mlp.down_proj.weight"
        );
        assert_eq!(gguf_to_hf("rope_freqs.weight"), None);
        assert_eq!(
            gguf_to_hf("blk.2.attn_k.bias").unwrap(),
            "model.layers.2.self_attn.k_proj.bias"
        );
        assert_eq!(gguf_to_hf("blk.2.ffn_up.bias"), None);
        let cfg = LlamaConfig {
            family: crate::config::Family::Llama,
            vocab: 10,
            hidden: 8,
            intermediate: 16,
            layers: 2,
            heads: 2,
            kv_heads: 1,
            rope_theta: 1e4,
            rms_eps: 1e-5,
            tie_embeddings: true,
            max_positions: 16,
        };
        assert_eq!(
            site_of(&cfg, "model.layers.1.self_attn.k_proj.weight"),
            Some(Site::AttnIn(1))
        );
        assert_eq!(site_of(&cfg, EMBED), Some(Site::Head));
        assert_eq!(site_of(&cfg, "model.layers.1.input_layernorm.weight"), None);
        assert_eq!(Site::all(&cfg).len(), 9);
    }
}
