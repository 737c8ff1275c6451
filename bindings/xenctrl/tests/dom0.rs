//! Tests against a real Xen 4.17 dom0 (run by the lab as root with
//! `--ignored --test-threads=1`). Each compares what the bindings report
//! with what `xl` or Linux report for the same thing.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use xenctrl::*;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `xl info` as key -> value.
fn xl_info() -> HashMap<String, String> {
    run("xl", &["info"])
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The `xl list` State column for a domid, or None if not listed.
fn xl_state(domid: DomId) -> Option<String> {
    run("xl", &["list"]).lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Name ID Mem VCPUs State Time(s); names have no spaces.
        (f.len() >= 6 && f[1] == domid.to_string()).then(|| f[4].to_string())
    })
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Destroys the domain even if the test panics.
struct DomainGuard<'a>(&'a XenCtrl, DomId);
impl Drop for DomainGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.destroy_domain(self.1);
    }
}

/// Starts `lab-guest` and returns (name, domid); `xl destroy`s it on drop.
struct Guest(String, DomId);
impl Guest {
    fn start(name: &str, mem_mb: u32, workset_mb: u32) -> Guest {
        let _ = Command::new("xl").args(["destroy", name]).output();
        let out = run(
            "/usr/local/bin/lab-guest",
            &[name, &mem_mb.to_string(), &workset_mb.to_string()],
        );
        let domid = out
            .lines()
            .rev()
            .find_map(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("lab-guest printed no domid: {out:?}"));
        Guest(name.to_string(), domid)
    }
}
impl Drop for Guest {
    fn drop(&mut self) {
        let _ = Command::new("xl").args(["destroy", &self.0]).output();
    }
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn physinfo_matches_xl_info() {
    let xc = XenCtrl::open().unwrap();
    let p = xc.physinfo().unwrap();
    let info = xl_info();
    let num = |k: &str| -> u64 {
        info[k]
            .parse()
            .unwrap_or_else(|_| panic!("xl info {k}={}", info[k]))
    };
    assert_eq!(p.total_memory_mib(), num("total_memory"));
    assert_eq!(p.nr_cpus as u64, num("nr_cpus"));
    assert_eq!(p.nr_nodes as u64, num("nr_nodes"));
    assert_eq!(p.cores_per_socket as u64, num("cores_per_socket"));
    assert_eq!(p.threads_per_core as u64, num("threads_per_core"));
    assert_eq!(
        format!("{}.{:03}", p.cpu_khz / 1000, p.cpu_khz % 1000),
        info["cpu_mhz"]
    );
    assert_eq!(p.hw_caps_string(), info["hw_caps"]);
    // Free memory moves, but not by more than a few MiB between two calls.
    assert!(p.free_memory_mib().abs_diff(num("free_memory")) < 64);
    let virt: Vec<&str> = info["virt_caps"].split_whitespace().collect();
    assert!(
        p.capabilities.pv() && virt.contains(&"pv"),
        "virt_caps {virt:?}"
    );
    for c in p.capabilities.names() {
        assert!(virt.contains(&c), "{c} missing from xl virt_caps {virt:?}");
    }
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn cpu_topology_idle_time_featureset_and_cpuid() {
    let xc = XenCtrl::open().unwrap();
    let p = xc.physinfo().unwrap();
    let topo = xc.cpu_topology().unwrap();
    let online: Vec<_> = topo.iter().filter(|t| t.core.is_some()).collect();
    assert_eq!(online.len() as u32, p.nr_cpus);
    let sockets: std::collections::BTreeSet<_> = online.iter().map(|t| t.socket).collect();
    assert_eq!(
        sockets.len() as u32 * p.cores_per_socket * p.threads_per_core,
        p.nr_cpus,
        "sockets x cores x threads = cpus"
    );

    let idle1 = xc.cpu_idle_times().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let idle2 = xc.cpu_idle_times().unwrap();
    assert!(idle1.len() as u32 >= p.nr_cpus);
    assert!(
        idle1.iter().zip(&idle2).any(|(a, b)| b > a),
        "some CPU accumulated idle time: {idle1:?} -> {idle2:?}"
    );

    let fs = xc.cpu_featureset(FeaturesetKind::Host).unwrap();
    assert!(fs.len() >= 8);
    assert_ne!(
        fs[0] & 1,
        0,
        "FPU (leaf 1 edx bit 0) in the host featureset"
    );
    assert_eq!(xc.cpu_featureset(FeaturesetKind::Raw).unwrap()[0] & 1, 1);

    let id = host_cpuid();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let field = |k: &str| -> String {
        cpuinfo
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(a, _)| a.trim() == k)
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("{k} in /proc/cpuinfo"))
    };
    assert_eq!(id.vendor, field("vendor_id"));
    assert_eq!(id.family.to_string(), field("cpu family"));
    assert_eq!(id.model.to_string(), field("model"));
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn empty_pv_domain_lifecycle_seen_by_xl_list() {
    let xc = XenCtrl::open().unwrap();
    let domid = xc.create_domain(&DomainConfig::pv(2)).unwrap();
    let _g = DomainGuard(&xc, domid);
    xc.set_max_vcpus(domid, 2).unwrap();
    xc.set_max_mem(domid, 65536).unwrap();
    xc.set_memmap_limit(domid, 65536).unwrap();
    xc.set_address_size(domid, 64).unwrap();

    let i = xc.domain_info(domid).unwrap();
    assert_eq!(i.domid, domid);
    assert!(!i.hvm());
    assert!(i.paused(), "new domains start paused");
    assert_eq!(i.max_vcpu_id, 1);
    assert_eq!(i.max_mem_kib(), 65536);
    let st = xl_state(domid).expect("xl list shows the new domain");
    assert_eq!(&st[2..3], "p", "xl list state {st}");

    xc.unpause_domain(domid).unwrap();
    assert!(!xc.domain_info(domid).unwrap().paused());
    let st = xl_state(domid).unwrap();
    assert_eq!(&st[2..3], "-", "xl list state after unpause {st}");

    xc.pause_domain(domid).unwrap();
    assert_eq!(&xl_state(domid).unwrap()[2..3], "p");

    xc.shutdown_domain(domid, ShutdownReason::Poweroff).unwrap();
    let i = xc.domain_info(domid).unwrap();
    assert_eq!(i.shutdown(), Some(ShutdownReason::Poweroff));
    assert_eq!(&xl_state(domid).unwrap()[3..4], "s");

    // getinfolist over all domains includes dom0 and ours.
    let all = xc.domain_info_list(0, 1024).unwrap();
    assert!(all.iter().any(|d| d.domid == 0) && all.iter().any(|d| d.domid == domid));

    xc.destroy_domain(domid).unwrap();
    wait_for("domain gone from xl list", || xl_state(domid).is_none());
    assert_eq!(
        xc.domain_info(domid).unwrap_err().errno(),
        Some(libc::ESRCH)
    );
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn failing_calls_name_operation_and_errno() {
    let xc = XenCtrl::open().unwrap();
    let bad = 0x7fef; // below DOMID_FIRST_RESERVED, never allocated by xl in a lab.
    let e = xc.pause_domain(bad).unwrap_err();
    assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
    assert_eq!(
        e.to_string(),
        "xc_domain_pause(domid 32751): No such process (errno 3)"
    );
    let e = xc.set_max_mem(bad, 1024).unwrap_err();
    assert_eq!(
        (e.op(), e.errno()),
        ("xc_domain_setmaxmem", Some(libc::ESRCH))
    );
    let e = xc.destroy_domain(bad).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("xc_domain_destroy(domid 32751): "),
        "{e}"
    );
    let fm = ForeignMemory::open().unwrap();
    let e = fm
        .map(bad, Prot::Read, &[0])
        .err()
        .expect("mapping a missing domain fails");
    assert_eq!(e.op(), "xenforeignmemory_map");
    assert!(e.errno().is_some(), "{e}");
    let e = xc.create_domain(&DomainConfig::pv(0)).unwrap_err();
    assert_eq!(e.op(), "xc_domain_create");
}

/// Re-runs this test binary as `nobody`; the child checks that opening the
/// privileged interfaces fails with a permission error naming the call.
#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn unprivileged_open_is_denied() {
    if std::env::var_os("XAPI_RS_UNPRIV_CHILD").is_some() {
        let e = XenCtrl::open().err().expect("nobody cannot open privcmd");
        assert_eq!(e.op(), "xc_interface_open");
        assert!(
            matches!(e.errno(), Some(libc::EACCES) | Some(libc::EPERM)),
            "{e}"
        );
        let e = ForeignMemory::open()
            .err()
            .expect("nobody cannot open privcmd");
        assert_eq!(e.op(), "xenforeignmemory_open");
        assert!(
            matches!(e.errno(), Some(libc::EACCES) | Some(libc::EPERM)),
            "{e}"
        );
        return;
    }
    let exe = world_executable_copy();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([
            "unprivileged_open_is_denied",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env("XAPI_RS_UNPRIV_CHILD", "1")
        .output()
        .expect("setpriv (util-linux) in dom0");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_file(&exe);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "child failed:\n{text}"
    );
}

/// The test binary may sit under /root where `nobody` cannot exec it, so
/// the child runs from a world-readable copy in /tmp.
fn world_executable_copy() -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dst = std::env::temp_dir().join(format!("xapi-rs-unpriv-{}", std::process::id()));
    std::fs::copy(std::env::current_exe().unwrap(), &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).unwrap();
    dst
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn event_channel_loopback_in_dom0() {
    let a = EventChannels::open().unwrap();
    let b = EventChannels::open().unwrap();
    let pa = a.bind_unbound_port(0).unwrap();
    let pb = b.bind_interdomain(0, pa).unwrap();
    b.notify(pb).unwrap();
    // pending() blocks until the event arrives on a's fd.
    assert_eq!(a.pending().unwrap(), pa);
    a.unmask(pa).unwrap();
    b.unbind(pb).unwrap();
    a.unbind(pa).unwrap();
    let e = a.notify(pa).unwrap_err();
    assert_eq!(e.op(), "xenevtchn_notify");
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn foreign_map_logdirty_then_xl_migrate_still_works() {
    let xc = XenCtrl::open().unwrap();
    let guest = Guest::start("xenctrl-dom0-test", 128, 16);
    let domid = guest.1;
    // Let the guest boot and start dirtying memory.
    std::thread::sleep(Duration::from_secs(3));
    let info = xc.domain_info(domid).unwrap();
    assert!(
        !info.paused() && info.shutdown().is_none(),
        "guest runs: {}",
        info.xl_state()
    );

    // A PV guest's shared_info frame is a machine frame we may map.
    let fm = ForeignMemory::open().unwrap();
    let map = fm
        .map(domid, Prot::Read, &[info.shared_info_frame])
        .unwrap();
    let u64_at = |m: &Mapping, off: usize| {
        let mut b = [0u8; 8];
        m.read(off, &mut b).unwrap();
        u64::from_le_bytes(b)
    };
    // x86_64 layout: vcpu_info[32] x 64 bytes, vcpu 0's time info at 32,
    // system_time at +16; arch.max_pfn after the event bitmaps (2048 +
    // 512 + 512) and the wallclock (16 bytes).
    let t1 = u64_at(&map, 32 + 16);
    let max_pfn = u64_at(&map, 3088);
    assert!(
        max_pfn * 4 >= 64 * 1024 && max_pfn * 4 <= 256 * 1024,
        "max_pfn {max_pfn} for a 128 MiB guest"
    );
    std::thread::sleep(Duration::from_millis(300));
    // Xen updates vcpu 0's system time as the guest is scheduled.
    let t2 = u64_at(&map, 32 + 16);
    assert!(t1 > 0 && t2 >= t1, "guest system time {t1} -> {t2}");
    drop(map);

    let ctx = xc.vcpu_context(domid, 0).unwrap();
    assert_ne!(ctx.x86_64().ctrlreg[3], 0, "a running PV guest has a cr3");

    xc.enable_logdirty(domid).unwrap();
    let result = (|| -> Result<Vec<u64>> {
        let mut bm = xc.dirty_bitmap(max_pfn + 1)?;
        xc.logdirty_clean(domid, &mut bm, false)?;
        std::thread::sleep(Duration::from_secs(1));
        let peek = xc.logdirty_peek(domid, &mut bm)?;
        let stats = xc.logdirty_clean(domid, &mut bm, false)?;
        assert!(
            peek.dirty_count > 0 || stats.dirty_count > 0,
            "peek {peek:?} clean {stats:?}"
        );
        // Xen reports how many bits it filled, capped at the guest's size.
        assert!(stats.pages > 0 && stats.pages <= max_pfn + 1, "{stats:?}");
        Ok(bm.dirty_pfns())
    })();
    // Always turn shadow mode off again, then check the outcome.
    xc.disable_shadow(domid).unwrap();
    let dirty = result.unwrap();
    assert!(
        !dirty.is_empty(),
        "a guest with a 16 MiB working set dirtied pages"
    );
    assert!(dirty.iter().all(|&p| p <= max_pfn));

    // Shadow mode is off, so the reference toolstack can still migrate it.
    run(
        "xl",
        &[
            "migrate",
            "-s",
            "/usr/local/bin/lab-ssh-local",
            &guest.0,
            "localhost",
        ],
    );
    let listed = run("xl", &["list", &guest.0]);
    assert!(
        listed.contains(&guest.0),
        "guest still listed after migrate: {listed}"
    );
}
