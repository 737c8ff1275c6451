//! The libxl migration stream wrapper
//! (spec: `docs/specs/libxl-migration-stream.pandoc`).
//!
//! A 16-byte big-endian header, then little-endian records padded to 8 bytes.
//! A LIBXC_CONTEXT record (empty) is followed by a complete libxc stream.

use super::bytes::le_u32;
use super::error::{Result, StreamError};
use super::libxc::{encode_record_raw, REC_TYPE_OPTIONAL};

/// "LibxlFmt".
pub const LIBXL_IDENT: u64 = 0x4c69_6278_6c46_6d74;
pub const LIBXL_VERSION: u32 = 2;
pub const LIBXL_OPT_BIG_ENDIAN: u32 = 1 << 0;
/// The stream was converted from the legacy format.
pub const LIBXL_OPT_LEGACY: u32 = 1 << 1;
pub const LIBXL_HDR_SIZE: usize = 16;

/// libxl record type numbers.
pub mod librec {
    pub const END: u32 = 0;
    pub const LIBXC_CONTEXT: u32 = 1;
    pub const EMULATOR_XENSTORE_DATA: u32 = 2;
    pub const EMULATOR_CONTEXT: u32 = 3;
    pub const CHECKPOINT_END: u32 = 4;
    pub const CHECKPOINT_STATE: u32 = 5;
}

/// Name of a libxl record type.
pub fn libxl_record_type_name(rtype: u32) -> &'static str {
    match rtype {
        librec::END => "END",
        librec::LIBXC_CONTEXT => "LIBXC_CONTEXT",
        librec::EMULATOR_XENSTORE_DATA => "EMULATOR_XENSTORE_DATA",
        librec::EMULATOR_CONTEXT => "EMULATOR_CONTEXT",
        librec::CHECKPOINT_END => "CHECKPOINT_END",
        librec::CHECKPOINT_STATE => "CHECKPOINT_STATE",
        t if t & REC_TYPE_OPTIONAL != 0 => "(optional)",
        _ => "(unknown)",
    }
}

/// The libxl stream header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LibxlHeader {
    /// Bit 1: legacy-converted stream.  Bit 0 (big-endian) is rejected.
    pub options: u32,
}

impl LibxlHeader {
    pub fn to_bytes(&self) -> [u8; LIBXL_HDR_SIZE] {
        let mut b = [0u8; LIBXL_HDR_SIZE];
        b[0..8].copy_from_slice(&LIBXL_IDENT.to_be_bytes());
        b[8..12].copy_from_slice(&LIBXL_VERSION.to_be_bytes());
        b[12..16].copy_from_slice(&self.options.to_be_bytes());
        b
    }

    pub fn parse(b: &[u8; LIBXL_HDR_SIZE]) -> Result<Self> {
        let ident = u64::from_be_bytes(b[0..8].try_into().expect("8 bytes"));
        if ident != LIBXL_IDENT {
            return Err(StreamError::BadLibxlIdent(ident));
        }
        let version = u32::from_be_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != LIBXL_VERSION {
            return Err(StreamError::UnsupportedLibxlVersion(version));
        }
        let options = u32::from_be_bytes(b[12..16].try_into().expect("4 bytes"));
        if options & LIBXL_OPT_BIG_ENDIAN != 0 {
            return Err(StreamError::BigEndian);
        }
        let reserved = options & !(LIBXL_OPT_BIG_ENDIAN | LIBXL_OPT_LEGACY);
        if reserved != 0 {
            return Err(StreamError::ReservedBits {
                what: "libxl header options",
                value: u64::from(reserved),
            });
        }
        Ok(LibxlHeader { options })
    }

    pub fn is_legacy(&self) -> bool {
        self.options & LIBXL_OPT_LEGACY != 0
    }
}

/// Emulator id of the EMULATOR_* records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EmulatorId {
    Unknown,
    QemuTraditional,
    QemuUpstream,
}

impl EmulatorId {
    pub fn to_u32(self) -> u32 {
        match self {
            EmulatorId::Unknown => 0,
            EmulatorId::QemuTraditional => 1,
            EmulatorId::QemuUpstream => 2,
        }
    }
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(EmulatorId::Unknown),
            1 => Some(EmulatorId::QemuTraditional),
            2 => Some(EmulatorId::QemuUpstream),
            _ => None,
        }
    }
}

/// A decoded libxl record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibxlRecord {
    End,
    /// Empty; a libxc stream follows.
    LibxcContext,
    /// NUL-separated key/value pairs (see [`parse_xenstore_pairs`]).
    EmulatorXenstoreData {
        emulator: EmulatorId,
        index: u32,
        data: Vec<u8>,
    },
    /// The emulator's saved state, opaque.
    EmulatorContext {
        emulator: EmulatorId,
        index: u32,
        data: Vec<u8>,
    },
    CheckpointEnd,
    CheckpointState(u32),
    /// A record with the optional bit set.
    Optional {
        rtype: u32,
        body: Vec<u8>,
    },
}

