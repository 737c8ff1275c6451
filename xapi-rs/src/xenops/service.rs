//! [`Xenops`]: the async lifecycle operations over a [`Hypervisor`] and
//! xenstore. Blocking hypervisor calls run on tokio's blocking pool.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use uuid::Uuid;
use xenctrl::{DomId, ShutdownReason};

use super::disk::{self, Backing, LoopBacking};
use super::error::{Result, XenopsError};
use super::hypervisor::{Daemons, DomainState, Hypervisor, Power, Rings};
use super::spec::DomainSpec;
use super::tracker::{self, Tracker};
use super::tree::{self, Stage};
use super::vif::{self, Bridging, LinuxBridging};
use super::xen::XenHypervisor;

/// How long a guest has to clear `control/shutdown` (xenopsd: 60 s).
pub const SHUTDOWN_ACK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a destroyed domain may linger as dying.
pub const DESTROY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long netback may take to make a backend device (the reference's
/// hotplug timeout).
pub const HOTPLUG_TIMEOUT: Duration = Duration::from_secs(40);

/// What a clean shutdown asks the guest for (`control/shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownRequest {
    /// Halt.
    Poweroff,
    /// Restart.
    Reboot,
}

impl ShutdownRequest {
    fn as_str(self) -> &'static str {
        match self {
            ShutdownRequest::Poweroff => "poweroff",
            ShutdownRequest::Reboot => "reboot",
        }
    }
}

/// Whose a running domain is, for adoption after a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Built by us; `stage` says whether the build completed.
    Ours {
        /// How far the build got.
        stage: Stage,
    },
    /// dom0, or a domain started by another toolstack (`xl create`).
    Foreign,
}

/// One domain as adoption sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainListing {
    /// Xen's view.
    pub state: DomainState,
    /// `/local/domain/D/name`, if set.
    pub name: Option<String>,
    /// Ours or not.
    pub owner: Ownership,
}

/// The lifecycle service.
pub struct Xenops<H: Hypervisor> {
    pub(super) hv: Arc<H>,
    pub(super) xs: xenstore::Xenstore,
    backing: Arc<dyn Backing>,
    bridging: Arc<dyn Bridging>,
    hotplug_timeout: Duration,
}

impl Xenops<XenHypervisor> {
    /// Real Xen and xenstored (dom0, root).
    pub async fn connect() -> Result<Self> {
        let hv = tokio::task::spawn_blocking(XenHypervisor::open)
            .await
            .map_err(|e| XenopsError::Join {
                step: "open libxenctrl",
                reason: e.to_string(),
            })?
            .map_err(|source| XenopsError::Xen {
                step: "open libxenctrl",
                domid: None,
                source,
            })?;
        let xs = xenstore::Xenstore::connect()
            .await
            .map_err(|source| XenopsError::Xenstore {
                step: "connect to xenstored",
                domid: 0,
                source,
            })?;
        Ok(Xenops::new(hv, xs))
    }
}

impl<H: Hypervisor> Xenops<H> {
    /// Over any hypervisor and xenstore connection.
    pub fn new(hv: H, xs: xenstore::Xenstore) -> Self {
        Xenops {
            hv: Arc::new(hv),
            xs,
            backing: Arc::new(LoopBacking),
            bridging: Arc::new(LinuxBridging),
            hotplug_timeout: HOTPLUG_TIMEOUT,
        }
    }

    /// With another way to turn disk images into block devices (tests).
    pub fn with_backing(mut self, backing: Arc<dyn Backing>) -> Self {
        self.backing = backing;
        self
    }

    /// With another way to put network backends on bridges (tests).
    pub fn with_bridging(mut self, bridging: Arc<dyn Bridging>) -> Self {
        self.bridging = bridging;
        self
    }

    /// The hypervisor (tests reach their fake through it).
    pub fn hypervisor(&self) -> &H {
        &self.hv
    }

    /// The xenstore connection (shared).
    pub fn xenstore(&self) -> &xenstore::Xenstore {
        &self.xs
    }

