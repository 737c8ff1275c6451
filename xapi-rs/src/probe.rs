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
}
