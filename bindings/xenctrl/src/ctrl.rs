//! `XenCtrl`: the libxenctrl handle and the calls made through it.

use std::ptr::NonNull;

use xenctrl_sys as sys;

use crate::error::{Error, Result};
use crate::types::*;

/// An open libxenctrl interface (`xc_interface`).
///
/// Closed on drop. `Send` because the handle is not tied to the opening
/// thread; not `Sync` because libxenctrl does not promise that one handle
/// may be used by several threads at once.
pub struct XenCtrl {
    xch: NonNull<sys::xc_interface>,
}

// SAFETY: xc_interface holds no thread-local state; moving it between
// threads is fine as long as it is used by one thread at a time (!Sync).
unsafe impl Send for XenCtrl {}

pub(crate) fn dom(domid: DomId) -> String {
    format!("domid {domid}")
}

/// Maps a libxc "0 on success, -1 + errno on failure" return.
pub(crate) fn check(rc: i32, op: &'static str, ctx: impl FnOnce() -> String) -> Result<()> {
    if rc < 0 {
        Err(Error::last(op, ctx()))
    } else {
        Ok(())
    }
}

impl XenCtrl {
    /// Opens the hypervisor interface (`/dev/xen/privcmd`); needs root in dom0.
    pub fn open() -> Result<Self> {
        // SAFETY: null loggers make libxc use its default stderr logger.
        let p = unsafe { sys::xc_interface_open(std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        NonNull::new(p)
            .map(|xch| XenCtrl { xch })
            .ok_or_else(|| Error::last("xc_interface_open", ""))
    }

    pub(crate) fn raw(&self) -> *mut sys::xc_interface {
        self.xch.as_ptr()
    }

    /// Host memory, CPU count and capabilities (`xl info`).
    pub fn physinfo(&self) -> Result<PhysInfo> {
        let mut p = sys::xc_physinfo_t::default();
        // SAFETY: p is a valid out-parameter of the right type.
        check(
            unsafe { sys::xc_physinfo(self.raw(), &mut p) },
            "xc_physinfo",
            String::new,
        )?;
        Ok(PhysInfo {
            threads_per_core: p.threads_per_core,
            cores_per_socket: p.cores_per_socket,
            nr_cpus: p.nr_cpus,
            max_cpu_id: p.max_cpu_id,
            nr_nodes: p.nr_nodes,
            max_node_id: p.max_node_id,
            cpu_khz: p.cpu_khz,
            capabilities: PhysCaps(p.capabilities),
            total_pages: p.total_pages,
            free_pages: p.free_pages,
            scrub_pages: p.scrub_pages,
            outstanding_pages: p.outstanding_pages,
            max_mfn: p.max_mfn,
            hw_cap: p.hw_cap,
        })
    }

    /// Core/socket/node of every CPU id up to the highest possible one.
    pub fn cpu_topology(&self) -> Result<Vec<CpuTopology>> {
        let mut n: u32 = 0;
        // SAFETY: a null array asks only for the number of entries.
        check(
            unsafe { sys::xc_cputopoinfo(self.raw(), &mut n, std::ptr::null_mut()) },
            "xc_cputopoinfo",
            String::new,
        )?;
        let mut v = vec![sys::xc_cputopo_t::default(); n as usize];
        // SAFETY: v has n entries, as n tells the callee.
        check(
            unsafe { sys::xc_cputopoinfo(self.raw(), &mut n, v.as_mut_ptr()) },
            "xc_cputopoinfo",
            String::new,
        )?;
        v.truncate(n as usize);
        let opt = |x: u32| (x != u32::MAX).then_some(x);
        Ok(v.iter()
            .map(|t| CpuTopology {
                core: opt(t.core),
                socket: opt(t.socket),
                node: opt(t.node),
            })
            .collect())
    }

    /// Idle time in ns of each physical CPU (`xc_getcpuinfo`).
    pub fn cpu_idle_times(&self) -> Result<Vec<u64>> {
        let max = self.physinfo()?.max_cpu_id as usize + 1;
        let mut v = vec![sys::xc_cpuinfo_t::default(); max];
        let mut nr: i32 = 0;
        // SAFETY: v has max entries, as max tells the callee.
        check(
            unsafe { sys::xc_getcpuinfo(self.raw(), max as i32, v.as_mut_ptr(), &mut nr) },
            "xc_getcpuinfo",
            String::new,
        )?;
        v.truncate(nr.max(0) as usize);
        Ok(v.iter().map(|c| c.idletime).collect())
    }

    /// A CPU featureset as 32-bit words (`xc_get_cpu_featureset`).
    pub fn cpu_featureset(&self, kind: FeaturesetKind) -> Result<Vec<u32>> {
        // SAFETY: pure function returning a constant.
        let mut n = unsafe { sys::xc_get_cpu_featureset_size() };
        let mut v = vec![0u32; n as usize];
        // SAFETY: v has n words, as n tells the callee.
        check(
            unsafe { sys::xc_get_cpu_featureset(self.raw(), kind as u32, &mut n, v.as_mut_ptr()) },
            "xc_get_cpu_featureset",
            || format!("{kind:?}"),
        )?;
        v.truncate(n as usize);
        Ok(v)
    }

    /// Creates an empty, paused domain and returns its id.
    pub fn create_domain(&self, cfg: &DomainConfig) -> Result<DomId> {
        if cfg.max_vcpus == 0 {
            return Err(Error::Invalid {
                op: "xc_domain_create",
                reason: "max_vcpus must be at least 1".into(),
            });
        }
        let mut c = sys::xen_domctl_createdomain {
            ssidref: 0,
            handle: cfg.handle,
            flags: cfg.cdf_flags(),
            max_vcpus: cfg.max_vcpus,
            max_evtchn_port: cfg.max_evtchn_port,
            max_grant_frames: cfg.max_grant_frames,
            max_maptrack_frames: cfg.max_maptrack_frames,
            grant_opts: cfg.max_grant_version & 0xf,
            cpupool_id: cfg.cpupool,
            ..Default::default()
        };
        c.arch.emulation_flags = cfg.emulation_flags();
        // 0 asks Xen to choose a free id, as libxl does.
        let mut domid: u32 = 0;
        // SAFETY: both pointers are valid for the call.
        check(
            unsafe { sys::xc_domain_create(self.raw(), &mut domid, &mut c) },
            "xc_domain_create",
            || format!("{:?}", cfg.kind),
        )?;
        Ok(domid)
    }

    /// Destroys a domain (it lingers as dying until its pages are freed).
    pub fn destroy_domain(&self, domid: DomId) -> Result<()> {
        // SAFETY: plain value arguments.
        check(
            unsafe { sys::xc_domain_destroy(self.raw(), domid) },
            "xc_domain_destroy",
            || dom(domid),
        )
    }

    /// Pauses a domain.
    pub fn pause_domain(&self, domid: DomId) -> Result<()> {
        // SAFETY: plain value arguments.
        check(
            unsafe { sys::xc_domain_pause(self.raw(), domid) },
            "xc_domain_pause",
            || dom(domid),
        )
    }

    /// Unpauses a domain.
    pub fn unpause_domain(&self, domid: DomId) -> Result<()> {
        // SAFETY: plain value arguments.
        check(
            unsafe { sys::xc_domain_unpause(self.raw(), domid) },
            "xc_domain_unpause",
            || dom(domid),
        )
    }

    /// Marks a domain shut down with a reason (as the guest would).
    pub fn shutdown_domain(&self, domid: DomId, reason: ShutdownReason) -> Result<()> {
        // SAFETY: plain value arguments.
        check(
            unsafe { sys::xc_domain_shutdown(self.raw(), domid, reason.to_raw() as i32) },
            "xc_domain_shutdown",
            || dom(domid),
        )
    }

    /// Resumes a suspended domain; `fast` = cooperative suspend-cancel.
    pub fn resume_domain(&self, domid: DomId, fast: bool) -> Result<()> {
        // SAFETY: plain value arguments.
        check(
            unsafe { sys::xc_domain_resume(self.raw(), domid, fast as i32) },
            "xc_domain_resume",
            || dom(domid),
        )
    }

    /// Waits until `domid` has shut down with `reason` (e.g. after asking a
    /// guest to suspend), for at most `timeout`.
    ///
    /// Checks the domain with getinfo, then calls `wait_event(remaining)`,
    /// which should block until something may have changed: pass a closure
    /// that waits for an `@releaseDomain` xenstore watch event (xenstored
    /// fires it whenever a domain shuts down or dies), or one that just
    /// sleeps a little to poll. Returns the domain's info once shut down
    /// with `reason`; `ETIMEDOUT` on timeout; [`Error::State`] if it shut
    /// down for another reason or disappeared.
    pub fn wait_for_shutdown(
        &self,
        domid: DomId,
        reason: ShutdownReason,
        timeout: std::time::Duration,
        mut wait_event: impl FnMut(std::time::Duration),
    ) -> Result<DomainInfo> {
        const OP: &str = "wait_for_shutdown";
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let info = match self.domain_info(domid) {
                Ok(i) => i,
                Err(e) if e.errno() == Some(libc::ESRCH) => {
                    return Err(Error::State {
                        op: OP,
                        context: dom(domid),
                        reason: "domain disappeared".into(),
                    })
                }
                Err(e) => return Err(e),
            };
            match info.shutdown() {
                Some(r) if r == reason => return Ok(info),
                Some(r) => {
                    return Err(Error::State {
                        op: OP,
                        context: dom(domid),
                        reason: format!("shut down with {r:?}, not {reason:?}"),
                    })
                }
                None if info.dying() => {
                    return Err(Error::State {
                        op: OP,
                        context: dom(domid),
                        reason: "domain is dying".into(),
                    })
                }
                None => {}
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::Xen {
                    op: OP,
                    context: format!("domid {domid}, {reason:?} after {timeout:?}"),
                    errno: crate::Errno(libc::ETIMEDOUT),
                });
            }
            wait_event(deadline - now);
        }
    }

