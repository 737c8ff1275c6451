//! The libxc migration stream (spec: `docs/specs/libxc-migration-stream.pandoc`).
//!
//! Version 3 is written; versions 2 and 3 are read.  The image header is
//! big-endian, everything after it little-endian.

use super::bytes::{le_u16, le_u32, le_u64, pad8};
use super::error::{Result, StreamError};

/// Image header marker: all ones.
pub const IHDR_MARKER: u64 = u64::MAX;
/// Image header id: "XENF".
pub const IHDR_ID: u32 = 0x5845_4E46;
/// The version this crate writes.
pub const IHDR_VERSION: u32 = 3;
/// Option bit 0: the stream is big-endian (rejected).
pub const IHDR_OPT_BIG_ENDIAN: u16 = 1;
/// Size of the image header.
pub const IHDR_SIZE: usize = 24;
/// Size of the domain header.
pub const DHDR_SIZE: usize = 16;
/// Size of a record header (type + length).
pub const RHDR_SIZE: usize = 8;
/// Records are padded to this alignment.
pub const REC_ALIGN: usize = 8;
/// Maximum record body length, as in the reference (128 MiB).
pub const REC_LENGTH_MAX: u32 = 128 << 20;
/// Bit 31 of a record type marks the record as optional.
pub const REC_TYPE_OPTIONAL: u32 = 0x8000_0000;

/// Guest page size (page_shift 12).
pub const PAGE_SIZE: usize = 4096;
/// PAGE_DATA entry: pfn field (bits 51..0).
pub const PAGE_DATA_PFN_MASK: u64 = 0x000f_ffff_ffff_ffff;
/// PAGE_DATA entry: reserved bits (59..52).
pub const PAGE_DATA_RESERVED_MASK: u64 = 0x0ff0_0000_0000_0000;
/// PAGE_DATA entry: type field shift (bits 63..60).
pub const PAGE_DATA_TYPE_SHIFT: u32 = 60;

/// `sizeof(vcpu_guest_context_x86_64_t)`.
pub const VCPU_CONTEXT_X86_64_SIZE: usize = 5168;
/// Maximum X86_PV_VCPU_EXTENDED blob size accepted by the reference.
pub const VCPU_EXTENDED_MAX: usize = 128;
/// Minimum X86_PV_VCPU_XSAVE blob size accepted by the reference.
pub const VCPU_XSAVE_MIN: usize = 16;

/// Record type numbers.
pub mod rec {
    pub const END: u32 = 0x00;
    pub const PAGE_DATA: u32 = 0x01;
    pub const X86_PV_INFO: u32 = 0x02;
    pub const X86_PV_P2M_FRAMES: u32 = 0x03;
    pub const X86_PV_VCPU_BASIC: u32 = 0x04;
    pub const X86_PV_VCPU_EXTENDED: u32 = 0x05;
    pub const X86_PV_VCPU_XSAVE: u32 = 0x06;
    pub const SHARED_INFO: u32 = 0x07;
    pub const X86_TSC_INFO: u32 = 0x08;
    pub const HVM_CONTEXT: u32 = 0x09;
    pub const HVM_PARAMS: u32 = 0x0A;
    pub const TOOLSTACK: u32 = 0x0B;
    pub const X86_PV_VCPU_MSRS: u32 = 0x0C;
    pub const VERIFY: u32 = 0x0D;
    pub const CHECKPOINT: u32 = 0x0E;
    pub const CHECKPOINT_DIRTY_PFN_LIST: u32 = 0x0F;
    pub const STATIC_DATA_END: u32 = 0x10;
    pub const X86_CPUID_POLICY: u32 = 0x11;
    pub const X86_MSR_POLICY: u32 = 0x12;
}

/// Human-readable name of a libxc record type.
pub fn record_type_name(rtype: u32) -> &'static str {
    match rtype {
        rec::END => "END",
        rec::PAGE_DATA => "PAGE_DATA",
        rec::X86_PV_INFO => "X86_PV_INFO",
        rec::X86_PV_P2M_FRAMES => "X86_PV_P2M_FRAMES",
        rec::X86_PV_VCPU_BASIC => "X86_PV_VCPU_BASIC",
        rec::X86_PV_VCPU_EXTENDED => "X86_PV_VCPU_EXTENDED",
        rec::X86_PV_VCPU_XSAVE => "X86_PV_VCPU_XSAVE",
        rec::SHARED_INFO => "SHARED_INFO",
        rec::X86_TSC_INFO => "X86_TSC_INFO",
        rec::HVM_CONTEXT => "HVM_CONTEXT",
        rec::HVM_PARAMS => "HVM_PARAMS",
        rec::TOOLSTACK => "TOOLSTACK",
        rec::X86_PV_VCPU_MSRS => "X86_PV_VCPU_MSRS",
        rec::VERIFY => "VERIFY",
        rec::CHECKPOINT => "CHECKPOINT",
        rec::CHECKPOINT_DIRTY_PFN_LIST => "CHECKPOINT_DIRTY_PFN_LIST",
        rec::STATIC_DATA_END => "STATIC_DATA_END",
        rec::X86_CPUID_POLICY => "X86_CPUID_POLICY",
        rec::X86_MSR_POLICY => "X86_MSR_POLICY",
        t if t & REC_TYPE_OPTIONAL != 0 => "(optional)",
        _ => "(unknown)",
    }
}

