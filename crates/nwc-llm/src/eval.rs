//! Perplexity on held-out text.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{LlmError, Result};
use crate::model::Llama;

/// A perplexity measurement and how it was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Perplexity {
    /// `exp(mean NLL)`.
    pub ppl: f64,
    /// Mean next-token negative log-likelihood in nats.
    pub nll: f64,
    /// Tokens scored.
    pub tokens: usize,
    /// Non-overlapping windows evaluated.
    pub windows: usize,
    /// Context length of each window (the first token of a window is not scored).
    pub ctx: usize,
}

impl Perplexity {
    /// The measurement from the summed NLL (nats) of `windows` windows of `ctx` tokens, each
    /// scoring `ctx - 1` tokens.
    pub(crate) fn from_total(total: f64, windows: usize, ctx: usize) -> Self {
        let tokens = windows * (ctx - 1);
        let nll = total / tokens as f64;
        Self {
            ppl: nll.exp(),
            nll,
            tokens,
            windows,
            ctx,
        }
    }
}

/// Cuts `ids` into `n` non-overlapping windows of `ctx` tokens (fewer when the text is short).
///
/// # Errors
/// [`LlmError::Input`] when not even one window fits.
pub fn windows(ids: &[u32], ctx: usize, n: usize) -> Result<Vec<&[u32]>> {
    if ctx < 2 || ids.len() < ctx {
        return Err(LlmError::Input(format!(
            "{} tokens do not fill one window of {ctx}",
            ids.len()
        )));
    }
    Ok(ids.chunks_exact(ctx).take(n).collect())
}

pub(crate) fn ids_tensor<B: Backend>(
    w: &[u32],
    vocab: usize,
    device: &B::Device,
) -> Result<Tensor<B, 2, Int>> {
    if let Some(&bad) = w.iter().find(|&&i| i as usize >= vocab) {
        return Err(LlmError::Input(format!(
            "token {bad} outside the vocabulary of {vocab}"
        )));
    }
    let v: Vec<i64> = w.iter().map(|&i| i64::from(i)).collect();
    Ok(Tensor::from_data(TensorData::new(v, [1, w.len()]), device))
}

/// Perplexity of `model` on up to `max_windows` non-overlapping windows of `ctx` tokens of
/// `ids`, calling `progress(done, total)` after each window.
///
/// # Errors
/// [`LlmError::Input`] for too little text or tokens outside the vocabulary.
pub fn perplexity<B: Backend>(
    model: &Llama<B>,
    ids: &[u32],
    ctx: usize,
    max_windows: usize,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<Perplexity> {
    let ws = windows(ids, ctx, max_windows)?;
    let vocab = model.config().vocab;
    let mut total = 0.0f64;
    for (i, w) in ws.iter().enumerate() {
        let nll = model
            .nll(ids_tensor::<B>(w, vocab, device)?)
            .into_data()
            .convert::<f64>()
            .to_vec::<f64>()
            .expect("f64")[0];
        total += nll * (ctx - 1) as f64;
        progress(i + 1, ws.len());
    }
    Ok(Perplexity::from_total(total, ws.len(), ctx))
}
