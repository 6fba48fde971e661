//! Writes a seed corpus of small valid `.nwc` files for the `read_nwc` target
//! (`cargo run --bin seeds -- corpus/read_nwc`).

use nwc::format::Writer;
use nwc::tensor::{DType, Tensor};
use nwc::{CompressOptions, Compressor, EcsqCodec, TensorPolicy};

fn main() {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus/read_nwc".into());
    std::fs::create_dir_all(&dir).unwrap();
    let opts = CompressOptions {
        chunks_per_segment: 2,
        policy: TensorPolicy { min_elements: 1, ..TensorPolicy::default() },
        ..CompressOptions::default()
    };
    for (i, (rows, cols, step)) in [(16, 2, 0.5f32), (20, 3, 0.05), (40, 5, 0.01), (3, 7, 1e-4)].into_iter().enumerate() {
        let codec = EcsqCodec::with_step(step).unwrap();
        let c = Compressor::new(&codec).with_options(opts.clone()).unwrap();
        let v: Vec<f32> = (0..rows * cols).map(|k| ((k * 37 % 23) as f32 - 11.0) * 0.1).collect();
        let t = Tensor::from_f32("w", DType::BF16, vec![rows, cols], &v).unwrap();
        let imp: Vec<f32> = (0..cols).map(|k| k as f32).collect();
        let (rec, _) = c.compress_tensor(&t, Some(&imp)).unwrap();
        let raw = Tensor::from_bytes("ids", DType::I64, vec![2], vec![1; 16]).unwrap();
        let (raw_rec, _) = c.compress_tensor(&raw, None).unwrap();
        let mut w = Writer::new(Vec::new(), c.header()).unwrap();
        w.write(&rec).unwrap();
        w.write(&raw_rec).unwrap();
        let bytes = w.finish().unwrap().0;
        for flag in [0u8, 1] {
            let mut f = vec![flag];
            f.extend(&bytes);
            std::fs::write(format!("{dir}/seed-{i}-{flag}.bin"), f).unwrap();
        }
    }
}
