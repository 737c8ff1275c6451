//! The PV domain builder (libxenguest's `xc_dom_*`) and the calls libxl
//! makes around it before a new PV domain's first unpause.
//!
//! The builder is a fixed sequence on one `xc_dom_image`; calling its steps
//! out of order is undefined in libxenguest, so the sequence is exposed as a
//! single call, [`XenCtrl::build_pv`], whose error names the step that
//! failed and carries libxc's own message.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use xenctrl_sys as sys;

use crate::ctrl::{check, dom};
use crate::error::{Errno, Error, Result};
use crate::types::DomId;
use crate::XenCtrl;

/// What [`XenCtrl::build_pv`] loads into a PV domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvBuildSpec {
    /// The guest kernel (ELF or bzImage; compressed images are unpacked).
    pub kernel: PathBuf,
    /// The initial ramdisk, if any.
    pub ramdisk: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
    /// Memory to populate at boot, in MiB (libxl: the target).
    pub mem_mib: u32,
    /// vCPUs the domain was created with (the builder sizes per-vCPU data).
    pub max_vcpus: u32,
    /// The guest's end of the console event channel (unbound, for `console_domid`).
    pub console_port: u32,
    /// The domain running xenconsoled (0 unless disaggregated).
    pub console_domid: DomId,
    /// The guest's end of the xenstore event channel (unbound, for `store_domid`).
    pub store_port: u32,
    /// The domain running xenstored (0 unless disaggregated).
    pub store_domid: DomId,
}

/// Where the builder put the guest's console and xenstore rings: machine
/// frames, which go to xenstore (`console/ring-ref`, `store/ring-ref`) and
/// to xenstored's introduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvBuilt {
    /// The console ring's MFN.
    pub console_mfn: u64,
    /// The xenstore ring's MFN.
    pub store_mfn: u64,
}

/// An `xc_dom_image`, released on drop (which also unmaps the kernel and
/// ramdisk files it mapped).
struct DomImage<'a> {
    img: NonNull<sys::xc_dom_image>,
    // The image keeps a pointer to the handle it was allocated on.
    _xc: std::marker::PhantomData<&'a XenCtrl>,
}

impl Drop for DomImage<'_> {
    fn drop(&mut self) {
        // SAFETY: allocated by xc_dom_allocate, released once.
        unsafe { sys::xc_dom_release(self.img.as_ptr()) };
    }
}

fn cpath(op: &'static str, p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| Error::Invalid {
        op,
        reason: format!("path {} contains a NUL byte", p.display()),
    })
}

impl XenCtrl {
    /// libxc's last error message on this handle, if it recorded one.
    ///
    /// The builder reports why it failed here ("failed to open file",
    /// "can't allocate low memory", ...) rather than only through errno.
    pub fn last_error_message(&self) -> Option<String> {
        // SAFETY: returns a pointer to a per-handle (or thread-local) record
        // that lives as long as the handle; we copy the message out at once.
        let e = unsafe { sys::xc_get_last_error(self.raw()) };
        if e.is_null() {
            return None;
        }
        // SAFETY: e is valid; message is NUL-terminated within its array.
        let (code, msg) = unsafe {
            (
                (*e).code,
                CStr::from_ptr((*e).message.as_ptr()).to_string_lossy(),
            )
        };
        (code != 0 && !msg.trim().is_empty()).then(|| msg.trim().to_string())
    }

    fn clear_last_error(&self) {
        // SAFETY: plain handle argument.
        unsafe { sys::xc_clear_last_error(self.raw()) };
    }

    /// Applies the default CPUID/MSR policy for a new (not restored) domain,
    /// as libxl does before building: `xc_cpuid_apply_policy` with no
    /// overrides, PAE on, no invariant TSC, no nested virtualisation.
    pub fn apply_default_cpu_policy(&self, domid: DomId) -> Result<()> {
        // SAFETY: null featureset/xend/msr = no overrides.
        check(
            unsafe {
                sys::xc_cpuid_apply_policy(
                    self.raw(),
                    domid,
                    false,
                    std::ptr::null(),
                    0,
                    true,
                    false,
                    false,
                    std::ptr::null(),
                    std::ptr::null(),
                )
            },
            "xc_cpuid_apply_policy",
            || dom(domid),
        )
    }

