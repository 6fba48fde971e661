//! Coder benchmarks on real latents: ECSQ symbols of every MiniLM weight matrix (normalized per
//! column, as the pipeline does), coded with their own histogram table.
//!
//! Prints, before criterion's own measurements:
//! 1. bits written vs the ideal −log₂ p under the unquantized empirical distribution, per rate
//!    and table precision (goal ≤ 0.5 % overhead);
//! 2. criterion's own encode/decode timings. Throughput against `constriction` in the same run
//!    is `cargo xtask bench-perf` (`docs/perf.md`);
//! 3. the trellis search on the same values at TCQ's 4-bit step, with rates from the search's own
//!    first pass: chunk by chunk (`viterbi_chunk`, the baseline) beside eight chunks side by side
//!    (`viterbi_chunks`), one thread.
//!
//! Run: `cargo xtask fetch minilm && cargo bench -p nwc-entropy --bench coder`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use ndarray::ArrayView2;
use nwc_entropy::{
    Coder, ContextModel, RateModel, Table, tcq_step_for_bits, viterbi_chunk, viterbi_chunks,
};
use nwc_tensor::{ChunkConfig, chunk, open_weights};

const CHUNKS_PER_SEGMENT: usize = 4096;

/// Normalized values of every 2-D float tensor of MiniLM, chunk-major as the pipeline lays them.
fn real_latents() -> Vec<f32> {
    let path = nwc_tensor::data_dir().join("minilm/model.safetensors");
    let src =
        open_weights(&path).unwrap_or_else(|e| panic!("{e}: run `cargo xtask fetch minilm` first"));
    let mut all = Vec::new();
    for name in src.names() {
        let t = src.tensor(&name).unwrap();
        if let (Some((r, c)), true) = (t.matrix_dims(), t.dtype().is_float()) {
            if r * c < 4096 {
                continue;
            }
            let v = t.to_f32().unwrap();
            let w = ArrayView2::from_shape((r, c), &v).unwrap();
            all.extend_from_slice(chunk(w, &ChunkConfig::default()).unwrap().data());
        }
    }
    all
}

struct Case {
    symbols: Vec<i32>,
    min: i32,
    counts: Vec<u64>,
}

/// Quantizes with the step that gives about `bits` bits per value on unit-RMS data.
fn case(latents: &[f32], bits: f32) -> Case {
    let step = (2.047 - bits).exp2();
    let mut symbols: Vec<i32> = latents.iter().map(|&y| (y / step).round() as i32).collect();
    symbols.truncate(symbols.len() / 16 * 16);
    let (lo, hi) = symbols
        .iter()
        .fold((i32::MAX, i32::MIN), |(a, b), &s| (a.min(s), b.max(s)));
    let lo = lo.max(-2048);
    let hi = hi.min(2047);
    let mut counts = vec![0u64; (hi - lo + 1) as usize];
    for s in &mut symbols {
        *s = (*s).clamp(lo, hi);
        counts[(*s - lo) as usize] += 1;
    }
    Case {
        symbols,
        min: lo,
        counts,
    }
}

fn empirical_bits(counts: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| c as f64 * -(c as f64 / n as f64).log2())
        .sum()
}

fn encode(tables: &[Table], symbols: &[i32]) -> Vec<Vec<u8>> {
    let map = [0u16; 16];
    let coder = Coder::new(tables, &map, 16).unwrap();
    let classes = vec![0u8; symbols.len() / 16];
    coder
        .encode_all(symbols, &classes, CHUNKS_PER_SEGMENT)
        .unwrap()
}

fn decode(tables: &[Table], segments: &[&[u8]], out: &mut [i32]) {
    let map = [0u16; 16];
    let coder = Coder::new(tables, &map, 16).unwrap();
    let classes = vec![0u8; out.len() / 16];
    coder
        .decode_all(segments, &classes, CHUNKS_PER_SEGMENT, out)
        .unwrap();
}

