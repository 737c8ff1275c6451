//! The guest kit: an initramfs for a PV guest with busybox and the probe
//! (`tests/guest-probe`), booted with dom0's own Debian kernel.

use crate::util::{run_step, say, workspace_root};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
ws=$(sed -n 's/.*probe\.ws_mb=\([0-9]*\).*/\1/p' /proc/cmdline)
gap=$(sed -n 's/.*probe\.gap_ms=\([0-9]*\).*/\1/p' /proc/cmdline)
tick=$(sed -n 's/.*probe\.tick_ms=\([0-9]*\).*/\1/p' /proc/cmdline)
every=$(sed -n 's/.*probe\.verify_s=\([0-9]*\).*/\1/p' /proc/cmdline)
echo "lab-guest: init up"
# What a distribution's udev rule does in a real guest: a vCPU the toolstack
# makes available (cpu/N/availability=online: the kernel marks it present)
# is brought online. One taken away is removed by the kernel itself. Only
# in a guest that can have more than one vCPU (migration tests have one).
[ "$(cat /sys/devices/system/cpu/possible)" = 0 ] || (while sleep 1; do
    for c in /sys/devices/system/cpu/cpu[0-9]*; do
        [ "$(cat $c/online 2>/dev/null)" = 0 ] && echo 1 > $c/online
    done
done) </dev/null >/dev/null 2>&1 &
# The PV disk and network drivers: dom0's kernel has them as modules, which
# the lab appends to this archive in each dom0 (MODULES_DIR).
for m in /xen/*.ko; do [ -e "$m" ] && insmod "$m"; done
# lab.disk=MARKER: report what the first sector of xvda held, then write
# "lab-disk=MARKER" there (flushed), so tests see the guest's disk from dom0.
marker=$(sed -n 's/.*lab\.disk=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$marker" ]; then
    i=0
    while [ ! -b /dev/xvda ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
    if [ -b /dev/xvda ]; then
        echo "lab-guest: xvda $(cat /sys/block/xvda/size) sectors, held: $(head -c 64 /dev/xvda | tr -cd 'a-zA-Z0-9_.=-')"
        printf 'lab-disk=%s\n' "$marker" | dd of=/dev/xvda bs=512 conv=sync,fsync 2>/dev/null && sync \
            && echo "lab-guest: xvda marker written"
        # Then report what the first sector holds whenever it changes (read
        # past the guest's cache), so a test can see the disk still serves
        # the guest after a suspend and resume by changing it from dom0.
        (last=x; while :; do
            echo 1 > /proc/sys/vm/drop_caches
            now=$(head -c 64 /dev/xvda 2>&1 | tr -cd 'a-zA-Z0-9_.=-')
            [ "$now" != "$last" ] && echo "lab-guest: xvda holds $now"
            last=$now
            sleep 2
        done) </dev/null &
    else
        echo "lab-guest: no xvda after ${i}s"
    fi
fi
# lab.ip=ADDR/LEN: give eth0 (netfront, the VM's first VIF) that address,
# so dom0 can reach the guest across the VIF's bridge.
addr=$(sed -n 's/.*lab\.ip=\([0-9./]*\).*/\1/p' /proc/cmdline)
if [ -n "$addr" ]; then
    i=0
    while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done
    if ip link set eth0 up && ip addr add "$addr" dev eth0; then
        echo "lab-guest: eth0 $addr $(cat /sys/class/net/eth0/address)"
    else
        echo "lab-guest: eth0 not configured after ${i}s"
    fi
fi
# lab.devices: report the guest's disks and network interfaces whenever
# they change (hot-plug), as "lab-guest: devices [xvda eth0]".
if grep -q 'lab\.devices' /proc/cmdline; then
    (last=x; while :; do
        now=$(echo $(cd /sys/block && ls -d xvd* 2>/dev/null) $(cd /sys/class/net && ls -d eth* 2>/dev/null))
        [ "$now" != "$last" ] && echo "lab-guest: devices [$now]"
        last=$now
        sleep 1
    done) </dev/null &
fi
# Under TCG the clock stutters by up to ~250 ms at rest: report gaps above 300 ms
# unless told otherwise (probe.gap_ms=N on the kernel command line).
# probe.tick_ms and probe.verify_s calm a guest that is not migrated: under
# TCG a 1 ms tick alone took half of the lab host's CPU.
exec /probe --workset-mb "${ws:-16}" --gap-ms "${gap:-300}" --tick-ms "${tick:-1}" \
    --verify-every-s "${every:-5}" </dev/hvc0 >/dev/hvc0 2>&1
"#;

/// Where in the kit the PV drivers go (see [`append_modules_script`]).
pub const MODULES_DIR: &str = "xen";

