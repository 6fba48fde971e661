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

#[test]
fn refiner_starts_as_identity_and_round_trips_its_checkpoint() {
    use nwc_codec::{Refiner, Variant};
    let cfg = CodecConfig {
        width: 24,
        blocks: 1,
        ..CodecConfig::refiner_small()
    };
    assert_eq!(cfg.variant, Variant::TrellisRefiner);
    let d = Default::default();
    let r = Refiner::<B>::new(&cfg, &d);
    let j: Vec<f32> = (0..4 * 16).map(|i| (i as f32 - 30.0) * 0.5).collect();
    let jt = Tensor::<B, 2>::from_data(TensorData::new(j.clone(), [4, 16]), &d);
    let st = Tensor::<B, 1>::from_floats([0.1, 0.01, 0.5, 0.02], &d);
    let lv = Tensor::<B, 1, Int>::from_ints([0, 1, 2, 3], &d);
    let out = r.forward(jt.clone(), st.clone(), lv.clone());
    assert_eq!(
        out.into_data().to_vec::<f32>().unwrap(),
        j,
        "untrained refiner is the identity"
    );
    let c = Checkpoint::from_refiner(&r, &cfg, 7).unwrap();
    assert_eq!(c.config(), &cfg);
    assert!(c.tables().is_empty() && c.steps().is_empty());
    let back = Checkpoint::from_bytes(c.bytes()).unwrap();
    assert_eq!(back.hash(), c.hash());
    assert!(
        back.model::<B>(&d).is_err(),
        "a refiner is not an autoencoder"
    );
    let r2 = back.refiner::<B>(&d).unwrap();
    assert_eq!(
        r2.forward(jt, st, lv).into_data().to_vec::<f32>().unwrap(),
        j
    );
    // Damage anywhere is an error, never a panic.
    for cut in 0..c.bytes().len() {
        assert!(Checkpoint::from_bytes(&c.bytes()[..cut]).is_err());
    }
    let mut bad = c.bytes().to_vec();
    bad[12] = 9; // variant code
    assert!(Checkpoint::from_bytes(&bad).is_err());
    // An autoencoder configuration cannot export a refiner and the other way round.
    assert!(Checkpoint::from_refiner(&r, &tiny(), 0).is_err());
}

#[test]
fn refiner_training_beats_plain_trellis_at_low_rate() {
    use nwc_codec::{RefineConfig, train_refiner};
    type AD = burn::backend::Autodiff<B>;
    let cfg = CodecConfig {
        width: 32,
        blocks: 1,
        ..CodecConfig::refiner_small()
    };
    // A peaked (Laplacian) source: at 2 bits the conditional mean of a cell is well inside it,
    // which a refiner can learn and plain TCQ reconstruction cannot use.
    let mut rng = nwc_entropy::SplitMix64(9);
    let lap = |rng: &mut nwc_entropy::SplitMix64| {
        let u = rng.next_f64() - 0.5;
        (-u.signum() * (1.0 - 2.0 * u.abs()).max(1e-12).ln() / std::f64::consts::SQRT_2) as f32
    };
    let data: Vec<f32> = (0..16 * 8192).map(|_| lap(&mut rng)).collect();
    let held: Vec<f32> = (0..16 * 2048).map(|_| lap(&mut rng)).collect();
    let rc = RefineConfig {
        steps: 150,
        batch: 256,
        lr: 3e-3,
        log_every: 150,
        bits: (1.5, 2.5),
        ..RefineConfig::default()
    };
    let mut stats = Vec::new();
    let c = train_refiner::<AD>(
        &cfg,
        &rc,
        &data,
        &held,
        &Default::default(),
        None,
        |s| stats.push(s.clone()),
        |_| {},
    )
    .unwrap();
    assert_eq!(c.train_steps(), 150);
    let at2 = stats.last().unwrap().heldout_ratio[0];
    assert!(at2 < 0.99, "held-out MSE ratio at 2 bits {at2}");
}

/// Version-3 checkpoints name every parameter and load by name: the autoencoder's g_a and g_s
/// have the same shapes, so with positional loading swapping them loaded silently; by name,
/// a stored file with their names exchanged loads each where its name says, and a misnamed
/// parameter is an error naming it. The shipped (version 2) checkpoints still load.
#[test]
fn checkpoints_load_parameters_by_name() {
    let cfg = CodecConfig {
        width: 24,
        blocks: 1,
        ..CodecConfig::default()
    };
    let d = Default::default();
    let m = NwcModel::<B>::new(&cfg, &d);
    let c = Checkpoint::from_model(&m, &cfg, 0.1, 3, &[1.0]).unwrap();
    let b = c.bytes().to_vec();
    assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 3);
    let count = |needle: &[u8]| b.windows(needle.len()).filter(|w| *w == needle).count();
    assert!(
        count(b"g_a.") > 0 && count(b"g_a.") == count(b"g_s."),
        "names are module paths"
    );
    // Exchange the names "g_a." and "g_s." everywhere: the same values, now labelled the other
    // way round. Loading by name must swap the networks back.
    let mut swapped = b.clone();
    for i in 0..swapped.len() - 4 {
        match &swapped[i..i + 4] {
            b"g_a." => swapped[i + 2] = b's',
            b"g_s." => swapped[i + 2] = b'a',
            _ => {}
        }
    }
    let back = Checkpoint::from_bytes(&swapped).unwrap();
    let (x, lv) = (
        Tensor::<B, 2>::from_data(
            TensorData::new(
                (0..32).map(|i| i as f32 / 10.0).collect::<Vec<_>>(),
                [2, 16],
            ),
            &d,
        ),
        Tensor::<B, 1, Int>::from_ints([0, 1], &d),
    );
    let m2 = back.model::<B>(&d).unwrap();
    let orig = c.model::<B>(&d).unwrap();
    let y = |m: &NwcModel<B>| {
        m.analyze(x.clone(), lv.clone())
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    // g_a of the swapped file is the original g_s's values under the name g_a: same shapes, so
    // the analysis differs unless the two were equal.
    assert_ne!(y(&m2), y(&orig), "names decide where a parameter goes");
    // A name the model does not have.
    let mut wrong = b.clone();
    let at = wrong.windows(4).position(|w| w == b"g_s.").unwrap();
    wrong[at + 2] = b'x';
    let e = Checkpoint::from_bytes(&wrong).unwrap_err().to_string();
    assert!(e.contains("g_x.") || e.contains("missing"), "{e}");
    // The shipped checkpoints (versions 2 and 1, positional) still load.
    for bytes in [
        nwc_codec::DEFAULT_CHECKPOINT,
        nwc_codec::AUTOENCODER_CHECKPOINT,
    ] {
        assert!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()) < 3);
        Checkpoint::from_bytes(bytes).unwrap();
    }
}
