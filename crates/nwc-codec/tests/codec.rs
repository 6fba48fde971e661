//! The codec network on the CPU backend: shapes, determinism, checkpoint round trips, damage,
//! and that training lowers the loss.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Int, Tensor, TensorData};
use nwc_codec::{Checkpoint, CodecConfig, DEFAULT_STEPS, NwcModel, TrainConfig, train};

type B = NdArray;

fn tiny() -> CodecConfig {
    CodecConfig {
        width: 24,
        blocks: 1,
        ..CodecConfig::default()
    }
}

fn input(n: usize) -> (Tensor<B, 2>, Tensor<B, 1, Int>) {
    let d = Default::default();
    let x: Vec<f32> = (0..n * 16)
        .map(|i| ((i * 37 % 29) as f32 - 14.0) / 7.0)
        .collect();
    let l: Vec<i64> = (0..n).map(|i| (i % 4) as i64).collect();
    (
        Tensor::from_data(TensorData::new(x, [n, 16]), &d),
        Tensor::from_data(TensorData::new(l, [n]), &d),
    )
}

fn values(t: Tensor<B, 2>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn shapes_and_determinism() {
    let cfg = tiny();
    let d = Default::default();
    let m = NwcModel::<B>::new(&cfg, &d);
    let (x, l) = input(10);
    let y1 = values(m.analyze(x.clone(), l.clone()));
    let y2 = values(m.analyze(x, l.clone()));
    assert_eq!(y1.len(), 160);
    assert_eq!(y1, y2, "inference is deterministic");
    let lik = m
        .bottleneck
        .likelihood(Tensor::from_data(TensorData::new(y1, [10, 16]), &d));
    let lik = values(lik);
    assert!(lik.iter().all(|&p| p > 0.0 && p <= 1.0));
}

#[test]
fn checkpoint_round_trips_and_detects_damage() {
    let cfg = tiny();
    let d = Default::default();
    let m = NwcModel::<B>::new(&cfg, &d);
    let c = Checkpoint::from_model(&m, &cfg, 100.0, 7, &DEFAULT_STEPS).unwrap();
    assert_eq!(c.tables().len(), DEFAULT_STEPS.len() * 16);
    let again = Checkpoint::from_bytes(c.bytes()).unwrap();
    assert_eq!(again.hash(), c.hash());
    assert_eq!(again.train_steps(), 7);
    // The loaded model computes what the f16-rounded original computes.
    let loaded = c.model::<B>(&d).unwrap();
    let (x, l) = input(5);
    let a = values(loaded.analyze(x.clone(), l.clone()));
    let b = values(m.analyze(x, l));
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 5e-2 * (1.0 + q.abs()), "{p} vs {q}");
    }
    // Another checkpoint has another identity.
    let m2 = NwcModel::<B>::new(&cfg, &d);
    let c2 = Checkpoint::from_model(&m2, &cfg, 100.0, 7, &DEFAULT_STEPS).unwrap();
    assert_ne!(c2.hash(), c.hash());
    // Truncations and a wrong magic are errors, never panics.
    let bytes = c.bytes();
    for cut in (0..bytes.len()).step_by(97) {
        assert!(Checkpoint::from_bytes(&bytes[..cut]).is_err());
    }
    let mut bad = bytes.to_vec();
    bad[0] = b'X';
    assert!(Checkpoint::from_bytes(&bad).is_err());
    let mut bad = bytes.to_vec();
    bad[8] = 9; // version
    assert!(Checkpoint::from_bytes(&bad).is_err());
}

#[test]
fn training_lowers_the_loss_and_resumes() {
    let cfg = tiny();
    let d = Default::default();
    // Correlated chunks (a smooth ramp plus noise) so there is structure to learn.
    let mut rng = nwc_entropy::SplitMix64(3);
    let data: Vec<f32> = (0..4096 * 16)
        .map(|i| ((i % 16) as f32 - 7.5) / 5.0 + (rng.next_f64() as f32 - 0.5))
        .collect();
    let tc = TrainConfig {
        lambda: 50.0,
        steps: 60,
        batch: 256,
        lr: 3e-3,
        log_every: 20,
        ..TrainConfig::default()
    };
    let mut log = Vec::new();
    let c = train::<Autodiff<B>>(
        &cfg,
        &tc,
        &data,
        &data[..2048 * 16],
        &d,
        None,
        |s| log.push(s.clone()),
        |_| {},
    )
    .unwrap();
    assert_eq!(log.len(), 3);
    assert!(
        log[2].loss < log[0].loss,
        "{:?}",
        log.iter().map(|s| s.loss).collect::<Vec<_>>()
    );
    assert_eq!(c.train_steps(), 60);
    let resumed = train::<Autodiff<B>>(
        &cfg,
        &TrainConfig {
            steps: 20,
            ..tc.clone()
        },
        &data,
        &data,
        &d,
        Some(&c),
        |_| {},
        |_| {},
    )
    .unwrap();
    assert_eq!(resumed.train_steps(), 80);
    let other = CodecConfig { width: 32, ..cfg };
    assert!(train::<Autodiff<B>>(&other, &tc, &data, &data, &d, Some(&c), |_| {}, |_| {}).is_err());
}