/// The image header (24 bytes, big-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// 2 or 3.
    pub version: u32,
    /// Options; only bit 0 (big-endian) is defined, and it is rejected.
    pub options: u16,
}

impl Default for ImageHeader {
    fn default() -> Self {
        ImageHeader {
            version: IHDR_VERSION,
            options: 0,
        }
    }
}

impl ImageHeader {
    /// Encode to the 24 on-wire bytes.
    pub fn to_bytes(&self) -> [u8; IHDR_SIZE] {
        let mut b = [0u8; IHDR_SIZE];
        b[0..8].copy_from_slice(&IHDR_MARKER.to_be_bytes());
        b[8..12].copy_from_slice(&IHDR_ID.to_be_bytes());
        b[12..16].copy_from_slice(&self.version.to_be_bytes());
        b[16..18].copy_from_slice(&self.options.to_be_bytes());
        b
    }

    /// Decode and validate 24 bytes.
    pub fn parse(b: &[u8; IHDR_SIZE]) -> Result<Self> {
        let marker = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
        if marker != IHDR_MARKER {
            return Err(StreamError::BadMarker(marker));
        }
        let id = u32::from_be_bytes(b[8..12].try_into().expect("4 bytes"));
        if id != IHDR_ID {
            return Err(StreamError::BadId(id));
        }
        let version = u32::from_be_bytes(b[12..16].try_into().expect("4 bytes"));
        if !(2..=3).contains(&version) {
            return Err(StreamError::UnsupportedVersion(version));
        }
        let options = u16::from_be_bytes([b[16], b[17]]);
        if options & IHDR_OPT_BIG_ENDIAN != 0 {
            return Err(StreamError::BigEndian);
        }
        if options & !IHDR_OPT_BIG_ENDIAN != 0 {
            return Err(StreamError::ReservedBits {
                what: "image header options",
                value: u64::from(options),
            });
        }
        let res =
            u64::from_be_bytes(b[16..24].try_into().expect("8 bytes")) & 0x0000_ffff_ffff_ffff;
        if res != 0 {
            return Err(StreamError::ReservedBits {
                what: "image header",
                value: res,
            });
        }
        Ok(ImageHeader { version, options })
    }
}

/// Guest type in the domain header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DomainType {
    X86Pv,
    X86Hvm,
}

impl DomainType {
    pub fn to_u32(self) -> u32 {
        match self {
            DomainType::X86Pv => 1,
            DomainType::X86Hvm => 2,
        }
    }
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(DomainType::X86Pv),
            2 => Some(DomainType::X86Hvm),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DomainType::X86Pv => "x86 PV",
            DomainType::X86Hvm => "x86 HVM",
        }
    }
}

/// The domain header (16 bytes, little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainHeader {
    pub domain_type: DomainType,
    /// Always 12.
    pub page_shift: u16,
    /// 0 means "converted from a legacy stream".
    pub xen_major: u32,
    pub xen_minor: u32,
}

impl DomainHeader {
    /// A header for an x86 PV guest from Xen `major.minor`.
    pub fn x86_pv(xen_major: u32, xen_minor: u32) -> Self {
        DomainHeader {
            domain_type: DomainType::X86Pv,
            page_shift: 12,
            xen_major,
            xen_minor,
        }
    }

    pub fn to_bytes(&self) -> [u8; DHDR_SIZE] {
        let mut b = [0u8; DHDR_SIZE];
        b[0..4].copy_from_slice(&self.domain_type.to_u32().to_le_bytes());
        b[4..6].copy_from_slice(&self.page_shift.to_le_bytes());
        b[8..12].copy_from_slice(&self.xen_major.to_le_bytes());
        b[12..16].copy_from_slice(&self.xen_minor.to_le_bytes());
        b
    }

