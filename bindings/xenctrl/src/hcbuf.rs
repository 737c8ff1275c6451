//! Hypercall-safe memory for domctls that carry a guest handle.

use xenctrl_sys as sys;

use crate::ctrl::XenCtrl;
use crate::error::{Error, Result};

/// Page-granular memory from libxenctrl's hypercall allocator (locked and
/// safe for Xen to copy to/from), zeroed, freed on drop.
///
/// libxc bounces the domctl struct itself, but the buffers its guest
/// handles point to must already live in such memory.
pub(crate) struct HcBuf<'a> {
    xc: &'a XenCtrl,
    // Boxed: libxc keeps pointers into the descriptor.
    buf: Box<sys::xc_hypercall_buffer_t>,
    nr_pages: i32,
    len: usize,
}

impl<'a> HcBuf<'a> {
    /// Allocates at least `len` bytes (at least one page).
    pub(crate) fn new(xc: &'a XenCtrl, len: usize) -> Result<Self> {
        let nr_pages = len.div_ceil(4096).max(1);
        let mut buf = Box::new(sys::xc_hypercall_buffer_t::default());
        // SAFETY: buf is a zeroed descriptor; the callee fills it in.
        let p =
            unsafe { sys::xc__hypercall_buffer_alloc_pages(xc.raw(), &mut *buf, nr_pages as i32) };
        if p.is_null() {
            return Err(Error::last(
                "xc_hypercall_buffer_alloc_pages",
                format!("{nr_pages} pages"),
            ));
        }
        // SAFETY: p points to nr_pages fresh pages we own.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0, nr_pages * 4096) };
        Ok(HcBuf {
            xc,
            buf,
            nr_pages: nr_pages as i32,
            len,
        })
    }

    /// The buffer as a raw pointer, for a guest handle.
    pub(crate) fn ptr<T>(&self) -> *mut T {
        self.buf.hbuf as *mut T
    }

    /// The first `len` bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: hbuf has nr_pages * 4096 >= len bytes, owned by us.
        unsafe { std::slice::from_raw_parts(self.buf.hbuf as *const u8, self.len) }
    }

    /// The first `len` bytes, mutable.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.buf.hbuf as *mut u8, self.len) }
    }

    /// The buffer as `n` plain-data values of `T` (n * size_of T <= len).
    pub(crate) fn slice_mut<T: Copy>(&mut self, n: usize) -> &mut [T] {
        assert!(n * std::mem::size_of::<T>() <= self.nr_pages as usize * 4096);
        // SAFETY: page-aligned, in bounds (checked), T is plain data and the
        // memory is zero-initialised.
        unsafe { std::slice::from_raw_parts_mut(self.buf.hbuf as *mut T, n) }
    }
}

impl Drop for HcBuf<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated with alloc_pages(nr_pages) on this handle.
        unsafe {
            sys::xc__hypercall_buffer_free_pages(self.xc.raw(), &mut *self.buf, self.nr_pages)
        };
    }
}
