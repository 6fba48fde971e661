//! The Llama architecture's hyper-parameters, from GGUF metadata or a Hugging Face `config.json`.

use std::collections::BTreeMap;

use nwc_tensor::GgufValue;
use serde_json::{Value, json};

use crate::error::{LlmError, Result};

/// A model family of the Llama architecture: what differs between them is a configuration, not a
/// different pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Family {
    /// Llama (and SmolLM2): no biases; GGUF stores Q/K rows permuted for interleaved RoPE.
    #[default]
    Llama,
    /// Qwen2: biases on the Q/K/V projections; GGUF keeps Hugging Face's "two halves" RoPE rows.
    Qwen2,
}

impl Family {
    /// The name GGUF (`general.architecture`) and Hugging Face (`model_type`) use.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
        }
    }

    /// The family called `name` in GGUF or `config.json`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "llama" => Some(Family::Llama),
            "qwen2" => Some(Family::Qwen2),
            _ => None,
        }
    }

    /// Whether the Q/K/V projections carry biases.
    pub fn qkv_bias(self) -> bool {
        self == Family::Qwen2
    }

    fn hf_class(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// Hyper-parameters of a Llama-architecture decoder (RMSNorm, RoPE, grouped-query attention,
/// SwiGLU).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// The model family (Llama or Qwen2).
    pub family: Family,
    /// Vocabulary size.
    pub vocab: usize,
    /// Hidden (residual stream) width.
    pub hidden: usize,
    /// SwiGLU inner width.
    pub intermediate: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// Whether the output projection is the token embedding (tied).
    pub tie_embeddings: bool,
    /// Longest context the model was trained for (informational; RoPE itself has no limit).
    pub max_positions: usize,
}

