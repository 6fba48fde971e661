//! Text ↔ token ids: a Hugging Face `tokenizers` tokenizer, built from `tokenizer.json`, from a
//! GGUF file's embedded vocabulary and merges, or as a plain byte-level vocabulary.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use nwc_tensor::GgufValue;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{LlmError, Result};

/// A tokenizer (always a `tokenizers` [`Tokenizer`], so it can be saved as `tokenizer.json`).
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.vocab_size())
            .finish()
    }
}

/// Qwen2's pre-tokenizer split (its `tokenizer.json`, and llama.cpp's `LLAMA_VOCAB_PRE_TYPE_QWEN2`).
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tok_err(e: impl std::fmt::Display) -> LlmError {
    LlmError::Tokenizer(e.to_string())
}

/// GPT-2's reversible map from bytes to printable characters (used by byte-level BPE).
fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars = vec!['\0'; 256];
    for &b in &printable {
        chars[b as usize] = char::from_u32(b).expect("Latin-1");
    }
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            chars[b as usize] = char::from_u32(256 + n).expect("valid code point");
            n += 1;
        }
    }
    printable.clear();
    chars
}

impl TextTokenizer {
    /// Loads a `tokenizer.json`.
    ///
    /// # Errors
    /// [`LlmError::Tokenizer`] when the file is missing or not a tokenizer.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = Tokenizer::from_file(path)
            .map_err(|e| LlmError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self { inner })
    }

    /// Parses the text of a `tokenizer.json`.
    ///
    /// # Errors
    /// [`LlmError::Tokenizer`] when it is not a tokenizer.
    pub fn from_json(text: &str) -> Result<Self> {
        Ok(Self {
            inner: Tokenizer::from_str(text).map_err(tok_err)?,
        })
    }

    /// The byte-level BPE stored in GGUF metadata (`tokenizer.ggml.model = "gpt2"`).
    ///
    /// Pre-tokenization follows the model family: SmolLM2 (`tokenizer.ggml.pre = "smollm"`) splits
    /// digits individually before GPT-2's byte-level regex, as its `tokenizer.json` does; Qwen2
    /// (`"qwen2"`) normalizes to NFC and splits with its own regex.
    ///
    /// # Errors
    /// [`LlmError::Tokenizer`] for another tokenizer model or missing vocabulary.
    pub fn from_gguf(meta: &BTreeMap<String, GgufValue>) -> Result<Self> {
        let model = meta
            .get("tokenizer.ggml.model")
            .and_then(GgufValue::as_str)
            .unwrap_or("");
        if model != "gpt2" {
            return Err(LlmError::Tokenizer(format!(
                "GGUF tokenizer model {model:?} (only byte-level BPE, \"gpt2\", is supported)"
            )));
        }
        let strings = |key: &str| -> Result<Vec<&str>> {
            meta.get(key)
                .and_then(GgufValue::as_array)
                .ok_or_else(|| LlmError::Tokenizer(format!("GGUF has no {key}")))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| LlmError::Tokenizer(format!("{key} holds a non-string")))
                })
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let vocab: serde_json::Map<String, Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), json!(i)))
            .collect();
        let pre = meta
            .get("tokenizer.ggml.pre")
            .and_then(GgufValue::as_str)
            .unwrap_or("default");
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let mut normalizer = Value::Null;
        let pre_tokenizer = match pre {
            "smollm" => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level]}),
            // Qwen2's tokenizer.json (and llama.cpp's "qwen2" pre-tokenizer): NFC, then this
            // split, then byte-level mapping without GPT-2's own regex.
            "qwen2" => {
                normalizer = json!({"type": "NFC"});
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated", "invert": false},
                    {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]})
            }
            _ => byte_level,
        };
        let special: Vec<Value> = meta
            .get("tokenizer.ggml.token_type")
            .and_then(GgufValue::as_array)
            .map(|types| {
                types
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.as_u64() == Some(3))
                    .filter_map(|(i, _)| tokens.get(i).map(|c| (i, c)))
                    .map(|(i, c)| json!({"id": i, "content": c, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
                    .collect()
            })
            .unwrap_or_default();
        let j = json!({
            "version": "1.0",
            "added_tokens": special,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "vocab": vocab, "merges": merges},
        });
        Self::from_json(&j.to_string())
    }

    /// A byte-level tokenizer: token `b` is byte `b` (vocabulary 256, no merges).
    pub fn bytes() -> Self {
        let chars = byte_chars();
        let vocab: serde_json::Map<String, Value> = chars
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_string(), json!(i)))
            .collect();
        let j = json!({
            "version": "1.0",
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": false},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                      "vocab": vocab, "merges": []},
        });
        Self::from_json(&j.to_string()).expect("a valid byte-level tokenizer")
    }

    /// Token ids of `text` (no special tokens added).
    ///
    /// # Errors
    /// [`LlmError::Tokenizer`] when the tokenizer fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(tok_err)?
            .get_ids()
            .to_vec())
    }

    /// Text of token ids.
    ///
    /// # Errors
    /// [`LlmError::Tokenizer`] for ids outside the vocabulary.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tok_err)
    }

    /// Vocabulary size (added tokens included).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The tokenizer as GGUF metadata (`tokenizer.ggml.*`, byte-level BPE as llama.cpp reads it):
    /// tokens by id, their types (3 = control for special added tokens, 4 = user-defined for
    /// other added tokens, 1 = normal), merges, and the pre-tokenizer name this crate's
    /// [`TextTokenizer::from_gguf`] would rebuild it from (`smollm`, `qwen2`, or none).
    ///
    /// # Errors
    /// [`LlmError::Tokenizer`] for a tokenizer that is not byte-level BPE or has gaps in its ids.
    pub fn gguf_metadata(&self) -> Result<Vec<(String, GgufValue)>> {
        let j: Value = serde_json::from_str(&self.to_json()?).map_err(tok_err)?;
        if j["model"]["type"] != "BPE" {
            return Err(LlmError::Tokenizer(format!(
                "GGUF output needs a BPE tokenizer, not {}",
                j["model"]["type"]
            )));
        }
        let mut tokens: Vec<Option<(String, i32)>> = Vec::new();
        let mut put = |id: u64, text: &str, ty: i32| {
            let id = id as usize;
            if tokens.len() <= id {
                tokens.resize(id + 1, None);
            }
            tokens[id] = Some((text.to_string(), ty));
        };
        for (text, id) in j["model"]["vocab"].as_object().into_iter().flatten() {
            put(id.as_u64().unwrap_or(u64::MAX >> 1), text, 1);
        }
        for t in j["added_tokens"].as_array().into_iter().flatten() {
            let special = t["special"].as_bool().unwrap_or(false);
            put(
                t["id"].as_u64().unwrap_or(u64::MAX >> 1),
                t["content"].as_str().unwrap_or_default(),
                if special { 3 } else { 4 },
            );
        }
        if tokens.len() > 1 << 24 {
            return Err(LlmError::Tokenizer("token ids out of range".into()));
        }
        let (texts, types): (Vec<GgufValue>, Vec<GgufValue>) = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.map(|(s, ty)| (GgufValue::String(s), GgufValue::I32(ty)))
                    .ok_or_else(|| LlmError::Tokenizer(format!("no token has id {i}")))
            })
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .unzip();
        let merges: Vec<GgufValue> = j["model"]["merges"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| match m {
                Value::Array(pair) => GgufValue::String(format!(
                    "{} {}",
                    pair.first().and_then(Value::as_str).unwrap_or_default(),
                    pair.get(1).and_then(Value::as_str).unwrap_or_default()
                )),
                other => GgufValue::String(other.as_str().unwrap_or_default().to_string()),
            })
            .collect();
        let pre = j["pre_tokenizer"].to_string();
        let mut meta = vec![
            (
                "tokenizer.ggml.model".to_string(),
                GgufValue::String("gpt2".into()),
            ),
            ("tokenizer.ggml.tokens".to_string(), GgufValue::Array(texts)),
            (
                "tokenizer.ggml.token_type".to_string(),
                GgufValue::Array(types),
            ),
            (
                "tokenizer.ggml.merges".to_string(),
                GgufValue::Array(merges),
            ),
        ];
        if pre.contains("\"individual_digits\":true") {
            meta.push((
                "tokenizer.ggml.pre".into(),
                GgufValue::String("smollm".into()),
            ));
        } else if pre.contains("\"Split\"") && j["normalizer"]["type"] == "NFC" {
            meta.push((
                "tokenizer.ggml.pre".into(),
                GgufValue::String("qwen2".into()),
            ));
        }
        Ok(meta)
    }

    /// The tokenizer as `tokenizer.json` text.
    ///
    /// # Errors
    /// [`LlmError::Tokenizer`] when serialization fails.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tok_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_tokenizer_round_trips_any_text() {
        let t = TextTokenizer::bytes();
        let text = "Alice — \"très\" curious!\n\t0123";
        let ids = t.encode(text).unwrap();
        assert_eq!(ids, text.bytes().map(u32::from).collect::<Vec<_>>());
        assert_eq!(t.decode(&ids).unwrap(), text);
        assert_eq!(t.vocab_size(), 256);
        let again = TextTokenizer::from_json(&t.to_json().unwrap()).unwrap();
        assert_eq!(again.encode(text).unwrap(), ids);
    }
}
