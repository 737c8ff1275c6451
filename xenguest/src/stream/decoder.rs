//! A push/pull decoder over byte buffers: feed it whatever bytes arrive
//! (from a file, a socket, a tokio task) and pull complete items.
//!
//! It never needs to look past the end of the current item, and
//! [`Decoder::needed`] says how many more bytes complete it, so a blocking
//! reader can read exactly that much and never over-read (the stream may be
//! followed by other data on the same connection).
//!
//! With tokio, for example:
//!
//! ```text
//! let mut dec = Decoder::new(DecoderOptions::default());
//! let mut buf = vec![0u8; 64 * 1024];
//! loop {
//!     while let Some(item) = dec.next_item()? { handle(item).await?; }
//!     if dec.is_done() { break; }
//!     let n = sock.read(&mut buf[..dec.needed().clamp(1, buf.len())]).await?;
//!     if n == 0 { dec.finish()?; }
//!     dec.feed(&buf[..n]);
//! }
//! ```
//!
//! Checkpointed (Remus/COLO) libxl streams are followed across their
//! hand-overs: a libxc CHECKPOINT returns to libxl records, and libxl's
//! CHECKPOINT_END resumes the libxc records.

use super::bytes::{le_u32, pad8};
use super::error::{Result, StreamError};
use super::libxc::{
    parse_record, rec, record_type_name, DomainHeader, DomainType, ImageHeader, Record,
    RecordContext, X86PvInfo, DHDR_SIZE, IHDR_SIZE, REC_LENGTH_MAX, RHDR_SIZE,
};
use super::libxl::{
    libxl_record_type_name, parse_libxl_record, LibxlHeader, LibxlRecord, LIBXL_HDR_SIZE,
};
use super::xl::{XlHeader, XL_HDR_SIZE, XL_MAGIC};

/// Which container the byte stream starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Detect from the first byte: 0xff libxc, 'L' libxl, 'X' xl save file.
    #[default]
    Auto,
    /// An `xl save` file: xl header, then a libxl stream.
    Xl,
    /// A libxl stream (header, records, the libxc stream inside).
    Libxl,
    /// A bare libxc stream.
    Libxc,
}

/// Decoder configuration.
#[derive(Debug, Clone, Copy)]
pub struct DecoderOptions {
    pub format: Format,
    /// Reject PAGE_DATA / P2M pfns above this.
    pub max_pfn: Option<u64>,
    /// Reject non-empty vCPU records with an id at or above this.
    pub max_vcpus: Option<u32>,
    /// Accept CHECKPOINT records (Remus/COLO streams).
    pub checkpointed: bool,
    /// Cap on libxl record bodies (emulator context can be large).
    pub max_libxl_record_len: u32,
    /// Cap on the xl header's optional data (the domain config).
    pub max_xl_optional_data: u32,
}

impl Default for DecoderOptions {
    fn default() -> Self {
        DecoderOptions {
            format: Format::Auto,
            max_pfn: None,
            max_vcpus: None,
            checkpointed: false,
            max_libxl_record_len: 256 << 20,
            max_xl_optional_data: 16 << 20,
        }
    }
}

impl DecoderOptions {
    pub fn with_format(format: Format) -> Self {
        DecoderOptions {
            format,
            ..Default::default()
        }
    }
}

/// One decoded unit of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    XlHeader(XlHeader),
    LibxlHeader(LibxlHeader),
    LibxlRecord(LibxlRecord),
    ImageHeader(ImageHeader),
    DomainHeader(DomainHeader),
    /// A libxc record.  For v2 streams the decoder inserts
    /// `Record::StaticDataEnd` where the reference infers it (before the
    /// first PAGE_DATA or X86_PV_P2M_FRAMES); see [`Decoder::inferred_static_data_end`].
    Record(Record),
}

/// Static data absent at STATIC_DATA_END (the reference's
/// `XGR_SDD_MISSING_*`): the restorer should apply defaults, e.g. the legacy
/// CPUID policy for v2 streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MissingStaticData {
    pub cpuid_policy: bool,
    pub msr_policy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Detect,
    XlHeader,
    LibxlHeader,
    LibxlRecord,
    ImageHeader,
    DomainHeader,
    LibxcRecord,
    Done,
    Failed,
}

