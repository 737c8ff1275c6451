//! Byte layouts of the x86_64 PV structures restore edits: `start_info`,
//! `vcpu_guest_context` (the X86_PV_VCPU_BASIC blob) and `shared_info`.
//!
//! Offsets come from Xen's public headers (x86_64 ABI); the unit tests
//! check them against the bindgen layouts where bindgen names the fields.

/// Size of a page.
pub const PAGE: usize = 4096;

fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// `struct start_info` (x86_64).
pub mod start_info {
    pub const NR_PAGES: usize = 32;
    pub const SHARED_INFO: usize = 40;
    pub const FLAGS: usize = 48;
    pub const STORE_MFN: usize = 56;
    pub const STORE_EVTCHN: usize = 64;
    pub const CONSOLE_MFN: usize = 72;
    pub const CONSOLE_EVTCHN: usize = 80;
}

/// The frames a saved start_info page refers to (pfns in the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfoFrames {
    pub store_pfn: u64,
    pub console_pfn: u64,
}

/// Reads the store and console pfns of a saved start_info page.
pub fn start_info_frames(page: &[u8]) -> StartInfoFrames {
    StartInfoFrames {
        store_pfn: get_u64(page, start_info::STORE_MFN),
        console_pfn: get_u64(page, start_info::CONSOLE_MFN),
    }
}

/// What restore writes into the guest's start_info (the reference's
/// `process_start_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInfoUpdate {
    pub store_mfn: u64,
    pub store_evtchn: u32,
    pub console_mfn: u64,
    pub console_evtchn: u32,
    pub nr_pages: u64,
    pub shared_info_frame: u64,
}

/// Rewrites a start_info page in place.
pub fn rewrite_start_info(page: &mut [u8], u: &StartInfoUpdate) {
    use start_info::*;
    put_u64(page, STORE_MFN, u.store_mfn);
    put_u32(page, STORE_EVTCHN, u.store_evtchn);
    put_u64(page, CONSOLE_MFN, u.console_mfn);
    put_u32(page, CONSOLE_EVTCHN, u.console_evtchn);
    put_u64(page, NR_PAGES, u.nr_pages);
    put_u64(page, SHARED_INFO, u.shared_info_frame << 12);
    put_u32(page, FLAGS, 0);
}

/// `struct vcpu_guest_context` (x86_64), 5168 bytes.
pub mod vcpu {
    pub const SIZE: usize = 5168;
    pub const FLAGS: usize = 512;
    pub const USER_REGS: usize = 520;
    /// `user_regs.rdx`: the start_info frame for vCPU 0.
    pub const RDX: usize = USER_REGS + 12 * 8;
    pub const GDT_FRAMES: usize = 4832;
    pub const GDT_FRAMES_MAX: usize = 16;
    pub const GDT_ENTS: usize = 4960;
    pub const CTRLREG: usize = 4984;
    /// `VGCF_online`.
    pub const VGCF_ONLINE: u64 = 1 << 5;
    /// `FIRST_RESERVED_GDT_ENTRY`: guests own GDT entries below it.
    pub const FIRST_RESERVED_GDT_ENTRY: u64 = 14 * 4096 / 8;
}

/// Why a vCPU context cannot be localised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VcpuFixError {
    #[error("vCPU context is {0} bytes, expected 5168")]
    Size(usize),
    #[error("GDT has {0} entries (at most {max})", max = vcpu::FIRST_RESERVED_GDT_ENTRY)]
    GdtTooBig(u64),
    #[error("{what} pfn {pfn:#x} does not translate: {why}")]
    Frame {
        what: &'static str,
        pfn: u64,
        why: String,
    },
}

/// Converts a saved vCPU context's frames from pfns to mfns (the
/// reference's `update_vcpu_context`): marks it online, GDT frames, cr3 and
/// the user L4 in cr1.  `gdt_frame` translates a GDT frame;
/// `l4_frame` translates a pfn that must be an L4 page table.  vCPU 0's
/// start_info (rdx) is the caller's business.
pub fn localise_vcpu(
    blob: &mut [u8],
    mut gdt_frame: impl FnMut(u64) -> Result<u64, String>,
    mut l4_frame: impl FnMut(u64) -> Result<u64, String>,
) -> Result<(), VcpuFixError> {
    use vcpu::*;
    if blob.len() != SIZE {
        return Err(VcpuFixError::Size(blob.len()));
    }
    let flags = get_u64(blob, FLAGS);
    put_u64(blob, FLAGS, flags | VGCF_ONLINE);
    let ents = get_u64(blob, GDT_ENTS);
    if ents > FIRST_RESERVED_GDT_ENTRY {
        return Err(VcpuFixError::GdtTooBig(ents));
    }
    let frames = ents.div_ceil(512) as usize;
    for j in 0..frames.min(GDT_FRAMES_MAX) {
        let off = GDT_FRAMES + j * 8;
        let pfn = get_u64(blob, off);
        let mfn = gdt_frame(pfn).map_err(|why| VcpuFixError::Frame {
            what: "GDT frame",
            pfn,
            why,
        })?;
        put_u64(blob, off, mfn);
    }
    let cr3_off = CTRLREG + 3 * 8;
    let pfn = get_u64(blob, cr3_off) >> 12;
    let mfn = l4_frame(pfn).map_err(|why| VcpuFixError::Frame {
        what: "cr3",
        pfn,
        why,
    })?;
    put_u64(blob, cr3_off, mfn << 12);
    let cr1_off = CTRLREG + 8;
    let cr1 = get_u64(blob, cr1_off);
    if cr1 & 1 != 0 {
        let pfn = cr1 >> 12;
        let mfn = l4_frame(pfn).map_err(|why| VcpuFixError::Frame {
            what: "cr1 (user L4)",
            pfn,
            why,
        })?;
        // The saved form carries bit 0 as "present"; Xen wants a bare cr3
        // value (the reference writes `mfn << PAGE_SHIFT`).
        put_u64(blob, cr1_off, mfn << 12);
    }
    Ok(())
}

