//! Writes a seed corpus of small valid `.nwc` files for the `read_nwc` target
//! (`cargo run --bin seeds -- corpus/read_nwc`).

use nwc::format::Writer;
use nwc::tensor::{DType, Tensor};
use nwc::{CompressOptions, Compressor, EcsqCodec, TcqCodec, TensorPolicy, WeightCodec};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus/read_nwc".into());
    std::fs::create_dir_all(&dir).unwrap();
    let opts = CompressOptions {
        chunks_per_segment: 2,
        policy: TensorPolicy {
            min_elements: 1,
            ..TensorPolicy::default()
        },
        ..CompressOptions::default()
    };
    let cases = [(16, 2, 0.5f32), (20, 3, 0.05), (40, 5, 0.01), (3, 7, 1e-4)];
    for (i, (rows, cols, step, tcq)) in cases
        .iter()
        .map(|&(r, c, s)| (r, c, s, false))
        .chain(cases.iter().map(|&(r, c, s)| (r, c, s, true)))
        .enumerate()
    {
        // ECSQ, and TCQ with its trellis contexts (4-value runs, so the small seeds hold several).
        let codec: Box<dyn WeightCodec> = if tcq {
            Box::new(TcqCodec::with_step(step).unwrap().run_len(4).unwrap())
        } else {
            Box::new(EcsqCodec::with_step(step).unwrap())
        };
        let mut opts = opts.clone();
        opts.chunk.chunk_len = if tcq { 4 } else { opts.chunk.chunk_len };
        let c = Compressor::new(codec.as_ref()).with_options(opts).unwrap();
        let v: Vec<f32> = (0..rows * cols)
            .map(|k| ((k * 37 % 23) as f32 - 11.0) * 0.1)
            .collect();
        let t = Tensor::from_f32("w", DType::BF16, vec![rows, cols], &v).unwrap();
        let imp: Vec<f32> = (0..cols).map(|k| k as f32).collect();
        let (rec, _) = c.compress_tensor(&t, Some(&imp)).unwrap();
        let raw = Tensor::from_bytes("ids", DType::I64, vec![2], vec![1; 16]).unwrap();
        let (raw_rec, _) = c.compress_tensor(&raw, None).unwrap();
        let mut w = Writer::new(Vec::new(), c.header()).unwrap();
        w.write(&rec).unwrap();
        w.write(&raw_rec).unwrap();
        let bytes = w.finish().unwrap().0;
        for flag in [0u8, 1, 2, 3] {
            let mut f = vec![flag];
            f.extend(&bytes);
            std::fs::write(format!("{dir}/seed-{i}-{flag}.bin"), f).unwrap();
        }
    }
}
