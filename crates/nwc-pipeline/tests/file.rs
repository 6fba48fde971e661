//! The burn-free pipeline alone: an ECSQ / TCQ `.nwc` file written and decoded from the file
//! alone (`Builtin` finds the codec from the header), and a learned-codec header refused with an
//! error that names the missing feature. Synthetic weights: these test mechanics, not quality.

use nwc_format::{CodecKind, Header};
use nwc_pipeline::{
    Builtin, CodecRegistry, Compressor, EcsqCodec, NwcError, NwcFile, TcqCodec, Uniform,
};
use nwc_tensor::{DType, Tensor};

fn weights() -> Vec<Tensor> {
    let w: Vec<f32> = (0..96 * 48)
        .map(|i| (((i * 7919) % 1009) as f32 - 504.0) / 4000.0)
        .collect();
    let b: Vec<f32> = (0..96).map(|i| i as f32 / 100.0).collect();
    vec![
        Tensor::from_f32("fc.weight", DType::F16, vec![96, 48], &w).unwrap(),
        Tensor::from_f32("fc.bias", DType::F32, vec![96], &b).unwrap(),
    ]
}

#[test]
fn ecsq_and_tcq_files_decode_from_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    nwc_tensor::write_safetensors(&input, &weights()).unwrap();
    let ecsq = EcsqCodec::for_bits(5.0).unwrap();
    let tcq = TcqCodec::for_bits(4.0).unwrap();
    for (name, codec) in [
        ("ecsq", &ecsq as &dyn nwc_pipeline::WeightCodec),
        ("tcq", &tcq),
    ] {
        let out = dir.path().join(format!("{name}.nwc"));
        let report = Compressor::new(codec)
            .compress_file(&input, &out, &Uniform)
            .unwrap();
        let file = NwcFile::open(&out).unwrap();
        let measured = 8.0 * std::fs::metadata(&out).unwrap().len() as f64 / (96.0 * 48.0 + 96.0);
        assert!((file.bits_per_param().unwrap() - measured).abs() < 1e-9);
        assert!((report.bits_per_param() - measured).abs() < 1e-9);
        let decoder = file.decoder(&Builtin, None).unwrap();
        let mut back = file.decode_all(&*decoder).unwrap();
        back.sort_by(|a, b| b.name().cmp(a.name()));
        let w = weights();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].dtype(), DType::F16);
        let (a, b) = (w[0].to_f32().unwrap(), back[0].to_f32().unwrap());
        let err: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(x - y).powi(2))
            .sum();
        let sig: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
        assert!(err / sig < 0.01, "{name}: nmse {}", err / sig);
        // The bias is stored losslessly.
        assert_eq!(back[1].bytes(), w[1].bytes());
    }
}

#[test]
fn a_learned_codec_file_names_the_missing_feature() {
    for kind in [CodecKind::Nwc, CodecKind::NwcTrellis] {
        let Err(e) = Builtin.decoder(&Header::new(kind, [7; 32]), None) else {
            panic!("a learned-codec header decoded without the learned codec");
        };
        assert!(matches!(e, NwcError::CodecMismatch(_)), "{e}");
        assert!(e.to_string().contains("`learned` feature"), "{e}");
    }
}
