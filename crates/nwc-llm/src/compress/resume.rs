//! The resume checkpoint of a layer-by-layer run (`OUT.resume`, layout in
//! `docs/llm-large.md`): where the partial file ends, the records it holds, the activations
//! entering the next block, a steered run's state; checksummed, and tied to its job by a
//! fingerprint.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use nwc_format::IndexEntry;
use nwc_pipeline::{NwcError, Result, TensorReport};
use nwc_tensor::Cursor;

const MAGIC: &[u8; 8] = b"NWCRSUM1";

/// The checkpoint of a run: where the partial file ends and what it holds, and the activations
/// entering the next block.
pub(crate) struct Checkpoint {
    pub(crate) next_block: usize,
    pub(crate) partial_len: u64,
    pub(crate) index: Vec<IndexEntry>,
    pub(crate) reports: Vec<TensorReport>,
    /// Windows, tokens per window, then the values (empty when uncalibrated).
    pub(crate) activations: (usize, usize, Vec<f32>),
    /// A steered run's step (log₂) and last segment's bits per parameter.
    pub(crate) steer: Option<(f32, Option<f64>)>,
}

impl Checkpoint {
    fn to_bytes(&self, fingerprint: &[u8; 32]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(MAGIC);
        b.extend(fingerprint);
        b.extend((self.next_block as u64).to_le_bytes());
        b.extend(self.partial_len.to_le_bytes());
        b.extend((self.index.len() as u64).to_le_bytes());
        for (e, r) in self.index.iter().zip(&self.reports) {
            b.extend((e.name.len() as u16).to_le_bytes());
            b.extend(e.name.as_bytes());
            b.extend(e.offset.to_le_bytes());
            b.extend(e.length.to_le_bytes());
            b.extend(e.n_params.to_le_bytes());
            b.push(u8::from(r.coded));
            b.extend(r.sq_error.to_le_bytes());
            b.extend(r.sq_signal.to_le_bytes());
        }
        let (w, t, v) = &self.activations;
        b.extend((*w as u64).to_le_bytes());
        b.extend((*t as u64).to_le_bytes());
        b.extend((v.len() as u64).to_le_bytes());
        for x in v {
            b.extend(x.to_le_bytes());
        }
        if let Some((step, last)) = self.steer {
            b.extend(step.to_le_bytes());
            b.extend(last.unwrap_or(f64::NAN).to_le_bytes());
        }
        let digest = crate::calib::fingerprint(&[&b]);
        b.extend(digest);
        b
    }

    /// Parses a checkpoint; `None` (with the reason) when it is damaged or of another job.
    pub(crate) fn parse(bytes: &[u8], fingerprint: &[u8; 32]) -> std::result::Result<Self, String> {
        if bytes.len() < MAGIC.len() + 64 || &bytes[..8] != MAGIC {
            return Err("not a resume checkpoint".into());
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if crate::calib::fingerprint(&[body]) != digest {
            return Err("checksum mismatch (damaged)".into());
        }
        if &body[8..40] != fingerprint {
            return Err("written for another model, codec, options or calibration".into());
        }
        let mut c = Cursor::new(&body[40..], "resume checkpoint");
        let e = |e: nwc_tensor::TensorError| e.to_string();
        let next_block = c.u64().map_err(e)? as usize;
        let partial_len = c.u64().map_err(e)?;
        let n = c.u64().map_err(e)?;
        if n > c.remaining() {
            return Err(format!("{n} index entries exceed the checkpoint"));
        }
        let (mut index, mut reports) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let len = c.u16().map_err(e)?;
            let name = String::from_utf8(c.take(u64::from(len)).map_err(e)?.to_vec())
                .map_err(|_| "a tensor name is not UTF-8".to_string())?;
            let entry = IndexEntry {
                name: name.clone(),
                offset: c.u64().map_err(e)?,
                length: c.u64().map_err(e)?,
                n_params: c.u64().map_err(e)?,
            };
            reports.push(TensorReport {
                name,
                n_params: entry.n_params,
                bytes: entry.length,
                coded: c.u8().map_err(e)? != 0,
                sq_error: c.f64().map_err(e)?,
                sq_signal: c.f64().map_err(e)?,
            });
            index.push(entry);
        }
        let windows = c.u64().map_err(e)? as usize;
        let t = c.u64().map_err(e)? as usize;
        let nv = c.u64().map_err(e)?;
        let raw = c.take(nv.saturating_mul(4)).map_err(e)?;
        let values = raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        let steer = if c.remaining() > 0 {
            let step = c.f32().map_err(e)?;
            let last = c.f64().map_err(e)?;
            Some((step, Some(last).filter(|x| x.is_finite())))
        } else {
            None
        };
        Ok(Self {
            next_block,
            partial_len,
            index,
            reports,
            activations: (windows, t, values),
            steer,
        })
    }

    /// Writes the checkpoint whole: to a temporary file, synced, then renamed over the old one.
    pub(crate) fn save(&self, path: &Path, fingerprint: &[u8; 32]) -> Result<()> {
        let tmp = nwc_tensor::with_suffix(path, ".tmp");
        let mut f = File::create(&tmp).map_err(NwcError::io(&tmp))?;
        f.write_all(&self.to_bytes(fingerprint))
            .and_then(|()| f.sync_data())
            .map_err(NwcError::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(NwcError::io(path))
    }
}
