//! A domain's network interfaces: netback serves each VIF from a network
//! device in dom0 (`vif<domid>.<slot>`), which joins the bridge of the
//! VIF's network. The toolstack does what the reference's `vif-bridge`
//! hotplug script does (Debian ships no udev rule to run it): once netback
//! has made the device, it takes the bridge's MTU, joins the bridge and
//! comes up, then `hotplug-status=connected` lets netback connect. The
//! backend directory is one of the domain's roots: removing it makes
//! netback delete the device, so nothing is left after a teardown.

use std::path::Path;

use xenctrl::DomId;
use xenstore::{Access, Perm};

use super::spec::NicSpec;
use super::tree::{self, Node};

/// The hotplug script the reference names in the backend (informative:
/// netback does not run it; we do its work).
const SCRIPT: &str = "/etc/xen/scripts/vif-bridge";

/// Puts backend devices on bridges; blocking calls, run on the blocking
/// pool.
pub trait Bridging: Send + Sync + 'static {
    /// Whether `bridge` is a bridge in dom0.
    fn bridge_exists(&self, bridge: &str) -> bool;
    /// Whether network device `dev` exists (netback has made it).
    fn device_exists(&self, dev: &str) -> bool;
    /// Gives `dev` the MTU, joins it to `bridge` and brings it up.
    fn attach(&self, dev: &str, bridge: &str, mtu: u32) -> std::io::Result<()>;
}

/// Linux bridges through iproute2's `ip` (what the reference's scripts
/// use; rtnetlink by hand would be a protocol implementation of our own).
pub struct LinuxBridging;

fn ip(args: &[&str]) -> std::io::Result<()> {
    let out = std::process::Command::new("ip").args(args).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Bridging for LinuxBridging {
    fn bridge_exists(&self, bridge: &str) -> bool {
        Path::new("/sys/class/net")
            .join(bridge)
            .join("bridge")
            .is_dir()
    }

    fn device_exists(&self, dev: &str) -> bool {
        Path::new("/sys/class/net").join(dev).exists()
    }

    fn attach(&self, dev: &str, bridge: &str, mtu: u32) -> std::io::Result<()> {
        let mtu = mtu.to_string();
        ip(&["link", "set", "dev", dev, "mtu", &mtu])?;
        ip(&["link", "set", "dev", dev, "master", bridge])?;
        ip(&["link", "set", "dev", dev, "up"])
    }
}

/// `/local/domain/0/backend/vif/D`: every network backend of domain D.
pub fn backends_path(domid: DomId) -> String {
    format!("/local/domain/0/backend/vif/{domid}")
}

/// The backend directory of one interface.
pub fn backend_path(domid: DomId, nic: &NicSpec) -> String {
    format!("{}/{}", backends_path(domid), nic.slot)
}

/// The frontend directory of one interface.
pub fn frontend_path(domid: DomId, nic: &NicSpec) -> String {
    format!("{}/device/vif/{}", tree::dom_path(domid), nic.slot)
}

/// The node the hotplug step writes when the device is on its bridge.
pub fn hotplug_status_path(domid: DomId, nic: &NicSpec) -> String {
    format!("{}/hotplug-status", backend_path(domid, nic))
}

/// The backend and frontend directories of one interface, as libxl
/// writes them: dom0 owns the backend and the guest reads it; the guest
/// owns the frontend and dom0 reads it. Both start in state 1
/// (Initialising); `hotplug-status` comes later (see the module).
pub fn nodes(domid: DomId, nic: &NicSpec) -> Vec<Node> {
    let be = backend_path(domid, nic);
    let fe = frontend_path(domid, nic);
    let slot = nic.slot.to_string();
    vec![
        tree::with(
            be.clone(),
            "",
            vec![Perm::new(0, Access::None), Perm::new(domid, Access::Read)],
        ),
        tree::node(format!("{be}/frontend"), fe.clone()),
        tree::node(format!("{be}/frontend-id"), domid.to_string()),
        tree::node(format!("{be}/online"), "1"),
        tree::node(format!("{be}/state"), "1"),
        tree::node(format!("{be}/script"), SCRIPT),
        tree::node(format!("{be}/mac"), nic.mac.clone()),
        tree::node(format!("{be}/bridge"), nic.bridge.clone()),
        tree::node(format!("{be}/handle"), slot.clone()),
        tree::node(format!("{be}/type"), "vif"),
        tree::with(
            fe.clone(),
            "",
            vec![Perm::new(domid, Access::None), Perm::new(0, Access::Read)],
        ),
        tree::node(format!("{fe}/backend"), be),
        tree::node(format!("{fe}/backend-id"), "0"),
        tree::node(format!("{fe}/state"), "1"),
        tree::node(format!("{fe}/handle"), slot),
        tree::node(format!("{fe}/mac"), nic.mac.clone()),
        tree::node(format!("{fe}/mtu"), nic.mtu.to_string()),
    ]
}

#[cfg(test)]
pub mod fake {
    //! Bridging for unit tests: netback's devices "exist" once their
    //! backend was written; records what joined which bridge.
    use super::*;
    use std::sync::Mutex;

    pub struct FakeBridging {
        /// Bridges dom0 has.
        pub bridges: Vec<String>,
        /// (device, bridge, mtu) attached.
        pub attached: Mutex<Vec<(String, String, u32)>>,
        /// Devices netback never makes (a broken backend).
        pub missing: Vec<String>,
    }

    impl Default for FakeBridging {
        fn default() -> Self {
            FakeBridging {
                bridges: vec!["xenbr0".into()],
                attached: Mutex::default(),
                missing: vec![],
            }
        }
    }

    impl Bridging for FakeBridging {
        fn bridge_exists(&self, bridge: &str) -> bool {
            self.bridges.iter().any(|b| b == bridge)
        }

        fn device_exists(&self, dev: &str) -> bool {
            !self.missing.iter().any(|m| m == dev)
        }

        fn attach(&self, dev: &str, bridge: &str, mtu: u32) -> std::io::Result<()> {
            self.attached
                .lock()
                .unwrap()
                .push((dev.into(), bridge.into(), mtu));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vif_has_libxl_backend_and_frontend_nodes() {
        let nic = NicSpec {
            slot: 1,
            mac: "02:00:00:00:00:01".into(),
            mtu: 1500,
            bridge: "xenbr0".into(),
        };
        let n = nodes(5, &nic);
        let get = |p: &str| {
            n.iter()
                .find(|x| x.path == p)
                .map(|x| x.value.clone())
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        let be = "/local/domain/0/backend/vif/5/1";
        let fe = "/local/domain/5/device/vif/1";
        assert_eq!(get(&format!("{be}/frontend")), fe);
        assert_eq!(get(&format!("{be}/bridge")), "xenbr0");
        assert_eq!(get(&format!("{be}/mac")), "02:00:00:00:00:01");
        assert_eq!(get(&format!("{be}/handle")), "1");
        assert_eq!(get(&format!("{fe}/backend")), be);
        assert_eq!(get(&format!("{fe}/mtu")), "1500");
        assert!(
            n.iter().all(|x| !x.path.ends_with("hotplug-status")),
            "hotplug-status comes once the device is on its bridge"
        );
        assert_eq!(hotplug_status_path(5, &nic), format!("{be}/hotplug-status"));
        let perms = |p: &str| {
            n.iter()
                .find(|x| x.path == p)
                .and_then(|x| x.perms.clone())
                .unwrap()
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(perms(be), "n0 r5");
        assert_eq!(perms(fe), "n5 r0");
    }
}