/// The incremental decoder.  See the module documentation.
#[derive(Debug)]
pub struct Decoder {
    opts: DecoderOptions,
    state: State,
    buf: Vec<u8>,
    pos: usize,
    in_libxl: bool,
    /// A checkpointed libxl stream handed control back to libxl after a
    /// libxc CHECKPOINT; CHECKPOINT_END returns to the libxc records.
    libxc_suspended: bool,
    version: u32,
    domain_type: DomainType,
    pv_info: Option<X86PvInfo>,
    seen_static_data_end: bool,
    inferred_sde: bool,
    seen_cpuid: bool,
    seen_msr: bool,
    missing: Option<MissingStaticData>,
    consumed: u64,
}

impl Decoder {
    pub fn new(opts: DecoderOptions) -> Self {
        let state = match opts.format {
            Format::Auto => State::Detect,
            Format::Xl => State::XlHeader,
            Format::Libxl => State::LibxlHeader,
            Format::Libxc => State::ImageHeader,
        };
        Decoder {
            opts,
            state,
            buf: Vec::new(),
            pos: 0,
            in_libxl: false,
            libxc_suspended: false,
            version: 0,
            domain_type: DomainType::X86Pv,
            pv_info: None,
            seen_static_data_end: false,
            inferred_sde: false,
            seen_cpuid: false,
            seen_msr: false,
            missing: None,
            consumed: 0,
        }
    }

    /// Append received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    fn avail(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Bytes buffered but not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Total bytes consumed by decoded items.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// The final END has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// libxc stream version (0 before the image header).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Whether STATIC_DATA_END was inferred (v2 stream) rather than read.
    pub fn inferred_static_data_end(&self) -> bool {
        self.inferred_sde
    }

    /// Once STATIC_DATA_END has been decoded (or inferred): which static
    /// records were absent.
    pub fn missing_static_data(&self) -> Option<MissingStaticData> {
        self.missing
    }

    fn static_data_end(&mut self) {
        self.seen_static_data_end = true;
        self.missing = Some(MissingStaticData {
            cpuid_policy: !self.seen_cpuid,
            msr_policy: !self.seen_msr,
        });
    }

    /// Take the bytes buffered beyond the end of the stream.
    pub fn take_remaining(&mut self) -> Vec<u8> {
        let v = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        v
    }

