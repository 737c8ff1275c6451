//! `ForeignMemory`: mapping guest frames into dom0 (libxenforeignmemory).

use std::ptr::NonNull;

use xenctrl_sys as sys;

use crate::error::{Errno, Error, Result};
use crate::types::DomId;

/// Size of a guest page.
pub const PAGE_SIZE: usize = 4096;

/// An open libxenforeignmemory handle; closed on drop.
pub struct ForeignMemory {
    h: NonNull<sys::xenforeignmemory_handle>,
}

// SAFETY: the handle is an fd plus bookkeeping; usable from any one thread.
unsafe impl Send for ForeignMemory {}

/// Page protection for a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prot {
    /// Read only.
    Read,
    /// Read and write.
    ReadWrite,
}

impl ForeignMemory {
    /// Opens `/dev/xen/privcmd` for foreign mappings.
    pub fn open() -> Result<Self> {
        // SAFETY: null logger = library default.
        let p = unsafe { sys::xenforeignmemory_open(std::ptr::null_mut(), 0) };
        NonNull::new(p)
            .map(|h| ForeignMemory { h })
            .ok_or_else(|| Error::last("xenforeignmemory_open", ""))
    }

    /// Maps the given guest frames contiguously: gfns for HVM guests, but
    /// machine frames (mfns) for PV guests, which are not translated.
    ///
    /// Fails if any single page fails to map, naming the first bad frame.
    pub fn map(&self, domid: DomId, prot: Prot, frames: &[u64]) -> Result<Mapping<'_>> {
        let (mapping, err) = self.map_raw(domid, prot, frames)?;
        if let Some((i, e)) = err.iter().enumerate().find(|(_, &e)| e != 0) {
            // Per-page errors are negative errno values; dropping unmaps.
            return Err(Error::Xen {
                op: "xenforeignmemory_map",
                context: format!("domid {domid} gfn {:#x}", frames[i]),
                errno: Errno(e.abs()),
            });
        }
        Ok(mapping)
    }

    /// Maps a batch of frames (as [`ForeignMemory::map`]) but reports
    /// failures per page instead of failing the whole batch, as a save does
    /// for a batch of up to 1024 pages. Fails only if the call as a whole
    /// fails (e.g. no such domain).
    pub fn map_batch(&self, domid: DomId, prot: Prot, frames: &[u64]) -> Result<BatchMapping<'_>> {
        let (map, errors) = self.map_raw(domid, prot, frames)?;
        Ok(BatchMapping {
            map,
            errors,
            frames: frames.to_vec(),
            domid,
        })
    }

    fn map_raw(&self, domid: DomId, prot: Prot, frames: &[u64]) -> Result<(Mapping<'_>, Vec<i32>)> {
        if frames.is_empty() {
            return Err(Error::Invalid {
                op: "xenforeignmemory_map",
                reason: "no frames".into(),
            });
        }
        let prot_bits = match prot {
            Prot::Read => libc::PROT_READ,
            Prot::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        };
        let arr: Vec<sys::xen_pfn_t> = frames.iter().map(|&f| f as sys::xen_pfn_t).collect();
        let mut err = vec![0i32; frames.len()];
        // SAFETY: arr and err both have frames.len() entries.
        let p = unsafe {
            sys::xenforeignmemory_map(
                self.h.as_ptr(),
                domid,
                prot_bits,
                frames.len(),
                arr.as_ptr(),
                err.as_mut_ptr(),
            )
        };
        let Some(addr) = NonNull::new(p) else {
            return Err(Error::last(
                "xenforeignmemory_map",
                format!("domid {domid}, {} frames", frames.len()),
            ));
        };
        Ok((
            Mapping {
                fm: self,
                addr,
                pages: frames.len(),
            },
            err,
        ))
    }
}

/// A batch mapping with per-page results; pages that failed to map cannot
/// be read or written (they would fault). Unmapped on drop.
pub struct BatchMapping<'a> {
    map: Mapping<'a>,
    errors: Vec<i32>,
    frames: Vec<u64>,
    domid: DomId,
}

impl BatchMapping<'_> {
    /// Number of pages in the batch.
    pub fn pages(&self) -> usize {
        self.frames.len()
    }

    /// The errno page `i` failed with, or None if it is mapped.
    pub fn error(&self, i: usize) -> Option<Errno> {
        self.errors
            .get(i)
            .and_then(|&e| (e != 0).then_some(Errno(e.abs())))
    }

    /// Indices of the pages that failed to map.
    pub fn failed(&self) -> Vec<usize> {
        (0..self.pages())
            .filter(|&i| self.error(i).is_some())
            .collect()
    }

    fn check(&self, i: usize) -> Result<()> {
        if i >= self.pages() {
            return Err(Error::Invalid {
                op: "foreign mapping access",
                reason: format!("page {i} of a {}-page batch", self.pages()),
            });
        }
        match self.error(i) {
            None => Ok(()),
            Some(errno) => Err(Error::Xen {
                op: "xenforeignmemory_map",
                context: format!("domid {} gfn {:#x}", self.domid, self.frames[i]),
                errno,
            }),
        }
    }

    /// Copies page `i` out (4096 bytes); an error if that page failed.
    pub fn read_page(&self, i: usize, buf: &mut [u8; PAGE_SIZE]) -> Result<()> {
        self.check(i)?;
        self.map.read(i * PAGE_SIZE, buf)
    }

    /// Overwrites page `i` (needs `Prot::ReadWrite`); an error if it failed.
    pub fn write_page(&mut self, i: usize, data: &[u8; PAGE_SIZE]) -> Result<()> {
        self.check(i)?;
        self.map.write(i * PAGE_SIZE, data)
    }
}

impl Drop for ForeignMemory {
    fn drop(&mut self) {
        // SAFETY: opened once, closed once; Mappings borrow self so are gone.
        unsafe { sys::xenforeignmemory_close(self.h.as_ptr()) };
    }
}

/// Guest pages mapped into our address space; unmapped on drop.
///
/// Access goes through copies because the guest may change the memory at
/// any time, so handing out `&[u8]` would be unsound.
pub struct Mapping<'a> {
    fm: &'a ForeignMemory,
    addr: NonNull<libc::c_void>,
    pages: usize,
}

impl Mapping<'_> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Always false: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Copies `buf.len()` bytes from `offset` out of the mapping.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        self.bounds("read", offset, buf.len())?;
        // SAFETY: bounds checked; volatile-free copy of racy guest memory is
        // what every toolstack does (bytes, no invariants).
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.addr.as_ptr() as *const u8).add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    /// Copies `data` into the mapping at `offset` (needs `Prot::ReadWrite`).
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        self.bounds("write", offset, data.len())?;
        // SAFETY: bounds checked; the mapping is ours.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                (self.addr.as_ptr() as *mut u8).add(offset),
                data.len(),
            )
        };
        Ok(())
    }

    /// Raw address, for code that must hand the mapping to C.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr() as *mut u8
    }

    fn bounds(&self, what: &str, offset: usize, len: usize) -> Result<()> {
        if offset.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(Error::Invalid {
                op: "foreign mapping access",
                reason: format!(
                    "{what} of {len} bytes at {offset} beyond {} bytes",
                    self.len()
                ),
            });
        }
        Ok(())
    }
}

impl Drop for Mapping<'_> {
    fn drop(&mut self) {
        // SAFETY: addr/pages came from xenforeignmemory_map on this handle.
        unsafe { sys::xenforeignmemory_unmap(self.fm.h.as_ptr(), self.addr.as_ptr(), self.pages) };
    }
}
