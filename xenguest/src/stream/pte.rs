//! Page-table entry conversion for x86-64 PV guests (4-level paging).
//!
//! On save, page tables are *normalised*: each present entry's machine frame
//! (mfn) is replaced by the guest's pseudo-physical frame (pfn), superpages
//! are refused and Xen's own L4 slots are cleared.  On restore they are
//! *localised*: pfn -> the new machine frame.  The lookups are supplied by
//! the caller (from the m2p / the new p2m), so these functions are pure.
//!
//! Rules follow libxenguest (`normalise_pagetable`, `x86_pv_localise_page`).
//! 32-bit (PAE, 3-level) guests are not handled here.

use thiserror::Error;

use super::libxc::PAGE_SIZE;

/// Present bit.
pub const PAGE_PRESENT: u64 = 1 << 0;
/// Page-size bit: a superpage mapping at L2/L3.
pub const PAGE_PSE: u64 = 1 << 7;
/// Bits 51..12 of a PTE hold the frame number.
pub const PTE_FRAME_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Entries per page-table page.
pub const PTES_PER_PAGE: usize = PAGE_SIZE / 8;
/// First L4 slot reserved for Xen (HYPERVISOR_VIRT_START 0xffff800000000000).
pub const XEN_L4_FIRST: usize = 256;
/// Last L4 slot reserved for Xen (HYPERVISOR_VIRT_END 0xffff87ffffffffff).
pub const XEN_L4_LAST: usize = 271;
/// Largest frame number that fits in a PTE.
pub const MAX_FRAME: u64 = PTE_FRAME_MASK >> 12;

/// Page-table level of the page being converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtLevel {
    L1,
    L2,
    L3,
    L4,
}

impl PtLevel {
    /// From a level number 1..=4 (e.g. [`super::PageType::table_level`]).
    pub fn from_level(l: u8) -> Option<Self> {
        match l {
            1 => Some(PtLevel::L1),
            2 => Some(PtLevel::L2),
            3 => Some(PtLevel::L3),
            4 => Some(PtLevel::L4),
            _ => None,
        }
    }
    pub fn number(self) -> u8 {
        match self {
            PtLevel::L1 => 1,
            PtLevel::L2 => 2,
            PtLevel::L3 => 3,
            PtLevel::L4 => 4,
        }
    }
}

/// Why a page table could not be converted.  On error the page is left
/// unmodified.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PteError {
    #[error("page-table page must be {PAGE_SIZE} bytes, got {0}")]
    BadPageSize(usize),
    #[error("cannot migrate superpage: L{level}[{index}] = {pte:#018x}")]
    Superpage { level: u8, index: usize, pte: u64 },
    /// The guest is still running: the entry may be mid-update.  Defer the
    /// page and send it again once the guest is paused.
    #[error("L{level}[{index}] = {pte:#018x}: mfn {frame:#x} not in the guest's physmap (deferred, guest live)")]
    Deferred {
        level: u8,
        index: usize,
        pte: u64,
        frame: u64,
    },
    /// The guest is paused (or this is restore): the entry is bad.
    #[error("L{level}[{index}] = {pte:#018x}: frame {frame:#x} does not translate")]
    BadFrame {
        level: u8,
        index: usize,
        pte: u64,
        frame: u64,
    },
    #[error("L{level}[{index}]: translated frame {frame:#x} does not fit in a PTE")]
    FrameTooLarge { level: u8, index: usize, frame: u64 },
}

impl PteError {
    /// True for the error that means "retry after pausing the guest".
    pub fn is_deferrable(&self) -> bool {
        matches!(self, PteError::Deferred { .. })
    }
}

/// Frame number of a PTE.
pub fn pte_to_frame(pte: u64) -> u64 {
    (pte & PTE_FRAME_MASK) >> 12
}

/// Replace a PTE's frame number, keeping the flag bits.
pub fn merge_pte(pte: u64, frame: u64) -> u64 {
    (pte & !PTE_FRAME_MASK) | ((frame << 12) & PTE_FRAME_MASK)
}

fn load(page: &[u8]) -> Result<[u64; PTES_PER_PAGE], PteError> {
    if page.len() != PAGE_SIZE {
        return Err(PteError::BadPageSize(page.len()));
    }
    let mut t = [0u64; PTES_PER_PAGE];
    for (e, c) in t.iter_mut().zip(page.chunks_exact(8)) {
        *e = u64::from_le_bytes(c.try_into().expect("8 bytes"));
    }
    Ok(t)
}

fn store(t: &[u64; PTES_PER_PAGE], page: &mut [u8]) {
    for (e, c) in t.iter().zip(page.chunks_exact_mut(8)) {
        c.copy_from_slice(&e.to_le_bytes());
    }
}

