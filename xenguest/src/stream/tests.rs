//! Unit tests of the stream module family.

use std::io::Cursor;

use super::libxc::{
    encode_record_raw, parse_record, rec, RecordContext, PAGE_SIZE, REC_LENGTH_MAX,
    VCPU_CONTEXT_X86_64_SIZE,
};
use super::libxl::{librec, parse_xenstore_pairs, LIBXL_IDENT};
use super::sample::{sample_pv_records, sample_pv_stream, sample_xl_save_file, SAMPLE_MAX_PFN};
use super::xl::{XL_MAGIC, XL_MANDATORY_FLAG_JSON, XL_MANDATORY_FLAG_STREAMV2};
use super::*;

fn libxc_opts() -> DecoderOptions {
    DecoderOptions::with_format(Format::Libxc)
}

fn records_of(items: &[Item]) -> Vec<Record> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Record(r) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

fn pv_ctx() -> RecordContext {
    RecordContext {
        version: 3,
        domain_type: DomainType::X86Pv,
        max_pfn: None,
        max_vcpus: None,
        guest_width: Some(8),
        checkpointed: true,
    }
}

fn raw(rtype: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_record_raw(rtype, body, &mut v);
    v
}

fn enc(r: &Record) -> Vec<u8> {
    let mut v = Vec::new();
    r.encode(&mut v).unwrap();
    v
}

/// Headers + X86_PV_INFO + STATIC_DATA_END, then `tail` (raw bytes).
fn pv_stream(tail: &[u8]) -> Vec<u8> {
    let mut v = ImageHeader::default().to_bytes().to_vec();
    v.extend_from_slice(&DomainHeader::x86_pv(4, 17).to_bytes());
    v.extend(enc(&Record::X86PvInfo(X86PvInfo::X86_64)));
    v.extend(enc(&Record::StaticDataEnd));
    v.extend_from_slice(tail);
    v
}

fn err(bytes: &[u8]) -> StreamError {
    err_with(bytes, libxc_opts())
}

fn err_with(bytes: &[u8], opts: DecoderOptions) -> StreamError {
    decode_bytes(bytes, opts).expect_err("stream must be rejected")
}

fn page_data_body(count: u32, entries: &[u64], pages: usize) -> Vec<u8> {
    let mut b = count.to_le_bytes().to_vec();
    b.extend_from_slice(&0u32.to_le_bytes());
    for e in entries {
        b.extend_from_slice(&e.to_le_bytes());
    }
    b.resize(b.len() + pages * PAGE_SIZE, 0xab);
    b
}

// ---------------------------------------------------------------- golden bytes

#[test]
fn golden_image_header() {
    let b = ImageHeader::default().to_bytes();
    assert_eq!(
        b,
        [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // marker
            0x58, 0x45, 0x4e, 0x46, // "XENF"
            0x00, 0x00, 0x00, 0x03, // version 3, big-endian
            0x00, 0x00, // options
            0, 0, 0, 0, 0, 0, // reserved
        ]
    );
    assert_eq!(ImageHeader::parse(&b).unwrap(), ImageHeader::default());
}

#[test]
fn golden_domain_header() {
    let b = DomainHeader::x86_pv(4, 17).to_bytes();
    assert_eq!(b, [1, 0, 0, 0, 12, 0, 0, 0, 4, 0, 0, 0, 17, 0, 0, 0]);
    let hvm = DomainHeader {
        domain_type: DomainType::X86Hvm,
        ..DomainHeader::x86_pv(4, 17)
    };
    assert_eq!(hvm.to_bytes()[0], 2);
}

#[test]
fn golden_records() {
    assert_eq!(enc(&Record::End), [0u8; 8]);
    assert_eq!(
        enc(&Record::X86PvInfo(X86PvInfo::X86_64)),
        [2, 0, 0, 0, 8, 0, 0, 0, 8, 4, 0, 0, 0, 0, 0, 0]
    );
    assert_eq!(enc(&Record::StaticDataEnd), [0x10, 0, 0, 0, 0, 0, 0, 0]);
    // Padding: a 4-byte optional body is padded to 8.
    let o = enc(&Record::Optional {
        rtype: 0x8000_0042,
        body: vec![1, 2, 3, 4],
    });
    assert_eq!(o, [0x42, 0, 0, 0x80, 4, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0]);
    // PAGE_DATA entry: type in bits 63-60.
    assert_eq!(
        PageEntry::new(0x1234, PageType::L4TabPinned).to_u64(),
        0xc000_0000_0000_1234
    );
    assert_eq!(
        PageEntry::new(7, PageType::XTab).to_u64(),
        0xf000_0000_0000_0007
    );
}

