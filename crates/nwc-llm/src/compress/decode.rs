//! Decoding a Llama `.nwc` back into weights, whole or tensor by tensor.

use nwc_format::{FileReader, Payload};
use nwc_pipeline::{NwcError, NwcFile, Result, WeightCodec};
use nwc_tensor::{DType, Tensor};

use super::records::{CONFIG_RECORD, TOKENIZER_RECORD};
use crate::config::LlamaConfig;
use crate::tokenizer::TextTokenizer;
use crate::weights::LlamaWeights;

/// Decodes a `.nwc` Llama back into weights. The tokenizer comes from the file when it holds
/// one, else from `tokenizer`.
///
/// # Errors
/// [`NwcError::NotLlama`] when the file has no Llama configuration or no tokenizer is available;
/// decoding and shape errors.
pub fn decode_llama(
    file: &NwcFile,
    codec: &dyn WeightCodec,
    tokenizer: Option<TextTokenizer>,
) -> Result<LlamaWeights> {
    decode_llama_from(&file.reader()?, codec, tokenizer)
}

/// [`decode_llama`] from a parsed container (records decoded in parallel).
pub(crate) fn decode_llama_from(
    reader: &FileReader<'_>,
    codec: &dyn WeightCodec,
    tokenizer: Option<TextTokenizer>,
) -> Result<LlamaWeights> {
    let (config, tokenizer) = llama_metadata(reader, tokenizer)?;
    let tensors = nwc_pipeline::decode_records(reader, codec)?
        .into_iter()
        .filter(|t| !nwc_format::is_metadata(t.name()))
        .map(|t| (t.name().to_string(), t))
        .collect();
    Ok(LlamaWeights::from_parts(config, tensors, tokenizer)?)
}

/// The configuration and tokenizer records of a Llama `.nwc`; the tokenizer falls back to
/// `tokenizer` when the file holds none.
fn llama_metadata(
    reader: &FileReader<'_>,
    tokenizer: Option<TextTokenizer>,
) -> Result<(LlamaConfig, TextTokenizer)> {
    let text = |name: &str| -> Result<Option<String>> {
        match reader.index().iter().position(|e| e.name == name) {
            None => Ok(None),
            Some(i) => match reader.record(i)?.payload {
                Payload::Raw(b) => String::from_utf8(nwc_format::metadata_content(&b)?)
                    .map(Some)
                    .map_err(|_| NwcError::Corrupt {
                        name: name.to_string(),
                        reason: "metadata is not UTF-8".into(),
                    }),
                Payload::Coded(_) => Err(NwcError::Corrupt {
                    name: name.to_string(),
                    reason: "a metadata record is coded".into(),
                }),
            },
        }
    };
    let config = LlamaConfig::from_hf_json(
        &text(CONFIG_RECORD)?
            .ok_or_else(|| NwcError::NotLlama(format!("the file has no {CONFIG_RECORD}")))?,
    )?;
    let tokenizer = match text(TOKENIZER_RECORD)? {
        Some(t) => TextTokenizer::from_json(&t)?,
        None => tokenizer.ok_or_else(|| {
            NwcError::NotLlama("the file holds no tokenizer and none was given".into())
        })?,
    };
    Ok((config, tokenizer))
}

/// Whether `file` is a Llama `.nwc` (it holds the model's configuration).
///
/// # Errors
/// As [`NwcFile::reader`].
pub fn is_llama(file: &NwcFile) -> Result<bool> {
    file.has_record(CONFIG_RECORD)
}

/// Decodes `file` to `output` with `codec` (see [`NwcFile::decoder`] for the file's own): a
/// Llama `.nwc` becomes a GGUF file llama.cpp loads when `output` ends in `.gguf`, else a
/// Hugging Face directory (`config.json`, `tokenizer.json`, `model.safetensors`) unless
/// `output` ends in `.safetensors` (weights in `dtype`, F16 by default); any other file a
/// safetensors file with the original dtypes (or `dtype`). Every file is written whole or not
/// at all.
///
/// # Errors
/// Decoding errors; [`NwcError::Config`] for a dtype that is not F32, F16 or BF16 (or, for a
/// Hugging Face directory, any other dtype save_hf refuses); I/O errors naming the path.
pub fn decode_to(
    file: &NwcFile,
    codec: &dyn WeightCodec,
    output: impl AsRef<std::path::Path>,
    dtype: Option<DType>,
) -> Result<()> {
    let output = output.as_ref();
    let ext = |e: &str| output.extension().is_some_and(|x| x == e);
    match (is_llama(file)?, ext("gguf")) {
        (true, true) => {
            decode_llama(file, codec, None)?.save_gguf(output, dtype.unwrap_or(DType::F16))?;
        }
        (false, true) => {
            return Err(NwcError::NotLlama(format!(
                "{}: GGUF output needs a Llama-family .nwc",
                output.display()
            )));
        }
        (true, false) if !ext("safetensors") => {
            decode_llama(file, codec, None)?.save_hf(output, dtype.unwrap_or(DType::F16))?;
        }
        _ => file.to_safetensors(codec, output, dtype)?,
    }
    Ok(())
}

/// A Llama `.nwc` file as a [`ModelSource`](crate::stream::ModelSource): each tensor is decoded when asked for, so a
/// compressed model larger than memory can be evaluated one block at a time
/// ([`crate::stream::layerwise_perplexity`]).
pub struct NwcLlamaSource<'c> {
    file: NwcFile,
    codec: &'c dyn WeightCodec,
    config: LlamaConfig,
    tokenizer: TextTokenizer,
    names: Vec<String>,
}

impl std::fmt::Debug for NwcLlamaSource<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NwcLlamaSource")
            .field("config", &self.config)
            .field("tensors", &self.names.len())
            .finish()
    }
}

impl<'c> NwcLlamaSource<'c> {
    /// Opens a Llama `.nwc` written by `compress_llama` or `compress_llama_layerwise`. The
    /// tokenizer comes from the file when it holds one, else from `tokenizer`.
    ///
    /// # Errors
    /// [`NwcError::CodecMismatch`] when `codec` is not the file's; [`NwcError::NotLlama`] when the
    /// file has no Llama configuration or no tokenizer is available; container errors.
    pub fn open(
        path: impl AsRef<std::path::Path>,
        codec: &'c dyn WeightCodec,
        tokenizer: Option<TextTokenizer>,
    ) -> Result<Self> {
        let file = NwcFile::open(path)?;
        let reader = file.reader()?;
        nwc_pipeline::Decompressor::new(codec).check_header(reader.header())?;
        let (config, tokenizer) = llama_metadata(&reader, tokenizer)?;
        let mut names: Vec<String> = reader
            .index()
            .iter()
            .map(|e| e.name.clone())
            .filter(|n| !nwc_format::is_metadata(n))
            .collect();
        names.sort();
        drop(reader);
        Ok(Self {
            file,
            codec,
            config,
            tokenizer,
            names,
        })
    }
}

impl crate::stream::ModelSource for NwcLlamaSource<'_> {
    fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn tensor(&self, name: &str) -> crate::error::Result<Tensor> {
        self.file
            .tensor(self.codec, name)
            .map_err(|e| crate::error::LlmError::Source {
                name: name.to_string(),
                source: Box::new(e),
            })
    }

    fn fingerprint(&self) -> [u8; 32] {
        crate::calib::fingerprint(&[self.file.bytes()])
    }
}
