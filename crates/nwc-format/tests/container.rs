//! Container round trips and every kind of damage: truncation, bit flips, wrong magic, unknown
//! version, checksum mismatch, absurd sizes.

use nwc_format::*;
use nwc_tensor::DType;
use proptest::prelude::*;

fn coded(name: &str, rows: u64, cols: u64) -> Record {
    let blocks = rows.div_ceil(16);
    let n_chunks = cols * blocks;
    let cps = 3u32;
    let n_seg = n_chunks.div_ceil(u64::from(cps));
    Record {
        name: name.into(),
        dtype: DType::BF16,
        shape: vec![rows, cols],
        payload: Payload::Coded(CodedPayload {
            method: CodecKind::Ecsq,
            chunk_len: 16,
            scale_axis: 0,
            n_levels: 4,
            rows,
            cols,
            scales: (0..cols as u16).map(|i| 0x3c00 + i).collect(),
            levels: (0..cols).map(|c| (c % 4) as u8).collect(),
            params: 1.0f32.to_le_bytes().repeat(4),
            tables: vec![TableRecord {
                min_symbol: -1,
                precision: 8,
                freqs: vec![100, 100, 56],
            }],
            table_map: vec![0; 64],
            chunks_per_segment: cps,
            segments: (0..n_seg)
                .map(|i| vec![i as u8; 32 + 4 * i as usize])
                .collect(),
        }),
    }
}

fn raw(name: &str, n: u64) -> Record {
    Record {
        name: name.into(),
        dtype: DType::I64,
        shape: vec![n],
        payload: Payload::Raw((0..n * 8).map(|i| i as u8).collect()),
    }
}

fn file() -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), Header::new(CodecKind::Ecsq, [7; 32])).unwrap();
    w.write(&raw("pos_ids", 5)).unwrap();
    w.write(&coded("layer.0.weight", 40, 7)).unwrap();
    w.write(&raw("scalar", 1)).unwrap();
    w.finish().unwrap().0
}

#[test]
fn round_trip_random_access_and_streaming() {
    let bytes = file();
    let r = FileReader::new(&bytes, ReadOptions::default()).unwrap();
    assert_eq!(r.header().codec, CodecKind::Ecsq);
    assert_eq!(r.header().codec_hash, [7; 32]);
    assert_eq!(r.n_params(), 5 + 280 + 1);
    assert_eq!(r.record(1).unwrap(), coded("layer.0.weight", 40, 7));
    assert_eq!(r.record_by_name("pos_ids").unwrap(), raw("pos_ids", 5));
    let s = StreamReader::new(&bytes[..], ReadOptions::default()).unwrap();
    let all: Vec<Record> = s.collect::<Result<_>>().unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[1], coded("layer.0.weight", 40, 7));
}

#[test]
fn writer_refuses_what_the_format_cannot_hold() {
    let mut w = Writer::new(Vec::new(), Header::new(CodecKind::Ecsq, [0; 32])).unwrap();
    w.write(&raw("a", 1)).unwrap();
    assert!(matches!(
        w.write(&raw("a", 1)),
        Err(FormatError::Invalid(_))
    ));
    assert!(w.write(&raw("", 1)).is_err());
    let mut bad = raw("b", 2);
    bad.shape = vec![3];
    assert!(w.write(&bad).is_err());
    let mut nwc = coded("c", 16, 1);
    if let Payload::Coded(c) = &mut nwc.payload {
        c.method = CodecKind::Nwc;
    }
    assert!(w.write(&nwc).is_err(), "method must match the header");
    let mut lvl = coded("d", 16, 1);
    if let Payload::Coded(c) = &mut lvl.payload {
        c.levels[0] = 4;
    }
    assert!(w.write(&lvl).is_err());
}

fn read_all(bytes: &[u8], opts: ReadOptions) -> Result<Vec<Record>> {
    let r = FileReader::new(bytes, opts)?;
    (0..r.index().len()).map(|i| r.record(i)).collect()
}