/// vCPU 0's start_info pfn (`user_regs.rdx`).
pub fn vcpu_start_info_pfn(blob: &[u8]) -> u64 {
    get_u64(blob, vcpu::RDX)
}

/// Sets vCPU 0's start_info frame (`user_regs.rdx`).
pub fn set_vcpu_start_info(blob: &mut [u8], mfn: u64) {
    put_u64(blob, vcpu::RDX, mfn)
}

/// `struct shared_info` (x86_64).
pub mod shared_info {
    pub const VCPU_INFO_SIZE: usize = 64;
    pub const LEGACY_MAX_VCPUS: usize = 32;
    pub const VCPU_INFO_END: usize = VCPU_INFO_SIZE * LEGACY_MAX_VCPUS;
    /// `vcpu_info.evtchn_pending_sel`.
    pub const PENDING_SEL: usize = 8;
    pub const EVTCHN_PENDING: usize = 2048;
    pub const EVTCHN_MASK: usize = 2560;
    pub const EVTCHN_MASK_END: usize = 3072;
    pub const ARCH: usize = 3088;
    pub const ARCH_SIZE: usize = 48;
    /// `arch.pfn_to_mfn_frame_list_list`.
    pub const FRAME_LIST_LIST: usize = ARCH + 8;
}

/// Builds the restored guest's shared_info from the new domain's page and
/// the saved one (the reference's `handle_shared_info`): vcpu_info and arch
/// from the saved page, the frame-list-list cleared, no event pending and
/// every event channel masked.
pub fn merge_shared_info(current: &[u8], saved: &[u8]) -> Vec<u8> {
    use shared_info::*;
    let mut p = current.to_vec();
    p[..VCPU_INFO_END].copy_from_slice(&saved[..VCPU_INFO_END]);
    p[ARCH..ARCH + ARCH_SIZE].copy_from_slice(&saved[ARCH..ARCH + ARCH_SIZE]);
    put_u64(&mut p, FRAME_LIST_LIST, 0);
    p[EVTCHN_PENDING..EVTCHN_MASK].fill(0);
    for i in 0..LEGACY_MAX_VCPUS {
        put_u64(&mut p, i * VCPU_INFO_SIZE + PENDING_SEL, 0);
    }
    p[EVTCHN_MASK..EVTCHN_MASK_END].fill(0xff);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use xenctrl::sys;

    #[test]
    fn offsets_match_the_xen_headers() {
        type V = sys::vcpu_guest_context_x86_64_t;
        assert_eq!(size_of::<V>(), vcpu::SIZE);
        assert_eq!(offset_of!(V, flags), vcpu::FLAGS);
        assert_eq!(offset_of!(V, user_regs), vcpu::USER_REGS);
        assert_eq!(offset_of!(V, gdt_frames), vcpu::GDT_FRAMES);
        assert_eq!(offset_of!(V, gdt_ents), vcpu::GDT_ENTS);
        assert_eq!(offset_of!(V, ctrlreg), vcpu::CTRLREG);
        assert_eq!(size_of::<sys::cpu_user_regs_x86_64>(), 200);
        assert_eq!(offset_of!(sys::shared_info, arch), shared_info::ARCH);
        assert_eq!(
            offset_of!(sys::shared_info, evtchn_pending),
            shared_info::EVTCHN_PENDING
        );
        assert_eq!(
            offset_of!(sys::shared_info, evtchn_mask),
            shared_info::EVTCHN_MASK
        );
        assert_eq!(size_of::<sys::vcpu_info>(), shared_info::VCPU_INFO_SIZE);
        assert_eq!(
            offset_of!(sys::vcpu_info, evtchn_pending_sel),
            shared_info::PENDING_SEL
        );
        // rdx is the 13th register (r15 .. rcx, rdx).
        assert_eq!(
            vcpu::USER_REGS + offset_of!(sys::cpu_user_regs_x86_64, __bindgen_anon_13),
            vcpu::RDX
        );
    }

    #[test]
    fn start_info_rewrite() {
        let mut p = vec![0xaau8; PAGE];
        put_u64(&mut p, start_info::STORE_MFN, 0x11);
        put_u64(&mut p, start_info::CONSOLE_MFN, 0x12);
        assert_eq!(
            start_info_frames(&p),
            StartInfoFrames {
                store_pfn: 0x11,
                console_pfn: 0x12
            }
        );
        rewrite_start_info(
            &mut p,
            &StartInfoUpdate {
                store_mfn: 0x1000,
                store_evtchn: 3,
                console_mfn: 0x2000,
                console_evtchn: 4,
                nr_pages: 0x10000,
                shared_info_frame: 0x77,
            },
        );
        assert_eq!(get_u64(&p, start_info::STORE_MFN), 0x1000);
        assert_eq!(get_u64(&p, start_info::CONSOLE_MFN), 0x2000);
        assert_eq!(&p[64..68], &3u32.to_le_bytes());
        assert_eq!(&p[68..72], &[0xaa; 4], "padding untouched");
        assert_eq!(&p[80..84], &4u32.to_le_bytes());
        assert_eq!(get_u64(&p, start_info::SHARED_INFO), 0x77000);
        assert_eq!(&p[48..52], &[0; 4]);
        assert_eq!(&p[..32], &[0xaa; 32], "magic untouched");
    }

    #[test]
    fn vcpu_localise_translates_gdt_cr3_cr1() {
        let mut b = vec![0u8; vcpu::SIZE];
        put_u64(&mut b, vcpu::GDT_ENTS, 513);
        put_u64(&mut b, vcpu::GDT_FRAMES, 5);
        put_u64(&mut b, vcpu::GDT_FRAMES + 8, 6);
        put_u64(&mut b, vcpu::GDT_FRAMES + 16, 7);
        put_u64(&mut b, vcpu::CTRLREG + 24, 0x9 << 12);
        put_u64(&mut b, vcpu::CTRLREG + 8, (0xa << 12) | 1);
        localise_vcpu(&mut b, |p| Ok(p + 0x100), |p| Ok(p + 0x200)).unwrap();
        assert_eq!(get_u64(&b, vcpu::FLAGS), vcpu::VGCF_ONLINE);
        assert_eq!(get_u64(&b, vcpu::GDT_FRAMES), 0x105);
        assert_eq!(get_u64(&b, vcpu::GDT_FRAMES + 8), 0x106);
        assert_eq!(get_u64(&b, vcpu::GDT_FRAMES + 16), 7, "only 2 frames used");
        assert_eq!(get_u64(&b, vcpu::CTRLREG + 24), 0x209 << 12);
        assert_eq!(get_u64(&b, vcpu::CTRLREG + 8), 0x20a << 12);

        let mut b = vec![0u8; vcpu::SIZE];
        put_u64(&mut b, vcpu::GDT_ENTS, 8000);
        assert_eq!(
            localise_vcpu(&mut b, Ok, Ok),
            Err(VcpuFixError::GdtTooBig(8000))
        );
        let mut b = vec![0u8; vcpu::SIZE];
        let e = localise_vcpu(&mut b, Ok, |_| Err("not an L4".into())).unwrap_err();
        assert!(e.to_string().contains("cr3"), "{e}");
        assert_eq!(
            localise_vcpu(&mut [0u8; 10], Ok, Ok),
            Err(VcpuFixError::Size(10))
        );
    }

    #[test]
    fn rdx_is_start_info() {
        let mut b = vec![0u8; vcpu::SIZE];
        set_vcpu_start_info(&mut b, 0x1234);
        assert_eq!(vcpu_start_info_pfn(&b), 0x1234);
        assert_eq!(vcpu::RDX, 616);
    }

    #[test]
    fn shared_info_merge() {
        let cur = vec![0x11u8; PAGE];
        let saved = vec![0x22u8; PAGE];
        let m = merge_shared_info(&cur, &saved);
        assert_eq!(m[0], 0x22);
        assert_eq!(&m[8..16], &[0; 8], "pending_sel cleared");
        assert_eq!(m[16], 0x22);
        assert!(m[2048..2560].iter().all(|&b| b == 0));
        assert!(m[2560..3072].iter().all(|&b| b == 0xff));
        assert_eq!(&m[3072..3088], &[0x11; 16], "wallclock from the new page");
        assert_eq!(m[3088], 0x22);
        assert_eq!(&m[3096..3104], &[0; 8], "frame_list_list cleared");
        assert_eq!(m[3136], 0x11);
    }
}
