//! Guest memory operations a PV save/restore needs: the machine-to-phys
//! table, page types, populate_physmap, page-table pinning, TSC info,
//! grant-table seeding.

use xenctrl_sys as sys;

use crate::ctrl::{check, dom, XenCtrl};
use crate::error::{Error, Result};
use crate::hcbuf::HcBuf;
use crate::types::DomId;

/// The m2p is mapped in chunks of 2 MiB (Xen's `M2P_CHUNK_SIZE`).
const M2P_CHUNK: usize = 1 << 21;

/// Bytes of m2p covering `max_mfn` entries, rounded up to whole chunks
/// (libxc's `M2P_SIZE`).
pub fn m2p_map_len(max_mfn: u64) -> usize {
    ((max_mfn as usize) * 8).div_ceil(M2P_CHUNK) * M2P_CHUNK
}

/// Xen's machine-to-phys table mapped read-only; unmapped on drop.
///
/// Entry `mfn` holds the pfn the owning domain uses for that frame, or
/// `INVALID_M2P_ENTRY` (all ones) and other garbage for frames nobody owns.
pub struct M2p<'a> {
    _xc: &'a XenCtrl,
    base: *const u64,
    len: usize,
    max_mfn: u64,
}

impl M2p<'_> {
    /// The host's highest machine frame number (`xc_maximum_ram_page`).
    pub fn max_mfn(&self) -> u64 {
        self.max_mfn
    }

    /// Number of entries mapped.
    pub fn entries(&self) -> u64 {
        (self.len / 8) as u64
    }

    /// The pfn recorded for `mfn`, or None if `mfn` is beyond the table or
    /// the entry is invalid (all ones).
    pub fn mfn_to_pfn(&self, mfn: u64) -> Option<u64> {
        if mfn > self.max_mfn || mfn >= self.entries() {
            return None;
        }
        // SAFETY: in bounds of the read-only mapping; Xen may update the
        // entry at any time, hence the volatile read of a plain u64.
        let v = unsafe { std::ptr::read_volatile(self.base.add(mfn as usize)) };
        (v != u64::MAX).then_some(v)
    }
}

impl Drop for M2p<'_> {
    fn drop(&mut self) {
        // SAFETY: base/len are exactly what xc_map_m2p mmap()ed.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// A page's type as Xen reports it (`XEN_DOMCTL_PFINFO_*` >> 28), which is
/// also the page-type nibble of the migration stream's PAGE_DATA entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageType(pub u32);

impl PageType {
    /// Ordinary page (not a page table).
    pub const NOTAB: PageType = PageType(0);
    /// Bit set on pinned page tables.
    pub const PINNED: u32 = 0x8;
    /// Broken (offlined) page.
    pub const BROKEN: PageType = PageType(0xd);
    /// Allocate-only page (no contents).
    pub const XALLOC: PageType = PageType(0xe);
    /// Invalid frame (not owned by the domain / ballooned out).
    pub const XTAB: PageType = PageType(0xf);

    /// From the raw 32/64-bit value libxc leaves in the array.
    pub fn from_raw(v: u64) -> Self {
        PageType(((v >> sys::XEN_DOMCTL_PFINFO_LTAB_SHIFT) & 0xf) as u32)
    }

    /// Page-table level 1..=4, or None if not a page table.
    pub fn level(self) -> Option<u32> {
        match self.0 {
            1..=4 => Some(self.0),
            9..=0xc => Some(self.0 - 8),
            _ => None,
        }
    }

    /// Whether this is a pinned page table.
    pub fn pinned(self) -> bool {
        (9..=0xc).contains(&self.0)
    }
}

/// TSC settings of a domain (the stream's X86_TSC_INFO record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TscInfo {
    /// `TSC_MODE_*` (0 default, 1 always emulate, 2 native, 3 native paravirt).
    pub mode: u32,
    /// Guest TSC frequency in kHz.
    pub khz: u32,
    /// Elapsed ns used to offset the guest TSC.
    pub elapsed_nsec: u64,
    /// Incarnation (bumped on every restore).
    pub incarnation: u32,
}

/// A `MMUEXT_*` page-table (un)pinning operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// Pin as a page table of this level (1..=4).
    Level(u32),
    /// Unpin.
    Unpin,
}

/// Largest batch for `getpageframeinfo3` (as libxc's save code uses).
pub const PFN_TYPE_BATCH: usize = 1024;

