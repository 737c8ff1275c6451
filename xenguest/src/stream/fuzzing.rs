//! Properties checked on arbitrary input, shared by the bounded fuzz test
//! (`cargo test`) and the libFuzzer target (`xenguest/fuzz`).

use std::io::Cursor;

use super::decoder::{Decoder, DecoderOptions, Format, Item};
use super::reader::{decode_bytes, StreamReader};
use super::writer::StreamWriter;

/// Re-encode decoded items with the writer.
pub fn encode_items(items: &[Item]) -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new());
    for i in items {
        match i {
            Item::XlHeader(h) => w.write_xl_header(h),
            Item::LibxlHeader(h) => w.write_libxl_header(h),
            Item::LibxlRecord(r) => w.write_libxl_record(r),
            Item::ImageHeader(h) => w.write_raw(&h.to_bytes()),
            Item::DomainHeader(h) => w.write_raw(&h.to_bytes()),
            Item::Record(r) => w.write_record(r),
        }
        .expect("decoded items re-encode");
    }
    w.into_inner()
}

/// Decode `data` several ways and check they agree; for accepted input,
/// check that re-encoding reproduces it byte for byte.  Panics on a
/// violated property (never on merely invalid input).
pub fn check_input(data: &[u8]) {
    // Option variants derived from the input, so the fuzzer explores them.
    let sel = data.last().copied().unwrap_or(0);
    let opts = DecoderOptions {
        format: match sel & 3 {
            0 => Format::Auto,
            1 => Format::Xl,
            2 => Format::Libxl,
            _ => Format::Libxc,
        },
        max_pfn: (sel & 4 != 0).then_some(0x3ff),
        max_vcpus: (sel & 8 != 0).then_some(2),
        checkpointed: sel & 16 != 0,
        ..DecoderOptions::default()
    };

    let whole = decode_bytes(data, opts);

    // Push decoding in uneven chunks agrees with the whole-buffer decode.
    let mut dec = Decoder::new(opts);
    let mut items = Vec::new();
    let mut chunked: Result<(), String> = Ok(());
    let mut off = 0usize;
    let mut step = 1usize;
    'outer: while off < data.len() {
        let end = (off + step).min(data.len());
        dec.feed(&data[off..end]);
        off = end;
        step = step * 3 % 97 + 1;
        loop {
            match dec.next_item() {
                Ok(Some(i)) => items.push(i),
                Ok(None) => break,
                Err(e) => {
                    chunked = Err(e.to_string());
                    break 'outer;
                }
            }
        }
    }
    if chunked.is_ok() {
        chunked = dec.finish().map_err(|e| e.to_string());
    }
    match (&whole, &chunked) {
        (Ok(w), Ok(())) => assert_eq!(w, &items, "chunked decode differs"),
        (Err(a), Err(b)) => assert_eq!(&a.to_string(), b, "chunked error differs"),
        _ => panic!("whole {whole:?} vs chunked {chunked:?}"),
    }

    // The blocking reader agrees on the items it yields.
    let mut r = StreamReader::new(Cursor::new(data), opts);
    let mut read = Vec::new();
    let read_res = loop {
        match r.next_item() {
            Ok(Some(i)) => read.push(i),
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    if let Ok(w) = &whole {
        assert!(
            read_res.is_ok(),
            "reader failed on a valid stream: {read_res:?}"
        );
        assert_eq!(w, &read, "reader differs");
    } else if read_res.is_ok() {
        // Only possible failure the reader cannot see: trailing data.
        assert!(matches!(whole, Err(super::StreamError::TrailingData(_))));
    }

    // Accepted input re-encodes to the same bytes, unless a STATIC_DATA_END
    // was inferred for a v2 stream (it is not in the input).
    if let Ok(items) = &whole {
        let v2 = items
            .iter()
            .any(|i| matches!(i, Item::ImageHeader(h) if h.version == 2));
        if !v2 {
            assert_eq!(encode_items(items), data, "re-encoding differs");
        }
    }
}
