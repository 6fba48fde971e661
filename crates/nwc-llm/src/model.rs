//! The Llama decoder as a burn module, generic over the backend (NdArray, Wgpu, Cuda, and
//! `Autodiff<_>` for training).

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::tensor::activation::{log_softmax, silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use nwc_tensor::DType;

use crate::config::LlamaConfig;
use crate::error::{LlmError, Result};
use crate::weights::{EMBED, FINAL_NORM, LM_HEAD, LlamaWeights, Proj, Site};

/// One decoder layer: pre-norm attention and pre-norm SwiGLU, both residual.
#[derive(Module, Debug)]
pub struct Layer<B: Backend> {
    attn_norm: Param<Tensor<B, 1>>,
    q: Param<Tensor<B, 2>>,
    k: Param<Tensor<B, 2>>,
    v: Param<Tensor<B, 2>>,
    o: Param<Tensor<B, 2>>,
    mlp_norm: Param<Tensor<B, 1>>,
    gate: Param<Tensor<B, 2>>,
    up: Param<Tensor<B, 2>>,
    down: Param<Tensor<B, 2>>,
    /// Q/K/V biases (Qwen2).
    qkv_bias: Option<[Param<Tensor<B, 1>>; 3]>,
}

impl<B: Backend> Layer<B> {
    /// The seven projections, in [`Proj::ALL`] order.
    fn projections(&self) -> [&Param<Tensor<B, 2>>; 7] {
        [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ]
    }
}

/// A Llama-architecture causal language model.
#[derive(Module, Debug)]
pub struct Llama<B: Backend> {
    embed: Param<Tensor<B, 2>>,
    layers: Vec<Layer<B>>,
    norm: Param<Tensor<B, 1>>,
    lm_head: Option<Param<Tensor<B, 2>>>,
    #[module(skip)]
    config: LlamaConfig,
}

/// Receives the input of every linear-layer group during a forward pass (`[tokens, width]`).
pub type Capture<'a, B> = &'a mut dyn FnMut(Site, Tensor<B, 2>);

/// `x @ wᵀ` for `x: [b, t, in]`, `w: [out, in]`, computed as `(w @ xᵀ)ᵀ`: backends that need
/// contiguous operands (burn-ndarray) then copy the activations, never the weight matrix (a
/// 151936 × 1536 output projection is 933 MB).
fn linear<B: Backend>(x: Tensor<B, 3>, w: &Tensor<B, 2>) -> Tensor<B, 3> {
    let [b, t, d] = x.dims();
    let out = w.dims()[0];
    w.clone()
        .matmul(x.reshape([b * t, d]).transpose())
        .transpose()
        .reshape([b, t, out])
}

fn add_bias<B: Backend>(y: Tensor<B, 3>, b: Option<&Tensor<B, 1>>) -> Tensor<B, 3> {
    match b {
        Some(b) => {
            let n = b.dims()[0];
            y + b.clone().reshape([1, 1, n])
        }
        None => y,
    }
}

pub(crate) fn rms_norm<B: Backend>(x: Tensor<B, 3>, w: &Tensor<B, 1>, eps: f64) -> Tensor<B, 3> {
    let d = x.dims()[2];
    let inv = (x.clone().powi_scalar(2).mean_dim(2) + eps).sqrt().recip();
    x * inv * w.clone().reshape([1, 1, d])
}

/// The tensors one decoder block computes with, as plain tensors, so that a caller can scale or
/// replace them (block-wise fine-tuning does).
#[derive(Debug, Clone)]
pub struct BlockTensors<B: Backend> {
    /// Pre-attention RMSNorm weight `[hidden]`.
    pub attn_norm: Tensor<B, 1>,
    /// Pre-MLP RMSNorm weight `[hidden]`.
    pub mlp_norm: Tensor<B, 1>,
    /// The seven projections `[out, in]`, in [`Proj::ALL`] order (q, k, v, o, gate, up, down).
    pub proj: [Tensor<B, 2>; 7],
    /// Biases of q, k and v (Qwen2), `[out]` each.
    pub qkv_bias: Option<[Tensor<B, 1>; 3]>,
}

impl<B: Backend> BlockTensors<B> {
    /// Builds one block's tensors from `get(name)`, which returns a tensor's f32 values and shape
    /// (Hugging Face names), checking every shape against `cfg`.
    ///
    /// # Errors
    /// [`LlmError::Weight`] for a missing or mis-shaped tensor; `get`'s errors.
    pub fn load(
        cfg: &LlamaConfig,
        l: usize,
        device: &B::Device,
        mut get: impl FnMut(&str) -> Result<(Vec<f32>, Vec<usize>)>,
    ) -> Result<Self> {
        let expected = crate::weights::LlamaWeights::expected_shapes(cfg);
        let shape_of = |name: &str| {
            expected
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
        };
        let mut fetch = |name: &str| -> Result<(Vec<f32>, Vec<usize>)> {
            let (v, shape) = get(name)?;
            if Some(&shape) != shape_of(name).as_ref() {
                return Err(LlmError::Weight {
                    name: name.to_string(),
                    reason: format!("shape {shape:?}, expected {:?}", shape_of(name)),
                });
            }
            Ok((v, shape))
        };
        let mut mat = |name: &str| -> Result<Tensor<B, 2>> {
            let (v, s) = fetch(name)?;
            Ok(Tensor::from_data(TensorData::new(v, [s[0], s[1]]), device))
        };
        let proj = [
            mat(&Proj::Q.name(l))?,
            mat(&Proj::K.name(l))?,
            mat(&Proj::V.name(l))?,
            mat(&Proj::O.name(l))?,
            mat(&Proj::Gate.name(l))?,
            mat(&Proj::Up.name(l))?,
            mat(&Proj::Down.name(l))?,
        ];
        let mut vec1 = |name: &str| -> Result<Tensor<B, 1>> {
            let (v, s) = fetch(name)?;
            Ok(Tensor::from_data(TensorData::new(v, [s[0]]), device))
        };
        let qkv_bias = if cfg.family.qkv_bias() {
            let b = |p: Proj| p.bias_name(l).expect("q, k and v have biases");
            Some([vec1(&b(Proj::Q))?, vec1(&b(Proj::K))?, vec1(&b(Proj::V))?])
        } else {
            None
        };
        Ok(Self {
            attn_norm: vec1(&format!("model.layers.{l}.input_layernorm.weight"))?,
            mlp_norm: vec1(&format!("model.layers.{l}.post_attention_layernorm.weight"))?,
            proj,
            qkv_bias,
        })
    }
}

/// What every block of a window of `t` tokens shares: RoPE tables and the causal mask.
#[derive(Debug, Clone)]
pub struct BlockContext<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    mask: Tensor<B, 4>,
    config: LlamaConfig,
}

