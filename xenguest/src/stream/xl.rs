//! The `xl save` file header (tools/xl/xl_saverestore.c, xl_vmcontrol.c).
//!
//! 32 bytes of magic, then four u32 in the saving host's byte order
//! (little-endian on x86): byte order marker 0x01020304, mandatory flags,
//! optional flags, optional data length; then the optional data: a u32
//! config length and the config (JSON, NUL-terminated, when the JSON flag is
//! set).  The libxl stream follows.

use super::bytes::le_u32;
use super::error::{Result, StreamError};

pub const XL_MAGIC: &[u8; 32] = b"Xen saved domain, xl format\n \0 \r";
pub const XL_BYTEORDER: u32 = 0x0102_0304;
/// The config is JSON.
pub const XL_MANDATORY_FLAG_JSON: u32 = 1 << 0;
/// The stream is libxl migration v2 (otherwise: the legacy format).
pub const XL_MANDATORY_FLAG_STREAMV2: u32 = 1 << 1;
pub const XL_MANDATORY_FLAG_ALL: u32 = XL_MANDATORY_FLAG_JSON | XL_MANDATORY_FLAG_STREAMV2;
/// Size of the fixed part.
pub const XL_HDR_SIZE: usize = 48;

/// The xl save file header with its optional data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XlHeader {
    pub mandatory_flags: u32,
    pub optional_flags: u32,
    /// The domain configuration as stored (JSON includes its trailing NUL).
    pub config: Option<Vec<u8>>,
    /// Optional data after the config, which xl ignores.
    pub extra_optional_data: Vec<u8>,
}

impl XlHeader {
    /// A header as `xl save` writes it: JSON config, libxl v2 stream.
    pub fn with_json_config(json: &str) -> Self {
        let mut config = json.as_bytes().to_vec();
        config.push(0);
        XlHeader {
            mandatory_flags: XL_MANDATORY_FLAG_JSON | XL_MANDATORY_FLAG_STREAMV2,
            optional_flags: 0,
            config: Some(config),
            extra_optional_data: Vec::new(),
        }
    }

    /// The config as text, without the trailing NUL.
    pub fn config_str(&self) -> Option<&str> {
        let c = self.config.as_deref()?;
        let c = c.strip_suffix(&[0]).unwrap_or(c);
        std::str::from_utf8(c).ok()
    }

    pub fn is_json(&self) -> bool {
        self.mandatory_flags & XL_MANDATORY_FLAG_JSON != 0
    }

    pub fn is_stream_v2(&self) -> bool {
        self.mandatory_flags & XL_MANDATORY_FLAG_STREAMV2 != 0
    }

    fn optional_data(&self) -> Vec<u8> {
        let mut d = Vec::new();
        if let Some(c) = &self.config {
            d.extend_from_slice(&(c.len() as u32).to_le_bytes());
            d.extend_from_slice(c);
        }
        d.extend_from_slice(&self.extra_optional_data);
        d
    }

    /// Encode the header and its optional data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let opt = self.optional_data();
        let mut b = Vec::with_capacity(XL_HDR_SIZE + opt.len());
        b.extend_from_slice(XL_MAGIC);
        b.extend_from_slice(&XL_BYTEORDER.to_le_bytes());
        b.extend_from_slice(&self.mandatory_flags.to_le_bytes());
        b.extend_from_slice(&self.optional_flags.to_le_bytes());
        b.extend_from_slice(&(opt.len() as u32).to_le_bytes());
        b.extend_from_slice(&opt);
        b
    }

    /// Validate the fixed 48-byte part; returns the optional data length.
    pub fn parse_fixed(b: &[u8; XL_HDR_SIZE]) -> Result<(u32, u32, u32)> {
        if &b[..32] != XL_MAGIC {
            return Err(StreamError::BadXlMagic);
        }
        let order = le_u32(b, 32);
        if order != XL_BYTEORDER {
            return Err(StreamError::XlByteOrder(order));
        }
        let mandatory = le_u32(b, 36);
        let bad = mandatory & !XL_MANDATORY_FLAG_ALL;
        if bad != 0 {
            return Err(StreamError::XlUnsupportedFlags(bad));
        }
        Ok((mandatory, le_u32(b, 40), le_u32(b, 44)))
    }

    /// Parse the whole header from `b` (fixed part plus all optional data).
    pub fn parse(b: &[u8]) -> Result<Self> {
        let fixed: &[u8; XL_HDR_SIZE] = b
            .get(..XL_HDR_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(StreamError::Truncated {
                what: "xl header",
                needed: XL_HDR_SIZE.saturating_sub(b.len()),
            })?;
        let (mandatory_flags, optional_flags, optlen) = Self::parse_fixed(fixed)?;
        let opt = b
            .get(XL_HDR_SIZE..XL_HDR_SIZE + optlen as usize)
            .ok_or_else(|| StreamError::Truncated {
                what: "xl optional data",
                needed: (XL_HDR_SIZE + optlen as usize).saturating_sub(b.len()),
            })?;
        let (config, extra) = if opt.is_empty() {
            (None, Vec::new())
        } else {
            if opt.len() < 4 {
                return Err(StreamError::XlOptionalData("no room for the config length"));
            }
            let clen = le_u32(opt, 0) as usize;
            let c = opt.get(4..4 + clen).ok_or(StreamError::XlOptionalData(
                "config longer than the optional data",
            ))?;
            (Some(c.to_vec()), opt[4 + clen..].to_vec())
        };
        Ok(XlHeader {
            mandatory_flags,
            optional_flags,
            config,
            extra_optional_data: extra,
        })
    }
}
