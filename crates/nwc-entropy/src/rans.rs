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
use crate::table::Table;

/// Lower bound of a normalized state; states live in `[L, 2^63)`. With tables of at most 2^16,
/// this leaves 15 bits of slack, which keeps rANS's own coding loss negligible.
pub(crate) const L: u64 = 1 << 31;
/// Number of interleaved states per segment.
pub(crate) const WAYS: usize = 4;
/// Bytes a segment spends on its final states.
pub const SEGMENT_HEADER_BYTES: usize = 8 * WAYS;
/// The most chunks one segment may hold (bounds what a hostile header can claim).
pub const MAX_CHUNKS_PER_SEGMENT: usize = 4096;

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
        let tables = uniform.as_deref().map(|per_class| match self.contexts {
            None => lockstep::Tables::Uniform(per_class),
            Some(model) => lockstep::Tables::Contexts { per_class, model },
        });
        let n_contexts = self.contexts.map_or(1, ContextModel::n_contexts);
        let one = |i: usize, o: &mut [i32], c: &[u8], bytes: &[u8]| {
            decode(&rows, self.contexts, bytes, c, self.chunk_len, o, i)
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
                    one(2 * pair + j, o, c, bytes)?;
                }
                Ok(())
            })
    }
}

fn check_segment_size(chunks_per_segment: usize) -> Result<()> {
    if chunks_per_segment == 0 || chunks_per_segment > MAX_CHUNKS_PER_SEGMENT {
        return Err(EntropyError::InvalidLayout(format!(
            "chunks per segment {chunks_per_segment} outside 1..={MAX_CHUNKS_PER_SEGMENT}"
        )));
    }
    Ok(())
}

#[inline]
fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

#[inline]
fn unzigzag(u: u32) -> i32 {
    ((u >> 1) as i32) ^ -((u & 1) as i32)
}

#[inline(always)]
fn put(x: &mut u64, words: &mut Vec<u32>, freq: u32, cum: u32, precision: u32) {
    let freq = u64::from(freq);
    // x_max = ((L >> p) << 32) · f: one 32-bit word out always brings x below it.
    let x_max = freq << (63 - precision);
    if *x >= x_max {
        words.push(*x as u32);
        *x >>= 32;
    }
    *x = ((*x / freq) << precision) + (*x % freq) + u64::from(cum);
}

fn encode_segment(
    rows: &[Vec<&Table>],
    contexts: Option<&ContextModel>,
    symbols: &[i32],
    classes: &[u8],
    chunk_len: usize,
) -> Vec<u8> {
    // The table of every symbol, found forwards (contexts follow the symbols in coding order).
    let mut picked: Vec<&Table> = Vec::with_capacity(symbols.len());
    for (chunk, &class) in symbols.chunks_exact(chunk_len).zip(classes) {
        let mut pick = Picker::new(contexts, class);
        for (i, &v) in chunk.iter().enumerate() {
            picked.push(rows[pick.row()][i]);
            pick.advance(v);
        }
    }
    let mut x = [L; WAYS];
    let mut words: Vec<u32> = Vec::with_capacity(symbols.len() / 4 + 8);
    // The decoder reads forwards, so the encoder runs backwards over symbols (and within an
    // escaped symbol, over its parts).
    for j in (0..symbols.len()).rev() {
        let table = picked[j];
        let s = &mut x[j % WAYS];
        let value = symbols[j];
        let p = table.precision();
        match table.index_of(value) {
            Some(i) => {
                let info = table.info(i);
                put(s, &mut words, info >> 16, info & 0xffff, p);
            }
            None => {
                // Raw bits go in two 16-bit steps (a 32-bit step could leave the state below L).
                let z = zigzag(value);
                put(s, &mut words, 1, z & 0xffff, 16);
                put(s, &mut words, 1, z >> 16, 16);
                let info = table.info(table.escape_index());
                put(s, &mut words, info >> 16, info & 0xffff, p);
            }
        }
    }
    let mut out = Vec::with_capacity(SEGMENT_HEADER_BYTES + 4 * words.len());
    for s in x {
        out.extend_from_slice(&s.to_le_bytes());
    }
    for w in words.iter().rev() {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out
}

/// A table as the decoder reads it: its lookup arrays borrowed, its constants copied out, so one
/// symbol costs two loads from the table (slot → index, index → frequency and start).
#[derive(Clone, Copy)]
pub(crate) struct Dec<'t> {
    lut: &'t [u16],
    info: &'t [u32],
    mask: u64,
    precision: u32,
    escape: usize,
    min_symbol: i32,
}

