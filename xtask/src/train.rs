//! `cargo xtask train`: trains the codec on real weights and writes a checkpoint.
//!
//! Data: every 2-D float weight of the installed unquantized models (MiniLM fp32 safetensors and
//! Whisper tiny.en fp16 CTranslate2), chunk-and-normalized exactly as at compression time. Whole
//! tensors of MiniLM's last encoder layer are held out for evaluation and for the R-D bench.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use ndarray::ArrayView2;
use nwc_codec::{Checkpoint, CodecConfig, TrainConfig, train};
use nwc_tensor::{ChunkConfig, chunk, open_weights};

/// Names containing this are held out (never trained on).
pub const HELDOUT: &str = "encoder.layer.5.";
/// EmbeddingGemma decoder layer held out of training for the benches.
pub const GEMMA_HELDOUT: &str = "layers.11.";

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Size {
    /// Width 128, 2 blocks: trains in minutes on a CPU.
    Small,
    /// The paper's: width 512, 4 blocks (meant for a GPU).
    Paper,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendKind {
    /// CPU (burn-ndarray).
    Cpu,
    /// WGPU (needs `--features wgpu`).
    Wgpu,
    /// CUDA (needs `--features cuda`).
    Cuda,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Network size.
    #[arg(long, value_enum, default_value_t = Size::Small)]
    size: Size,
    /// Rate–distortion trade-off λ (the MSE weight; larger gives more bits).
    #[arg(long, default_value_t = 300.0)]
    lambda: f32,
    /// Optimizer steps (added to the resumed checkpoint's).
    #[arg(long, default_value_t = 3000)]
    steps: u64,
    /// Chunks per batch.
    #[arg(long, default_value_t = 2048)]
    batch: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Steps between progress lines and checkpoint saves.
    #[arg(long, default_value_t = 100)]
    log_every: u64,
    /// Where to write the checkpoint (rewritten at every report, so a run can be resumed).
    #[arg(long, default_value = "checkpoints/nwc-small.ckpt")]
    out: PathBuf,
    /// Resume from this checkpoint.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Backend to train on.
    #[arg(long, value_enum, default_value_t = BackendKind::Cpu)]
    backend: BackendKind,
    /// Seed.
    #[arg(long, default_value_t = 0x6e77_6321)]
    seed: u64,
    /// Add Whisper tiny.en's matrices to the training data (default: MiniLM only, which is what
    /// the shipped checkpoint was trained on; see docs/training.md for the comparison).
    #[arg(long)]
    whisper: bool,
    /// Add EmbeddingGemma's decoder layers (layer 11 held out) to the training data.
    #[arg(long)]
    gemma: bool,
    /// Train the trellis refiner (the shipped variant: TCQ-coded weights, learned synthesis)
    /// instead of the paper's autoencoder. `--lambda` does not apply; rates are drawn from
    /// `--min-bits..--max-bits`.
    #[arg(long)]
    refiner: bool,
    /// Lowest nominal rate the refiner trains at.
    #[arg(long, default_value_t = 1.5)]
    min_bits: f32,
    /// Highest nominal rate the refiner trains at.
    #[arg(long, default_value_t = 8.5)]
    max_bits: f32,
    /// Override the hidden width of the chosen size.
    #[arg(long)]
    width: Option<usize>,
    /// Override the number of residual blocks of the chosen size.
    #[arg(long)]
    blocks: Option<usize>,
}

/// Normalized chunks of every 2-D float weight of the training models: (train, held-out).
/// MiniLM is required; Whisper tiny.en is added when `with_whisper`, EmbeddingGemma's decoder
/// layers (not its 201 M-parameter embedding) when `with_gemma`.
pub fn training_chunks(with_whisper: bool, with_gemma: bool) -> Result<(Vec<f32>, Vec<f32>)> {
    let (mut train, mut held) = (Vec::new(), Vec::new());
    let minilm = nwc_tensor::data_dir().join("minilm/model.safetensors");
    add_model(&minilm, &mut train, &mut held)
        .with_context(|| format!("{}: run `cargo xtask fetch minilm`", minilm.display()))?;
    if with_gemma {
        let gemma = nwc_tensor::data_dir().join("gemma/model.safetensors");
        add_model(&gemma, &mut train, &mut held)
            .with_context(|| format!("{}: run `cargo xtask fetch gemma`", gemma.display()))?;
    }
    if with_whisper {
        let whisper = nwc_tensor::data_dir().join("whisper/model.bin");
        add_model(&whisper, &mut train, &mut held)
            .with_context(|| format!("{}: run `cargo xtask fetch whisper`", whisper.display()))?;
    }
    if train.is_empty() || held.is_empty() {
        bail!("no training data found");
    }
    Ok((train, held))
}

fn add_model(path: &std::path::Path, train: &mut Vec<f32>, held: &mut Vec<f32>) -> Result<()> {
    let src = open_weights(path)?;
    for name in src.names() {
        // Whisper's encoder position encodings are fixed sinusoids, not learned weights; Gemma's
        // embedding is most of its parameters and would drown the layers.
        if name.contains("position_encodings") || name == "embed_tokens.weight" {
            continue;
        }
        let t = src.tensor(&name)?;
        let (Some((r, c)), true) = (t.matrix_dims(), t.dtype().is_float()) else {
            continue;
        };
        if r * c < 4096 {
            continue;
        }
        let v = t.to_f32()?;
        let ch = chunk(ArrayView2::from_shape((r, c), &v)?, &ChunkConfig::default())?;
        let dst = if name.contains(HELDOUT) || name.starts_with(GEMMA_HELDOUT) {
            &mut *held
        } else {
            &mut *train
        };
        dst.extend_from_slice(ch.data());
    }
    Ok(())
}

pub fn run(a: &TrainArgs) -> Result<()> {
    let mut cfg = match a.size {
        Size::Small => CodecConfig::small(),
        Size::Paper => CodecConfig::default(),
    };
    if a.refiner {
        cfg.variant = nwc_codec::Variant::TrellisRefiner;
    }
    cfg.width = a.width.unwrap_or(cfg.width);
    cfg.blocks = a.blocks.unwrap_or(cfg.blocks);
    let tc = TrainConfig {
        lambda: a.lambda,
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        log_every: a.log_every,
        seed: a.seed,
        ..TrainConfig::default()
    };
    let (data, held) = training_chunks(a.whisper, a.gemma)?;
    let resume = a.resume.as_ref().map(Checkpoint::load).transpose()?;
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if a.refiner {
        return refine(a, &cfg, &data, &held, resume.as_ref());
    }
    println!(
        "training {:?} (width {}, {} blocks) on {} chunks, {} held out; λ = {}, {} steps of {}",
        a.size,
        cfg.width,
        cfg.blocks,
        data.len() / 16,
        held.len() / 16,
        tc.lambda,
        tc.steps,
        tc.batch
    );
    match a.backend {
        BackendKind::Cpu => go::<
            nwc_codec::burn::backend::Autodiff<nwc_codec::burn::backend::NdArray>,
        >(&cfg, &tc, &data, &held, resume.as_ref(), &a.out),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => {
            go::<nwc_codec::burn::backend::Autodiff<nwc_codec::burn::backend::Wgpu>>(
                &cfg,
                &tc,
                &data,
                &held,
                resume.as_ref(),
                &a.out,
            )
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            go::<nwc_codec::burn::backend::Autodiff<nwc_codec::burn::backend::Cuda>>(
                &cfg,
                &tc,
                &data,
                &held,
                resume.as_ref(),
                &a.out,
            )
        }
        #[allow(unreachable_patterns)]
        other => {
            bail!("backend {other:?} is not compiled in: build xtask with --features wgpu or cuda")
        }
    }
}

fn go<B: nwc_codec::burn::tensor::backend::AutodiffBackend>(
    cfg: &CodecConfig,
    tc: &TrainConfig,
    data: &[f32],
    held: &[f32],
    resume: Option<&Checkpoint>,
    out: &std::path::Path,
) -> Result<()> {
    let device = B::Device::default();
    let t0 = Instant::now();
    println!(
        "{:>7} {:>9} {:>8} {:>10} {:>11} {:>11} {:>11} {:>11} {:>8}",
        "step", "loss", "bits", "held bits", "mse L0", "mse L1", "mse L2", "mse L3", "secs"
    );
    let c = train::<B>(
        cfg,
        tc,
        data,
        held,
        &device,
        resume,
        |s| {
            println!(
                "{:>7} {:>9.4} {:>8.4} {:>10.4} {:>11.3e} {:>11.3e} {:>11.3e} {:>11.3e} {:>8.0}",
                s.step,
                s.loss,
                s.bits,
                s.heldout_bits,
                s.heldout_mse[0],
                s.heldout_mse[1],
                s.heldout_mse[2],
                s.heldout_mse[3],
                t0.elapsed().as_secs_f64()
            );
        },
        |c| {
            if let Err(e) = c.save(out) {
                eprintln!("cannot save checkpoint: {e}");
            }
        },
    )?;
    wrote(out, &c);
    Ok(())
}

/// `--refiner`: trains the trellis refiner on the CPU (the only backend it has been run on).
fn refine(
    a: &TrainArgs,
    cfg: &CodecConfig,
    data: &[f32],
    held: &[f32],
    resume: Option<&Checkpoint>,
) -> Result<()> {
    type B = nwc_codec::burn::backend::Autodiff<nwc_codec::burn::backend::NdArray>;
    if !matches!(a.backend, BackendKind::Cpu) {
        bail!("the refiner trains on the CPU backend");
    }
    let rc = nwc_codec::RefineConfig {
        steps: a.steps,
        batch: a.batch,
        lr: a.lr,
        seed: a.seed,
        log_every: a.log_every,
        bits: (a.min_bits, a.max_bits),
    };
    println!(
        "training the trellis refiner (width {}, {} blocks) on {} chunks, {} held out; {} steps of {}, rates {}..{} bits",
        cfg.width,
        cfg.blocks,
        data.len() / 16,
        held.len() / 16,
        rc.steps,
        rc.batch,
        rc.bits.0,
        rc.bits.1
    );
    let t0 = Instant::now();
    println!(
        "{:>7} {:>11}  held-out MSE refined/TCQ at {:?} bits {:>8}",
        "step",
        "train ratio",
        nwc_codec::EVAL_BITS,
        "secs"
    );
    let c = nwc_codec::train_refiner::<B>(
        cfg,
        &rc,
        data,
        held,
        &Default::default(),
        resume,
        |s| {
            let r: Vec<String> = s.heldout_ratio.iter().map(|r| format!("{r:.4}")).collect();
            println!(
                "{:>7} {:>11.4}  {} {:>8.0}",
                s.step,
                s.train_ratio,
                r.join(" "),
                t0.elapsed().as_secs_f64()
            );
        },
        |c| {
            if let Err(e) = c.save(&a.out) {
                eprintln!("cannot save checkpoint: {e}");
            }
        },
    )?;
    wrote(&a.out, &c);
    Ok(())
}

/// The line that closes a training run: where the checkpoint went and its identity.
fn wrote(out: &std::path::Path, c: &Checkpoint) {
    let hash: String = c.hash().iter().map(|b| format!("{b:02x}")).collect();
    println!(
        "wrote {} ({} bytes, {} steps, sha256 {hash})",
        out.display(),
        c.bytes().len(),
        c.train_steps()
    );
}