    pub fn parse(b: &[u8; DHDR_SIZE]) -> Result<Self> {
        let t = le_u32(b, 0);
        let domain_type = DomainType::from_u32(t).ok_or(StreamError::UnknownDomainType(t))?;
        let page_shift = le_u16(b, 4);
        let res = le_u16(b, 6);
        if res != 0 {
            return Err(StreamError::ReservedBits {
                what: "domain header",
                value: u64::from(res),
            });
        }
        if page_shift != 12 {
            return Err(StreamError::BadPageShift(page_shift));
        }
        Ok(DomainHeader {
            domain_type,
            page_shift,
            xen_major: le_u32(b, 8),
            xen_minor: le_u32(b, 12),
        })
    }
}

/// A PAGE_DATA page type (`XEN_DOMCTL_PFINFO_*` >> 28).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageType {
    NoTab,
    L1Tab,
    L2Tab,
    L3Tab,
    L4Tab,
    L1TabPinned,
    L2TabPinned,
    L3TabPinned,
    L4TabPinned,
    Broken,
    XAlloc,
    XTab,
}

impl PageType {
    /// The 4-bit type field value.
    pub fn to_bits(self) -> u8 {
        match self {
            PageType::NoTab => 0x0,
            PageType::L1Tab => 0x1,
            PageType::L2Tab => 0x2,
            PageType::L3Tab => 0x3,
            PageType::L4Tab => 0x4,
            PageType::L1TabPinned => 0x9,
            PageType::L2TabPinned => 0xA,
            PageType::L3TabPinned => 0xB,
            PageType::L4TabPinned => 0xC,
            PageType::Broken => 0xD,
            PageType::XAlloc => 0xE,
            PageType::XTab => 0xF,
        }
    }

    /// Decode a 4-bit type field; 5..=8 are invalid.
    pub fn from_bits(v: u8) -> Option<Self> {
        Some(match v {
            0x0 => PageType::NoTab,
            0x1 => PageType::L1Tab,
            0x2 => PageType::L2Tab,
            0x3 => PageType::L3Tab,
            0x4 => PageType::L4Tab,
            0x9 => PageType::L1TabPinned,
            0xA => PageType::L2TabPinned,
            0xB => PageType::L3TabPinned,
            0xC => PageType::L4TabPinned,
            0xD => PageType::Broken,
            0xE => PageType::XAlloc,
            0xF => PageType::XTab,
            _ => return None,
        })
    }

    /// Whether a page of this type carries 4096 bytes of data in the stream
    /// (NOTAB and L1..L4, pinned or not).
    pub fn has_data(self) -> bool {
        !matches!(self, PageType::Broken | PageType::XAlloc | PageType::XTab)
    }

    /// Page-table level (1..=4) for page-table types, else `None`.
    pub fn table_level(self) -> Option<u8> {
        match self {
            PageType::L1Tab | PageType::L1TabPinned => Some(1),
            PageType::L2Tab | PageType::L2TabPinned => Some(2),
            PageType::L3Tab | PageType::L3TabPinned => Some(3),
            PageType::L4Tab | PageType::L4TabPinned => Some(4),
            _ => None,
        }
    }

    /// Whether the page table is pinned.
    pub fn is_pinned(self) -> bool {
        matches!(
            self,
            PageType::L1TabPinned
                | PageType::L2TabPinned
                | PageType::L3TabPinned
                | PageType::L4TabPinned
        )
    }
}

/// One PAGE_DATA entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageEntry {
    pub pfn: u64,
    pub ptype: PageType,
}

impl PageEntry {
    pub fn new(pfn: u64, ptype: PageType) -> Self {
        PageEntry { pfn, ptype }
    }
    /// The on-wire u64.
    pub fn to_u64(self) -> u64 {
        (u64::from(self.ptype.to_bits()) << PAGE_DATA_TYPE_SHIFT) | (self.pfn & PAGE_DATA_PFN_MASK)
    }
}

/// A PAGE_DATA record: entries plus, concatenated in entry order, one page of
/// data for each entry whose type carries data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageData {
    pub entries: Vec<PageEntry>,
    pub data: Vec<u8>,
}

impl PageData {
    /// Number of entries that carry a page of data.
    pub fn pages_with_data(&self) -> usize {
        self.entries.iter().filter(|e| e.ptype.has_data()).count()
    }

