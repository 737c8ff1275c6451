//! A PV guest's shared_info page mapped into dom0, with typed access to
//! the fields save/restore reads.

use std::mem::offset_of;

use xenctrl_sys as sys;

use crate::error::Result;
use crate::foreign::{ForeignMemory, Mapping, Prot, PAGE_SIZE};
use crate::types::DomId;

/// `shared_info.arch` (x86_64 layout): where the guest publishes its p2m.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchSharedInfo {
    /// Highest pfn + 1 the guest uses (the p2m's length).
    pub max_pfn: u64,
    /// mfn of the top of the 3-level p2m frame-list tree (or ~0 / 0).
    pub pfn_to_mfn_frame_list_list: u64,
    /// NMI reason bits.
    pub nmi_reason: u64,
    /// cr3 value (mfn << 12) of the page tables mapping the linear p2m.
    pub p2m_cr3: u64,
    /// Guest virtual address of the linear p2m list.
    pub p2m_vaddr: u64,
    /// Bumped (odd while in progress) by the guest on p2m changes.
    pub p2m_generation: u64,
}

/// Offset of `arch` in `shared_info` (x86_64).
pub const ARCH_OFFSET: usize = offset_of!(sys::shared_info, arch);

/// A mapped shared_info page; unmapped on drop.
pub struct SharedInfo<'a> {
    map: Mapping<'a>,
}

impl ForeignMemory {
    /// Maps a PV guest's shared_info (`DomainInfo::shared_info_frame`, an
    /// mfn) read-only or read-write, like libxc's `xc_map_foreign_range`.
    pub fn map_shared_info(
        &self,
        domid: DomId,
        shared_info_frame: u64,
        prot: Prot,
    ) -> Result<SharedInfo<'_>> {
        Ok(SharedInfo {
            map: self.map(domid, prot, &[shared_info_frame])?,
        })
    }
}

impl SharedInfo<'_> {
    fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        self.map.read(off, &mut b).expect("offset within the page");
        u64::from_le_bytes(b)
    }

    /// A snapshot of `arch`.
    pub fn arch(&self) -> ArchSharedInfo {
        let f = |o: usize| self.u64_at(ARCH_OFFSET + o);
        ArchSharedInfo {
            max_pfn: f(offset_of!(sys::arch_shared_info, max_pfn)),
            pfn_to_mfn_frame_list_list: f(offset_of!(
                sys::arch_shared_info,
                pfn_to_mfn_frame_list_list
            )),
            nmi_reason: f(offset_of!(sys::arch_shared_info, nmi_reason)),
            p2m_cr3: f(offset_of!(sys::arch_shared_info, p2m_cr3)),
            p2m_vaddr: f(offset_of!(sys::arch_shared_info, p2m_vaddr)),
            p2m_generation: f(offset_of!(sys::arch_shared_info, p2m_generation)),
        }
    }

    /// vCPU `n`'s PV system time in ns (`vcpu_info[n].time.system_time`).
    pub fn vcpu_system_time(&self, n: usize) -> Option<u64> {
        if n >= 32 {
            return None;
        }
        let vi = std::mem::size_of::<sys::vcpu_info>();
        let off = n * vi
            + offset_of!(sys::vcpu_info, time)
            + offset_of!(sys::vcpu_time_info, system_time);
        Some(self.u64_at(off))
    }

    /// The whole page (the SHARED_INFO record body).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; PAGE_SIZE];
        self.map.read(0, &mut v).expect("one page");
        v
    }

    /// Writes `arch` back (needs a read-write mapping), as restore does
    /// after copying the saved page.
    pub fn set_arch(&mut self, a: &ArchSharedInfo) -> Result<()> {
        for (o, v) in [
            (offset_of!(sys::arch_shared_info, max_pfn), a.max_pfn),
            (
                offset_of!(sys::arch_shared_info, pfn_to_mfn_frame_list_list),
                a.pfn_to_mfn_frame_list_list,
            ),
            (offset_of!(sys::arch_shared_info, nmi_reason), a.nmi_reason),
            (offset_of!(sys::arch_shared_info, p2m_cr3), a.p2m_cr3),
            (offset_of!(sys::arch_shared_info, p2m_vaddr), a.p2m_vaddr),
            (
                offset_of!(sys::arch_shared_info, p2m_generation),
                a.p2m_generation,
            ),
        ] {
            self.map.write(ARCH_OFFSET + o, &v.to_le_bytes())?;
        }
        Ok(())
    }

    /// Overwrites part of the page (needs a read-write mapping).
    pub fn write(&mut self, offset: usize, data: &[u8]) -> Result<()> {
        self.map.write(offset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x86_64_layout() {
        // 32 vcpu_info x 64, pending and mask bitmaps 512 each, wallclock 16.
        assert_eq!(ARCH_OFFSET, 3088);
        assert_eq!(std::mem::size_of::<sys::arch_shared_info>(), 48);
        assert_eq!(offset_of!(sys::arch_shared_info, p2m_cr3), 24);
        assert_eq!(offset_of!(sys::arch_shared_info, p2m_generation), 40);
    }
}