impl XenCtrl {
    /// Maps the machine-to-phys table read-only (`xc_maximum_ram_page` +
    /// `xc_map_m2p`, which maps the `xc_machphys_mfn_list` chunks of
    /// DOMID_XEN).
    pub fn map_m2p(&self) -> Result<M2p<'_>> {
        let mut max: libc::c_ulong = 0;
        // SAFETY: max is a valid out-parameter.
        check(
            unsafe { sys::xc_maximum_ram_page(self.raw(), &mut max) },
            "xc_maximum_ram_page",
            String::new,
        )?;
        let mut mfn0: libc::c_ulong = 0;
        // SAFETY: plain values and an out-parameter; the result is an mmap
        // of m2p_map_len(max) bytes, or NULL with errno set.
        let p = unsafe { sys::xc_map_m2p(self.raw(), max, libc::PROT_READ, &mut mfn0) };
        if p.is_null() {
            return Err(Error::last("xc_map_m2p", format!("max_mfn {max:#x}")));
        }
        Ok(M2p {
            _xc: self,
            base: p as *const u64,
            len: m2p_map_len(max as u64),
            max_mfn: max as u64,
        })
    }

    /// Page types of machine frames (`XEN_DOMCTL_getpageframeinfo3`, what
    /// libxc's internal `xc_get_pfn_type_batch` issues). For a PV guest the
    /// inputs are mfns; frames it does not own come back as [`PageType::XTAB`].
    pub fn pfn_types(&self, domid: DomId, mfns: &[u64]) -> Result<Vec<PageType>> {
        let mut out = Vec::with_capacity(mfns.len());
        let mut buf = HcBuf::new(self, PFN_TYPE_BATCH * 8)?;
        for chunk in mfns.chunks(PFN_TYPE_BATCH) {
            buf.slice_mut::<u64>(chunk.len()).copy_from_slice(chunk);
            let mut d = Self::new_domctl(sys::XEN_DOMCTL_getpageframeinfo3, domid);
            d.u.getpageframeinfo3.num = chunk.len() as u64;
            d.u.getpageframeinfo3.array.p = buf.ptr();
            self.domctl(&mut d, "xc_domctl(getpageframeinfo3)", || {
                format!("domid {domid}, {} frames from {:#x}", chunk.len(), chunk[0])
            })?;
            out.extend(
                buf.slice_mut::<u64>(chunk.len())
                    .iter()
                    .map(|&v| PageType::from_raw(v)),
            );
        }
        Ok(out)
    }

    /// Allocates memory at the given pfns (`xc_domain_populate_physmap_exact`,
    /// extents of `2^order` pages). For a PV guest Xen writes the new mfns
    /// back into `frames`.
    pub fn populate_physmap_exact(
        &self,
        domid: DomId,
        order: u32,
        frames: &mut [u64],
    ) -> Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        let mut v: Vec<sys::xen_pfn_t> = frames.to_vec();
        // SAFETY: v holds frames.len() extents, as told.
        check(
            unsafe {
                sys::xc_domain_populate_physmap_exact(
                    self.raw(),
                    domid,
                    v.len() as _,
                    order,
                    0,
                    v.as_mut_ptr(),
                )
            },
            "xc_domain_populate_physmap_exact",
            || format!("domid {domid}, {} extents of order {order}", frames.len()),
        )?;
        for (f, n) in frames.iter_mut().zip(v) {
            *f = n;
        }
        Ok(())
    }

    /// Releases guest pages (`xc_domain_decrease_reservation_exact`).
    pub fn decrease_reservation_exact(
        &self,
        domid: DomId,
        order: u32,
        frames: &[u64],
    ) -> Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        let mut v: Vec<sys::xen_pfn_t> = frames.to_vec();
        // SAFETY: v holds frames.len() extents, as told.
        check(
            unsafe {
                sys::xc_domain_decrease_reservation_exact(
                    self.raw(),
                    domid,
                    v.len() as _,
                    order,
                    v.as_mut_ptr(),
                )
            },
            "xc_domain_decrease_reservation_exact",
            || format!("domid {domid}, {} extents", frames.len()),
        )
    }

    /// Pins or unpins page tables at the given mfns (`xc_mmuext_op` with
    /// `MMUEXT_PIN_L{1..4}_TABLE` / `MMUEXT_UNPIN_TABLE`), in one batch.
    pub fn mmuext_pin(&self, domid: DomId, pin: Pin, mfns: &[u64]) -> Result<()> {
        let cmd = match pin {
            Pin::Level(l @ 1..=4) => sys::MMUEXT_PIN_L1_TABLE + (l - 1),
            Pin::Unpin => sys::MMUEXT_UNPIN_TABLE,
            Pin::Level(l) => {
                return Err(Error::Invalid {
                    op: "xc_mmuext_op",
                    reason: format!("no page-table level {l}"),
                })
            }
        };
        if mfns.is_empty() {
            return Ok(());
        }
        let mut ops: Vec<sys::mmuext_op> = mfns
            .iter()
            .map(|&m| {
                // SAFETY: plain data; zero is valid for every member.
                let mut op: sys::mmuext_op = unsafe { std::mem::zeroed() };
                op.cmd = cmd;
                op.arg1.mfn = m as _;
                op
            })
            .collect();
        // SAFETY: ops has mfns.len() entries; libxc bounces the array.
        check(
            unsafe { sys::xc_mmuext_op(self.raw(), ops.as_mut_ptr(), ops.len() as u32, domid) },
            "xc_mmuext_op",
            || {
                format!(
                    "{pin:?}, domid {domid}, {} mfns from {:#x}",
                    mfns.len(),
                    mfns[0]
                )
            },
        )
    }

    /// TSC mode, frequency, offset and incarnation (`xc_domain_get_tsc_info`).
    pub fn tsc_info(&self, domid: DomId) -> Result<TscInfo> {
        let mut t = TscInfo::default();
        // SAFETY: valid out-parameters.
        check(
            unsafe {
                sys::xc_domain_get_tsc_info(
                    self.raw(),
                    domid,
                    &mut t.mode,
                    &mut t.elapsed_nsec,
                    &mut t.khz,
                    &mut t.incarnation,
                )
            },
            "xc_domain_get_tsc_info",
            || dom(domid),
        )?;
        Ok(t)
    }

    /// Sets the TSC settings (`xc_domain_set_tsc_info`), as restore does.
    /// Xen records `incarnation + 1`: the restored domain is a new one.
    pub fn set_tsc_info(&self, domid: DomId, t: &TscInfo) -> Result<()> {
        // SAFETY: plain values.
        check(
            unsafe {
                sys::xc_domain_set_tsc_info(
                    self.raw(),
                    domid,
                    t.mode,
                    t.elapsed_nsec,
                    t.khz,
                    t.incarnation,
                )
            },
            "xc_domain_set_tsc_info",
            || dom(domid),
        )
    }

    /// Number of guest pfns (`xc_domain_nr_gpfns`: maximum_gpfn + 1).
    pub fn nr_gpfns(&self, domid: DomId) -> Result<u64> {
        let mut n: sys::xen_pfn_t = 0;
        // SAFETY: valid out-parameter.
        check(
            unsafe { sys::xc_domain_nr_gpfns(self.raw(), domid, &mut n) },
            "xc_domain_nr_gpfns",
            || dom(domid),
        )?;
        Ok(n as u64)
    }

    /// Highest guest pfn in use (`xc_domain_maximum_gpfn`).
    pub fn maximum_gpfn(&self, domid: DomId) -> Result<u64> {
        let mut n: sys::xen_pfn_t = 0;
        // SAFETY: valid out-parameter.
        check(
            unsafe { sys::xc_domain_maximum_gpfn(self.raw(), domid, &mut n) },
            "xc_domain_maximum_gpfn",
            || dom(domid),
        )?;
        Ok(n as u64)
    }

    /// Seeds the guest's grant table with the console and xenstore entries
    /// (`xc_dom_gnttab_seed`, libxenguest), as restore does before unpause.
    /// For PV guests the gfns are mfns.
    pub fn gnttab_seed(
        &self,
        domid: DomId,
        is_hvm: bool,
        console_gfn: u64,
        xenstore_gfn: u64,
        console_domid: DomId,
        xenstore_domid: DomId,
    ) -> Result<()> {
        // SAFETY: plain values.
        check(
            unsafe {
                sys::xc_dom_gnttab_seed(
                    self.raw(),
                    domid,
                    is_hvm,
                    console_gfn as _,
                    xenstore_gfn as _,
                    console_domid,
                    xenstore_domid,
                )
            },
            "xc_dom_gnttab_seed",
            || dom(domid),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m2p_len_rounds_to_chunks() {
        assert_eq!(m2p_map_len(1), M2P_CHUNK);
        assert_eq!(m2p_map_len((M2P_CHUNK / 8) as u64), M2P_CHUNK);
        assert_eq!(m2p_map_len((M2P_CHUNK / 8) as u64 + 1), 2 * M2P_CHUNK);
        // 4 GiB host: 1 Mi frames x 8 bytes = 8 MiB.
        assert_eq!(m2p_map_len(1 << 20), 8 << 20);
    }

    #[test]
    fn page_types_decode() {
        let l4_pinned = (sys::XEN_DOMCTL_PFINFO_L4TAB | sys::XEN_DOMCTL_PFINFO_LPINTAB) as u64;
        let t = PageType::from_raw(l4_pinned | 0x1234);
        assert_eq!(t, PageType(0xc));
        assert_eq!(t.level(), Some(4));
        assert!(t.pinned());
        let t = PageType::from_raw(sys::XEN_DOMCTL_PFINFO_L1TAB as u64);
        assert_eq!((t.level(), t.pinned()), (Some(1), false));
        assert_eq!(
            PageType::from_raw(sys::XEN_DOMCTL_PFINFO_XTAB as u64),
            PageType::XTAB
        );
        assert_eq!(
            PageType::from_raw(sys::XEN_DOMCTL_PFINFO_BROKEN as u64),
            PageType::BROKEN
        );
        assert_eq!(
            PageType::from_raw(sys::XEN_DOMCTL_PFINFO_XALLOC as u64),
            PageType::XALLOC
        );
        assert_eq!(PageType::from_raw(0x5555).level(), None);
    }
}