/// Normalise a page-table page in place (save side): mfn -> pfn.
///
/// `mfn_to_pfn` returns `None` for an mfn that is not in the guest's
/// pseudo-physical map.  `live` says whether the guest is still running: then
/// an untranslatable entry gives [`PteError::Deferred`], otherwise
/// [`PteError::BadFrame`].  Xen's L4 slots 256..=271 are zeroed.
pub fn normalise_page(
    page: &mut [u8],
    level: PtLevel,
    live: bool,
    mut mfn_to_pfn: impl FnMut(u64) -> Option<u64>,
) -> Result<(), PteError> {
    let mut t = load(page)?;
    let lv = level.number();
    for (i, e) in t.iter_mut().enumerate() {
        let mut pte = *e;
        if level == PtLevel::L4 && (XEN_L4_FIRST..=XEN_L4_LAST).contains(&i) {
            pte = 0;
        }
        if pte & PAGE_PRESENT != 0 {
            if level != PtLevel::L1 && pte & PAGE_PSE != 0 {
                return Err(PteError::Superpage {
                    level: lv,
                    index: i,
                    pte,
                });
            }
            let mfn = pte_to_frame(pte);
            let pfn = match mfn_to_pfn(mfn) {
                Some(p) => p,
                None if live => {
                    return Err(PteError::Deferred {
                        level: lv,
                        index: i,
                        pte,
                        frame: mfn,
                    })
                }
                None => {
                    return Err(PteError::BadFrame {
                        level: lv,
                        index: i,
                        pte,
                        frame: mfn,
                    })
                }
            };
            if pfn > MAX_FRAME {
                return Err(PteError::FrameTooLarge {
                    level: lv,
                    index: i,
                    frame: pfn,
                });
            }
            pte = merge_pte(pte, pfn);
        }
        *e = pte;
    }
    store(&t, page);
    Ok(())
}

/// Localise a page-table page in place (restore side): pfn -> mfn.
///
/// `pfn_to_mfn` returns `None` for a pfn with no frame (the caller should
/// populate pfns first, as the reference does).
pub fn localise_page(
    page: &mut [u8],
    level: PtLevel,
    mut pfn_to_mfn: impl FnMut(u64) -> Option<u64>,
) -> Result<(), PteError> {
    let mut t = load(page)?;
    let lv = level.number();
    for (i, e) in t.iter_mut().enumerate() {
        let pte = *e;
        if pte & PAGE_PRESENT != 0 {
            let pfn = pte_to_frame(pte);
            let mfn = pfn_to_mfn(pfn).ok_or(PteError::BadFrame {
                level: lv,
                index: i,
                pte,
                frame: pfn,
            })?;
            if mfn > MAX_FRAME {
                return Err(PteError::FrameTooLarge {
                    level: lv,
                    index: i,
                    frame: mfn,
                });
            }
            *e = merge_pte(pte, mfn);
        }
    }
    store(&t, page);
    Ok(())
}

