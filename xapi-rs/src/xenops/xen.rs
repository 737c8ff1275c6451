//! [`Hypervisor`] on real Xen: libxenctrl and libxenguest via `xenctrl`,
//! in the order libxl uses for a PV guest.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use xenctrl::{DomId, DomainConfig, PvBuildSpec, TscInfo, XenCtrl};

use super::hypervisor::{Daemons, DomainState, Hypervisor, ImageError, Rings};
use super::spec::DomainSpec;

/// libxl's `LIBXL_MAXMEM_CONSTANT`: slack above the target for the
/// pages Xen itself charges to the domain.
const MAXMEM_SLACK_KIB: u64 = 1024;

/// Xen through one libxenctrl handle, used by one thread at a time.
pub struct XenHypervisor {
    xc: Mutex<XenCtrl>,
}

impl XenHypervisor {
    /// Opens `/dev/xen/privcmd` (root in dom0).
    pub fn open() -> xenctrl::Result<Self> {
        Ok(XenHypervisor {
            xc: Mutex::new(XenCtrl::open()?),
        })
    }

    fn xc(&self) -> MutexGuard<'_, XenCtrl> {
        // A panic while holding the handle leaves nothing half-done in it.
        self.xc.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Hypervisor for XenHypervisor {
    fn create(&self, spec: &DomainSpec) -> xenctrl::Result<DomId> {
        let cfg = DomainConfig {
            handle: *spec.uuid.as_bytes(),
            ..DomainConfig::pv(spec.vcpus.max)
        };
        self.xc().create_domain(&cfg)
    }

    fn build(&self, domid: DomId, spec: &DomainSpec, daemons: Daemons) -> xenctrl::Result<Rings> {
        let xc = self.xc();
        // Exactly the createdomain count, or Xen answers EINVAL.
        xc.set_max_vcpus(domid, spec.vcpus.max)?;
        xc.set_max_mem(domid, spec.memory.target_kib + MAXMEM_SLACK_KIB)?;
        xc.set_memmap_limit(domid, spec.memory.static_max_kib)?;
        // TSC mode 0 ("default"), as libxl sets it for a new domain.
        xc.set_tsc_info(domid, &TscInfo::default())?;
        xc.apply_default_cpu_policy(domid)?;
        let store_port = xc.evtchn_alloc_unbound(domid, daemons.store_domid)?;
        let console_port = xc.evtchn_alloc_unbound(domid, daemons.console_domid)?;
        let built = xc.build_pv(
            domid,
            &PvBuildSpec {
                kernel: spec.boot.kernel.clone(),
                ramdisk: spec.boot.ramdisk.clone(),
                cmdline: spec.boot.cmdline.clone(),
                // validate() keeps the target at 16 MiB or more and
                // below 2^32 MiB in practice; saturate rather than wrap.
                mem_mib: u32::try_from(spec.memory.target_kib / 1024).unwrap_or(u32::MAX),
                max_vcpus: spec.vcpus.max,
                console_port,
                console_domid: daemons.console_domid,
                store_port,
                store_domid: daemons.store_domid,
            },
        )?;
        Ok(Rings {
            store_port,
            store_mfn: built.store_mfn,
            console_port,
            console_mfn: built.console_mfn,
        })
    }

    fn set_memory_cap(&self, domid: DomId, target_kib: u64) -> xenctrl::Result<()> {
        self.xc().set_max_mem(domid, target_kib + MAXMEM_SLACK_KIB)
    }

    fn unpause(&self, domid: DomId) -> xenctrl::Result<()> {
        self.xc().unpause_domain(domid)
    }

    fn pause(&self, domid: DomId) -> xenctrl::Result<()> {
        self.xc().pause_domain(domid)
    }

    fn destroy(&self, domid: DomId) -> xenctrl::Result<()> {
        self.xc().destroy_domain(domid)
    }

    fn domain(&self, domid: DomId) -> xenctrl::Result<Option<DomainState>> {
        match self.xc().domain_info(domid) {
            Ok(i) => Ok(Some(DomainState::from(&i))),
            Err(e) if e.errno() == Some(ESRCH) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn save(&self, domid: DomId, image: &Path) -> Result<(), ImageError> {
        use xenguest::save::{save, AfterSave, SaveOptions};
        let err = |what: &str, e: &dyn std::fmt::Display| ImageError(format!("{what}: {e}"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(|e| err(&image.display().to_string(), &e))?;
        let mut out = std::io::BufWriter::with_capacity(IMAGE_BUF, file);
        let opts = SaveOptions {
            after: AfterSave::LeaveSuspended,
            ..SaveOptions::default()
        };
        save(domid, &mut out, &opts, |_| {}).map_err(|e| err("save", &e))?;
        // The image must be on disk before the domain goes: a guest whose
        // image cannot be written runs on instead.
        let synced = out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all());
        if let Err(e) = synced {
            let resumed = xenguest::save::resume_suspended(domid);
            return Err(ImageError(format!(
                "writing {}: {e}{}",
                image.display(),
                resumed.err().map_or(String::new(), |r| format!(
                    "; and resuming the guest failed: {r}"
                ))
            )));
        }
        Ok(())
    }

    fn restore(&self, image: &Path, spec: &DomainSpec) -> Result<(DomId, Rings), ImageError> {
        use xenguest::restore::{restore, RestoreOptions};
        let file = std::fs::File::open(image)
            .map_err(|e| ImageError(format!("{}: {e}", image.display())))?;
        let opts = RestoreOptions {
            uuid: Some(*spec.uuid.as_bytes()),
            memory_mib: Some(spec.memory.static_max_kib.div_ceil(1024)),
            max_vcpus: Some(spec.vcpus.max),
            paused: true,
            // The daemon writes its own tree and introduces the domain.
            no_xenstore: true,
            ..RestoreOptions::default()
        };
        let r = restore(
            &mut std::io::BufReader::with_capacity(IMAGE_BUF, file),
            &opts,
        )
        .map_err(|e| ImageError(format!("restore: {e}")))?;
        Ok((
            r.domid,
            Rings {
                store_port: r.store_port,
                store_mfn: r.store_mfn,
                console_port: r.console_port,
                console_mfn: r.console_mfn,
            },
        ))
    }

    fn domains(&self) -> xenctrl::Result<Vec<DomainState>> {
        // DOMID_FIRST_RESERVED bounds the number of real domains.
        Ok(self
            .xc()
            .domain_info_list(0, 0x7ff0)?
            .iter()
            .map(DomainState::from)
            .collect())
    }
}

/// Buffering of the image file: the engine writes and reads in records
/// of a page or less.
const IMAGE_BUF: usize = 1 << 20;

/// errno ESRCH (no libc dependency for one constant): no such domain.
const ESRCH: i32 = 3;
