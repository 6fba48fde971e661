//! Compression spread over machines: shard `K` of `N` codes a contiguous range of decoder
//! blocks into a shard file, and [`merge_shards`] joins the shards into the file one machine
//! would have written, byte for byte (`docs/llm-large.md`, "Spread over machines").
//!
//! Every shard runs the calibration windows through the original blocks before its own range
//! (forward passes only, no coding), so its Hessians are those of the one-machine run. Shard 0
//! also writes the model's configuration and tokenizer; the last shard also codes what follows
//! the blocks (final norm, output projection, embedding). Each shard file is a valid `.nwc`
//! whose first record, [`SHARD_RECORD`], names its place and the job it belongs to.

use std::path::Path;

use nwc_format::{FileReader, Payload, Record, Writer};
use nwc_pipeline::{NwcError, NwcFile, Result};

use crate::error::LlmError;

use super::records::metadata;

/// Metadata record naming a shard's place: `{"shard": K, "of": N, "job": "<hex>"}`.
pub const SHARD_RECORD: &str = "nwc.shard.json";

/// Shard `index` of `count` (0-based): a contiguous range of decoder blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// [`LlmError::Shards`] unless `index < count`.
    pub fn new(index: usize, count: usize) -> Result<Self, LlmError> {
        if index >= count {
            return Err(LlmError::Shards(format!(
                "shard {index} of {count}: shards are numbered 0..{count}"
            )));
        }
        Ok(Self { index, count })
    }

    /// The shard's number (0-based).
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many shards the job has.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The decoder blocks this shard codes, of `layers`: an even split, in order.
    pub fn blocks(&self, layers: usize) -> std::ops::Range<usize> {
        self.index * layers / self.count..(self.index + 1) * layers / self.count
    }

    /// Whether this shard writes the model's metadata (configuration, tokenizer).
    pub fn writes_metadata(&self) -> bool {
        self.index == 0
    }

    /// Whether this shard codes the tensors after the blocks (head, embedding, final norm).
    pub fn codes_rest(&self) -> bool {
        self.index + 1 == self.count
    }

    /// The shard record of this shard of job `job`.
    pub(crate) fn record(&self, job: &[u8; 32]) -> Result<Record> {
        let text = format!(
            "{{\"shard\": {}, \"of\": {}, \"job\": \"{}\"}}",
            self.index,
            self.count,
            hex::encode(job)
        );
        metadata(SHARD_RECORD, &text)
    }
}

/// `"K/N"`, as the command line writes it.
impl std::str::FromStr for Shard {
    type Err = LlmError;

    fn from_str(s: &str) -> Result<Self, LlmError> {
        let bad = || LlmError::Shards(format!("shard {s:?}: expected K/N, e.g. 0/3"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        Self::new(
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        )
    }
}

/// The first characters of a job's fingerprint, for messages.
fn short(job: &str) -> &str {
    &job[..12.min(job.len())]
}

/// An error while reading the shard file `path`, named by it.
fn in_file(path: &Path) -> impl FnOnce(NwcError) -> NwcError + '_ {
    move |e| NwcError::InFile {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// What a shard file says of itself.
struct ShardInfo {
    shard: Shard,
    job: String,
}

fn shard_info(path: &Path, reader: &FileReader<'_>) -> Result<ShardInfo> {
    let not_shard = || {
        NwcError::from(LlmError::Shards(format!(
            "{}: not a shard file (no {SHARD_RECORD} record first)",
            path.display()
        )))
    };
    let first = reader.index().first().ok_or_else(not_shard)?;
    if first.name != SHARD_RECORD {
        return Err(not_shard());
    }
    let Payload::Raw(bytes) = reader.record(0)?.payload else {
        return Err(not_shard());
    };
    let bytes = nwc_format::metadata_content(&bytes).map_err(|_| not_shard())?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| not_shard())?;
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    let (Some(k), Some(n), Some(job)) = (
        num("shard"),
        num("of"),
        v.get("job").and_then(serde_json::Value::as_str),
    ) else {
        return Err(not_shard());
    };
    Ok(ShardInfo {
        shard: Shard::new(k as usize, n as usize)?,
        job: job.to_string(),
    })
}

/// Joins shard files (in any order) into `output`, written whole or not at all: the records of
/// shards 0, 1, … N−1 in order, without their shard records, under one index — the bytes a
/// one-machine run writes. Returns the file's size.
///
/// # Errors
/// [`LlmError::Shards`] (inside [`NwcError::Model`]) when a shard is missing or given twice, the
/// shards belong to different jobs or codecs, or a file is not a shard; read and write errors
/// name their file.
pub fn merge_shards(shards: &[impl AsRef<Path>], output: &Path) -> Result<u64> {
    let files: Vec<(&Path, NwcFile)> = shards
        .iter()
        .map(|p| Ok((p.as_ref(), NwcFile::open(p.as_ref())?)))
        .collect::<Result<_>>()?;
    if files.is_empty() {
        return Err(LlmError::Shards("no shard files given".into()).into());
    }
    let readers: Vec<FileReader<'_>> = files
        .iter()
        .map(|(p, f)| f.reader().map_err(in_file(p)))
        .collect::<Result<_>>()?;
    let infos: Vec<ShardInfo> = files
        .iter()
        .zip(&readers)
        .map(|((p, _), r)| shard_info(p, r))
        .collect::<Result<_>>()?;
    let (first, first_path) = (&infos[0], files[0].0);
    let count = first.shard.count;
    let mut order: Vec<Option<usize>> = vec![None; count];
    for (i, info) in infos.iter().enumerate() {
        let path = files[i].0;
        if info.job != first.job || info.shard.count != count {
            return Err(LlmError::Shards(format!(
                "{} is shard {} of {} of job {}…, {} is of {} shards of job {}…",
                path.display(),
                info.shard.index,
                info.shard.count,
                short(&info.job),
                first_path.display(),
                count,
                short(&first.job)
            ))
            .into());
        }
        if readers[i].header() != readers[0].header() {
            return Err(LlmError::Shards(format!(
                "{} and {} were coded with different codecs",
                path.display(),
                first_path.display()
            ))
            .into());
        }
        match order[info.shard.index] {
            Some(j) => {
                return Err(LlmError::Shards(format!(
                    "shard {} of {count} given twice: {} and {}",
                    info.shard.index,
                    files[j].0.display(),
                    path.display()
                ))
                .into());
            }
            None => order[info.shard.index] = Some(i),
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|&k| order[k].is_none())
        .map(|k| k.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(LlmError::Shards(format!(
            "shard {} of {count} missing (job {}…)",
            missing.join(", "),
            short(&first.job)
        ))
        .into());
    }
    let header = *readers[0].header();
    nwc_tensor::write_whole(output, |tmp| -> Result<u64> {
        let f = std::fs::File::create(tmp).map_err(NwcError::io(tmp))?;
        let mut w = Writer::new(std::io::BufWriter::new(f), header)?;
        for i in order.iter().flatten() {
            let r = &readers[*i];
            for k in 1..r.index().len() {
                let record = r.record(k).map_err(|e| in_file(files[*i].0)(e.into()))?;
                w.write(&record)?;
            }
        }
        let (mut inner, bytes) = w.finish()?;
        std::io::Write::flush(&mut inner).map_err(NwcError::io(tmp))?;
        Ok(bytes)
    })
}