    /// Up to `max` domains with id >= `first`, in id order.
    pub fn domain_info_list(&self, first: DomId, max: u32) -> Result<Vec<DomainInfo>> {
        let mut v = vec![sys::xc_domaininfo_t::default(); max as usize];
        // SAFETY: v has max entries, as max tells the callee.
        let n = unsafe { sys::xc_domain_getinfolist(self.raw(), first, max, v.as_mut_ptr()) };
        if n < 0 {
            return Err(Error::last(
                "xc_domain_getinfolist",
                format!("first domid {first}"),
            ));
        }
        v.truncate(n as usize);
        Ok(v.iter().map(convert_info).collect())
    }

    /// Info for one domain; `ESRCH` if it does not exist.
    pub fn domain_info(&self, domid: DomId) -> Result<DomainInfo> {
        match self.domain_info_list(domid, 1)?.pop() {
            Some(i) if i.domid == domid => Ok(i),
            // getinfolist returns the next existing domain; absence is ESRCH.
            _ => Err(Error::Xen {
                op: "xc_domain_getinfolist",
                context: dom(domid),
                errno: crate::Errno(libc::ESRCH),
            }),
        }
    }

    /// Sets the domain's maximum memory in KiB.
    pub fn set_max_mem(&self, domid: DomId, max_kib: u64) -> Result<()> {
        // SAFETY: plain value arguments.
        check(
            unsafe { sys::xc_domain_setmaxmem(self.raw(), domid, max_kib) },
            "xc_domain_setmaxmem",
            || dom(domid),
        )
    }

