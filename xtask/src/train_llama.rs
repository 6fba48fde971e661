//! `cargo xtask train-llama`: trains the small byte-level Llama that `compress_llama` runs on when
//! given no arguments, on public-domain text (Canterbury corpus, Alice in Wonderland held out),
//! and writes it as a Hugging Face directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use nwc::codec_net::burn::backend::{Autodiff, NdArray};
use nwc::llm::{
    Llama, LlamaConfig, LlamaWeights, LmTrainConfig, TextTokenizer, perplexity, train_lm,
};
use nwc::tensor::DType;

use crate::bench_llm::load_text;

/// Training texts (relative to the data directory). `alice29.txt` is held out for evaluation.
pub const TRAIN_TEXTS: [&str; 3] = [
    "canterbury/asyoulik.txt",
    "canterbury/lcet10.txt",
    "canterbury/plrabn12.txt",
];

#[derive(Args, Debug)]
pub struct TrainLlamaArgs {
    /// Optimizer steps.
    #[arg(long, default_value_t = 1200)]
    steps: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Bytes per sequence.
    #[arg(long, default_value_t = 128)]
    ctx: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    /// Hidden width.
    #[arg(long, default_value_t = 192)]
    hidden: usize,
    /// Decoder layers.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    /// Output directory (a Hugging Face model directory).
    #[arg(long, default_value = "examples/assets/tiny-llama")]
    out: PathBuf,
}

pub fn run(a: &TrainLlamaArgs) -> Result<()> {
    let t0 = Instant::now();
    let tok = TextTokenizer::bytes();
    let mut text = String::new();
    for t in TRAIN_TEXTS {
        text.push_str(&load_text(t)?);
    }
    let ids = tok.encode(&text)?;
    let cfg = LlamaConfig {
        family: nwc::llm::Family::Llama,
        vocab: 256,
        hidden: a.hidden,
        intermediate: a.hidden * 8 / 3 / 32 * 32,
        layers: a.layers,
        heads: a.hidden / 48,
        kv_heads: (a.hidden / 48 / 2).max(1),
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        tie_embeddings: true,
        // RoPE does not extrapolate past the trained length: say so in the config.
        max_positions: a.ctx,
    };
    println!(
        "training a byte-level Llama ({} params: hidden {}, {} layers, {} heads / {} KV, FFN {}) on {} bytes of {} for {} steps of {}×{}",
        cfg.n_params(),
        cfg.hidden,
        cfg.layers,
        cfg.heads,
        cfg.kv_heads,
        cfg.intermediate,
        ids.len(),
        TRAIN_TEXTS.join(" + "),
        a.steps,
        a.batch,
        a.ctx
    );
    let tc = LmTrainConfig {
        steps: a.steps,
        batch: a.batch,
        ctx: a.ctx,
        lr: a.lr,
        ..LmTrainConfig::default()
    };
    let device = Default::default();
    let model = train_lm::<Autodiff<NdArray>>(&cfg, &tc, &ids, &device, 50, |step, loss| {
        println!(
            "step {step:>5}  loss {loss:.4} nats/byte ({:.3} bits/byte)  {:.0} s",
            loss / std::f64::consts::LN_2,
            t0.elapsed().as_secs_f64()
        );
    })?;
    let held = tok.encode(&load_text("canterbury/alice29.txt")?)?;
    // Evaluate the model as it will be stored (f16), so the number matches what users load.
    let weights = LlamaWeights::from_parts(cfg, model.to_tensors(DType::F16)?, tok)?;
    let stored = Llama::<NdArray>::from_weights(&weights, &device)?;
    let p = perplexity(&stored, &held, a.ctx, 64, &device, |_, _| {})?;
    println!(
        "held-out alice29.txt: perplexity {:.4} per byte ({:.3} bits/byte) over {} bytes in {} windows of {}",
        p.ppl,
        p.nll / std::f64::consts::LN_2,
        p.tokens,
        p.windows,
        p.ctx
    );
    weights.save_hf(&a.out, DType::F16)?;
    // Excerpts the example runs on offline: held-out evaluation text, and calibration text from
    // the training set (disjoint from the evaluation text).
    std::fs::write(
        a.out.join("eval.txt"),
        excerpt(&load_text("canterbury/alice29.txt")?),
    )?;
    std::fs::write(
        a.out.join("calibration.txt"),
        excerpt(&load_text("canterbury/lcet10.txt")?),
    )?;
    println!(
        "wrote {} ({:.0} s)",
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The first 32 KiB of a text, cut at a character boundary.
fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(32 * 1024);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
