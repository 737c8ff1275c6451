//! mfn -> pfn conversion of a 64-bit PV vCPU's basic context (pure logic).
//!
//! As the reference's `write_one_vcpu_basic`: vCPU 0's `rdx` holds the
//! start_info mfn at suspend; the GDT frames, cr3 (kernel L4) and cr1 (user
//! L4, 64-bit guests) are machine frames.  All must be in the guest's
//! pseudo-physical map.

use std::mem::offset_of;

use xenctrl::sys::{cpu_user_regs_x86_64 as Regs64, vcpu_guest_context_x86_64_t as Ctx64};

/// Xen reserves GDT entries from page 14 on (`FIRST_RESERVED_GDT_ENTRY`).
pub const FIRST_RESERVED_GDT_ENTRY: u64 = 14 * 512;
/// Size of the x86_64 context (the X86_PV_VCPU_BASIC blob).
pub const CTX64_SIZE: usize = std::mem::size_of::<Ctx64>();
// `rdx` sits in a bindgen union (rdx/edx): the 13th register.
const RDX: usize = offset_of!(Ctx64, user_regs) + offset_of!(Regs64, __bindgen_anon_13);
const GDT_FRAMES: usize = offset_of!(Ctx64, gdt_frames);
const GDT_ENTS: usize = offset_of!(Ctx64, gdt_ents);
const CTRLREG: usize = offset_of!(Ctx64, ctrlreg);

fn get(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

fn set(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Converts the machine frames in a 64-bit context blob (`ctx`, as
/// `xc_vcpu_getcontext` returns it) to pfns in place; `mfn_to_pfn` returns
/// None for an mfn outside the guest's pseudo-physical map.  On error, says
/// which field was bad.
pub fn normalise_basic(
    ctx: &mut [u8],
    vcpu: u32,
    mfn_to_pfn: impl Fn(u64) -> Option<u64>,
) -> Result<(), String> {
    if ctx.len() != CTX64_SIZE {
        return Err(format!(
            "vcpu{vcpu}: context of {} bytes, expected {CTX64_SIZE}",
            ctx.len()
        ));
    }
    if vcpu == 0 {
        let mfn = get(ctx, RDX);
        let pfn = mfn_to_pfn(mfn)
            .ok_or_else(|| format!("vcpu0 start_info mfn {mfn:#x} (rdx) not in the physmap"))?;
        set(ctx, RDX, pfn);
    }
    let ents = get(ctx, GDT_ENTS);
    if ents > FIRST_RESERVED_GDT_ENTRY {
        return Err(format!(
            "vcpu{vcpu}: GDT entry count {ents} out of range (max {FIRST_RESERVED_GDT_ENTRY})"
        ));
    }
    for i in 0..ents.div_ceil(512) as usize {
        let mfn = get(ctx, GDT_FRAMES + 8 * i);
        let pfn = mfn_to_pfn(mfn)
            .ok_or_else(|| format!("vcpu{vcpu}: GDT frame {i} mfn {mfn:#x} not in the physmap"))?;
        set(ctx, GDT_FRAMES + 8 * i, pfn);
    }
    let cr3_mfn = get(ctx, CTRLREG + 24) >> 12;
    let cr3_pfn = mfn_to_pfn(cr3_mfn)
        .ok_or_else(|| format!("vcpu{vcpu}: cr3 mfn {cr3_mfn:#x} not in the physmap"))?;
    set(ctx, CTRLREG + 24, cr3_pfn << 12);
    let cr1 = get(ctx, CTRLREG + 8);
    if cr1 != 0 {
        let mfn = cr1 >> 12;
        let pfn = mfn_to_pfn(mfn)
            .ok_or_else(|| format!("vcpu{vcpu}: cr1 (user L4) mfn {mfn:#x} not in the physmap"))?;
        set(ctx, CTRLREG + 8, 1 | (pfn << 12));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zero() -> Vec<u8> {
        vec![0; CTX64_SIZE]
    }

    #[test]
    fn offsets_match_the_public_header() {
        // xen/include/public/arch-x86/xen-x86_64.h: fpu_ctxt[512], flags,
        // then user_regs (rdx is the 13th u64).
        assert_eq!(CTX64_SIZE, 5168);
        assert_eq!(RDX, 512 + 8 + 12 * 8);
    }

    #[test]
    fn converts_rdx_gdt_cr3_cr1() {
        let mut c = zero();
        set(&mut c, RDX, 0x1005);
        set(&mut c, GDT_ENTS, 513); // two frames
        set(&mut c, GDT_FRAMES, 0x1001);
        set(&mut c, GDT_FRAMES + 8, 0x1002);
        set(&mut c, GDT_FRAMES + 16, 0xdead); // not in use: left alone
        set(&mut c, CTRLREG + 24, 0x1003 << 12);
        set(&mut c, CTRLREG + 8, (0x1004 << 12) | 1);
        let m = |mfn: u64| (0x1000..0x1010).contains(&mfn).then(|| mfn - 0x1000 + 7);
        normalise_basic(&mut c, 0, m).unwrap();
        assert_eq!(get(&c, RDX), 12);
        assert_eq!(
            [0, 1, 2].map(|i| get(&c, GDT_FRAMES + 8 * i)),
            [8, 9, 0xdead]
        );
        assert_eq!(get(&c, CTRLREG + 24), 10 << 12);
        assert_eq!(get(&c, CTRLREG + 8), (11 << 12) | 1);
    }

    #[test]
    fn vcpu1_keeps_rdx_and_errors_name_the_field() {
        let mut c = zero();
        set(&mut c, RDX, 0xffff);
        set(&mut c, CTRLREG + 24, 0x1003 << 12);
        let m = |mfn: u64| (mfn == 0x1003).then_some(3);
        normalise_basic(&mut c, 1, m).unwrap();
        assert_eq!(get(&c, RDX), 0xffff);
        assert_eq!(get(&c, CTRLREG + 24), 3 << 12);

        let mut c = zero();
        set(&mut c, CTRLREG + 24, 0x2000 << 12);
        let e = normalise_basic(&mut c, 1, |_| None).unwrap_err();
        assert!(e.contains("cr3"), "{e}");
        let mut c = zero();
        set(&mut c, GDT_ENTS, FIRST_RESERVED_GDT_ENTRY + 1);
        let e = normalise_basic(&mut c, 1, Some).unwrap_err();
        assert!(e.contains("GDT entry count"), "{e}");
    }
}
