//! Safe wrappers over the Xen 4.17 control libraries.
//!
//! One handle type per library: [`XenCtrl`] (libxenctrl), [`ForeignMemory`]
//! (libxenforeignmemory) and [`EventChannels`] (libxenevtchn). Every failing
//! call returns an [`Error`] naming the C function, its target and errno.
//! Mappings and hypercall buffers are RAII values that borrow their handle.
//! [`Hypervisor`] is the narrow trait the daemon uses, with a
//! [`FakeHypervisor`] for tests without Xen.
//!
//! For PV save/restore: [`M2p`] (the machine-to-phys table), page types
//! ([`XenCtrl::pfn_types`]), [`XenCtrl::populate_physmap_exact`], page-table
//! pinning ([`XenCtrl::mmuext_pin`]), TSC info, extended vCPU state
//! (ext context, xsave, MSRs), the CPU policy, [`SharedInfo`], grant-table
//! seeding and [`XenCtrl::wait_for_shutdown`].
//!
//! For building PV guests: [`XenCtrl::build_pv`] (libxenguest's `xc_dom_*`
//! sequence) and [`XenCtrl::apply_default_cpu_policy`].
//!
//! Not yet wrapped (planned): HVM context and params, grant-table mapping.

mod ctrl;
mod dombuild;
mod error;
mod evtchn;
mod foreign;
mod hcbuf;
pub mod hypervisor;
mod mem;
mod policy;
mod shared_info;
mod types;
mod vcpu;

#[cfg(target_arch = "x86_64")]
pub use ctrl::host_cpuid;
pub use ctrl::{decode_cpuid, DirtyBitmap, VcpuContext, XenCtrl};
pub use dombuild::{PvBuildSpec, PvBuilt};
pub use error::{Errno, Error, Result};
pub use evtchn::EventChannels;
pub use foreign::{BatchMapping, ForeignMemory, Mapping, Prot, PAGE_SIZE};
pub use hypervisor::{FakeHypervisor, Hypervisor};
pub use mem::{m2p_map_len, M2p, PageType, Pin, TscInfo, PFN_TYPE_BATCH};
pub use policy::{CpuPolicy, CpuidLeaf, PolicyMsr};
pub use shared_info::{ArchSharedInfo, SharedInfo};
pub use types::*;
pub use vcpu::{VcpuInfo, VcpuMsr, XsaveState, EXT_VCPU_CONTEXT_MAX};

/// The raw bindings, for callers that need a call not wrapped yet.
pub use xenctrl_sys as sys;
