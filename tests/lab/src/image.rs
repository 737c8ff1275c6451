//! The dom0 root filesystem: Debian 12 by mmdebstrap with the pinned Xen
//! tools, plus the lab's few files. Cached by a hash of this recipe; each run
//! boots a copy-on-write overlay of it.

use crate::deps::{debian_sources, XEN_DOM0_BINARIES};
use crate::util::{cache_dir, capture, hash_key, run_step, say};
use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const RECIPE: &str = "dom0-image-v1";

/// Unpinned dom0 packages. Later features add theirs here (the hash follows).
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    "bridge-utils",
    "linux-image-amd64",
    "openssh-server",
    "procps",
    "psmisc",
    "python3",
    "iputils-ping",
    "ca-certificates",
];

const LAB_NET: &str = r#"#!/bin/sh
# Host identity from the kernel command line (lab.host=N), the management NIC
# (eth0, QEMU user networking) and the lab network (eth1 in bridge xenbr0).
n=$(sed -n 's/.*lab\.host=\([0-9]*\).*/\1/p' /proc/cmdline); n=${n:-1}
hostname "labhost$n"; echo "labhost$n" > /etc/hostname
{ echo "127.0.0.1 localhost"; echo "127.0.1.1 labhost$n"
  for i in 1 2 3 4 5 6 7 8; do echo "10.77.0.$i labhost$i-lab"; done; } > /etc/hosts
for i in $(seq 1 100); do [ -e /sys/class/net/eth1 ] && break; sleep 0.1; done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0 2>/dev/null
ip route add default via 10.0.2.2 2>/dev/null
ip link add xenbr0 type bridge 2>/dev/null
ip link set eth1 master xenbr0
ip link set eth1 up
ip addr add "10.77.0.$n/24" dev xenbr0 2>/dev/null
ip link set xenbr0 up
exit 0
"#;

const LAB_GUEST: &str = r#"#!/bin/sh
# lab-guest NAME [MEM_MB] [WORKSET_MB]: start a guest-kit PV guest (Debian's
# kernel, the lab initramfs with the probe) with xl and print its domid.
set -e
name=$1; mem=${2:-256}; ws=${3:-16}
[ -n "$name" ] || { echo "usage: lab-guest NAME [MEM_MB] [WORKSET_MB]" >&2; exit 2; }
kernel=$(ls /boot/vmlinuz-* | sort | tail -1)
cfg=/etc/xen/lab-guest-$name.cfg
cat > "$cfg" <<CFG
name = "$name"
type = "pv"
kernel = "$kernel"
ramdisk = "/opt/lab/guest/initrd.cpio"
extra = "console=hvc0 quiet probe.ws_mb=$ws"
memory = $mem
maxmem = $mem
vcpus = 1
on_crash = "preserve"
CFG
xl create -q "$cfg" >&2
xl domid "$name"
"#;

const LAB_GUEST_LOG: &str = r#"#!/bin/sh
# lab-guest-log NAME: what the guest's console printed, across migrations
# (xenconsoled names the log after the domain's name when it attaches).
cat /var/log/xen/console/guest-"$1".log /var/log/xen/console/guest-"$1"--incoming.log 2>/dev/null
exit 0
"#;

const LAB_SSH_LOCAL: &str = r#"#!/bin/sh
# Stands in for ssh in `xl migrate -s lab-ssh-local DOM localhost`:
# drops the host argument and runs the command here.
shift
exec sh -c "$*"
"#;

const LAB_NET_UNIT: &str = "[Unit]
Description=Lab host identity and networks
DefaultDependencies=no
After=systemd-udevd.service local-fs.target
Before=network.target ssh.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-net

[Install]
WantedBy=multi-user.target
";

/// Files written into the image: (path, mode, content).
const FILES: &[(&str, u32, &str)] = &[
    ("/etc/fstab", 0o644, "/dev/vda / ext4 rw,relatime 0 1\n"),
    // Persistent journal files written under TCG came out unreadable
    // ("Protocol not supported"); a volatile journal is enough for a lab run.
    (
        "/etc/systemd/journald.conf.d/lab.conf",
        0o644,
        "[Journal]\nStorage=volatile\n",
    ),
    (
        "/etc/modules-load.d/xen-lab.conf",
        0o644,
        "xen-evtchn\nxen-gntdev\nxen-gntalloc\nxen-blkback\nxen-netback\nxen-privcmd\n",
    ),
    (
        "/etc/ssh/sshd_config.d/lab.conf",
        0o644,
        "UseDNS no\nPermitRootLogin prohibit-password\nMaxStartups 100\n",
    ),
    ("/etc/systemd/system/lab-net.service", 0o644, LAB_NET_UNIT),
    ("/usr/local/sbin/lab-net", 0o755, LAB_NET),
    ("/usr/local/bin/lab-ssh-local", 0o755, LAB_SSH_LOCAL),
    ("/usr/local/bin/lab-guest", 0o755, LAB_GUEST),
    ("/usr/local/bin/lab-guest-log", 0o755, LAB_GUEST_LOG),
];