/// The present entries' frames of a page-table page that `pfn_to_mfn` cannot
/// translate: what a restorer must populate before [`localise_page`].
pub fn frames_to_populate(
    page: &[u8],
    mut has_mfn: impl FnMut(u64) -> bool,
) -> Result<Vec<u64>, PteError> {
    let t = load(page)?;
    Ok(t.iter()
        .filter(|&&pte| pte & PAGE_PRESENT != 0)
        .map(|&pte| pte_to_frame(pte))
        .filter(|&pfn| !has_mfn(pfn))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(entries: &[(usize, u64)]) -> Vec<u8> {
        let mut t = [0u64; PTES_PER_PAGE];
        for &(i, v) in entries {
            t[i] = v;
        }
        let mut p = vec![0u8; PAGE_SIZE];
        store(&t, &mut p);
        p
    }

    fn entry(p: &[u8], i: usize) -> u64 {
        u64::from_le_bytes(p[i * 8..i * 8 + 8].try_into().unwrap())
    }

    const FLAGS: u64 = 0x8000_0000_0000_0067; // NX | D A U W P

    #[test]
    fn normalise_translates_present_entries_and_keeps_flags() {
        let mut p = page(&[
            (0, (0x1234 << 12) | FLAGS),
            (1, 0x1234 << 12), // not present: untouched
            (2, (0xabcdef << 12) | 0x7),
        ]);
        normalise_page(&mut p, PtLevel::L1, false, |m| Some(m + 0x10)).unwrap();
        assert_eq!(entry(&p, 0), (0x1244 << 12) | FLAGS);
        assert_eq!(entry(&p, 1), 0x1234 << 12);
        assert_eq!(entry(&p, 2), (0xabcdff << 12) | 0x7);
        assert_eq!(entry(&p, 3), 0);
    }

    #[test]
    fn mfn_mask_ignores_high_and_low_bits() {
        assert_eq!(pte_to_frame(0xfff0_0000_0000_0fff), 0);
        assert_eq!(pte_to_frame(0x000f_ffff_ffff_f000), MAX_FRAME);
        assert_eq!(merge_pte(0xfff0_0000_0000_0fff, 5), 0xfff0_0000_0000_5fff);
        // A frame too wide for the mask is truncated by merge, and refused by
        // normalise.
        let mut p = page(&[(0, (1 << 12) | 1)]);
        let e = normalise_page(&mut p, PtLevel::L1, false, |_| Some(MAX_FRAME + 1)).unwrap_err();
        assert!(matches!(e, PteError::FrameTooLarge { index: 0, .. }));
    }

    #[test]
    fn l4_xen_slots_are_zeroed() {
        let mut entries: Vec<(usize, u64)> = (0..PTES_PER_PAGE)
            .map(|i| (i, ((i as u64 + 1) << 12) | 0x7))
            .collect();
        // Xen's slots may hold anything, even untranslatable frames.
        for e in entries.iter_mut().take(XEN_L4_LAST + 1).skip(XEN_L4_FIRST) {
            e.1 = (0xdead << 12) | 0x67;
        }
        let mut p = page(&entries);
        normalise_page(&mut p, PtLevel::L4, false, |m| (m != 0xdead).then_some(m)).unwrap();
        for i in 0..PTES_PER_PAGE {
            if (256..=271).contains(&i) {
                assert_eq!(entry(&p, i), 0, "slot {i}");
            } else {
                assert_eq!(entry(&p, i), ((i as u64 + 1) << 12) | 0x7, "slot {i}");
            }
        }
        // The same entries in an L3 are not special.
        let mut p = page(&entries);
        let e =
            normalise_page(&mut p, PtLevel::L3, false, |m| (m != 0xdead).then_some(m)).unwrap_err();
        assert!(matches!(e, PteError::BadFrame { index: 256, .. }));
    }

    #[test]
    fn superpages_rejected_above_l1() {
        let pse = (0x200 << 12) | PAGE_PSE | 1;
        for level in [PtLevel::L2, PtLevel::L3, PtLevel::L4] {
            let mut p = page(&[(5, pse)]);
            let before = p.clone();
            let e = normalise_page(&mut p, level, true, Some).unwrap_err();
            assert_eq!(
                e,
                PteError::Superpage {
                    level: level.number(),
                    index: 5,
                    pte: pse
                }
            );
            assert!(!e.is_deferrable());
            assert_eq!(p, before, "page untouched on error");
        }
        // In an L1, bit 7 is PAT, not PSE.
        let mut p = page(&[(5, pse)]);
        normalise_page(&mut p, PtLevel::L1, false, Some).unwrap();
        // Not present + PSE is ignored.
        let mut p = page(&[(5, pse & !1)]);
        normalise_page(&mut p, PtLevel::L2, false, |_| None).unwrap();
    }

    #[test]
    fn untranslatable_entries_defer_when_live_and_fail_when_paused() {
        let pte = (0x999 << 12) | 1;
        let mut p = page(&[(7, pte)]);
        let e = normalise_page(&mut p, PtLevel::L2, true, |_| None).unwrap_err();
        assert!(e.is_deferrable());
        assert_eq!(
            e,
            PteError::Deferred {
                level: 2,
                index: 7,
                pte,
                frame: 0x999
            }
        );
        let e = normalise_page(&mut p, PtLevel::L2, false, |_| None).unwrap_err();
        assert!(!e.is_deferrable());
        assert!(matches!(e, PteError::BadFrame { frame: 0x999, .. }));
    }

    #[test]
    fn localise_inverts_normalise() {
        let orig = page(&[
            (0, (0x100 << 12) | 0x63),
            (300, (0x200 << 12) | 0x7),
            (511, 0x4 << 12),
        ]);
        let mut p = orig.clone();
        normalise_page(&mut p, PtLevel::L2, false, |m| Some(m - 0x80)).unwrap();
        assert_eq!(entry(&p, 0), (0x80 << 12) | 0x63);
        assert_eq!(
            frames_to_populate(&p, |pfn| pfn == 0x80).unwrap(),
            vec![0x180]
        );
        localise_page(&mut p, PtLevel::L2, |pfn| Some(pfn + 0x80)).unwrap();
        assert_eq!(p, orig);
        let e = localise_page(&mut p, PtLevel::L2, |_| None).unwrap_err();
        assert!(matches!(e, PteError::BadFrame { index: 0, .. }));
    }

    #[test]
    fn bad_page_size() {
        let mut p = vec![0u8; 100];
        assert_eq!(
            normalise_page(&mut p, PtLevel::L1, false, Some),
            Err(PteError::BadPageSize(100))
        );
        assert_eq!(
            localise_page(&mut p, PtLevel::L1, Some),
            Err(PteError::BadPageSize(100))
        );
    }
}
