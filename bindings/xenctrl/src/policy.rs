//! A domain's CPU policy (CPUID leaves and MSRs), serialised the way the
//! migration stream's X86_CPUID_POLICY / X86_MSR_POLICY records carry it.

use xenctrl_sys as sys;

use crate::ctrl::{dom, XenCtrl};
use crate::error::{Error, Result};
use crate::types::DomId;

/// One CPUID leaf (`xen_cpuid_leaf_t`, 24 bytes in the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidLeaf {
    /// Leaf (EAX input).
    pub leaf: u32,
    /// Subleaf (ECX input), `XEN_CPUID_NO_SUBLEAF` if none.
    pub subleaf: u32,
    /// Output registers a, b, c, d.
    pub regs: [u32; 4],
}

/// One policy MSR (`xen_msr_entry_t`, 16 bytes in the stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PolicyMsr {
    /// MSR index.
    pub idx: u32,
    /// Flags (0).
    pub flags: u32,
    /// Value.
    pub val: u64,
}

/// A serialised CPU policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuPolicy {
    /// CPUID leaves.
    pub leaves: Vec<CpuidLeaf>,
    /// MSRs.
    pub msrs: Vec<PolicyMsr>,
}

impl CpuPolicy {
    /// The X86_CPUID_POLICY record body: leaves as 6 little-endian u32s.
    pub fn cpuid_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.leaves.len() * 24);
        for l in &self.leaves {
            for w in [
                l.leaf, l.subleaf, l.regs[0], l.regs[1], l.regs[2], l.regs[3],
            ] {
                v.extend_from_slice(&w.to_le_bytes());
            }
        }
        v
    }

    /// The X86_MSR_POLICY record body: {u32 idx, u32 flags, u64 val} LE.
    pub fn msr_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.msrs.len() * 16);
        for m in &self.msrs {
            v.extend_from_slice(&m.idx.to_le_bytes());
            v.extend_from_slice(&m.flags.to_le_bytes());
            v.extend_from_slice(&m.val.to_le_bytes());
        }
        v
    }

    /// Parses record bodies of [`Self::cpuid_bytes`] / [`Self::msr_bytes`].
    pub fn from_bytes(cpuid: &[u8], msr: &[u8]) -> Option<CpuPolicy> {
        if !cpuid.len().is_multiple_of(24) || !msr.len().is_multiple_of(16) {
            return None;
        }
        let u32_at = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Some(CpuPolicy {
            leaves: cpuid
                .chunks_exact(24)
                .map(|c| CpuidLeaf {
                    leaf: u32_at(c, 0),
                    subleaf: u32_at(c, 4),
                    regs: [u32_at(c, 8), u32_at(c, 12), u32_at(c, 16), u32_at(c, 20)],
                })
                .collect(),
            msrs: msr
                .chunks_exact(16)
                .map(|c| PolicyMsr {
                    idx: u32_at(c, 0),
                    flags: u32_at(c, 4),
                    val: u64::from_le_bytes(c[8..16].try_into().unwrap()),
                })
                .collect(),
        })
    }
}

/// An `xc_cpu_policy_t`, destroyed on drop.
struct RawPolicy(*mut sys::xc_cpu_policy_t);

impl Drop for RawPolicy {
    fn drop(&mut self) {
        // SAFETY: from xc_cpu_policy_init, destroyed once.
        unsafe { sys::xc_cpu_policy_destroy(self.0) };
    }
}

