//! Facts about the physical host.
//!
//! [`HostProbe`] is the seam to the hypervisor. In production it will be
//! implemented over the libxenctrl bindings (xc_physinfo, xc_get_cpu_featureset,
//! xc_getcpuinfo, xc_version); until those land, [`DomZeroProbe`] reads what
//! dom0 offers without bindings: `xl info` for the hypervisor's view and
//! `/proc/cpuinfo` for the CPU identity. [`FakeProbe`] serves tests.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe: {0}")]
    Failed(String),
}

/// Identity of one physical CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuFacts {
    pub vendor: String,
    pub modelname: String,
    pub family: i64,
    pub model: i64,
    pub stepping: String,
    pub flags: String,
    pub speed_mhz: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub hostname: String,
    pub address: String,
    /// Running kernel of the control domain (`uname -r`).
    pub linux_release: String,
    pub xen_version: String,
    pub nr_cpus: i64,
    pub nr_nodes: i64,
    pub cores_per_socket: i64,
    pub threads_per_core: i64,
    pub socket_count: i64,
    pub total_memory_bytes: i64,
    pub free_memory_bytes: i64,
    /// The CPU model shared by all physical CPUs (one `host_cpu` per CPU is
    /// created from it).
    pub cpu: CpuFacts,
    /// Hypervisor feature words, colon-separated hex (`hw_caps`).
    pub features: String,
    pub features_pv: String,
    pub features_hvm: String,
    pub features_pv_host: String,
    pub features_hvm_host: String,
    /// Hardware capabilities (`hvm`, `hvm_directio`...) from `virt_caps`.
    pub virt_caps: Vec<String>,
}

pub trait HostProbe: Send + Sync {
    /// Static facts, read at start.
    fn host_facts(&self) -> Result<HostFacts, ProbeError>;
    /// Free memory in bytes, read periodically for host_metrics.
    fn free_memory(&self) -> Result<i64, ProbeError>;
    /// Utilisation (0.0..=1.0) of each physical CPU since the previous call.
    fn cpu_utilisation(&self) -> Result<Vec<f64>, ProbeError>;
}

// ---------------------------------------------------------------------------

/// Parse `key : value` lines as printed by `xl info`.
pub fn parse_xl_info(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Parse the first processor block of `/proc/cpuinfo`.
pub fn parse_cpuinfo(text: &str) -> CpuFacts {
    let mut c = CpuFacts {
        vendor: String::new(),
        modelname: String::new(),
        family: 0,
        model: 0,
        stepping: String::new(),
        flags: String::new(),
        speed_mhz: 0,
    };
    for l in text.lines() {
        if l.trim().is_empty() {
            if !c.vendor.is_empty() {
                break;
            }
            continue;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "vendor_id" => c.vendor = v.to_string(),
            "model name" => c.modelname = v.to_string(),
            "cpu family" => c.family = v.parse().unwrap_or(0),
            "model" => c.model = v.parse().unwrap_or(0),
            "stepping" => c.stepping = v.to_string(),
            "flags" => c.flags = v.to_string(),
            "cpu MHz" => c.speed_mhz = v.parse::<f64>().map(|f| f as i64).unwrap_or(0),
            _ => {}
        }
    }
    c
}

fn local_address() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| "127.0.0.1".into())
}

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Reads dom0: `xl info` and procfs.
///
/// BINDINGS: every `xl info` read below is to be replaced by libxenctrl calls
/// (physinfo: nr_cpus/nr_nodes/cores_per_socket/threads_per_core/cpu_khz/
/// total_pages/free_pages/hw_cap/capabilities; version: xen_version;
/// get_cpu_featureset for the features_* words; getcpuinfo for utilisation).
pub struct DomZeroProbe {
    pub xl: String,
}

impl Default for DomZeroProbe {
    fn default() -> Self {
        DomZeroProbe { xl: "xl".into() }
    }
}

