//! Mechanics of the pipeline on small synthetic tensors: bad input gets a clear error, odd shapes
//! work, lossless passthrough is exact, codec mismatches are refused.

use nwc::format::{CodecKind, Header, Payload};
use nwc::tensor::{DType, Tensor};
use nwc::{
    CompressOptions, Compressor, Decompressor, EcsqCodec, NwcError, TensorPolicy, WeightCodec,
};

fn matrix(rows: usize, cols: usize, f: impl Fn(usize, usize) -> f32) -> Vec<f32> {
    (0..rows * cols).map(|i| f(i / cols, i % cols)).collect()
}

fn small_policy() -> CompressOptions {
    CompressOptions {
        policy: TensorPolicy {
            min_elements: 1,
            ..TensorPolicy::default()
        },
        ..CompressOptions::default()
    }
}

#[test]
fn shapes_not_divisible_by_16_round_trip() {
    let codec = EcsqCodec::with_step(0.05).unwrap();
    for (rows, cols) in [(1, 1), (17, 3), (33, 5), (100, 7)] {
        let v = matrix(rows, cols, |r, c| {
            ((r * 7 + c * 3) % 11) as f32 * 0.01 - 0.05
        });
        let t = Tensor::from_f32("w", DType::F32, vec![rows, cols], &v).unwrap();
        let (out, rep) = nwc::round_trip_tensor(&codec, &t, &small_policy()).unwrap();
        assert!(rep.coded);
        assert_eq!(out.shape(), &[rows, cols]);
        assert!(rep.nmse() < 0.05, "{rows}×{cols}: {}", rep.nmse());
    }
}

#[test]
fn higher_dimensional_tensors_are_viewed_as_matrices() {
    let codec = EcsqCodec::with_step(0.05).unwrap();
    let v = matrix(8, 3 * 3 * 4, |r, c| (r as f32 - c as f32) * 0.01);
    let t = Tensor::from_f32("conv", DType::F16, vec![8, 4, 3, 3], &v).unwrap();
    let (out, rep) = nwc::round_trip_tensor(&codec, &t, &small_policy()).unwrap();
    assert!(rep.coded);
    assert_eq!(out.shape(), &[8, 4, 3, 3]);
    assert_eq!(out.dtype(), DType::F16);
}

#[test]
fn nan_and_inf_are_refused_with_the_tensor_name() {
    let codec = EcsqCodec::with_step(0.05).unwrap();
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut v = matrix(32, 4, |_, _| 0.1);
        v[37] = bad;
        let t = Tensor::from_f32("blk.3.w", DType::F32, vec![32, 4], &v).unwrap();
        let err = Compressor::new(&codec)
            .with_options(small_policy())
            .unwrap()
            .compress_tensor(&t, None)
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, NwcError::Unrepresentable { .. }), "{msg}");
        assert!(
            msg.contains("blk.3.w") && msg.contains("row 9") && msg.contains("column 1"),
            "{msg}"
        );
    }
}

#[test]
fn constant_and_zero_tensors_round_trip() {
    let codec = EcsqCodec::with_step(0.05).unwrap();
    for value in [0.0f32, 3.5, -1e-3] {
        let v = matrix(48, 8, |_, _| value);
        let t = Tensor::from_f32("c", DType::BF16, vec![48, 8], &v).unwrap();
        let (out, _) = nwc::round_trip_tensor(&codec, &t, &small_policy()).unwrap();
        // A constant column has RMS = |value|, so it normalizes to ±1 and codes exactly.
        assert_eq!(out.to_f32().unwrap(), t.to_f32().unwrap());
    }
}

#[test]
fn lossless_tensors_keep_every_bit() {
    let codec = EcsqCodec::with_step(0.05).unwrap();
    let c = Compressor::new(&codec);
    let ints =
        Tensor::from_bytes("position_ids", DType::I64, vec![1, 4], (0..32).collect()).unwrap();
    let norm = Tensor::from_f32("norm", DType::F32, vec![384], &vec![f32::NAN; 384]).unwrap();
    for t in [ints, norm] {
        let (record, rep) = c.compress_tensor(&t, None).unwrap();
        assert!(!rep.coded && matches!(record.payload, Payload::Raw(_)));
        let back = Decompressor::new(&codec)
            .decompress_record(&record)
            .unwrap();
        assert_eq!(back.bytes(), t.bytes());
    }
}

#[test]
fn importance_levels_spend_bits_where_told() {
    let codec = EcsqCodec::with_step(0.2).unwrap();
    let v = matrix(64, 100, |r, c| {
        (((r * 31 + c * 17) % 29) as f32 - 14.0) / 10.0
    });
    let t = Tensor::from_f32("w", DType::F32, vec![64, 100], &v).unwrap();
    let c = Compressor::new(&codec)
        .with_options(small_policy())
        .unwrap();
    let (_, flat) = c.compress_tensor(&t, None).unwrap();
    let imp: Vec<f32> = (0..100).map(|i| i as f32).collect();
    let (rec, leveled) = c.compress_tensor(&t, Some(&imp)).unwrap();
    assert!(
        leveled.sq_error < flat.sq_error,
        "levels must lower the error"
    );
    let Payload::Coded(p) = rec.payload else {
        panic!("coded")
    };
    assert_eq!(p.levels[99], 3);
    assert_eq!(p.levels[0], 0);
    assert!(
        c.compress_tensor(&t, Some(&imp[..50])).is_err(),
        "wrong importance length"
    );
}

