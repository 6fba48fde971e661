//! The segmented, 4-way interleaved rANS coder specified in `docs/format.md` ("Segment").
//!
//! Symbols are grouped in chunks of `chunk_len`; every chunk has a *class* (its quality level),
//! and symbol `i` of a chunk of class `c` is coded with table `table_map[c · chunk_len + i]`. A
//! tensor's chunks are cut into segments of `chunks_per_segment`, each an independent stream, so
//! both directions run on all cores.

use rayon::prelude::*;

use crate::context::ContextModel;
use crate::error::{EntropyError, Result};
use crate::lockstep;
use crate::segment::{Dec, WAYS, check_segment_size, decode, encode_segment, same_precision};
use crate::table::Table;

/// How symbols map to tables: the per-class table rows of a [`Coder`].
#[derive(Debug, Clone)]
pub struct Coder<'a> {
    tables: &'a [Table],
    table_map: &'a [u16],
    chunk_len: usize,
    n_classes: usize,
    contexts: Option<&'a ContextModel>,
}

impl<'a> Coder<'a> {
    /// A coder over `tables`, with `table_map` holding `n_classes` rows of `chunk_len` table
    /// indices.
    ///
    /// # Errors
    /// [`EntropyError::InvalidLayout`] when `chunk_len` is zero, `table_map` is not a whole number
    /// of rows, or refers to a table that does not exist.
    pub fn new(tables: &'a [Table], table_map: &'a [u16], chunk_len: usize) -> Result<Self> {
        if chunk_len == 0 || table_map.is_empty() || !table_map.len().is_multiple_of(chunk_len) {
            return Err(EntropyError::InvalidLayout(format!(
                "table map of {} entries is not a whole number of rows of {chunk_len}",
                table_map.len()
            )));
        }
        if let Some(&bad) = table_map.iter().find(|&&t| usize::from(t) >= tables.len()) {
            return Err(EntropyError::InvalidLayout(format!(
                "table map refers to table {bad}, only {} exist",
                tables.len()
            )));
        }
        Ok(Self {
            tables,
            table_map,
            chunk_len,
            n_classes: table_map.len() / chunk_len,
            contexts: None,
        })
    }

    /// Codes with a finite-state context model: symbol `i` of a chunk of class `c`, coded in state
    /// `q`, uses the row `c · n_contexts + context(q)` of the table map; the state restarts at 0
    /// with every chunk (`docs/format.md`, "Trellis contexts"). `None` keeps one row per class.
    ///
    /// # Errors
    /// [`EntropyError::InvalidLayout`] when the table map's rows are not a whole number of
    /// classes.
    pub fn with_contexts(mut self, contexts: Option<&'a ContextModel>) -> Result<Self> {
        let rows = self.table_map.len() / self.chunk_len;
        if let Some(m) = contexts {
            if !rows.is_multiple_of(m.n_contexts()) {
                return Err(EntropyError::InvalidLayout(format!(
                    "{rows} table-map rows for {} contexts per class",
                    m.n_contexts()
                )));
            }
            self.n_classes = rows / m.n_contexts();
        } else {
            self.n_classes = rows;
        }
        self.contexts = contexts;
        Ok(self)
    }

    /// Symbols per chunk.
    pub fn chunk_len(&self) -> usize {
        self.chunk_len
    }