impl DomZeroProbe {
    fn xl_info(&self) -> Result<Vec<(String, String)>, ProbeError> {
        // BINDINGS: replace with xc_physinfo + xc_version.
        let out = Command::new(&self.xl)
            .arg("info")
            .output()
            .map_err(|e| ProbeError::Failed(format!("{} info: {e}", self.xl)))?;
        if !out.status.success() {
            return Err(ProbeError::Failed(format!(
                "{} info: {}",
                self.xl,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(parse_xl_info(&String::from_utf8_lossy(&out.stdout)))
    }
}

fn meminfo_kb(key: &str) -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let rest = l.strip_prefix(key)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse().ok()
            })
        })
        .unwrap_or(0)
}

/// Build facts from `xl info` pairs (or none, outside Xen) and procfs text.
pub fn facts_from(xl: Option<&[(String, String)]>, cpuinfo: &str) -> HostFacts {
    let get = |k: &str| -> Option<String> {
        xl.and_then(|x| x.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone()))
    };
    let num = |k: &str| get(k).and_then(|v| v.parse::<i64>().ok());
    let mut cpu = parse_cpuinfo(cpuinfo);
    let online = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count() as i64;
    if let Some(mhz) = get("cpu_mhz")
        .and_then(|v| v.parse::<f64>().ok())
        .map(|f| f as i64)
    {
        cpu.speed_mhz = mhz;
    }
    let nr_cpus = num("nr_cpus").unwrap_or(online.max(1));
    let threads = num("threads_per_core").unwrap_or(1).max(1);
    let cores = num("cores_per_socket").unwrap_or(nr_cpus / threads).max(1);
    let hw_caps = get("hw_caps").unwrap_or_default();
    let mib = 1024 * 1024;
    HostFacts {
        hostname: get("host").unwrap_or_else(|| read_trim("/proc/sys/kernel/hostname")),
        address: local_address(),
        linux_release: get("release").unwrap_or_else(|| read_trim("/proc/sys/kernel/osrelease")),
        xen_version: get("xen_version").unwrap_or_else(|| {
            match (get("xen_major"), get("xen_minor"), get("xen_extra")) {
                (Some(a), Some(b), Some(c)) => format!("{a}.{b}{c}"),
                _ => String::new(),
            }
        }),
        nr_cpus,
        nr_nodes: num("nr_nodes").unwrap_or(1),
        cores_per_socket: cores,
        threads_per_core: threads,
        socket_count: (nr_cpus / (cores * threads)).max(1),
        total_memory_bytes: num("total_memory")
            .map(|m| m * mib)
            .unwrap_or(meminfo_kb("MemTotal") * 1024),
        free_memory_bytes: num("free_memory")
            .map(|m| m * mib)
            .unwrap_or(meminfo_kb("MemAvailable") * 1024),
        cpu,
        features: hw_caps.clone(),
        // BINDINGS: the per-guest-type featuresets come from
        // xc_get_cpu_featureset; until then all carry the raw hw_caps.
        features_pv: hw_caps.clone(),
        features_hvm: hw_caps.clone(),
        features_pv_host: hw_caps.clone(),
        features_hvm_host: hw_caps,
        virt_caps: get("virt_caps")
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default(),
    }
}

impl HostProbe for DomZeroProbe {
    fn host_facts(&self) -> Result<HostFacts, ProbeError> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")
            .map_err(|e| ProbeError::Failed(format!("/proc/cpuinfo: {e}")))?;
        let xl = match self.xl_info() {
            Ok(x) => Some(x),
            Err(e) => {
                tracing::warn!("{e}; falling back to procfs only (not running on Xen?)");
                None
            }
        };
        Ok(facts_from(xl.as_deref(), &cpuinfo))
    }

    fn free_memory(&self) -> Result<i64, ProbeError> {
        // BINDINGS: xc_physinfo().free_pages * page size.
        match self.xl_info() {
            Ok(x) => Ok(facts_from(Some(&x), "").free_memory_bytes),
            Err(_) => Ok(meminfo_kb("MemAvailable") * 1024),
        }
    }

    fn cpu_utilisation(&self) -> Result<Vec<f64>, ProbeError> {
        // BINDINGS: xc_getcpuinfo idletime deltas. No dom0 tool gives the
        // physical CPUs' idle time cheaply, so report 0 until then.
        Ok(vec![])
    }
}

// ---------------------------------------------------------------------------
// Over libxenctrl

