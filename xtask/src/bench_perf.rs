//! `cargo xtask bench-perf`: throughput on this machine's CPU, every figure beside a baseline
//! measured in the same run.
//!
//! 1. Entropy decoding (M symbols/s): nwc's segmented rANS on the 4-bit ECSQ symbols of every
//!    MiniLM matrix, on 1 thread and on all threads, against `constriction`'s ANS coders on the
//!    same symbols (one stream per thread).
//! 2. Whole-model decode and encode (M params/s): MiniLM through ECSQ, TCQ and the learned codec
//!    (shipped checkpoint) at 4 bits, file on disk, every tensor decoded.
//! 3. Compression of a Llama with and without LDLQ (SmolLM2-135M, the calibration Hessians of
//!    `bench-llm`, from its cache when present).
//!
//! The last line is `perf: entropy_decode_msym_s=… ecsq_decode_mparams_s=… tcq_decode_mparams_s=…
//! nwc_decode_mparams_s=… tcq_encode_mparams_s=… tcq_ldlq_mparams_s=…` (all threads) for scripts.
//! It rewrites the generated tables of `perf.md` and keeps what follows them (each round's notes).

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use constriction::stream::Decode;
use constriction::stream::model::SmallContiguousCategoricalEntropyModel;
use constriction::stream::stack::SmallAnsCoder;
use ndarray::ArrayView2;
use nwc::codec_net::burn::backend::NdArray;
use nwc::entropy::{Coder, DEFAULT_PRECISION, Table};
use nwc::llama::{Calibration, Mode, compress_llama};
use nwc::llm::LlamaWeights;
use nwc::tensor::{ChunkConfig, chunk, open_weights};
use nwc::{
    CompressOptions, Compressor, EcsqCodec, NwcCodec, NwcFile, TcqCodec, Uniform, WeightCodec,
};
use rayon::prelude::*;

#[derive(Args, Debug)]
pub struct PerfArgs {
    /// Timed repetitions per measurement (the best is reported).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Skip the Llama compression section (it needs SmolLM2 and its calibration Hessians).
    #[arg(long)]
    no_llama: bool,
    /// Where perf.md goes.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
}

