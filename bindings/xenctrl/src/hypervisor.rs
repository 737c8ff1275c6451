//! The small boundary the daemon programs against, so its logic can be
//! unit-tested with [`FakeHypervisor`] instead of a real Xen.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::error::{Errno, Error, Result};
use crate::types::*;
use crate::XenCtrl;

/// Host and domain-lifecycle operations the toolstack needs from Xen.
pub trait Hypervisor: Send {
    /// Host memory/CPU/capabilities.
    fn physinfo(&self) -> Result<PhysInfo>;
    /// Per-CPU topology.
    fn cpu_topology(&self) -> Result<Vec<CpuTopology>>;
    /// Per-CPU idle time, ns.
    fn cpu_idle_times(&self) -> Result<Vec<u64>>;
    /// A CPU featureset as 32-bit words.
    fn cpu_featureset(&self, kind: FeaturesetKind) -> Result<Vec<u32>>;
    /// Creates an empty paused domain.
    fn create_domain(&self, cfg: &DomainConfig) -> Result<DomId>;
    /// One domain's info (`ESRCH` if absent).
    fn domain_info(&self, domid: DomId) -> Result<DomainInfo>;
    /// All domains.
    fn domains(&self) -> Result<Vec<DomainInfo>>;
    /// Pauses a domain.
    fn pause_domain(&self, domid: DomId) -> Result<()>;
    /// Unpauses a domain.
    fn unpause_domain(&self, domid: DomId) -> Result<()>;
    /// Shuts a domain down with a reason.
    fn shutdown_domain(&self, domid: DomId, reason: ShutdownReason) -> Result<()>;
    /// Destroys a domain.
    fn destroy_domain(&self, domid: DomId) -> Result<()>;
    /// Sets maximum memory in KiB.
    fn set_max_mem(&self, domid: DomId, max_kib: u64) -> Result<()>;
    /// Allocates vCPUs.
    fn set_max_vcpus(&self, domid: DomId, n: u32) -> Result<()>;
}

impl Hypervisor for XenCtrl {
    fn physinfo(&self) -> Result<PhysInfo> {
        XenCtrl::physinfo(self)
    }
    fn cpu_topology(&self) -> Result<Vec<CpuTopology>> {
        XenCtrl::cpu_topology(self)
    }
    fn cpu_idle_times(&self) -> Result<Vec<u64>> {
        XenCtrl::cpu_idle_times(self)
    }
    fn cpu_featureset(&self, kind: FeaturesetKind) -> Result<Vec<u32>> {
        XenCtrl::cpu_featureset(self, kind)
    }
    fn create_domain(&self, cfg: &DomainConfig) -> Result<DomId> {
        XenCtrl::create_domain(self, cfg)
    }
    fn domain_info(&self, domid: DomId) -> Result<DomainInfo> {
        XenCtrl::domain_info(self, domid)
    }
    fn domains(&self) -> Result<Vec<DomainInfo>> {
        // DOMID_FIRST_RESERVED bounds the number of real domains.
        self.domain_info_list(0, 0x7ff0)
    }
    fn pause_domain(&self, domid: DomId) -> Result<()> {
        XenCtrl::pause_domain(self, domid)
    }
    fn unpause_domain(&self, domid: DomId) -> Result<()> {
        XenCtrl::unpause_domain(self, domid)
    }
    fn shutdown_domain(&self, domid: DomId, reason: ShutdownReason) -> Result<()> {
        XenCtrl::shutdown_domain(self, domid, reason)
    }
    fn destroy_domain(&self, domid: DomId) -> Result<()> {
        XenCtrl::destroy_domain(self, domid)
    }
    fn set_max_mem(&self, domid: DomId, max_kib: u64) -> Result<()> {
        XenCtrl::set_max_mem(self, domid, max_kib)
    }
    fn set_max_vcpus(&self, domid: DomId, n: u32) -> Result<()> {
        XenCtrl::set_max_vcpus(self, domid, n)
    }
}

const FLAG_SHUTDOWN: u32 = 1 << 2;
const FLAG_PAUSED: u32 = 1 << 3;
const FLAG_BLOCKED: u32 = 1 << 4;

/// In-memory hypervisor for tests: a host plus a table of domains that
/// follows Xen's rules closely enough for toolstack logic (ids from 1,
/// created paused, pause counts collapsed to a flag, ESRCH for unknown ids).
pub struct FakeHypervisor {
    host: PhysInfo,
    state: Mutex<FakeState>,
}

struct FakeState {
    next: DomId,
    domains: BTreeMap<DomId, DomainInfo>,
}

impl FakeHypervisor {
    /// A fake host with `nr_cpus` CPUs and `mem_mib` MiB, running only dom0.
    pub fn new(nr_cpus: u32, mem_mib: u64) -> Self {
        let host = PhysInfo {
            threads_per_core: 1,
            cores_per_socket: nr_cpus,
            nr_cpus,
            max_cpu_id: nr_cpus.saturating_sub(1),
            nr_nodes: 1,
            cpu_khz: 2_000_000,
            capabilities: PhysCaps(0b11011),
            total_pages: mem_mib << 8,
            free_pages: mem_mib << 7,
            ..Default::default()
        };
        let dom0 = DomainInfo {
            domid: 0,
            flags: 1 << 5,
            tot_pages: mem_mib << 7,
            max_pages: u64::MAX >> 12,
            shared_info_frame: 0,
            cpu_time_ns: 0,
            nr_online_vcpus: nr_cpus,
            max_vcpu_id: nr_cpus.saturating_sub(1),
            handle: [0; 16],
            cpupool: 0,
        };
        FakeHypervisor {
            host,
            state: Mutex::new(FakeState {
                next: 1,
                domains: BTreeMap::from([(0, dom0)]),
            }),
        }
    }