impl<'t> Dec<'t> {
    pub(crate) fn new(t: &'t Table) -> Self {
        Self {
            lut: t.lut(),
            info: t.info_all(),
            mask: (1u64 << t.precision()) - 1,
            precision: t.precision(),
            escape: t.escape_index(),
            min_symbol: t.min_symbol(),
        }
    }
}

/// The 32-bit words of a segment after its header, read forwards. The decoder keeps its read
/// position in a local; reading past the end yields 0 (`renorm`) and is noticed afterwards as a
/// position beyond `words.len()`, so the hot loop has no exit for it.
pub(crate) fn words_of(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Brings a state below `L` back into `[L, 2^63)` with the next word, without a branch.
#[inline(always)]
fn renorm(s: u64, words: &[u32], pos: usize) -> (u64, usize) {
    let w = u64::from(words.get(pos).copied().unwrap_or(0));
    let need = s < L;
    (
        if need { (s << 32) | w } else { s },
        pos + usize::from(need),
    )
}

/// Decodes one symbol of stream state `s` (all by value, so states and the position stay in
/// registers).
#[inline(always)]
pub(crate) fn decode_one(d: &Dec<'_>, s: &mut u64, words: &[u32], pos: &mut usize) -> i32 {
    let slot = *s & d.mask;
    let index = usize::from(d.lut[slot as usize]);
    let info = u64::from(d.info[index]);
    let x = (info >> 16) * (*s >> d.precision) + slot - (info & 0xffff);
    let (x, p) = renorm(x, words, *pos);
    if index == d.escape {
        let (v, x, p) = decode_raw(x, words, p);
        *s = x;
        *pos = p;
        v
    } else {
        *s = x;
        *pos = p;
        d.min_symbol + index as i32
    }
}

/// The 32 raw bits after an escape, in two 16-bit steps.
#[cold]
#[inline(never)]
fn decode_raw(mut s: u64, words: &[u32], mut pos: usize) -> (i32, u64, usize) {
    let mut raw = 0u32;
    for _ in 0..2 {
        let v = (s & 0xffff) as u32;
        (s, pos) = renorm(s >> 16, words, pos);
        raw = (raw << 16) | v;
    }
    (unzigzag(raw), s, pos)
}

/// The table-map row of the next symbol of a chunk: the class's row, or with a context model,
/// the row of the class and the current state's context.
struct Picker<'m> {
    contexts: Option<&'m ContextModel>,
    base: usize,
    state: u8,
}

impl<'m> Picker<'m> {
    #[inline(always)]
    fn new(contexts: Option<&'m ContextModel>, class: u8) -> Self {
        let n = contexts.map_or(1, ContextModel::n_contexts);
        Self {
            contexts,
            base: usize::from(class) * n,
            state: 0,
        }
    }

    #[inline(always)]
    fn row(&self) -> usize {
        match self.contexts {
            None => self.base,
            Some(m) => self.base + m.context(self.state),
        }
    }

    #[inline(always)]
    fn advance(&mut self, symbol: i32) {
        if let Some(m) = self.contexts {
            self.state = m.next(self.state, symbol);
        }
    }
}

fn decode(
    rows: &[Vec<&Table>],
    contexts: Option<&ContextModel>,
    bytes: &[u8],
    classes: &[u8],
    chunk_len: usize,
    out: &mut [i32],
    segment: usize,
) -> Result<()> {
    let rows: Vec<Vec<Dec<'_>>> = rows
        .iter()
        .map(|r| r.iter().map(|t| Dec::new(t)).collect())
        .collect();
    // Two monomorphic loops: the context-free one keeps its speed.
    match contexts {
        None => decode_segment::<false>(&rows, None, bytes, classes, chunk_len, out, segment),
        Some(m) => decode_segment::<true>(&rows, Some(m), bytes, classes, chunk_len, out, segment),
    }
}

