//! `cargo xtask test`: the one test command (README, `.ci/run`): fetches the real data the
//! tests need, checks the house rules (`house.rs`: file lengths, no import circle) and the layering (the `nwc` facade with default features off builds no burn),
//! then runs `cargo test --workspace`.

use std::process::Command;

use anyhow::{Context, Result, bail};

/// The data the default test run reads.
pub const TEST_DATA: &[&str] = &[
    "minilm",
    "smollm2",
    "whisper",
    "canterbury",
    "gemma",
    "qwen2",
];

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs the whole default test run; `extra` goes to `cargo test` (e.g. a filter).
pub fn run(extra: &[String]) -> Result<()> {
    let items: Vec<String> = TEST_DATA.iter().map(|s| s.to_string()).collect();
    crate::fetch::run(&items)?;
    crate::house::run(&workspace_root())?;
    layering()?;
    let status = cargo()
        .args(["test", "--workspace"])
        .args(extra)
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("cargo test --workspace failed ({status})");
    }
    Ok(())
}

/// The workspace's root directory (the parent of `xtask/`).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default()
}

/// The dependency rule ARCHITECTURE.md states: with default features off, `nwc` (ECSQ/TCQ
/// compression and decoding, `.nwc` files) depends on no burn crate, and it builds.
pub fn layering() -> Result<()> {
    let out = cargo()
        .args(["tree", "-p", "nwc", "--no-default-features", "-e", "normal"])
        .args(["--prefix", "none", "--format", "{p}"])
        .output()
        .context("running cargo tree")?;
    if !out.status.success() {
        bail!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    let mut crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    crates.sort_unstable();
    crates.dedup();
    let heavy: Vec<&&str> = crates
        .iter()
        .filter(|c| c.starts_with("burn") || c.starts_with("cubecl") || **c == "tokenizers")
        .collect();
    if !heavy.is_empty() {
        bail!("nwc with default features off depends on {heavy:?}: the layering is broken");
    }
    println!(
        "layering: nwc --no-default-features depends on {} crates, no burn",
        crates.len()
    );
    let status = cargo()
        .args(["check", "-p", "nwc", "--no-default-features"])
        .status()
        .context("running cargo check")?;
    if !status.success() {
        bail!("nwc does not build with default features off");
    }
    Ok(())
}
