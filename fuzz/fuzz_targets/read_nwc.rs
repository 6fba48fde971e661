//! Arbitrary bytes into every reader of the `.nwc` container and on through decoding.
//!
//! The first byte selects whether checksums are verified: with them off, damaged records reach
//! the record parser, the table validation, the rANS decoder and the codec, which must all fail
//! cleanly (never panic, never allocate without bound).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nwc::format::{FileReader, ReadOptions, StreamReader};
use nwc::codec_net::burn::backend::NdArray;
use nwc::{CodecRegistry, Codecs, Decompressor, EcsqCodec, TcqCodec, WeightCodec};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let opts = ReadOptions {
        verify_checksums: flags & 1 == 1,
        max_elements: 1 << 20,
    };
    // The decoder the header names (ECSQ, TCQ with its trellis contexts, or a shipped learned
    // codec), else ECSQ and TCQ both, so damaged records reach every decoding path.
    let ecsq = EcsqCodec::with_step(1.0).unwrap();
    let tcq = TcqCodec::with_step(1.0).unwrap();
    let named = FileReader::new(bytes, opts)
        .ok()
        .and_then(|r| Codecs::<NdArray>::default().decoder(r.header(), None).ok());
    let codec: &dyn WeightCodec = match &named {
        Some(c) => c.as_ref(),
        None if flags & 2 == 2 => &tcq,
        None => &ecsq,
    };
    let d = Decompressor::new(codec);
    if let Ok(r) = FileReader::new(bytes, opts) {
        let _ = d.check_header(r.header());
        for i in 0..r.index().len() {
            if let Ok(rec) = r.record(i) {
                let _ = d.decompress_record(&rec);
            }
        }
    }
    if let Ok(s) = StreamReader::new(bytes, opts) {
        for rec in s.take(64) {
            match rec {
                Ok(rec) => {
                    // Metadata frames (zstd) decode or fail within their cap.
                    if let nwc::format::Payload::Raw(b) = &rec.payload {
                        if nwc::format::is_metadata(&rec.name) {
                            let _ = nwc::format::metadata_content(b);
                        }
                    }
                    let _ = d.decompress_record(&rec);
                }
                Err(_) => break,
            }
        }
    }
    // The streaming decoder the `nwc` facade offers, on the same bytes.
    if let Ok(dec) = nwc::Decoder::with_codec(bytes, codec) {
        for t in dec.take(64) {
            if t.is_err() {
                break;
            }
        }
    }
});