/// The reference's featureset format (`Cpuid.string_of_features`): each
/// 32-bit word as 8 lowercase hex digits, joined with `-`.
pub fn featureset_string(words: &[u32]) -> String {
    words
        .iter()
        .map(|w| format!("{w:08x}"))
        .collect::<Vec<_>>()
        .join("-")
}

/// Utilisation of each CPU between two idle-time samples (ns) taken
/// `wall_ns` apart: `1 - idle/wall`, clamped to 0..=1.
pub fn utilisation(prev: &[u64], now: &[u64], wall_ns: u64) -> Vec<f64> {
    now.iter()
        .enumerate()
        .map(|(i, &idle)| {
            let before = prev.get(i).copied().unwrap_or(idle);
            if wall_ns == 0 {
                return 0.0;
            }
            let d = idle.saturating_sub(before) as f64;
            (1.0 - d / wall_ns as f64).clamp(0.0, 1.0)
        })
        .collect()
}

fn xen_version_sysfs() -> String {
    let major = read_trim("/sys/hypervisor/version/major");
    let minor = read_trim("/sys/hypervisor/version/minor");
    let extra = read_trim("/sys/hypervisor/version/extra");
    if major.is_empty() {
        String::new()
    } else {
        format!("{major}.{minor}{extra}")
    }
}

/// Host facts from the hypervisor through the libxenctrl bindings
/// (`xc_physinfo`, `xc_cputopoinfo`, `xc_get_cpu_featureset`,
/// `xc_getcpuinfo`) and CPUID, with `/proc/cpuinfo` only for what Xen does
/// not give: the model name string, the flags and the clock speed (the
/// reference reads these from `/proc/cpuinfo` too).
pub struct XenProbe<H> {
    hv: std::sync::Mutex<H>,
    /// Previous idle-time sample for utilisation deltas.
    last: std::sync::Mutex<Option<(std::time::Instant, Vec<u64>)>>,
    /// Where to read the cpuinfo text (tests point it elsewhere).
    pub cpuinfo_path: String,
    /// CPU identity; `xenctrl::host_cpuid` in production.
    pub cpuid: fn() -> xenctrl::CpuId,
}

impl XenProbe<xenctrl::XenCtrl> {
    /// Opens libxenctrl.
    pub fn open() -> Result<Self, ProbeError> {
        let xc = xenctrl::XenCtrl::open().map_err(|e| ProbeError::Failed(e.to_string()))?;
        Ok(XenProbe::new(xc))
    }
}

impl<H: xenctrl::Hypervisor> XenProbe<H> {
    pub fn new(hv: H) -> Self {
        XenProbe {
            hv: std::sync::Mutex::new(hv),
            last: std::sync::Mutex::new(None),
            cpuinfo_path: "/proc/cpuinfo".into(),
            cpuid: xenctrl::host_cpuid,
        }
    }

    fn hv(&self) -> std::sync::MutexGuard<'_, H> {
        self.hv.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn featureset(&self, kind: xenctrl::FeaturesetKind) -> Option<String> {
        self.hv()
            .cpu_featureset(kind)
            .ok()
            .map(|w| featureset_string(&w))
    }
}

fn failed(e: impl std::fmt::Display) -> ProbeError {
    ProbeError::Failed(e.to_string())
}

