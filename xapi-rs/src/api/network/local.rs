//! The host's networks from dom0's bridges: for each Linux bridge with a
//! physical port, a `network` ("Pool-wide network associated with
//! <port>", its `bridge`) and this host's `PIF` for the port (MAC, MTU,
//! the bridge's IPv4 address; `management` where that is the host's
//! address). Later starts find them again by bridge and device and
//! refresh what changed; nothing is removed (a bridge that is down today
//! keeps its VIFs' network).

use crate::db::{Db, DbError};
use crate::generated::records::{Host, IpConfigurationMode, Network, Pif};
use crate::model::typed::{Object, Ref};
use crate::model::value::V;
use crate::rpc::{new_ref, new_uuid};
use std::path::Path;

/// A physical port of a bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// Its device name (`eth1`).
    pub device: String,
    /// Its MAC address.
    pub mac: String,
    /// Its MTU.
    pub mtu: i64,
}

/// A bridge in dom0 and what the host's PIF reports of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Its name (`xenbr0`).
    pub name: String,
    /// Its MTU.
    pub mtu: i64,
    /// Its physical port (the first, by name, if there are several).
    pub port: Port,
    /// Its IPv4 address and netmask, if it has one.
    pub ipv4: Option<(String, String)>,
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Dom0's bridges with a physical port, from `sys_class_net`
/// (`/sys/class/net`), their addresses from `ipv4` (given a bridge's
/// name). Backend ports of guests (`vif*`, `tap*`) are not physical.
pub fn read_bridges(
    sys_class_net: &Path,
    ipv4: impl Fn(&str) -> Option<(String, String)>,
) -> Vec<Bridge> {
    let Ok(entries) = std::fs::read_dir(sys_class_net) else {
        return vec![];
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| sys_class_net.join(n).join("bridge").is_dir())
        .collect();
    names.sort();
    let mut out = vec![];
    for name in names {
        let dir = sys_class_net.join(&name);
        let mut ports: Vec<String> = std::fs::read_dir(dir.join("brif"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|p| !p.starts_with("vif") && !p.starts_with("tap"))
                    .filter(|p| sys_class_net.join(p).join("device").exists())
                    .collect()
            })
            .unwrap_or_default();
        ports.sort();
        let Some(device) = ports.into_iter().next() else {
            continue;
        };
        let pdir = sys_class_net.join(&device);
        let mtu = |d: &Path| {
            read_trimmed(&d.join("mtu"))
                .and_then(|m| m.parse().ok())
                .unwrap_or(1500)
        };
        out.push(Bridge {
            mtu: mtu(&dir),
            ipv4: ipv4(&name),
            port: Port {
                mac: read_trimmed(&pdir.join("address")).unwrap_or_default(),
                mtu: mtu(&pdir),
                device,
            },
            name,
        });
    }
    out
}

/// The first IPv4 address of `dev` as `ip -o -4 addr show dev DEV`
/// prints it (`2: xenbr0    inet 10.77.0.1/24 brd ...`): address and
/// dotted netmask.
pub fn parse_ip_addr(out: &str) -> Option<(String, String)> {
    let mut words = out.split_whitespace();
    words.find(|w| *w == "inet")?;
    let (addr, len) = words.next()?.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((addr.to_string(), std::net::Ipv4Addr::from(mask).to_string()))
}

/// `dev`'s IPv4 address through iproute2 (no address, or no `ip`: none).
pub fn ipv4_of(dev: &str) -> Option<(String, String)> {
    let out = std::process::Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", dev])
        .output()
        .ok()?;
    parse_ip_addr(&String::from_utf8_lossy(&out.stdout))
}

fn create<T: Object>(db: &Db, t: T) -> Result<Ref<T>, DbError> {
    let r = Ref::<T>::new(new_ref());
    let mut rec = t.to_record();
    rec.insert("uuid".into(), V::S(new_uuid()));
    db.create(T::CLASS, r.as_str(), rec)?;
    Ok(r)
}

