//! Synthetic but well-formed streams, for tests, fuzz corpora and demos.

use super::libxc::{
    CpuidLeaf, DomainHeader, ImageHeader, MsrEntry, PageData, PageEntry, PageType, Record,
    VcpuKind, VcpuMsr, VcpuRecord, X86PvInfo, X86PvP2mFrames, X86TscInfo, PAGE_SIZE,
    VCPU_CONTEXT_X86_64_SIZE,
};
use super::libxl::{encode_xenstore_pairs, EmulatorId, LibxlHeader, LibxlRecord};
use super::writer::StreamWriter;
use super::xl::XlHeader;

/// Highest pfn used by the sample guest.
pub const SAMPLE_MAX_PFN: u64 = 0x3ff;
/// vCPUs of the sample guest.
pub const SAMPLE_VCPUS: u32 = 2;

fn page(fill: u64) -> Vec<u8> {
    (0..PAGE_SIZE / 8)
        .flat_map(|i| (fill.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ i as u64).to_le_bytes())
        .collect()
}

/// The records of a small 64-bit PV guest in the reference's save order
/// (after the headers), ending with END.
pub fn sample_pv_records() -> Vec<Record> {
    let mut recs = vec![
        Record::X86PvInfo(X86PvInfo::X86_64),
        Record::X86CpuidPolicy(vec![
            CpuidLeaf {
                leaf: 0,
                subleaf: 0xffff_ffff,
                a: 0xd,
                b: 0x756e_6547,
                c: 0x6c65_746e,
                d: 0x4965_6e69,
            },
            CpuidLeaf {
                leaf: 7,
                subleaf: 0,
                b: 0x29c_6fbf,
                ..Default::default()
            },
        ]),
        Record::X86MsrPolicy(vec![MsrEntry {
            idx: 0xce,
            flags: 0,
            val: 0x8000_0000,
        }]),
        Record::StaticDataEnd,
        // One p2m frame holds 512 entries: pfns 0..=0x3ff need two.
        Record::X86PvP2mFrames(X86PvP2mFrames {
            start_pfn: 0,
            end_pfn: SAMPLE_MAX_PFN as u32,
            frames: vec![0x3fe, 0x3ff],
        }),
    ];
    // Live pass: ordinary pages and page tables.
    let entries: Vec<PageEntry> = (0..8u64)
        .map(|pfn| {
            let t = match pfn {
                1 => PageType::L4TabPinned,
                2 => PageType::L3Tab,
                3 => PageType::L2Tab,
                4 => PageType::L1Tab,
                _ => PageType::NoTab,
            };
            PageEntry::new(pfn, t)
        })
        .collect();
    let data = entries.iter().flat_map(|e| page(e.pfn)).collect();
    recs.push(Record::PageData(PageData { entries, data }));
    // A batch mixing types with and without data.
    let entries = vec![
        PageEntry::new(0x100, PageType::XTab),
        PageEntry::new(0x101, PageType::NoTab),
        PageEntry::new(0x102, PageType::XAlloc),
        PageEntry::new(0x103, PageType::Broken),
        PageEntry::new(SAMPLE_MAX_PFN, PageType::L1TabPinned),
    ];
    let data = [0x101, SAMPLE_MAX_PFN]
        .iter()
        .flat_map(|&p| page(p))
        .collect();
    recs.push(Record::PageData(PageData { entries, data }));
    // Final pass.
    let entries = vec![PageEntry::new(5, PageType::NoTab)];
    recs.push(Record::PageData(PageData {
        data: page(55),
        entries,
    }));
    recs.push(Record::X86TscInfo(X86TscInfo {
        mode: 0,
        khz: 2_400_000,
        nsec: 123_456_789_000,
        incarnation: 3,
    }));
    recs.push(Record::SharedInfo(page(0x5151)));
    for vcpu_id in 0..SAMPLE_VCPUS {
        recs.push(Record::X86PvVcpu(VcpuRecord {
            kind: VcpuKind::Basic,
            vcpu_id,
            data: (0..VCPU_CONTEXT_X86_64_SIZE)
                .map(|i| (i as u8) ^ (vcpu_id as u8))
                .collect(),
        }));
        recs.push(Record::X86PvVcpu(VcpuRecord {
            kind: VcpuKind::Extended,
            vcpu_id,
            data: vec![0xee; 64],
        }));
        recs.push(Record::X86PvVcpu(VcpuRecord {
            kind: VcpuKind::Xsave,
            vcpu_id,
            data: vec![0x55; 832],
        }));
        recs.push(Record::X86PvVcpu(VcpuRecord {
            kind: VcpuKind::Msrs,
            vcpu_id,
            data: VcpuMsr::to_blob(&[VcpuMsr {
                index: 0xc000_0103,
                flags: 0,
                value: u64::from(vcpu_id),
            }]),
        }));
    }
    recs.push(Record::End);
    recs
}