fn decode_segment<const CTX: bool>(
    rows: &[Vec<Dec<'_>>],
    contexts: Option<&ContextModel>,
    bytes: &[u8],
    classes: &[u8],
    chunk_len: usize,
    out: &mut [i32],
    segment: usize,
) -> Result<()> {
    if bytes.len() < SEGMENT_HEADER_BYTES || !bytes.len().is_multiple_of(4) {
        return Err(EntropyError::CorruptSegment {
            segment,
            reason: format!("{} bytes is not a valid segment length", bytes.len()),
        });
    }
    let mut x = [0u64; WAYS];
    for (i, s) in x.iter_mut().enumerate() {
        *s = u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().expect("8 bytes"));
        if !(L..1 << 63).contains(s) {
            return Err(EntropyError::CorruptSegment {
                segment,
                reason: format!("initial state {i} outside [2^31, 2^63)"),
            });
        }
    }
    let words = words_of(&bytes[SEGMENT_HEADER_BYTES..]);
    let mut pos = 0usize;
    let truncated = |decoded| EntropyError::CorruptTruncated { segment, decoded };
    let contexts = if CTX { contexts } else { None };
    if chunk_len.is_multiple_of(WAYS) {
        // Symbol i of every chunk belongs to stream i mod 4: four independent states in
        // registers, decoded in turn, so their dependency chains overlap.
        let [mut x0, mut x1, mut x2, mut x3] = x;
        // Rows that use one table at every position (ECSQ's) get a loop with the table's
        // constants hoisted into registers.
        let uniform: Vec<bool> = rows
            .iter()
            .map(|r| !CTX && r.iter().all(|d| std::ptr::eq(d.lut, r[0].lut)))
            .collect();
        for (k, (&class, chunk_out)) in classes
            .iter()
            .zip(out.chunks_exact_mut(chunk_len))
            .enumerate()
        {
            let mut pick = Picker::new(contexts, class);
            let row = &rows[pick.row()];
            if uniform[pick.row()] {
                let d = row[0];
                let w = &words;
                for o in chunk_out.chunks_exact_mut(WAYS) {
                    o[0] = decode_one(&d, &mut x0, w, &mut pos);
                    o[1] = decode_one(&d, &mut x1, w, &mut pos);
                    o[2] = decode_one(&d, &mut x2, w, &mut pos);
                    o[3] = decode_one(&d, &mut x3, w, &mut pos);
                }
                if pos > words.len() {
                    return Err(truncated(k * chunk_len));
                }
                continue;
            }
            for (q, o) in chunk_out.chunks_exact_mut(WAYS).enumerate() {
                let i = q * WAYS;
                // A macro, not a closure: every state and the word position stay in registers.
                macro_rules! one {
                    ($n:expr, $s:ident) => {{
                        let d = if CTX {
                            &rows[pick.row()][i + $n]
                        } else {
                            &row[i + $n]
                        };
                        let v = decode_one(d, &mut $s, &words, &mut pos);
                        if CTX {
                            pick.advance(v);
                        }
                        o[$n] = v;
                    }};
                }
                one!(0, x0);
                one!(1, x1);
                one!(2, x2);
                one!(3, x3);
            }
            if pos > words.len() {
                return Err(truncated(k * chunk_len));
            }
        }
        x = [x0, x1, x2, x3];
    } else {
        let mut j = 0usize;
        for (k, (&class, chunk_out)) in classes
            .iter()
            .zip(out.chunks_exact_mut(chunk_len))
            .enumerate()
        {
            let mut pick = Picker::new(contexts, class);
            for (i, o) in chunk_out.iter_mut().enumerate() {
                *o = decode_one(&rows[pick.row()][i], &mut x[j % WAYS], &words, &mut pos);
                if CTX {
                    pick.advance(*o);
                }
                j += 1;
            }
            if pos > words.len() {
                return Err(truncated(k * chunk_len));
            }
        }
    }
    if x.iter().any(|&s| s != L) {
        return Err(EntropyError::CorruptSegment {
            segment,
            reason: "final states differ from the initial state".into(),
        });
    }
    if pos != words.len() {
        return Err(EntropyError::CorruptSegment {
            segment,
            reason: format!(
                "{} trailing bytes after the last symbol",
                4 * (words.len() - pos)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContextModel;
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