#[test]
fn golden_libxl_and_xl_headers() {
    let b = LibxlHeader::default().to_bytes();
    assert_eq!(&b[..8], b"LibxlFmt");
    assert_eq!(u64::from_be_bytes(b[..8].try_into().unwrap()), LIBXL_IDENT);
    assert_eq!(&b[8..], [0, 0, 0, 2, 0, 0, 0, 0]);
    assert_eq!(
        enc_libxl(&LibxlRecord::LibxcContext),
        [1, 0, 0, 0, 0, 0, 0, 0]
    );

    let h = XlHeader::with_json_config("{}");
    let b = h.to_bytes();
    assert_eq!(&b[..32], b"Xen saved domain, xl format\n \0 \r");
    assert_eq!(&b[32..36], [4, 3, 2, 1]);
    assert_eq!(&b[36..40], [3, 0, 0, 0]); // JSON | STREAMv2
    assert_eq!(&b[40..44], [0, 0, 0, 0]);
    assert_eq!(&b[44..48], [7, 0, 0, 0]); // 4 + "{}\0"
    assert_eq!(&b[48..], [3, 0, 0, 0, b'{', b'}', 0]);
    let back = XlHeader::parse(&b).unwrap();
    assert_eq!(back, h);
    assert_eq!(back.config_str(), Some("{}"));
    assert!(back.is_json() && back.is_stream_v2());
}

fn enc_libxl(r: &LibxlRecord) -> Vec<u8> {
    let mut v = Vec::new();
    r.encode(&mut v);
    v
}

// ---------------------------------------------------------------- round trips

fn all_pv_records() -> Vec<Record> {
    let mut v = sample_pv_records();
    v.extend([
        Record::Verify,
        Record::Checkpoint,
        Record::CheckpointDirtyPfnList(vec![1, 2, 0x3ff]),
        Record::CheckpointDirtyPfnList(vec![]),
        Record::X86PvVcpu(VcpuRecord {
            kind: VcpuKind::Xsave,
            vcpu_id: 9,
            data: vec![],
        }),
        Record::Optional {
            rtype: 0x8000_0001,
            body: vec![9; 13],
        },
    ]);
    v
}

