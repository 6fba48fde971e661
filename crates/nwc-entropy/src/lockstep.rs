//! Two segments decoded in lockstep: the fast path of [`crate::Coder::decode_all`].
//!
//! One segment's four interleaved states share one word position (each renormalization reads
//! the next word), and with trellis contexts each symbol's table waits for the symbol before it,
//! so a single segment is bound by dependency chains rather than by the core's width. Two
//! independent segments interleaved symbol by symbol give the core two chains to overlap. The
//! symbols are the same as decoding each segment alone; on any sign of damage this path gives
//! up and the caller decodes each segment alone, which reports the exact error.

use crate::context::ContextModel;
use crate::segment::{Dec, L, SEGMENT_HEADER_BYTES, WAYS, decode_one, decode_one2, words_of};

/// How a chunk's symbols find their tables when decoded in lockstep.
pub(crate) enum Tables<'a, 't> {
    /// One table for every position of a class (ECSQ): `per_class[class]`.
    Uniform(&'a [Dec<'t>]),
    /// One table per class and context, the same at every position (TCQ):
    /// `per_class[class · n_contexts + context(state)]`, with the trellis `model`.
    Contexts {
        per_class: &'a [Dec<'t>],
        model: &'a ContextModel,
    },
    /// [`Tables::Contexts`] with two contexts whose tables share a precision (TCQ's):
    /// `per_class[class] = [context 0, context 1]`, read with [`decode_one2`] so the trellis
    /// state is off the coder state's path.
    Contexts2 {
        per_class: &'a [[Dec<'t>; 2]],
        model: &'a ContextModel,
    },
}

/// The trellis of `model` as one local table: the successor by parity, with its context in the
/// high byte (`next | context(next) << 8`), so one load per symbol moves both along.
fn walk_with_contexts(model: &ContextModel) -> [[u16; 2]; 256] {
    let mut t = [[0u16; 2]; 256];
    for (q, row) in t.iter_mut().enumerate().take(model.n_states()) {
        for (p, e) in row.iter_mut().enumerate() {
            let n = model.next(q as u8, p as i32);
            *e = u16::from(n) | (model.context(n) as u16) << 8;
        }
    }
    t
}

/// A segment being decoded: its four states, its words and the read position.
struct Stream<'b> {
    x: [u64; WAYS],
    words: &'b [[u8; 4]],
    pos: usize,
}

impl<'b> Stream<'b> {
    fn open(bytes: &'b [u8]) -> Option<Self> {
        if bytes.len() < SEGMENT_HEADER_BYTES || !bytes.len().is_multiple_of(4) {
            return None;
        }
        let mut x = [0u64; WAYS];
        for (i, s) in x.iter_mut().enumerate() {
            *s = u64::from_le_bytes(bytes[8 * i..8 * i + 8].try_into().ok()?);
            if !(L..1 << 63).contains(s) {
                return None;
            }
        }
        Some(Self {
            x,
            words: words_of(&bytes[SEGMENT_HEADER_BYTES..]),
            pos: 0,
        })
    }

    /// Whether the stream ended exactly: every state back at `L`, every word read.
    fn ended(&self) -> bool {
        self.x.iter().all(|&s| s == L) && self.pos == self.words.len()
    }
}

/// Decodes segments `a` and `b` (the same number of chunks, `chunk_len` a multiple of 4) into
/// `out_a` and `out_b`. Returns `false`, with the outputs unspecified, when either segment is
/// damaged in any way; the caller then decodes them one at a time for the error.
pub(crate) fn decode_pair(
    tables: &Tables<'_, '_>,
    n_contexts: usize,
    chunk_len: usize,
    segments: [&[u8]; 2],
    classes: [&[u8]; 2],
    outs: [&mut [i32]; 2],
) -> bool {
    pulp::Arch::new().dispatch(Pair {
        tables,
        n_contexts,
        chunk_len,
        segments,
        classes,
        outs,
    })
}