    /// Sets the PV guest's e820 memory map limit in KiB.
    pub fn set_memmap_limit(&self, domid: DomId, limit_kib: u64) -> Result<()> {
        // SAFETY: plain value arguments.
        check(
            unsafe { sys::xc_domain_set_memmap_limit(self.raw(), domid, limit_kib as _) },
            "xc_domain_set_memmap_limit",
            || dom(domid),
        )
    }

    /// Allocates the domain's vCPUs (at most the createdomain `max_vcpus`).
    pub fn set_max_vcpus(&self, domid: DomId, n: u32) -> Result<()> {
        // SAFETY: plain value arguments.
        check(
            unsafe { sys::xc_domain_max_vcpus(self.raw(), domid, n) },
            "xc_domain_max_vcpus",
            || dom(domid),
        )
    }

    /// Sets a PV guest's address width (64 or 32 bits).
    ///
    /// 4.17 has no public wrapper, so this issues the domctl directly.
    pub fn set_address_size(&self, domid: DomId, bits: u32) -> Result<()> {
        // SAFETY: xen_domctl is plain data; all-zero is valid.
        let mut d: sys::xen_domctl = unsafe { std::mem::zeroed() };
        d.cmd = sys::XEN_DOMCTL_set_address_size;
        d.domain = domid as sys::domid_t;
        d.u.address_size.size = bits;
        // SAFETY: d is a fully initialised domctl; libxc fills the version.
        check(
            unsafe { sys::xc_domctl(self.raw(), &mut d) },
            "xc_domctl(set_address_size)",
            || dom(domid),
        )
    }