    /// Iterate over entries with their page of data (if the type carries one).
    pub fn pages(&self) -> impl Iterator<Item = (PageEntry, Option<&[u8]>)> + '_ {
        let mut chunks = self.data.chunks_exact(PAGE_SIZE);
        self.entries.iter().map(move |e| {
            let d = if e.ptype.has_data() {
                chunks.next()
            } else {
                None
            };
            (*e, d)
        })
    }

    /// Check the invariants the decoder enforces (used by the writer).
    pub fn check(&self) -> Result<()> {
        if self.entries.is_empty() {
            return Err(StreamError::InvalidRecord(
                "PAGE_DATA with no entries".into(),
            ));
        }
        if self.entries.len() > u32::MAX as usize {
            return Err(StreamError::InvalidRecord(
                "PAGE_DATA count overflows".into(),
            ));
        }
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.pfn & !PAGE_DATA_PFN_MASK != 0)
        {
            return Err(StreamError::InvalidRecord(format!(
                "pfn {:#x} does not fit in 52 bits",
                e.pfn
            )));
        }
        let expected = self.pages_with_data() * PAGE_SIZE;
        if self.data.len() != expected {
            return Err(StreamError::InvalidRecord(format!(
                "PAGE_DATA has {} bytes of page data, entries need {}",
                self.data.len(),
                expected
            )));
        }
        Ok(())
    }
}

/// X86_PV_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X86PvInfo {
    /// Guest width in bytes: 8 (64-bit) or 4 (32-bit).
    pub guest_width: u8,
    /// Page-table levels: 4 (64-bit) or 3 (32-bit PAE).
    pub pt_levels: u8,
}

impl X86PvInfo {
    /// A 64-bit PV guest.
    pub const X86_64: X86PvInfo = X86PvInfo {
        guest_width: 8,
        pt_levels: 4,
    };
}

/// X86_PV_P2M_FRAMES.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X86PvP2mFrames {
    pub start_pfn: u32,
    pub end_pfn: u32,
    /// pfns of the p2m frames covering start_pfn..=end_pfn.
    pub frames: Vec<u64>,
}

/// Which vCPU record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VcpuKind {
    Basic,
    Extended,
    Xsave,
    Msrs,
}

impl VcpuKind {
    pub fn rtype(self) -> u32 {
        match self {
            VcpuKind::Basic => rec::X86_PV_VCPU_BASIC,
            VcpuKind::Extended => rec::X86_PV_VCPU_EXTENDED,
            VcpuKind::Xsave => rec::X86_PV_VCPU_XSAVE,
            VcpuKind::Msrs => rec::X86_PV_VCPU_MSRS,
        }
    }
}

/// X86_PV_VCPU_{BASIC,EXTENDED,XSAVE,MSRS}: vCPU id and an opaque blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuRecord {
    pub kind: VcpuKind,
    pub vcpu_id: u32,
    pub data: Vec<u8>,
}

/// One entry of an X86_PV_VCPU_MSRS blob (`xen_domctl_vcpu_msr_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuMsr {
    pub index: u32,
    pub flags: u32,
    pub value: u64,
}

impl VcpuMsr {
    /// Parse an X86_PV_VCPU_MSRS blob (must be a multiple of 16 bytes).
    pub fn parse_blob(blob: &[u8]) -> Option<Vec<VcpuMsr>> {
        if blob.len() % 16 != 0 {
            return None;
        }
        Some(
            blob.chunks_exact(16)
                .map(|c| VcpuMsr {
                    index: le_u32(c, 0),
                    flags: le_u32(c, 4),
                    value: le_u64(c, 8),
                })
                .collect(),
        )
    }
    /// Encode a list as an X86_PV_VCPU_MSRS blob.
    pub fn to_blob(msrs: &[VcpuMsr]) -> Vec<u8> {
        let mut v = Vec::with_capacity(msrs.len() * 16);
        for m in msrs {
            v.extend_from_slice(&m.index.to_le_bytes());
            v.extend_from_slice(&m.flags.to_le_bytes());
            v.extend_from_slice(&m.value.to_le_bytes());
        }
        v
    }
}

/// X86_TSC_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct X86TscInfo {
    pub mode: u32,
    pub khz: u32,
    pub nsec: u64,
    pub incarnation: u32,
}

/// One HVM_PARAMS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HvmParam {
    pub index: u64,
    pub value: u64,
}

/// `xen_cpuid_leaf_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidLeaf {
    pub leaf: u32,
    pub subleaf: u32,
    pub a: u32,
    pub b: u32,
    pub c: u32,
    pub d: u32,
}

/// `xen_msr_entry_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsrEntry {
    pub idx: u32,
    pub flags: u32,
    pub val: u64,
}