impl<B: Backend> BlockContext<B> {
    /// RoPE tables and the causal mask for windows of `t` tokens of a model configured by `cfg`.
    pub fn new(cfg: &LlamaConfig, t: usize, device: &B::Device) -> Self {
        let half = cfg.head_dim() / 2;
        let mut cos = Vec::with_capacity(t * half);
        let mut sin = Vec::with_capacity(t * half);
        for p in 0..t {
            for i in 0..half {
                let inv = cfg
                    .rope_theta
                    .powf(-((2 * i) as f64) / cfg.head_dim() as f64);
                let a = p as f64 * inv;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        let mk = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [1, 1, t, half]), device);
        let v: Vec<f32> = (0..t * t)
            .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
            .collect();
        Self {
            cos: mk(cos),
            sin: mk(sin),
            mask: Tensor::from_data(TensorData::new(v, [1, 1, t, t]), device),
            config: cfg.clone(),
        }
    }

    /// The same context on another backend (for example lifted into `Autodiff<_>`).
    pub fn map<C: Backend>(&self, f: impl Fn(Tensor<B, 4>) -> Tensor<C, 4>) -> BlockContext<C> {
        BlockContext {
            cos: f(self.cos.clone()),
            sin: f(self.sin.clone()),
            mask: f(self.mask.clone()),
            config: self.config.clone(),
        }
    }
}

