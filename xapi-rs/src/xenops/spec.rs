//! The plain description of a domain to build, and its checks.

use std::path::PathBuf;

use uuid::Uuid;

use super::error::{Result, XenopsError};

/// Memory in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySpec {
    /// The most the guest may ever have (e820 limit, `memory/static-max`).
    pub static_max_kib: u64,
    /// What it is given at boot (`memory/target`).
    pub target_kib: u64,
}

/// vCPU counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VcpuSpec {
    /// vCPUs the domain is created with.
    pub max: u32,
    /// vCPUs marked online at boot (`cpu/N/availability`).
    pub at_startup: u32,
}

/// A direct-kernel PV boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvBoot {
    /// The guest kernel in dom0's filesystem.
    pub kernel: PathBuf,
    /// Its initial ramdisk, if any.
    pub ramdisk: Option<PathBuf>,
    /// The kernel command line.
    pub cmdline: String,
}

/// A disk: a VBD served by blkback from an image file (through a loop
/// device) or a block device in dom0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    /// The VBD's slot (`userdevice`): 0 is `xvda`.
    pub slot: u32,
    /// The image file or block device.
    pub path: PathBuf,
    /// The guest may only read it.
    pub read_only: bool,
}

/// Slots PV disks can have with the `xvdX` names (one letter).
pub const MAX_DISK_SLOTS: u32 = 16;

/// A network interface: a VIF served by netback, its backend port
/// (`vif<domid>.<slot>`) put on a bridge in dom0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicSpec {
    /// The VIF's slot (`device`): the guest's `ethN` order.
    pub slot: u32,
    /// The guest's MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The link MTU.
    pub mtu: u32,
    /// The dom0 bridge its backend port joins (the network's `bridge`).
    pub bridge: String,
}

/// VIF slots a PV guest may have (the reference allows devices 0-6).
pub const MAX_NIC_SLOTS: u32 = 7;

impl NicSpec {
    /// The backend's network device in dom0, as netback names it.
    pub fn backend_name(&self, domid: xenctrl::DomId) -> String {
        format!("vif{domid}.{}", self.slot)
    }

    fn mac_is_valid(&self) -> bool {
        let parts: Vec<&str> = self.mac.split(':').collect();
        parts.len() == 6
            && parts
                .iter()
                .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    fn bridge_is_valid(&self) -> bool {
        // Linux interface names: at most 15 bytes, no '/', no whitespace.
        !self.bridge.is_empty()
            && self.bridge.len() <= 15
            && self
                .bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    }
}

impl DiskSpec {
    /// The Linux name the guest gives it: `xvda` for slot 0.
    pub fn name(&self) -> String {
        format!("xvd{}", (b'a' + self.slot.min(25) as u8) as char)
    }

    /// Xen's virtual-device number for `xvdX` (major 202, 16 minors per
    /// disk): the frontend's node name.
    pub fn vdev(&self) -> u32 {
        202 * 256 + 16 * self.slot
    }
}

/// Everything needed to build and start one PV domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainSpec {
    /// The VM's uuid: the domain handle and `/vm/<uuid>`.
    pub uuid: Uuid,
    /// The domain name (`xl list`, xenconsoled's log name).
    pub name: String,
    /// Memory.
    pub memory: MemorySpec,
    /// vCPUs.
    pub vcpus: VcpuSpec,
    /// What to boot.
    pub boot: PvBoot,
    /// Its disks.
    pub disks: Vec<DiskSpec>,
    /// Its network interfaces.
    pub nics: Vec<NicSpec>,
}

/// Xen's limit for a PV guest's vCPUs (`MAX_VIRT_CPUS` of the shared info).
pub const MAX_PV_VCPUS: u32 = 512;
/// Below this the builder cannot fit page tables, rings and a kernel.
pub const MIN_MEMORY_KIB: u64 = 16 * 1024;

