//! One segment of the rANS coder (`docs/format.md`, "Segment"): the 4-way interleaved states,
//! encoding a segment's symbols into bytes and decoding them back, one table or one coding
//! context per symbol. [`crate::rans::Coder`] cuts a tensor into segments and runs these in
//! parallel; [`crate::lockstep`] decodes two at once with the same primitives.

use crate::context::ContextModel;
use crate::error::{EntropyError, Result};
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

pub(crate) fn check_segment_size(chunks_per_segment: usize) -> Result<()> {
    if chunks_per_segment == 0 || chunks_per_segment > MAX_CHUNKS_PER_SEGMENT {
        return Err(EntropyError::InvalidLayout(format!(
            "chunks per segment {chunks_per_segment} outside 1..={MAX_CHUNKS_PER_SEGMENT}"
        )));
    }
    Ok(())
}

#[inline]
pub(crate) fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

#[inline]
pub(crate) fn unzigzag(u: u32) -> i32 {
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

pub(crate) fn encode_segment(
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

/// The 32-bit words of a segment after its header, read forwards where they lie (little-endian
/// groups of four bytes, no copy). The decoder keeps its read position beyond `words.len()`, so
/// the hot loop has no exit for it.
pub(crate) fn words_of(bytes: &[u8]) -> &[[u8; 4]] {
    bytes.as_chunks::<4>().0
}

/// Brings a state below `L` back into `[L, 2^63)` with the next word, without a branch.
#[inline(always)]
fn renorm(s: u64, words: &[[u8; 4]], pos: usize) -> (u64, usize) {
    let w = u64::from(words.get(pos).map_or(0, |w| u32::from_le_bytes(*w)));
    let need = s < L;
    (
        if need { (s << 32) | w } else { s },
        pos + usize::from(need),
    )
}

/// Decodes one symbol of stream state `s` (all by value, so states and the position stay in
/// registers).
#[inline(always)]
pub(crate) fn decode_one(d: &Dec<'_>, s: &mut u64, words: &[[u8; 4]], pos: &mut usize) -> i32 {
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

/// Whether two tables can be read with [`decode_one2`] (the same precision).
pub(crate) fn same_precision(a: &Dec<'_>, b: &Dec<'_>) -> bool {
    a.precision == b.precision
}

/// Picks `b` when `mask` is all ones, `a` when it is zero, without a branch.
#[inline(always)]
fn pick(a: u64, b: u64, mask: u64) -> u64 {
    (a & !mask) | (b & mask)
}

/// [`decode_one`] with one of two tables of the same precision, `d[c]`, chosen late: the slot
/// is looked up in both before `c` is used, so a context that waits on the previous symbol (a
/// trellis state) is not on the path from the coder state to the table. The same symbol and
/// state as [`decode_one`] with `d[c]`.
#[inline(always)]
pub(crate) fn decode_one2(
    d: &[Dec<'_>; 2],
    c: usize,
    s: &mut u64,
    words: &[[u8; 4]],
    pos: &mut usize,
) -> i32 {
    let slot = *s & d[0].mask;
    let (i0, i1) = (d[0].lut[slot as usize], d[1].lut[slot as usize]);
    let (f0, f1) = (d[0].info[usize::from(i0)], d[1].info[usize::from(i1)]);
    let m = 0u64.wrapping_sub((c & 1) as u64);
    let index = pick(u64::from(i0), u64::from(i1), m) as usize;
    let info = pick(u64::from(f0), u64::from(f1), m);
    let x = (info >> 16) * (*s >> d[0].precision) + slot - (info & 0xffff);
    let (x, p) = renorm(x, words, *pos);
    let escape = pick(d[0].escape as u64, d[1].escape as u64, m) as usize;
    if index == escape {
        let (v, x, p) = decode_raw(x, words, p);
        *s = x;
        *pos = p;
        v
    } else {
        *s = x;
        *pos = p;
        let min = pick(
            u64::from(d[0].min_symbol as u32),
            u64::from(d[1].min_symbol as u32),
            m,
        ) as u32 as i32;
        min + index as i32
    }
}

/// The 32 raw bits after an escape, in two 16-bit steps.
#[cold]
#[inline(never)]
fn decode_raw(mut s: u64, words: &[[u8; 4]], mut pos: usize) -> (i32, u64, usize) {
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

pub(crate) fn decode(
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
                let w = words;
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
                        let v = decode_one(d, &mut $s, words, &mut pos);
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
                *o = decode_one(&rows[pick.row()][i], &mut x[j % WAYS], words, &mut pos);
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