#[test]
fn files_for_another_codec_are_refused() {
    let codec = EcsqCodec::with_step(0.05).unwrap();
    let d = Decompressor::new(&codec);
    assert!(
        d.check_header(&Header::new(CodecKind::Ecsq, [0; 32]))
            .is_ok()
    );
    assert!(matches!(
        d.check_header(&Header::new(CodecKind::Nwc, [1; 32])),
        Err(NwcError::CodecMismatch(_))
    ));
    assert!(matches!(
        d.check_header(&Header::new(CodecKind::Ecsq, [1; 32])),
        Err(NwcError::CodecMismatch(_))
    ));
    assert!(builtin(&Header::new(CodecKind::Nwc, [1; 32])).is_err());
    assert_eq!(codec.kind(), CodecKind::Ecsq);
}

#[test]
fn missing_and_wrong_files_are_clear_errors() {
    let codec = EcsqCodec::with_step(0.05).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let c = Compressor::new(&codec);
    let missing = c.compress_file(
        dir.path().join("nope.safetensors"),
        dir.path().join("o.nwc"),
        &nwc::Uniform,
    );
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .contains("nope.safetensors")
    );
    assert!(
        !dir.path().join("o.nwc").exists(),
        "no partial output is left behind"
    );
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"this is not a model").unwrap();
    assert!(
        c.compress_file(&junk, dir.path().join("o.nwc"), &nwc::Uniform)
            .is_err()
    );
    std::fs::write(dir.path().join("x.nwc"), b"\x89NWC").unwrap();
    assert!(nwc::NwcFile::open(dir.path().join("x.nwc")).is_err());
}

/// A large matrix is coded in row slabs (scales and levels from the whole): with a per-value
/// codec the record is byte for byte the one-piece record, with and without LDLQ; with TCQ
/// (whose rate model is fitted per slab) it still decodes to what the report measured.
#[test]
fn row_slabs_code_like_one_piece() {
    use nalgebra::DMatrix;
    use nwc::ldl::BlockLdl;
    let (rows, cols) = (200, 24);
    let v = matrix(rows, cols, |r, c| {
        let x = ((r * 131 + c * 71) % 97) as f32 / 97.0 - 0.5;
        x * (1.0 + c as f32 * 0.1) + if (r + c) % 53 == 0 { 3.0 } else { 0.0 }
    });
    let t = Tensor::from_f32("w", DType::F32, vec![rows, cols], &v).unwrap();
    let imp: Vec<f32> = (0..cols).map(|c| 1.0 + (c % 5) as f32).collect();
    // A Hessian with correlated columns, so LDLQ feeds errors across columns.
    let h = DMatrix::<f64>::from_fn(cols, cols, |i, j| {
        0.6f64.powi((i as i32 - j as i32).abs()) + if i == j { 0.1 } else { 0.0 }
    });
    let ldl = BlockLdl::new(&h, 4).unwrap();
    let with_slabs = |slab_values| CompressOptions {
        slab_values,
        ..small_policy()
    };
    // Slabs of a quarter of 4·16·24 values: 16 rows (one chunk) each, 13 slabs for 200 rows.
    let (whole, slabbed) = (with_slabs(usize::MAX), with_slabs(4 * 16 * 24));
    let ecsq = EcsqCodec::with_step(0.3).unwrap();
    let tcq = nwc::TcqCodec::with_step(0.3).unwrap();
    for (codec, same_bytes) in [(&ecsq as &dyn WeightCodec, true), (&tcq, false)] {
        for ldlq in [false, true] {
            let run = |o: &CompressOptions| {
                let c = Compressor::new(codec).with_options(o.clone()).unwrap();
                if ldlq {
                    c.compress_tensor_ldlq(&t, Some(&imp), &ldl).unwrap()
                } else {
                    c.compress_tensor(&t, Some(&imp)).unwrap()
                }
            };
            let ((r1, rep1), (r2, rep2)) = (run(&whole), run(&slabbed));
            let what = format!("{:?} ldlq={ldlq}", codec.kind());
            if same_bytes {
                assert_eq!(r1, r2, "{what}");
                // Summed slab by slab: the same terms in another grouping.
                assert!(
                    (rep1.sq_error - rep2.sq_error).abs() <= 1e-12 * rep1.sq_signal,
                    "{what}"
                );
            }
            // The slabbed record decodes to exactly the error its report gives.
            let out = Decompressor::new(codec).decompress_record(&r2).unwrap();
            let err: f64 = out
                .to_f32()
                .unwrap()
                .iter()
                .zip(&v)
                .map(|(a, b)| f64::from(a - b).powi(2))
                .sum();
            assert!(
                (err - rep2.sq_error).abs() <= 1e-9 * rep2.sq_signal,
                "{what}: decoded {err} vs reported {}",
                rep2.sq_error
            );
            assert!(
                (rep1.sq_signal - rep2.sq_signal).abs() <= 1e-12 * rep1.sq_signal,
                "{what}"
            );
            assert!(
                rep2.nmse() < 1.2 * rep1.nmse() + 1e-4,
                "{what}: slabs {} vs whole {}",
                rep2.nmse(),
                rep1.nmse()
            );
        }
    }
}