    /// Runs a blocking hypervisor call off the runtime.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        step: &'static str,
        domid: Option<DomId>,
        f: impl FnOnce(&H) -> xenctrl::Result<T> + Send + 'static,
    ) -> Result<T> {
        let hv = self.hv.clone();
        tokio::task::spawn_blocking(move || f(&hv))
            .await
            .map_err(|e| XenopsError::Join {
                step,
                reason: e.to_string(),
            })?
            .map_err(|source| XenopsError::Xen {
                step,
                domid,
                source,
            })
    }

    pub(super) fn xs_err(
        step: &'static str,
        domid: DomId,
    ) -> impl FnOnce(xenstore::Error) -> XenopsError {
        move |source| XenopsError::Xenstore {
            step,
            domid,
            source,
        }
    }

    /// Where xenstored and xenconsoled run (`/tool/*/domid`, else dom0).
    pub(super) async fn daemons(&self) -> Result<Daemons> {
        let read = |p: &'static str| async move {
            match self.xs.try_read(p).await {
                Ok(v) => Ok(v
                    .and_then(|v| String::from_utf8_lossy(&v).trim().parse().ok())
                    .unwrap_or(0)),
                Err(e) => Err(Self::xs_err("read daemon domids", 0)(e)),
            }
        };
        Ok(Daemons {
            store_domid: read("/tool/xenstored/domid").await?,
            console_domid: read("/tool/xenconsoled/domid").await?,
        })
    }

    /// Builds the domain and leaves it paused: checks the spec and boot
    /// files, creates, writes the xenstore tree, builds the image,
    /// introduces it to xenstored (which xenconsoled follows). Any failure
    /// after creation destroys the domain and removes its nodes again.
    pub async fn build(&self, spec: &DomainSpec) -> Result<DomId> {
        spec.validate()?;
        check_boot_file("kernel", &spec.boot.kernel).await?;
        if let Some(r) = &spec.boot.ramdisk {
            check_boot_file("ramdisk", r).await?;
        }
        self.check_bridges(spec).await?;
        let daemons = self.daemons().await?;
        let s = spec.clone();
        let domid = self
            .blocking("create domain", None, move |h| h.create(&s))
            .await?;
        tracing::info!(domid, uuid = %spec.uuid, name = %spec.name, "domain created");
        let res = async {
            tree::write(&self.xs, &tree::created(domid, spec))
                .await
                .map_err(Self::xs_err("write the domain's xenstore tree", domid))?;
            let s = spec.clone();
            let rings = self
                .blocking("build the PV image", Some(domid), move |h| {
                    h.build(domid, &s, daemons)
                })
                .await?;
            self.finish_build(domid, spec, &rings).await
        }
        .await;
        self.destroy_on_error(domid, spec, res)
            .await
            .map(|()| domid)
    }

    /// Every NIC's bridge is there in dom0 (before anything is created).
    pub(super) async fn check_bridges(&self, spec: &DomainSpec) -> Result<()> {
        for n in &spec.nics {
            let (b, bridge) = (self.bridging.clone(), n.bridge.clone());
            let exists = tokio::task::spawn_blocking(move || b.bridge_exists(&bridge))
                .await
                .map_err(|e| XenopsError::Join {
                    step: "look for a bridge",
                    reason: e.to_string(),
                })?;
            if !exists {
                return Err(XenopsError::NoBridge(n.bridge.clone()));
            }
        }
        Ok(())
    }

    /// `res` of the steps after domain `domid` was created: on an error
    /// the domain and what was made for it go, and the error is returned.
    pub(super) async fn destroy_on_error(
        &self,
        domid: DomId,
        spec: &DomainSpec,
        res: Result<()>,
    ) -> Result<()> {
        if let Err(e) = &res {
            tracing::warn!(domid, error = %e, "domain not made; destroying it");
            if let Err(c) = self.teardown(domid, &spec.uuid).await {
                tracing::error!(domid, error = %c, "cleanup after a failed build");
            }
        }
        res
    }

    /// What follows the memory image (built, or restored): the ring nodes,
    /// the devices, the introduction to xenstored. The domain stays paused.
    pub(super) async fn finish_build(
        &self,
        domid: DomId,
        spec: &DomainSpec,
        rings: &Rings,
    ) -> Result<()> {
        tree::write(&self.xs, &tree::built(domid, spec, rings))
            .await
            .map_err(Self::xs_err("write the built domain's nodes", domid))?;
        self.plug_disks(domid, spec).await?;
        self.plug_nics(domid, spec).await?;
        self.xs
            .introduce_domain(domid, rings.store_mfn, rings.store_port)
            .await
            .map_err(Self::xs_err("introduce the domain to xenstored", domid))?;
        Ok(())
    }

    /// Gives the guest its disks before it first runs: each image on a
    /// loop device (remembered under the marker at once, so that a later
    /// failure's teardown detaches it), then every disk's backend and
    /// frontend in one transaction.
    async fn plug_disks(&self, domid: DomId, spec: &DomainSpec) -> Result<()> {
        let mut nodes = vec![];
        for d in &spec.disks {
            nodes.extend(self.attach_disk(domid, d).await?);
        }
        if !nodes.is_empty() {
            tree::write(&self.xs, &nodes)
                .await
                .map_err(Self::xs_err("write the disks' backends", domid))?;
        }
        Ok(())
    }

    /// Puts one disk's image on a loop device (remembered under the
    /// marker at once); returns its backend and frontend nodes.
    async fn attach_disk(&self, domid: DomId, d: &super::DiskSpec) -> Result<Vec<tree::Node>> {
        let (b, path, ro) = (self.backing.clone(), d.path.clone(), d.read_only);
        let dev = tokio::task::spawn_blocking(move || b.attach(&path, ro))
            .await
            .map_err(|e| XenopsError::Join {
                step: "attach a disk",
                reason: e.to_string(),
            })?
            .map_err(|source| XenopsError::Disk {
                domid,
                path: d.path.clone(),
                source,
            })?;
        if dev.attached_loop {
            tree::write(&self.xs, &[disk::loop_node(domid, d, &dev)])
                .await
                .map_err(Self::xs_err("remember a disk's loop device", domid))?;
        }
        tracing::info!(domid, disk = %d.name(), dev = %dev.path.display(), "disk attached");
        Ok(disk::nodes(domid, d, &dev))
    }

    /// Hot-plugs a disk into a running domain: the guest's blkfront sees
    /// the new frontend and connects by itself. A slot in use is refused.
    pub async fn plug_disk(&self, domid: DomId, d: &super::DiskSpec) -> Result<()> {
        let be = disk::backend_path(domid, d);
        if self.exists(&be).await? {
            return Err(XenopsError::DeviceExists { domid, device: be });
        }
        let nodes = self.attach_disk(domid, d).await?;
        if let Err(e) = tree::write(&self.xs, &nodes).await {
            self.detach_loop(domid, d).await;
            return Err(Self::xs_err("write a disk's backend", domid)(e));
        }
        Ok(())
    }

    /// Unplugs a disk from a running domain with the clean handshake (see
    /// [`Self::unplug_device`]), then detaches its loop device.
    pub async fn unplug_disk(
        &self,
        domid: DomId,
        d: &super::DiskSpec,
        timeout: Duration,
    ) -> Result<()> {
        already_gone(
            self.unplug_device(
                domid,
                &disk::backend_path(domid, d),
                &disk::frontend_path(domid, d),
                timeout,
            )
            .await,
        )?;
        self.detach_loop(domid, d).await;
        Ok(())
    }

    /// Removes a disk from a running domain without asking the guest (its
    /// frontend finds the device gone), then detaches its loop device.
    pub async fn unplug_disk_force(&self, domid: DomId, d: &super::DiskSpec) -> Result<()> {
        already_gone(
            self.remove_device(
                domid,
                &disk::backend_path(domid, d),
                &disk::frontend_path(domid, d),
            )
            .await,
        )?;
        self.detach_loop(domid, d).await;
        Ok(())
    }

    /// Removes a network interface from a running domain without asking
    /// the guest; netback deletes its device.
    pub async fn unplug_nic_force(&self, domid: DomId, n: &super::NicSpec) -> Result<()> {
        already_gone(
            self.remove_device(
                domid,
                &vif::backend_path(domid, n),
                &vif::frontend_path(domid, n),
            )
            .await,
        )
    }

    /// Removes a device's backend and frontend directories at once.
    async fn remove_device(&self, domid: DomId, be: &str, fe: &str) -> Result<()> {
        self.require_device(domid, be).await?;
        tree::remove_paths(&self.xs, vec![be.to_string(), fe.to_string()])
            .await
            .map_err(Self::xs_err("remove a device", domid))?;
        tracing::info!(domid, backend = %be, "device removed (forced)");
        Ok(())
    }

    /// The device whose backend is `be` is there; else `NoSuchDevice`.
    async fn require_device(&self, domid: DomId, be: &str) -> Result<()> {
        if self.exists(be).await? {
            Ok(())
        } else {
            Err(XenopsError::NoSuchDevice {
                domid,
                device: be.to_string(),
            })
        }
    }

    /// Detaches a disk's loop device (logged, never failing: a device
    /// blkback still holds goes on its last close).
    async fn detach_loop_device(&self, domid: DomId, dev: std::path::PathBuf) {
        let b = self.backing.clone();
        let d2 = dev.clone();
        match tokio::task::spawn_blocking(move || b.detach(&d2)).await {
            Ok(Ok(())) => tracing::info!(domid, dev = %dev.display(), "loop device detached"),
            Ok(Err(e)) => {
                tracing::warn!(domid, dev = %dev.display(), error = %e, "loop device not detached")
            }
            Err(e) => tracing::warn!(domid, error = %e, "detaching a loop device"),
        }
    }

    /// Detaches the loop device remembered for one disk, and forgets it.
    async fn detach_loop(&self, domid: DomId, d: &super::DiskSpec) {
        let node = format!("{}/{}", disk::loops_path(domid), d.vdev());
        let Ok(Some(dev)) = self.xs.try_read(&node).await else {
            return;
        };
        let dev = String::from_utf8_lossy(&dev).into_owned().into();
        self.detach_loop_device(domid, dev).await;
        let _ = self.xs.rm(&node).await;
    }

    /// Hot-plugs a network interface into a running domain (as at start:
    /// backend and frontend, then the device onto its bridge).
    pub async fn plug_nic(&self, domid: DomId, n: &super::NicSpec) -> Result<()> {
        let be = vif::backend_path(domid, n);
        if self.exists(&be).await? {
            return Err(XenopsError::DeviceExists { domid, device: be });
        }
        let (b, bridge) = (self.bridging.clone(), n.bridge.clone());
        let exists = tokio::task::spawn_blocking(move || b.bridge_exists(&bridge))
            .await
            .unwrap_or(false);
        if !exists {
            return Err(XenopsError::NoBridge(n.bridge.clone()));
        }
        tree::write(&self.xs, &vif::nodes(domid, n))
            .await
            .map_err(Self::xs_err("write a network backend", domid))?;
        if let Err(e) = self.hotplug_nic(domid, n).await {
            let _ = self.xs.rm(&be).await;
            let _ = self.xs.rm(&vif::frontend_path(domid, n)).await;
            return Err(e);
        }
        Ok(())
    }

    /// Unplugs a network interface from a running domain with the clean
    /// handshake; netback deletes its device when the backend goes.
    pub async fn unplug_nic(
        &self,
        domid: DomId,
        n: &super::NicSpec,
        timeout: Duration,
    ) -> Result<()> {
        already_gone(
            self.unplug_device(
                domid,
                &vif::backend_path(domid, n),
                &vif::frontend_path(domid, n),
                timeout,
            )
            .await,
        )
    }

    async fn exists(&self, path: &str) -> Result<bool> {
        self.xs
            .try_read(path)
            .await
            .map(|v| v.is_some())
            .map_err(|source| XenopsError::Xenstore {
                step: "look for a device",
                domid: 0,
                source,
            })
    }

    /// libxl's clean removal: the backend is set offline and Closing (5);
    /// the guest's frontend closes, and the backend driver, seeing it
    /// closed and offline, goes to Closed (6) and lets the device go. Then
    /// both directories are removed. A frontend that does not close in
    /// time (the device is in use, the guest is paused) leaves the device
    /// as it was: online again, in its state before.
    async fn unplug_device(
        &self,
        domid: DomId,
        be: &str,
        fe: &str,
        timeout: Duration,
    ) -> Result<()> {
        self.require_device(domid, be).await?;
        let state = format!("{be}/state");
        let before = match self.xs.try_read(&state).await {
            Ok(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
            _ => "4".to_string(),
        };
        tree::write(
            &self.xs,
            &[
                tree::node(format!("{be}/online"), "0"),
                tree::node(state.clone(), "5"),
            ],
        )
        .await
        .map_err(Self::xs_err("ask a backend to close", domid))?;
        let deadline = Instant::now() + timeout;
        loop {
            match self.xs.try_read(&state).await {
                Ok(Some(v)) if v == b"6" => break,
                Ok(None) => break,
                _ => {}
            }
            if Instant::now() >= deadline {
                let _ = tree::write(
                    &self.xs,
                    &[
                        tree::node(format!("{be}/online"), "1"),
                        tree::node(state.clone(), before),
                    ],
                )
                .await;
                return Err(XenopsError::DetachTimeout {
                    domid,
                    device: be.to_string(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tree::remove_paths(&self.xs, vec![be.to_string(), fe.to_string()])
            .await
            .map_err(Self::xs_err("remove an unplugged device", domid))?;
        tracing::info!(domid, backend = %be, "device unplugged");
        Ok(())
    }

    /// Gives the guest its network interfaces before it first runs: every
    /// backend and frontend in one transaction, then, for each, what the
    /// hotplug script does once netback has made the device (see
    /// [`vif`]). Netback connects only after `hotplug-status=connected`.
    async fn plug_nics(&self, domid: DomId, spec: &DomainSpec) -> Result<()> {
        if spec.nics.is_empty() {
            return Ok(());
        }
        let nodes: Vec<_> = spec
            .nics
            .iter()
            .flat_map(|n| vif::nodes(domid, n))
            .collect();
        tree::write(&self.xs, &nodes)
            .await
            .map_err(Self::xs_err("write the network backends", domid))?;
        for n in &spec.nics {
            self.hotplug_nic(domid, n).await?;
        }
        Ok(())
    }

    /// The `vif-bridge` script's work for one interface whose backend is
    /// written: wait for netback's device, put it on the bridge, say so.
    async fn hotplug_nic(&self, domid: DomId, n: &super::NicSpec) -> Result<()> {
        let dev = n.backend_name(domid);
        let deadline = Instant::now() + self.hotplug_timeout;
        loop {
            let (b, d) = (self.bridging.clone(), dev.clone());
            let made = tokio::task::spawn_blocking(move || b.device_exists(&d))
                .await
                .unwrap_or(false);
            if made {
                break;
            }
            if Instant::now() >= deadline {
                return Err(XenopsError::Nic {
                    domid,
                    dev,
                    reason: format!(
                        "netback did not make the device within {:?} \
                         (is xen-netback loaded?)",
                        self.hotplug_timeout
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (b, d, br, mtu) = (self.bridging.clone(), dev.clone(), n.bridge.clone(), n.mtu);
        tokio::task::spawn_blocking(move || b.attach(&d, &br, mtu))
            .await
            .map_err(|e| XenopsError::Join {
                step: "put a network backend on its bridge",
                reason: e.to_string(),
            })?
            .map_err(|e| XenopsError::Nic {
                domid,
                dev: dev.clone(),
                reason: e.to_string(),
            })?;
        tree::write(
            &self.xs,
            &[tree::node(vif::hotplug_status_path(domid, n), "connected")],
        )
        .await
        .map_err(Self::xs_err(
            "write a network backend's hotplug-status",
            domid,
        ))?;
        tracing::info!(domid, %dev, bridge = %n.bridge, mac = %n.mac, "network interface on its bridge");
        Ok(())
    }

    /// The loop devices attached for the domain's disks.
    async fn attached_loops(&self, domid: DomId) -> Vec<std::path::PathBuf> {
        let dir = disk::loops_path(domid);
        let Ok(names) = self.xs.directory(&dir).await else {
            return vec![];
        };
        let mut out = vec![];
        for n in names {
            if let Ok(Some(v)) = self.xs.try_read(&format!("{dir}/{n}")).await {
                out.push(String::from_utf8_lossy(&v).into_owned().into());
            }
        }
        out
    }

    /// Builds and unpauses; returns the domid.
    pub async fn start(&self, spec: &DomainSpec) -> Result<DomId> {
        let domid = self.build(spec).await?;
        if let Err(e) = self.unpause(domid).await {
            let _ = self.teardown(domid, &spec.uuid).await;
            return Err(e);
        }
        Ok(domid)
    }

    /// Unpauses a domain we built, marking its build complete.
    pub async fn unpause(&self, domid: DomId) -> Result<()> {
        tree::write(&self.xs, &[tree::stage_node(domid, Stage::Started)])
            .await
            .map_err(Self::xs_err("mark the domain started", domid))?;
        self.blocking("unpause", Some(domid), move |h| h.unpause(domid))
            .await
    }

    /// Pauses a domain.
    pub async fn pause(&self, domid: DomId) -> Result<()> {
        self.blocking("pause", Some(domid), move |h| h.pause(domid))
            .await
    }

    /// Brings vCPUs `0..online` of a running PV domain online and the rest
    /// (up to `max`, its vCPU count) offline; the guest follows.
    pub async fn set_vcpus_online(&self, domid: DomId, online: u32, max: u32) -> Result<()> {
        tree::write(&self.xs, &tree::vcpus_online(domid, online, max))
            .await
            .map_err(Self::xs_err("set vCPU availability", domid))
    }

    /// Sets a running PV domain's memory target. Xen's cap moves first when
    /// it grows (so the balloon may inflate to it) and last when it shrinks
    /// (so the guest is asked to give memory back before Xen insists).
    pub async fn set_memory_target(&self, domid: DomId, old_kib: u64, new_kib: u64) -> Result<()> {
        if new_kib > old_kib {
            self.blocking("raise the memory cap", Some(domid), move |h| {
                h.set_memory_cap(domid, new_kib)
            })
            .await?;
        }
        tree::write(&self.xs, &[tree::memory_target(domid, new_kib)])
            .await
            .map_err(Self::xs_err("set the memory target", domid))?;
        if new_kib < old_kib {
            self.blocking("lower the memory cap", Some(domid), move |h| {
                h.set_memory_cap(domid, new_kib)
            })
            .await?;
        }
        Ok(())
    }

    /// One domain's state, `None` if it does not exist.
    pub async fn domain(&self, domid: DomId) -> Result<Option<DomainState>> {
        self.blocking("domain info", Some(domid), move |h| h.domain(domid))
            .await
    }

    /// Follows `@releaseDomain` for our domains.
    pub async fn track(&self) -> Result<Tracker> {
        Tracker::start(self.hv.clone(), self.xs.clone()).await
    }

    /// Asks the guest to shut down through `control/shutdown` and waits
    /// for its acknowledgement (the guest clears the node), then for the
    /// domain to shut down, for at most `timeout` in all. Returns the
    /// reason Xen recorded. The domain stays (shut down) until
    /// [`Xenops::destroy`].
    pub async fn clean_shutdown(
        &self,
        domid: DomId,
        request: ShutdownRequest,
        timeout: Duration,
    ) -> Result<ShutdownReason> {
        let t0 = Instant::now();
        let deadline = t0 + timeout;
        self.ensure_ours(domid).await?;
        // Set before asking, so the shutdown's event cannot be missed.
        let mut released = self
            .xs
            .watch("@releaseDomain")
            .await
            .map_err(Self::xs_err("watch @releaseDomain", domid))?;
        self.xs
            .request_shutdown(domid, request.as_str())
            .await
            .map_err(Self::xs_err("write control/shutdown", domid))?;
        let ack = SHUTDOWN_ACK_TIMEOUT.min(timeout);
        let acked = self
            .xs
            .wait_shutdown_acked(domid, ack)
            .await
            .map_err(Self::xs_err("wait for the shutdown acknowledgement", domid))?;
        if !acked {
            return Err(XenopsError::ShutdownNotAcknowledged {
                domid,
                request: request.as_str(),
                timeout: ack,
            });
        }
        let acked_ms = t0.elapsed().as_millis();
        loop {
            match self.domain(domid).await? {
                None => return Err(XenopsError::NoSuchDomain(domid)),
                Some(DomainState {
                    power: Power::Shutdown(r),
                    ..
                }) => {
                    tracing::info!(
                        domid,
                        reason = ?r,
                        acked_ms,
                        ms = t0.elapsed().as_millis(),
                        "domain shut down as asked"
                    );
                    return Ok(r);
                }
                Some(_) => {}
            }
            match tokio::time::timeout_at(deadline, released.next()).await {
                Err(_) => return Err(XenopsError::ShutdownTimeout { domid, timeout }),
                Ok(None) => {
                    return Err(XenopsError::Xenstore {
                        step: "wait for @releaseDomain",
                        domid,
                        source: xenstore::Error::Closed,
                    })
                }
                Ok(Some(_)) => {}
            }
        }
    }

    /// Hard shutdown: pauses, destroys, removes every xenstore node we
    /// wrote, and waits until Xen no longer lists the domain.
    pub async fn destroy(&self, domid: DomId) -> Result<()> {
        let uuid = self.ensure_ours(domid).await?;
        self.teardown(domid, &uuid).await
    }

    /// The domain's VM uuid if it is ours; else why not.
    pub(super) async fn ensure_ours(&self, domid: DomId) -> Result<Uuid> {
        let d = self
            .domain(domid)
            .await?
            .ok_or(XenopsError::NoSuchDomain(domid))?;
        tracker::ours(&self.xs, &d)
            .await
            .ok_or(XenopsError::NotOurs(domid))
    }

    pub(super) async fn teardown(&self, domid: DomId, uuid: &Uuid) -> Result<()> {
        let t0 = Instant::now();
        let mut released = self
            .xs
            .watch("@releaseDomain")
            .await
            .map_err(Self::xs_err("watch @releaseDomain", domid))?;
        let loops = self.attached_loops(domid).await;
        // Paused first so the guest does nothing more while it goes.
        let _ = self.pause(domid).await;
        // The hypercall (Xen takes the memory back: tens of ms), the tree
        // and the loop devices at once: with its backends' directories gone
        // blkback and netback let go of the devices, and a loop device
        // blkback still holds is detached on its last close.
        let destroy = async {
            let r = self
                .blocking("destroy", Some(domid), move |h| h.destroy(domid))
                .await;
            (r, t0.elapsed().as_millis())
        };
        let devices = async {
            let removed = tree::remove(&self.xs, domid, uuid).await;
            let tree_ms = t0.elapsed().as_millis();
            for dev in loops {
                self.detach_loop_device(domid, dev).await;
            }
            (removed, tree_ms)
        };
        let ((destroyed, destroy_ms), (removed, tree_ms)) = tokio::join!(destroy, devices);
        removed.map_err(Self::xs_err("remove the domain's xenstore tree", domid))?;
        destroyed?;
        let deadline = Instant::now() + DESTROY_TIMEOUT;
        // xenstored fires @releaseDomain only for introduced domains, and
        // not when a dying domain's last page (one a backend still had
        // mapped) goes: look again every 20 ms too (a hypercall each).
        while self.domain(domid).await?.is_some() {
            let wake = (Instant::now() + Duration::from_millis(20)).min(deadline);
            if Instant::now() >= deadline {
                return Err(XenopsError::DestroyTimeout {
                    domid,
                    timeout: DESTROY_TIMEOUT,
                });
            }
            let _ = tokio::time::timeout_at(wake, released.next()).await;
        }
        tracing::info!(
            domid,
            %uuid,
            destroy_ms,
            tree_ms,
            ms = t0.elapsed().as_millis(),
            "domain destroyed"
        );
        Ok(())
    }

    /// Every domain with its owner, for adoption: ours carry the marker
    /// whose uuid matches their handle.
    pub async fn list(&self) -> Result<Vec<DomainListing>> {
        let all = self.blocking("list domains", None, |h| h.domains()).await?;
        let mut out = Vec::with_capacity(all.len());
        for state in all {
            let name = self
                .xs
                .try_read(&format!("{}/name", tree::dom_path(state.domid)))
                .await
                .ok()
                .flatten()
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            let owner = match tracker::ours(&self.xs, &state).await {
                Some(_) if state.domid != 0 => {
                    let stage = self
                        .xs
                        .try_read(&format!("{}/stage", tree::marker_path(state.domid)))
                        .await
                        .ok()
                        .flatten()
                        .and_then(|v| Stage::parse(&String::from_utf8_lossy(&v)))
                        .unwrap_or(Stage::Building);
                    Ownership::Ours { stage }
                }
                _ => Ownership::Foreign,
            };
            out.push(DomainListing { state, name, owner });
        }
        Ok(out)
    }
}

/// An unplug that finds the device's backend gone already (removed behind
/// our back): the device is unplugged all the same.
fn already_gone(res: Result<()>) -> Result<()> {
    match res {
        Err(XenopsError::NoSuchDevice { domid, device }) => {
            tracing::info!(domid, %device, "device already gone: unplugged");
            Ok(())
        }
        r => r,
    }
}

/// Fails early, with the path and the OS's reason, on a boot file that
/// cannot be opened or is not a regular file.
async fn check_boot_file(what: &'static str, path: &std::path::Path) -> Result<()> {
    let err = |source| XenopsError::BootFile {
        what,
        path: path.to_path_buf(),
        source,
    };
    let meta = tokio::fs::metadata(path).await.map_err(err)?;
    if !meta.is_file() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    tokio::fs::File::open(path).await.map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xenops::fake::FakeHypervisor;
    use crate::xenops::spec::{MemorySpec, PvBoot, VcpuSpec};
    use crate::xenops::tracker::DomainEvent;
    use xenstore::fake::FakeXenstored;

    struct World {
        _kernel: tempfile::NamedTempFile,
        fake_xs: FakeXenstored,
        xo: Xenops<FakeHypervisor>,
        spec: DomainSpec,
    }

    fn world() -> World {
        let kernel = tempfile::NamedTempFile::new().unwrap();
        let fake_xs = FakeXenstored::new();
        let xo = Xenops::new(FakeHypervisor::new(), fake_xs.connect());
        let spec = DomainSpec {
            uuid: Uuid::new_v4(),
            name: "vm1".into(),
            memory: MemorySpec {
                static_max_kib: 131_072,
                target_kib: 131_072,
            },
            vcpus: VcpuSpec {
                max: 1,
                at_startup: 1,
            },
            boot: PvBoot {
                kernel: kernel.path().to_path_buf(),
                ramdisk: None,
                cmdline: String::new(),
            },
            disks: vec![],
            nics: vec![],
        };
        World {
            _kernel: kernel,
            fake_xs,
            xo,
            spec,
        }
    }

    async fn exists(xs: &xenstore::Xenstore, p: &str) -> bool {
        xs.try_read(p).await.unwrap().is_some()
    }

    async fn left_behind(w: &World, domid: DomId) -> Vec<String> {
        let mut v = vec![];
        for r in tree::roots(domid, &w.spec.uuid) {
            if exists(w.xo.xenstore(), &r).await {
                v.push(r);
            }
        }
        v
    }

    #[tokio::test]
    async fn start_builds_introduces_unpauses_and_lists_as_ours() {
        let w = world();
        let domid = w.xo.start(&w.spec).await.unwrap();
        let xs = w.xo.xenstore();
        assert_eq!(
            w.xo.domain(domid)
                .await
                .unwrap()
                .map(|d| (d.power, d.handle)),
            Some((Power::Running, w.spec.uuid))
        );
        assert!(xs.is_domain_introduced(domid).await.unwrap());
        let ring = xs
            .read_string(&format!("/local/domain/{domid}/store/ring-ref"))
            .await
            .unwrap();
        assert_eq!(ring, (0x1000 + domid).to_string());
        let l = w.xo.list().await.unwrap();
        let owner = |d| l.iter().find(|x| x.state.domid == d).map(|x| x.owner);
        assert_eq!(
            owner(domid),
            Some(Ownership::Ours {
                stage: Stage::Started
            })
        );
        assert_eq!(owner(0), Some(Ownership::Foreign));
    }

    #[tokio::test]
    async fn a_failed_build_destroys_the_domain_and_its_nodes() {
        let w = world();
        w.xo.hypervisor().fail_builds(true);
        let e = w.xo.start(&w.spec).await.unwrap_err();
        assert!(
            matches!(
                &e,
                XenopsError::Xen {
                    step: "build the PV image",
                    domid: Some(1),
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "build the PV image (domid 1): xc_dom_parse_image(domid 1, kernel: no loader \
             found): Invalid argument (errno 22)"
        );
        assert_eq!(w.xo.domain(1).await.unwrap(), None);
        assert_eq!(left_behind(&w, 1).await, Vec::<String>::new());
    }

    fn with_disks(w: World, images: &[&std::path::Path]) -> (World, Arc<disk::fake::FakeBacking>) {
        let backing = Arc::new(disk::fake::FakeBacking::default());
        let World {
            _kernel,
            fake_xs,
            xo,
            mut spec,
        } = w;
        spec.disks = images
            .iter()
            .enumerate()
            .map(|(i, p)| crate::xenops::DiskSpec {
                slot: i as u32,
                path: p.to_path_buf(),
                read_only: false,
            })
            .collect();
        let xo = xo.with_backing(backing.clone());
        (
            World {
                _kernel,
                fake_xs,
                xo,
                spec,
            },
            backing,
        )
    }

    #[tokio::test]
    async fn disks_are_plugged_before_the_guest_runs_and_gone_after_destroy() {
        let img = tempfile::NamedTempFile::new().unwrap();
        let (w, backing) = with_disks(world(), &[img.path()]);
        let domid = w.xo.start(&w.spec).await.unwrap();
        let xs = w.xo.xenstore();
        let be = format!("/local/domain/0/backend/vbd/{domid}/51712");
        assert_eq!(
            xs.read_string(&format!("{be}/physical-device"))
                .await
                .unwrap(),
            "7:0"
        );
        assert_eq!(
            xs.read_string(&format!("/local/domain/{domid}/device/vbd/51712/backend"))
                .await
                .unwrap(),
            be
        );
        assert_eq!(backing.attached.lock().unwrap().len(), 1);
        w.xo.destroy(domid).await.unwrap();
        assert_eq!(left_behind(&w, domid).await, Vec::<String>::new());
        assert!(backing.attached.lock().unwrap().is_empty(), "loop detached");
    }

    #[tokio::test]
    async fn suspend_writes_the_image_and_resume_brings_the_vm_back_with_its_disk() {
        let disk_img = tempfile::NamedTempFile::new().unwrap();
        let image = tempfile::NamedTempFile::new().unwrap();
        let (w, backing) = with_disks(world(), &[disk_img.path()]);
        let domid = w.xo.start(&w.spec).await.unwrap();
        w.xo.suspend(domid, image.path()).await.unwrap();
        assert_eq!(
            w.xo.domain(domid).await.unwrap(),
            None,
            "the domain is gone"
        );
        assert_eq!(left_behind(&w, domid).await, Vec::<String>::new());
        assert!(backing.attached.lock().unwrap().is_empty(), "loop detached");
        let text = std::fs::read_to_string(image.path()).unwrap();
        assert!(text.contains(&w.spec.uuid.to_string()), "{text:?}");

        let back = w.xo.resume(&w.spec, image.path()).await.unwrap();
        assert_ne!(back, domid);
        let xs = w.xo.xenstore();
        assert!(xs.is_domain_introduced(back).await.unwrap());
        let d = w.xo.domain(back).await.unwrap().unwrap();
        assert_eq!((d.power, d.handle), (Power::Paused, w.spec.uuid));
        let be = format!("/local/domain/0/backend/vbd/{back}/51712");
        assert!(exists(xs, &be).await, "the disk is plugged again");
        assert_eq!(backing.attached.lock().unwrap().len(), 1);
        w.xo.unpause(back).await.unwrap();
        let l = w.xo.list().await.unwrap();
        assert!(l.iter().any(|x| x.state.domid == back
            && x.owner
                == Ownership::Ours {
                    stage: Stage::Started
                }));
    }

    #[tokio::test]
    async fn a_failed_suspend_leaves_the_guest_running_and_a_bad_image_no_domain() {
        let w = world();
        let image = tempfile::NamedTempFile::new().unwrap();
        let domid = w.xo.start(&w.spec).await.unwrap();
        w.xo.hypervisor().fail_saves(true);
        let e = w.xo.suspend(domid, image.path()).await.unwrap_err();
        assert!(e.to_string().contains("did not suspend"), "{e}");
        assert_eq!(
            w.xo.domain(domid).await.unwrap().map(|d| d.power),
            Some(Power::Running)
        );
        assert_eq!(left_behind(&w, domid).await.len(), 3, "tree kept");
        // Another VM's image: refused, and no domain is made.
        std::fs::write(image.path(), "fake image of someone else\n").unwrap();
        let before = w.xo.list().await.unwrap().len();
        assert!(w.xo.resume(&w.spec, image.path()).await.is_err());
        assert_eq!(w.xo.list().await.unwrap().len(), before);
    }

    fn with_nic(
        w: World,
        bridging: vif::fake::FakeBridging,
    ) -> (World, Arc<vif::fake::FakeBridging>) {
        let bridging = Arc::new(bridging);
        let World {
            _kernel,
            fake_xs,
            xo,
            mut spec,
        } = w;
        spec.nics = vec![crate::xenops::NicSpec {
            slot: 0,
            mac: "02:00:00:00:00:01".into(),
            mtu: 1500,
            bridge: "xenbr0".into(),
        }];
        let xo = xo.with_bridging(bridging.clone());
        (
            World {
                _kernel,
                fake_xs,
                xo,
                spec,
            },
            bridging,
        )
    }

    #[tokio::test]
    async fn a_vif_joins_its_bridge_before_the_guest_runs_and_is_gone_after_destroy() {
        let (w, bridging) = with_nic(world(), vif::fake::FakeBridging::default());
        let domid = w.xo.start(&w.spec).await.unwrap();
        let xs = w.xo.xenstore();
        let be = format!("/local/domain/0/backend/vif/{domid}/0");
        assert_eq!(
            xs.read_string(&format!("{be}/hotplug-status"))
                .await
                .unwrap(),
            "connected"
        );
        assert_eq!(
            *bridging.attached.lock().unwrap(),
            vec![(format!("vif{domid}.0"), "xenbr0".to_string(), 1500)]
        );
        w.xo.destroy(domid).await.unwrap();
        assert_eq!(left_behind(&w, domid).await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn a_vif_on_a_bridge_dom0_lacks_is_refused_before_creating() {
        let (w, _) = with_nic(
            world(),
            vif::fake::FakeBridging {
                bridges: vec![],
                ..Default::default()
            },
        );
        let e = w.xo.start(&w.spec).await.unwrap_err();
        assert!(
            matches!(&e, XenopsError::NoBridge(b) if b == "xenbr0"),
            "{e:?}"
        );
        assert_eq!(w.xo.domain(1).await.unwrap(), None, "no domain created");
    }

    #[tokio::test]
    async fn a_vif_netback_never_makes_fails_the_start_and_leaves_nothing() {
        let (mut w, bridging) = with_nic(
            world(),
            vif::fake::FakeBridging {
                missing: vec!["vif1.0".into()],
                ..Default::default()
            },
        );
        w.xo.hotplug_timeout = Duration::from_millis(300);
        let e = w.xo.start(&w.spec).await.unwrap_err();
        assert!(
            e.to_string().contains("vif1.0") && e.to_string().contains("netback"),
            "{e}"
        );
        assert!(bridging.attached.lock().unwrap().is_empty());
        assert_eq!(w.xo.domain(1).await.unwrap(), None);
        assert_eq!(left_behind(&w, 1).await, Vec::<String>::new());
    }

    /// Plays a backend driver: a backend the toolstack sets Closing is
    /// Closed a moment later.
    fn closing_backends(xs: xenstore::Xenstore, be: String) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                if let Ok(Some(v)) = xs.try_read(&format!("{be}/state")).await {
                    if v == b"5" {
                        xs.write(&format!("{be}/state"), "6").await.unwrap();
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    #[tokio::test]
    async fn a_disk_is_hot_plugged_and_unplugged_with_the_close_handshake() {
        let img = tempfile::NamedTempFile::new().unwrap();
        let (w, backing) = with_disks(world(), &[]);
        let domid = w.xo.start(&w.spec).await.unwrap();
        let d = crate::xenops::DiskSpec {
            slot: 1,
            path: img.path().to_path_buf(),
            read_only: false,
        };
        w.xo.plug_disk(domid, &d).await.unwrap();
        let xs = w.xo.xenstore();
        let be = disk::backend_path(domid, &d);
        assert_eq!(
            xs.read_string(&format!("{be}/physical-device"))
                .await
                .unwrap(),
            "7:0"
        );
        let again = w.xo.plug_disk(domid, &d).await.unwrap_err();
        assert!(
            matches!(again, XenopsError::DeviceExists { .. }),
            "{again:?}"
        );
        assert_eq!(backing.attached.lock().unwrap().len(), 1, "no second loop");
        let driver = closing_backends(xs.clone(), be.clone());
        w.xo.unplug_disk(domid, &d, Duration::from_secs(10))
            .await
            .unwrap();
        driver.await.unwrap();
        assert!(!exists(xs, &be).await, "backend removed");
        assert!(!exists(xs, &disk::frontend_path(domid, &d)).await);
        assert!(backing.attached.lock().unwrap().is_empty(), "loop detached");
        // A disk whose backend is gone (removed behind our back) is
        // unplugged already: its loop device goes, and no error.
        w.xo.plug_disk(domid, &d).await.unwrap();
        xs.rm(&be).await.unwrap();
        w.xo.unplug_disk(domid, &d, Duration::from_secs(1))
            .await
            .unwrap();
        assert!(backing.attached.lock().unwrap().is_empty(), "loop detached");
    }

    #[tokio::test]
    async fn a_device_the_guest_keeps_stays_plugged_and_online() {
        let (w, bridging) = with_nic(world(), vif::fake::FakeBridging::default());
        let mut spec = w.spec.clone();
        let nic = spec.nics.pop().unwrap();
        let domid = w.xo.start(&spec).await.unwrap();
        w.xo.plug_nic(domid, &nic).await.unwrap();
        assert_eq!(bridging.attached.lock().unwrap().len(), 1);
        let xs = w.xo.xenstore();
        let be = vif::backend_path(domid, &nic);
        let e =
            w.xo.unplug_nic(domid, &nic, Duration::from_millis(300))
                .await
                .unwrap_err();
        assert!(matches!(e, XenopsError::DetachTimeout { .. }), "{e:?}");
        assert_eq!(xs.read_string(&format!("{be}/online")).await.unwrap(), "1");
        assert!(exists(xs, &vif::frontend_path(domid, &nic)).await);
        let driver = closing_backends(xs.clone(), be.clone());
        w.xo.unplug_nic(domid, &nic, Duration::from_secs(10))
            .await
            .unwrap();
        driver.await.unwrap();
        assert!(!exists(xs, &be).await);
    }

    #[tokio::test]
    async fn a_disk_that_cannot_be_attached_fails_the_start_and_leaves_nothing() {
        let img = tempfile::NamedTempFile::new().unwrap();
        let missing = std::path::Path::new("/nonexistent/disk.img");
        let (w, backing) = with_disks(world(), &[img.path(), missing]);
        let e = w.xo.start(&w.spec).await.unwrap_err();
        assert!(
            matches!(&e, XenopsError::Disk { path, .. } if path == missing),
            "{e:?}"
        );
        assert_eq!(w.xo.domain(1).await.unwrap(), None);
        assert_eq!(left_behind(&w, 1).await, Vec::<String>::new());
        assert!(
            backing.attached.lock().unwrap().is_empty(),
            "the first disk's loop detached"
        );
    }

    #[tokio::test]
    async fn missing_kernel_is_refused_before_creating() {
        let mut w = world();
        w.spec.boot.kernel = "/nonexistent/vmlinuz".into();
        let e = w.xo.start(&w.spec).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "kernel /nonexistent/vmlinuz: No such file or directory (os error 2)"
        );
        assert_eq!(w.xo.list().await.unwrap().len(), 1, "only dom0");
    }

    #[tokio::test]
    async fn clean_shutdown_waits_for_the_ack_then_the_reason() {
        let w = world();
        let domid = w.xo.start(&w.spec).await.unwrap();
        let mut tracker = w.xo.track().await.unwrap();
        // The guest: acks control/shutdown (a node it owns) and powers off;
        // xenstored then fires @releaseDomain (here: the release does).
        let guest = w.fake_xs.connect_as(domid);
        let dom0 = w.fake_xs.connect();
        let path = xenstore::control_shutdown_path(domid);
        let hv = w.xo.hv.clone();
        let g = tokio::spawn(async move {
            let mut watch = guest.watch(&path).await.unwrap();
            while watch.next().await.is_some() {
                if guest.read_string(&path).await.unwrap() == "poweroff" {
                    guest.write(&path, "").await.unwrap();
                    hv.guest_shutdown(domid, ShutdownReason::Poweroff);
                    dom0.release_domain(domid).await.unwrap();
                    return;
                }
            }
        });
        let r =
            w.xo.clean_shutdown(domid, ShutdownRequest::Poweroff, Duration::from_secs(10))
                .await
                .unwrap();
        assert_eq!(r, ShutdownReason::Poweroff);
        g.await.unwrap();
        assert_eq!(
            tracker.next().await.unwrap().unwrap(),
            DomainEvent::Shutdown {
                domid,
                uuid: w.spec.uuid,
                reason: ShutdownReason::Poweroff
            }
        );
    }

    #[tokio::test]
    async fn a_guest_that_does_not_ack_fails_the_clean_shutdown() {
        let w = world();
        let domid = w.xo.start(&w.spec).await.unwrap();
        let e =
            w.xo.clean_shutdown(domid, ShutdownRequest::Reboot, Duration::from_millis(300))
                .await
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("domid {domid} did not acknowledge control/shutdown=reboot within 300ms")
        );
        assert_eq!(
            w.xo.domain(domid).await.unwrap().map(|d| d.power),
            Some(Power::Running)
        );
    }

    #[tokio::test]
    async fn dropping_the_tracker_removes_its_watch() {
        let w = world();
        let t = w.xo.track().await.unwrap();
        // @releaseDomain and @introduceDomain.
        assert_eq!(w.fake_xs.watch_count(), 2);
        drop(t);
        let deadline = Instant::now() + Duration::from_secs(5);
        while w.fake_xs.watch_count() != 0 {
            assert!(Instant::now() < deadline, "watch still set");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn destroy_removes_ours_and_refuses_others() {
        let w = world();
        let domid = w.xo.start(&w.spec).await.unwrap();
        let e = w.xo.destroy(0).await.unwrap_err();
        assert!(matches!(e, XenopsError::NotOurs(0)), "{e:?}");
        let e = w.xo.destroy(99).await.unwrap_err();
        assert_eq!(e.to_string(), "domid 99 does not exist");
        w.xo.destroy(domid).await.unwrap();
        assert_eq!(w.xo.domain(domid).await.unwrap(), None);
        assert_eq!(left_behind(&w, domid).await, Vec::<String>::new());
    }
}
