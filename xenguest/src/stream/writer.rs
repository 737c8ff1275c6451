//! Writing streams to any `std::io::Write`.
//!
//! The writer encodes what it is given, refusing records that the decoder
//! would reject on their own (e.g. PAGE_DATA with no entries); putting the
//! records in a valid order is the caller's job (see the reference order in
//! the module docs of [`super`]).

use std::io::Write;

use super::error::Result;
use super::libxc::{
    rec, DomainHeader, ImageHeader, PageData, PageEntry, Record, PAGE_SIZE, REC_LENGTH_MAX,
};
use super::libxl::{LibxlHeader, LibxlRecord};
use super::xl::XlHeader;
use super::StreamError;

/// A thin encoder over a byte sink.
#[derive(Debug)]
pub struct StreamWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> StreamWriter<W> {
    pub fn new(inner: W) -> Self {
        StreamWriter { inner, written: 0 }
    }

    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.inner.write_all(b)?;
        self.written += b.len() as u64;
        Ok(())
    }

    /// Write bytes as they are (e.g. a header encoded by the caller).
    pub fn write_raw(&mut self, b: &[u8]) -> Result<()> {
        self.put(b)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn write_xl_header(&mut self, h: &XlHeader) -> Result<()> {
        self.put(&h.to_bytes())
    }

    pub fn write_libxl_header(&mut self, h: &LibxlHeader) -> Result<()> {
        self.put(&h.to_bytes())
    }

    pub fn write_libxl_record(&mut self, r: &LibxlRecord) -> Result<()> {
        let mut b = Vec::new();
        r.encode(&mut b);
        self.put(&b)
    }

    /// Image header then domain header.
    pub fn write_libxc_headers(&mut self, ih: &ImageHeader, dh: &DomainHeader) -> Result<()> {
        self.put(&ih.to_bytes())?;
        self.put(&dh.to_bytes())
    }

    pub fn write_record(&mut self, r: &Record) -> Result<()> {
        if let Record::PageData(p) = r {
            return self.write_page_data(&p.entries, &p.data);
        }
        let mut b = Vec::new();
        r.encode(&mut b)?;
        self.put(&b)
    }

    /// Write a PAGE_DATA record from borrowed parts, without building a
    /// [`PageData`]; `pages` holds one page per entry whose type carries data.
    pub fn write_page_data(&mut self, entries: &[PageEntry], pages: &[u8]) -> Result<()> {
        let with_data = entries.iter().filter(|e| e.ptype.has_data()).count();
        if entries.is_empty() || pages.len() != with_data * PAGE_SIZE {
            // Let PageData::check produce the precise error.
            PageData {
                entries: entries.to_vec(),
                data: pages.to_vec(),
            }
            .check()?;
        }
        let len = 8 + entries.len() * 8 + pages.len();
        if len > REC_LENGTH_MAX as usize {
            return Err(StreamError::InvalidRecord(format!(
                "PAGE_DATA of {len} bytes exceeds the record length cap"
            )));
        }
        let mut head = Vec::with_capacity(16 + entries.len() * 8);
        head.extend_from_slice(&rec::PAGE_DATA.to_le_bytes());
        head.extend_from_slice(&(len as u32).to_le_bytes());
        head.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        for e in entries {
            if e.pfn & !super::libxc::PAGE_DATA_PFN_MASK != 0 {
                return Err(StreamError::InvalidRecord(format!(
                    "pfn {:#x} does not fit in 52 bits",
                    e.pfn
                )));
            }
            head.extend_from_slice(&e.to_u64().to_le_bytes());
        }
        self.put(&head)?;
        self.put(pages)
        // len is a multiple of 8 already: no padding.
    }

    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush()?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}
