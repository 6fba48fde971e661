//! Block LDL reconstructs H; LDLQ lowers the proxy loss against plain rounding; bad input is an
//! error.

use nalgebra::DMatrix;
use nwc_ldl::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    }
}

/// Activations with strongly correlated neighbouring inputs and a few outlier channels.
fn hessian(cols: usize, rows: usize, seed: u64) -> DMatrix<f64> {
    let mut rng = Rng(seed);
    let mut acc = HessianAccumulator::new(cols);
    let mut x = vec![0.0f32; rows * cols];
    for r in 0..rows {
        let mut prev = 0.0;
        for c in 0..cols {
            prev = 0.8 * prev + rng.next();
            x[r * cols + c] = prev * if c % 17 == 0 { 8.0 } else { 1.0 };
        }
    }
    acc.add(&x, rows).unwrap();
    damp(&acc.hessian().unwrap(), DAMPING).unwrap().h
}

#[test]
fn block_ldl_reconstructs_h() {
    for (n, b) in [(40, 16), (64, 64), (33, 8), (5, 128)] {
        let h = hessian(n, 4 * n, n as u64);
        let ldl = BlockLdl::new(&h, b).unwrap();
        let diff = (ldl.reconstruct() - &h).abs().max();
        assert!(diff < 1e-9 * h.abs().max(), "n={n} b={b}: {diff}");
        // Identity diagonal blocks, nothing above the block diagonal.
        for i in 0..n {
            assert!((ldl.l()[(i, i)] - 1.0).abs() < 1e-9);
            for j in (i + 1..n).filter(|j| j / b > i / b) {
                assert_eq!(ldl.l()[(i, j)], 0.0);
            }
        }
    }
}

#[test]
fn ldlq_lowers_the_proxy_loss_at_equal_grid() {
    let (rows, cols) = (48, 96);
    let h = hessian(cols, 512, 7);
    let mut rng = Rng(99);
    let w: Vec<f32> = (0..rows * cols).map(|_| rng.next()).collect();
    let step = 0.2f32;
    let round = |v: f32| (v / step).round() * step;
    let plain: Vec<f32> = w.iter().map(|&v| round(v)).collect();
    for block in [1, 8, 32] {
        let ldl = BlockLdl::new(&h, block).unwrap();
        let fed = ldlq::<LdlError>(&w, rows, cols, &ldl, |_, t| {
            Ok(t.iter().map(|&v| round(v)).collect())
        })
        .unwrap();
        let (a, b) = (
            proxy_loss(&w, &plain, rows, cols, &h),
            proxy_loss(&w, &fed, rows, cols, &h),
        );
        assert!(b < 0.9 * a, "block {block}: feedback {b} vs plain {a}");
        // The same grid: every value is still a multiple of the step (equal rate for a
        // fixed-rate quantizer).
        assert!(
            fed.iter()
                .all(|v| ((v / step).round() * step - v).abs() < 1e-5)
        );
    }
}

#[test]
fn bad_input_is_an_error() {
    let mut acc = HessianAccumulator::new(3);
    assert!(acc.hessian().is_err(), "no samples");
    assert!(acc.add(&[1.0, 2.0], 1).is_err());
    assert!(acc.add(&[1.0, f32::NAN, 0.0], 1).is_err());
    acc.add(&[1.0, 0.0, 2.0], 1).unwrap();
    // Column 1 never saw input: it is dead, and damping makes H usable anyway.
    let d = damp(&acc.hessian().unwrap(), DAMPING).unwrap();
    assert_eq!(d.dead, vec![1]);
    assert!(BlockLdl::new(&d.h, 2).is_ok());
    // A singular Hessian without damping is refused, not factorized into garbage.
    let singular = acc.hessian().unwrap();
    assert!(matches!(
        BlockLdl::new(&singular, 2),
        Err(LdlError::NotPositiveDefinite(3))
    ));
    assert!(damp(&DMatrix::zeros(2, 2), DAMPING).is_err());
    assert!(damp(&DMatrix::from_element(2, 3, 1.0), DAMPING).is_err());
    let ldl = BlockLdl::new(&d.h, 2).unwrap();
    assert!(matches!(
        ldlq::<LdlError>(&[0.0; 5], 2, 3, &ldl, |_, t| Ok(t.to_vec())),
        Err(LdlError::Shape(_))
    ));
    assert!(matches!(
        ldlq::<LdlError>(&[0.0; 6], 2, 3, &ldl, |_, _| Ok(vec![0.0])),
        Err(LdlError::Quantizer { start: 2, .. })
    ));
    // The quantizer's own error comes back as it was, the loop's errors convert into it.
    #[derive(Debug, PartialEq)]
    enum Mine {
        Ldl(LdlError),
        Boom(usize),
    }
    impl From<LdlError> for Mine {
        fn from(e: LdlError) -> Self {
            Mine::Ldl(e)
        }
    }
    assert_eq!(
        ldlq(&[0.0; 6], 2, 3, &ldl, |s, _| Err(Mine::Boom(s))),
        Err(Mine::Boom(2))
    );
    assert!(matches!(
        ldlq(&[0.0; 5], 2, 3, &ldl, |_, t| Ok::<_, Mine>(t.to_vec())),
        Err(Mine::Ldl(LdlError::Shape(_)))
    ));
}
