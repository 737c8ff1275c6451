//! The blocking domain operations the orchestration needs from a
//! hypervisor (in the spirit of cloud-hypervisor's and crosvm's
//! `Hypervisor` traits): small, synchronous, one call per Xen concept.
//! [`super::Xenops`] runs them on tokio's blocking pool.

use std::path::Path;

use uuid::Uuid;
use xenctrl::{DomId, ShutdownReason};

use super::spec::DomainSpec;

/// The domains serving a guest's xenstore and console rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Daemons {
    /// xenstored's domain (`/tool/xenstored/domid`, else 0).
    pub store_domid: DomId,
    /// xenconsoled's domain (`/tool/xenconsoled/domid`, else 0).
    pub console_domid: DomId,
}

/// A built guest's rings: what goes to xenstore and to the introduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rings {
    /// The guest's xenstore event channel port.
    pub store_port: u32,
    /// The xenstore ring's machine frame.
    pub store_mfn: u64,
    /// The guest's console event channel port.
    pub console_port: u32,
    /// The console ring's machine frame.
    pub console_mfn: u64,
}

/// Where a domain is in its life, as Xen reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// Runnable (running or blocked).
    Running,
    /// Paused by the toolstack.
    Paused,
    /// Shut down, with the guest's (or Xen's) reason; not yet destroyed.
    Shutdown(ShutdownReason),
    /// Destroyed, waiting for its last pages to be released.
    Dying,
}

/// One domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainState {
    /// Its id.
    pub domid: DomId,
    /// Its handle: the VM uuid for domains we build.
    pub handle: Uuid,
    /// Its state.
    pub power: Power,
}

impl From<&xenctrl::DomainInfo> for DomainState {
    fn from(i: &xenctrl::DomainInfo) -> Self {
        let power = if i.dying() {
            Power::Dying
        } else if let Some(r) = i.shutdown() {
            Power::Shutdown(r)
        } else if i.paused() {
            Power::Paused
        } else {
            Power::Running
        };
        DomainState {
            domid: i.domid,
            handle: Uuid::from_bytes(i.handle),
            power,
        }
    }
}

/// Why a domain's memory image could not be written or read back (the
/// save/restore engine's own message).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ImageError(pub String);

/// Blocking domain operations. Errors are the bindings' (C function,
/// errno, libxc's message); the caller adds which step it was.
pub trait Hypervisor: Send + Sync + 'static {
    /// Creates an empty, paused PV domain with handle `spec.uuid` and
    /// `spec.vcpus.max` vCPUs.
    fn create(&self, spec: &DomainSpec) -> xenctrl::Result<DomId>;
    /// Prepares the created domain (vCPUs, memory limits, TSC, CPU policy,
    /// event channels for `daemons`) and loads the kernel and ramdisk.
    fn build(&self, domid: DomId, spec: &DomainSpec, daemons: Daemons) -> xenctrl::Result<Rings>;
    /// Lets the domain run.
    fn unpause(&self, domid: DomId) -> xenctrl::Result<()>;
    /// Stops the domain's vCPUs.
    fn pause(&self, domid: DomId) -> xenctrl::Result<()>;
    /// Caps the memory the domain may have (its balloon target plus slack).
    fn set_memory_cap(&self, domid: DomId, target_kib: u64) -> xenctrl::Result<()>;
    /// Destroys the domain (it may linger as [`Power::Dying`]).
    fn destroy(&self, domid: DomId) -> xenctrl::Result<()>;
    /// One domain, `None` if there is no such domain.
    fn domain(&self, domid: DomId) -> xenctrl::Result<Option<DomainState>>;
    /// Every domain, dom0 included.
    fn domains(&self) -> xenctrl::Result<Vec<DomainState>>;
    /// Suspends the domain (the guest co-operating) and writes its memory
    /// and vCPU state to `image` (an existing file, not truncated: a
    /// suspend VDI's), synced; the domain is left shut down with reason
    /// suspend. On failure the guest runs on.
    fn save(&self, domid: DomId, image: &Path) -> Result<(), ImageError>;
    /// A paused domain for `spec` (its handle the VM's uuid) from what
    /// [`Hypervisor::save`] wrote; returns it and its rings. On failure no
    /// domain is left.
    fn restore(&self, image: &Path, spec: &DomainSpec) -> Result<(DomId, Rings), ImageError>;
}