impl LlamaConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Checks that the shapes fit together.
    ///
    /// # Errors
    /// [`LlmError::Config`] naming the first inconsistency.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(LlmError::Config(s));
        if [
            self.vocab,
            self.hidden,
            self.intermediate,
            self.layers,
            self.heads,
            self.kv_heads,
        ]
        .contains(&0)
        {
            return bad(format!("a zero dimension in {self:?}"));
        }
        if !self.hidden.is_multiple_of(self.heads) || !self.head_dim().is_multiple_of(2) {
            return bad(format!(
                "hidden {} is not an even head width times {} heads",
                self.hidden, self.heads
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "{} heads are not a multiple of {} key/value heads",
                self.heads, self.kv_heads
            ));
        }
        if !(self.rope_theta > 0.0 && self.rms_eps > 0.0) {
            return bad("rope_theta and rms_norm_eps must be positive".into());
        }
        Ok(())
    }

    /// Reads the `<arch>.*` keys of a GGUF file's metadata (`llama` or `qwen2`).
    ///
    /// # Errors
    /// [`LlmError::Config`] when the architecture is another one or a key is missing.
    pub fn from_gguf(meta: &BTreeMap<String, GgufValue>) -> Result<Self> {
        let arch = meta
            .get("general.architecture")
            .and_then(GgufValue::as_str)
            .unwrap_or("");
        let family = Family::from_name(arch).ok_or_else(|| {
            LlmError::Config(format!(
                "GGUF architecture {arch:?}, expected \"llama\" or \"qwen2\""
            ))
        })?;
        let int = |k: &str| -> Result<usize> {
            meta.get(&format!("{arch}.{k}"))
                .and_then(GgufValue::as_u64)
                .map(|v| v as usize)
                .ok_or_else(|| LlmError::Config(format!("GGUF key {arch}.{k} missing")))
        };
        let float = |k: &str, default: f64| {
            meta.get(&format!("{arch}.{k}"))
                .and_then(GgufValue::as_f64)
                .unwrap_or(default)
        };
        let heads = int("attention.head_count")?;
        let vocab = match int("vocab_size") {
            Ok(v) => v,
            Err(_) => meta
                .get("tokenizer.ggml.tokens")
                .and_then(GgufValue::as_array)
                .map(<[GgufValue]>::len)
                .ok_or_else(|| LlmError::Config("GGUF has no vocabulary size".into()))?,
        };
        let cfg = Self {
            family,
            vocab,
            hidden: int("embedding_length")?,
            intermediate: int("feed_forward_length")?,
            layers: int("block_count")?,
            heads,
            kv_heads: int("attention.head_count_kv").unwrap_or(heads),
            rope_theta: float("rope.freq_base", 10_000.0),
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
            // Fixed up by the loader: tied when the file has no `output.weight`.
            tie_embeddings: true,
            max_positions: int("context_length").unwrap_or(2048),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration as GGUF metadata (`general.architecture` and the `{arch}.*` keys
    /// llama.cpp reads; [`LlamaConfig::from_gguf`] reads them back).
    pub fn gguf_metadata(&self) -> Vec<(String, GgufValue)> {
        let arch = self.family.name();
        let u = |v: usize| GgufValue::U32(v as u32);
        let mut m = vec![(
            "general.architecture".to_string(),
            GgufValue::String(arch.into()),
        )];
        for (k, v) in [
            ("context_length", u(self.max_positions)),
            ("embedding_length", u(self.hidden)),
            ("block_count", u(self.layers)),
            ("feed_forward_length", u(self.intermediate)),
            ("attention.head_count", u(self.heads)),
            ("attention.head_count_kv", u(self.kv_heads)),
            ("rope.dimension_count", u(self.head_dim())),
            ("rope.freq_base", GgufValue::F32(self.rope_theta as f32)),
            (
                "attention.layer_norm_rms_epsilon",
                GgufValue::F32(self.rms_eps as f32),
            ),
            ("vocab_size", u(self.vocab)),
        ] {
            m.push((format!("{arch}.{k}"), v));
        }
        m
    }

    /// Parses a Hugging Face `config.json` (`LlamaForCausalLM` or `Qwen2ForCausalLM`).
    ///
    /// # Errors
    /// [`LlmError::Config`] for invalid JSON, another architecture or a missing field.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| LlmError::Config(format!("config.json: {e}")))?;
        let mt = v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("llama");
        let family = Family::from_name(mt).ok_or_else(|| {
            LlmError::Config(format!(
                "model_type {mt:?}, expected \"llama\" or \"qwen2\""
            ))
        })?;
        if family == Family::Llama
            && (v.get("attention_bias").and_then(Value::as_bool) == Some(true)
                || v.get("mlp_bias").and_then(Value::as_bool) == Some(true))
        {
            return Err(LlmError::Config(
                "a Llama with attention or MLP biases is not supported".into(),
            ));
        }
        let int = |k: &str| -> Result<usize> {
            v.get(k)
                .and_then(Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| LlmError::Config(format!("config.json: {k} missing")))
        };
        let heads = int("num_attention_heads")?;
        if let Some(hd) = v.get("head_dim").and_then(Value::as_u64)
            && hd as usize * heads != int("hidden_size")?
        {
            return Err(LlmError::Config(format!(
                "head_dim {hd} × {heads} heads ≠ hidden_size (unsupported)"
            )));
        }
        let cfg = Self {
            family,
            vocab: int("vocab_size")?,
            hidden: int("hidden_size")?,
            intermediate: int("intermediate_size")?,
            layers: int("num_hidden_layers")?,
            heads,
            kv_heads: int("num_key_value_heads").unwrap_or(heads),
            rope_theta: v
                .get("rope_theta")
                .and_then(Value::as_f64)
                .unwrap_or(10_000.0),
            rms_eps: v
                .get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
            tie_embeddings: v
                .get("tie_word_embeddings")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            max_positions: int("max_position_embeddings").unwrap_or(2048),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A Hugging Face `config.json` for this model (`LlamaForCausalLM` or `Qwen2ForCausalLM`),
    /// with `torch_dtype` set.
    pub fn to_hf_json(&self, torch_dtype: &str) -> String {
        let mut v = json!({
            "architectures": [self.family.hf_class()],
            "model_type": self.family.name(),
            "vocab_size": self.vocab,
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim(),
            "hidden_act": "silu",
            "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_eps,
            "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": self.max_positions,
            "torch_dtype": torch_dtype,
        });
        if self.family == Family::Llama {
            v["attention_bias"] = json!(false);
            v["mlp_bias"] = json!(false);
        }
        serde_json::to_string_pretty(&v).expect("JSON of plain values")
    }

    /// Parameters of one decoder block: the seven projections, their biases where the family
    /// has them, and the two norms.
    pub fn block_params(&self) -> usize {
        let (h, hd) = (self.hidden, self.head_dim());
        let attn = h * self.heads * hd * 2 + h * self.kv_heads * hd * 2;
        let mlp = 3 * h * self.intermediate;
        let bias = if self.family.qkv_bias() {
            (self.heads + 2 * self.kv_heads) * hd
        } else {
            0
        };
        attn + mlp + 2 * h + bias
    }

    /// Parameters of the model (embedding counted once when tied).
    pub fn n_params(&self) -> usize {
        let (h, per_layer) = (self.hidden, self.block_params());
        let head = if self.tie_embeddings {
            0
        } else {
            self.vocab * h
        };
        self.vocab * h + self.layers * per_layer + h + head
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_json_round_trip_and_validation() {
        let mut cfg = LlamaConfig {
            family: Family::Llama,
            vocab: 256,
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            tie_embeddings: true,
            max_positions: 256,
        };
        let back = LlamaConfig::from_hf_json(&cfg.to_hf_json("float16")).unwrap();
        assert_eq!(back, cfg);
        cfg.family = Family::Qwen2;
        let json = cfg.to_hf_json("bfloat16");
        assert!(json.contains("Qwen2ForCausalLM"), "{json}");
        assert_eq!(LlamaConfig::from_hf_json(&json).unwrap(), cfg);
        cfg.family = Family::Llama;
        assert!(LlamaConfig::from_hf_json("{").is_err());
        assert!(LlamaConfig::from_hf_json(r#"{"model_type":"bert"}"#).is_err());
        let mut bad = cfg.clone();
        bad.kv_heads = 3;
        assert!(bad.validate().is_err());
        bad = cfg;
        bad.heads = 5;
        assert!(bad.validate().is_err());
    }
}