/// A dom0 shell script that appends dom0's own PV frontend modules
/// (xen-blkfront, xen-netfront: the guest boots dom0's kernel) to the kit
/// at `kit` as a second newc archive, which the kernel unpacks after the
/// first. Built here, the kit cannot hold them: the build machine's
/// kernel is not the guest's.
pub fn append_modules_script(kit: &str) -> String {
    format!(
        "set -e; m=/lib/modules/$(uname -r)/kernel/drivers; t=$(mktemp -d); \
         mkdir $t/{MODULES_DIR}; cp $m/block/xen-blkfront.ko $m/net/xen-netfront.ko $t/{MODULES_DIR}/; \
         (cd $t && find {MODULES_DIR} | cpio -o -H newc --quiet) >> {kit}; rm -rf $t"
    )
}

/// An `xl` configuration of a one-vCPU guest-kit guest (dom0's kernel at
/// `kernel`, the kit pushed to `/opt/lab/guest/initrd.cpio`), for tests and
/// benchmarks that start one with their own kernel command line `extra`.
pub fn xl_config(name: &str, kernel: &str, mem_mb: u64, extra: &str) -> String {
    format!(
        "name = \"{name}\"\ntype = \"pv\"\nkernel = \"{kernel}\"\n\
         ramdisk = \"/opt/lab/guest/initrd.cpio\"\nextra = \"{extra}\"\n\
         memory = {mem_mb}\nmaxmem = {mem_mb}\nvcpus = 1\n"
    )
}

/// The kernel answers a toolstack's `control/shutdown=poweroff` by running
/// `/sbin/poweroff`, and does nothing if that fails. The probe is pid 1 and
/// handles no signals, so the applet must power off directly (-f).
const POWEROFF: &str = "#!/bin/sh\nexec /bin/busybox poweroff -f\n";

/// A newc ("070701") cpio archive, which the kernel unpacks as initramfs.
/// Written here so device nodes need no privileges and no tool is needed.
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.entry(name, 0o100000 | mode, (0, 0), data);
    }

    pub fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.buf
    }
}

/// Builds the probe as a static executable (the guest has no libc).
fn build_probe(log: &Path) -> Result<PathBuf> {
    run_step(
        "build guest probe",
        crate::util::cargo().args([
            "rustc",
            "--release",
            "-q",
            "-p",
            "guest-probe",
            "--bin",
            "probe",
            "--",
            "-C",
            "target-feature=+crt-static",
        ]),
        log,
        Duration::from_secs(600),
    )?;
    Ok(target_dir().join("release/probe"))
}

/// The workspace's target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Writes the guest initramfs into `out` and returns its path.
pub fn build(out_dir: &Path) -> Result<PathBuf> {
    let log = out_dir.join("guest-kit.log");
    let probe = build_probe(&log)?;
    let busybox = std::fs::read("/bin/busybox")
        .context("/bin/busybox missing: the busybox-static package provides it")?;
    let mut c = Cpio::default();
    for d in ["bin", "dev", "proc", "sbin", "sys", "tmp"] {
        c.dir(d);
    }
    c.char_dev("dev/console", 5, 1);
    c.file("bin/busybox", 0o755, &busybox);
    c.file("init", 0o755, INIT.as_bytes());
    c.file("sbin/poweroff", 0o755, POWEROFF.as_bytes());
    c.file(
        "probe",
        0o755,
        &std::fs::read(&probe).with_context(|| format!("reading {}", probe.display()))?,
    );
    let path = out_dir.join("initrd.cpio");
    std::fs::write(&path, c.finish())?;
    say(format!("guest kit: {}", path.display()));
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xl_config_of_a_guest_kit_guest() {
        assert_eq!(
            xl_config("g", "/boot/vmlinuz-6", 128, "console=hvc0 quiet"),
            "name = \"g\"\ntype = \"pv\"\nkernel = \"/boot/vmlinuz-6\"\n\
             ramdisk = \"/opt/lab/guest/initrd.cpio\"\nextra = \"console=hvc0 quiet\"\n\
             memory = 128\nmaxmem = 128\nvcpus = 1\n"
        );
    }
    use std::process::Command;

    #[test]
    fn cpio_archive_lists_with_the_cpio_tool() {
        let mut c = Cpio::default();
        c.dir("bin");
        c.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        c.char_dev("console", 5, 1);
        let bytes = c.finish();
        assert_eq!(bytes.len() % 4, 0);
        let dir = std::env::temp_dir().join(format!("lab-cpio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.cpio");
        std::fs::write(&f, &bytes).unwrap();
        // cpio is not guaranteed on a bare machine: check the format by hand then.
        let listed = Command::new("cpio")
            .args(["-t", "--quiet", "-F"])
            .arg(&f)
            .output();
        if let Ok(out) = listed {
            if out.status.success() {
                let names = String::from_utf8_lossy(&out.stdout);
                assert_eq!(names, "bin\nbin/hello\nconsole\n");
            }
        }
        assert_eq!(&bytes[..6], b"070701");
        let _ = std::fs::remove_dir_all(dir);
    }
}
