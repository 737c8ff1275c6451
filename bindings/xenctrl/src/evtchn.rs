//! `EventChannels`: dom0's end of event channels (libxenevtchn).

use std::os::fd::RawFd;
use std::ptr::NonNull;

use xenctrl_sys as sys;

use crate::error::{Error, Result};
use crate::types::DomId;

/// An open `/dev/xen/evtchn` handle; closed on drop (unbinding its ports).
pub struct EventChannels {
    h: NonNull<sys::xenevtchn_handle>,
}

// SAFETY: the handle wraps an fd; usable from any one thread at a time.
unsafe impl Send for EventChannels {}

fn port_result(rc: i32, op: &'static str, ctx: impl FnOnce() -> String) -> Result<u32> {
    if rc < 0 {
        Err(Error::last(op, ctx()))
    } else {
        Ok(rc as u32)
    }
}

impl EventChannels {
    /// Opens the event channel device.
    pub fn open() -> Result<Self> {
        // SAFETY: null logger = library default.
        let p = unsafe { sys::xenevtchn_open(std::ptr::null_mut(), 0) };
        NonNull::new(p)
            .map(|h| EventChannels { h })
            .ok_or_else(|| Error::last("xenevtchn_open", ""))
    }

    /// The fd that becomes readable when a port is pending (for epoll/tokio).
    pub fn fd(&self) -> RawFd {
        // SAFETY: valid handle.
        unsafe { sys::xenevtchn_fd(self.h.as_ptr()) }
    }

    /// Binds a local port to `remote_port` in `domid`; returns the local port.
    pub fn bind_interdomain(&self, domid: DomId, remote_port: u32) -> Result<u32> {
        // SAFETY: plain values.
        let rc = unsafe { sys::xenevtchn_bind_interdomain(self.h.as_ptr(), domid, remote_port) };
        port_result(rc, "xenevtchn_bind_interdomain", || {
            format!("domid {domid} port {remote_port}")
        })
    }

    /// Allocates a local port that `domid` may bind to.
    pub fn bind_unbound_port(&self, domid: DomId) -> Result<u32> {
        // SAFETY: plain values.
        let rc = unsafe { sys::xenevtchn_bind_unbound_port(self.h.as_ptr(), domid) };
        port_result(rc, "xenevtchn_bind_unbound_port", || {
            format!("domid {domid}")
        })
    }

    /// Sends an event on a local port.
    pub fn notify(&self, port: u32) -> Result<()> {
        // SAFETY: plain values.
        let rc = unsafe { sys::xenevtchn_notify(self.h.as_ptr(), port) };
        port_result(rc, "xenevtchn_notify", || format!("port {port}")).map(drop)
    }

    /// Returns the next pending local port (blocks unless the fd is non-blocking).
    pub fn pending(&self) -> Result<u32> {
        // SAFETY: valid handle.
        let rc = unsafe { sys::xenevtchn_pending(self.h.as_ptr()) };
        port_result(rc, "xenevtchn_pending", String::new)
    }

    /// Re-enables delivery on a port after handling it.
    pub fn unmask(&self, port: u32) -> Result<()> {
        // SAFETY: plain values.
        let rc = unsafe { sys::xenevtchn_unmask(self.h.as_ptr(), port) };
        port_result(rc, "xenevtchn_unmask", || format!("port {port}")).map(drop)
    }

    /// Closes a local port.
    pub fn unbind(&self, port: u32) -> Result<()> {
        // SAFETY: plain values.
        let rc = unsafe { sys::xenevtchn_unbind(self.h.as_ptr(), port) };
        port_result(rc, "xenevtchn_unbind", || format!("port {port}")).map(drop)
    }
}

impl Drop for EventChannels {
    fn drop(&mut self) {
        // SAFETY: opened once, closed once.
        unsafe { sys::xenevtchn_close(self.h.as_ptr()) };
    }
}
