//! A domain's disks: blkback serves each from a block device in dom0, an
//! image file going through a loop device first. The toolstack does what
//! the reference's `block` hotplug script does (Debian ships no udev rule
//! to run it): attach the loop device, then hand blkback its
//! `physical-device` in the backend's xenstore directory, together with
//! the frontend's, in one transaction (libxl's layout). The loop devices
//! attached for a domain are kept under its marker, so that tearing the
//! domain down detaches them even after a daemon restart.

use std::path::{Path, PathBuf};

use xenctrl::DomId;
use xenstore::{Access, Perm};

use super::spec::DiskSpec;
use super::tree::{self, Node};

/// A block device blkback can open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDev {
    /// Its node, e.g. `/dev/loop0`.
    pub path: PathBuf,
    /// Its device number.
    pub major: u32,
    /// Its device number.
    pub minor: u32,
    /// A loop device attached for the domain (to detach at teardown).
    pub attached_loop: bool,
}

/// Turns a disk's path into a block device and back; blocking calls, run
/// on the blocking pool.
pub trait Backing: Send + Sync + 'static {
    /// A block device as it is; an image file on a new loop device.
    fn attach(&self, path: &Path, read_only: bool) -> std::io::Result<BlockDev>;
    /// Detaches a loop device [`Backing::attach`] attached. A device still
    /// open (blkback has not let go yet) is detached when it is closed.
    fn detach(&self, dev: &Path) -> std::io::Result<()>;
}

/// Loop devices through the kernel's loop ioctls (the `loopdev-3` crate):
/// what the reference's scripts do with `losetup`, without a process per
/// disk (under TCG a `losetup` run took ~140 ms of every shutdown).
pub struct LoopBacking;

fn device_numbers(path: &Path) -> std::io::Result<(u32, u32)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(path)?;
    if !m.file_type().is_block_device() {
        return Err(std::io::Error::other(format!(
            "{} is not a block device",
            path.display()
        )));
    }
    let d = m.rdev();
    // glibc's major()/minor() encoding of dev_t.
    let major = ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff);
    let minor = (d & 0xff) | ((d >> 12) & !0xff);
    Ok((major as u32, minor as u32))
}

/// How often a free loop device is looked for again when another program
/// (a `losetup` of xl's scripts) took the one the kernel named first.
const LOOP_TRIES: usize = 5;

