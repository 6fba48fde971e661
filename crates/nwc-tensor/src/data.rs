//! Where the real weights and texts installed by `cargo xtask fetch` live.

use std::path::PathBuf;

/// The data directory: `$NWC_DATA_DIR` when set and non-empty, else `.data/` at the root of the
/// nwc workspace this crate was built from. Tests, benches, examples and `xtask` all use this.
pub fn data_dir() -> PathBuf {
    match std::env::var_os("NWC_DATA_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.data"),
    }
}