impl<H: xenctrl::Hypervisor> HostProbe for XenProbe<H> {
    fn host_facts(&self) -> Result<HostFacts, ProbeError> {
        use xenctrl::FeaturesetKind as K;
        let p = self.hv().physinfo().map_err(failed)?;
        let topo = self.hv().cpu_topology().unwrap_or_default();
        let cpuinfo = std::fs::read_to_string(&self.cpuinfo_path).unwrap_or_default();
        let proc = parse_cpuinfo(&cpuinfo);
        let id = (self.cpuid)();
        let threads = p.threads_per_core.max(1) as i64;
        let cores = p.cores_per_socket.max(1) as i64;
        let nr_cpus = p.nr_cpus as i64;
        // Sockets actually seen in the topology, else the reference's formula.
        let mut sockets: Vec<u32> = topo.iter().filter_map(|t| t.socket).collect();
        sockets.sort_unstable();
        sockets.dedup();
        let socket_count = if sockets.is_empty() {
            (nr_cpus / (threads * cores)).max(1)
        } else {
            sockets.len() as i64
        };
        let page = 4096i64;
        let host = self.featureset(K::Host).unwrap_or_default();
        let pv_host = self.featureset(K::Pv).unwrap_or_default();
        let hvm_host = self.featureset(K::Hvm).unwrap_or_default();
        // As the reference: the max policies, or the defaults if Xen has none.
        let pv = self.featureset(K::PvMax).unwrap_or_else(|| pv_host.clone());
        let hvm = self
            .featureset(K::HvmMax)
            .unwrap_or_else(|| hvm_host.clone());
        let speed = if proc.speed_mhz > 0 {
            proc.speed_mhz
        } else {
            (p.cpu_khz / 1000) as i64
        };
        Ok(HostFacts {
            hostname: read_trim("/proc/sys/kernel/hostname"),
            address: local_address(),
            linux_release: read_trim("/proc/sys/kernel/osrelease"),
            xen_version: xen_version_sysfs(),
            nr_cpus,
            nr_nodes: p.nr_nodes as i64,
            cores_per_socket: cores,
            threads_per_core: threads,
            socket_count,
            total_memory_bytes: p.total_pages as i64 * page,
            free_memory_bytes: p.free_pages as i64 * page,
            cpu: CpuFacts {
                vendor: id.vendor,
                modelname: proc.modelname,
                family: id.family as i64,
                model: id.model as i64,
                stepping: id.stepping.to_string(),
                flags: proc.flags,
                speed_mhz: speed,
            },
            features: host,
            features_pv: pv,
            features_hvm: hvm,
            features_pv_host: pv_host,
            features_hvm_host: hvm_host,
            virt_caps: p
                .capabilities
                .names()
                .into_iter()
                .map(str::to_string)
                .collect(),
        })
    }

    fn free_memory(&self) -> Result<i64, ProbeError> {
        let p = self.hv().physinfo().map_err(failed)?;
        Ok(p.free_pages as i64 * 4096)
    }

    fn cpu_utilisation(&self) -> Result<Vec<f64>, ProbeError> {
        let idle = self.hv().cpu_idle_times().map_err(failed)?;
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let out = match last.as_ref() {
            Some((t, prev)) => utilisation(prev, &idle, now.duration_since(*t).as_nanos() as u64),
            None => vec![0.0; idle.len()],
        };
        *last = Some((now, idle));
        Ok(out)
    }
}

/// Deterministic facts for tests.
pub struct FakeProbe;

impl FakeProbe {
    pub fn facts() -> HostFacts {
        HostFacts {
            hostname: "fakehost".into(),
            address: "127.0.0.1".into(),
            linux_release: "6.1.0-fake".into(),
            xen_version: "4.17.5".into(),
            nr_cpus: 4,
            nr_nodes: 1,
            cores_per_socket: 2,
            threads_per_core: 2,
            socket_count: 1,
            total_memory_bytes: 16 * 1024 * 1024 * 1024,
            free_memory_bytes: 8 * 1024 * 1024 * 1024,
            cpu: CpuFacts {
                vendor: "GenuineIntel".into(),
                modelname: "Intel(R) Core(TM)2 Quad CPU @ 2.66GHz".into(),
                family: 6,
                model: 23,
                stepping: "7".into(),
                flags: "fpu de tsc msr pae mce cx8 apic sep".into(),
                speed_mhz: 2660,
            },
            features: "178bfbff-e3fa3203-2e500800-040001f1".into(),
            features_pv: "17c9cbf5-f6f83203-2191cbf5-00000023".into(),
            features_hvm: "17cbfbff-f7fa3223-2d93fbff-00000023".into(),
            features_pv_host: "17c9cbf5-f6f83203-2191cbf5-00000023".into(),
            features_hvm_host: "17cbfbff-f7fa3223-2d93fbff-00000023".into(),
            virt_caps: vec!["hvm".into(), "hvm_directio".into()],
        }
    }
}

