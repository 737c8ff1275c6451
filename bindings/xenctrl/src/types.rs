//! Plain data types returned by the wrappers; no FFI types leak out.

/// A Xen domain id.
pub type DomId = u32;

/// Host capabilities (`XEN_SYSCTL_PHYSCAP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PhysCaps(pub u32);

impl PhysCaps {
    /// HVM guests can be run.
    pub fn hvm(self) -> bool {
        self.0 & (1 << 0) != 0
    }
    /// PV guests can be run.
    pub fn pv(self) -> bool {
        self.0 & (1 << 1) != 0
    }
    /// Device passthrough is available.
    pub fn directio(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// Hardware-assisted paging is available.
    pub fn hap(self) -> bool {
        self.0 & (1 << 3) != 0
    }
    /// Shadow paging is available.
    pub fn shadow(self) -> bool {
        self.0 & (1 << 4) != 0
    }
    /// Names in the order and spelling `xl info` uses for `virt_caps`.
    pub fn names(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, name) in [
            (self.pv(), "pv"),
            (self.hvm(), "hvm"),
            (self.hvm() && self.hap(), "hap"),
            (self.shadow(), "shadow"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }
}

/// Host physical information (`xc_physinfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PhysInfo {
    /// Hyperthreads per core.
    pub threads_per_core: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// Online CPUs.
    pub nr_cpus: u32,
    /// Largest possible CPU id.
    pub max_cpu_id: u32,
    /// Online NUMA nodes.
    pub nr_nodes: u32,
    /// Largest possible node id.
    pub max_node_id: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// Virtualisation capabilities.
    pub capabilities: PhysCaps,
    /// Total host pages (4 KiB).
    pub total_pages: u64,
    /// Free host pages.
    pub free_pages: u64,
    /// Pages waiting to be scrubbed.
    pub scrub_pages: u64,
    /// Pages claimed but not yet allocated.
    pub outstanding_pages: u64,
    /// Largest possible machine frame number.
    pub max_mfn: u64,
    /// Hardware capability words (`xl info`'s `hw_caps`).
    pub hw_cap: [u32; 8],
}

impl PhysInfo {
    /// Total memory in MiB, as `xl info` prints `total_memory`.
    pub fn total_memory_mib(&self) -> u64 {
        self.total_pages >> 8
    }
    /// Free memory in MiB, as `xl info` prints `free_memory`.
    pub fn free_memory_mib(&self) -> u64 {
        self.free_pages >> 8
    }
    /// `hw_caps` formatted like `xl info`: 8 words of 8 hex digits, colon separated.
    pub fn hw_caps_string(&self) -> String {
        self.hw_cap
            .iter()
            .map(|w| format!("{w:08x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// Where one CPU sits; `None` fields are offline/unknown CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTopology {
    /// Core id.
    pub core: Option<u32>,
    /// Socket id.
    pub socket: Option<u32>,
    /// NUMA node id.
    pub node: Option<u32>,
}

/// Host CPU identity read with CPUID in dom0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuId {
    /// Vendor string, e.g. `GenuineIntel` or `AuthenticAMD`.
    pub vendor: String,
    /// Display family (base + extended).
    pub family: u32,
    /// Display model (base + extended).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
}

/// Which featureset `xc_get_cpu_featureset` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeaturesetKind {
    /// What the hardware reports.
    Raw = 0,
    /// What Xen uses.
    Host = 1,
    /// Default for PV guests.
    Pv = 2,
    /// Default for HVM guests.
    Hvm = 3,
    /// Most a PV guest may be given (migration checks; Xen 4.14+).
    PvMax = 4,
    /// Most an HVM guest may be given (migration checks; Xen 4.14+).
    HvmMax = 5,
}

/// Why a domain shut down (`SHUTDOWN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// Halted.
    Poweroff,
    /// Wants a reboot.
    Reboot,
    /// Suspended for save/migrate.
    Suspend,
    /// Crashed.
    Crash,
    /// Watchdog fired.
    Watchdog,
    /// Soft reset requested.
    SoftReset,
    /// A code this crate does not know.
    Other(u32),
}

impl ShutdownReason {
    /// From the raw `SHUTDOWN_*` code.
    pub fn from_raw(v: u32) -> Self {
        match v {
            0 => Self::Poweroff,
            1 => Self::Reboot,
            2 => Self::Suspend,
            3 => Self::Crash,
            4 => Self::Watchdog,
            5 => Self::SoftReset,
            n => Self::Other(n),
        }
    }
    /// The raw `SHUTDOWN_*` code.
    pub fn to_raw(self) -> u32 {
        match self {
            Self::Poweroff => 0,
            Self::Reboot => 1,
            Self::Suspend => 2,
            Self::Crash => 3,
            Self::Watchdog => 4,
            Self::SoftReset => 5,
            Self::Other(n) => n,
        }
    }
}

/// One domain as `xc_domain_getinfolist` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainInfo {
    /// Domain id.
    pub domid: DomId,
    /// Raw `XEN_DOMINF_*` flags.
    pub flags: u32,
    /// Pages currently allocated.
    pub tot_pages: u64,
    /// Maximum pages allowed.
    pub max_pages: u64,
    /// Shared-info frame.
    pub shared_info_frame: u64,
    /// CPU time used, ns.
    pub cpu_time_ns: u64,
    /// Online vCPUs.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id.
    pub max_vcpu_id: u32,
    /// Domain handle (UUID bytes).
    pub handle: [u8; 16],
    /// CPU pool.
    pub cpupool: u32,
}

