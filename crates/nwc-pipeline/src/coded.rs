//! [`CodedTensor`]: the side information of a coded record in typed form — the scale axis as a
//! [`ScaleAxis`], the scales as `f16`, the codec's parameters parsed — converted to and from the
//! wire record ([`CodedPayload`]) in one place (`TryFrom<&Record>`, [`CodedTensor::into_payload`]).

use half::f16;
use nwc_format::{CodecKind, CodedPayload, Payload, Record, TableRecord};
use nwc_tensor::ScaleAxis;

use crate::codec::CodecParams;
use crate::error::NwcError;

/// Everything a coded record says about its tensor except the entropy-coded bytes themselves
/// (the segments stay in the record, so reading this copies only the small fields).
#[derive(Debug, Clone, PartialEq)]
pub struct CodedTensor {
    /// The codec family that coded it.
    pub method: CodecKind,
    /// Values per chunk.
    pub chunk_len: usize,
    /// The axis the scales run along.
    pub axis: ScaleAxis,
    /// Whether the matrix was coded after incoherence processing (`U W Vᵀ`,
    /// [`nwc_tensor::rotate_matrix`]; `docs/format.md`, "Incoherence").
    pub incoherent: bool,
    /// Quality levels of the codec.
    pub n_levels: usize,
    /// Rows of the matrix view.
    pub rows: usize,
    /// Columns of the matrix view.
    pub cols: usize,
    /// One scale per column or per row (`axis`).
    pub scales: Vec<f16>,
    /// The quality level of every column.
    pub levels: Vec<u8>,
    /// The codec's parameters.
    pub params: CodecParams,
    /// Tables stored in the record (empty: the codec's own).
    pub tables: Vec<TableRecord>,
    /// Table index of every (level, context, position).
    pub table_map: Vec<u16>,
    /// Chunks per segment.
    pub chunks_per_segment: usize,
}

impl TryFrom<&Record> for CodedTensor {
    type Error = NwcError;

    /// The typed side information of a coded record.
    ///
    /// # Errors
    /// [`NwcError::Corrupt`] for a record stored losslessly, an unknown scale axis or
    /// parameters the record's codec family does not use.
    fn try_from(r: &Record) -> Result<Self, NwcError> {
        let corrupt = |reason: String| NwcError::Corrupt {
            name: r.name.clone(),
            reason,
        };
        let Payload::Coded(c) = &r.payload else {
            return Err(corrupt("stored losslessly, not coded".into()));
        };
        let axis = ScaleAxis::from_code(c.scale_axis & 1)
            .filter(|_| c.scale_axis & !3 == 0)
            .ok_or_else(|| corrupt(format!("scale axis {}", c.scale_axis)))?;
        let as_usize = |v: u64, what: &str| {
            usize::try_from(v).map_err(|_| corrupt(format!("{what} {v} does not fit in memory")))
        };
        Ok(Self {
            method: c.method,
            chunk_len: usize::from(c.chunk_len),
            axis,
            incoherent: c.scale_axis & 2 != 0,
            n_levels: usize::from(c.n_levels),
            rows: as_usize(c.rows, "rows")?,
            cols: as_usize(c.cols, "columns")?,
            scales: c.scales.iter().map(|&b| f16::from_bits(b)).collect(),
            levels: c.levels.clone(),
            params: CodecParams::parse(c.method, &r.name, &c.params)?,
            tables: c.tables.clone(),
            table_map: c.table_map.clone(),
            chunks_per_segment: c.chunks_per_segment as usize,
        })
    }
}

impl CodedTensor {
    /// The wire record of this tensor with its entropy-coded `segments` (the inverse of
    /// `CodedTensor::try_from(&record)`).
    pub fn into_payload(self, segments: Vec<Vec<u8>>) -> CodedPayload {
        let t = self;
        CodedPayload {
            method: t.method,
            chunk_len: t.chunk_len as u8,
            scale_axis: t.axis.code() | (u8::from(t.incoherent) << 1),
            n_levels: t.n_levels as u8,
            rows: t.rows as u64,
            cols: t.cols as u64,
            scales: t.scales.iter().map(|s| s.to_bits()).collect(),
            levels: t.levels,
            params: t.params.to_bytes(),
            tables: t.tables,
            table_map: t.table_map,
            chunks_per_segment: t.chunks_per_segment as u32,
            segments,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wire → typed → wire gives the same record; a lossless record and a bad axis are errors.
    #[test]
    fn wire_and_typed_forms_agree() {
        let wire = CodedPayload {
            method: CodecKind::Tcq,
            chunk_len: 16,
            scale_axis: ScaleAxis::Row.code(),
            n_levels: 4,
            rows: 3,
            cols: 2,
            scales: vec![f16::from_f32(0.5).to_bits(); 3],
            levels: vec![0, 3],
            params: CodecParams::Steps([0.1, 0.2, 0.3, 0.4]).to_bytes(),
            tables: Vec::new(),
            table_map: vec![0; 64],
            chunks_per_segment: 4096,
            segments: vec![vec![1, 2, 3]],
        };
        let mut record = Record {
            name: "w".into(),
            dtype: nwc_tensor::DType::F32,
            shape: vec![3, 2],
            payload: Payload::Coded(wire.clone()),
        };
        let typed = CodedTensor::try_from(&record).unwrap();
        assert_eq!(typed.axis, ScaleAxis::Row);
        assert!(!typed.incoherent);
        assert_eq!(typed.scales[0].to_f32(), 0.5);
        assert_eq!(typed.into_payload(wire.segments.clone()), wire.clone());
        let mut rotated = wire.clone();
        rotated.scale_axis |= 2;
        record.payload = Payload::Coded(rotated.clone());
        let typed = CodedTensor::try_from(&record).unwrap();
        assert!(typed.incoherent && typed.axis == ScaleAxis::Row);
        assert_eq!(typed.into_payload(rotated.segments.clone()), rotated);
        let mut bad = wire;
        bad.scale_axis = 5;
        record.payload = Payload::Coded(bad);
        assert!(matches!(
            CodedTensor::try_from(&record),
            Err(NwcError::Corrupt { .. })
        ));
        record.payload = Payload::Raw(vec![0; 24]);
        assert!(CodedTensor::try_from(&record).is_err());
    }
}