impl DomainSpec {
    /// Refuses specs Xen would reject half-way through a build.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(XenopsError::InvalidSpec(m));
        if self.name.is_empty() || self.name.contains(['/', '\0']) {
            return bad(format!(
                "name {:?} must be non-empty, without '/' or NUL",
                self.name
            ));
        }
        let m = self.memory;
        if m.target_kib > m.static_max_kib {
            return bad(format!(
                "memory target {} KiB above static max {} KiB",
                m.target_kib, m.static_max_kib
            ));
        }
        if m.target_kib < MIN_MEMORY_KIB {
            return bad(format!(
                "memory target {} KiB below the minimum {MIN_MEMORY_KIB} KiB",
                m.target_kib
            ));
        }
        let v = self.vcpus;
        if v.at_startup == 0 || v.at_startup > v.max || v.max > MAX_PV_VCPUS {
            return bad(format!(
                "vCPUs: need 1 <= at_startup ({}) <= max ({}) <= {MAX_PV_VCPUS}",
                v.at_startup, v.max
            ));
        }
        let mut slots = std::collections::BTreeSet::new();
        for d in &self.disks {
            if d.slot >= MAX_DISK_SLOTS || !slots.insert(d.slot) {
                return bad(format!(
                    "disk slot {}: slots are 0..{MAX_DISK_SLOTS}, each used once",
                    d.slot
                ));
            }
        }
        let mut slots = std::collections::BTreeSet::new();
        for n in &self.nics {
            if n.slot >= MAX_NIC_SLOTS || !slots.insert(n.slot) {
                return bad(format!(
                    "network interface slot {}: slots are 0..{MAX_NIC_SLOTS}, each used once",
                    n.slot
                ));
            }
            if !n.mac_is_valid() {
                return bad(format!("MAC {:?} is not six hex pairs", n.mac));
            }
            if !n.bridge_is_valid() {
                return bad(format!("bridge {:?} is not an interface name", n.bridge));
            }
            if !(68..=65535).contains(&n.mtu) {
                return bad(format!("MTU {} is not within 68..65535", n.mtu));
            }
        }
        if self.boot.cmdline.contains('\0') {
            return bad("the kernel command line contains a NUL byte".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn spec() -> DomainSpec {
        DomainSpec {
            uuid: Uuid::new_v4(),
            name: "vm1".into(),
            memory: MemorySpec {
                static_max_kib: 262_144,
                target_kib: 262_144,
            },
            vcpus: VcpuSpec {
                max: 2,
                at_startup: 1,
            },
            boot: PvBoot {
                kernel: "/boot/vmlinuz".into(),
                ramdisk: None,
                cmdline: "console=hvc0".into(),
            },
            disks: vec![],
            nics: vec![],
        }
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert!(spec().validate().is_ok());
        let mut s = spec();
        s.memory.target_kib = s.memory.static_max_kib + 1;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("above static max"), "{e}");
        let mut s = spec();
        s.vcpus.at_startup = 3;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("at_startup (3) <= max (2)"), "{e}");
        let mut s = spec();
        s.name = "a/b".into();
        assert!(s.validate().is_err());
        let disk = |slot| DiskSpec {
            slot,
            path: "/srv/a.img".into(),
            read_only: false,
        };
        let mut s = spec();
        s.disks = vec![disk(0), disk(1)];
        assert!(s.validate().is_ok());
        assert_eq!((disk(0).name(), disk(0).vdev()), ("xvda".into(), 51712));
        assert_eq!((disk(1).name(), disk(1).vdev()), ("xvdb".into(), 51728));
        s.disks.push(disk(1));
        assert!(s.validate().unwrap_err().to_string().contains("slot 1"));
        s.disks = vec![disk(16)];
        assert!(s.validate().is_err());
        let nic = |slot, mac: &str, bridge: &str| NicSpec {
            slot,
            mac: mac.into(),
            mtu: 1500,
            bridge: bridge.into(),
        };
        let mut s = spec();
        s.nics = vec![nic(0, "02:aa:bb:cc:dd:ee", "xenbr0")];
        assert!(s.validate().is_ok());
        assert_eq!(s.nics[0].backend_name(7), "vif7.0");
        for bad in [
            vec![nic(7, "02:aa:bb:cc:dd:ee", "xenbr0")],
            vec![nic(0, "02:aa:bb:cc:dd", "xenbr0")],
            vec![nic(0, "02:aa:bb:cc:dd:eg", "xenbr0")],
            vec![nic(0, "02:aa:bb:cc:dd:ee", "../../etc")],
            vec![nic(0, "02:aa:bb:cc:dd:ee", "")],
            vec![
                nic(1, "02:aa:bb:cc:dd:ee", "xenbr0"),
                nic(1, "02:aa:bb:cc:dd:ef", "xenbr0"),
            ],
        ] {
            s.nics = bad.clone();
            assert!(s.validate().is_err(), "{bad:?}");
        }
        s.nics = vec![NicSpec {
            mtu: 9,
            ..nic(0, "02:aa:bb:cc:dd:ee", "xenbr0")
        }];
        assert!(s.validate().unwrap_err().to_string().contains("MTU"));
        let mut s = spec();
        s.memory.target_kib = 1024;
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("below the minimum"));
    }
}