    /// A zeroed domctl for `cmd` on `domid`.
    pub(crate) fn new_domctl(cmd: u32, domid: DomId) -> sys::xen_domctl {
        // SAFETY: xen_domctl is plain data; all-zero is valid.
        let mut d: sys::xen_domctl = unsafe { std::mem::zeroed() };
        d.cmd = cmd;
        d.domain = domid as sys::domid_t;
        d
    }

    /// Issues a domctl (libxc fills in the interface version and bounces
    /// the struct; embedded handles must point to hypercall memory).
    pub(crate) fn domctl(
        &self,
        d: &mut sys::xen_domctl,
        op: &'static str,
        ctx: impl FnOnce() -> String,
    ) -> Result<()> {
        // SAFETY: d is a fully initialised domctl whose handles (if any)
        // point to live hypercall buffers, as every caller guarantees.
        check(unsafe { sys::xc_domctl(self.raw(), d) }, op, ctx)
    }

    /// A PV guest's address width in bits (64 or 32), as save's
    /// X86_PV_INFO needs (`XEN_DOMCTL_get_address_size`, what
    /// `xc_domain_get_guest_width` issues).
    pub fn address_size(&self, domid: DomId) -> Result<u32> {
        let mut d = Self::new_domctl(sys::XEN_DOMCTL_get_address_size, domid);
        self.domctl(&mut d, "xc_domctl(get_address_size)", || dom(domid))?;
        // SAFETY: Xen filled this union member (plain data).
        Ok(unsafe { d.u.address_size.size })
    }

    /// Allocates an unbound event channel in `domid` for `remote` to bind.
    pub fn evtchn_alloc_unbound(&self, domid: DomId, remote: DomId) -> Result<u32> {
        // SAFETY: plain value arguments.
        let port = unsafe { sys::xc_evtchn_alloc_unbound(self.raw(), domid, remote) };
        if port < 0 {
            return Err(Error::last(
                "xc_evtchn_alloc_unbound",
                format!("domid {domid} remote {remote}"),
            ));
        }
        Ok(port as u32)
    }

    /// Raw shadow-control call without a bitmap (`xc_shadow_control`).
    fn shadow_op(&self, domid: DomId, op: u32, opname: &'static str) -> Result<()> {
        let mut mb = 0u32;
        // SAFETY: mb is a valid out-parameter.
        check(
            unsafe { sys::xc_shadow_control(self.raw(), domid, op, &mut mb, 0) },
            "xc_shadow_control",
            || format!("{opname}, domid {domid}"),
        )
    }