/// [`decode_pair`]'s arguments as one [`pulp::WithSimd`] operation, so that the loops are also
/// compiled for AVX2 (BMI2 shifts, three-operand forms) and picked at run time; the same
/// integer arithmetic either way.
struct Pair<'x, 'a, 't> {
    tables: &'x Tables<'a, 't>,
    n_contexts: usize,
    chunk_len: usize,
    segments: [&'x [u8]; 2],
    classes: [&'x [u8]; 2],
    outs: [&'x mut [i32]; 2],
}

impl pulp::WithSimd for Pair<'_, '_, '_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
        decode_pair_here(
            self.tables,
            self.n_contexts,
            self.chunk_len,
            self.segments,
            self.classes,
            self.outs,
        )
    }
}

/// One segment ([`decode_single`]) as a [`pulp::WithSimd`] operation, as [`Pair`].
struct Single<'x, 'a, 't> {
    tables: &'x Tables<'a, 't>,
    n_contexts: usize,
    chunk_len: usize,
    segment: &'x [u8],
    classes: &'x [u8],
    out: &'x mut [i32],
}

impl pulp::WithSimd for Single<'_, '_, '_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
        decode_single_here(
            self.tables,
            self.n_contexts,
            self.chunk_len,
            self.segment,
            self.classes,
            self.out,
        )
    }
}

#[inline(always)]
fn decode_pair_here(
    tables: &Tables<'_, '_>,
    n_contexts: usize,
    chunk_len: usize,
    segments: [&[u8]; 2],
    classes: [&[u8]; 2],
    outs: [&mut [i32]; 2],
) -> bool {
    let (Some(mut a), Some(mut b)) = (Stream::open(segments[0]), Stream::open(segments[1])) else {
        return false;
    };
    let [out_a, out_b] = outs;
    let ([ca, cb], [wa, wb]) = (classes, [a.words, b.words]);
    let (mut pa, mut pb) = (0usize, 0usize);
    let [mut a0, mut a1, mut a2, mut a3] = a.x;
    let [mut b0, mut b1, mut b2, mut b3] = b.x;
    let chunks = out_a
        .chunks_exact_mut(chunk_len)
        .zip(out_b.chunks_exact_mut(chunk_len))
        .zip(ca.iter().zip(cb));
    match *tables {
        Tables::Uniform(per_class) => {
            for ((oa, ob), (&ka, &kb)) in chunks {
                let (Some(da), Some(db)) = (
                    per_class.get(usize::from(ka)),
                    per_class.get(usize::from(kb)),
                ) else {
                    return false;
                };
                for (ga, gb) in oa.chunks_exact_mut(WAYS).zip(ob.chunks_exact_mut(WAYS)) {
                    ga[0] = decode_one(da, &mut a0, wa, &mut pa);
                    gb[0] = decode_one(db, &mut b0, wb, &mut pb);
                    ga[1] = decode_one(da, &mut a1, wa, &mut pa);
                    gb[1] = decode_one(db, &mut b1, wb, &mut pb);
                    ga[2] = decode_one(da, &mut a2, wa, &mut pa);
                    gb[2] = decode_one(db, &mut b2, wb, &mut pb);
                    ga[3] = decode_one(da, &mut a3, wa, &mut pa);
                    gb[3] = decode_one(db, &mut b3, wb, &mut pb);
                }
                if pa > wa.len() || pb > wb.len() {
                    return false;
                }
            }
        }
        Tables::Contexts { per_class, model } => {
            let walk = walk_with_contexts(model);
            let start = (model.context(0) as u16) << 8;
            for ((oa, ob), (&ka, &kb)) in chunks {
                let (base_a, base_b) = (usize::from(ka) * n_contexts, usize::from(kb) * n_contexts);
                if base_a + n_contexts > per_class.len() || base_b + n_contexts > per_class.len() {
                    return false;
                }
                let (ra, rb) = (
                    &per_class[base_a..base_a + n_contexts],
                    &per_class[base_b..base_b + n_contexts],
                );
                let (mut qa, mut qb) = (start, start);
                macro_rules! step {
                    ($o:expr, $r:expr, $q:ident, $x:ident, $w:expr, $p:ident) => {{
                        let v = decode_one(&$r[usize::from($q >> 8)], &mut $x, $w, &mut $p);
                        $q = walk[usize::from($q & 0xff)][(v & 1) as usize];
                        $o = v;
                    }};
                }
                for (ga, gb) in oa.chunks_exact_mut(WAYS).zip(ob.chunks_exact_mut(WAYS)) {
                    step!(ga[0], ra, qa, a0, wa, pa);
                    step!(gb[0], rb, qb, b0, wb, pb);
                    step!(ga[1], ra, qa, a1, wa, pa);
                    step!(gb[1], rb, qb, b1, wb, pb);
                    step!(ga[2], ra, qa, a2, wa, pa);
                    step!(gb[2], rb, qb, b2, wb, pb);
                    step!(ga[3], ra, qa, a3, wa, pa);
                    step!(gb[3], rb, qb, b3, wb, pb);
                }
                if pa > wa.len() || pb > wb.len() {
                    return false;
                }
            }
        }
        Tables::Contexts2 { per_class, model } => {
            let walk = walk_with_contexts(model);
            let start = (model.context(0) as u16) << 8;
            for ((oa, ob), (&ka, &kb)) in chunks {
                let (Some(ra), Some(rb)) = (
                    per_class.get(usize::from(ka)),
                    per_class.get(usize::from(kb)),
                ) else {
                    return false;
                };
                let (mut qa, mut qb) = (start, start);
                macro_rules! step {
                    ($o:expr, $r:expr, $q:ident, $x:ident, $w:expr, $p:ident) => {{
                        let v = decode_one2($r, usize::from($q >> 8), &mut $x, $w, &mut $p);
                        $q = walk[usize::from($q & 0xff)][(v & 1) as usize];
                        $o = v;
                    }};
                }
                for (ga, gb) in oa.chunks_exact_mut(WAYS).zip(ob.chunks_exact_mut(WAYS)) {
                    step!(ga[0], ra, qa, a0, wa, pa);
                    step!(gb[0], rb, qb, b0, wb, pb);
                    step!(ga[1], ra, qa, a1, wa, pa);
                    step!(gb[1], rb, qb, b1, wb, pb);
                    step!(ga[2], ra, qa, a2, wa, pa);
                    step!(gb[2], rb, qb, b2, wb, pb);
                    step!(ga[3], ra, qa, a3, wa, pa);
                    step!(gb[3], rb, qb, b3, wb, pb);
                }
                if pa > wa.len() || pb > wb.len() {
                    return false;
                }
            }
        }
    }
    a.x = [a0, a1, a2, a3];
    b.x = [b0, b1, b2, b3];
    a.pos = pa;
    b.pos = pb;
    a.ended() && b.ended()
}