/// A complete libxc v3 stream of the sample PV guest.
pub fn sample_pv_stream() -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new());
    write_sample_libxc(&mut w);
    w.into_inner()
}

fn write_sample_libxc(w: &mut StreamWriter<Vec<u8>>) {
    w.write_libxc_headers(&ImageHeader::default(), &DomainHeader::x86_pv(4, 17))
        .expect("in-memory write");
    for r in sample_pv_records() {
        w.write_record(&r).expect("sample records are valid");
    }
}

/// The sample guest as an `xl save` file: xl header (JSON config), libxl
/// header, LIBXC_CONTEXT, the libxc stream, emulator xenstore data, END.
pub fn sample_xl_save_file() -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new());
    let json = r#"{"c_info":{"type":"pv","name":"sample"},"b_info":{"max_vcpus":2}}"#;
    w.write_xl_header(&XlHeader::with_json_config(json))
        .expect("in-memory write");
    w.write_libxl_header(&LibxlHeader::default())
        .expect("in-memory write");
    w.write_libxl_record(&LibxlRecord::LibxcContext)
        .expect("in-memory write");
    write_sample_libxc(&mut w);
    w.write_libxl_record(&LibxlRecord::EmulatorXenstoreData {
        emulator: EmulatorId::QemuUpstream,
        index: 0,
        data: encode_xenstore_pairs(&[("physmap/1/start_addr", "f0000000")]),
    })
    .expect("in-memory write");
    w.write_libxl_record(&LibxlRecord::End)
        .expect("in-memory write");
    w.into_inner()
}

/// A checkpointed (Remus-style) libxl stream: the sample guest's records up
/// to a CHECKPOINT, libxl's EMULATOR_CONTEXT and CHECKPOINT_END, then one
/// more PAGE_DATA, END and libxl END.  Decode with `checkpointed: true`.
pub fn sample_checkpointed_libxl_stream() -> Vec<u8> {
    let mut w = StreamWriter::new(Vec::new());
    let ok = "in-memory write";
    w.write_libxl_header(&LibxlHeader::default()).expect(ok);
    w.write_libxl_record(&LibxlRecord::LibxcContext).expect(ok);
    w.write_libxc_headers(&ImageHeader::default(), &DomainHeader::x86_pv(4, 17))
        .expect(ok);
    for r in sample_pv_records() {
        if r != Record::End {
            w.write_record(&r).expect(ok);
        }
    }
    w.write_record(&Record::Checkpoint).expect(ok);
    w.write_libxl_record(&LibxlRecord::EmulatorContext {
        emulator: EmulatorId::QemuUpstream,
        index: 0,
        data: vec![1, 2, 3],
    })
    .expect(ok);
    w.write_libxl_record(&LibxlRecord::CheckpointEnd).expect(ok);
    w.write_record(&Record::PageData(PageData {
        entries: vec![PageEntry::new(3, PageType::NoTab)],
        data: vec![3; PAGE_SIZE],
    }))
    .expect(ok);
    w.write_record(&Record::End).expect(ok);
    w.write_libxl_record(&LibxlRecord::End).expect(ok);
    w.into_inner()
}