/// Best-of-`n` wall time of `f` in seconds.
fn best_of(n: usize, mut f: impl FnMut()) -> f64 {
    (0..n.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn one_thread() -> Result<rayon::ThreadPool> {
    Ok(rayon::ThreadPoolBuilder::new().num_threads(1).build()?)
}

/// One table row: what, the figure, and the figure of the row it is compared with.
struct Line {
    what: String,
    value: f64,
    base: Option<f64>,
}

struct Section {
    title: String,
    unit: &'static str,
    lines: Vec<Line>,
}

impl Section {
    fn new(title: impl Into<String>, unit: &'static str) -> Self {
        Self {
            title: title.into(),
            unit,
            lines: Vec::new(),
        }
    }

    fn push(&mut self, what: impl Into<String>, value: f64, base: Option<f64>) {
        let l = Line {
            what: what.into(),
            value,
            base,
        };
        println!(
            "{:<58} {:>10.2} {}{}",
            l.what,
            l.value,
            self.unit,
            l.base
                .map(|b| format!("  ({:.2}× baseline)", l.value / b))
                .unwrap_or_default()
        );
        self.lines.push(l);
    }

    fn markdown(&self, md: &mut String) {
        let _ = writeln!(md, "\n## {}\n", self.title);
        let _ = writeln!(md, "| | {} | vs baseline |\n|---|---:|---:|", self.unit);
        for l in &self.lines {
            let _ = writeln!(
                md,
                "| {} | {:.2} | {} |",
                l.what,
                l.value,
                l.base
                    .map(|b| format!("{:.2}×", l.value / b))
                    .unwrap_or_else(|| "baseline".into())
            );
        }
    }
}

/// 4-bit ECSQ symbols of every MiniLM matrix (normalized per column, chunk-major, as the
/// pipeline lays them), clamped to ±2047, with their histogram.
fn minilm_symbols() -> Result<(Vec<i32>, i32, Vec<u64>)> {
    let path = nwc::tensor::data_dir().join("minilm/model.safetensors");
    let src = open_weights(&path)
        .with_context(|| format!("{}: run `cargo xtask fetch minilm`", path.display()))?;
    let step = nwc::entropy::scalar_step_for_bits(4.0);
    let mut symbols = Vec::new();
    for name in src.names() {
        let t = src.tensor(&name)?;
        if let (Some((r, c)), true) = (t.matrix_dims(), t.dtype().is_float()) {
            if r * c < 4096 {
                continue;
            }
            let v = t.to_f32()?;
            let w = ArrayView2::from_shape((r, c), &v)?;
            let chunked = chunk(w, &ChunkConfig::default())?;
            symbols.extend(
                chunked
                    .data()
                    .iter()
                    .map(|&y| ((y / step).round() as i32).clamp(-2047, 2047)),
            );
        }
    }
    symbols.truncate(symbols.len() / 16 * 16);
    let lo = *symbols.iter().min().context("no symbols")?;
    let hi = *symbols.iter().max().context("no symbols")?;
    let mut counts = vec![0u64; (hi - lo + 1) as usize];
    for &s in &symbols {
        counts[(s - lo) as usize] += 1;
    }
    Ok((symbols, lo, counts))
}

fn entropy_section(repeat: usize) -> Result<(Section, f64)> {
    let (symbols, lo, counts) = minilm_symbols()?;
    let n = symbols.len();
    let table = Table::from_counts(lo, &counts, 0, DEFAULT_PRECISION)?;
    let tables = [table];
    let map = [0u16; 16];
    let coder = Coder::new(&tables, &map, 16)?;
    let classes = vec![0u8; n / 16];
    let segments = coder.encode_all(&symbols, &classes, 4096)?;
    let parts: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
    let mut out = vec![0i32; n];
    let threads = rayon::current_num_threads();
    let one = one_thread()?;
    let decode = |out: &mut [i32]| coder.decode_all(&parts, &classes, 4096, out);
    let ours_1 = best_of(repeat, || {
        one.install(|| decode(&mut out).expect("decodes"))
    });
    anyhow::ensure!(out == symbols, "nwc rANS round trip failed");
    let ours_n = best_of(repeat, || decode(&mut out).expect("decodes"));

    // constriction's fastest decoder (16-bit words, lookup model) on the same symbols: one
    // stream per thread, the symbols split evenly.
    let probs: Vec<f64> = counts.iter().map(|&k| k.max(1) as f64).collect();
    let model =
        SmallContiguousCategoricalEntropyModel::from_floating_point_probabilities_perfect(&probs)
            .map_err(|()| anyhow::anyhow!("constriction model"))?;
    let lookup = model.to_lookup_decoder_model();
    let idx: Vec<usize> = symbols.iter().map(|&s| (s - lo) as usize).collect();
    let streams = |k: usize| -> Result<Vec<(Vec<u16>, usize)>> {
        idx.chunks(n.div_ceil(k))
            .map(|part| {
                let mut enc = SmallAnsCoder::new();
                enc.encode_iid_symbols_reverse(part, &model)
                    .map_err(|e| anyhow::anyhow!("constriction encode: {e:?}"))?;
                Ok((
                    enc.into_compressed()
                        .map_err(|e| anyhow::anyhow!("constriction: {e:?}"))?,
                    part.len(),
                ))
            })
            .collect()
    };
    let run = |s: &[(Vec<u16>, usize)]| {
        s.par_iter().for_each(|(words, len)| {
            let mut d = SmallAnsCoder::from_compressed(words.clone()).expect("valid stream");
            let mut acc = 0usize;
            for v in d.decode_iid_symbols(*len, &lookup) {
                acc = acc.wrapping_add(v.expect("decodes"));
            }
            black_box(acc);
        });
    };
    let s1 = streams(1)?;
    let sn = streams(threads)?;
    let c_1 = best_of(repeat, || one.install(|| run(&s1)));
    let c_n = best_of(repeat, || run(&sn));

    let ms = |t: f64| n as f64 / t / 1e6;
    let mut sec = Section::new(
        format!(
            "Entropy decoding: 4-bit ECSQ symbols of every MiniLM matrix ({n} symbols, {:.3} bits/symbol written)",
            8.0 * segments.iter().map(Vec::len).sum::<usize>() as f64 / n as f64
        ),
        "M symbols/s",
    );
    sec.push(
        "constriction SmallAnsCoder + lookup, 1 thread",
        ms(c_1),
        None,
    );
    sec.push("nwc rANS ×4, 1 thread", ms(ours_1), Some(ms(c_1)));
    sec.push(
        format!("constriction SmallAnsCoder + lookup, {threads} threads (one stream each)"),
        ms(c_n),
        None,
    );
    sec.push(
        format!("nwc rANS ×4, {threads} threads"),
        ms(ours_n),
        Some(ms(c_n)),
    );
    Ok((sec, ms(ours_n)))
}

/// One codec through the whole pipeline on MiniLM: encode to a file, decode every tensor.
struct CodecRun {
    bits: f64,
    encode_mps: f64,
    decode_1: f64,
    decode_n: f64,
    /// The first decode of the file on all threads, alone (not a best of).
    decode_first: f64,
}

fn codec_run(
    label: &str,
    codec: &dyn WeightCodec,
    repeat: usize,
    dir: &std::path::Path,
) -> Result<CodecRun> {
    let path = nwc::tensor::data_dir().join("minilm/model.safetensors");
    let src = open_weights(&path)?;
    let mut options = CompressOptions::for_codec(codec);
    options.report_error = false;
    let compressor = Compressor::new(codec).with_options(options)?;
    let file = dir.join(format!("minilm-{}.nwc", label.replace(' ', "-")));
    let t = Instant::now();
    let report = compressor.compress_source_to_file(&*src, &file, &Uniform)?;
    let encode = t.elapsed().as_secs_f64();
    let params = report.n_params() as f64;
    let f = NwcFile::open(&file)?;
    let one = one_thread()?;
    let decode_first = best_of(1, || {
        black_box(f.decode_all(codec).expect("decodes"));
    });
    let decode_1 = best_of(repeat, || {
        black_box(one.install(|| f.decode_all(codec)).expect("decodes"));
    });
    let decode_n = best_of(repeat, || {
        black_box(f.decode_all(codec).expect("decodes"));
    });
    Ok(CodecRun {
        bits: f.bits_per_param()?,
        encode_mps: params / encode / 1e6,
        decode_1: params / decode_1 / 1e6,
        decode_n: params / decode_n / 1e6,
        decode_first: params / decode_first / 1e6,
    })
}

/// The SmolLM2 section, and TCQ's rate with levels + LDLQ (M params/s).
fn llama_section(dir: &std::path::Path) -> Result<(Section, f64)> {
    let path = nwc::tensor::data_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    let w = LlamaWeights::open(&path)
        .with_context(|| format!("{}: run `cargo xtask fetch smollm2`", path.display()))?;
    let texts = [
        "canterbury/lcet10.txt".to_string(),
        "canterbury/plrabn12.txt".to_string(),
    ];
    let h = crate::bench_llm::hessians(&w, &texts, 512, 16)?;
    let t = Instant::now();
    let cal = Calibration::new(&h, &w.config)?;
    let factor = t.elapsed().as_secs_f64();
    let params = w.n_params() as f64;
    let mut sec = Section::new(
        format!(
            "Compressing SmolLM2-135M ({} params; Hessians from bench-llm's cache, damped and factored once in {factor:.1} s)",
            w.n_params()
        ),
        "M params/s (one run each)",
    );
    let ecsq = EcsqCodec::for_bits(4.0)?;
    let tcq = TcqCodec::for_bits(4.0)?;
    let codecs: [(&str, &dyn WeightCodec); 2] = [("ECSQ", &ecsq), ("TCQ", &tcq)];
    let mut tcq_ldlq = f64::NAN;
    for (label, codec) in codecs {
        let mut options = CompressOptions::for_codec(codec);
        options.report_error = false;
        let compressor = Compressor::new(codec).with_options(options)?;
        let rate = |mode: Mode| -> Result<f64> {
            let file = dir.join("smollm2.nwc");
            let t = best_of(1, || {
                let out = std::io::BufWriter::new(std::fs::File::create(&file).expect("file"));
                compress_llama(&compressor, &w, Some(&cal), mode, false, out).expect("compress");
            });
            Ok(params / t / 1e6)
        };
        let levels = rate(Mode::Levels)?;
        let ldlq = rate(Mode::LevelsLdlq)?;
        sec.push(format!("{label} 4 bits, levels"), levels, None);
        sec.push(format!("{label} 4 bits, levels + LDLQ"), ldlq, Some(levels));
        if label == "TCQ" {
            tcq_ldlq = ldlq;
        }
    }
    Ok((sec, tcq_ldlq))
}

pub fn run(a: &PerfArgs) -> Result<()> {
    let threads = rayon::current_num_threads();
    println!(
        "bench-perf on {threads} threads ({} logical CPUs); `cargo xtask bench-perf`",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let dir = tempfile::tempdir()?;
    let (entropy, entropy_n) = entropy_section(a.repeat)?;

    let ecsq = EcsqCodec::for_bits(4.0)?;
    let tcq = TcqCodec::for_bits(4.0)?;
    let nwc = NwcCodec::<NdArray>::default_on(&Default::default())?;
    let mut dec = Section::new(
        "Whole-model decode: MiniLM (22.7 M params) from a .nwc file on disk, every tensor",
        "M params/s",
    );
    let mut enc = Section::new(
        "Whole-model encode: MiniLM to a .nwc file (no error report)",
        "M params/s",
    );
    let mut decode_n = std::collections::BTreeMap::new();
    let mut encode = std::collections::BTreeMap::new();
    // The default codec refines only where it pays (`nwc::codec_net::REFINER_BITS`): at 4 bits
    // no level, so its file decodes as TCQ. The refiner's own speed is the last row.
    let refined = NwcCodec::<NdArray>::default_on(&Default::default())?
        .with_refiner_bits(0.0..=f32::INFINITY);
    let runs: [(&str, &dyn WeightCodec); 4] = [
        ("ECSQ", &ecsq),
        ("TCQ", &tcq),
        ("NWC", &nwc),
        ("NWC refining every level", &refined),
    ];
    let mut ecsq_run = None;
    for (label, codec) in runs {
        let r = codec_run(label, codec, a.repeat, dir.path())?;
        let (base_1, base_n, base_e, base_f) =
            ecsq_run.unwrap_or((r.decode_1, r.decode_n, r.encode_mps, r.decode_first));
        let is_base = ecsq_run.is_none();
        let b = |x: f64| (!is_base).then_some(x);
        dec.push(
            format!("{label} {:.3} bits/param, 1 thread", r.bits),
            r.decode_1,
            b(base_1),
        );
        dec.push(
            format!("{label} {:.3} bits/param, {threads} threads", r.bits),
            r.decode_n,
            b(base_n),
        );
        dec.push(
            format!(
                "{label} {:.3} bits/param, {threads} threads, first decode of the file",
                r.bits
            ),
            r.decode_first,
            b(base_f),
        );
        enc.push(
            format!("{label} {:.3} bits/param, {threads} threads", r.bits),
            r.encode_mps,
            b(base_e),
        );
        decode_n.insert(label, r.decode_n);
        encode.insert(label, r.encode_mps);
        if is_base {
            ecsq_run = Some((r.decode_1, r.decode_n, r.encode_mps, r.decode_first));
        }
    }
    let mut sections = vec![entropy, dec, enc];
    let mut tcq_ldlq = f64::NAN;
    if !a.no_llama {
        let (sec, rate) = llama_section(dir.path())?;
        sections.push(sec);
        tcq_ldlq = rate;
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Throughput\n\n\
         Written by `cargo xtask bench-perf` on a 2-core CPU machine like CI's, no GPU \
         ({threads} rayon threads). Every figure is the best of {} runs and is compared with the \
         baseline row measured beside it in the same run. Whole-model figures count every \
         parameter of the file (uncoded norms and biases included) and include reading the \
         file, entropy decoding, the codec's reconstruction (for NWC the learned synthesis on \
         the CPU backend) and reassembly with the scales. The binaries allocate with mimalloc, \
         which keeps the buffers of decoded tensors for the next decode: the rows \"first decode \
         of the file\" are one decode, not a best of, for what a decode costs before that \
         memory is warm.\n\n\
         GPU figures: `docs/perf-gpu.md` (CUDA on an H200, measured with `scripts/gpu-perf.sh`).",
        a.repeat
    );
    for s in &sections {
        s.markdown(&mut md);
    }
    std::fs::create_dir_all(&a.out)?;
    let line = format!(
        "perf: entropy_decode_msym_s={entropy_n:.1} ecsq_decode_mparams_s={:.2} tcq_decode_mparams_s={:.2} nwc_decode_mparams_s={:.2} tcq_encode_mparams_s={:.2} tcq_ldlq_mparams_s={tcq_ldlq:.2}",
        decode_n["ECSQ"], decode_n["TCQ"], decode_n["NWC"], encode["TCQ"]
    );
    let _ = writeln!(md, "\nThe run's last line: `{line}`.");
    // What the file says after its generated part (each round's notes, by hand) is kept.
    let path = a.out.join("perf.md");
    if let Ok(old) = std::fs::read_to_string(&path) {
        let history = kept_history(&old);
        if !history.is_empty() {
            let _ = write!(md, "\n{history}");
        }
    }
    std::fs::write(&path, &md)?;
    println!("{line}");
    Ok(())
}

/// The part of an earlier `perf.md` after its generated tables (everything after the line
/// "The run's last line: …"), which a new run keeps.
fn kept_history(old: &str) -> &str {
    const MARK: &str = "\nThe run's last line: `";
    match old.find(MARK) {
        Some(i) => {
            let rest = &old[i + MARK.len()..];
            rest.find('\n').map_or("", |j| rest[j + 1..].trim_start())
        }
        None => "",
    }
}

#[cfg(test)]
mod tests {
    use super::kept_history;

    #[test]
    fn a_new_run_keeps_the_notes_after_the_generated_part() {
        let old = "# Throughput\n\n| a | 1 |\n\nThe run's last line: `perf: x=1`.\n\n## This round\n\nnotes\n";
        assert_eq!(kept_history(old), "## This round\n\nnotes\n");
        assert_eq!(kept_history("# Throughput\n\nno marker\n"), "");
        assert_eq!(kept_history("x\nThe run's last line: `perf: x=1`."), "");
    }
}