/// Creates or refreshes the networks and PIFs of `host` for `bridges`.
pub fn ensure(db: &Db, host: &Ref<Host>, bridges: &[Bridge]) -> Result<(), String> {
    let e = |e: DbError| e.to_string();
    let address = db.get_typed::<Host>(host).map(|h| h.address);
    for b in bridges {
        let found = db
            .all_typed::<Network>()
            .into_iter()
            .find(|(_, n)| n.bridge == b.name);
        let net = match found {
            Some((r, n)) => {
                if n.MTU != b.mtu {
                    db.update_typed(&r, |n| n.MTU = b.mtu).map_err(e)?;
                }
                r
            }
            None => {
                let r = create(
                    db,
                    Network {
                        name_label: format!("Pool-wide network associated with {}", b.port.device),
                        bridge: b.name.clone(),
                        MTU: b.mtu,
                        managed: true,
                        ..Network::default()
                    },
                )
                .map_err(e)?;
                tracing::info!(network = %r, bridge = %b.name, "network created");
                r
            }
        };
        let (ip, netmask) = b.ipv4.clone().unwrap_or_default();
        let pif = Pif {
            device: b.port.device.clone(),
            network: net.clone(),
            host: host.clone(),
            MAC: b.port.mac.clone(),
            MTU: b.port.mtu,
            VLAN: -1,
            physical: true,
            currently_attached: true,
            ip_configuration_mode: if ip.is_empty() {
                IpConfigurationMode::None
            } else {
                IpConfigurationMode::Static
            },
            management: !ip.is_empty() && address.as_deref() == Some(ip.as_str()),
            IP: ip,
            netmask,
            managed: true,
            ..Pif::default()
        };
        let mine = db
            .all_typed::<Pif>()
            .into_iter()
            .find(|(_, p)| p.host == *host && p.device == b.port.device);
        match mine {
            Some((r, old)) => {
                let same = (
                    &old.network,
                    &old.MAC,
                    old.MTU,
                    &old.IP,
                    &old.netmask,
                    old.management,
                ) == (
                    &pif.network,
                    &pif.MAC,
                    pif.MTU,
                    &pif.IP,
                    &pif.netmask,
                    pif.management,
                );
                if !same {
                    db.update_typed(&r, |p| {
                        p.network = pif.network.clone();
                        p.MAC = pif.MAC.clone();
                        p.MTU = pif.MTU;
                        p.IP = pif.IP.clone();
                        p.netmask = pif.netmask.clone();
                        p.ip_configuration_mode = pif.ip_configuration_mode;
                        p.management = pif.management;
                        p.currently_attached = true;
                    })
                    .map_err(e)?;
                }
            }
            None => {
                let r = create(db, pif).map_err(e)?;
                tracing::info!(pif = %r, device = %b.port.device, "PIF created");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_output_gives_address_and_netmask() {
        let out = "5: xenbr0    inet 10.77.0.1/24 brd 10.77.0.255 scope global xenbr0\\       valid_lft forever preferred_lft forever\n";
        assert_eq!(
            parse_ip_addr(out),
            Some(("10.77.0.1".into(), "255.255.255.0".into()))
        );
        assert_eq!(parse_ip_addr(""), None);
        assert_eq!(parse_ip_addr("2: x inet 10.0.0.1/33 brd"), None);
        assert_eq!(parse_ip_addr("2: x inet nonsense/8"), None);
        assert_eq!(
            parse_ip_addr("2: x inet 10.0.0.1/0"),
            Some(("10.0.0.1".into(), "0.0.0.0".into()))
        );
    }

    #[test]
    fn a_bridge_is_one_network_and_pif_however_often_it_is_seen() {
        let t = tempfile::tempdir().unwrap();
        let db = Db::open(&t.path().join("db")).unwrap();
        let host = create(
            &db,
            Host {
                address: "10.77.0.1".into(),
                ..Host::default()
            },
        )
        .unwrap();
        let mut b = Bridge {
            name: "xenbr0".into(),
            mtu: 1500,
            port: Port {
                device: "eth1".into(),
                mac: "52:54:00:00:00:01".into(),
                mtu: 1500,
            },
            ipv4: Some(("10.77.0.1".into(), "255.255.255.0".into())),
        };
        ensure(&db, &host, std::slice::from_ref(&b)).unwrap();
        b.ipv4 = Some(("10.77.0.9".into(), "255.255.255.0".into()));
        ensure(&db, &host, std::slice::from_ref(&b)).unwrap();
        let nets = db.all_typed::<Network>();
        let pifs = db.all_typed::<Pif>();
        assert_eq!((nets.len(), pifs.len()), (1, 1));
        let (nr, net) = &nets[0];
        let (pr, pif) = &pifs[0];
        assert_eq!(net.name_label, "Pool-wide network associated with eth1");
        assert_eq!(net.bridge, "xenbr0");
        assert_eq!(net.PIFs, vec![pr.clone()], "the relation's set side");
        assert_eq!((&pif.network, &pif.host), (nr, &host));
        assert_eq!((pif.IP.as_str(), pif.VLAN), ("10.77.0.9", -1));
        assert!(!pif.management, "10.77.0.9 is not the host's address");
        b.ipv4 = Some(("10.77.0.1".into(), "255.255.255.0".into()));
        ensure(&db, &host, &[b]).unwrap();
        assert!(db.all_typed::<Pif>()[0].1.management);
    }

    #[test]
    fn bridges_with_a_physical_port_are_found_in_sysfs() {
        let t = tempfile::tempdir().unwrap();
        let mk = |dev: &str, files: &[(&str, &str)]| {
            let d = t.path().join(dev);
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in files {
                let p = d.join(f);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(p, v).unwrap();
            }
        };
        mk("xenbr0", &[("mtu", "1500\n"), ("bridge/stp_state", "0")]);
        mk(
            "eth1",
            &[
                ("mtu", "1500\n"),
                ("address", "52:54:00:00:00:01\n"),
                ("device/x", ""),
            ],
        );
        mk("vif3.0", &[("mtu", "1500\n"), ("device/x", "")]);
        mk("docker0", &[("mtu", "1500\n"), ("bridge/stp_state", "0")]);
        mk("eth0", &[("mtu", "1500\n"), ("device/x", "")]);
        for (br, port) in [("xenbr0", "eth1"), ("xenbr0", "vif3.0")] {
            let d = t.path().join(br).join("brif");
            std::fs::create_dir_all(d.join(port)).unwrap();
        }
        let got = read_bridges(t.path(), |b| {
            (b == "xenbr0").then(|| ("10.77.0.1".into(), "255.255.255.0".into()))
        });
        assert_eq!(
            got,
            vec![Bridge {
                name: "xenbr0".into(),
                mtu: 1500,
                port: Port {
                    device: "eth1".into(),
                    mac: "52:54:00:00:00:01".into(),
                    mtu: 1500,
                },
                ipv4: Some(("10.77.0.1".into(), "255.255.255.0".into())),
            }],
            "docker0 has no physical port; vif3.0 is a guest's"
        );
    }
}
