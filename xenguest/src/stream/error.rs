//! Typed errors for stream decoding, encoding and page-table conversion.

use std::io;

use thiserror::Error;

/// Everything that can go wrong while reading or writing a migration stream.
#[derive(Debug, Error)]
pub enum StreamError {
    /// An I/O error from the underlying reader or writer.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// The stream ended before a complete item had been read.
    #[error("stream truncated while reading {what}: needed {needed} more bytes")]
    Truncated { what: &'static str, needed: usize },

    /// Bytes follow the end of the stream (only reported by
    /// [`crate::stream::Decoder::finish`]).
    #[error("{0} bytes of trailing data after the end of the stream")]
    TrailingData(usize),

    /// Format auto-detection: the first byte starts none of the formats.
    #[error("unknown stream format (first byte {0:#04x})")]
    UnknownFormat(u8),

    // ---- libxc image / domain header ----
    #[error("bad image header marker {0:#018x} (expected all ones)")]
    BadMarker(u64),
    #[error("bad image header id {0:#010x} (expected 0x58454e46 \"XENF\")")]
    BadId(u32),
    #[error("unsupported libxc stream version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("big-endian streams are not supported")]
    BigEndian,
    #[error("reserved bits set in {what}: {value:#x}")]
    ReservedBits { what: &'static str, value: u64 },
    #[error("unknown domain type {0:#x}")]
    UnknownDomainType(u32),
    #[error("unsupported page shift {0} (expected 12)")]
    BadPageShift(u16),

    // ---- libxc records ----
    #[error("unknown mandatory record type {0:#010x}")]
    UnknownMandatoryRecord(u32),
    #[error("record {name} ({rtype:#x}) length {length} exceeds the maximum {max}")]
    RecordTooLong {
        rtype: u32,
        name: &'static str,
        length: u32,
        max: u32,
    },
    #[error("non-zero padding after record {name} ({rtype:#x})")]
    NonZeroPadding { rtype: u32, name: &'static str },
    #[error("record {name} has a bad length {length}: {reason}")]
    BadRecordLength {
        name: &'static str,
        length: u32,
        reason: String,
    },
    #[error("PAGE_DATA record with a count of 0")]
    PageDataEmpty,
    #[error(
        "PAGE_DATA record length {length} inconsistent with count {count}: expected {expected}"
    )]
    PageDataLength {
        count: u32,
        length: u64,
        expected: u64,
    },
    #[error("pfn {pfn:#x} (index {index}) beyond the domain maximum {max:#x}")]
    PfnTooLarge { index: usize, pfn: u64, max: u64 },
    #[error("invalid page type {ptype:#x} for PAGE_DATA entry {index}")]
    InvalidPageType { index: usize, ptype: u8 },
    #[error("invalid X86_PV_INFO: guest width {width}, page-table levels {levels}")]
    InvalidPvInfo { width: u8, levels: u8 },
    #[error("X86_PV_P2M_FRAMES end pfn {end:#x} is below start pfn {start:#x}")]
    P2mFramesRange { start: u32, end: u32 },
    #[error("vCPU id {vcpu} out of range (maximum {max})")]
    VcpuOutOfRange { vcpu: u32, max: u32 },
    #[error("record {0} is deprecated and not accepted")]
    DeprecatedRecord(&'static str),
    #[error("record {name} not valid in a {domain} stream")]
    WrongDomainType {
        name: &'static str,
        domain: &'static str,
    },
    #[error("record {name} not valid in a v{version} stream")]
    NotInVersion { name: &'static str, version: u32 },
    #[error("CHECKPOINT record in a non-checkpointed stream")]
    CheckpointInPlainStream,
    #[error("stream order violation: {0}")]
    Sequence(&'static str),

    // ---- libxl ----
    #[error("bad libxl stream ident {0:#018x} (expected \"LibxlFmt\")")]
    BadLibxlIdent(u64),
    #[error("unsupported libxl stream version {0} (expected 2)")]
    UnsupportedLibxlVersion(u32),
    #[error("libxl record {rtype:#x} length {length} exceeds the maximum {max}")]
    LibxlRecordTooLong { rtype: u32, length: u32, max: u32 },
    #[error("unknown mandatory libxl record type {0:#010x}")]
    UnknownMandatoryLibxlRecord(u32),
    #[error("unknown emulator id {0:#x}")]
    UnknownEmulator(u32),
    #[error("malformed emulator xenstore data: {0}")]
    BadXenstoreData(&'static str),

    // ---- xl save file header ----
    #[error("not an xl save file (bad magic)")]
    BadXlMagic,
    #[error("xl save file has foreign byte order {0:#010x}")]
    XlByteOrder(u32),
    #[error("xl save file has unsupported mandatory flags {0:#x}")]
    XlUnsupportedFlags(u32),
    #[error("xl save file is in the legacy (pre-v2) stream format")]
    XlLegacyStream,
    #[error("xl save file optional data length {length} exceeds the maximum {max}")]
    XlOptionalDataTooLong { length: u32, max: u32 },
    #[error("xl save file optional data malformed: {0}")]
    XlOptionalData(&'static str),

    // ---- writer side ----
    #[error("refusing to write an invalid record: {0}")]
    InvalidRecord(String),
}

/// Result alias for stream operations.
pub type Result<T, E = StreamError> = std::result::Result<T, E>;
