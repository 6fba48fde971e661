//! Compresses a real model (safetensors or GGUF) into a `.nwc` file with the ECSQ codec, decodes
//! the file again, and reports the *measured* rate and the error against the original.
//!
//! ```text
//! cargo xtask fetch minilm smollm2
//! cargo run --release --example compress_model                       # MiniLM, 4 bits
//! cargo run --release --example compress_model -- .data/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --bits 6
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use nwc::{CompressOptions, Compressor, EcsqCodec, NwcFile, TensorPolicy, Uniform};

#[derive(Parser)]
#[command(about = "Compress a model into .nwc with ECSQ, decode it, report measured bits/param")]
struct Args {
    /// A .safetensors or .gguf file (default: the MiniLM installed by `cargo xtask fetch`).
    input: Option<PathBuf>,
    /// Target bits per value for the ECSQ step (the printed rate is measured, not this).
    #[arg(long, default_value_t = 4.0)]
    bits: f32,
    /// Where to write the .nwc file (default: next to the target directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Store embedding tables losslessly.
    #[arg(long)]
    lossless_embeddings: bool,
    /// Print every tensor, not only the summary.
    #[arg(long)]
    verbose: bool,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let data = std::env::var_os("NWC_DATA_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.data"),
        PathBuf::from,
    );
    let input = args
        .input
        .unwrap_or_else(|| data.join("minilm/model.safetensors"));
    if !input.exists() {
        bail!(
            "{} does not exist (run `cargo xtask fetch` for the default models)",
            input.display()
        );
    }
    let out = args.out.unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "{}.nwc",
            input
                .file_stem()
                .map_or("model".into(), |s| s.to_string_lossy())
        ))
    });

    let codec = EcsqCodec::for_bits(args.bits)?;
    let options = CompressOptions {
        policy: TensorPolicy {
            code_embeddings: !args.lossless_embeddings,
            ..TensorPolicy::default()
        },
        ..CompressOptions::default()
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {msg}").expect("template"),
    );
    let compressor = Compressor::new(&codec)
        .with_options(options)?
        .with_progress(|r, done, all| {
            bar.set_length(all as u64);
            bar.set_position(done as u64);
            bar.set_message(r.name.clone());
        });
    let report = compressor
        .compress_file(&input, &out, &Uniform)
        .with_context(|| format!("compressing {}", input.display()))?;
    bar.finish_and_clear();

    // Decode the file that was written and compare with the original, tensor by tensor.
    let t0 = Instant::now();
    let file = NwcFile::open(&out)?;
    let source = nwc::tensor::open_weights(&input)?;
    let (mut err, mut sig, mut lossless_ok, mut lossless) = (0.0f64, 0.0f64, 0usize, 0usize);
    let by_name: std::collections::HashMap<_, _> =
        report.tensors.iter().map(|t| (t.name.clone(), t)).collect();
    file.for_each_tensor(&codec, |decoded| {
        let original = source.tensor(decoded.name())?;
        let rep = by_name[decoded.name()];
        if rep.coded {
            let (a, b) = (original.to_f32()?, decoded.to_f32()?);
            for (x, y) in a.iter().zip(&b) {
                err += f64::from(x - y) * f64::from(x - y);
                sig += f64::from(*x) * f64::from(*x);
            }
        } else {
            lossless += 1;
            lossless_ok += usize::from(original.bytes() == decoded.bytes());
        }
        Ok(())
    })?;
    let decode_s = t0.elapsed().as_secs_f64();

    if args.verbose {
        println!(
            "{:<60} {:>12} {:>8} {:>10}",
            "tensor", "params", "bits", "nmse"
        );
        for t in &report.tensors {
            let kind = if t.coded {
                format!("{:>10.3e}", t.nmse())
            } else {
                "lossless".into()
            };
            println!(
                "{:<60} {:>12} {:>8.3} {kind:>10}",
                t.name,
                t.n_params,
                t.bits_per_param()
            );
        }
    }
    let coded: Vec<_> = report.tensors.iter().filter(|t| t.coded).collect();
    println!("model          {}", input.display());
    println!(
        "output         {} ({} bytes)",
        out.display(),
        report.file_bytes
    );
    println!(
        "tensors        {} ({} coded, {} lossless, {}/{} lossless bit-exact after decoding)",
        report.tensors.len(),
        coded.len(),
        lossless,
        lossless_ok,
        lossless
    );
    println!("parameters     {}", report.n_params());
    println!(
        "codec          ECSQ, level-0 step {:.5} (target {} bits)",
        codec.steps()[0],
        args.bits
    );
    println!(
        "bits/param     {:.4} (measured: 8 × file bytes / parameters)",
        report.bits_per_param()
    );
    println!(
        "coded b/p      {:.4} (coded tensors' records only)",
        report.coded_bits_per_param()
    );
    println!(
        "nmse (file)    {:.4e} (coded tensors, decoded from the file)",
        if sig > 0.0 { err / sig } else { 0.0 }
    );
    println!("compress       {:.2} s", report.seconds);
    println!("decode+check   {decode_s:.2} s");
    if lossless_ok != lossless {
        bail!(
            "{} lossless tensors did not round-trip bit-exactly",
            lossless - lossless_ok
        );
    }
    Ok(())
}