impl XenCtrl {
    /// The domain's CPU policy (`xc_cpu_policy_get_domain` +
    /// `xc_cpu_policy_serialise`, sized by `xc_cpu_policy_get_size`).
    pub fn domain_cpu_policy(&self, domid: DomId) -> Result<CpuPolicy> {
        let (mut nr_leaves, mut nr_msrs) = (0u32, 0u32);
        // SAFETY: valid out-parameters.
        crate::ctrl::check(
            unsafe { sys::xc_cpu_policy_get_size(self.raw(), &mut nr_leaves, &mut nr_msrs) },
            "xc_cpu_policy_get_size",
            String::new,
        )?;
        // SAFETY: allocation only.
        let p = unsafe { sys::xc_cpu_policy_init() };
        if p.is_null() {
            return Err(Error::last("xc_cpu_policy_init", ""));
        }
        let p = RawPolicy(p);
        // SAFETY: p is a live policy object.
        crate::ctrl::check(
            unsafe { sys::xc_cpu_policy_get_domain(self.raw(), domid, p.0) },
            "xc_cpu_policy_get_domain",
            || dom(domid),
        )?;
        let mut leaves = vec![sys::xen_cpuid_leaf_t::default(); nr_leaves as usize];
        let mut msrs = vec![sys::xen_msr_entry_t::default(); nr_msrs as usize];
        // SAFETY: the arrays have as many entries as the counts say.
        crate::ctrl::check(
            unsafe {
                sys::xc_cpu_policy_serialise(
                    self.raw(),
                    p.0,
                    leaves.as_mut_ptr(),
                    &mut nr_leaves,
                    msrs.as_mut_ptr(),
                    &mut nr_msrs,
                )
            },
            "xc_cpu_policy_serialise",
            || dom(domid),
        )?;
        leaves.truncate(nr_leaves as usize);
        msrs.truncate(nr_msrs as usize);
        Ok(CpuPolicy {
            leaves: leaves
                .iter()
                .map(|l| CpuidLeaf {
                    leaf: l.leaf,
                    subleaf: l.subleaf,
                    regs: [l.a, l.b, l.c, l.d],
                })
                .collect(),
            msrs: msrs
                .iter()
                .map(|m| PolicyMsr {
                    idx: m.idx,
                    flags: m.flags,
                    val: m.val,
                })
                .collect(),
        })
    }

    /// Sets the domain's CPU policy (`xc_set_domain_cpu_policy`), as restore
    /// does with the stream's policy records. A rejected leaf or MSR is
    /// named in the error context.
    pub fn set_domain_cpu_policy(&self, domid: DomId, policy: &CpuPolicy) -> Result<()> {
        let mut leaves: Vec<sys::xen_cpuid_leaf_t> = policy
            .leaves
            .iter()
            .map(|l| sys::xen_cpuid_leaf_t {
                leaf: l.leaf,
                subleaf: l.subleaf,
                a: l.regs[0],
                b: l.regs[1],
                c: l.regs[2],
                d: l.regs[3],
            })
            .collect();
        let mut msrs: Vec<sys::xen_msr_entry_t> = policy
            .msrs
            .iter()
            .map(|m| sys::xen_msr_entry_t {
                idx: m.idx,
                flags: m.flags,
                val: m.val,
            })
            .collect();
        let (mut el, mut es, mut em) = (u32::MAX, u32::MAX, u32::MAX);
        // SAFETY: arrays of the given lengths and valid out-parameters.
        let rc = unsafe {
            sys::xc_set_domain_cpu_policy(
                self.raw(),
                domid,
                leaves.len() as u32,
                leaves.as_mut_ptr(),
                msrs.len() as u32,
                msrs.as_mut_ptr(),
                &mut el,
                &mut es,
                &mut em,
            )
        };
        crate::ctrl::check(rc, "xc_set_domain_cpu_policy", || {
            format!("domid {domid}, bad leaf {el:#x}/{es:#x} msr {em:#x}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_bytes_round_trip() {
        let p = CpuPolicy {
            leaves: vec![CpuidLeaf {
                leaf: 7,
                subleaf: 0,
                regs: [1, 2, 3, 4],
            }],
            msrs: vec![PolicyMsr {
                idx: 0xce,
                flags: 0,
                val: 1 << 31,
            }],
        };
        let (c, m) = (p.cpuid_bytes(), p.msr_bytes());
        assert_eq!((c.len(), m.len()), (24, 16));
        assert_eq!(&c[..8], &[7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(CpuPolicy::from_bytes(&c, &m).unwrap(), p);
        assert!(CpuPolicy::from_bytes(&c[..23], &m).is_none());
    }
}