fn print_overhead(latents: &[f32]) {
    println!(
        "\n== bits written vs ideal (real MiniLM latents, {} symbols) ==",
        latents.len()
    );
    println!(
        "{:>6} {:>9} {:>6} {:>11} {:>11} {:>11} {:>10}",
        "rate", "symbols", "prec", "ideal b/s", "table b/s", "written b/s", "overhead"
    );
    for bits in [2.0f32, 4.0, 6.0, 8.0] {
        let c = case(latents, bits);
        let ideal = empirical_bits(&c.counts);
        for precision in [12u32, 14, 15, 16] {
            let precision = precision.max(32 - (c.counts.len() as u32).leading_zeros());
            let table = Table::from_counts(c.min, &c.counts, 0, precision).unwrap();
            let segs = encode(std::slice::from_ref(&table), &c.symbols);
            let written: usize = segs.iter().map(Vec::len).sum();
            let n = c.symbols.len() as f64;
            // Cross-entropy under the quantized table: the part of the overhead due to the table.
            let table_bits: f64 = c
                .counts
                .iter()
                .enumerate()
                .map(|(i, &k)| k as f64 * table.cost_bits(c.min + i as i32))
                .sum();
            println!(
                "{bits:>6} {:>9} {precision:>6} {:>11.4} {:>11.4} {:>11.4} {:>9.3}%",
                c.counts.len(),
                ideal / n,
                table_bits / n,
                written as f64 * 8.0 / n,
                (written as f64 * 8.0 / ideal - 1.0) * 100.0
            );
        }
    }
}

fn benches(cr: &mut Criterion) {
    let latents = real_latents();
    print_overhead(&latents);

    let c = case(&latents[..latents.len().min(4 << 20)], 4.0);
    let tables = [Table::from_counts(c.min, &c.counts, 0, nwc_entropy::DEFAULT_PRECISION).unwrap()];
    let segs = encode(&tables, &c.symbols);
    let parts: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
    let mut out = vec![0i32; c.symbols.len()];
    let mut g = cr.benchmark_group("rans-4bit-minilm");
    g.throughput(Throughput::Elements(c.symbols.len() as u64));
    g.sample_size(20);
    g.bench_function("decode", |b| b.iter(|| decode(&tables, &parts, &mut out)));
    g.bench_function("encode", |b| {
        b.iter(|| encode(&tables, black_box(&c.symbols)))
    });
    g.finish();

    // The trellis search: 64-value runs, as TCQ codes them.
    let n = latents.len().min(1 << 20) / 64 * 64;
    let inv = 1.0 / tcq_step_for_bits(4.0);
    let x: Vec<f32> = latents[..n].iter().map(|v| v * inv).collect();
    let model = ContextModel::tcq8();
    let mut k = vec![0i32; n];
    viterbi_chunks(&model, &x, 64, 0.0, &RateModel::flat(), &mut k);
    // Rates from the symbols of that pass, one table per union (as TCQ fits them).
    let mut unions: [Vec<i32>; 2] = [Vec::new(), Vec::new()];
    for c in k.chunks(64) {
        let mut q = 0u8;
        for &s in c {
            unions[model.context(q) & 1].push(s.clamp(-2048, 2047));
            q = model.next(q, s);
        }
    }
    let fit = |s: &[i32]| {
        let lo = *s.iter().min().unwrap();
        let hi = *s.iter().max().unwrap();
        let mut counts = vec![0u64; (hi - lo + 1) as usize];
        for &v in s {
            counts[(v - lo) as usize] += 1;
        }
        Table::from_counts(lo, &counts, 0, nwc_entropy::DEFAULT_PRECISION).unwrap()
    };
    let (t0, t1) = (fit(&unions[0]), fit(&unions[1]));
    let rate = RateModel::from_tables([&t0, &t1]);
    let lambda = 0.15;
    let mut g = cr.benchmark_group("viterbi-4bit-minilm");
    g.throughput(Throughput::Elements(n as u64));
    g.sample_size(20);
    g.bench_function("chunk by chunk", |b| {
        b.iter(|| {
            for (c, o) in x.chunks(64).zip(k.chunks_mut(64)) {
                viterbi_chunk(&model, black_box(c), lambda, &rate, o);
            }
        })
    });
    g.bench_function("eight chunks side by side", |b| {
        b.iter(|| viterbi_chunks(&model, black_box(&x), 64, lambda, &rate, &mut k))
    });
    g.finish();
}

criterion_group!(coder, benches);

fn main() {
    coder();
    Criterion::default().configure_from_args().final_summary();
}
