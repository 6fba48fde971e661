//! Exact rate targeting: the step of a codec's continuous rate control is searched on the actual
//! model until the file it writes measures the asked bits per parameter.
//!
//! One step for every tensor (the quality levels keep their ratios) is the allocation that
//! equalizes the rate–distortion slope across tensors, so the search is over one number: the
//! log₂ of the level-0 step. The measured rate is that of the whole file (header, index, side
//! information and the tensors stored losslessly included), and encoding is deterministic, so the
//! file written at the found step measures exactly what the search measured.

use std::io::Write;
use std::path::Path;

use nwc_tensor::WeightSource;

use crate::codec::{EcsqCodec, WeightCodec};
use crate::encode::Compressor;
use crate::error::{NwcError, Result};
use crate::options::{CompressOptions, Importance};
use crate::report::CompressReport;
use crate::tcq::TcqCodec;

/// Relative tolerance the search stops at (the guarantee is ±1 %).
pub const RATE_TOLERANCE: f64 = 0.004;

/// A codec with a continuous rate control.
pub trait RateControl: WeightCodec + Sized {
    /// log₂ of the level-0 step (larger: fewer bits).
    fn log2_step(&self) -> f32;

    /// The same codec at another step.
    ///
    /// # Errors
    /// [`NwcError::Config`] when the codec has no continuous control or the step is unusable.
    fn with_log2_step(&self, log2_step: f32) -> Result<Self>;
}

impl RateControl for EcsqCodec {
    fn log2_step(&self) -> f32 {
        self.steps()[0].log2()
    }

    fn with_log2_step(&self, log2_step: f32) -> Result<Self> {
        EcsqCodec::with_step(log2_step.exp2())
    }
}

impl RateControl for TcqCodec {
    fn log2_step(&self) -> f32 {
        self.steps()[0].log2()
    }

    fn with_log2_step(&self, log2_step: f32) -> Result<Self> {
        self.with_level0_step(log2_step.exp2())
    }
}

