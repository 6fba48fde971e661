//! The learned codec through the whole pipeline on the CPU backend, in both variants: shapes,
//! determinism, rate control, and refusal of files made with another checkpoint.

use nwc::codec_net::burn::backend::NdArray;
use nwc::codec_net::{Checkpoint, CodecConfig, DEFAULT_STEPS, NwcModel};
use nwc::format::{CodecKind, Header, Payload};
use nwc::tensor::{DType, Tensor};
use nwc::{Compressor, Decompressor, NwcCodec, NwcError, WeightCodec};

fn weight(rows: usize, cols: usize) -> Tensor {
    let mut rng = nwc::entropy::SplitMix64(11);
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| (rng.next_f64() as f32 - 0.5) * 0.05)
        .collect();
    Tensor::from_f32("blk.0.w", DType::F32, vec![rows, cols], &v).unwrap()
}

fn shipped() -> NwcCodec<NdArray> {
    NwcCodec::<NdArray>::default_on(&Default::default()).unwrap()
}

fn autoencoder() -> NwcCodec<NdArray> {
    let c = Checkpoint::from_bytes(nwc::codec_net::AUTOENCODER_CHECKPOINT).unwrap();
    NwcCodec::<NdArray>::new(c, &Default::default()).unwrap()
}

#[test]
fn shipped_trellis_checkpoint_encodes_and_decodes() {
    let codec = shipped();
    assert!(codec.is_trellis());
    assert_eq!(codec.kind(), CodecKind::NwcTrellis);
    let t = weight(56, 96); // 56 rows: not a multiple of 64
    let c = Compressor::new(&codec);
    assert_eq!(c.options().chunk.chunk_len, 64);
    let (rec, rep) = c.compress_tensor(&t, None).unwrap();
    assert!(rep.coded);
    let back = Decompressor::new(&codec).decompress_record(&rec).unwrap();
    assert_eq!(back.shape(), &[56, 96]);
    assert!(rep.nmse() < 0.01, "nmse {}", rep.nmse());
    // What the decoder returns is what the report measured.
    let (a, b) = (t.to_f32().unwrap(), back.to_f32().unwrap());
    let err: f64 = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(x - y).powi(2))
        .sum();
    let sig: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    assert!((err / sig - rep.nmse()).abs() < 1e-9);
    // Deterministic: the same input gives the same bytes.
    let (rec2, _) = c.compress_tensor(&t, None).unwrap();
    assert_eq!(rec, rec2);
    // The refiner does not change the symbols: plain TCQ at the same step codes the same bits.
    let tcq = nwc::TcqCodec::with_step(codec.step()).unwrap();
    let (rec3, _) = Compressor::new(&tcq).compress_tensor(&t, None).unwrap();
    let (Payload::Coded(p1), Payload::Coded(p3)) = (&rec.payload, &rec3.payload) else {
        panic!("coded")
    };
    assert_eq!(p1.segments, p3.segments);
    assert!(shipped().with_step_index(1).is_err());
    assert!(shipped().with_step(0.0).is_err());
}

#[test]
fn trellis_steps_set_the_rate() {
    let t = weight(64, 128);
    let mut last = 0.0;
    for b in [2.0, 4.0, 6.0] {
        let codec = shipped()
            .with_step(nwc::codec_net::tcq_step_for_bits(b))
            .unwrap();
        let (_, rep) =
            nwc::round_trip_tensor(&codec, &t, &nwc::CompressOptions::for_codec(&codec)).unwrap();
        assert!(
            rep.bits_per_param() > last,
            "{b}: {} bits",
            rep.bits_per_param()
        );
        last = rep.bits_per_param();
    }
}

#[test]
fn autoencoder_checkpoint_encodes_and_decodes() {
    let codec = autoencoder();
    assert!(!codec.is_trellis());
    assert_eq!(codec.kind(), CodecKind::Nwc);
    let t = weight(56, 96); // 56 rows: not a multiple of 16
    let c = Compressor::new(&codec);
    let (rec, rep) = c.compress_tensor(&t, None).unwrap();
    assert!(rep.coded);
    let Payload::Coded(p) = &rec.payload else {
        panic!("coded")
    };
    assert!(
        p.tables.is_empty(),
        "NWC records use the checkpoint's tables"
    );
    let back = Decompressor::new(&codec).decompress_record(&rec).unwrap();
    assert_eq!(back.shape(), &[56, 96]);
    assert!(rep.nmse() < 0.05, "nmse {}", rep.nmse());
    // Deterministic: the same input gives the same bytes.
    let (rec2, _) = c.compress_tensor(&t, None).unwrap();
    assert_eq!(rec, rec2);
}

