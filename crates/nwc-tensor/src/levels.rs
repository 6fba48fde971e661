//! Quality levels per input column from an importance score (the Hessian diagonal).

use crate::error::{Result, TensorError};

/// Consecutive importance bands: the top `fractions[0]` of columns get the highest level, the
/// next `fractions[1]` the one below, and so on; all other columns get level 0.
///
/// The default is the paper's: top 0.1 % → 3, next 1 % → 2, next 10 % → 1, rest → 0.
#[derive(Debug, Clone, PartialEq)]
pub struct LevelBands {
    fractions: Vec<f64>,
}

impl Default for LevelBands {
    fn default() -> Self {
        Self {
            fractions: vec![0.001, 0.01, 0.1],
        }
    }
}

impl LevelBands {
    /// Bands from the highest level down. At most 3 bands (4 levels), each fraction in `[0, 1]`,
    /// summing to at most 1.
    ///
    /// # Errors
    /// [`TensorError::InvalidImportance`] otherwise.
    pub fn new(fractions: Vec<f64>) -> Result<Self> {
        if fractions.len() > 3
            || fractions.iter().any(|f| !(0.0..=1.0).contains(f))
            || fractions.iter().sum::<f64>() > 1.0 + 1e-12
        {
            return Err(TensorError::InvalidImportance(format!(
                "bands {fractions:?}: need at most 3 fractions in [0, 1] summing to ≤ 1"
            )));
        }
        Ok(Self { fractions })
    }

    /// Number of levels these bands produce (bands + 1).
    pub fn n_levels(&self) -> usize {
        self.fractions.len() + 1
    }

    /// The level of every column: columns ranked by descending importance (ties by index), the
    /// first `ceil(f₀·n)` get the top level, the next up to `ceil((f₀+f₁)·n)` the one below, and
    /// so on.
    ///
    /// # Errors
    /// [`TensorError::InvalidImportance`] when a score is NaN, infinite or negative.
    pub fn assign(&self, importance: &[f32]) -> Result<Vec<u8>> {
        if let Some((i, v)) = importance
            .iter()
            .enumerate()
            .find(|(_, v)| !v.is_finite() || **v < 0.0)
        {
            return Err(TensorError::InvalidImportance(format!(
                "score {v} at column {i} is not finite and non-negative"
            )));
        }
        let n = importance.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| importance[b].total_cmp(&importance[a]).then(a.cmp(&b)));
        let mut levels = vec![0u8; n];
        let top = self.fractions.len() as u8;
        let mut start = 0usize;
        let mut cum = 0.0f64;
        for (band, f) in self.fractions.iter().enumerate() {
            cum += f;
            let end = ((cum * n as f64).ceil() as usize).min(n);
            for &col in &order[start.min(end)..end] {
                levels[col] = top - band as u8;
            }
            start = start.max(end);
        }
        Ok(levels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_bands_on_1000_columns() {
        let imp: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let l = LevelBands::default().assign(&imp).unwrap();
        let count = |k| l.iter().filter(|&&x| x == k).count();
        assert_eq!((count(3), count(2), count(1), count(0)), (1, 10, 100, 889));
        assert_eq!(l[999], 3);
        assert_eq!(l[998], 2);
        assert_eq!(l[0], 0);
    }

    #[test]
    fn small_layers_still_get_a_top_column() {
        let imp = vec![1.0f32; 576];
        let l = LevelBands::default().assign(&imp).unwrap();
        // Ties broken by index: column 0 is the most important.
        assert_eq!(l[0], 3);
        assert_eq!(l.iter().filter(|&&x| x == 3).count(), 1);
    }

    #[test]
    fn bad_scores_and_bands_are_errors() {
        assert!(LevelBands::default().assign(&[1.0, f32::NAN]).is_err());
        assert!(LevelBands::default().assign(&[-1.0]).is_err());
        assert!(LevelBands::new(vec![0.5, 0.6]).is_err());
        assert!(LevelBands::new(vec![0.1; 4]).is_err());
        assert_eq!(
            LevelBands::new(vec![]).unwrap().assign(&[3.0]).unwrap(),
            vec![0]
        );
        assert!(LevelBands::default().assign(&[]).unwrap().is_empty());
    }
}