/// A `Write` that counts bytes and drops them (for measuring a rate without writing a file).
#[derive(Debug, Default, Clone, Copy)]
pub struct Count(pub u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Measured bits per parameter of `source` coded by `codec` (nothing written, no error report).
fn measure<C: RateControl>(
    codec: &C,
    options: &CompressOptions,
    source: &dyn WeightSource,
    importance: &dyn Importance,
) -> Result<f64> {
    let mut options = options.clone();
    options.report_error = false;
    let report = Compressor::new(codec)
        .with_options(options)?
        .compress_model(source, Count(0), importance)?;
    Ok(report.bits_per_param())
}

/// Searches the step at which `source`, compressed with `options`, measures `bits` bits per
/// parameter within [`RATE_TOLERANCE`]; returns the codec at that step and its measured rate.
///
/// # Errors
/// [`NwcError::RateUnreachable`] for a target outside 0.5..=16 bits or one the codec cannot reach (the
/// lossless tensors alone may exceed it); the compressor's errors.
pub fn tune_to_rate<C: RateControl>(
    codec: &C,
    options: &CompressOptions,
    source: &dyn WeightSource,
    importance: &dyn Importance,
    bits: f64,
) -> Result<(C, f64)> {
    search_rate(codec, bits, |c| measure(c, options, source, importance))
}

/// The search of [`tune_to_rate`] over any measurement: `measure(codec)` returns the measured
/// bits per parameter of whatever the caller compresses with `codec` (a model loop with
/// calibration and LDLQ in it, for example). Returns the codec at the step whose measurement
/// is within [`RATE_TOLERANCE`] of `bits` (at worst 1 %), and that measurement.
///
/// # Errors
/// As [`tune_to_rate`]; `measure`'s errors.
pub fn search_rate<C: RateControl>(
    codec: &C,
    bits: f64,
    mut measure: impl FnMut(&C) -> Result<f64>,
) -> Result<(C, f64)> {
    if !(0.5..=16.0).contains(&bits) {
        return Err(NwcError::RateUnreachable {
            target: bits,
            reason: "outside 0.5..=16".into(),
        });
    }
    // High-rate theory: one more bit per value halves the step. Bracket, then regula falsi in
    // (log₂ step, bits), which is close to a line.
    let mut eval = |s: f64| -> Result<(C, f64)> {
        let c = codec.with_log2_step(s as f32)?;
        let r = measure(&c)?;
        tracing::debug!(log2_step = s, bits = r, "rate search");
        Ok((c, r))
    };
    let off = |r: f64| ((r - bits) / bits).abs();
    let mut s0 = f64::from(codec.log2_step());
    let (c, mut r0) = eval(s0)?;
    let mut best = (c, r0);
    let keep = |best: &mut (C, f64), c: C, r: f64| {
        if off(r) < off(best.1) {
            *best = (c, r);
        }
    };
    if off(r0) > RATE_TOLERANCE {
        let mut s1 = s0 + (r0 - bits);
        let (c, mut r1) = eval(s1)?;
        keep(&mut best, c, r1);
        // Widen until the target is bracketed (the rate falls as the step grows).
        let mut widen = 0;
        while (r0 - bits) * (r1 - bits) > 0.0 {
            widen += 1;
            if widen > 8 {
                return Err(NwcError::RateUnreachable {
                    target: bits,
                    reason: format!(
                        "out of reach: measured {r0:.4} and {r1:.4} at steps 2^{s0:.2} and 2^{s1:.2}"
                    ),
                });
            }
            (s0, r0) = (s1, r1);
            s1 = s0 + 2.0 * (r0 - bits).signum() * (r0 - bits).abs().max(1.0);
            // Steps beyond 2^±60 code nothing differently: the rate is fixed by what is stored
            // losslessly (or there is nothing to code).
            if s1.abs() > 60.0 {
                return Err(NwcError::RateUnreachable {
                    target: bits,
                    reason: format!(
                        "out of reach: the rate stays near {r0:.4} whatever the step (too little is coded)"
                    ),
                });
            }
            let (c, r) = eval(s1)?;
            r1 = r;
            keep(&mut best, c, r1);
        }
        // lo: the smaller step, rate above the target; hi: the larger step, rate below.
        let (mut lo, mut hi) = if r0 > bits {
            ((s0, r0), (s1, r1))
        } else {
            ((s1, r1), (s0, r0))
        };
        for _ in 0..24 {
            if off(best.1) <= RATE_TOLERANCE {
                break;
            }
            let t = ((lo.1 - bits) / (lo.1 - hi.1)).clamp(0.1, 0.9);
            let s = lo.0 + t * (hi.0 - lo.0);
            let (c, r) = eval(s)?;
            if r > bits {
                lo = (s, r);
            } else {
                hi = (s, r);
            }
            keep(&mut best, c, r);
        }
    }
    // The rate moves in whole bytes and the steps are f32: a target between two neighbouring
    // files can be unreachable within 1 %, which is an error, not a silently worse file.
    if off(best.1) > 0.01 {
        return Err(NwcError::RateUnreachable {
            target: bits,
            reason: format!(
                "not reached within 1 %: the closest file measures {:.4}",
                best.1
            ),
        });
    }
    tracing::info!(target_bits = bits, measured = best.1, "rate search done");
    Ok(best)
}

/// Compresses a safetensors or GGUF file into a `.nwc` file of `bits` bits per parameter
/// (within ±1 %, measured on the file written), searching `codec`'s step first.
///
/// # Errors
/// As [`tune_to_rate`] and [`Compressor::compress_file`].
pub fn compress_file_to_rate<C: RateControl>(
    codec: &C,
    options: &CompressOptions,
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    importance: &dyn Importance,
    bits: f64,
) -> Result<(C, CompressReport)> {
    let source = nwc_tensor::open_weights(input.as_ref())?;
    let (tuned, _) = tune_to_rate(codec, options, &*source, importance, bits)?;
    let report = Compressor::new(&tuned)
        .with_options(options.clone())?
        .compress_source_to_file(&*source, output, importance)?;
    Ok((tuned, report))
}