#[test]
fn larger_steps_give_fewer_bits() {
    let t = weight(64, 128);
    let mut last = f64::INFINITY;
    for i in [1, 4, 7] {
        let codec = autoencoder().with_step_index(i).unwrap();
        let (_, rep) = nwc::round_trip_tensor(&codec, &t, &Default::default()).unwrap();
        assert!(
            rep.bits_per_param() < last,
            "step {i}: {} bits",
            rep.bits_per_param()
        );
        last = rep.bits_per_param();
    }
    assert!(autoencoder().with_step_index(99).is_err());
    assert!(autoencoder().with_step(0.1).is_err());
}

#[test]
fn another_checkpoint_is_refused() {
    let cfg = CodecConfig {
        width: 16,
        blocks: 1,
        ..CodecConfig::default()
    };
    let model = NwcModel::<NdArray>::new(&cfg, &Default::default());
    let other = Checkpoint::from_model(&model, &cfg, 100.0, 0, &DEFAULT_STEPS).unwrap();
    let other = NwcCodec::<NdArray>::new(other, &Default::default()).unwrap();
    let codec = shipped();
    assert_ne!(other.checkpoint_hash(), codec.checkpoint_hash());
    let header = Compressor::new(&codec).header();
    assert!(matches!(
        Decompressor::new(&other).check_header(&header),
        Err(NwcError::CodecMismatch(_))
    ));
    assert!(Decompressor::new(&codec).check_header(&header).is_ok());
    // The built-in decoder knows the shipped checkpoints and no other.
    assert!(builtin(&header).is_ok());
    assert!(builtin(&Compressor::new(&autoencoder()).header()).is_ok());
    assert!(builtin(&Header::new(CodecKind::Nwc, other.checkpoint_hash())).is_err());
    assert!(builtin(&Header::new(CodecKind::NwcTrellis, other.checkpoint_hash())).is_err());
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

#[test]
fn the_refiner_runs_only_on_the_levels_its_band_picks() {
    let t = weight(64, 128);
    let importance: Vec<f32> = (0..128).map(|c| c as f32).collect();
    // Level 0 at a nominal 3 bits; levels 1–3 at 3.75, 5.5 and 6.0.
    let base = shipped()
        .with_step(nwc::codec_net::tcq_step_for_bits(3.0))
        .unwrap();
    let step = base.step();
    let code = |bits: std::ops::RangeInclusive<f32>| {
        let codec = shipped().with_step(step).unwrap().with_refiner_bits(bits);
        let (rec, _) = Compressor::new(&codec)
            .compress_tensor(&t, Some(&importance))
            .unwrap();
        let back = Decompressor::new(&codec).decompress_record(&rec).unwrap();
        let Payload::Coded(p) = rec.payload else {
            panic!("coded")
        };
        (p, back.to_f32().unwrap())
    };
    let (all, refined) = code(0.0..=f32::INFINITY);
    let (none, plain) = code(1.0..=0.0);
    let (mixed, both) = code(2.9..=3.1);
    // Every level refined: the steps alone, as before the refine byte existed.
    assert_eq!(all.params.len(), 16);
    assert_eq!((none.params.len(), none.params[16]), (17, 0));
    assert_eq!((mixed.params.len(), mixed.params[16]), (17, 0b0001));
    assert!(all.segments == none.segments && all.segments == mixed.segments);
    assert!(all.levels.contains(&0) && all.levels.iter().any(|&l| l > 0));
    // No level refined: exactly TCQ's decode of the same symbols.
    let tcq = nwc::TcqCodec::with_step(step).unwrap();
    let (trec, _) = Compressor::new(&tcq)
        .compress_tensor(&t, Some(&importance))
        .unwrap();
    let tcq_back = Decompressor::new(&tcq).decompress_record(&trec).unwrap();
    assert_eq!(plain, tcq_back.to_f32().unwrap());
    assert_ne!(plain, refined);
    // Mixed: level-0 columns as refined, the others as TCQ.
    for (c, &lv) in mixed.levels.iter().enumerate() {
        let col = |v: &[f32]| (0..64).map(|r| v[r * 128 + c]).collect::<Vec<_>>();
        let want = if lv == 0 { &refined } else { &plain };
        assert_eq!(col(&both), col(want), "column {c} at level {lv}");
    }
    // A refine byte that names every level, or a level past four, is refused.
    for bad in [0b1111u8, 0b1_0000] {
        let mut bytes = all.params.clone();
        bytes.push(bad);
        assert!(nwc::CodecParams::parse(CodecKind::NwcTrellis, "t", &bytes).is_err());
    }
}
