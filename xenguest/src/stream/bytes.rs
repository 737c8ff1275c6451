//! Little helpers for fixed-offset little-endian fields.
//!
//! Callers guarantee the slice is long enough (they check lengths first).

pub(crate) fn le_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

pub(crate) fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

pub(crate) fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Round up to the 8-byte record alignment.
pub(crate) fn pad8(n: usize) -> usize {
    (n + 7) & !7
}