#[test]
fn roundtrip_every_record_type() {
    let mut seen = std::collections::BTreeSet::new();
    let hvm_ctx = RecordContext {
        domain_type: DomainType::X86Hvm,
        guest_width: None,
        ..pv_ctx()
    };
    let hvm = [
        Record::HvmContext(vec![1, 2, 3]),
        Record::HvmParams(vec![
            HvmParam { index: 1, value: 2 },
            HvmParam {
                index: 0x2a,
                value: u64::MAX,
            },
        ]),
        Record::HvmParams(vec![]),
        Record::X86TscInfo(X86TscInfo::default()),
    ];
    for (r, ctx) in all_pv_records()
        .into_iter()
        .map(|r| (r, pv_ctx()))
        .chain(hvm.into_iter().map(|r| (r, hvm_ctx)))
    {
        let bytes = enc(&r);
        assert_eq!(bytes.len() % 8, 0, "{} padded", r.name());
        let rtype = u32::from_le_bytes(bytes[..4].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize;
        assert_eq!(rtype, r.rtype());
        assert!(bytes[8 + len..].iter().all(|&b| b == 0));
        let back = parse_record(rtype, &bytes[8..8 + len], &ctx).unwrap();
        assert_eq!(back, r, "{}", r.name());
        seen.insert(rtype & !libxc::REC_TYPE_OPTIONAL);
    }
    // Toolstack encodes but is refused on input, as the reference does.
    let t = Record::Toolstack(vec![1]);
    let b = t.encode_body().unwrap();
    assert!(matches!(
        parse_record(rec::TOOLSTACK, &b, &pv_ctx()),
        Err(StreamError::DeprecatedRecord("TOOLSTACK"))
    ));
    seen.insert(rec::TOOLSTACK);
    assert_eq!(seen, (0..=0x12).collect(), "every record type covered");
}

#[test]
fn roundtrip_libxl_records() {
    for r in [
        LibxlRecord::End,
        LibxlRecord::LibxcContext,
        LibxlRecord::EmulatorXenstoreData {
            emulator: EmulatorId::QemuUpstream,
            index: 0,
            data: libxl::encode_xenstore_pairs(&[("a", "b"), ("c/d", "")]),
        },
        LibxlRecord::EmulatorContext {
            emulator: EmulatorId::QemuTraditional,
            index: 1,
            data: vec![7; 33],
        },
        LibxlRecord::CheckpointEnd,
        LibxlRecord::CheckpointState(2),
        LibxlRecord::Optional {
            rtype: 0x8000_0007,
            body: vec![1],
        },
    ] {
        let b = enc_libxl(&r);
        assert_eq!(b.len() % 8, 0);
        let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        assert_eq!(
            libxl::parse_libxl_record(r.rtype(), &b[8..8 + len]).unwrap(),
            r
        );
    }
    let pairs = parse_xenstore_pairs(&libxl::encode_xenstore_pairs(&[("k", "v")])).unwrap();
    assert_eq!(pairs, vec![(b"k".to_vec(), b"v".to_vec())]);
}

#[test]
fn synthetic_pv_stream_roundtrip() {
    let bytes = sample_pv_stream();
    let items = decode_bytes(&bytes, libxc_opts()).unwrap();
    assert_eq!(items[0], Item::ImageHeader(ImageHeader::default()));
    assert_eq!(items[1], Item::DomainHeader(DomainHeader::x86_pv(4, 17)));
    assert_eq!(records_of(&items), sample_pv_records());

    // Strict limits that the sample guest meets.
    let opts = DecoderOptions {
        max_pfn: Some(SAMPLE_MAX_PFN),
        max_vcpus: Some(2),
        ..libxc_opts()
    };
    assert_eq!(decode_bytes(&bytes, opts).unwrap(), items);

    // Blocking reader, also with auto-detection.
    assert_eq!(
        read_stream(Cursor::new(&bytes), libxc_opts()).unwrap(),
        items
    );
    assert_eq!(
        read_stream(Cursor::new(&bytes), DecoderOptions::default()).unwrap(),
        items
    );

    // Pushing one byte at a time yields the same items.
    let mut dec = Decoder::new(libxc_opts());
    let mut got = Vec::new();
    for b in &bytes {
        dec.feed(std::slice::from_ref(b));
        while let Some(i) = dec.next_item().unwrap() {
            got.push(i);
        }
    }
    dec.finish().unwrap();
    assert_eq!(got, items);
    assert_eq!(
        dec.missing_static_data(),
        Some(MissingStaticData::default())
    );
    assert!(!dec.inferred_static_data_end());
    assert_eq!(dec.consumed(), bytes.len() as u64);
}

#[test]
fn reader_does_not_over_read() {
    let mut bytes = sample_pv_stream();
    let len = bytes.len();
    bytes.extend_from_slice(b"trailing protocol bytes");
    let mut r = StreamReader::new(Cursor::new(&bytes), libxc_opts());
    while r.next_item().unwrap().is_some() {}
    assert!(r.decoder().is_done());
    assert_eq!(r.into_inner().position(), len as u64);
    assert!(matches!(err(&bytes), StreamError::TrailingData(23)));
}

#[test]
fn xl_save_file_roundtrip() {
    let bytes = sample_xl_save_file();
    for format in [Format::Xl, Format::Auto] {
        let items = decode_bytes(&bytes, DecoderOptions::with_format(format)).unwrap();
        let Item::XlHeader(h) = &items[0] else {
            panic!("xl header first")
        };
        assert!(h.config_str().unwrap().contains("\"sample\""));
        assert_eq!(items[1], Item::LibxlHeader(LibxlHeader::default()));
        assert_eq!(items[2], Item::LibxlRecord(LibxlRecord::LibxcContext));
        assert_eq!(records_of(&items), sample_pv_records());
        assert!(matches!(
            items[items.len() - 2],
            Item::LibxlRecord(LibxlRecord::EmulatorXenstoreData { .. })
        ));
        assert_eq!(items.last(), Some(&Item::LibxlRecord(LibxlRecord::End)));
    }
    // The libxl stream alone.
    let libxl_part = &bytes[XlHeader::parse(&bytes).unwrap().to_bytes().len()..];
    let items = decode_bytes(libxl_part, DecoderOptions::default()).unwrap();
    assert_eq!(records_of(&items), sample_pv_records());
}

#[test]
fn v2_stream_gets_inferred_static_data_end() {
    let mut v = ImageHeader {
        version: 2,
        options: 0,
    }
    .to_bytes()
    .to_vec();
    v.extend_from_slice(&DomainHeader::x86_pv(4, 5).to_bytes());
    let recs: Vec<Record> = sample_pv_records()
        .into_iter()
        .filter(|r| {
            !matches!(
                r,
                Record::StaticDataEnd | Record::X86CpuidPolicy(_) | Record::X86MsrPolicy(_)
            )
        })
        .collect();
    for r in &recs {
        v.extend(enc(r));
    }
    let mut dec = Decoder::new(libxc_opts());
    dec.feed(&v);
    let mut items = Vec::new();
    while let Some(i) = dec.next_item().unwrap() {
        items.push(i);
    }
    let got = records_of(&items);
    dec.finish().unwrap();
    assert!(dec.inferred_static_data_end());
    assert_eq!(dec.version(), 2);
    assert_eq!(
        dec.missing_static_data(),
        Some(MissingStaticData {
            cpuid_policy: true,
            msr_policy: true
        })
    );
    let mut want = recs.clone();
    want.insert(1, Record::StaticDataEnd);
    assert_eq!(got, want);

    // Records that v2 lacks are refused in a v2 stream.
    let mut bad = v[..40].to_vec();
    bad.extend(enc(&Record::X86PvInfo(X86PvInfo::X86_64)));
    let mut b1 = bad.clone();
    b1.extend(enc(&Record::StaticDataEnd));
    assert!(matches!(
        err(&b1),
        StreamError::NotInVersion {
            name: "STATIC_DATA_END",
            version: 2
        }
    ));
    bad.extend(enc(&Record::X86CpuidPolicy(vec![CpuidLeaf::default()])));
    assert!(matches!(
        err(&bad),
        StreamError::NotInVersion {
            name: "X86_CPUID_POLICY",
            ..
        }
    ));
}

// ---------------------------------------------------------------- validation errors

#[test]
fn header_errors() {
    let good = sample_pv_stream();
    let mutate = |off: usize, val: u8| {
        let mut b = good.clone();
        b[off] = val;
        err(&b)
    };
    assert!(matches!(mutate(3, 0xfe), StreamError::BadMarker(_)));
    assert!(matches!(mutate(8, 0x59), StreamError::BadId(0x5945_4e46)));
    assert!(matches!(mutate(15, 1), StreamError::UnsupportedVersion(1)));
    assert!(matches!(mutate(15, 4), StreamError::UnsupportedVersion(4)));
    assert!(matches!(mutate(17, 1), StreamError::BigEndian));
    assert!(matches!(mutate(17, 2), StreamError::ReservedBits { .. }));
    assert!(matches!(mutate(20, 1), StreamError::ReservedBits { .. }));
    assert!(matches!(mutate(24, 3), StreamError::UnknownDomainType(3)));
    assert!(matches!(mutate(28, 13), StreamError::BadPageShift(13)));
    assert!(matches!(mutate(30, 1), StreamError::ReservedBits { .. }));
    // Auto-detection of garbage.
    assert!(matches!(
        err_with(b"garbage!", DecoderOptions::default()),
        StreamError::UnknownFormat(b'g')
    ));
}

#[test]
fn record_framing_errors() {
    assert!(matches!(
        err(&pv_stream(&raw(0x13, &[]))),
        StreamError::UnknownMandatoryRecord(0x13)
    ));
    assert!(matches!(
        err(&pv_stream(&raw(0x7fff_ffff, &[1]))),
        StreamError::UnknownMandatoryRecord(0x7fff_ffff)
    ));
    // Unknown optional records are skipped over (kept as Optional).
    let mut ok = raw(0x8000_0013, &[1, 2, 3]);
    ok.extend(enc(&Record::End));
    let items = decode_bytes(&pv_stream(&ok), libxc_opts()).unwrap();
    assert!(items.iter().any(|i| matches!(
        i,
        Item::Record(Record::Optional {
            rtype: 0x8000_0013,
            ..
        })
    )));
    // Length cap, checked from the header alone.
    let mut hdr = 1u32.to_le_bytes().to_vec();
    hdr.extend_from_slice(&(REC_LENGTH_MAX + 1).to_le_bytes());
    assert!(matches!(
        err(&pv_stream(&hdr)),
        StreamError::RecordTooLong {
            length,
            ..
        } if length == REC_LENGTH_MAX + 1
    ));
    // Non-zero padding.
    let mut r = raw(rec::END, &[]);
    r = {
        let mut v = raw(0x8000_0001, &[1]);
        v[12] = 1;
        v.extend(r);
        v
    };
    assert!(matches!(
        err(&pv_stream(&r)),
        StreamError::NonZeroPadding { .. }
    ));
    // Empty records with a body.
    assert!(matches!(
        err(&pv_stream(&raw(rec::END, &[0; 8]))),
        StreamError::BadRecordLength { name: "END", .. }
    ));
    assert!(matches!(
        err(&pv_stream(&raw(rec::VERIFY, &[1]))),
        StreamError::BadRecordLength { .. }
    ));
    // Deprecated / context-dependent.
    assert!(matches!(
        err(&pv_stream(&raw(rec::TOOLSTACK, &[1]))),
        StreamError::DeprecatedRecord(_)
    ));
    assert!(matches!(
        err(&pv_stream(&raw(rec::CHECKPOINT, &[]))),
        StreamError::CheckpointInPlainStream
    ));
    let mut ck = raw(rec::CHECKPOINT, &[]);
    ck.extend(enc(&Record::End));
    decode_bytes(
        &pv_stream(&ck),
        DecoderOptions {
            checkpointed: true,
            ..libxc_opts()
        },
    )
    .unwrap();
    assert!(matches!(
        err(&pv_stream(&raw(rec::HVM_CONTEXT, &[1]))),
        StreamError::WrongDomainType { .. }
    ));
    let mut hvm = ImageHeader::default().to_bytes().to_vec();
    hvm.extend_from_slice(
        &DomainHeader {
            domain_type: DomainType::X86Hvm,
            ..DomainHeader::x86_pv(4, 17)
        }
        .to_bytes(),
    );
    hvm.extend(enc(&Record::X86PvInfo(X86PvInfo::X86_64)));
    assert!(matches!(err(&hvm), StreamError::WrongDomainType { .. }));
}

#[test]
fn page_data_errors() {
    let pd = |body: Vec<u8>| err(&pv_stream(&raw(rec::PAGE_DATA, &body)));
    assert!(matches!(
        pd(page_data_body(0, &[], 0)),
        StreamError::PageDataEmpty
    ));
    assert!(matches!(
        pd(vec![1, 0, 0, 0]),
        StreamError::BadRecordLength { .. }
    ));
    // count says 2, only one entry present.
    assert!(matches!(
        pd(page_data_body(2, &[5], 0)),
        StreamError::PageDataLength { count: 2, .. }
    ));
    // One NOTAB entry without its page, and one with two pages.
    assert!(matches!(
        pd(page_data_body(1, &[5], 0)),
        StreamError::PageDataLength { expected, .. } if expected == 16 + 4096
    ));
    assert!(matches!(
        pd(page_data_body(1, &[5], 2)),
        StreamError::PageDataLength { .. }
    ));
    // XTAB carries no data.
    assert!(matches!(
        pd(page_data_body(1, &[0xf000_0000_0000_0005], 1)),
        StreamError::PageDataLength { .. }
    ));
    for t in 5u64..=8 {
        assert!(matches!(
            pd(page_data_body(1, &[(t << 60) | 5], 1)),
            StreamError::InvalidPageType { index: 0, ptype } if u64::from(ptype) == t
        ));
    }
    assert!(matches!(
        pd(page_data_body(1, &[(1 << 52) | 5], 1)),
        StreamError::ReservedBits {
            what: "PAGE_DATA entry",
            ..
        }
    ));
    let mut reserved = page_data_body(1, &[5], 1);
    reserved[4] = 1;
    assert!(matches!(pd(reserved), StreamError::ReservedBits { .. }));
    // pfn beyond a caller-given maximum.
    let body = page_data_body(2, &[3, 0x400], 2);
    let e = err_with(
        &pv_stream(&raw(rec::PAGE_DATA, &body)),
        DecoderOptions {
            max_pfn: Some(0x3ff),
            ..libxc_opts()
        },
    );
    assert!(matches!(
        e,
        StreamError::PfnTooLarge {
            index: 1,
            pfn: 0x400,
            max: 0x3ff
        }
    ));
    // Writer refuses what the reader would refuse.
    let mut w = StreamWriter::new(Vec::new());
    assert!(matches!(
        w.write_record(&Record::PageData(PageData::default())),
        Err(StreamError::InvalidRecord(_))
    ));
    assert!(matches!(
        w.write_record(&Record::PageData(PageData {
            entries: vec![PageEntry::new(1, PageType::NoTab)],
            data: vec![],
        })),
        Err(StreamError::InvalidRecord(_))
    ));
    assert!(matches!(
        w.write_page_data(&[PageEntry::new(1 << 52, PageType::XTab)], &[]),
        Err(StreamError::InvalidRecord(_))
    ));
    assert_eq!(w.written(), 0);
}

#[test]
fn pv_record_errors() {
    let one = |r: Vec<u8>| err(&pv_stream(&r));
    let one_opts = |r: Vec<u8>, o: DecoderOptions| err_with(&pv_stream(&r), o);
    // X86_PV_INFO: combinations, reserved, length, duplicates (pv_stream
    // already has one).
    let mut v = ImageHeader::default().to_bytes().to_vec();
    v.extend_from_slice(&DomainHeader::x86_pv(4, 17).to_bytes());
    for (w, l) in [(8u8, 3u8), (4, 4), (2, 2)] {
        let mut s = v.clone();
        s.extend(raw(rec::X86_PV_INFO, &[w, l, 0, 0, 0, 0, 0, 0]));
        assert!(matches!(
            err(&s),
            StreamError::InvalidPvInfo { width, levels } if width == w && levels == l
        ));
    }
    let mut s = v.clone();
    s.extend(raw(rec::X86_PV_INFO, &[8, 4, 0, 0, 0, 0, 0, 1]));
    assert!(matches!(err(&s), StreamError::ReservedBits { .. }));
    let mut s = v.clone();
    s.extend(raw(rec::X86_PV_INFO, &[8, 4]));
    assert!(matches!(err(&s), StreamError::BadRecordLength { .. }));
    assert!(matches!(
        one(enc(&Record::X86PvInfo(X86PvInfo::X86_64))),
        StreamError::Sequence("multiple X86_PV_INFO records")
    ));
    // Ordering.
    let mut s = v.clone();
    s.extend(enc(&Record::X86PvInfo(X86PvInfo::X86_64)));
    let mut pd_first = s.clone();
    pd_first.extend(raw(rec::PAGE_DATA, &page_data_body(1, &[1], 1)));
    assert!(matches!(
        err(&pd_first),
        StreamError::Sequence("page data before STATIC_DATA_END")
    ));
    let mut sde_first = v.clone();
    sde_first.extend(enc(&Record::StaticDataEnd));
    assert!(matches!(err(&sde_first), StreamError::Sequence(_)));
    assert!(matches!(
        one(enc(&Record::StaticDataEnd)),
        StreamError::Sequence("multiple STATIC_DATA_END records")
    ));
    assert!(matches!(
        one(enc(&Record::X86MsrPolicy(vec![MsrEntry::default()]))),
        StreamError::Sequence(_)
    ));
    let mut shinfo_first = v.clone();
    shinfo_first.extend(enc(&Record::SharedInfo(vec![0; 4096])));
    assert!(matches!(err(&shinfo_first), StreamError::Sequence(_)));
    // P2M frames.
    let p2m = |start: u32, end: u32, n: usize| {
        let mut b = start.to_le_bytes().to_vec();
        b.extend_from_slice(&end.to_le_bytes());
        b.resize(8 + n * 8, 0);
        raw(rec::X86_PV_P2M_FRAMES, &b)
    };
    assert!(matches!(
        one(p2m(10, 9, 1)),
        StreamError::P2mFramesRange { start: 10, end: 9 }
    ));
    assert!(matches!(
        one(p2m(0, 512, 1)),
        StreamError::BadRecordLength { .. }
    ));
    assert!(matches!(
        one(raw(rec::X86_PV_P2M_FRAMES, &[0; 12])),
        StreamError::BadRecordLength { .. }
    ));
    assert!(matches!(
        one_opts(
            p2m(0, 0x400, 3),
            DecoderOptions {
                max_pfn: Some(0x3ff),
                ..libxc_opts()
            }
        ),
        StreamError::PfnTooLarge { pfn: 0x400, .. }
    ));
    // vCPU records.
    let vcpu = |t: u32, id: u32, res: u32, n: usize| {
        let mut b = id.to_le_bytes().to_vec();
        b.extend_from_slice(&res.to_le_bytes());
        b.resize(8 + n, 0);
        raw(t, &b)
    };
    assert!(matches!(
        one(vcpu(rec::X86_PV_VCPU_BASIC, 0, 0, 100)),
        StreamError::BadRecordLength { .. }
    ));
    assert!(matches!(
        one(vcpu(rec::X86_PV_VCPU_EXTENDED, 0, 0, 129)),
        StreamError::BadRecordLength { .. }
    ));
    assert!(matches!(
        one(vcpu(rec::X86_PV_VCPU_XSAVE, 0, 0, 15)),
        StreamError::BadRecordLength { .. }
    ));
    assert!(matches!(
        one(vcpu(rec::X86_PV_VCPU_MSRS, 0, 0, 24)),
        StreamError::BadRecordLength { .. }
    ));
    assert!(matches!(
        one(vcpu(rec::X86_PV_VCPU_MSRS, 0, 1, 16)),
        StreamError::ReservedBits { .. }
    ));
    assert!(matches!(
        one(raw(rec::X86_PV_VCPU_MSRS, &[0; 4])),
        StreamError::BadRecordLength { .. }
    ));
    assert!(matches!(
        one_opts(
            vcpu(rec::X86_PV_VCPU_BASIC, 2, 0, VCPU_CONTEXT_X86_64_SIZE),
            DecoderOptions {
                max_vcpus: Some(2),
                ..libxc_opts()
            }
        ),
        StreamError::VcpuOutOfRange { vcpu: 2, max: 2 }
    ));
    // Empty vCPU blobs are tolerated even with out-of-range ids.
    let mut ok = vcpu(rec::X86_PV_VCPU_XSAVE, 99, 0, 0);
    ok.extend(enc(&Record::End));
    decode_bytes(
        &pv_stream(&ok),
        DecoderOptions {
            max_vcpus: Some(1),
            ..libxc_opts()
        },
    )
    .unwrap();
    // SHARED_INFO and TSC_INFO.
    assert!(matches!(
        one(raw(rec::SHARED_INFO, &[0; 4095])),
        StreamError::BadRecordLength { .. }
    ));
    assert!(matches!(
        one(raw(rec::X86_TSC_INFO, &[0; 16])),
        StreamError::BadRecordLength { .. }
    ));
    let mut tsc = vec![0u8; 24];
    tsc[20] = 1;
    assert!(matches!(
        one(raw(rec::X86_TSC_INFO, &tsc)),
        StreamError::ReservedBits { .. }
    ));
    // Policies must be non-empty multiples of their entry size.
    let mut s = v.clone();
    s.extend(enc(&Record::X86PvInfo(X86PvInfo::X86_64)));
    for (t, n) in [
        (rec::X86_CPUID_POLICY, 0),
        (rec::X86_CPUID_POLICY, 25),
        (rec::X86_MSR_POLICY, 8),
    ] {
        let mut b = s.clone();
        b.extend(raw(t, &vec![0; n]));
        assert!(matches!(err(&b), StreamError::BadRecordLength { .. }));
    }
    // A PV stream must carry X86_PV_INFO.
    let mut s = v.clone();
    s.extend(enc(&Record::End));
    assert!(matches!(err(&s), StreamError::Sequence(_)));
}

#[test]
fn truncation_anywhere_is_reported() {
    let bytes = sample_pv_stream();
    // Every prefix at an 8-byte step (and a few odd ones) is truncated.
    let cuts = (0..bytes.len())
        .step_by(8)
        .chain([1, 23, 25, bytes.len() - 1]);
    for cut in cuts {
        let e = err(&bytes[..cut]);
        assert!(matches!(e, StreamError::Truncated { .. }), "cut {cut}: {e}");
        let e = read_stream(Cursor::new(&bytes[..cut]), libxc_opts()).unwrap_err();
        assert!(matches!(e, StreamError::Truncated { .. }), "cut {cut}: {e}");
    }
    let xl = sample_xl_save_file();
    for cut in [0, 10, 47, 48, 60, 100, xl.len() - 8] {
        let e = err_with(&xl[..cut], DecoderOptions::with_format(Format::Xl));
        assert!(matches!(e, StreamError::Truncated { .. }), "cut {cut}: {e}");
    }
}

#[test]
fn decoder_fails_sticky() {
    let mut dec = Decoder::new(libxc_opts());
    dec.feed(&[0u8; 24]);
    assert!(dec.next_item().is_err());
    assert!(matches!(dec.next_item(), Err(StreamError::Sequence(_))));
    assert!(dec.finish().is_err());
}

#[test]
fn libxl_errors() {
    let opts = DecoderOptions::with_format(Format::Libxl);
    let hdr = LibxlHeader::default().to_bytes();
    let mutate = |off: usize, v: u8| {
        let mut b = hdr.to_vec();
        b[off] = v;
        err_with(&b, opts)
    };
    assert!(matches!(mutate(0, b'M'), StreamError::BadLibxlIdent(_)));
    assert!(matches!(
        mutate(11, 3),
        StreamError::UnsupportedLibxlVersion(3)
    ));
    assert!(matches!(mutate(15, 1), StreamError::BigEndian));
    assert!(matches!(mutate(15, 4), StreamError::ReservedBits { .. }));
    // Legacy-converted flag is accepted.
    let mut legacy = LibxlHeader { options: 2 }.to_bytes().to_vec();
    legacy.extend(enc_libxl(&LibxlRecord::End));
    let items = decode_bytes(&legacy, opts).unwrap();
    assert!(matches!(&items[0], Item::LibxlHeader(h) if h.is_legacy()));

    let with = |r: Vec<u8>| {
        let mut b = hdr.to_vec();
        b.extend(r);
        err_with(&b, opts)
    };
    assert!(matches!(
        with(raw(6, &[])),
        StreamError::UnknownMandatoryLibxlRecord(6)
    ));
    assert!(matches!(
        with(raw(librec::EMULATOR_CONTEXT, &[3, 0, 0, 0, 0, 0, 0, 0])),
        StreamError::UnknownEmulator(3)
    ));
    assert!(matches!(
        with(raw(librec::EMULATOR_CONTEXT, &[2, 0, 0, 0])),
        StreamError::BadRecordLength { .. }
    ));
    let xs = |data: &[u8]| {
        let mut b = vec![2, 0, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(data);
        with(raw(librec::EMULATOR_XENSTORE_DATA, &b))
    };
    assert!(matches!(xs(b"a\0b"), StreamError::BadXenstoreData(_)));
    assert!(matches!(xs(b"a\0b\0c\0"), StreamError::BadXenstoreData(_)));
    assert!(matches!(
        with(raw(librec::LIBXC_CONTEXT, &[1])),
        StreamError::BadRecordLength { .. }
    ));
    assert!(matches!(
        with(raw(librec::CHECKPOINT_STATE, &[1])),
        StreamError::BadRecordLength { .. }
    ));
    let mut big = librec::EMULATOR_CONTEXT.to_le_bytes().to_vec();
    big.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(with(big), StreamError::LibxlRecordTooLong { .. }));
    // A bad libxc stream inside a libxl stream is reported as such.
    let mut b = hdr.to_vec();
    b.extend(enc_libxl(&LibxlRecord::LibxcContext));
    b.extend_from_slice(&[0; 24]);
    assert!(matches!(err_with(&b, opts), StreamError::BadMarker(0)));
}

#[test]
fn xl_header_errors() {
    let opts = DecoderOptions::with_format(Format::Xl);
    let good = sample_xl_save_file();
    let mutate = |off: usize, v: u8| {
        let mut b = good.clone();
        b[off] = v;
        err_with(&b, opts)
    };
    assert!(matches!(mutate(0, b'x'), StreamError::BadXlMagic));
    assert!(matches!(mutate(30, 1), StreamError::BadXlMagic));
    assert!(matches!(
        mutate(32, 1),
        StreamError::XlByteOrder(0x0102_0301)
    ));
    assert!(matches!(mutate(36, 7), StreamError::XlUnsupportedFlags(4)));
    assert!(matches!(
        mutate(36, XL_MANDATORY_FLAG_JSON as u8),
        StreamError::XlLegacyStream
    ));
    let mut h = XL_MAGIC.to_vec();
    h.extend_from_slice(&0x0102_0304u32.to_le_bytes());
    h.extend_from_slice(&XL_MANDATORY_FLAG_STREAMV2.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    let mut short = h.clone();
    short.extend_from_slice(&2u32.to_le_bytes());
    short.extend_from_slice(&[1, 0]);
    assert!(matches!(
        err_with(&short, opts),
        StreamError::XlOptionalData(_)
    ));
    let mut long = h.clone();
    long.extend_from_slice(&8u32.to_le_bytes());
    long.extend_from_slice(&[9, 0, 0, 0, 1, 2, 3, 4]);
    assert!(matches!(
        err_with(&long, opts),
        StreamError::XlOptionalData(_)
    ));
    let mut huge = h.clone();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        err_with(&huge, opts),
        StreamError::XlOptionalDataTooLong { .. }
    ));
    // No config at all, and trailing optional data after the config.
    let mut none = h.clone();
    none.extend_from_slice(&0u32.to_le_bytes());
    let parsed = XlHeader::parse(&none).unwrap();
    assert_eq!(parsed.config, None);
    assert_eq!(parsed.to_bytes(), none);
    let mut extra = XlHeader::with_json_config("{}");
    extra.extra_optional_data = vec![1, 2, 3];
    assert_eq!(XlHeader::parse(&extra.to_bytes()).unwrap(), extra);
}

