//! The DATA and BDAT decoders: arbitrary message bytes, cut at arbitrary
//! places, under an arbitrary size limit.
//!
//! Properties: no panic; the body never stores more than the limit; the
//! result (bytes consumed, body, flags) does not depend on the cut points;
//! a BDAT body is the raw bytes up to the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailfault::proto::data::{Body, DataDecoder};

fn decode(stream: &[u8], limit: u64, sizes: &[usize]) -> (usize, Option<Body>) {
    let mut d = DataDecoder::new(limit);
    let mut pos = 0;
    let mut i = 0;
    while pos < stream.len() {
        let size = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(stream.len());
        i += 1;
        let end = (pos + size).min(stream.len());
        let (used, body) = d.feed(&stream[pos..end]);
        assert!(used <= end - pos);
        pos += used;
        if let Some(b) = body {
            return (pos, Some(b));
        }
        assert_eq!(pos, end, "the decoder left bytes without finishing");
    }
    (pos, None)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 6 {
        return;
    }
    let limit = u16::from_le_bytes([data[0], data[1]]) as u64;
    let sizes: Vec<usize> = data[2..6].iter().map(|&b| 1 + b as usize).collect();
    let stream = &data[6..];

    let (used, whole) = decode(stream, limit, &[]);
    let (used_split, split) = decode(stream, limit, &sizes);
    assert_eq!(used, used_split, "consumed bytes depend on the cut points");
    assert_eq!(whole, split, "the body depends on the cut points");
    if let Some(b) = &whole {
        assert!(b.bytes.len() as u64 <= limit, "stored past the limit");
        assert!(b.size >= b.bytes.len() as u64);
        assert_eq!(b.too_big, b.size > limit);
    }

    // BDAT: raw chunks, counted against the same limit.
    let mut d = DataDecoder::new(limit);
    for chunk in stream.chunks(sizes[0]) {
        d.push_raw(chunk);
    }
    let b = d.into_body();
    assert_eq!(b.size, stream.len() as u64);
    assert_eq!(b.bytes, &stream[..stream.len().min(limit as usize)]);
});