/// One decoder block on `x: [b, t, hidden]`: pre-norm attention and pre-norm SwiGLU, both
/// residual, calling `cap` with the input of every linear-layer group of layer `l`.
pub fn block_forward<B: Backend>(
    x: Tensor<B, 3>,
    w: &BlockTensors<B>,
    ctx: &BlockContext<B>,
    l: usize,
    cap: &mut Option<Capture<'_, B>>,
) -> Tensor<B, 3> {
    let cfg = &ctx.config;
    let [b, t, _] = x.dims();
    let hd = cfg.head_dim();
    let (nh, nkv) = (cfg.heads, cfg.kv_heads);
    let group = nh / nkv;
    let [q, k, v, o, gate, up, down] = &w.proj;
    let rope = |y: Tensor<B, 4>| Llama::<B>::apply_rope(y, &ctx.cos, &ctx.sin);
    let xn = rms_norm(x.clone(), &w.attn_norm, cfg.rms_eps);
    capture(cap, Site::AttnIn(l), &xn);
    let heads = |y: Tensor<B, 3>, n: usize| y.reshape([b, t, n, hd]).swap_dims(1, 2);
    let bias = |i: usize| w.qkv_bias.as_ref().map(|b| &b[i]);
    let qh = rope(heads(add_bias(linear(xn.clone(), q), bias(0)), nh));
    let kh = rope(heads(add_bias(linear(xn.clone(), k), bias(1)), nkv));
    let vh = heads(add_bias(linear(xn, v), bias(2)), nkv);
    let expand = |y: Tensor<B, 4>| {
        if group == 1 {
            y
        } else {
            y.reshape([b, nkv, 1, t * hd])
                .repeat_dim(2, group)
                .reshape([b, nh, t, hd])
        }
    };
    let (kh, vh) = (expand(kh), expand(vh));
    let scale = 1.0 / (hd as f64).sqrt();
    let scores = qh.matmul(kh.swap_dims(2, 3)) * scale + ctx.mask.clone();
    let a = softmax(scores, 3)
        .matmul(vh)
        .swap_dims(1, 2)
        .reshape([b, t, nh * hd]);
    capture(cap, Site::AttnOut(l), &a);
    let x = x + linear(a, o);
    let xn = rms_norm(x.clone(), &w.mlp_norm, cfg.rms_eps);
    capture(cap, Site::MlpIn(l), &xn);
    let g = silu(linear(xn.clone(), gate)) * linear(xn, up);
    capture(cap, Site::MlpDown(l), &g);
    x + linear(g, down)
}

/// Final RMSNorm (`norm`) and output projection (`head: [vocab, hidden]`): logits `[b, t, vocab]`
/// of hidden states `x`, the normalized input going to `cap` as [`Site::Head`].
pub(crate) fn head_logits<B: Backend>(
    x: Tensor<B, 3>,
    norm: &Tensor<B, 1>,
    head: &Tensor<B, 2>,
    eps: f64,
    cap: &mut Option<Capture<'_, B>>,
) -> Tensor<B, 3> {
    let xn = rms_norm(x, norm, eps);
    capture(cap, Site::Head, &xn);
    linear(xn, head)
}

fn capture<B: Backend>(cap: &mut Option<Capture<'_, B>>, site: Site, x: &Tensor<B, 3>) {
    if let Some(f) = cap.as_mut() {
        let [b, t, d] = x.dims();
        f(site, x.clone().reshape([b * t, d]));
    }
}

impl<B: Backend> Llama<B> {
    /// The hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// A freshly initialized model (normal(0, 0.02) matrices, unit norms), for training.
    pub fn init(config: &LlamaConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let m = |r: usize, c: usize| {
            Param::from_tensor(Tensor::random(
                [r, c],
                Distribution::Normal(0.0, 0.02),
                device,
            ))
        };
        let ones = |n: usize| Param::from_tensor(Tensor::ones([n], device));
        let (h, hd, i) = (config.hidden, config.head_dim(), config.intermediate);
        Ok(Self {
            embed: m(config.vocab, h),
            layers: (0..config.layers)
                .map(|_| Layer {
                    attn_norm: ones(h),
                    q: m(config.heads * hd, h),
                    k: m(config.kv_heads * hd, h),
                    v: m(config.kv_heads * hd, h),
                    o: m(h, config.heads * hd),
                    mlp_norm: ones(h),
                    gate: m(i, h),
                    up: m(i, h),
                    down: m(h, i),
                    qkv_bias: config.family.qkv_bias().then(|| {
                        [
                            Param::from_tensor(Tensor::zeros([config.heads * hd], device)),
                            Param::from_tensor(Tensor::zeros([config.kv_heads * hd], device)),
                            Param::from_tensor(Tensor::zeros([config.kv_heads * hd], device)),
                        ]
                    }),
                })
                .collect(),
            norm: ones(h),
            lm_head: (!config.tie_embeddings).then(|| m(config.vocab, h)),
            config: config.clone(),
        })
    }