impl LibxlRecord {
    pub fn rtype(&self) -> u32 {
        match self {
            LibxlRecord::End => librec::END,
            LibxlRecord::LibxcContext => librec::LIBXC_CONTEXT,
            LibxlRecord::EmulatorXenstoreData { .. } => librec::EMULATOR_XENSTORE_DATA,
            LibxlRecord::EmulatorContext { .. } => librec::EMULATOR_CONTEXT,
            LibxlRecord::CheckpointEnd => librec::CHECKPOINT_END,
            LibxlRecord::CheckpointState(_) => librec::CHECKPOINT_STATE,
            LibxlRecord::Optional { rtype, .. } => *rtype,
        }
    }

    pub fn name(&self) -> &'static str {
        libxl_record_type_name(self.rtype())
    }

    pub fn encode_body(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            LibxlRecord::End | LibxlRecord::LibxcContext | LibxlRecord::CheckpointEnd => {}
            LibxlRecord::EmulatorXenstoreData {
                emulator,
                index,
                data,
            }
            | LibxlRecord::EmulatorContext {
                emulator,
                index,
                data,
            } => {
                b.extend_from_slice(&emulator.to_u32().to_le_bytes());
                b.extend_from_slice(&index.to_le_bytes());
                b.extend_from_slice(data);
            }
            LibxlRecord::CheckpointState(id) => b.extend_from_slice(&id.to_le_bytes()),
            LibxlRecord::Optional { body, .. } => b.extend_from_slice(body),
        }
        b
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record_raw(self.rtype(), &self.encode_body(), out);
    }
}

fn need_empty(rtype: u32, body: &[u8]) -> Result<()> {
    if body.is_empty() {
        Ok(())
    } else {
        Err(StreamError::BadRecordLength {
            name: libxl_record_type_name(rtype),
            length: body.len() as u32,
            reason: "expected an empty body".into(),
        })
    }
}

fn emulator_header(rtype: u32, body: &[u8]) -> Result<(EmulatorId, u32)> {
    if body.len() < 8 {
        return Err(StreamError::BadRecordLength {
            name: libxl_record_type_name(rtype),
            length: body.len() as u32,
            reason: "shorter than the 8-byte emulator header".into(),
        });
    }
    let id = le_u32(body, 0);
    let emulator = EmulatorId::from_u32(id).ok_or(StreamError::UnknownEmulator(id))?;
    Ok((emulator, le_u32(body, 4)))
}

/// Parse and validate one libxl record body.
pub fn parse_libxl_record(rtype: u32, body: &[u8]) -> Result<LibxlRecord> {
    if rtype & REC_TYPE_OPTIONAL != 0 {
        return Ok(LibxlRecord::Optional {
            rtype,
            body: body.to_vec(),
        });
    }
    Ok(match rtype {
        librec::END => {
            need_empty(rtype, body)?;
            LibxlRecord::End
        }
        librec::LIBXC_CONTEXT => {
            need_empty(rtype, body)?;
            LibxlRecord::LibxcContext
        }
        librec::CHECKPOINT_END => {
            need_empty(rtype, body)?;
            LibxlRecord::CheckpointEnd
        }
        librec::EMULATOR_XENSTORE_DATA => {
            let (emulator, index) = emulator_header(rtype, body)?;
            let data = &body[8..];
            parse_xenstore_pairs(data)?;
            LibxlRecord::EmulatorXenstoreData {
                emulator,
                index,
                data: data.to_vec(),
            }
        }
        librec::EMULATOR_CONTEXT => {
            let (emulator, index) = emulator_header(rtype, body)?;
            LibxlRecord::EmulatorContext {
                emulator,
                index,
                data: body[8..].to_vec(),
            }
        }
        librec::CHECKPOINT_STATE => {
            if body.len() != 4 {
                return Err(StreamError::BadRecordLength {
                    name: "CHECKPOINT_STATE",
                    length: body.len() as u32,
                    reason: "expected 4 bytes".into(),
                });
            }
            LibxlRecord::CheckpointState(le_u32(body, 0))
        }
        other => return Err(StreamError::UnknownMandatoryLibxlRecord(other)),
    })
}

/// Split EMULATOR_XENSTORE_DATA payload into (key, value) pairs: a sequence
/// of NUL-terminated strings, key then value.
pub fn parse_xenstore_pairs(data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    if data.last() != Some(&0) {
        return Err(StreamError::BadXenstoreData("not NUL terminated"));
    }
    let parts: Vec<&[u8]> = data[..data.len() - 1].split(|&c| c == 0).collect();
    if parts.len() % 2 != 0 {
        return Err(StreamError::BadXenstoreData("odd number of strings"));
    }
    Ok(parts
        .chunks_exact(2)
        .map(|kv| (kv[0].to_vec(), kv[1].to_vec()))
        .collect())
}

/// Encode (key, value) pairs for EMULATOR_XENSTORE_DATA.
pub fn encode_xenstore_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        out.extend_from_slice(k.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}