fn loop_error(what: &str, path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

impl Backing for LoopBacking {
    fn attach(&self, path: &Path, read_only: bool) -> std::io::Result<BlockDev> {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata(path)?.file_type().is_block_device() {
            let (major, minor) = device_numbers(path)?;
            return Ok(BlockDev {
                path: path.to_path_buf(),
                major,
                minor,
                attached_loop: false,
            });
        }
        let control = loopdev::LoopControl::open()
            .map_err(|e| loop_error("open", Path::new("/dev/loop-control"), e))?;
        let mut tries = 0;
        let dev = loop {
            let dev = control
                .next_free()
                .map_err(|e| loop_error("find a free loop device for", path, e))?;
            match dev.with().read_only(read_only).attach(path) {
                Ok(()) => break dev,
                Err(e) if e.raw_os_error() == Some(16 /* EBUSY */) && tries < LOOP_TRIES => {
                    tries += 1;
                }
                Err(e) => return Err(loop_error("attach a loop device to", path, e)),
            }
        };
        let node = dev.path().unwrap_or_default();
        match device_numbers(&node) {
            Ok((major, minor)) => Ok(BlockDev {
                path: node,
                major,
                minor,
                attached_loop: true,
            }),
            Err(e) => {
                let _ = dev.detach();
                Err(e)
            }
        }
    }

    fn detach(&self, dev: &Path) -> std::io::Result<()> {
        // A device still open elsewhere (blkback) is marked to go on its
        // last close, as `losetup -d` does.
        loopdev::LoopDevice::open(dev)
            .and_then(|d| d.detach())
            .map_err(|e| loop_error("detach", dev, e))
    }
}

/// `/local/domain/0/backend/vbd/D`: every disk backend of domain D.
pub fn backends_path(domid: DomId) -> String {
    format!("/local/domain/0/backend/vbd/{domid}")
}

/// The backend directory of one disk.
pub fn backend_path(domid: DomId, disk: &DiskSpec) -> String {
    format!("{}/{}", backends_path(domid), disk.vdev())
}

/// The frontend directory of one disk.
pub fn frontend_path(domid: DomId, disk: &DiskSpec) -> String {
    format!("{}/device/vbd/{}", tree::dom_path(domid), disk.vdev())
}

/// Where a domain's attached loop devices are remembered (under its
/// marker, so removed with it).
pub fn loops_path(domid: DomId) -> String {
    format!("{}/loop", tree::marker_path(domid))
}

/// The node remembering one disk's loop device.
pub fn loop_node(domid: DomId, disk: &DiskSpec, dev: &BlockDev) -> Node {
    tree::node(
        format!("{}/{}", loops_path(domid), disk.vdev()),
        dev.path.display().to_string(),
    )
}

/// The backend and frontend directories of one disk, as libxl writes
/// them: dom0 owns the backend and the guest reads it; the guest owns the
/// frontend and dom0 reads it. Both start in state 1 (Initialising).
pub fn nodes(domid: DomId, disk: &DiskSpec, dev: &BlockDev) -> Vec<Node> {
    let be = backend_path(domid, disk);
    let fe = frontend_path(domid, disk);
    let mode = if disk.read_only { "r" } else { "w" };
    vec![
        tree::with(
            be.clone(),
            "",
            vec![Perm::new(0, Access::None), Perm::new(domid, Access::Read)],
        ),
        tree::node(format!("{be}/frontend"), fe.clone()),
        tree::node(format!("{be}/frontend-id"), domid.to_string()),
        tree::node(format!("{be}/online"), "1"),
        tree::node(format!("{be}/removable"), "0"),
        tree::node(format!("{be}/bootable"), "1"),
        tree::node(format!("{be}/state"), "1"),
        tree::node(format!("{be}/dev"), disk.name()),
        tree::node(format!("{be}/type"), "phy"),
        tree::node(format!("{be}/mode"), mode),
        tree::node(format!("{be}/device-type"), "disk"),
        tree::node(format!("{be}/params"), dev.path.display().to_string()),
        tree::node(
            format!("{be}/physical-device"),
            format!("{:x}:{:x}", dev.major, dev.minor),
        ),
        tree::node(
            format!("{be}/physical-device-path"),
            dev.path.display().to_string(),
        ),
        tree::node(format!("{be}/hotplug-status"), "connected"),
        tree::with(
            fe.clone(),
            "",
            vec![Perm::new(domid, Access::None), Perm::new(0, Access::Read)],
        ),
        tree::node(format!("{fe}/backend"), be),
        tree::node(format!("{fe}/backend-id"), "0"),
        tree::node(format!("{fe}/state"), "1"),
        tree::node(format!("{fe}/virtual-device"), disk.vdev().to_string()),
        tree::node(format!("{fe}/device-type"), "disk"),
    ]
}

#[cfg(test)]
pub mod fake {
    //! Backing for unit tests: hands out made-up loop devices and records
    //! what is attached.
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct FakeBacking {
        /// Loop device -> image, while attached.
        pub attached: Mutex<Vec<(PathBuf, PathBuf)>>,
        next: Mutex<u32>,
    }

    impl Backing for FakeBacking {
        fn attach(&self, path: &Path, _read_only: bool) -> std::io::Result<BlockDev> {
            if !path.exists() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no such image",
                ));
            }
            let mut n = self.next.lock().unwrap();
            let dev = PathBuf::from(format!("/dev/loop{n}"));
            *n += 1;
            self.attached
                .lock()
                .unwrap()
                .push((dev.clone(), path.to_path_buf()));
            Ok(BlockDev {
                path: dev,
                major: 7,
                minor: *n - 1,
                attached_loop: true,
            })
        }

        fn detach(&self, dev: &Path) -> std::io::Result<()> {
            let mut a = self.attached.lock().unwrap();
            let before = a.len();
            a.retain(|(d, _)| d != dev);
            if a.len() == before {
                return Err(std::io::Error::other("not attached"));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_has_libxl_backend_and_frontend_nodes() {
        let disk = DiskSpec {
            slot: 1,
            path: "/srv/a.img".into(),
            read_only: true,
        };
        let dev = BlockDev {
            path: "/dev/loop3".into(),
            major: 7,
            minor: 3,
            attached_loop: true,
        };
        let n = nodes(5, &disk, &dev);
        let get = |p: &str| {
            n.iter()
                .find(|x| x.path == p)
                .map(|x| x.value.clone())
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        let be = "/local/domain/0/backend/vbd/5/51728";
        let fe = "/local/domain/5/device/vbd/51728";
        assert_eq!(get(&format!("{be}/frontend")), fe);
        assert_eq!(get(&format!("{be}/physical-device")), "7:3");
        assert_eq!(get(&format!("{be}/mode")), "r");
        assert_eq!(get(&format!("{be}/dev")), "xvdb");
        assert_eq!(get(&format!("{fe}/backend")), be);
        assert_eq!(get(&format!("{fe}/virtual-device")), "51728");
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
        assert_eq!(
            loop_node(5, &disk, &dev).path,
            "/xapi-rs/domain/5/loop/51728"
        );
    }

    #[test]
    fn only_block_devices_are_disks() {
        assert!(
            device_numbers(Path::new("/dev/null")).is_err(),
            "a character device"
        );
        assert!(device_numbers(Path::new("/")).is_err(), "a directory");
    }
}