    /// Builds the model from loaded weights.
    ///
    /// # Errors
    /// [`LlmError::Weight`] for a missing tensor.
    pub fn from_weights(w: &LlamaWeights, device: &B::Device) -> Result<Self> {
        let cfg = &w.config;
        let mat = |name: &str| -> Result<Param<Tensor<B, 2>>> {
            let t = w.tensors.get(name).ok_or_else(|| LlmError::Weight {
                name: name.to_string(),
                reason: "missing".into(),
            })?;
            let shape = t.shape().to_vec();
            Ok(Param::from_tensor(Tensor::from_data(
                TensorData::new(t.to_f32()?, [shape[0], shape[1]]),
                device,
            )))
        };
        let vec1 = |name: &str| -> Result<Param<Tensor<B, 1>>> {
            let v = w.f32(name)?;
            let n = v.len();
            Ok(Param::from_tensor(Tensor::from_data(
                TensorData::new(v, [n]),
                device,
            )))
        };
        let mut layers = Vec::with_capacity(cfg.layers);
        for l in 0..cfg.layers {
            let bias = |p: Proj| vec1(&p.bias_name(l).expect("q, k and v have biases"));
            let qkv_bias = if cfg.family.qkv_bias() {
                Some([bias(Proj::Q)?, bias(Proj::K)?, bias(Proj::V)?])
            } else {
                None
            };
            layers.push(Layer {
                qkv_bias,
                attn_norm: vec1(&format!("model.layers.{l}.input_layernorm.weight"))?,
                q: mat(&Proj::Q.name(l))?,
                k: mat(&Proj::K.name(l))?,
                v: mat(&Proj::V.name(l))?,
                o: mat(&Proj::O.name(l))?,
                mlp_norm: vec1(&format!("model.layers.{l}.post_attention_layernorm.weight"))?,
                gate: mat(&Proj::Gate.name(l))?,
                up: mat(&Proj::Up.name(l))?,
                down: mat(&Proj::Down.name(l))?,
            });
        }
        Ok(Self {
            embed: mat(EMBED)?,
            layers,
            norm: vec1(FINAL_NORM)?,
            lm_head: if cfg.tie_embeddings {
                None
            } else {
                Some(mat(LM_HEAD)?)
            },
            config: cfg.clone(),
        })
    }

    /// Every parameter as a named tensor (Hugging Face names), rounded to `dtype`.
    ///
    /// # Errors
    /// [`LlmError::Tensor`] for a dtype other than F32, F16 or BF16.
    pub fn to_tensors(&self, dtype: DType) -> Result<BTreeMap<String, nwc_tensor::Tensor>> {
        let mut out = BTreeMap::new();
        let mut put = |name: String, d: TensorData| -> Result<()> {
            let shape = d.shape.to_vec();
            let v = d.convert::<f32>().to_vec::<f32>().expect("f32");
            out.insert(
                name.clone(),
                nwc_tensor::Tensor::from_f32(name, dtype, shape, &v)?,
            );
            Ok(())
        };
        put(EMBED.into(), self.embed.val().into_data())?;
        for (l, layer) in self.layers.iter().enumerate() {
            put(Proj::Q.name(l), layer.q.val().into_data())?;
            put(Proj::K.name(l), layer.k.val().into_data())?;
            put(Proj::V.name(l), layer.v.val().into_data())?;
            put(Proj::O.name(l), layer.o.val().into_data())?;
            put(Proj::Gate.name(l), layer.gate.val().into_data())?;
            put(Proj::Up.name(l), layer.up.val().into_data())?;
            put(Proj::Down.name(l), layer.down.val().into_data())?;
            if let Some(b) = &layer.qkv_bias {
                for (p, b) in [Proj::Q, Proj::K, Proj::V].into_iter().zip(b) {
                    put(p.bias_name(l).expect("q, k, v"), b.val().into_data())?;
                }
            }
            put(
                format!("model.layers.{l}.input_layernorm.weight"),
                layer.attn_norm.val().into_data(),
            )?;
            put(
                format!("model.layers.{l}.post_attention_layernorm.weight"),
                layer.mlp_norm.val().into_data(),
            )?;
        }
        put(FINAL_NORM.into(), self.norm.val().into_data())?;
        if let Some(h) = &self.lm_head {
            put(LM_HEAD.into(), h.val().into_data())?;
        }
        Ok(out)
    }

