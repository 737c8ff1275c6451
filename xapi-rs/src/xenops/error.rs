//! What can go wrong on the hypervisor side, naming the step that failed.

use std::path::PathBuf;
use std::time::Duration;

use xenctrl::DomId;

/// Result alias for the xenops module.
pub type Result<T> = std::result::Result<T, XenopsError>;

/// A failed domain operation.
#[derive(Debug, thiserror::Error)]
pub enum XenopsError {
    /// The spec was refused before anything was created.
    #[error("invalid domain spec: {0}")]
    InvalidSpec(String),
    /// The kernel or ramdisk cannot be read (checked before creating).
    #[error("{what} {}: {source}", path.display())]
    BootFile {
        /// `kernel` or `ramdisk`.
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        source: std::io::Error,
    },
    /// A hypervisor call failed.
    #[error("{step} (domid {}): {source}", domid.map_or("none".into(), |d| d.to_string()))]
    Xen {
        /// What we were doing.
        step: &'static str,
        /// The domain, once there is one.
        domid: Option<DomId>,
        /// The library's error (C function, errno, libxc's message).
        source: xenctrl::Error,
    },
    /// A xenstore request failed.
    #[error("{step} (domid {domid}): {source}")]
    Xenstore {
        /// What we were doing.
        step: &'static str,
        /// The domain.
        domid: DomId,
        /// The client's error.
        source: xenstore::Error,
    },
    /// The guest did not clear `control/shutdown` in time (it has no PV
    /// drivers, or they are not listening).
    #[error("domid {domid} did not acknowledge control/shutdown={request} within {timeout:?}")]
    ShutdownNotAcknowledged {
        /// The domain.
        domid: DomId,
        /// What was asked.
        request: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// The guest acknowledged but did not shut down in time.
    #[error("domid {domid} did not shut down within {timeout:?}")]
    ShutdownTimeout {
        /// The domain.
        domid: DomId,
        /// How long we waited in total.
        timeout: Duration,
    },
    /// A destroyed domain is still listed (something holds its memory).
    #[error("domid {domid} is still present {timeout:?} after being destroyed")]
    DestroyTimeout {
        /// The domain.
        domid: DomId,
        /// How long we waited.
        timeout: Duration,
    },
    /// The domain's memory image could not be written or restored (a
    /// failed save leaves the guest running).
    #[error("memory image of domid {domid}: {reason}")]
    Image {
        /// The domain (0 before a restore made one).
        domid: DomId,
        /// The engine's message.
        reason: String,
    },
    /// A disk's image could not be given to the guest (its loop device).
    #[error("disk {} of domid {domid}: {source}", path.display())]
    Disk {
        /// The domain.
        domid: DomId,
        /// The image or device.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No such domain.
    /// A network interface's bridge is not in dom0 (checked before
    /// creating).
    #[error("bridge {0:?} does not exist in dom0")]
    NoBridge(String),
    /// A device slot of the domain is taken.
    #[error("domid {domid} already has device {device}")]
    DeviceExists {
        /// The domain.
        domid: DomId,
        /// The device's backend directory.
        device: String,
    },
    /// The domain has no such device.
    #[error("domid {domid} has no device {device}")]
    NoSuchDevice {
        /// The domain.
        domid: DomId,
        /// The device's backend directory.
        device: String,
    },
    /// The guest did not let a device go (in use, or not running).
    #[error("device {device} of domid {domid} was not released within {timeout:?}")]
    DetachTimeout {
        /// The domain.
        domid: DomId,
        /// The device's backend directory.
        device: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// A network interface could not be put on its bridge.
    #[error("network interface {dev} of domid {domid}: {reason}")]
    Nic {
        /// The domain.
        domid: DomId,
        /// Its backend device, `vifD.N`.
        dev: String,
        /// What failed.
        reason: String,
    },
    #[error("domid {0} does not exist")]
    NoSuchDomain(DomId),
    /// The domain exists but was not built by this toolstack.
    #[error("domid {0} was not created by xapi-rs")]
    NotOurs(DomId),
    /// A blocking hypervisor call could not be run to completion.
    #[error("{step}: the blocking hypervisor call did not complete: {reason}")]
    Join {
        /// What we were doing.
        step: &'static str,
        /// The join error.
        reason: String,
    },
}