/// Decodes one segment with the same tables as [`decode_pair`] (the last segment of an odd
/// count, or a tensor of one segment): the loops of the pair, one stream. Returns `false`, with
/// the output unspecified, when the segment is damaged in any way.
pub(crate) fn decode_single(
    tables: &Tables<'_, '_>,
    n_contexts: usize,
    chunk_len: usize,
    segment: &[u8],
    classes: &[u8],
    out: &mut [i32],
) -> bool {
    pulp::Arch::new().dispatch(Single {
        tables,
        n_contexts,
        chunk_len,
        segment,
        classes,
        out,
    })
}

#[inline(always)]
fn decode_single_here(
    tables: &Tables<'_, '_>,
    n_contexts: usize,
    chunk_len: usize,
    segment: &[u8],
    classes: &[u8],
    out: &mut [i32],
) -> bool {
    let Some(mut a) = Stream::open(segment) else {
        return false;
    };
    let wa = a.words;
    let mut pa = 0usize;
    let [mut a0, mut a1, mut a2, mut a3] = a.x;
    let chunks = out.chunks_exact_mut(chunk_len).zip(classes);
    match *tables {
        Tables::Uniform(per_class) => {
            for (oa, &ka) in chunks {
                let Some(da) = per_class.get(usize::from(ka)) else {
                    return false;
                };
                for ga in oa.chunks_exact_mut(WAYS) {
                    ga[0] = decode_one(da, &mut a0, wa, &mut pa);
                    ga[1] = decode_one(da, &mut a1, wa, &mut pa);
                    ga[2] = decode_one(da, &mut a2, wa, &mut pa);
                    ga[3] = decode_one(da, &mut a3, wa, &mut pa);
                }
                if pa > wa.len() {
                    return false;
                }
            }
        }
        Tables::Contexts { per_class, model } => {
            let walk = walk_with_contexts(model);
            let start = (model.context(0) as u16) << 8;
            for (oa, &ka) in chunks {
                let base_a = usize::from(ka) * n_contexts;
                if base_a + n_contexts > per_class.len() {
                    return false;
                }
                let ra = &per_class[base_a..base_a + n_contexts];
                let mut qa = start;
                macro_rules! step {
                    ($o:expr, $x:ident) => {{
                        let v = decode_one(&ra[usize::from(qa >> 8)], &mut $x, wa, &mut pa);
                        qa = walk[usize::from(qa & 0xff)][(v & 1) as usize];
                        $o = v;
                    }};
                }
                for ga in oa.chunks_exact_mut(WAYS) {
                    step!(ga[0], a0);
                    step!(ga[1], a1);
                    step!(ga[2], a2);
                    step!(ga[3], a3);
                }
                if pa > wa.len() {
                    return false;
                }
            }
        }
        Tables::Contexts2 { per_class, model } => {
            let walk = walk_with_contexts(model);
            let start = (model.context(0) as u16) << 8;
            for (oa, &ka) in chunks {
                let Some(ra) = per_class.get(usize::from(ka)) else {
                    return false;
                };
                let mut qa = start;
                macro_rules! step {
                    ($o:expr, $x:ident) => {{
                        let v = decode_one2(ra, usize::from(qa >> 8), &mut $x, wa, &mut pa);
                        qa = walk[usize::from(qa & 0xff)][(v & 1) as usize];
                        $o = v;
                    }};
                }
                for ga in oa.chunks_exact_mut(WAYS) {
                    step!(ga[0], a0);
                    step!(ga[1], a1);
                    step!(ga[2], a2);
                    step!(ga[3], a3);
                }
                if pa > wa.len() {
                    return false;
                }
            }
        }
    }
    a.x = [a0, a1, a2, a3];
    a.pos = pa;
    a.ended()
}