    /// Turns on log-dirty tracking (start of live migration).
    pub fn enable_logdirty(&self, domid: DomId) -> Result<()> {
        self.shadow_op(
            domid,
            sys::XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY,
            "ENABLE_LOGDIRTY",
        )
    }

    /// Turns shadow mode (and log-dirty) off again; always do this when done.
    pub fn disable_shadow(&self, domid: DomId) -> Result<()> {
        self.shadow_op(domid, sys::XEN_DOMCTL_SHADOW_OP_OFF, "OFF")
    }

    fn logdirty(
        &self,
        domid: DomId,
        op: u32,
        opname: &'static str,
        bitmap: &mut DirtyBitmap<'_>,
        final_pass: bool,
    ) -> Result<LogDirtyStats> {
        if !std::ptr::eq(bitmap.xc, self) {
            return Err(Error::Invalid {
                op: "xc_logdirty_control",
                reason: "bitmap was allocated on another handle".into(),
            });
        }
        let mut stats = sys::xc_shadow_op_stats_t::default();
        let mode = if final_pass {
            sys::XEN_DOMCTL_SHADOW_LOGDIRTY_FINAL
        } else {
            0
        };
        // SAFETY: the buffer was allocated by this handle with room for
        // `pages` bits, and lives (boxed, unmoved) across the call.
        let rc = unsafe {
            sys::xc_logdirty_control(
                self.raw(),
                domid,
                op,
                &mut *bitmap.buf,
                bitmap.pages as _,
                mode,
                &mut stats,
            )
        };
        if rc < 0 {
            return Err(Error::last(
                "xc_logdirty_control",
                format!("{opname}, domid {domid}"),
            ));
        }
        Ok(LogDirtyStats {
            pages: rc as u64,
            fault_count: stats.fault_count,
            dirty_count: stats.dirty_count,
        })
    }

    /// Copies the dirty bitmap into `bitmap` and clears it in Xen.
    pub fn logdirty_clean(
        &self,
        domid: DomId,
        bitmap: &mut DirtyBitmap<'_>,
        final_pass: bool,
    ) -> Result<LogDirtyStats> {
        self.logdirty(
            domid,
            sys::XEN_DOMCTL_SHADOW_OP_CLEAN,
            "CLEAN",
            bitmap,
            final_pass,
        )
    }

    /// Copies the dirty bitmap into `bitmap` without clearing it.
    pub fn logdirty_peek(
        &self,
        domid: DomId,
        bitmap: &mut DirtyBitmap<'_>,
    ) -> Result<LogDirtyStats> {
        self.logdirty(domid, sys::XEN_DOMCTL_SHADOW_OP_PEEK, "PEEK", bitmap, false)
    }

    /// Allocates a hypercall-safe bitmap for `pages` guest pages.
    pub fn dirty_bitmap(&self, pages: u64) -> Result<DirtyBitmap<'_>> {
        let bytes = pages.div_ceil(8);
        let nr_pages = bytes.div_ceil(4096).max(1);
        let mut buf = Box::new(sys::xc_hypercall_buffer_t::default());
        // SAFETY: buf is a zeroed (unbounced) hypercall buffer descriptor.
        let p = unsafe {
            sys::xc__hypercall_buffer_alloc_pages(self.raw(), &mut *buf, nr_pages as i32)
        };
        if p.is_null() {
            return Err(Error::last(
                "xc_hypercall_buffer_alloc_pages",
                format!("{nr_pages} pages"),
            ));
        }
        // SAFETY: p points to nr_pages fresh pages.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0, nr_pages as usize * 4096) };
        Ok(DirtyBitmap {
            xc: self,
            buf,
            pages,
            nr_pages: nr_pages as i32,
        })
    }

    /// Reads a vCPU's register state.
    pub fn vcpu_context(&self, domid: DomId, vcpu: u32) -> Result<VcpuContext> {
        // SAFETY: the union is plain data; all-zero is a valid value.
        let mut ctx: Box<sys::vcpu_guest_context_any_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: ctx is a valid out-parameter.
        check(
            unsafe { sys::xc_vcpu_getcontext(self.raw(), domid, vcpu, &mut *ctx) },
            "xc_vcpu_getcontext",
            || format!("domid {domid} vcpu {vcpu}"),
        )?;
        Ok(VcpuContext(ctx))
    }

    /// Sets a vCPU's register state (the guest must be paused).
    pub fn set_vcpu_context(&self, domid: DomId, vcpu: u32, ctx: &mut VcpuContext) -> Result<()> {
        // SAFETY: ctx is a valid context.
        check(
            unsafe { sys::xc_vcpu_setcontext(self.raw(), domid, vcpu, &mut *ctx.0) },
            "xc_vcpu_setcontext",
            || format!("domid {domid} vcpu {vcpu}"),
        )
    }
}

