//! The xenstored wire format: a 16-byte little-endian header
//! `{type, req_id, tx_id, len}` followed by `len` (<= 4096) payload bytes.

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};

/// Largest payload xenstored accepts or sends.
pub const PAYLOAD_MAX: usize = 4096;

/// Message types (`XS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum Op {
    Directory = 1,
    Read = 2,
    GetPerms = 3,
    Watch = 4,
    Unwatch = 5,
    TransactionStart = 6,
    TransactionEnd = 7,
    Introduce = 8,
    Release = 9,
    GetDomainPath = 10,
    Write = 11,
    Mkdir = 12,
    Rm = 13,
    SetPerms = 14,
    WatchEvent = 15,
    Error = 16,
    IsDomainIntroduced = 17,
    Resume = 18,
    SetTarget = 19,
    ResetWatches = 21,
    DirectoryPart = 22,
}

impl Op {
    /// Decodes a message type.
    pub fn from_u32(v: u32) -> Option<Op> {
        use Op::*;
        Some(match v {
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            _ => return None,
        })
    }

    /// The protocol name (`XS_READ`...), used in error messages.
    pub fn name(self) -> &'static str {
        use Op::*;
        match self {
            Directory => "XS_DIRECTORY",
            Read => "XS_READ",
            GetPerms => "XS_GET_PERMS",
            Watch => "XS_WATCH",
            Unwatch => "XS_UNWATCH",
            TransactionStart => "XS_TRANSACTION_START",
            TransactionEnd => "XS_TRANSACTION_END",
            Introduce => "XS_INTRODUCE",
            Release => "XS_RELEASE",
            GetDomainPath => "XS_GET_DOMAIN_PATH",
            Write => "XS_WRITE",
            Mkdir => "XS_MKDIR",
            Rm => "XS_RM",
            SetPerms => "XS_SET_PERMS",
            WatchEvent => "XS_WATCH_EVENT",
            Error => "XS_ERROR",
            IsDomainIntroduced => "XS_IS_DOMAIN_INTRODUCED",
            Resume => "XS_RESUME",
            SetTarget => "XS_SET_TARGET",
            ResetWatches => "XS_RESET_WATCHES",
            DirectoryPart => "XS_DIRECTORY_PART",
        }
    }
}

/// One framed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// Raw message type (kept raw so unknown types can be reported).
    pub ty: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 outside transactions.
    pub tx_id: u32,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Msg {
    /// A message of a known type.
    pub fn new(op: Op, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Self {
        Msg {
            ty: op as u32,
            req_id,
            tx_id,
            payload,
        }
    }

    /// Header plus payload, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.payload.len());
        for w in [self.ty, self.req_id, self.tx_id, self.payload.len() as u32] {
            v.extend_from_slice(&w.to_le_bytes());
        }
        v.extend_from_slice(&self.payload);
        v
    }

    /// Reads one message; `Ok(None)` on a clean EOF between messages.
    pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Msg>> {
        let mut h = [0u8; 16];
        match r.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(Error::Io(e)),
        }
        let w = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let len = w(12) as usize;
        if len > PAYLOAD_MAX {
            return Err(Error::Protocol(format!(
                "payload of {len} bytes exceeds {PAYLOAD_MAX}"
            )));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await.map_err(Error::Io)?;
        Ok(Some(Msg {
            ty: w(0),
            req_id: w(4),
            tx_id: w(8),
            payload,
        }))
    }
}

/// Joins strings as NUL-terminated fields (`a\0b\0`).
pub fn nul_fields(fields: &[&[u8]]) -> Vec<u8> {
    let mut v = Vec::new();
    for f in fields {
        v.extend_from_slice(f);
        v.push(0);
    }
    v
}

/// Splits a payload of NUL-terminated fields; a trailing NUL is optional.
pub fn split_fields(p: &[u8]) -> Vec<String> {
    let p = p.strip_suffix(&[0]).unwrap_or(p);
    if p.is_empty() {
        return Vec::new();
    }
    p.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip() {
        let m = Msg::new(Op::Write, 7, 3, b"/a\0hello".to_vec());
        let bytes = m.encode();
        assert_eq!(&bytes[..4], &11u32.to_le_bytes());
        assert_eq!(&bytes[12..16], &8u32.to_le_bytes());
        let mut r = &bytes[..];
        assert_eq!(Msg::read(&mut r).await.unwrap(), Some(m));
        assert_eq!(Msg::read(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn oversize_is_rejected() {
        let mut bytes = Msg::new(Op::Read, 1, 0, vec![]).encode();
        bytes[12..16].copy_from_slice(&5000u32.to_le_bytes());
        let mut r = &bytes[..];
        assert!(matches!(Msg::read(&mut r).await, Err(Error::Protocol(_))));
    }

    #[test]
    fn fields() {
        assert_eq!(nul_fields(&[b"a", b"bc"]), b"a\0bc\0");
        assert_eq!(split_fields(b"a\0bc\0"), vec!["a", "bc"]);
        assert_eq!(split_fields(b""), Vec::<String>::new());
        assert_eq!(split_fields(b"x"), vec!["x"]);
        for v in 1..=22 {
            if let Some(op) = Op::from_u32(v) {
                assert_eq!(op as u32, v);
            }
        }
    }
}