/// Directories the image must have.
const DIRS: &[&str] = &["opt/lab/guest", "opt/lab/tests", "var/log/xen/console"];

pub struct Dom0Image {
    pub rootfs: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// The lab's ssh key and root password, generated once per cache.
pub struct Credentials {
    pub key: PathBuf,
    pub pubkey: String,
    pub password: String,
}

pub fn credentials() -> Result<Credentials> {
    let dir = cache_dir().join("credentials");
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("id_ed25519");
    if !key.exists() {
        capture(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "xapi-rs-lab", "-f"])
                .arg(&key),
        )?;
    }
    let pw = dir.join("root-password");
    if !pw.exists() {
        let mut bytes = [0u8; 12];
        use std::io::Read;
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&pw, s)?;
    }
    Ok(Credentials {
        pubkey: std::fs::read_to_string(key.with_extension("pub"))?
            .trim()
            .to_string(),
        password: std::fs::read_to_string(&pw)?.trim().to_string(),
        key,
    })
}

fn write_file(root: &Path, path: &str, mode: u32, content: &[u8]) -> Result<()> {
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap_or(root))?;
    std::fs::write(&p, content).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Builds (or finds) the dom0 image for this Xen version and these credentials.
pub fn build(xen_version: &str, cred: &Credentials) -> Result<Dom0Image> {
    let mut include: Vec<String> = PACKAGES.iter().map(|s| s.to_string()).collect();
    include.extend(
        XEN_DOM0_BINARIES
            .iter()
            .map(|p| format!("{p}={xen_version}")),
    );
    let include = include.join(",");
    let files: String = FILES
        .iter()
        .map(|(p, m, c)| format!("{p}\n{m:o}\n{c}\n"))
        .collect();
    let key = hash_key(&[
        RECIPE.as_bytes(),
        include.as_bytes(),
        files.as_bytes(),
        DIRS.join(",").as_bytes(),
        cred.pubkey.as_bytes(),
        cred.password.as_bytes(),
    ]);
    let out = cache_dir().join(format!("dom0-{key}"));
    let img = Dom0Image {
        rootfs: out.join("rootfs.img"),
        kernel: out.join("vmlinuz"),
        initrd: out.join("initrd.img"),
    };
    if img.rootfs.exists() {
        say(format!("dom0 image: cached {}", out.display()));
        return Ok(img);
    }
    let log = cache_dir().join(format!("logs/dom0-{key}.log"));
    // Per process: two labs (two worktrees) may build the same key at once.
    let tmp = cache_dir().join(format!("dom0-{key}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let root = tmp.join("root");
    let sources = tmp.join("sources");
    std::fs::write(&sources, debian_sources("deb")?)?;
    run_step(
        "build dom0 image (mmdebstrap)",
        Command::new("mmdebstrap")
            .args(["--variant=minbase", "--mode=root", "--include"])
            .arg(&include)
            .arg("bookworm")
            .arg(&root)
            .arg(&sources),
        &log,
        Duration::from_secs(1800),
    )?;
    for (p, m, c) in FILES {
        write_file(&root, p, *m, c.as_bytes())?;
    }
    let mut default_xen = std::fs::read_to_string(root.join("etc/default/xen")).unwrap_or_default();
    default_xen.push_str(
        "\n# lab: guest consoles to /var/log/xen/console/guest-NAME.log\n\
         XENCONSOLED_ARGS=\"--log=guest --log-dir=/var/log/xen/console\"\n",
    );
    write_file(&root, "/etc/default/xen", 0o644, default_xen.as_bytes())?;
    write_file(
        &root,
        "/root/.ssh/authorized_keys",
        0o600,
        format!("{}\n", cred.pubkey).as_bytes(),
    )?;
    for d in DIRS {
        std::fs::create_dir_all(root.join(d))?;
    }
    let setup = format!(
        "set -e; echo 'root:{}' | chpasswd; systemctl enable lab-net.service; \
         systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_reap.service \
         systemd-networkd-wait-online.service >/dev/null 2>&1 || true",
        cred.password
    );
    run_step(
        "configure dom0 image",
        Command::new("chroot").arg(&root).args(["sh", "-c", &setup]),
        &log,
        Duration::from_secs(300),
    )?;
    for e in std::fs::read_dir(root.join("boot"))? {
        let p = e?.path();
        let n = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if n.starts_with("vmlinuz-") {
            std::fs::copy(&p, tmp.join("vmlinuz"))?;
        } else if n.starts_with("initrd.img-") {
            std::fs::copy(&p, tmp.join("initrd.img"))?;
        }
    }
    run_step(
        "make dom0 filesystem",
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "labroot", "-d"])
            .arg(&root)
            .arg(tmp.join("rootfs.img"))
            .arg("4G"),
        &log,
        Duration::from_secs(900),
    )?;
    std::fs::remove_dir_all(&root)?;
    std::fs::remove_file(&sources)?;
    if std::fs::rename(&tmp, &out).is_err() && out.exists() {
        // Another lab finished the same build first: use theirs.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    crate::util::prune_cache("dom0", &out);
    Ok(img)
}
