//! Safe wrappers over the Xen 4.17 control libraries.
//!
//! One handle type per library: [`XenCtrl`] (libxenctrl), [`ForeignMemory`]
//! (libxenforeignmemory) and [`EventChannels`] (libxenevtchn). Every failing
//! call returns an [`Error`] naming the C function, its target and errno.
//! Mappings and hypercall buffers are RAII values that borrow their handle.
//! [`Hypervisor`] is the narrow trait the daemon uses, with a
//! [`FakeHypervisor`] for tests without Xen.
//!
//! Not yet wrapped (planned): populate_physmap, mmuext pinning, m2p
//! mapping, getpageframeinfo3, ext vCPU context/xsave/MSRs, TSC info,
//! CPU policy get/set, HVM context, grant tables.

mod ctrl;
mod error;
mod evtchn;
mod foreign;
pub mod hypervisor;
mod types;

#[cfg(target_arch = "x86_64")]
pub use ctrl::host_cpuid;
pub use ctrl::{decode_cpuid, DirtyBitmap, VcpuContext, XenCtrl};
pub use error::{Errno, Error, Result};
pub use evtchn::EventChannels;
pub use foreign::{ForeignMemory, Mapping, Prot, PAGE_SIZE};
pub use hypervisor::{FakeHypervisor, Hypervisor};
pub use types::*;

/// The raw bindings, for callers that need a call not wrapped yet.
pub use xenctrl_sys as sys;