impl Drop for XenCtrl {
    fn drop(&mut self) {
        // SAFETY: xch came from xc_interface_open and is closed once.
        unsafe { sys::xc_interface_close(self.raw()) };
    }
}

fn convert_info(i: &sys::xc_domaininfo_t) -> DomainInfo {
    DomainInfo {
        domid: i.domain as u32,
        flags: i.flags,
        tot_pages: i.tot_pages,
        max_pages: i.max_pages,
        shared_info_frame: i.shared_info_frame,
        cpu_time_ns: i.cpu_time,
        nr_online_vcpus: i.nr_online_vcpus,
        max_vcpu_id: i.max_vcpu_id,
        handle: i.handle,
        cpupool: i.cpupool,
    }
}

/// A dirty-page bitmap in hypercall-safe memory, freed on drop.
pub struct DirtyBitmap<'a> {
    xc: &'a XenCtrl,
    // Boxed: libxc keeps pointers into the descriptor during calls.
    buf: Box<sys::xc_hypercall_buffer_t>,
    pages: u64,
    nr_pages: i32,
}

impl DirtyBitmap<'_> {
    /// Number of guest pages the bitmap covers.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// The bitmap bytes (bit n = pfn n), as last filled by a clean/peek.
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: hbuf has nr_pages * 4096 bytes, owned by us until drop.
        unsafe {
            std::slice::from_raw_parts(self.buf.hbuf as *const u8, self.pages.div_ceil(8) as usize)
        }
    }

    /// Whether pfn is marked dirty.
    pub fn is_dirty(&self, pfn: u64) -> bool {
        pfn < self.pages && self.as_bytes()[(pfn / 8) as usize] & (1 << (pfn % 8)) != 0
    }

    /// The dirty pfns in ascending order.
    pub fn dirty_pfns(&self) -> Vec<u64> {
        (0..self.pages).filter(|&p| self.is_dirty(p)).collect()
    }
}

impl Drop for DirtyBitmap<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated with alloc_pages(nr_pages) on this handle.
        unsafe {
            sys::xc__hypercall_buffer_free_pages(self.xc.raw(), &mut *self.buf, self.nr_pages)
        };
    }
}

/// A vCPU's saved register state (`vcpu_guest_context_any_t`, x86_64 view).
pub struct VcpuContext(Box<sys::vcpu_guest_context_any_t>);

