//! The hypervisor side of VM lifecycle: build, run, track and destroy
//! domains on Xen, from a plain [`DomainSpec`]. It knows nothing of the
//! API's wire types; the VM handlers translate records into specs.
//!
//! - [`Hypervisor`]: the narrow, blocking domain operations (create,
//!   build, pause/unpause, destroy, info), with [`XenHypervisor`] over
//!   libxenctrl/libxenguest behind it.
//! - [`Xenops`]: the async orchestration on top: runs the blocking calls
//!   off the tokio runtime, writes and removes the domain's xenstore tree
//!   ([`tree`]), introduces it to xenstored (and so to xenconsoled),
//!   requests clean shutdowns, destroys, and lists domains for adoption.
//!   Suspend and resume go through the save/restore engine (xenguest).
//! - [`fake::FakeHypervisor`]: the same trait in memory, for tests.
//! - [`Tracker`]: turns `@releaseDomain` into [`DomainEvent`]s (shutdown
//!   with its reason, or gone) for our domains.
//! - [`probe`]: the host's facts (CPUs, memory, versions) for the host
//!   objects.

pub mod disk;
mod error;
pub mod fake;
mod hypervisor;
pub mod probe;
mod service;
mod spec;
mod suspend;
mod tracker;
pub mod tree;
pub mod vif;
mod xen;

pub use error::{Result, XenopsError};
pub use hypervisor::{Daemons, DomainState, Hypervisor, ImageError, Power, Rings};
pub use service::{DomainListing, Ownership, ShutdownRequest, Xenops};
pub use spec::{
    DiskSpec, DomainSpec, MemorySpec, NicSpec, PvBoot, VcpuSpec, MAX_DISK_SLOTS, MAX_NIC_SLOTS,
};
pub use tracker::{DomainEvent, Tracker};
pub use xen::XenHypervisor;
pub use xenctrl::{DomId, ShutdownReason};
