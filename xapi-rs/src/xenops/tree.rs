//! The xenstore nodes of a domain we build: the one list of what is
//! written (libxl's layout: `/local/domain/D`, `/vm/<uuid>`), with which
//! permissions, and what is removed again.
//!
//! Permissions: the first entry is the owner and everyone else's access.
//! Dom0-owned nodes the guest may read: the domain's home, `vm`, `name`,
//! `memory`, `cpu`, `device`, `control`, `store`, `console`. Guest-owned:
//! `control/shutdown`, `control/feature-*`, `control/sysrq`, `data`,
//! `drivers`, `feature`, `attr`, `error`. New nodes inherit their parent's
//! permissions, so only subtree roots carry explicit ones.
//!
//! Ours-vs-foreign: `/xapi-rs/domain/D` (dom0 only) holds the VM uuid and
//! the build stage; `xl create`d domains have `/libxl/D` instead.

use uuid::Uuid;
use xenctrl::DomId;
use xenstore::{Access, Perm};

use super::hypervisor::Rings;
use super::spec::DomainSpec;

/// xenconsoled's ring buffer limit, as libxl writes it (`console/limit`).
pub const CONSOLE_LIMIT: u64 = 1_048_576;

/// How far a domain of ours got; kept in [`marker_path`]`/stage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Created; not yet fully built and introduced (a crash here leaves a
    /// half-built domain that adoption should destroy).
    Building,
    /// Built, introduced, unpaused at least once.
    Started,
}

impl Stage {
    /// The value stored in xenstore.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Building => "building",
            Stage::Started => "started",
        }
    }

    /// Parses a stored value.
    pub fn parse(s: &str) -> Option<Stage> {
        match s {
            "building" => Some(Stage::Building),
            "started" => Some(Stage::Started),
            _ => None,
        }
    }
}

/// One node to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Absolute path.
    pub path: String,
    /// Value.
    pub value: String,
    /// Explicit permissions; `None` inherits the parent's.
    pub perms: Option<Vec<Perm>>,
}

pub(super) fn node(path: String, value: impl Into<String>) -> Node {
    Node {
        path,
        value: value.into(),
        perms: None,
    }
}

pub(super) fn with(path: String, value: impl Into<String>, perms: Vec<Perm>) -> Node {
    Node {
        path,
        value: value.into(),
        perms: Some(perms),
    }
}

/// Dom0 owns it, the guest reads it.
fn guest_reads(domid: DomId) -> Vec<Perm> {
    vec![Perm::new(0, Access::None), Perm::new(domid, Access::Read)]
}

/// The guest owns it; nobody else but dom0 sees it.
fn guest_owns(domid: DomId) -> Vec<Perm> {
    vec![Perm::new(domid, Access::None)]
}