#[cfg(test)]
mod tests {
    use crate::{Coder, EntropyError, Table};

    /// Lockstep decoding gives each segment's own symbols, and damage in either segment of a
    /// pair is reported as decoding that segment alone reports it (its index included).
    #[test]
    fn pairs_decode_like_single_segments_and_report_damage_exactly() {
        let t = [
            Table::from_probabilities(-3, &[0.05, 0.1, 0.2, 0.3, 0.2, 0.1, 0.05], 1e-4, 14)
                .unwrap(),
        ];
        let map = [0u16; 16];
        let coder = Coder::new(&t, &map, 16).unwrap();
        let mut rng = crate::SplitMix64(9);
        let symbols: Vec<i32> = (0..16 * 64)
            .map(|i| {
                if i % 97 == 0 {
                    1000 + i
                } else {
                    (rng.next_u64() % 7) as i32 - 3
                }
            })
            .collect();
        let classes = vec![0u8; 64];
        let segs = coder.encode_all(&symbols, &classes, 8).unwrap();
        assert_eq!(segs.len(), 8);
        let refs: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
        let mut out = vec![0; symbols.len()];
        coder.decode_all(&refs, &classes, 8, &mut out).unwrap();
        assert_eq!(out, symbols);
        for damaged in [2usize, 5] {
            let mut bad = segs.clone();
            let mid = bad[damaged].len() / 2;
            bad[damaged][mid] ^= 0x5a;
            let len = bad[damaged].len();
            bad[damaged].truncate(len - 4);
            let refs: Vec<&[u8]> = bad.iter().map(Vec::as_slice).collect();
            let whole = coder.decode_all(&refs, &classes, 8, &mut out).unwrap_err();
            let alone = coder
                .decode_segment(refs[damaged], &classes[..8], &mut out[..128], damaged)
                .unwrap_err();
            assert_eq!(whole.to_string(), alone.to_string());
            let segment = match whole {
                EntropyError::CorruptSegment { segment, .. }
                | EntropyError::CorruptTruncated { segment, .. } => segment,
                other => panic!("{other}"),
            };
            assert_eq!(segment, damaged);
        }
    }
}