impl DomainInfo {
    /// The domain is being destroyed.
    pub fn dying(&self) -> bool {
        self.flags & 1 != 0
    }
    /// The domain is HVM.
    pub fn hvm(&self) -> bool {
        self.flags & (1 << 1) != 0
    }
    /// Shut down, and why; `None` while not shut down.
    pub fn shutdown(&self) -> Option<ShutdownReason> {
        (self.flags & (1 << 2) != 0).then(|| ShutdownReason::from_raw((self.flags >> 16) & 0xff))
    }
    /// Paused by the toolstack.
    pub fn paused(&self) -> bool {
        self.flags & (1 << 3) != 0
    }
    /// Blocked waiting for an event.
    pub fn blocked(&self) -> bool {
        self.flags & (1 << 4) != 0
    }
    /// A vCPU is running right now.
    pub fn running(&self) -> bool {
        self.flags & (1 << 5) != 0
    }
    /// Shut down with reason crash.
    pub fn crashed(&self) -> bool {
        self.shutdown() == Some(ShutdownReason::Crash)
    }
    /// Maximum memory in KiB (what `xl list` derives its max from).
    pub fn max_mem_kib(&self) -> u64 {
        self.max_pages.saturating_mul(4)
    }
    /// Current memory in KiB.
    pub fn mem_kib(&self) -> u64 {
        self.tot_pages * 4
    }
    /// The six-letter state `xl list` prints: r, b, p, s (shut down), then
    /// the shutdown reason letter (`-rscwS` by code), then d.
    pub fn xl_state(&self) -> String {
        let c = |b: bool, ch: char| if b { ch } else { '-' };
        let reason = match self.shutdown() {
            None => '-',
            Some(r) => "-rscwS".chars().nth(r.to_raw() as usize).unwrap_or('?'),
        };
        [
            c(self.running(), 'r'),
            c(self.blocked(), 'b'),
            c(self.paused(), 'p'),
            c(self.shutdown().is_some(), 's'),
            reason,
            c(self.dying(), 'd'),
        ]
        .iter()
        .collect()
    }
}

/// Guest type for domain creation; decides the createdomain flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    /// Paravirtualised.
    Pv,
    /// PVH: HVM container, no device model, emulated LAPIC only.
    Pvh,
    /// Fully virtualised with a device model.
    Hvm,
}

/// Parameters for `xc_domain_create`, defaulting to what libxl uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// PV, PVH or HVM.
    pub kind: DomainType,
    /// Domain handle, normally the VM's UUID bytes.
    pub handle: [u8; 16],
    /// Maximum vCPUs.
    pub max_vcpus: u32,
    /// Highest event channel port (libxl default 1023).
    pub max_evtchn_port: u32,
    /// Grant-table frames (libxl default 64); negative = Xen default.
    pub max_grant_frames: i32,
    /// Maptrack frames (libxl default 1024); negative = Xen default.
    pub max_maptrack_frames: i32,
    /// Highest grant-table version the guest may use (1 or 2).
    pub max_grant_version: u32,
    /// Use hardware-assisted paging (PVH/HVM only).
    pub hap: bool,
    /// Allow the domain to use the IOMMU (passthrough).
    pub iommu: bool,
    /// Domain must be created in this CPU pool.
    pub cpupool: u32,
}