    /// The tables of each class, one row of `chunk_len` per class (indices checked in `new`).
    fn rows(&self) -> Vec<Vec<&'a Table>> {
        self.table_map
            .chunks_exact(self.chunk_len)
            .map(|row| row.iter().map(|&t| &self.tables[usize::from(t)]).collect())
            .collect()
    }

    fn check_classes(&self, classes: &[u8]) -> Result<()> {
        match classes.iter().find(|&&c| usize::from(c) >= self.n_classes) {
            Some(&c) => Err(EntropyError::InvalidLayout(format!(
                "chunk class {c} has no row in the table map ({} classes)",
                self.n_classes
            ))),
            None => Ok(()),
        }
    }

    /// Encodes one segment: `symbols` holds `classes.len()` whole chunks.
    ///
    /// # Errors
    /// [`EntropyError::InvalidLayout`] when the symbol count does not match the classes.
    pub fn encode_segment(&self, symbols: &[i32], classes: &[u8]) -> Result<Vec<u8>> {
        self.check_segment_shape(symbols.len(), classes)?;
        let rows = self.rows();
        Ok(encode_segment(
            &rows,
            self.contexts,
            symbols,
            classes,
            self.chunk_len,
        ))
    }

    /// Decodes one segment of `classes.len()` chunks into `out`.
    ///
    /// # Errors
    /// `Corrupt*` variants when the bytes are not a valid segment for this layout (the
    /// `segment` field is set to `segment_index`); [`EntropyError::InvalidLayout`] when `out`
    /// does not match the classes.
    pub fn decode_segment(
        &self,
        bytes: &[u8],
        classes: &[u8],
        out: &mut [i32],
        segment_index: usize,
    ) -> Result<()> {
        self.check_segment_shape(out.len(), classes)?;
        let rows = self.rows();
        decode(
            &rows,
            self.contexts,
            bytes,
            classes,
            self.chunk_len,
            out,
            segment_index,
        )
    }

    fn check_segment_shape(&self, n_symbols: usize, classes: &[u8]) -> Result<()> {
        if n_symbols != classes.len() * self.chunk_len {
            return Err(EntropyError::InvalidLayout(format!(
                "{n_symbols} symbols are not {} chunks of {}",
                classes.len(),
                self.chunk_len
            )));
        }
        self.check_classes(classes)
    }

    /// Encodes a whole tensor's chunks into segments of `chunks_per_segment` chunks, in parallel.
    ///
    /// # Errors
    /// [`EntropyError::InvalidLayout`] on mismatched lengths or a segment size outside
    /// `1..=4096`.
    pub fn encode_all(
        &self,
        symbols: &[i32],
        classes: &[u8],
        chunks_per_segment: usize,
    ) -> Result<Vec<Vec<u8>>> {
        self.check_segment_shape(symbols.len(), classes)?;
        check_segment_size(chunks_per_segment)?;
        let rows = self.rows();
        let sym_per_seg = chunks_per_segment * self.chunk_len;
        Ok(symbols
            .par_chunks(sym_per_seg)
            .zip(classes.par_chunks(chunks_per_segment))
            .map(|(s, c)| encode_segment(&rows, self.contexts, s, c, self.chunk_len))
            .collect())
    }

    /// Decodes all segments of a tensor into `out` (which holds `classes.len()` chunks), in
    /// parallel.
    ///
    /// # Errors
    /// As [`Coder::decode_segment`], plus [`EntropyError::InvalidLayout`] when the number of
    /// segments does not match.
    pub fn decode_all(
        &self,
        segments: &[&[u8]],
        classes: &[u8],
        chunks_per_segment: usize,
        out: &mut [i32],
    ) -> Result<()> {
        self.decode_segments(segments, 0, classes, chunks_per_segment, out)
    }

    /// Decodes a run of consecutive segments of a tensor, the first of them segment `first`,
    /// into `out` (which holds `classes.len()` chunks, the run's), in parallel: a tensor decoded
    /// a few segments at a time, each run's symbols used while they are in cache. Errors name
    /// segments by their index in the tensor.
    ///
    /// # Errors
    /// As [`Coder::decode_all`].
    pub fn decode_segments(
        &self,
        segments: &[&[u8]],
        first: usize,
        classes: &[u8],
        chunks_per_segment: usize,
        out: &mut [i32],
    ) -> Result<()> {
        self.check_segment_shape(out.len(), classes)?;
        check_segment_size(chunks_per_segment)?;
        let expected = classes.len().div_ceil(chunks_per_segment);
        if segments.len() != expected {
            return Err(EntropyError::InvalidLayout(format!(
                "{} segments for {} chunks of {chunks_per_segment}, expected {expected}",
                segments.len(),
                classes.len()
            )));
        }
        let rows = self.rows();
        let sym_per_seg = chunks_per_segment * self.chunk_len;
        // Rows that use one table at every position (ECSQ's, TCQ's per context) decode two
        // segments in lockstep; anything else, or a pair that fails, one segment at a time.
        let uniform: Option<Vec<Dec<'_>>> = (self.chunk_len.is_multiple_of(WAYS)
            && rows
                .iter()
                .all(|r| r.iter().all(|t| std::ptr::eq(*t, r[0]))))
        .then(|| rows.iter().map(|r| Dec::new(r[0])).collect());
        let n_contexts = self.contexts.map_or(1, ContextModel::n_contexts);
        // Two contexts of one precision (TCQ's): both tables read before the context is known.
        let pairs: Option<Vec<[Dec<'_>; 2]>> = uniform
            .as_deref()
            .filter(|d| {
                n_contexts == 2
                    && self.contexts.is_some()
                    && d.iter().all(|t| same_precision(t, &d[0]))
            })
            .map(|d| d.chunks_exact(2).map(|p| [p[0], p[1]]).collect());
        let tables = uniform
            .as_deref()
            .map(|per_class| match (self.contexts, &pairs) {
                (None, _) => lockstep::Tables::Uniform(per_class),
                (Some(model), Some(pairs)) => lockstep::Tables::Contexts2 {
                    per_class: pairs,
                    model,
                },
                (Some(model), None) => lockstep::Tables::Contexts { per_class, model },
            });
        let one = |i: usize, o: &mut [i32], c: &[u8], bytes: &[u8]| {
            decode(&rows, self.contexts, bytes, c, self.chunk_len, o, first + i)
        };
        out.par_chunks_mut(2 * sym_per_seg)
            .zip(classes.par_chunks(2 * chunks_per_segment))
            .zip(segments.par_chunks(2))
            .enumerate()
            .try_for_each(|(pair, ((o, c), segs))| {
                if let (Some(t), [sa, sb]) = (&tables, segs)
                    && c.len() == 2 * chunks_per_segment
                {
                    let (oa, ob) = o.split_at_mut(sym_per_seg);
                    let (ca, cb) = c.split_at(chunks_per_segment);
                    if lockstep::decode_pair(
                        t,
                        n_contexts,
                        self.chunk_len,
                        [sa, sb],
                        [ca, cb],
                        [&mut *oa, &mut *ob],
                    ) {
                        return Ok(());
                    }
                }
                for (j, ((o, c), bytes)) in o
                    .chunks_mut(sym_per_seg)
                    .zip(c.chunks(chunks_per_segment))
                    .zip(segs)
                    .enumerate()
                {
                    if let Some(t) = &tables
                        && lockstep::decode_single(t, n_contexts, self.chunk_len, bytes, c, o)
                    {
                        continue;
                    }
                    one(2 * pair + j, o, c, bytes)?;
                }
                Ok(())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContextModel;
    use crate::segment::*;
    use proptest::prelude::*;

    fn tables() -> Vec<Table> {
        vec![
            Table::from_probabilities(-3, &[0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05], 0.01, 12)
                .unwrap(),
            Table::from_freqs(0, 16, vec![65535, 1]).unwrap(),
            Table::from_freqs(-1, 8, vec![100, 100, 56]).unwrap(),
        ]
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, 1, -1, i32::MAX, i32::MIN, 12345, -54321] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
    }

    #[test]
    fn round_trip_with_escapes_and_classes() {
        let t = tables();
        let map: Vec<u16> = (0..3 * 4).map(|i| (i / 4) as u16).collect();
        let coder = Coder::new(&t, &map, 4).unwrap();
        let symbols = vec![
            0,
            1,
            -3,
            3,
            0,
            0,
            i32::MIN,
            i32::MAX,
            -1,
            0,
            1,
            7,
            5,
            -4,
            0,
            2,
        ];
        let classes = vec![0, 1, 2, 0];
        let seg = coder.encode_segment(&symbols, &classes).unwrap();
        let mut out = vec![0; symbols.len()];
        coder.decode_segment(&seg, &classes, &mut out, 0).unwrap();
        assert_eq!(out, symbols);
    }

    #[test]
    fn damage_is_detected_not_panicked_on() {
        let t = tables();
        let map = vec![0u16; 4];
        let coder = Coder::new(&t, &map, 4).unwrap();
        let symbols: Vec<i32> = (0..400).map(|i| (i * 7 % 9) - 4).collect();
        let classes = vec![0u8; 100];
        let seg = coder.encode_segment(&symbols, &classes).unwrap();
        let mut out = vec![0; symbols.len()];
        // Truncation anywhere fails cleanly.
        for cut in 0..seg.len() {
            assert!(
                coder
                    .decode_segment(&seg[..cut], &classes, &mut out, 0)
                    .is_err()
            );
        }
        // Every single bit flip is either detected or (rarely) decodes to other symbols; it never
        // panics. Most are detected by the end check.
        let mut detected = 0;
        for bit in 0..seg.len() * 8 {
            let mut bad = seg.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            if coder.decode_segment(&bad, &classes, &mut out, 0).is_err() || out != symbols {
                detected += 1;
            }
        }
        assert_eq!(detected, seg.len() * 8);
    }

    #[test]
    fn bad_layouts_are_errors() {
        let t = tables();
        assert!(Coder::new(&t, &[0, 1, 3], 3).is_err());
        assert!(Coder::new(&t, &[0, 1], 3).is_err());
        let map = [0u16, 1];
        let coder = Coder::new(&t, &map, 2).unwrap();
        assert!(coder.encode_segment(&[0, 0], &[1]).is_err());
        assert!(coder.encode_segment(&[0, 0, 0], &[0]).is_err());
        assert!(coder.encode_all(&[0, 0], &[0], 0).is_err());
        let mut out = [0; 2];
        assert!(coder.decode_all(&[], &[0], 1, &mut out).is_err());
    }

    #[test]
    fn contexts_follow_the_trellis_and_round_trip() {
        // Two classes × two contexts: rows 0,1 for class 0 and rows 2,3 for class 1.
        let t = vec![
            Table::from_probabilities(-2, &[0.1, 0.2, 0.4, 0.2, 0.1], 1e-4, 14).unwrap(),
            Table::from_probabilities(-2, &[0.3, 0.2, 0.1, 0.2, 0.2], 1e-4, 14).unwrap(),
            Table::from_freqs(-1, 12, vec![1000, 2000, 1000, 96]).unwrap(),
            Table::from_freqs(0, 10, vec![500, 500, 24]).unwrap(),
        ];
        let map: Vec<u16> = (0..4 * 8).map(|i| (i / 8) as u16).collect();
        let model = ContextModel::tcq8();
        let coder = Coder::new(&t, &map, 8)
            .unwrap()
            .with_contexts(Some(&model))
            .unwrap();
        let mut rng = crate::SplitMix64(3);
        let symbols: Vec<i32> = (0..8 * 300)
            .map(|_| (rng.next_u64() % 5) as i32 - 2)
            .chain([i32::MIN, i32::MAX, 77, -77, 0, 1, 2, 3])
            .collect();
        let classes: Vec<u8> = (0..301).map(|k| (k % 2) as u8).collect();
        let segs = coder.encode_all(&symbols, &classes, 7).unwrap();
        let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
        let mut out = vec![0; symbols.len()];
        coder.decode_all(&refs, &classes, 7, &mut out).unwrap();
        assert_eq!(out, symbols);
        // The same symbols without contexts decode differently (or fail): contexts matter.
        let plain = Coder::new(&t, &map, 8).unwrap();
        let mut other = vec![0; symbols.len()];
        assert!(plain.decode_all(&refs, &classes, 7, &mut other).is_err() || other != symbols);
        // A map that is not a whole number of context rows is refused.
        let odd: Vec<u16> = vec![0; 3 * 8];
        assert!(
            Coder::new(&t, &odd, 8)
                .unwrap()
                .with_contexts(Some(&model))
                .is_err()
        );
        // A class beyond the rows is an error, not a panic.
        let mut o = vec![0; 8];
        assert!(coder.encode_segment(&symbols[..8], &[2]).is_err());
        assert!(coder.decode_segment(&segs[0], &[2], &mut o, 0).is_err());
    }

    proptest! {
        #[test]
        fn segmented_round_trip(
            symbols in proptest::collection::vec(-6i32..6, 0..2000),
            per_seg in 1usize..40,
        ) {
            let t = tables();
            let map: Vec<u16> = vec![0, 2, 0, 0, 1, 0, 0, 2];
            let coder = Coder::new(&t, &map, 4).unwrap();
            let n_chunks = symbols.len() / 4;
            let symbols = &symbols[..n_chunks * 4];
            let classes: Vec<u8> = (0..n_chunks).map(|k| (k % 2) as u8).collect();
            let segs = coder.encode_all(symbols, &classes, per_seg).unwrap();
            let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
            let mut out = vec![0; symbols.len()];
            coder.decode_all(&refs, &classes, per_seg, &mut out).unwrap();
            prop_assert_eq!(out, symbols);
        }
    }
}
