//! The metadata records of a Llama `.nwc`: its `config.json` and `tokenizer.json`.

use nwc_format::{Payload, Record};
use nwc_tensor::DType;

/// Metadata record holding the model's `config.json` (`docs/format.md`).
pub const CONFIG_RECORD: &str = "nwc.llama.config.json";
/// Metadata record holding the model's `tokenizer.json` (`docs/format.md`).
pub const TOKENIZER_RECORD: &str = "nwc.llama.tokenizer.json";

/// A metadata record holding `text`.
pub(crate) fn metadata(name: &str, text: &str) -> Record {
    Record {
        name: name.to_string(),
        dtype: DType::U8,
        shape: vec![text.len() as u64],
        payload: Payload::Raw(text.as_bytes().to_vec()),
    }
}
