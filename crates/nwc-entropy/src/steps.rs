//! Quantizer steps shared by every quantizer and by training: the per-level step ratios and the
//! high-rate step estimate for a target rate.

/// Relative quantizer step per quality level. A level's distortion weight in the paper's
/// importance-aware loss is λ·{0.294, 0.833, 10, 20}; the MSE-optimal uniform step scales as
/// 1/√weight, giving these ratios.
pub const LEVEL_STEP_RATIOS: [f32; 4] = [1.0, 0.594, 0.171, 0.121];

/// Differential entropy of a unit-variance Gaussian in bits, `½ log₂(2πe)`, rounded as the
/// presets use it.
const GAUSSIAN_ENTROPY_BITS: f32 = 2.047;

/// The uniform (ECSQ) step of about `bits` bits per value on unit-RMS weights: the high-rate
/// estimate `H ≈ h(X) − log₂ step` for a Gaussian. Only a starting point: measured rates are what
/// the files say.
pub fn scalar_step_for_bits(bits: f32) -> f32 {
    (GAUSSIAN_ENTROPY_BITS - bits).exp2()
}

/// The trellis fine step for about `bits` bits per value: half the scalar step, since a trellis
/// value indexes a union codebook of twice the fine step, which carries the rate.
pub fn tcq_step_for_bits(bits: f32) -> f32 {
    scalar_step_for_bits(bits) / 2.0
}

/// The inverse of [`tcq_step_for_bits`]: the rate a trellis fine step gives unit-RMS weights by
/// the same high-rate estimate (a nominal rate, to compare steps with; files measure rates).
pub fn tcq_bits_for_step(step: f32) -> f32 {
    GAUSSIAN_ENTROPY_BITS - (2.0 * step).log2()
}