impl VcpuContext {
    /// The x86_64 layout of the context.
    pub fn x86_64(&self) -> &sys::vcpu_guest_context_x86_64_t {
        // SAFETY: every union member is plain data; dom0 is 64-bit.
        unsafe { &self.0.x64 }
    }
    /// Mutable x86_64 view, for editing before `set_vcpu_context`.
    pub fn x86_64_mut(&mut self) -> &mut sys::vcpu_guest_context_x86_64_t {
        // SAFETY: as above.
        unsafe { &mut self.0.x64 }
    }
    /// A context from the migration stream's X86_PV_VCPU_BASIC blob (the
    /// 5168-byte x86_64 `vcpu_guest_context`), as restore needs it for
    /// `set_vcpu_context`. `None` if `blob` has another size.
    pub fn from_bytes(blob: &[u8]) -> Option<VcpuContext> {
        let size = std::mem::size_of::<sys::vcpu_guest_context_x86_64_t>();
        if blob.len() != size {
            return None;
        }
        // SAFETY: the union is plain data; all-zero is a valid value.
        let mut ctx: Box<sys::vcpu_guest_context_any_t> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: the union is at least `size` bytes (its x64 member) and
        // every bit pattern is valid plain data.
        unsafe {
            std::ptr::copy_nonoverlapping(blob.as_ptr(), &mut *ctx as *mut _ as *mut u8, size)
        };
        Some(VcpuContext(ctx))
    }

    /// The raw 5168 bytes (the migration stream's X86_PV_VCPU_BASIC blob).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: the union is plain data of this size.
        unsafe {
            std::slice::from_raw_parts(
                &*self.0 as *const _ as *const u8,
                std::mem::size_of::<sys::vcpu_guest_context_x86_64_t>(),
            )
        }
    }
}

/// Vendor/family/model of the CPU we run on, via CPUID.
///
/// In a PV dom0 Xen may intercept CPUID (faulting); the answer is then
/// dom0's policy, which keeps the host vendor, family and model.
#[cfg(target_arch = "x86_64")]
pub fn host_cpuid() -> CpuId {
    use core::arch::x86_64::__cpuid;
    // CPUID is always available on x86_64 and has no memory effects.
    let l0 = __cpuid(0);
    let mut vendor = Vec::with_capacity(12);
    for r in [l0.ebx, l0.edx, l0.ecx] {
        vendor.extend_from_slice(&r.to_le_bytes());
    }
    let l1 = __cpuid(1);
    decode_cpuid(String::from_utf8_lossy(&vendor).into_owned(), l1.eax)
}

/// Decodes CPUID leaf 1 EAX into display family/model the way Linux does.
pub fn decode_cpuid(vendor: String, eax: u32) -> CpuId {
    let base_family = (eax >> 8) & 0xf;
    let mut family = base_family;
    if base_family == 0xf {
        family += (eax >> 20) & 0xff;
    }
    let mut model = (eax >> 4) & 0xf;
    if base_family >= 0x6 {
        model += ((eax >> 16) & 0xf) << 4;
    }
    CpuId {
        vendor,
        family,
        model,
        stepping: eax & 0xf,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_decoding() {
        // Intel Skylake client: family 6 model 0x5e stepping 3.
        let c = decode_cpuid("GenuineIntel".into(), 0x000506e3);
        assert_eq!((c.family, c.model, c.stepping), (6, 0x5e, 3));
        // AMD Zen 2 (EPYC Rome): family 0x17 model 0x31.
        let c = decode_cpuid("AuthenticAMD".into(), 0x00830f10);
        assert_eq!((c.family, c.model, c.stepping), (0x17, 0x31, 0));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn host_cpuid_reports_a_known_vendor() {
        let c = host_cpuid();
        assert_eq!(c.vendor.len(), 12);
        assert!(c.family > 0);
    }

    #[test]
    fn vcpu_context_blob_is_5168_bytes() {
        // SAFETY: plain data.
        let ctx = VcpuContext(Box::new(unsafe { std::mem::zeroed() }));
        assert_eq!(ctx.as_bytes().len(), 5168);
        assert_eq!(ctx.x86_64().ctrlreg[3], 0);
        let mut blob = vec![0u8; 5168];
        blob[5168 - 1] = 0x5a;
        let back = VcpuContext::from_bytes(&blob).expect("5168 bytes");
        assert_eq!(back.as_bytes(), &blob[..]);
        assert!(VcpuContext::from_bytes(&blob[1..]).is_none());
    }
}