/// `/local/domain/D`.
pub fn dom_path(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// `/vm/<uuid>`.
pub fn vm_path(uuid: &Uuid) -> String {
    format!("/vm/{uuid}")
}

/// `/xapi-rs/domain/D`: the marker that the domain is ours.
pub fn marker_path(domid: DomId) -> String {
    format!("/xapi-rs/domain/{domid}")
}

/// Everything [`created`] and [`built`] write lives under these, and the
/// disks' backends ([`super::disk`]); removing them removes the domain's
/// whole tree.
pub fn roots(domid: DomId, uuid: &Uuid) -> [String; 5] {
    [
        dom_path(domid),
        vm_path(uuid),
        marker_path(domid),
        super::disk::backends_path(domid),
        super::vif::backends_path(domid),
    ]
}

/// Written right after creation, before the build: identity, the guest's
/// writable areas, the control nodes, and the marker at [`Stage::Building`].
pub fn created(domid: DomId, spec: &DomainSpec) -> Vec<Node> {
    let d = dom_path(domid);
    let vm = vm_path(&spec.uuid);
    let mark = marker_path(domid);
    let mut v = vec![
        with(d.clone(), "", guest_reads(domid)),
        node(format!("{d}/vm"), vm.clone()),
        node(format!("{d}/name"), spec.name.clone()),
        node(format!("{d}/domid"), domid.to_string()),
        node(format!("{d}/device"), ""),
        node(format!("{d}/control"), ""),
        node(
            format!("{d}/control/platform-feature-multiprocessor-suspend"),
            "1",
        ),
        node(
            format!("{d}/control/platform-feature-xs_reset_watches"),
            "1",
        ),
        with(vm.clone(), "", guest_reads(domid)),
        node(format!("{vm}/uuid"), spec.uuid.to_string()),
        node(format!("{vm}/name"), spec.name.clone()),
        with(mark.clone(), "", vec![Perm::new(0, Access::None)]),
        node(format!("{mark}/uuid"), spec.uuid.to_string()),
        node(format!("{mark}/stage"), Stage::Building.as_str()),
    ];
    for k in [
        "control/shutdown",
        "control/feature-poweroff",
        "control/feature-reboot",
        "control/feature-suspend",
        "control/sysrq",
        "data",
        "drivers",
        "feature",
        "attr",
        "error",
    ] {
        v.push(with(format!("{d}/{k}"), "", guest_owns(domid)));
    }
    v
}

/// Written once the image is built, before the introduce: memory, vCPUs,
/// the xenstore ring and the console for xenconsoled (it reads
/// `console/{type,ring-ref,port}` when the domain is introduced and writes
/// its pty to `console/tty`).
pub fn built(domid: DomId, spec: &DomainSpec, rings: &Rings) -> Vec<Node> {
    let d = dom_path(domid);
    let mut v = vec![
        node(
            format!("{d}/memory/static-max"),
            spec.memory.static_max_kib.to_string(),
        ),
        node(
            format!("{d}/memory/target"),
            spec.memory.target_kib.to_string(),
        ),
        node(format!("{d}/store/port"), rings.store_port.to_string()),
        node(format!("{d}/store/ring-ref"), rings.store_mfn.to_string()),
        node(format!("{d}/console/type"), "xenconsoled"),
        node(format!("{d}/console/output"), "pty"),
        node(format!("{d}/console/tty"), ""),
        node(format!("{d}/console/limit"), CONSOLE_LIMIT.to_string()),
        node(format!("{d}/console/port"), rings.console_port.to_string()),
        node(
            format!("{d}/console/ring-ref"),
            rings.console_mfn.to_string(),
        ),
    ];
    v.extend(vcpus_online(domid, spec.vcpus.at_startup, spec.vcpus.max));
    v
}

/// vCPUs `0..online` online and the rest up to `max` offline: a PV guest's
/// hotplug driver watches `cpu/N/availability` and follows it.
pub fn vcpus_online(domid: DomId, online: u32, max: u32) -> Vec<Node> {
    let d = dom_path(domid);
    (0..max)
        .map(|n| {
            let avail = if n < online { "online" } else { "offline" };
            node(format!("{d}/cpu/{n}/availability"), avail)
        })
        .collect()
}

/// The balloon driver's target (KiB), which a PV guest's balloon follows.
pub fn memory_target(domid: DomId, target_kib: u64) -> Node {
    node(
        format!("{}/memory/target", dom_path(domid)),
        target_kib.to_string(),
    )
}

/// The marker's stage node.
pub fn stage_node(domid: DomId, stage: Stage) -> Node {
    node(format!("{}/stage", marker_path(domid)), stage.as_str())
}

/// Writes `nodes` in one transaction (retried on conflicts).
pub async fn write(xs: &xenstore::Xenstore, nodes: &[Node]) -> xenstore::Result<()> {
    xs.transaction(|tx| async move {
        for n in nodes {
            tx.write(&n.path, &n.value).await?;
            if let Some(p) = &n.perms {
                tx.set_perms(&n.path, p).await?;
            }
        }
        Ok(())
    })
    .await
}

/// Removes the domain's whole tree; absent nodes are fine.
pub async fn remove(xs: &xenstore::Xenstore, domid: DomId, uuid: &Uuid) -> xenstore::Result<()> {
    remove_paths(xs, roots(domid, uuid).to_vec()).await
}

/// Removes `paths` and all below them in one transaction; one that is
/// gone already is no error.
pub async fn remove_paths(xs: &xenstore::Xenstore, paths: Vec<String>) -> xenstore::Result<()> {
    xs.transaction(|tx| {
        let paths = paths.clone();
        async move {
            for p in &paths {
                match tx.rm(p).await {
                    Err(e) if !e.is_enoent() => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenops::spec::{MemorySpec, PvBoot, VcpuSpec};

    fn spec() -> DomainSpec {
        DomainSpec {
            uuid: Uuid::parse_str("b9f6a5c2-1f0e-4d7a-9a44-2d1b8a3f6e01").unwrap(),
            name: "vm1".into(),
            memory: MemorySpec {
                static_max_kib: 524_288,
                target_kib: 262_144,
            },
            vcpus: VcpuSpec {
                max: 2,
                at_startup: 1,
            },
            boot: PvBoot {
                kernel: "/boot/vmlinuz".into(),
                ramdisk: None,
                cmdline: String::new(),
            },
            disks: vec![],
            nics: vec![],
        }
    }

    fn rings() -> Rings {
        Rings {
            store_port: 1,
            store_mfn: 0x1234,
            console_port: 2,
            console_mfn: 0x5678,
        }
    }

    #[tokio::test]
    async fn tree_has_libxl_layout_and_permissions_and_is_removed_whole() {
        let fake = xenstore::fake::FakeXenstored::new();
        let xs = fake.connect();
        let s = spec();
        write(&xs, &created(7, &s)).await.unwrap();
        write(&xs, &built(7, &s, &rings())).await.unwrap();
        let r = |p: &'static str| {
            let xs = xs.clone();
            async move { xs.read_string(p).await.unwrap() }
        };
        assert_eq!(r("/local/domain/7/name").await, "vm1");
        assert_eq!(r("/local/domain/7/vm").await, format!("/vm/{}", s.uuid));
        assert_eq!(r("/local/domain/7/memory/static-max").await, "524288");
        assert_eq!(r("/local/domain/7/memory/target").await, "262144");
        assert_eq!(r("/local/domain/7/store/ring-ref").await, "4660");
        assert_eq!(r("/local/domain/7/console/ring-ref").await, "22136");
        assert_eq!(r("/local/domain/7/console/type").await, "xenconsoled");
        assert_eq!(r("/local/domain/7/cpu/0/availability").await, "online");
        assert_eq!(r("/local/domain/7/cpu/1/availability").await, "offline");
        assert_eq!(r("/xapi-rs/domain/7/stage").await, "building");
        let perms = |p: &'static str| {
            let xs = xs.clone();
            async move {
                xs.get_perms(p)
                    .await
                    .unwrap()
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        assert_eq!(perms("/local/domain/7").await, "n0 r7");
        // Inherited from the home directory.
        assert_eq!(perms("/local/domain/7/console/ring-ref").await, "n0 r7");
        assert_eq!(perms("/local/domain/7/control/shutdown").await, "n7");
        assert_eq!(perms("/local/domain/7/data").await, "n7");
        assert_eq!(
            perms(Box::leak(vm_path(&s.uuid).into_boxed_str())).await,
            "n0 r7"
        );
        assert_eq!(perms("/xapi-rs/domain/7").await, "n0");

        remove(&xs, 7, &s.uuid).await.unwrap();
        for root in roots(7, &s.uuid) {
            assert_eq!(xs.try_read(&root).await.unwrap(), None, "{root}");
        }
        // Removing again is not an error.
        remove(&xs, 7, &s.uuid).await.unwrap();
    }
}