/// The disk filling up mid-write: a writer that fails after `n` bytes makes compression fail
/// with the I/O error (never a panic, never a success), wherever the failure lands.
#[test]
fn a_writer_that_fails_midway_is_an_error() {
    struct Full(usize);
    impl std::io::Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device",
                ));
            }
            let n = buf.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    struct Two(Vec<Tensor>);
    impl nwc::tensor::WeightSource for Two {
        fn names(&self) -> Vec<String> {
            self.0.iter().map(|t| t.name().to_string()).collect()
        }
        fn tensor(&self, name: &str) -> nwc::tensor::Result<Tensor> {
            Ok(self.0.iter().find(|t| t.name() == name).unwrap().clone())
        }
    }
    let codec = EcsqCodec::with_step(0.05).unwrap();
    let v = matrix(64, 32, |r, c| ((r * 5 + c * 3) % 17) as f32 * 0.01 - 0.08);
    let src = Two(vec![
        Tensor::from_f32("a", DType::F32, vec![64, 32], &v).unwrap(),
        Tensor::from_f32("b", DType::F16, vec![64, 32], &v).unwrap(),
    ]);
    let c = Compressor::new(&codec)
        .with_options(small_policy())
        .unwrap();
    let full = c.compress_model(&src, Vec::new(), &nwc::Uniform).unwrap();
    let size = full.file_bytes as usize;
    for n in [0, 1, 40, size / 3, size / 2, size - 1] {
        let err = c
            .compress_model(&src, Full(n), &nwc::Uniform)
            .expect_err("a full disk is an error");
        assert!(
            err.to_string().contains("no space left"),
            "after {n} bytes: {err}"
        );
    }
    assert!(c.compress_model(&src, Full(size), &nwc::Uniform).is_ok());
}

/// The decoder every codec this build has finds from a header (`nwc::decoder` does this for a
/// file).
fn builtin(h: &Header) -> nwc::Result<Box<dyn nwc::WeightCodec>> {
    nwc::CodecRegistry::decoder(
        &nwc::Codecs::<nwc::codec_net::burn::backend::NdArray>::default(),
        h,
        None,
    )
}

/// Incoherence processing: the record says so, the decoder rotates back (F16 output rounded
/// after the rotation), the report's error is the decoder's, and a NaN is named where it is in
/// the original matrix.
#[test]
fn incoherence_round_trips() {
    use nwc::TcqCodec;
    let (rows, cols) = (96, 64);
    let v = matrix(rows, cols, |r, c| {
        let base = (((r * 31 + c * 17) % 23) as f32 - 11.0) / 40.0;
        // Sparse outliers scattered over the matrix: no per-column or per-row scale absorbs them.
        if (r * cols + c) % 37 == 11 {
            base * 15.0
        } else {
            base
        }
    });
    let t = Tensor::from_f32("w", DType::F16, vec![rows, cols], &v).unwrap();
    let codec = TcqCodec::for_bits(3.0).unwrap();
    let plain_opts = small_policy();
    let rot_opts = CompressOptions {
        incoherence: true,
        ..small_policy()
    };
    let (plain, _) = nwc::round_trip_tensor(&codec, &t, &plain_opts).unwrap();
    let (rot, rot_rep) = nwc::round_trip_tensor(&codec, &t, &rot_opts).unwrap();
    assert_eq!(rot.dtype(), DType::F16);
    assert_eq!(rot.shape(), t.shape());
    let c = Compressor::new(&codec)
        .with_options(rot_opts.clone())
        .unwrap();
    let (record, _) = c.compress_tensor(&t, None).unwrap();
    let typed = nwc::CodedTensor::try_from(&record).unwrap();
    assert!(typed.incoherent);
    let sq = |out: &Tensor| -> f64 {
        let o = out.to_f32().unwrap();
        let w = t.to_f32().unwrap();
        w.iter()
            .zip(&o)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum()
    };
    // The report measured what the decoder returns (up to the final f16 rounding).
    assert!(
        (sq(&rot) - rot_rep.sq_error).abs() < 0.05 * rot_rep.sq_error,
        "{} vs {}",
        sq(&rot),
        rot_rep.sq_error
    );
    // Same order of error as without the rotation (whether it pays is measured on real
    // models, not here).
    assert!(
        sq(&rot) < 2.0 * sq(&plain),
        "{} vs {}",
        sq(&rot),
        sq(&plain)
    );
    let mut bad = v.clone();
    bad[5 * cols + 7] = f32::NAN;
    let t = Tensor::from_f32("w", DType::F32, vec![rows, cols], &bad).unwrap();
    let e = c.compress_tensor(&t, None).unwrap_err().to_string();
    assert!(e.contains("row 5, column 7"), "{e}");
}
