//! What compression reports: per tensor and per file, with measured rates.

/// What happened to one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorReport {
    /// Tensor name.
    pub name: String,
    /// Elements.
    pub n_params: u64,
    /// Bytes of its record in the file (framing included).
    pub bytes: u64,
    /// Whether it was entropy-coded (otherwise stored losslessly).
    pub coded: bool,
    /// Σ (w − ŵ)² over the tensor, as the decoder will reconstruct it (0 for lossless).
    pub sq_error: f64,
    /// Σ w² over the tensor.
    pub sq_signal: f64,
}

impl TensorReport {
    /// Measured bits per parameter of this tensor's record.
    pub fn bits_per_param(&self) -> f64 {
        8.0 * self.bytes as f64 / self.n_params.max(1) as f64
    }

    /// Normalized MSE `Σ(w − ŵ)² / Σ w²` (0 for lossless or all-zero tensors).
    pub fn nmse(&self) -> f64 {
        if self.sq_signal > 0.0 {
            self.sq_error / self.sq_signal
        } else {
            0.0
        }
    }
}

/// The outcome of compressing a model.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressReport {
    /// One entry per tensor, in file order.
    pub tensors: Vec<TensorReport>,
    /// Size of the whole file in bytes (header, index and footer included).
    pub file_bytes: u64,
    /// Wall-clock seconds spent.
    pub seconds: f64,
}

impl CompressReport {
    /// Total parameters.
    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(|t| t.n_params).sum()
    }

    /// Measured rate of the whole file: `8 · file bytes / parameters`.
    pub fn bits_per_param(&self) -> f64 {
        8.0 * self.file_bytes as f64 / self.n_params().max(1) as f64
    }

    /// Measured rate over the coded tensors only (their records' bytes).
    pub fn coded_bits_per_param(&self) -> f64 {
        let (b, n) = self
            .tensors
            .iter()
            .filter(|t| t.coded)
            .fold((0u64, 0u64), |(b, n), t| (b + t.bytes, n + t.n_params));
        8.0 * b as f64 / n.max(1) as f64
    }

    /// Normalized MSE over all coded tensors together.
    pub fn coded_nmse(&self) -> f64 {
        let (e, s) = self
            .tensors
            .iter()
            .filter(|t| t.coded)
            .fold((0.0, 0.0), |(e, s), t| (e + t.sq_error, s + t.sq_signal));
        if s > 0.0 { e / s } else { 0.0 }
    }
}
