//! An in-memory [`Hypervisor`] for tests of the orchestration without Xen:
//! ids from 1, created paused, builds that succeed (or fail on request),
//! shutdowns a test triggers as the guest would.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use uuid::Uuid;
use xenctrl::{DomId, Errno, ShutdownReason};

use super::hypervisor::{Daemons, DomainState, Hypervisor, ImageError, Power, Rings};
use super::spec::DomainSpec;

const ESRCH: i32 = 3;
const EINVAL: i32 = 22;

/// The fake host: dom0 plus what was created.
pub struct FakeHypervisor {
    st: Mutex<State>,
}

struct State {
    next: DomId,
    domains: BTreeMap<DomId, DomainState>,
    fail_builds: bool,
    fail_saves: bool,
}

/// What the fake writes as a domain's image: its handle, so a restore
/// of another VM's image is caught.
fn image_text(handle: &Uuid) -> String {
    format!("fake image of {handle}\n")
}

impl Default for FakeHypervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeHypervisor {
    /// A host running only dom0.
    pub fn new() -> Self {
        let dom0 = DomainState {
            domid: 0,
            handle: Uuid::nil(),
            power: Power::Running,
        };
        FakeHypervisor {
            st: Mutex::new(State {
                next: 1,
                domains: BTreeMap::from([(0, dom0)]),
                fail_builds: false,
                fail_saves: false,
            }),
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes every later build fail as libxenguest does on a bad image.
    pub fn fail_builds(&self, on: bool) {
        self.st().fail_builds = on;
    }

    /// Makes every later save fail as a guest that does not suspend does.
    pub fn fail_saves(&self, on: bool) {
        self.st().fail_saves = on;
    }

    /// What the guest's `SCHEDOP_shutdown` does: records the reason.
    pub fn guest_shutdown(&self, domid: DomId, reason: ShutdownReason) {
        if let Some(d) = self.st().domains.get_mut(&domid) {
            d.power = Power::Shutdown(reason);
        }
    }

    fn with<T>(
        &self,
        op: &'static str,
        domid: DomId,
        f: impl FnOnce(&mut DomainState) -> T,
    ) -> xenctrl::Result<T> {
        self.st()
            .domains
            .get_mut(&domid)
            .map(f)
            .ok_or(xenctrl::Error::Xen {
                op,
                context: format!("domid {domid}"),
                errno: Errno(ESRCH),
            })
    }
}

impl Hypervisor for FakeHypervisor {
    fn create(&self, spec: &DomainSpec) -> xenctrl::Result<DomId> {
        let mut st = self.st();
        let domid = st.next;
        st.next += 1;
        st.domains.insert(
            domid,
            DomainState {
                domid,
                handle: spec.uuid,
                power: Power::Paused,
            },
        );
        Ok(domid)
    }

    fn build(&self, domid: DomId, _: &DomainSpec, _: Daemons) -> xenctrl::Result<Rings> {
        if self.st().fail_builds {
            return Err(xenctrl::Error::Xen {
                op: "xc_dom_parse_image",
                context: format!("domid {domid}, kernel: no loader found"),
                errno: Errno(EINVAL),
            });
        }
        self.with("xc_dom_boot_image", domid, |_| Rings {
            store_port: 1,
            store_mfn: 0x1000 + domid as u64,
            console_port: 2,
            console_mfn: 0x2000 + domid as u64,
        })
    }

    fn unpause(&self, domid: DomId) -> xenctrl::Result<()> {
        self.with("xc_domain_unpause", domid, |d| {
            if d.power == Power::Paused {
                d.power = Power::Running;
            }
        })
    }

    fn pause(&self, domid: DomId) -> xenctrl::Result<()> {
        self.with("xc_domain_pause", domid, |d| {
            if d.power == Power::Running {
                d.power = Power::Paused;
            }
        })
    }

    fn set_memory_cap(&self, domid: DomId, _: u64) -> xenctrl::Result<()> {
        self.with("xc_domain_setmaxmem", domid, |_| ())
    }

    fn destroy(&self, domid: DomId) -> xenctrl::Result<()> {
        self.with("xc_domain_destroy", domid, |_| ())?;
        self.st().domains.remove(&domid);
        Ok(())
    }

    fn domain(&self, domid: DomId) -> xenctrl::Result<Option<DomainState>> {
        Ok(self.st().domains.get(&domid).copied())
    }

    fn domains(&self) -> xenctrl::Result<Vec<DomainState>> {
        Ok(self.st().domains.values().copied().collect())
    }

    fn save(&self, domid: DomId, image: &Path) -> Result<(), ImageError> {
        let mut st = self.st();
        let fail = st.fail_saves;
        let d = st
            .domains
            .get_mut(&domid)
            .ok_or_else(|| ImageError(format!("domain {domid} does not exist")))?;
        if fail {
            return Err(ImageError(format!("domain {domid}: guest did not suspend")));
        }
        // Written in place, as into a suspend VDI.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(|e| ImageError(format!("{}: {e}", image.display())))?;
        std::io::Write::write_all(&mut f, image_text(&d.handle).as_bytes())
            .map_err(|e| ImageError(e.to_string()))?;
        d.power = Power::Shutdown(ShutdownReason::Suspend);
        Ok(())
    }

    fn restore(&self, image: &Path, spec: &DomainSpec) -> Result<(DomId, Rings), ImageError> {
        let text = std::fs::read(image).map_err(|e| ImageError(e.to_string()))?;
        if !text.starts_with(image_text(&spec.uuid).as_bytes()) {
            return Err(ImageError("bad stream content: not this VM's image".into()));
        }
        let domid = self.create(spec).map_err(|e| ImageError(e.to_string()))?;
        Ok((
            domid,
            Rings {
                store_port: 1,
                store_mfn: 0x1000 + domid as u64,
                console_port: 2,
                console_mfn: 0x2000 + domid as u64,
            },
        ))
    }
}