    /// Hands over the buffer's memory (holding nothing undecoded: only
    /// once the stream is done), so that the caller decides when to free it.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.buf);
        b.clear();
        self.pos = 0;
        b
    }

    /// Size of the unit being decoded, as far as the buffered bytes tell.
    fn required(&self) -> usize {
        let a = self.avail();
        match self.state {
            State::Detect => 1,
            State::XlHeader => {
                if a.len() < XL_HDR_SIZE {
                    XL_HDR_SIZE
                } else {
                    let optlen = le_u32(a, 44);
                    if optlen > self.opts.max_xl_optional_data {
                        XL_HDR_SIZE
                    } else {
                        XL_HDR_SIZE + optlen as usize
                    }
                }
            }
            State::LibxlHeader => LIBXL_HDR_SIZE,
            State::ImageHeader => IHDR_SIZE,
            State::DomainHeader => DHDR_SIZE,
            State::LibxlRecord | State::LibxcRecord => {
                if a.len() < RHDR_SIZE {
                    RHDR_SIZE
                } else {
                    let len = le_u32(a, 4);
                    let cap = if self.state == State::LibxcRecord {
                        REC_LENGTH_MAX
                    } else {
                        self.opts.max_libxl_record_len
                    };
                    if len > cap {
                        RHDR_SIZE
                    } else {
                        RHDR_SIZE + pad8(len as usize)
                    }
                }
            }
            State::Done | State::Failed => 0,
        }
    }

    /// How many more bytes are needed before [`Decoder::next_item`] can make
    /// progress (0 if it can now, or the stream is over).
    pub fn needed(&self) -> usize {
        self.required().saturating_sub(self.buffered())
    }

    fn what(&self) -> &'static str {
        match self.state {
            State::Detect => "stream start",
            State::XlHeader => "xl header",
            State::LibxlHeader => "libxl header",
            State::LibxlRecord => "libxl record",
            State::ImageHeader => "image header",
            State::DomainHeader => "domain header",
            State::LibxcRecord => "libxc record",
            State::Done | State::Failed => "end of stream",
        }
    }

    /// Call at end of input: errors if the stream is incomplete or followed
    /// by extra bytes.
    pub fn finish(&self) -> Result<()> {
        match self.state {
            State::Done if self.buffered() == 0 => Ok(()),
            State::Done => Err(StreamError::TrailingData(self.buffered())),
            State::Failed => Err(StreamError::Sequence("decoder already failed")),
            _ => Err(StreamError::Truncated {
                what: self.what(),
                needed: self.needed().max(1),
            }),
        }
    }

    /// Decode the next item if enough bytes are buffered.  Returns
    /// `Ok(None)` when more input is needed or the stream is over.  After an
    /// error the decoder is unusable.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        if self.state == State::Failed {
            return Err(StreamError::Sequence("decoder already failed"));
        }
        match self.step() {
            Ok(v) => Ok(v),
            Err(e) => {
                self.state = State::Failed;
                Err(e)
            }
        }
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
        self.consumed += n as u64;
    }

    fn step(&mut self) -> Result<Option<Item>> {
        if self.state == State::Done || self.needed() > 0 {
            return Ok(None);
        }
        match self.state {
            State::Detect => {
                self.state = match self.avail()[0] {
                    0xff => State::ImageHeader,
                    b'L' => State::LibxlHeader,
                    b if b == XL_MAGIC[0] => State::XlHeader,
                    b => return Err(StreamError::UnknownFormat(b)),
                };
                self.step()
            }
            State::XlHeader => {
                let a = self.avail();
                let fixed: &[u8; XL_HDR_SIZE] = a[..XL_HDR_SIZE].try_into().expect("48 bytes");
                let (mandatory, _, optlen) = XlHeader::parse_fixed(fixed)?;
                if optlen > self.opts.max_xl_optional_data {
                    return Err(StreamError::XlOptionalDataTooLong {
                        length: optlen,
                        max: self.opts.max_xl_optional_data,
                    });
                }
                let total = XL_HDR_SIZE + optlen as usize;
                let hdr = XlHeader::parse(&a[..total])?;
                if !hdr.is_stream_v2() {
                    return Err(StreamError::XlLegacyStream);
                }
                debug_assert_eq!(hdr.mandatory_flags, mandatory);
                self.advance(total);
                self.state = State::LibxlHeader;
                Ok(Some(Item::XlHeader(hdr)))
            }
            State::LibxlHeader => {
                let h = LibxlHeader::parse(self.avail()[..LIBXL_HDR_SIZE].try_into().expect("16"))?;
                self.advance(LIBXL_HDR_SIZE);
                self.in_libxl = true;
                self.state = State::LibxlRecord;
                Ok(Some(Item::LibxlHeader(h)))
            }
            State::ImageHeader => {
                let h = ImageHeader::parse(self.avail()[..IHDR_SIZE].try_into().expect("24"))?;
                self.advance(IHDR_SIZE);
                self.version = h.version;
                self.seen_static_data_end = false;
                self.inferred_sde = false;
                self.seen_cpuid = false;
                self.seen_msr = false;
                self.missing = None;
                self.pv_info = None;
                self.state = State::DomainHeader;
                Ok(Some(Item::ImageHeader(h)))
            }
            State::DomainHeader => {
                let h = DomainHeader::parse(self.avail()[..DHDR_SIZE].try_into().expect("16"))?;
                self.advance(DHDR_SIZE);
                self.domain_type = h.domain_type;
                self.state = State::LibxcRecord;
                Ok(Some(Item::DomainHeader(h)))
            }
            State::LibxlRecord => {
                let (rtype, body, total) =
                    self.record_parts(self.opts.max_libxl_record_len, true)?;
                let r = parse_libxl_record(rtype, body)?;
                let next = match r {
                    LibxlRecord::End => State::Done,
                    LibxlRecord::LibxcContext if self.libxc_suspended => {
                        return Err(StreamError::Sequence(
                            "LIBXC_CONTEXT inside a checkpoint (expected CHECKPOINT_END)",
                        ))
                    }
                    LibxlRecord::LibxcContext => State::ImageHeader,
                    LibxlRecord::CheckpointEnd if self.libxc_suspended => {
                        self.libxc_suspended = false;
                        State::LibxcRecord
                    }
                    _ => State::LibxlRecord,
                };
                self.advance(total);
                self.state = next;
                Ok(Some(Item::LibxlRecord(r)))
            }
            State::LibxcRecord => {
                let rtype = le_u32(self.avail(), 0);
                // v2 compatibility: infer STATIC_DATA_END, as the reference does.
                if self.version < 3
                    && !self.seen_static_data_end
                    && matches!(rtype, rec::PAGE_DATA | rec::X86_PV_P2M_FRAMES)
                {
                    self.static_data_end();
                    self.inferred_sde = true;
                    return Ok(Some(Item::Record(Record::StaticDataEnd)));
                }
                let (rtype, body, total) = self.record_parts(REC_LENGTH_MAX, false)?;
                let ctx = RecordContext {
                    version: self.version,
                    domain_type: self.domain_type,
                    max_pfn: self.opts.max_pfn,
                    max_vcpus: self.opts.max_vcpus,
                    guest_width: self.pv_info.map(|i| i.guest_width),
                    checkpointed: self.opts.checkpointed,
                };
                let r = parse_record(rtype, body, &ctx)?;
                self.check_sequence(&r)?;
                self.advance(total);
                if r == Record::End {
                    self.state = if self.in_libxl {
                        State::LibxlRecord
                    } else {
                        State::Done
                    };
                } else if r == Record::Checkpoint && self.in_libxl {
                    // The libxc part of this checkpoint is over; libxl
                    // records follow up to CHECKPOINT_END.
                    self.libxc_suspended = true;
                    self.state = State::LibxlRecord;
                }
                Ok(Some(Item::Record(r)))
            }
            State::Done | State::Failed => Ok(None),
        }
    }

    /// Split the buffered record into (type, body, total size) after the
    /// length cap and padding checks.
    fn record_parts(&self, cap: u32, libxl: bool) -> Result<(u32, &[u8], usize)> {
        let a = self.avail();
        let rtype = le_u32(a, 0);
        let len = le_u32(a, 4);
        let name = if libxl {
            libxl_record_type_name(rtype)
        } else {
            record_type_name(rtype)
        };
        if len > cap {
            return Err(if libxl {
                StreamError::LibxlRecordTooLong {
                    rtype,
                    length: len,
                    max: cap,
                }
            } else {
                StreamError::RecordTooLong {
                    rtype,
                    name,
                    length: len,
                    max: cap,
                }
            });
        }
        let len = len as usize;
        let total = RHDR_SIZE + pad8(len);
        let body = &a[RHDR_SIZE..RHDR_SIZE + len];
        if a[RHDR_SIZE + len..total].iter().any(|&b| b != 0) {
            return Err(StreamError::NonZeroPadding { rtype, name });
        }
        Ok((rtype, body, total))
    }

    fn check_sequence(&mut self, r: &Record) -> Result<()> {
        let pv = self.domain_type == DomainType::X86Pv;
        match r {
            Record::StaticDataEnd => {
                if self.seen_static_data_end {
                    return Err(StreamError::Sequence("multiple STATIC_DATA_END records"));
                }
                if pv && self.pv_info.is_none() {
                    return Err(StreamError::Sequence("STATIC_DATA_END before X86_PV_INFO"));
                }
                self.static_data_end();
            }
            Record::PageData(_) | Record::X86PvP2mFrames(_) if !self.seen_static_data_end => {
                return Err(StreamError::Sequence("page data before STATIC_DATA_END"));
            }
            Record::X86PvInfo(i) => {
                if self.pv_info.is_some() {
                    return Err(StreamError::Sequence("multiple X86_PV_INFO records"));
                }
                if self.seen_static_data_end {
                    return Err(StreamError::Sequence("X86_PV_INFO after STATIC_DATA_END"));
                }
                self.pv_info = Some(*i);
            }
            Record::X86CpuidPolicy(_) | Record::X86MsrPolicy(_) if self.seen_static_data_end => {
                return Err(StreamError::Sequence("CPU policy after STATIC_DATA_END"));
            }
            Record::X86CpuidPolicy(_) => self.seen_cpuid = true,
            Record::X86MsrPolicy(_) => self.seen_msr = true,
            _ => {}
        }
        if pv
            && self.pv_info.is_none()
            && matches!(r, Record::X86PvP2mFrames(_) | Record::SharedInfo(_))
        {
            return Err(StreamError::Sequence("record needs X86_PV_INFO first"));
        }
        if let Record::End = r {
            if pv && self.pv_info.is_none() {
                return Err(StreamError::Sequence("PV stream without X86_PV_INFO"));
            }
        }
        Ok(())
    }
}
