//! Extended vCPU state for PV save/restore: `ext_vcpucontext`, xsave
//! state, MSRs, and `xc_vcpu_getinfo`.

use xenctrl_sys as sys;

use crate::ctrl::{check, XenCtrl};
use crate::error::{Error, Result};
use crate::hcbuf::HcBuf;
use crate::types::DomId;

/// Run state of one vCPU (`xc_vcpu_getinfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VcpuInfo {
    /// The vCPU is up.
    pub online: bool,
    /// Blocked waiting for an event.
    pub blocked: bool,
    /// Currently running on a pCPU.
    pub running: bool,
    /// Consumed CPU time in ns.
    pub cpu_time_ns: u64,
    /// The pCPU it runs (or last ran) on.
    pub cpu: u32,
}

/// A vCPU's xsave state (`XEN_DOMCTL_getvcpuextstate`): the stream's
/// X86_PV_VCPU_XSAVE blob is `data` (xcr0, xcr0_accum, then the xsave area).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XsaveState {
    /// Feature mask Xen reported.
    pub xfeature_mask: u64,
    /// The raw buffer.
    pub data: Vec<u8>,
}

/// One MSR of a vCPU (`xen_domctl_vcpu_msr_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VcpuMsr {
    /// MSR index.
    pub index: u32,
    /// Its value.
    pub value: u64,
}

impl VcpuMsr {
    /// The stream's X86_PV_VCPU_MSRS encoding: {u32 index, u32 0, u64 value}
    /// little-endian per MSR.
    pub fn to_bytes(msrs: &[VcpuMsr]) -> Vec<u8> {
        let mut v = Vec::with_capacity(msrs.len() * 16);
        for m in msrs {
            v.extend_from_slice(&m.index.to_le_bytes());
            v.extend_from_slice(&0u32.to_le_bytes());
            v.extend_from_slice(&m.value.to_le_bytes());
        }
        v
    }

    /// Parses the encoding of [`VcpuMsr::to_bytes`] (None if not a multiple of 16).
    pub fn from_bytes(b: &[u8]) -> Option<Vec<VcpuMsr>> {
        if !b.len().is_multiple_of(16) {
            return None;
        }
        Some(
            b.chunks_exact(16)
                .map(|c| VcpuMsr {
                    index: u32::from_le_bytes(c[0..4].try_into().unwrap()),
                    value: u64::from_le_bytes(c[8..16].try_into().unwrap()),
                })
                .collect(),
        )
    }
}

/// Size of `xen_domctl_ext_vcpucontext` in Xen 4.17 (x86).
pub const EXT_VCPU_CONTEXT_MAX: usize = std::mem::size_of::<sys::xen_domctl_ext_vcpucontext>();

fn vctx(domid: DomId, vcpu: u32) -> String {
    format!("domid {domid} vcpu {vcpu}")
}

impl XenCtrl {
    /// Run state of a vCPU (`xc_vcpu_getinfo`).
    pub fn vcpu_info(&self, domid: DomId, vcpu: u32) -> Result<VcpuInfo> {
        let mut i = sys::xc_vcpuinfo_t::default();
        // SAFETY: valid out-parameter.
        check(
            unsafe { sys::xc_vcpu_getinfo(self.raw(), domid, vcpu, &mut i) },
            "xc_vcpu_getinfo",
            || vctx(domid, vcpu),
        )?;
        Ok(VcpuInfo {
            online: i.online != 0,
            blocked: i.blocked != 0,
            running: i.running != 0,
            cpu_time_ns: i.cpu_time,
            cpu: i.cpu,
        })
    }