impl DomainConfig {
    /// A PV domain with libxl's defaults.
    pub fn pv(max_vcpus: u32) -> Self {
        DomainConfig {
            kind: DomainType::Pv,
            handle: [0; 16],
            max_vcpus,
            max_evtchn_port: 1023,
            max_grant_frames: 64,
            max_maptrack_frames: 1024,
            max_grant_version: 1,
            hap: false,
            iommu: false,
            cpupool: 0,
        }
    }

    /// The `XEN_DOMCTL_CDF_*` flags for this config.
    pub fn cdf_flags(&self) -> u32 {
        const HVM: u32 = 1 << 0;
        const HAP: u32 = 1 << 1;
        const IOMMU: u32 = 1 << 5;
        let mut f = 0;
        if self.kind != DomainType::Pv {
            f |= HVM;
            if self.hap {
                f |= HAP;
            }
        }
        if self.iommu {
            f |= IOMMU;
        }
        f
    }

    /// x86 `XEN_X86_EMU_*` emulation flags as libxl chooses them.
    pub fn emulation_flags(&self) -> u32 {
        const LAPIC: u32 = 1 << 0;
        const ALL: u32 = 0x7ff;
        const VPCI: u32 = 1 << 10;
        match self.kind {
            DomainType::Pv => 0,
            DomainType::Pvh => LAPIC,
            // vPCI is only for a PVH hardware domain.
            DomainType::Hvm => ALL & !VPCI,
        }
    }
}

/// Counters returned by a log-dirty clean/peek.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogDirtyStats {
    /// Pages covered by the bitmap the hypervisor filled.
    pub pages: u64,
    /// Shadow faults since the last clean.
    pub fault_count: u32,
    /// Dirty pages since the last clean.
    pub dirty_count: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(flags: u32) -> DomainInfo {
        DomainInfo {
            domid: 1,
            flags,
            tot_pages: 256,
            max_pages: 512,
            shared_info_frame: 0,
            cpu_time_ns: 0,
            nr_online_vcpus: 1,
            max_vcpu_id: 0,
            handle: [0; 16],
            cpupool: 0,
        }
    }

    #[test]
    fn state_flags_decode() {
        assert_eq!(info(1 << 5).xl_state(), "r-----");
        assert_eq!(info(1 << 3).xl_state(), "--p---");
        let crashed = info((1 << 2) | (3 << 16));
        assert!(crashed.crashed());
        assert_eq!(crashed.xl_state(), "---sc-");
        let suspended = info((1 << 2) | (2 << 16));
        assert_eq!(suspended.shutdown(), Some(ShutdownReason::Suspend));
        assert_eq!(suspended.xl_state(), "---ss-");
        assert!(info(1).dying());
        assert_eq!(info(0).max_mem_kib(), 2048);
        assert_eq!(info(0).mem_kib(), 1024);
    }

    #[test]
    fn create_flags_follow_libxl() {
        let pv = DomainConfig::pv(2);
        assert_eq!(pv.cdf_flags(), 0);
        assert_eq!(pv.emulation_flags(), 0);
        let pvh = DomainConfig {
            kind: DomainType::Pvh,
            hap: true,
            ..pv.clone()
        };
        assert_eq!(pvh.cdf_flags(), 0b11);
        assert_eq!(pvh.emulation_flags(), 1);
        let hvm = DomainConfig {
            kind: DomainType::Hvm,
            hap: false,
            iommu: true,
            ..pv
        };
        assert_eq!(hvm.cdf_flags(), 1 | (1 << 5));
        assert_eq!(hvm.emulation_flags(), 0x3ff);
    }

    #[test]
    fn physinfo_units_match_xl_info() {
        let p = PhysInfo {
            total_pages: 262_144,
            free_pages: 1024,
            hw_cap: [0xbfebfbff, 0x7ffafbff, 0, 0, 0, 0, 0, 0],
            ..Default::default()
        };
        assert_eq!(p.total_memory_mib(), 1024);
        assert_eq!(p.free_memory_mib(), 4);
        assert!(p.hw_caps_string().starts_with("bfebfbff:7ffafbff:00000000"));
        assert_eq!(
            PhysCaps(0b11011).names(),
            vec!["pv", "hvm", "hap", "shadow"]
        );
    }

    #[test]
    fn shutdown_reason_round_trips() {
        for n in 0..8 {
            assert_eq!(ShutdownReason::from_raw(n).to_raw(), n);
        }
    }
}
