//! Asymmetric calibration for layer-by-layer compression: two activation streams go through the
//! blocks, the original model's and the model coded so far (each block's decoded records), and
//! each block is calibrated on the coded model's inputs with the original outputs as its target
//! ([`Calibration::take_all_asymmetric`]), so that every block corrects the error the blocks
//! before it left instead of passing it on.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use nwc_format::Record;
use nwc_pipeline::{Decompressor, NwcError, Result, WeightCodec};

use super::calibration::Calibration;
use crate::calib::Hessians;
use crate::config::LlamaConfig;
use crate::model::BlockTensors;
use crate::stream::Layerwise;
use crate::weights::Site;

/// The two streams of an asymmetric run.
pub(crate) struct Streams {
    /// The original model's activations entering the next block.
    pub(crate) original: Layerwise<NdArray>,
    /// The coded model's.
    pub(crate) coded: Layerwise<NdArray>,
}

impl Streams {
    /// Both streams as one run of values, the original's first (a checkpoint's activations).
    pub(crate) fn to_f32(&self) -> Vec<f32> {
        let mut v = self.original.to_f32();
        v.extend(self.coded.to_f32());
        v
    }

    /// Streams restored from [`Streams::to_f32`].
    ///
    /// # Errors
    /// [`NwcError::Config`] when the values are not two streams of `windows × t` tokens.
    pub(crate) fn from_f32(
        cfg: &LlamaConfig,
        mut values: Vec<f32>,
        windows: usize,
        t: usize,
    ) -> Result<Self> {
        if !values.len().is_multiple_of(2) {
            return Err(NwcError::Config(
                "checkpoint activations are not two streams".into(),
            ));
        }
        let coded = values.split_off(values.len() / 2);
        let device = Default::default();
        Ok(Self {
            original: Layerwise::from_f32(cfg, values, windows, t, &device)?,
            coded: Layerwise::from_f32(cfg, coded, windows, t, &device)?,
        })
    }

    /// Block `l`'s asymmetric calibration (original weights `w`): the original stream moves on
    /// through the block, the coded stream's inputs are captured but it stays (it moves on with
    /// the decoded block, [`Streams::advance_coded`]).
    pub(crate) fn calibrate_block(
        &mut self,
        cfg: &LlamaConfig,
        w: &BlockTensors<NdArray>,
        l: usize,
        sites: &[Site],
        rotated: bool,
        alpha: f64,
    ) -> Result<Calibration> {
        let mut coded = Hessians::for_sites(cfg, sites);
        let mut cross = Hessians::for_sites(cfg, sites);
        let mut err = None;
        let map = |_: Site, x: Tensor<NdArray, 2>, xq: Tensor<NdArray, 2>| {
            Hessians::cross_gram(x, xq.clone()).map(|c| (Hessians::gram(xq), c))
        };
        self.original
            .advance_paired(&self.coded, w, l, &map, &mut |site, grams| {
                let r = grams.and_then(|(g, c)| {
                    coded.add_gram(site, g)?;
                    cross.add_gram(site, c)
                });
                if let Err(e) = r
                    && err.is_none()
                {
                    err = Some(e);
                }
            })?;
        if let Some(e) = err {
            return Err(e.into());
        }
        Calibration::take_all_asymmetric(coded, cross, rotated, alpha)
    }

    /// Moves the coded stream through block `l` as decoded from `records` (the block's records,
    /// as written).
    ///
    /// # Errors
    /// Decoding errors; a block whose records lack a tensor.
    pub(crate) fn advance_coded(
        &mut self,
        cfg: &LlamaConfig,
        codec: &dyn WeightCodec,
        records: &[Record],
        l: usize,
    ) -> Result<()> {
        let d = Decompressor::new(codec);
        let decoded = records
            .iter()
            .map(|r| d.decompress_record(r))
            .collect::<Result<Vec<_>>>()?;
        let w = BlockTensors::load(cfg, l, &Default::default(), |name| {
            let t = decoded.iter().find(|t| t.name() == name).ok_or_else(|| {
                crate::error::LlmError::Weight {
                    name: name.into(),
                    reason: "not among the block's records".into(),
                }
            })?;
            Ok((t.to_f32()?, t.shape().to_vec()))
        })?;
        self.coded.advance(&w, l, None);
        Ok(())
    }
}