    /// The extended vCPU context (`XEN_DOMCTL_get_ext_vcpucontext`) as the
    /// bytes of `xen_domctl_ext_vcpucontext` up to the size Xen reports
    /// (the stream's X86_PV_VCPU_EXTENDED blob).
    pub fn ext_vcpu_context(&self, domid: DomId, vcpu: u32) -> Result<Vec<u8>> {
        let mut d = Self::new_domctl(sys::XEN_DOMCTL_get_ext_vcpucontext, domid);
        d.u.ext_vcpucontext.vcpu = vcpu;
        self.domctl(&mut d, "xc_domctl(get_ext_vcpucontext)", || {
            vctx(domid, vcpu)
        })?;
        // SAFETY: Xen filled this union member.
        let e = unsafe { d.u.ext_vcpucontext };
        let size = (e.size as usize).min(EXT_VCPU_CONTEXT_MAX);
        // SAFETY: e is plain data of EXT_VCPU_CONTEXT_MAX bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(&e as *const _ as *const u8, EXT_VCPU_CONTEXT_MAX)
        };
        Ok(bytes[..size].to_vec())
    }

    /// Sets the extended vCPU context from a blob of [`Self::ext_vcpu_context`].
    pub fn set_ext_vcpu_context(&self, domid: DomId, vcpu: u32, blob: &[u8]) -> Result<()> {
        if blob.len() > EXT_VCPU_CONTEXT_MAX {
            return Err(Error::Invalid {
                op: "xc_domctl(set_ext_vcpucontext)",
                reason: format!("{} bytes > {EXT_VCPU_CONTEXT_MAX}", blob.len()),
            });
        }
        let mut d = Self::new_domctl(sys::XEN_DOMCTL_set_ext_vcpucontext, domid);
        // SAFETY: copying at most the member's size of plain bytes into it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                blob.as_ptr(),
                &mut d.u.ext_vcpucontext as *mut _ as *mut u8,
                blob.len(),
            );
            d.u.ext_vcpucontext.vcpu = vcpu;
            d.u.ext_vcpucontext.size = blob.len() as u32;
        }
        self.domctl(&mut d, "xc_domctl(set_ext_vcpucontext)", || {
            vctx(domid, vcpu)
        })
    }

    /// The vCPU's xsave state, or None if Xen has none for it (size 0).
    pub fn vcpu_xsave(&self, domid: DomId, vcpu: u32) -> Result<Option<XsaveState>> {
        let op = "xc_domctl(getvcpuextstate)";
        let mut d = Self::new_domctl(sys::XEN_DOMCTL_getvcpuextstate, domid);
        // Writing a union field is safe; only reads need unsafe.
        d.u.vcpuextstate.vcpu = vcpu;
        // A null buffer asks for the size and mask.
        self.domctl(&mut d, op, || vctx(domid, vcpu))?;
        // SAFETY: Xen filled this union member.
        let (mask, size) = unsafe { (d.u.vcpuextstate.xfeature_mask, d.u.vcpuextstate.size) };
        if size == 0 || mask == 0 {
            return Ok(None);
        }
        let buf = HcBuf::new(self, size as usize)?;
        let mut d = Self::new_domctl(sys::XEN_DOMCTL_getvcpuextstate, domid);
        // plain fields; the handle points to `size` bytes of
        // hypercall memory that outlive the call.
        d.u.vcpuextstate.vcpu = vcpu;
        d.u.vcpuextstate.xfeature_mask = mask;
        d.u.vcpuextstate.size = size;
        d.u.vcpuextstate.buffer.p = buf.ptr();
        self.domctl(&mut d, op, || vctx(domid, vcpu))?;
        // SAFETY: as above.
        let got = unsafe { d.u.vcpuextstate.size }.min(size) as usize;
        Ok(Some(XsaveState {
            xfeature_mask: mask,
            data: buf.bytes()[..got].to_vec(),
        }))
    }

    /// Restores xsave state (`XEN_DOMCTL_setvcpuextstate`); domain paused.
    pub fn set_vcpu_xsave(&self, domid: DomId, vcpu: u32, data: &[u8]) -> Result<()> {
        let mut buf = HcBuf::new(self, data.len())?;
        buf.bytes_mut().copy_from_slice(data);
        let mut d = Self::new_domctl(sys::XEN_DOMCTL_setvcpuextstate, domid);
        // plain fields; the handle points to live hypercall memory.
        d.u.vcpuextstate.vcpu = vcpu;
        d.u.vcpuextstate.xfeature_mask = 0;
        d.u.vcpuextstate.size = data.len() as u64;
        d.u.vcpuextstate.buffer.p = buf.ptr();
        self.domctl(&mut d, "xc_domctl(setvcpuextstate)", || vctx(domid, vcpu))
    }

    /// The vCPU's MSRs Xen saves for PV guests (`XEN_DOMCTL_get_vcpu_msrs`).
    pub fn vcpu_msrs(&self, domid: DomId, vcpu: u32) -> Result<Vec<VcpuMsr>> {
        let op = "xc_domctl(get_vcpu_msrs)";
        let mut d = Self::new_domctl(sys::XEN_DOMCTL_get_vcpu_msrs, domid);
        // Writing a union field is safe; only reads need unsafe.
        d.u.vcpu_msrs.vcpu = vcpu;
        // A null handle asks for the maximum count.
        self.domctl(&mut d, op, || vctx(domid, vcpu))?;
        // SAFETY: Xen filled this union member.
        let max = unsafe { d.u.vcpu_msrs.msr_count } as usize;
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut buf = HcBuf::new(self, max * std::mem::size_of::<sys::xen_domctl_vcpu_msr>())?;
        let mut d = Self::new_domctl(sys::XEN_DOMCTL_get_vcpu_msrs, domid);
        // plain fields; the handle has room for max entries.
        d.u.vcpu_msrs.vcpu = vcpu;
        d.u.vcpu_msrs.msr_count = max as u32;
        d.u.vcpu_msrs.msrs.p = buf.ptr();
        self.domctl(&mut d, op, || vctx(domid, vcpu))?;
        // SAFETY: as above.
        let n = (unsafe { d.u.vcpu_msrs.msr_count } as usize).min(max);
        Ok(buf
            .slice_mut::<sys::xen_domctl_vcpu_msr>(n)
            .iter()
            .map(|m| VcpuMsr {
                index: m.index,
                value: m.value,
            })
            .collect())
    }

    /// Restores MSRs (`XEN_DOMCTL_set_vcpu_msrs`); domain paused.
    pub fn set_vcpu_msrs(&self, domid: DomId, vcpu: u32, msrs: &[VcpuMsr]) -> Result<()> {
        if msrs.is_empty() {
            return Ok(());
        }
        let mut buf = HcBuf::new(
            self,
            msrs.len() * std::mem::size_of::<sys::xen_domctl_vcpu_msr>(),
        )?;
        for (dst, m) in buf
            .slice_mut::<sys::xen_domctl_vcpu_msr>(msrs.len())
            .iter_mut()
            .zip(msrs)
        {
            *dst = sys::xen_domctl_vcpu_msr {
                index: m.index,
                reserved: 0,
                value: m.value,
            };
        }
        let mut d = Self::new_domctl(sys::XEN_DOMCTL_set_vcpu_msrs, domid);
        // plain fields; the handle points to msrs.len() entries.
        d.u.vcpu_msrs.vcpu = vcpu;
        d.u.vcpu_msrs.msr_count = msrs.len() as u32;
        d.u.vcpu_msrs.msrs.p = buf.ptr();
        self.domctl(&mut d, "xc_domctl(set_vcpu_msrs)", || vctx(domid, vcpu))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msr_blob_round_trips() {
        let m = vec![
            VcpuMsr {
                index: 0xc000_0080,
                value: 0xd01,
            },
            VcpuMsr {
                index: 0x10,
                value: u64::MAX,
            },
        ];
        let b = VcpuMsr::to_bytes(&m);
        assert_eq!(b.len(), 32);
        assert_eq!(&b[0..8], &[0x80, 0, 0, 0xc0, 0, 0, 0, 0]);
        assert_eq!(VcpuMsr::from_bytes(&b).unwrap(), m);
        assert!(VcpuMsr::from_bytes(&b[..15]).is_none());
    }

    #[test]
    fn ext_context_max_is_the_domctl_member() {
        assert_eq!(EXT_VCPU_CONTEXT_MAX, 64);
    }
}