fn stream_all(bytes: &[u8], opts: ReadOptions) -> Result<Vec<Record>> {
    StreamReader::new(bytes, opts)?.collect()
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = file();
    for cut in 0..bytes.len() {
        assert!(
            read_all(&bytes[..cut], ReadOptions::default()).is_err(),
            "cut {cut}"
        );
        // The streaming reader may legitimately deliver the records before the cut, but must
        // never claim the stream is complete when it was cut inside the records.
        let index_at = FileReader::new(&bytes, ReadOptions::default())
            .unwrap()
            .index()
            .last()
            .map(|e| e.offset + e.length)
            .unwrap();
        if (cut as u64) < index_at + 4 {
            assert!(
                stream_all(&bytes[..cut], ReadOptions::default()).is_err(),
                "stream cut {cut}"
            );
        }
    }
}

#[test]
fn every_bit_flip_is_detected_by_checksums() {
    let bytes = file();
    for bit in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        assert!(read_all(&bad, ReadOptions::default()).is_err(), "bit {bit}");
    }
}

#[test]
fn wrong_magic_version_and_checksum_have_their_own_errors() {
    let mut bad = file();
    bad[1] = b'X';
    assert!(matches!(
        read_all(&bad, ReadOptions::default()),
        Err(FormatError::BadMagic)
    ));
    let mut bad = file();
    bad[8] = 2;
    assert!(matches!(
        read_all(&bad, ReadOptions::default()),
        Err(FormatError::UnsupportedVersion { major: 2, .. })
    ));
    let mut bad = file();
    bad[20] ^= 0xff; // inside the codec hash
    assert!(matches!(
        read_all(&bad, ReadOptions::default()),
        Err(FormatError::ChecksumMismatch { .. })
    ));
    // A damaged record: the error names the tensor and the record's byte offset (the first
    // record starts right after the 56-byte header), reading at random or streaming.
    let good = file();
    let name_len = usize::from(u16::from_le_bytes([good[68], good[69]]));
    let name = String::from_utf8(good[70..70 + name_len].to_vec()).unwrap();
    let mut bad = good.clone();
    bad[70 + name_len + 2] ^= 0x01;
    for r in [
        read_all(&bad, ReadOptions::default()),
        stream_all(&bad, ReadOptions::default()),
    ] {
        match r {
            Err(e @ FormatError::ChecksumMismatch { .. }) => {
                let m = e.to_string();
                assert!(m.contains(&name) && m.contains("at byte 56"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        read_all(b"PK\x03\x04", ReadOptions::default()),
        Err(FormatError::BadMagic)
    ));
    assert!(matches!(
        read_all(b"", ReadOptions::default()),
        Err(FormatError::Truncated(_))
    ));
}

/// Rewrites the first record so that it claims `shape`, with a valid CRC, and returns the file.
fn with_claimed_shape(shape: &[u64]) -> Vec<u8> {
    let bytes = file();
    let body_start = HEADER_LEN + 12;
    let body_len =
        u64::from_le_bytes(bytes[HEADER_LEN + 4..body_start].try_into().unwrap()) as usize;
    let mut body = bytes[body_start..body_start + body_len].to_vec();
    let name_end = 2 + 7; // "pos_ids"
    body.splice(
        name_end + 1..name_end + 2 + 8,
        std::iter::once(shape.len() as u8).chain(shape.iter().flat_map(|d| d.to_le_bytes())),
    );
    let mut out = bytes[..HEADER_LEN + 4].to_vec();
    out.extend((body.len() as u64).to_le_bytes());
    out.extend(&body);
    out.extend(crc32fast_hash(&body).to_le_bytes());
    out.extend(&bytes[body_start + body_len + 4..]);
    out
}

fn crc32fast_hash(b: &[u8]) -> u32 {
    // The same CRC the format uses (CRC-32/ISO-HDLC), computed bitwise so the test does not trust
    // the implementation under test.
    let mut crc = 0xffff_ffffu32;
    for &byte in b {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn absurd_sizes_are_refused_before_allocating() {
    let opts = ReadOptions::default();
    // 2^40 elements of i64: over the default limit.
    let f = with_claimed_shape(&[1 << 20, 1 << 20]);
    assert!(matches!(
        stream_all(&f, opts),
        Err(FormatError::TooLarge { .. })
    ));
    // Overflowing shapes.
    let f = with_claimed_shape(&[u64::MAX, 3]);
    assert!(matches!(stream_all(&f, opts), Err(FormatError::Corrupt(_))));
    // Within limits but inconsistent with the data actually present.
    let f = with_claimed_shape(&[1 << 30]);
    assert!(stream_all(&f, opts).is_err());
    // A record length far past the end of the input.
    let mut f = file();
    f[HEADER_LEN + 4..HEADER_LEN + 12].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert!(matches!(
        stream_all(&f, opts),
        Err(FormatError::Truncated(_))
    ));
}

#[test]
fn known_crc_matches_the_spec() {
    // The check value of CRC-32/ISO-HDLC.
    assert_eq!(crc32fast_hash(b"123456789"), 0xcbf4_3926);
    let bytes = file();
    let stored = u32::from_le_bytes(bytes[52..56].try_into().unwrap());
    assert_eq!(stored, crc32fast_hash(&bytes[..52]));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..400), verify in any::<bool>()) {
        let opts = ReadOptions { verify_checksums: verify, max_elements: 1 << 20 };
        let mut f = file();
        // Splice the random bytes into a valid file so parsing gets past the magic.
        let at = (data.len() * 7) % f.len();
        f.splice(at..(at + data.len() / 2).min(f.len()), data.iter().copied());
        let _ = read_all(&f, opts);
        let _ = stream_all(&f, opts);
        let _ = read_all(&data, opts);
    }
}

#[test]
fn trellis_records_store_one_table_per_row_and_round_trip() {
    // 70 rows in chunks of 64: two chunks per column, the table map compressed to one index per
    // (level, union) row on disk and expanded again in memory.
    let mut rec = coded("t.weight", 70, 5);
    if let Payload::Coded(c) = &mut rec.payload {
        c.method = CodecKind::Tcq;
        c.chunk_len = 64;
        c.tables.push(c.tables[0].clone());
        c.table_map = (0..4 * 2)
            .flat_map(|row| vec![(row % 2) as u16; 64])
            .collect();
        let n_seg = (5 * 2u64).div_ceil(3);
        c.segments = (0..n_seg).map(|i| vec![i as u8; 32]).collect();
    }
    let mut w = Writer::new(Vec::new(), Header::new(CodecKind::Tcq, [0; 32])).unwrap();
    let len = w.write(&rec).unwrap();
    let bytes = w.finish().unwrap().0;
    let back = FileReader::new(&bytes, ReadOptions::default())
        .unwrap()
        .record(0)
        .unwrap();
    assert_eq!(back, rec);
    // One u16 per row instead of 64: the map costs 16 bytes, not 1 KiB.
    let mut ecsq_like = rec.clone();
    if let Payload::Coded(c) = &mut ecsq_like.payload {
        c.method = CodecKind::Ecsq;
        c.table_map.truncate(4 * 64);
    }
    let mut w2 = Writer::new(Vec::new(), Header::new(CodecKind::Ecsq, [0; 32])).unwrap();
    assert_eq!(w2.write(&ecsq_like).unwrap(), len + 4 * 64 * 2 - 8 * 2);
    // A trellis row that names two tables cannot be stored.
    let mut mixed = rec.clone();
    if let Payload::Coded(c) = &mut mixed.payload {
        c.table_map[3] = 1;
    }
    let mut w3 = Writer::new(Vec::new(), Header::new(CodecKind::Tcq, [0; 32])).unwrap();
    assert!(w3.write(&mixed).is_err());
}

#[test]
fn a_resumed_writer_writes_the_same_bytes() {
    let whole = file();
    let header = Header::new(CodecKind::Ecsq, [7; 32]);
    let mut w = Writer::new(Vec::new(), header).unwrap();
    w.write(&raw("pos_ids", 5)).unwrap();
    w.write(&coded("layer.0.weight", 40, 7)).unwrap();
    let (pos, index) = (w.position(), w.index().to_vec());
    let prefix = w.finish().unwrap().0[..pos as usize].to_vec();
    let mut r = Writer::resume(prefix, header, pos, index.clone()).unwrap();
    assert!(r.write(&raw("pos_ids", 5)).is_err(), "names stay unique");
    r.write(&raw("scalar", 1)).unwrap();
    assert_eq!(r.finish().unwrap().0, whole);
    // An index that does not tile the prefix is refused.
    assert!(Writer::resume(Vec::new(), header, pos + 1, index.clone()).is_err());
    let mut gap = index;
    gap[1].offset += 1;
    assert!(Writer::resume(Vec::new(), header, pos, gap).is_err());
}