/// A decoded libxc record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    End,
    PageData(PageData),
    X86PvInfo(X86PvInfo),
    X86PvP2mFrames(X86PvP2mFrames),
    X86PvVcpu(VcpuRecord),
    /// The guest's shared_info page (4096 bytes).
    SharedInfo(Vec<u8>),
    X86TscInfo(X86TscInfo),
    HvmContext(Vec<u8>),
    HvmParams(Vec<HvmParam>),
    /// Deprecated: the decoder rejects it, the writer can still produce it.
    Toolstack(Vec<u8>),
    Verify,
    Checkpoint,
    CheckpointDirtyPfnList(Vec<u64>),
    StaticDataEnd,
    X86CpuidPolicy(Vec<CpuidLeaf>),
    X86MsrPolicy(Vec<MsrEntry>),
    /// A record with the optional bit set (bit 31); its body is kept as is.
    Optional {
        rtype: u32,
        body: Vec<u8>,
    },
}

impl Record {
    /// On-wire record type.
    pub fn rtype(&self) -> u32 {
        match self {
            Record::End => rec::END,
            Record::PageData(_) => rec::PAGE_DATA,
            Record::X86PvInfo(_) => rec::X86_PV_INFO,
            Record::X86PvP2mFrames(_) => rec::X86_PV_P2M_FRAMES,
            Record::X86PvVcpu(v) => v.kind.rtype(),
            Record::SharedInfo(_) => rec::SHARED_INFO,
            Record::X86TscInfo(_) => rec::X86_TSC_INFO,
            Record::HvmContext(_) => rec::HVM_CONTEXT,
            Record::HvmParams(_) => rec::HVM_PARAMS,
            Record::Toolstack(_) => rec::TOOLSTACK,
            Record::Verify => rec::VERIFY,
            Record::Checkpoint => rec::CHECKPOINT,
            Record::CheckpointDirtyPfnList(_) => rec::CHECKPOINT_DIRTY_PFN_LIST,
            Record::StaticDataEnd => rec::STATIC_DATA_END,
            Record::X86CpuidPolicy(_) => rec::X86_CPUID_POLICY,
            Record::X86MsrPolicy(_) => rec::X86_MSR_POLICY,
            Record::Optional { rtype, .. } => *rtype,
        }
    }

