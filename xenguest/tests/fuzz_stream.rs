//! Bounded mutation fuzzing of the stream decoder, on the stable toolchain.
//!
//! Starts from a corpus of valid streams (libxc v3 and v2, libxl, xl save
//! file), applies random structure-aware mutations and checks the properties
//! of `xenguest::stream::fuzzing::check_input` (no panics, push / whole /
//! reader decoding agree, accepted input re-encodes byte for byte).
//!
//! Bounded by `XENGUEST_FUZZ_SECS` (default 3 s) and `XENGUEST_FUZZ_ITERS`;
//! `XENGUEST_FUZZ_SEED` reproduces a run.

use fuzz_loop::{Bounds, Rng};

use xenguest::stream::fuzzing::check_input;
use xenguest::stream::libxc::{DomainHeader, ImageHeader, Record};
use xenguest::stream::sample::{
    sample_checkpointed_libxl_stream, sample_pv_records, sample_pv_stream, sample_xl_save_file,
};
use xenguest::stream::{LibxlHeader, LibxlRecord, StreamWriter};

fn corpus() -> Vec<Vec<u8>> {
    let mut c = vec![sample_pv_stream(), sample_xl_save_file()];
    // Decoded as checkpointed when a mutation sets bit 4 of the last byte
    // (check_input's option selector).
    c.push(sample_checkpointed_libxl_stream());
    // libxl stream alone.
    let mut w = StreamWriter::new(Vec::new());
    w.write_libxl_header(&LibxlHeader::default()).unwrap();
    w.write_libxl_record(&LibxlRecord::LibxcContext).unwrap();
    w.write_raw(&sample_pv_stream()).unwrap();
    w.write_libxl_record(&LibxlRecord::CheckpointEnd).unwrap();
    w.write_libxl_record(&LibxlRecord::End).unwrap();
    c.push(w.into_inner());
    // A v2 stream (no STATIC_DATA_END, no policies).
    let mut w = StreamWriter::new(Vec::new());
    w.write_libxc_headers(
        &ImageHeader {
            version: 2,
            options: 0,
        },
        &DomainHeader::x86_pv(4, 5),
    )
    .unwrap();
    for r in sample_pv_records() {
        if !matches!(
            r,
            Record::StaticDataEnd | Record::X86CpuidPolicy(_) | Record::X86MsrPolicy(_)
        ) {
            w.write_record(&r).unwrap();
        }
    }
    c.push(w.into_inner());
    // Keep inputs small so that many run: drop most page payloads by using
    // only the first records of the big samples as extra seeds.
    let small: Vec<u8> = c[0][..c[0].len().min(400)].to_vec();
    c.push(small);
    c
}

const INTERESTING_U32: [u32; 10] = [
    0,
    1,
    2,
    3,
    8,
    0x10,
    0x8000_0000,
    0xffff_ffff,
    128 << 20,
    (128 << 20) + 1,
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    let n = 1 + rng.below(4);
    for _ in 0..n {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = [0u8, 0xff, 0x80, 1, 0x7f][rng.below(5)];
            }
            2 if len >= 4 => {
                // Aligned u32 overwrite: hits type / length / count fields.
                let i = rng.below(len / 4) * 4;
                let v = INTERESTING_U32[rng.below(INTERESTING_U32.len())];
                input[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            3 if len > 0 => input.truncate(rng.below(len)),
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                input.drain(a..b);
            }
            5 => {
                let i = rng.below(len + 1);
                let k = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..k).map(|_| rng.next_u64() as u8).collect();
                input.splice(i..i, bytes);
            }
            6 if len >= 16 => {
                // Duplicate an 8-aligned chunk (e.g. a whole small record).
                let a = rng.below(len / 8) * 8;
                let b = (a + 8 * (1 + rng.below(4))).min(len);
                let chunk = input[a..b].to_vec();
                let at = rng.below(len / 8) * 8;
                input.splice(at..at, chunk);
            }
            7 => {
                // Splice with another corpus entry.
                let other = &corpus[rng.below(corpus.len())];
                let a = rng.below(len + 1);
                let b = rng.below(other.len() + 1);
                input.truncate(a);
                input.extend_from_slice(&other[b..]);
            }
            _ if len > 0 => {
                // Change the option-selector byte used by check_input.
                let last = input.len() - 1;
                input[last] = rng.next_u64() as u8;
            }
            _ => {}
        }
    }
}

#[test]
fn corpus_is_valid() {
    for (i, c) in corpus().iter().enumerate() {
        // check_input derives options from the last byte; the corpus entries
        // must at least not violate any property.
        check_input(c);
        let _ = i;
    }
}

#[test]
fn bounded_mutation_fuzz() {
    // XENGUEST_FUZZ_SECS, XENGUEST_FUZZ_ITERS, XENGUEST_FUZZ_SEED.
    let bounds = Bounds::from_env("XENGUEST_FUZZ", 0x5eed_2026);
    let corpus = corpus();
    fuzz_loop::run(
        "xenguest-stream",
        bounds,
        |rng| {
            let mut input = corpus[rng.below(corpus.len())].clone();
            mutate(rng, &mut input, &corpus);
            input
        },
        check_input,
    );
}
