//! Shared by the integration tests that read real weights from `cargo xtask fetch`.

use std::path::PathBuf;

/// The path of a fetched data file; when it is missing, `None` if `NWC_SKIP_REAL_DATA` is set
/// (the test skips knowingly), else a panic that says what to fetch.
pub fn data(rel: &str) -> Option<PathBuf> {
    let p = nwc::tensor::data_dir().join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("NWC_SKIP_REAL_DATA").is_some() {
        eprintln!(
            "skipping: {} is missing and NWC_SKIP_REAL_DATA is set",
            p.display()
        );
        return None;
    }
    panic!(
        "{} is missing: run `cargo xtask fetch` (or set NWC_SKIP_REAL_DATA=1 to skip)",
        p.display()
    );
}