    /// Name of the record type.
    pub fn name(&self) -> &'static str {
        record_type_name(self.rtype())
    }

    /// Encode the record body (without header or padding).
    pub fn encode_body(&self) -> Result<Vec<u8>> {
        let mut b = Vec::new();
        match self {
            Record::End | Record::Verify | Record::Checkpoint | Record::StaticDataEnd => {}
            Record::PageData(p) => {
                p.check()?;
                b.reserve(8 + p.entries.len() * 8 + p.data.len());
                b.extend_from_slice(&(p.entries.len() as u32).to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                for e in &p.entries {
                    b.extend_from_slice(&e.to_u64().to_le_bytes());
                }
                b.extend_from_slice(&p.data);
            }
            Record::X86PvInfo(i) => {
                b.push(i.guest_width);
                b.push(i.pt_levels);
                b.extend_from_slice(&[0u8; 6]);
            }
            Record::X86PvP2mFrames(f) => {
                b.extend_from_slice(&f.start_pfn.to_le_bytes());
                b.extend_from_slice(&f.end_pfn.to_le_bytes());
                for p in &f.frames {
                    b.extend_from_slice(&p.to_le_bytes());
                }
            }
            Record::X86PvVcpu(v) => {
                b.extend_from_slice(&v.vcpu_id.to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                b.extend_from_slice(&v.data);
            }
            Record::SharedInfo(d)
            | Record::HvmContext(d)
            | Record::Toolstack(d)
            | Record::Optional { body: d, .. } => b.extend_from_slice(d),
            Record::X86TscInfo(t) => {
                b.extend_from_slice(&t.mode.to_le_bytes());
                b.extend_from_slice(&t.khz.to_le_bytes());
                b.extend_from_slice(&t.nsec.to_le_bytes());
                b.extend_from_slice(&t.incarnation.to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
            }
            Record::HvmParams(ps) => {
                b.extend_from_slice(&(ps.len() as u32).to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                for p in ps {
                    b.extend_from_slice(&p.index.to_le_bytes());
                    b.extend_from_slice(&p.value.to_le_bytes());
                }
            }
            Record::CheckpointDirtyPfnList(pfns) => {
                for p in pfns {
                    b.extend_from_slice(&p.to_le_bytes());
                }
            }
            Record::X86CpuidPolicy(leaves) => {
                for l in leaves {
                    for v in [l.leaf, l.subleaf, l.a, l.b, l.c, l.d] {
                        b.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
            Record::X86MsrPolicy(msrs) => {
                for m in msrs {
                    b.extend_from_slice(&m.idx.to_le_bytes());
                    b.extend_from_slice(&m.flags.to_le_bytes());
                    b.extend_from_slice(&m.val.to_le_bytes());
                }
            }
        }
        if b.len() > REC_LENGTH_MAX as usize {
            return Err(StreamError::InvalidRecord(format!(
                "{} body of {} bytes exceeds the record length cap",
                self.name(),
                b.len()
            )));
        }
        Ok(b)
    }

    /// Encode header, body and padding, appending to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<()> {
        let body = self.encode_body()?;
        encode_record_raw(self.rtype(), &body, out);
        Ok(())
    }
}

/// Append a raw record (header, body, zero padding) to `out`.
pub fn encode_record_raw(rtype: u32, body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&rtype.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    out.resize(out.len() + pad8(body.len()) - body.len(), 0);
}

/// What the record parser needs to know about the stream so far.
#[derive(Debug, Clone, Copy)]
pub struct RecordContext {
    pub version: u32,
    pub domain_type: DomainType,
    /// Highest valid pfn, if the caller knows it.
    pub max_pfn: Option<u64>,
    /// Number of vCPUs of the domain, if the caller knows it.
    pub max_vcpus: Option<u32>,
    /// Guest width from X86_PV_INFO, once seen.
    pub guest_width: Option<u8>,
    /// Whether CHECKPOINT records are acceptable (Remus/COLO streams).
    pub checkpointed: bool,
}

fn bad_len(name: &'static str, length: usize, reason: impl Into<String>) -> StreamError {
    StreamError::BadRecordLength {
        name,
        length: length as u32,
        reason: reason.into(),
    }
}

fn need_empty(name: &'static str, body: &[u8]) -> Result<()> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(bad_len(name, body.len(), "expected an empty body"))
    }
}

fn need_domain(name: &'static str, ctx: &RecordContext, want: DomainType) -> Result<()> {
    if ctx.domain_type == want {
        Ok(())
    } else {
        Err(StreamError::WrongDomainType {
            name,
            domain: ctx.domain_type.name(),
        })
    }
}

/// Parse and validate one record body (padding already stripped).
///
/// Checks everything that can be decided from the record itself and the
/// context; ordering rules live in the [`super::Decoder`].
pub fn parse_record(rtype: u32, body: &[u8], ctx: &RecordContext) -> Result<Record> {
    let name = record_type_name(rtype);
    if rtype & REC_TYPE_OPTIONAL != 0 {
        return Ok(Record::Optional {
            rtype,
            body: body.to_vec(),
        });
    }
    Ok(match rtype {
        rec::END => {
            need_empty(name, body)?;
            Record::End
        }
        rec::VERIFY => {
            need_empty(name, body)?;
            Record::Verify
        }
        rec::CHECKPOINT => {
            need_empty(name, body)?;
            if !ctx.checkpointed {
                return Err(StreamError::CheckpointInPlainStream);
            }
            Record::Checkpoint
        }
        rec::STATIC_DATA_END => {
            need_empty(name, body)?;
            if ctx.version < 3 {
                return Err(StreamError::NotInVersion {
                    name,
                    version: ctx.version,
                });
            }
            Record::StaticDataEnd
        }
        rec::PAGE_DATA => Record::PageData(parse_page_data(body, ctx)?),
        rec::X86_PV_INFO => {
            need_domain(name, ctx, DomainType::X86Pv)?;
            if body.len() != 8 {
                return Err(bad_len(name, body.len(), "expected 8 bytes"));
            }
            let res = le_u64(body, 0) >> 16;
            if res != 0 {
                return Err(StreamError::ReservedBits {
                    what: "X86_PV_INFO",
                    value: res,
                });
            }
            let (width, levels) = (body[0], body[1]);
            if !matches!((width, levels), (8, 4) | (4, 3)) {
                return Err(StreamError::InvalidPvInfo { width, levels });
            }
            Record::X86PvInfo(X86PvInfo {
                guest_width: width,
                pt_levels: levels,
            })
        }
        rec::X86_PV_P2M_FRAMES => {
            need_domain(name, ctx, DomainType::X86Pv)?;
            if body.len() < 8 || body.len() % 8 != 0 {
                return Err(bad_len(name, body.len(), "expected 8 + 8*n bytes"));
            }
            let start_pfn = le_u32(body, 0);
            let end_pfn = le_u32(body, 4);
            if start_pfn > end_pfn {
                return Err(StreamError::P2mFramesRange {
                    start: start_pfn,
                    end: end_pfn,
                });
            }
            let frames: Vec<u64> = body[8..].chunks_exact(8).map(|c| le_u64(c, 0)).collect();
            if let Some(width) = ctx.guest_width {
                let fpp = (PAGE_SIZE / usize::from(width)) as u32;
                let n = (end_pfn / fpp - start_pfn / fpp + 1) as usize;
                if frames.len() != n {
                    return Err(bad_len(
                        name,
                        body.len(),
                        format!("pfns {start_pfn:#x}..={end_pfn:#x} need {n} frames"),
                    ));
                }
            }
            if let Some(max) = ctx.max_pfn {
                if u64::from(end_pfn) > max {
                    return Err(StreamError::PfnTooLarge {
                        index: 0,
                        pfn: u64::from(end_pfn),
                        max,
                    });
                }
            }
            Record::X86PvP2mFrames(X86PvP2mFrames {
                start_pfn,
                end_pfn,
                frames,
            })
        }
        rec::X86_PV_VCPU_BASIC
        | rec::X86_PV_VCPU_EXTENDED
        | rec::X86_PV_VCPU_XSAVE
        | rec::X86_PV_VCPU_MSRS => {
            need_domain(name, ctx, DomainType::X86Pv)?;
            if body.len() < 8 {
                return Err(bad_len(name, body.len(), "shorter than the vCPU header"));
            }
            let vcpu_id = le_u32(body, 0);
            let res = le_u32(body, 4);
            if res != 0 {
                return Err(StreamError::ReservedBits {
                    what: "vCPU record header",
                    value: u64::from(res),
                });
            }
            let data = &body[8..];
            let kind = match rtype {
                rec::X86_PV_VCPU_BASIC => VcpuKind::Basic,
                rec::X86_PV_VCPU_EXTENDED => VcpuKind::Extended,
                rec::X86_PV_VCPU_XSAVE => VcpuKind::Xsave,
                _ => VcpuKind::Msrs,
            };
            // Empty blobs are tolerated (older senders produced them).
            if !data.is_empty() {
                if let Some(max) = ctx.max_vcpus {
                    if vcpu_id >= max {
                        return Err(StreamError::VcpuOutOfRange { vcpu: vcpu_id, max });
                    }
                }
                match kind {
                    VcpuKind::Basic
                        if ctx.guest_width == Some(8) && data.len() != VCPU_CONTEXT_X86_64_SIZE =>
                    {
                        return Err(bad_len(
                            name,
                            body.len(),
                            format!("64-bit context must be {VCPU_CONTEXT_X86_64_SIZE} bytes"),
                        ));
                    }
                    VcpuKind::Extended if data.len() > VCPU_EXTENDED_MAX => {
                        return Err(bad_len(name, body.len(), "blob over 128 bytes"));
                    }
                    VcpuKind::Xsave if data.len() < VCPU_XSAVE_MIN => {
                        return Err(bad_len(name, body.len(), "blob under 16 bytes"));
                    }
                    VcpuKind::Msrs if data.len() % 16 != 0 => {
                        return Err(bad_len(name, body.len(), "blob not a multiple of 16"));
                    }
                    _ => {}
                }
            }
            Record::X86PvVcpu(VcpuRecord {
                kind,
                vcpu_id,
                data: data.to_vec(),
            })
        }
        rec::SHARED_INFO => {
            need_domain(name, ctx, DomainType::X86Pv)?;
            if body.len() != PAGE_SIZE {
                return Err(bad_len(name, body.len(), "expected 4096 bytes"));
            }
            Record::SharedInfo(body.to_vec())
        }
        rec::X86_TSC_INFO => {
            if body.len() != 24 {
                return Err(bad_len(name, body.len(), "expected 24 bytes"));
            }
            let res = le_u32(body, 20);
            if res != 0 {
                return Err(StreamError::ReservedBits {
                    what: "X86_TSC_INFO",
                    value: u64::from(res),
                });
            }
            Record::X86TscInfo(X86TscInfo {
                mode: le_u32(body, 0),
                khz: le_u32(body, 4),
                nsec: le_u64(body, 8),
                incarnation: le_u32(body, 16),
            })
        }
        rec::HVM_CONTEXT => {
            need_domain(name, ctx, DomainType::X86Hvm)?;
            if body.is_empty() {
                return Err(bad_len(name, 0, "empty HVM context"));
            }
            Record::HvmContext(body.to_vec())
        }
        rec::HVM_PARAMS => {
            need_domain(name, ctx, DomainType::X86Hvm)?;
            if body.len() < 8 {
                return Err(bad_len(name, body.len(), "shorter than 8 bytes"));
            }
            let count = le_u32(body, 0);
            let res = le_u32(body, 4);
            if res != 0 {
                return Err(StreamError::ReservedBits {
                    what: "HVM_PARAMS",
                    value: u64::from(res),
                });
            }
            if (body.len() - 8) as u64 != u64::from(count) * 16 {
                return Err(bad_len(
                    name,
                    body.len(),
                    format!("count {count} needs {} bytes", 8 + u64::from(count) * 16),
                ));
            }
            Record::HvmParams(
                body[8..]
                    .chunks_exact(16)
                    .map(|c| HvmParam {
                        index: le_u64(c, 0),
                        value: le_u64(c, 8),
                    })
                    .collect(),
            )
        }
        rec::TOOLSTACK => return Err(StreamError::DeprecatedRecord(name)),
        rec::CHECKPOINT_DIRTY_PFN_LIST => {
            if body.len() % 8 != 0 {
                return Err(bad_len(name, body.len(), "not a multiple of 8"));
            }
            Record::CheckpointDirtyPfnList(body.chunks_exact(8).map(|c| le_u64(c, 0)).collect())
        }
        rec::X86_CPUID_POLICY => {
            if ctx.version < 3 {
                return Err(StreamError::NotInVersion {
                    name,
                    version: ctx.version,
                });
            }
            if body.is_empty() || body.len() % 24 != 0 {
                return Err(bad_len(
                    name,
                    body.len(),
                    "expected a non-zero multiple of 24",
                ));
            }
            Record::X86CpuidPolicy(
                body.chunks_exact(24)
                    .map(|c| CpuidLeaf {
                        leaf: le_u32(c, 0),
                        subleaf: le_u32(c, 4),
                        a: le_u32(c, 8),
                        b: le_u32(c, 12),
                        c: le_u32(c, 16),
                        d: le_u32(c, 20),
                    })
                    .collect(),
            )
        }
        rec::X86_MSR_POLICY => {
            if ctx.version < 3 {
                return Err(StreamError::NotInVersion {
                    name,
                    version: ctx.version,
                });
            }
            if body.is_empty() || body.len() % 16 != 0 {
                return Err(bad_len(
                    name,
                    body.len(),
                    "expected a non-zero multiple of 16",
                ));
            }
            Record::X86MsrPolicy(
                body.chunks_exact(16)
                    .map(|c| MsrEntry {
                        idx: le_u32(c, 0),
                        flags: le_u32(c, 4),
                        val: le_u64(c, 8),
                    })
                    .collect(),
            )
        }
        other => return Err(StreamError::UnknownMandatoryRecord(other)),
    })
}

fn parse_page_data(body: &[u8], ctx: &RecordContext) -> Result<PageData> {
    if body.len() < 8 {
        return Err(bad_len(
            "PAGE_DATA",
            body.len(),
            "shorter than the 8-byte header",
        ));
    }
    let count = le_u32(body, 0);
    let res = le_u32(body, 4);
    if count == 0 {
        return Err(StreamError::PageDataEmpty);
    }
    if res != 0 {
        return Err(StreamError::ReservedBits {
            what: "PAGE_DATA header",
            value: u64::from(res),
        });
    }
    let entries_end = 8u64 + u64::from(count) * 8;
    if (body.len() as u64) < entries_end {
        return Err(StreamError::PageDataLength {
            count,
            length: body.len() as u64,
            expected: entries_end,
        });
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut with_data = 0u64;
    for (index, c) in body[8..entries_end as usize].chunks_exact(8).enumerate() {
        let raw = le_u64(c, 0);
        if raw & PAGE_DATA_RESERVED_MASK != 0 {
            return Err(StreamError::ReservedBits {
                what: "PAGE_DATA entry",
                value: raw & PAGE_DATA_RESERVED_MASK,
            });
        }
        let bits = (raw >> PAGE_DATA_TYPE_SHIFT) as u8;
        let ptype =
            PageType::from_bits(bits).ok_or(StreamError::InvalidPageType { index, ptype: bits })?;
        let pfn = raw & PAGE_DATA_PFN_MASK;
        if let Some(max) = ctx.max_pfn {
            if pfn > max {
                return Err(StreamError::PfnTooLarge { index, pfn, max });
            }
        }
        if ptype.has_data() {
            with_data += 1;
        }
        entries.push(PageEntry { pfn, ptype });
    }
    let expected = entries_end + with_data * PAGE_SIZE as u64;
    if body.len() as u64 != expected {
        return Err(StreamError::PageDataLength {
            count,
            length: body.len() as u64,
            expected,
        });
    }
    Ok(PageData {
        entries,
        data: body[entries_end as usize..].to_vec(),
    })
}
