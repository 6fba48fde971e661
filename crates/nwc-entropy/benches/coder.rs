//! Coder benchmarks on real latents: ECSQ symbols of every MiniLM weight matrix (normalized per
//! column, as the pipeline does), coded with their own histogram table.
//!
//! Prints, before criterion's own measurements:
//! 1. bits written vs the ideal −log₂ p under the unquantized empirical distribution, per rate
//!    and table precision (goal ≤ 0.5 % overhead);
//! 2. criterion's own encode/decode timings. Throughput against `constriction` in the same run
//!    is `cargo xtask bench-perf` (`docs/perf.md`).
//!
//! Run: `cargo xtask fetch minilm && cargo bench -p nwc-entropy --bench coder`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group};
use ndarray::ArrayView2;
use nwc_entropy::{Coder, Table};
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
}

criterion_group!(coder, benches);

fn main() {
    coder();
    Criterion::default().configure_from_args().final_summary();
}