    /// Applies RoPE in Hugging Face's "two halves" layout to `x: [b, heads, t, head_dim]`.
    fn apply_rope(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
        let hd = x.dims()[3];
        let half = hd / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.narrow(3, half, half);
        Tensor::cat(
            vec![
                x1.clone() * cos.clone() - x2.clone() * sin.clone(),
                x2 * cos.clone() + x1 * sin.clone(),
            ],
            3,
        )
    }

    /// Logits `[b, t, vocab]` of token ids `[b, t]`, calling `cap` with the input of every
    /// linear-layer group.
    pub fn forward_capture(
        &self,
        ids: Tensor<B, 2, Int>,
        mut cap: Option<Capture<'_, B>>,
    ) -> Tensor<B, 3> {
        let [_, t] = ids.dims();
        let ctx = self.block_context(t, &ids.device());
        let mut x = self.embed_ids(ids);
        for l in 0..self.layers.len() {
            x = block_forward(x, &self.block_tensors(l), &ctx, l, &mut cap);
        }
        self.head(x, &mut cap)
    }

    /// Token embeddings `[b, t, hidden]` of ids `[b, t]`.
    pub fn embed_ids(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = ids.dims();
        self.embed
            .val()
            .select(0, ids.reshape([b * t]))
            .reshape([b, t, self.config.hidden])
    }

    /// Final norm and output projection: logits `[b, t, vocab]` of the last hidden states.
    pub fn head(&self, x: Tensor<B, 3>, cap: &mut Option<Capture<'_, B>>) -> Tensor<B, 3> {
        let head = self.lm_head.as_ref().unwrap_or(&self.embed).val();
        head_logits(x, &self.norm.val(), &head, self.config.rms_eps, cap)
    }

    /// Every weight matrix under its Hugging Face name (the embedding, each layer's seven
    /// projections, and an untied output projection).
    pub(crate) fn matrices(&self) -> Vec<(String, &Param<Tensor<B, 2>>)> {
        let mut m = vec![(EMBED.to_string(), &self.embed)];
        for (l, layer) in self.layers.iter().enumerate() {
            m.extend(
                Proj::ALL
                    .iter()
                    .zip(layer.projections())
                    .map(|(proj, t)| (proj.name(l), t)),
            );
        }
        if let Some(h) = &self.lm_head {
            m.push((LM_HEAD.to_string(), h));
        }
        m
    }

    /// The tensors of decoder block `l` (shared storage, not copies).
    ///
    /// # Panics
    /// When `l` is not a layer of the model.
    pub fn block_tensors(&self, l: usize) -> BlockTensors<B> {
        let layer = &self.layers[l];
        BlockTensors {
            attn_norm: layer.attn_norm.val(),
            mlp_norm: layer.mlp_norm.val(),
            proj: layer.projections().map(Param::val),
            qkv_bias: layer
                .qkv_bias
                .as_ref()
                .map(|b| [b[0].val(), b[1].val(), b[2].val()]),
        }
    }

    /// RoPE tables and causal mask for windows of `t` tokens.
    pub fn block_context(&self, t: usize, device: &B::Device) -> BlockContext<B> {
        BlockContext::new(&self.config, t, device)
    }

    /// Logits `[b, t, vocab]` of token ids `[b, t]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_capture(ids, None)
    }

    /// Mean next-token negative log-likelihood (nats) of `ids: [b, t]`: positions `0..t-1`
    /// predict `1..t`.
    pub fn nll(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 1> {
        let [b, t] = ids.dims();
        let logits = self.forward(ids.clone().narrow(1, 0, t - 1));
        let targets = ids.narrow(1, 1, t - 1).reshape([b, t - 1, 1]);
        let lp = log_softmax(logits, 2).gather(2, targets);
        lp.mean().neg()
    }
}