impl HostProbe for FakeProbe {
    fn host_facts(&self) -> Result<HostFacts, ProbeError> {
        Ok(Self::facts())
    }
    fn free_memory(&self) -> Result<i64, ProbeError> {
        Ok(Self::facts().free_memory_bytes)
    }
    fn cpu_utilisation(&self) -> Result<Vec<f64>, ProbeError> {
        Ok(vec![0.25; 4])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xl_info_and_cpuinfo() {
        let xl = "host                   : lab1\nrelease                : 6.1.0-13-amd64\nnr_cpus                : 8\nmax_cpu_id             : 7\nnr_nodes               : 1\ncores_per_socket       : 4\nthreads_per_core       : 2\ncpu_mhz                : 2394.454\nhw_caps                : bfebfbff:77faf3bf:2c100800:00000121\nvirt_caps              : pv hvm hvm_directio\ntotal_memory           : 32635\nfree_memory            : 30000\nxen_major              : 4\nxen_minor              : 17\nxen_extra              : .3\nxen_version            : 4.17.3\n";
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 85\nmodel name\t: Intel(R) Xeon(R)\nstepping\t: 7\ncpu MHz\t\t: 2394.454\nflags\t\t: fpu vme de\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n";
        let pairs = parse_xl_info(xl);
        let f = facts_from(Some(&pairs), cpuinfo);
        assert_eq!(f.hostname, "lab1");
        assert_eq!(f.nr_cpus, 8);
        assert_eq!(f.socket_count, 1);
        assert_eq!(f.total_memory_bytes, 32635 * 1024 * 1024);
        assert_eq!(f.xen_version, "4.17.3");
        assert_eq!(f.cpu.vendor, "GenuineIntel");
        assert_eq!(f.cpu.model, 85);
        assert_eq!(f.cpu.speed_mhz, 2394);
        assert_eq!(f.cpu.flags, "fpu vme de");
        assert_eq!(f.features, "bfebfbff:77faf3bf:2c100800:00000121");
    }

    #[test]
    fn xen_probe_over_the_fake_hypervisor() {
        let dir = tempfile::tempdir().unwrap();
        let ci = dir.path().join("cpuinfo");
        std::fs::write(
            &ci,
            "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Fake CPU @ 2.00GHz\ncpu MHz\t\t: 1999.999\nflags\t\t: fpu vme de pse\n\n",
        )
        .unwrap();
        let mut probe = XenProbe::new(xenctrl::FakeHypervisor::new(4, 2048));
        probe.cpuinfo_path = ci.display().to_string();
        probe.cpuid = || xenctrl::decode_cpuid("GenuineIntel".into(), 0x000506e3);
        let f = probe.host_facts().unwrap();
        assert_eq!(f.nr_cpus, 4);
        assert_eq!(f.socket_count, 1);
        assert_eq!(f.total_memory_bytes, 2048 * 1024 * 1024);
        assert_eq!(f.free_memory_bytes, 1024 * 1024 * 1024);
        assert_eq!(f.cpu.vendor, "GenuineIntel");
        assert_eq!(
            (f.cpu.family, f.cpu.model, f.cpu.stepping.as_str()),
            (6, 94, "3")
        );
        assert_eq!(f.cpu.modelname, "Fake CPU @ 2.00GHz");
        assert_eq!(f.cpu.flags, "fpu vme de pse");
        assert_eq!(f.cpu.speed_mhz, 1999);
        // Featuresets: words as %08x joined by '-', one per kind.
        assert_eq!(f.features, "10000001-20000001-deadbe01");
        assert_eq!(f.features_pv_host, "10000002-20000002-deadbe02");
        assert_eq!(f.features_hvm_host, "10000003-20000003-deadbe03");
        assert_eq!(f.features_pv, "10000004-20000004-deadbe04");
        assert_eq!(f.features_hvm, "10000005-20000005-deadbe05");
        assert_eq!(probe.free_memory().unwrap(), 1024 * 1024 * 1024);
        assert_eq!(probe.cpu_utilisation().unwrap(), vec![0.0; 4]);
    }

    #[test]
    fn utilisation_from_idle_deltas() {
        let u = utilisation(&[0, 100, 1000], &[250, 1100, 1000], 1000);
        assert_eq!(u, vec![0.75, 0.0, 1.0]);
        assert_eq!(featureset_string(&[0x1, 0xdeadbeef]), "00000001-deadbeef");
    }
}