#[test]
fn checkpointed_libxl_stream_interleaves() {
    let bytes = super::sample::sample_checkpointed_libxl_stream();
    let opts = DecoderOptions {
        checkpointed: true,
        ..DecoderOptions::with_format(Format::Libxl)
    };
    let items = decode_bytes(&bytes, opts).unwrap();
    let n = items.len();
    assert_eq!(items[n - 1], Item::LibxlRecord(LibxlRecord::End));
    assert_eq!(items[n - 2], Item::Record(Record::End));
    assert!(matches!(items[n - 3], Item::Record(Record::PageData(_))));
    assert_eq!(items[n - 4], Item::LibxlRecord(LibxlRecord::CheckpointEnd));
    assert!(matches!(
        items[n - 5],
        Item::LibxlRecord(LibxlRecord::EmulatorContext { .. })
    ));
    assert_eq!(items[n - 6], Item::Record(Record::Checkpoint));
    // Without the checkpointed option the CHECKPOINT is refused.
    assert!(matches!(
        err_with(&bytes, DecoderOptions::with_format(Format::Libxl)),
        StreamError::CheckpointInPlainStream
    ));
}

#[test]
fn decoder_is_send() {
    fn is_send<T: Send + 'static>() {}
    is_send::<Decoder>();
    is_send::<StreamError>();
}
