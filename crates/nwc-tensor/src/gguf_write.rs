//! Writing GGUF files (version 3, F32/F16/BF16 tensors): the export side of `gguf.rs`.

use std::path::Path;

use crate::error::{Result, TensorError};
use crate::gguf::GgufValue;
use crate::safetensors_io::write_whole;
use crate::tensor::{DType, Tensor};

/// GGUF's code of a metadata value's type.
fn value_type(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::String(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) -> Result<()> {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.extend(x.to_le_bytes()),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
        GgufValue::Array(a) => {
            // An empty array is written as a string array (merges, tokens: the lists that can be
            // empty).
            let ty = a.first().map_or(8, value_type);
            if a.iter()
                .any(|x| value_type(x) != ty || matches!(x, GgufValue::Array(_)))
            {
                return Err(TensorError::Malformed {
                    format: "GGUF",
                    reason: "a metadata array must hold values of one scalar type".into(),
                });
            }
            out.extend(ty.to_le_bytes());
            out.extend((a.len() as u64).to_le_bytes());
            for x in a {
                put_value(out, x)?;
            }
        }
    }
    Ok(())
}

/// Writes a GGUF (version 3) file: `metadata` in order, then `tensors` (F32, F16 or BF16; shapes
/// in row-major order, stored fastest dimension first as GGUF does), data aligned to 32 bytes.
/// Written whole or not at all (a `.partial` file renamed when complete).
///
/// # Errors
/// [`TensorError::UnsupportedDtype`] for a tensor that is not F32, F16 or BF16;
/// [`TensorError::Malformed`] for a mixed metadata array; [`TensorError::Write`] when writing
/// fails.
pub fn write_gguf(
    path: impl AsRef<Path>,
    metadata: &[(String, GgufValue)],
    tensors: &[Tensor],
) -> Result<()> {
    const ALIGN: u64 = 32;
    let mut head = Vec::new();
    head.extend(b"GGUF");
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut head, k);
        head.extend(value_type(v).to_le_bytes());
        put_value(&mut head, v)?;
    }
    let mut offset = 0u64;
    for t in tensors {
        let ty: u32 = match t.dtype() {
            DType::F32 => 0,
            DType::F16 => 1,
            DType::BF16 => 30,
            other => {
                return Err(TensorError::UnsupportedDtype {
                    name: t.name().to_string(),
                    dtype: format!("{other} (GGUF output takes F32, F16 or BF16)"),
                });
            }
        };
        put_str(&mut head, t.name());
        head.extend((t.shape().len() as u32).to_le_bytes());
        for &d in t.shape().iter().rev() {
            head.extend((d as u64).to_le_bytes());
        }
        head.extend(ty.to_le_bytes());
        head.extend(offset.to_le_bytes());
        offset = (offset + t.bytes().len() as u64).div_ceil(ALIGN) * ALIGN;
    }
    let path = path.as_ref();
    write_whole(path, |tmp| {
        use std::io::Write;
        let err = |source| TensorError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut w = std::io::BufWriter::new(std::fs::File::create(tmp).map_err(err)?);
        let pad = |n: u64| vec![0u8; (n.div_ceil(ALIGN) * ALIGN - n) as usize];
        w.write_all(&head).map_err(err)?;
        w.write_all(&pad(head.len() as u64)).map_err(err)?;
        for t in tensors {
            w.write_all(t.bytes()).map_err(err)?;
            w.write_all(&pad(t.bytes().len() as u64)).map_err(err)?;
        }
        w.flush().map_err(err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufFile;
    use crate::source::WeightSource;

    #[test]
    fn written_gguf_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");
        let a: Vec<f32> = (0..6 * 5).map(|i| i as f32 * 0.25 - 3.0).collect();
        let tensors = vec![
            Tensor::from_f32("a.weight", DType::F32, vec![6, 5], &a).unwrap(),
            Tensor::from_f32("b.weight", DType::F16, vec![3], &[1.0, -2.0, 0.5]).unwrap(),
            Tensor::from_f32("c.weight", DType::BF16, vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap(),
        ];
        let meta = vec![
            (
                "general.architecture".to_string(),
                GgufValue::String("llama".into()),
            ),
            ("llama.block_count".to_string(), GgufValue::U32(2)),
            ("llama.rope.freq_base".to_string(), GgufValue::F32(10000.0)),
            (
                "tokenizer.ggml.tokens".to_string(),
                GgufValue::Array(vec![
                    GgufValue::String("a".into()),
                    GgufValue::String("b".into()),
                ]),
            ),
        ];
        write_gguf(&path, &meta, &tensors).unwrap();
        let f = GgufFile::open(&path).unwrap();
        for (k, v) in &meta {
            assert_eq!(f.metadata().get(k), Some(v), "{k}");
        }
        for t in &tensors {
            assert_eq!(&f.tensor(t.name()).unwrap(), t, "{}", t.name());
        }
        assert_eq!(f.tensor_infos()[0].shape, vec![6, 5]);
        // A mixed array is refused and leaves no file.
        let bad = vec![(
            "x".to_string(),
            GgufValue::Array(vec![GgufValue::U32(1), GgufValue::String("s".into())]),
        )];
        let p2 = dir.path().join("bad.gguf");
        assert!(write_gguf(&p2, &bad, &tensors).is_err());
        assert!(!p2.exists() && !dir.path().join("bad.gguf.partial").exists());
    }
}