    /// Loads and boots a PV guest image into `domid`, which must have been
    /// created (PV, paused) and prepared: vCPUs allocated, max memory set,
    /// the two event channels allocated. Runs libxenguest's builder in
    /// libxl's order: allocate (cmdline), kernel, ramdisk, flags, event
    /// channels and their domids, boot_xen_init, parse_image, mem_init,
    /// boot_mem_init, build_image, boot_image, gnttab_init (grant 0 =
    /// console, 1 = xenstore, for `console_domid`/`store_domid`).
    ///
    /// On error the domain is left as it is (partly populated): the caller
    /// destroys it. The error's `op` is the failing step, its context the
    /// domain, the file and libxc's message.
    pub fn build_pv(&self, domid: DomId, spec: &PvBuildSpec) -> Result<PvBuilt> {
        let cmdline = CString::new(spec.cmdline.as_str()).map_err(|_| Error::Invalid {
            op: "xc_dom_allocate",
            reason: "the command line contains a NUL byte".into(),
        })?;
        let kernel = cpath("xc_dom_kernel_file", &spec.kernel)?;
        let ramdisk = spec
            .ramdisk
            .as_deref()
            .map(|r| cpath("xc_dom_module_file", r))
            .transpose()?;
        if spec.mem_mib == 0 || spec.max_vcpus == 0 {
            return Err(Error::Invalid {
                op: "xc_dom_mem_init",
                reason: "memory and vCPUs must be at least 1".into(),
            });
        }
        self.clear_last_error();
        // Every failure names its step and what libxc said about it.
        let fail = |op: &'static str, what: &str| {
            let errno = Errno::last();
            let msg = self.last_error_message().unwrap_or_default();
            let mut context = dom(domid);
            if !what.is_empty() {
                context.push_str(&format!(", {what}"));
            }
            if !msg.is_empty() {
                context.push_str(&format!(": {msg}"));
            }
            Error::Xen { op, context, errno }
        };
        // SAFETY: cmdline is NUL-terminated; null features = none requested.
        let p = unsafe { sys::xc_dom_allocate(self.raw(), cmdline.as_ptr(), std::ptr::null()) };
        let img = DomImage {
            img: NonNull::new(p).ok_or_else(|| fail("xc_dom_allocate", ""))?,
            _xc: std::marker::PhantomData,
        };
        let d = img.img.as_ptr();
        let kernel_s = spec.kernel.display().to_string();
        // SAFETY: d is a live image; kernel is NUL-terminated.
        if unsafe { sys::xc_dom_kernel_file(d, kernel.as_ptr()) } != 0 {
            return Err(fail("xc_dom_kernel_file", &format!("kernel {kernel_s}")));
        }
        if let (Some(r), Some(path)) = (&ramdisk, &spec.ramdisk) {
            // SAFETY: as above; a null module command line is allowed.
            if unsafe { sys::xc_dom_module_file(d, r.as_ptr(), std::ptr::null()) } != 0 {
                return Err(fail(
                    "xc_dom_module_file",
                    &format!("ramdisk {}", path.display()),
                ));
            }
        }
        // SAFETY: d is a live image we own; these are plain fields that the
        // following steps read.
        unsafe {
            // libxl passes 0, clearing xc_dom_allocate's SIF_VIRT_P2M_4TOOLS.
            (*d).flags = 0;
            (*d).console_evtchn = spec.console_port;
            (*d).console_domid = spec.console_domid;
            (*d).xenstore_evtchn = spec.store_port;
            (*d).xenstore_domid = spec.store_domid;
            (*d).max_vcpus = spec.max_vcpus;
        }
        // SAFETY: d is a live image on this handle.
        if unsafe { sys::xc_dom_boot_xen_init(d, self.raw(), domid) } != 0 {
            return Err(fail("xc_dom_boot_xen_init", ""));
        }
        // SAFETY: as above, steps in the builder's order.
        if unsafe { sys::xc_dom_parse_image(d) } != 0 {
            return Err(fail("xc_dom_parse_image", &format!("kernel {kernel_s}")));
        }
        // SAFETY: as above.
        if unsafe { sys::xc_dom_mem_init(d, spec.mem_mib) } != 0 {
            return Err(fail("xc_dom_mem_init", &format!("{} MiB", spec.mem_mib)));
        }
        // SAFETY: as above.
        if unsafe { sys::xc_dom_boot_mem_init(d) } != 0 {
            return Err(fail(
                "xc_dom_boot_mem_init",
                &format!("{} MiB", spec.mem_mib),
            ));
        }
        // SAFETY: as above.
        if unsafe { sys::xc_dom_build_image(d) } != 0 {
            return Err(fail("xc_dom_build_image", ""));
        }
        // SAFETY: as above.
        if unsafe { sys::xc_dom_boot_image(d) } != 0 {
            return Err(fail("xc_dom_boot_image", ""));
        }
        // SAFETY: as above.
        if unsafe { sys::xc_dom_gnttab_init(d) } != 0 {
            return Err(fail("xc_dom_gnttab_init", ""));
        }
        // SAFETY: d is live and fully built; p2m() reads its fields.
        let built = unsafe {
            PvBuilt {
                console_mfn: p2m(d, (*d).console_pfn),
                store_mfn: p2m(d, (*d).xenstore_pfn),
            }
        };
        drop(img);
        if built.console_mfn == INVALID_MFN || built.store_mfn == INVALID_MFN {
            return Err(Error::State {
                op: "xc_dom_p2m",
                context: dom(domid),
                reason: "the console or xenstore page has no machine frame".into(),
            });
        }
        Ok(built)
    }
}

const INVALID_MFN: u64 = !0;

/// `xc_dom_p2m`, a static inline in xenguest.h (so not in the library):
/// a guest pfn's machine frame.
///
/// # Safety
/// `d` must be a live, built image.
unsafe fn p2m(d: *mut sys::xc_dom_image, pfn: sys::xen_pfn_t) -> u64 {
    // SAFETY: per the function's contract.
    unsafe {
        if sys::xc_dom_translated(d) {
            return pfn;
        }
        if pfn >= (*d).total_pages || (*d).pv_p2m.is_null() {
            return INVALID_MFN;
        }
        *(*d).pv_p2m.add(pfn as usize)
    }
}
