//! Steering a layer-by-layer run to a measured rate: the codec's step moves segment by segment
//! (each decoder block, then the tensors after the blocks) so that the whole file measures the
//! target bits per parameter, without a pass over the whole model per trial.
//!
//! The first segment a run codes is searched to the rate that what is left of the budget allows
//! ([`search_rate`]); every later block is coded once, at the step where the blocks' *smoothed*
//! rate (an exponential moving average of the blocks coded so far, each moved to the current
//! step by high-rate theory: one bit per value is one halving of the step) meets the rate what
//! is left of the budget allows. The step then follows the blocks' mean, not each block's own
//! rate: blocks that code dearer at one step keep it and cost more bits, as a rate-optimal file
//! wants (every block at one slope of error against rate; steering each block to the same rate
//! instead cost 5 % perplexity on SmolLM2 at 4 bits). The last segment (embedding, output
//! projection, final norm) is searched again to land what is left exactly.

use nwc_format::{Header, Record, Writer};
use nwc_pipeline::{
    CompressOptions, Compressor, Count, NwcError, RateControl, Result, TensorReport, search_rate,
};

/// The coded records of one segment with their reports.
pub(crate) type Coded = Vec<(Record, TensorReport)>;

/// What [`super::layerwise`] asks of a steered run, whatever the codec's type.
pub(crate) trait Steering {
    /// Target bits per parameter of the file.
    fn bits(&self) -> f64;

    /// The step (log₂) and the blocks' smoothed bits per parameter at it, to checkpoint.
    fn state(&self) -> (f32, Option<f64>);

    /// Restores [`Steering::state`] from a checkpoint.
    fn restore(&mut self, log2_step: f32, mean_bits: Option<f64>);

    /// Codes one segment with `code` (the records it would write, not written) so that it
    /// measures `target` bits per parameter: searched when `search` or when nothing has been
    /// coded yet, else once at the step the blocks' smoothed rate predicts.
    fn code(
        &mut self,
        target: f64,
        search: bool,
        code: &mut dyn FnMut(&Compressor<'_>) -> Result<Coded>,
    ) -> Result<Coded>;
}

/// A codec of type `C` steered from its own step.
pub(crate) struct Steer<'a, C: RateControl> {
    codec: &'a C,
    options: CompressOptions,
    header: Header,
    bits: f64,
    log2_step: f32,
    mean_bits: Option<f64>,
}

impl<'a, C: RateControl> Steer<'a, C> {
    /// Steers `codec` (coding with `options`) to `bits` per parameter.
    pub(crate) fn new(codec: &'a C, options: CompressOptions, bits: f64) -> Result<Self> {
        if !(0.5..=16.0).contains(&bits) {
            return Err(NwcError::RateUnreachable {
                target: bits,
                reason: "outside 0.5..=16".into(),
            });
        }
        let header = Compressor::new(codec).header();
        Ok(Self {
            codec,
            options,
            header,
            bits,
            log2_step: codec.log2_step(),
            mean_bits: None,
        })
    }

    /// Bytes and parameters of `records` as the file would hold them.
    fn size(&self, records: &Coded) -> Result<(u64, u64)> {
        let mut w = Writer::new(Count(0), self.header)?;
        let mut bytes = 0;
        for (r, _) in records {
            bytes += w.write(r)?;
        }
        Ok((bytes, records.iter().map(|(r, _)| r.numel()).sum()))
    }
}

/// The largest move of the step between two blocks coded once (log₂ units).
const MAX_MOVE: f32 = 0.25;

/// Weight of the newest block in the blocks' smoothed rate.
const SMOOTHING: f64 = 0.25;

impl<C: RateControl> Steering for Steer<'_, C> {
    fn bits(&self) -> f64 {
        self.bits
    }

    fn state(&self) -> (f32, Option<f64>) {
        (self.log2_step, self.mean_bits)
    }

    fn restore(&mut self, log2_step: f32, mean_bits: Option<f64>) {
        self.log2_step = log2_step;
        self.mean_bits = mean_bits;
    }

    fn code(
        &mut self,
        target: f64,
        search: bool,
        code: &mut dyn FnMut(&Compressor<'_>) -> Result<Coded>,
    ) -> Result<Coded> {
        let off = |r: f64| ((r - target) / target).abs();
        // The closest trial: (bits, log₂ step, records).
        let mut best: Option<(f64, f32, Coded)> = None;
        let mut measure = |c: &C| -> Result<f64> {
            let compressor = Compressor::new(c).with_options(self.options.clone())?;
            let records = code(&compressor)?;
            let (bytes, params) = self.size(&records)?;
            let r = 8.0 * bytes as f64 / params.max(1) as f64;
            if best.as_ref().is_none_or(|b| off(r) < off(b.0)) {
                best = Some((r, c.log2_step(), records));
            }
            Ok(r)
        };
        let coded_once = self.mean_bits.is_some() && !search;
        match self.mean_bits {
            Some(mean) if !search => {
                let moved = ((mean - target) as f32).clamp(-MAX_MOVE, MAX_MOVE);
                let c = self.codec.with_log2_step(self.log2_step + moved)?;
                measure(&c)?;
            }
            _ if !(0.5..=16.0).contains(&target) => {
                // What is left of the budget is out of any codec's reach: code at the current
                // step, the file misses the target and says so.
                tracing::warn!(target, "rate left for this segment is out of reach");
                measure(&self.codec.with_log2_step(self.log2_step)?)?;
            }
            _ => {
                let start = self.codec.with_log2_step(self.log2_step)?;
                match search_rate(&start, target, &mut measure) {
                    Ok(_) => {}
                    Err(NwcError::RateUnreachable { reason, .. }) => {
                        tracing::warn!(target, %reason, "segment not steered within 1 %");
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let (r, step, records) = best.ok_or_else(|| NwcError::Config("nothing coded".into()))?;
        tracing::info!(target, bits = r, log2_step = step, "segment steered");
        self.mean_bits = Some(match self.mean_bits {
            // The smoothed rate moved to the new step, then the newest block mixed in.
            Some(mean) if coded_once => {
                (1.0 - SMOOTHING) * (mean - f64::from(step - self.log2_step)) + SMOOTHING * r
            }
            _ => r,
        });
        self.log2_step = step;
        Ok(records)
    }
}