    fn with<T>(
        &self,
        op: &'static str,
        domid: DomId,
        f: impl FnOnce(&mut DomainInfo) -> T,
    ) -> Result<T> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.domains.get_mut(&domid).map(f).ok_or(Error::Xen {
            op,
            context: format!("domid {domid}"),
            errno: Errno(libc::ESRCH),
        })
    }
}

impl Hypervisor for FakeHypervisor {
    fn physinfo(&self) -> Result<PhysInfo> {
        Ok(self.host.clone())
    }
    fn cpu_topology(&self) -> Result<Vec<CpuTopology>> {
        Ok((0..self.host.nr_cpus)
            .map(|c| CpuTopology {
                core: Some(c),
                socket: Some(0),
                node: Some(0),
            })
            .collect())
    }
    fn cpu_idle_times(&self) -> Result<Vec<u64>> {
        Ok(vec![0; self.host.nr_cpus as usize])
    }
    fn cpu_featureset(&self, kind: FeaturesetKind) -> Result<Vec<u32>> {
        // Distinct, recognisable words per kind.
        let k = kind as u32;
        Ok(vec![0x1000_0000 | k, 0x2000_0000 | k, 0xdead_be00 | k])
    }
    fn create_domain(&self, cfg: &DomainConfig) -> Result<DomId> {
        if cfg.max_vcpus == 0 {
            return Err(Error::Xen {
                op: "xc_domain_create",
                context: format!("{:?}", cfg.kind),
                errno: Errno(libc::EINVAL),
            });
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let domid = st.next;
        st.next += 1;
        let hvm = if cfg.kind == DomainType::Pv {
            0
        } else {
            1 << 1
        };
        st.domains.insert(
            domid,
            DomainInfo {
                domid,
                flags: FLAG_PAUSED | hvm,
                tot_pages: 0,
                max_pages: 0,
                shared_info_frame: 0,
                cpu_time_ns: 0,
                nr_online_vcpus: 0,
                max_vcpu_id: 0,
                handle: cfg.handle,
                cpupool: cfg.cpupool,
            },
        );
        Ok(domid)
    }
    fn domain_info(&self, domid: DomId) -> Result<DomainInfo> {
        self.with("xc_domain_getinfolist", domid, |d| d.clone())
    }
    fn domains(&self) -> Result<Vec<DomainInfo>> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(st.domains.values().cloned().collect())
    }
    fn pause_domain(&self, domid: DomId) -> Result<()> {
        self.with("xc_domain_pause", domid, |d| {
            d.flags = (d.flags | FLAG_PAUSED) & !(1 << 5)
        })
    }
    fn unpause_domain(&self, domid: DomId) -> Result<()> {
        self.with("xc_domain_unpause", domid, |d| {
            d.flags = (d.flags & !FLAG_PAUSED) | FLAG_BLOCKED
        })
    }
    fn shutdown_domain(&self, domid: DomId, reason: ShutdownReason) -> Result<()> {
        self.with("xc_domain_shutdown", domid, |d| {
            d.flags = (d.flags & 0xffff) | FLAG_SHUTDOWN | ((reason.to_raw() & 0xff) << 16)
        })
    }
    fn destroy_domain(&self, domid: DomId) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.domains.remove(&domid).map(drop).ok_or(Error::Xen {
            op: "xc_domain_destroy",
            context: format!("domid {domid}"),
            errno: Errno(libc::ESRCH),
        })
    }
    fn set_max_mem(&self, domid: DomId, max_kib: u64) -> Result<()> {
        self.with("xc_domain_setmaxmem", domid, |d| d.max_pages = max_kib / 4)
    }
    fn set_max_vcpus(&self, domid: DomId, n: u32) -> Result<()> {
        self.with("xc_domain_max_vcpus", domid, |d| {
            d.nr_online_vcpus = n;
            d.max_vcpu_id = n.saturating_sub(1);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Toolstack-style logic written against the trait.
    fn build_pv(h: &dyn Hypervisor, mem_kib: u64, vcpus: u32) -> Result<DomId> {
        let d = h.create_domain(&DomainConfig::pv(vcpus))?;
        h.set_max_vcpus(d, vcpus)?;
        h.set_max_mem(d, mem_kib)?;
        Ok(d)
    }

    #[test]
    fn fake_follows_the_domain_lifecycle() {
        let h = FakeHypervisor::new(4, 8192);
        assert_eq!(h.physinfo().unwrap().total_memory_mib(), 8192);
        let d = build_pv(&h, 65536, 2).unwrap();
        let i = h.domain_info(d).unwrap();
        assert!(i.paused());
        assert_eq!(i.max_mem_kib(), 65536);
        assert_eq!(i.nr_online_vcpus, 2);
        h.unpause_domain(d).unwrap();
        assert!(!h.domain_info(d).unwrap().paused());
        h.shutdown_domain(d, ShutdownReason::Suspend).unwrap();
        assert_eq!(
            h.domain_info(d).unwrap().shutdown(),
            Some(ShutdownReason::Suspend)
        );
        h.destroy_domain(d).unwrap();
        let e = h.pause_domain(d).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("xc_domain_pause(domid {d}): No such process (errno 3)")
        );
        assert_eq!(h.domains().unwrap().len(), 1);
    }
}
