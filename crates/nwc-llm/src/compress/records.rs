//! The metadata records of a Llama `.nwc`: its `config.json` and `tokenizer.json`.

use nwc_format::Record;
use nwc_pipeline::Result;

/// Metadata record holding the model's `config.json` (`docs/format.md`).
pub const CONFIG_RECORD: &str = "nwc.llama.config.json";
/// Metadata record holding the model's `tokenizer.json` (`docs/format.md`).
pub const TOKENIZER_RECORD: &str = "nwc.llama.tokenizer.json";

/// A metadata record holding `text` (a zstd frame of it when it is long, `docs/format.md`).
pub(crate) fn metadata(name: &str, text: &str) -> Result<Record> {
    Ok(nwc_format::metadata_record(name, text.as_bytes())?)
}
