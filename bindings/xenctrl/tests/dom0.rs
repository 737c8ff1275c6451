//! Tests against a real Xen 4.17 dom0 (run by the lab as root with
//! `--ignored --test-threads=1`). Each compares what the bindings report
//! with what `xl` or Linux report for the same thing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

// Guests come from `Guest::launch`, not `start`: these tests need a running
// PV domain, not a verified probe, and wait for what they need themselves.
use dom0_support::{run, Guest, CALM_WORKSET_MB};
use xenctrl::*;

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
    if dom0_support::in_unprivileged_child() {
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
    dom0_support::rerun_as_nobody("unprivileged_open_is_denied");
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
    let (guest, domid) = Guest::launch("xenctrl-dom0-test", 128, CALM_WORKSET_MB);
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
            &guest.name,
            "localhost",
        ],
    );
    let listed = run("xl", &["list", &guest.name]);
    assert!(
        listed.contains(&guest.name),
        "guest still listed after migrate: {listed}"
    );
}

// ---- PV save/restore wrappers (issue 3) ----

/// Reads one guest frame (by mfn) as 512 little-endian u64s.
fn read_frame(fm: &ForeignMemory, domid: DomId, mfn: u64) -> Vec<u64> {
    let m = fm
        .map(domid, Prot::Read, &[mfn])
        .unwrap_or_else(|e| panic!("map mfn {mfn:#x}: {e}"));
    let mut b = vec![0u8; PAGE_SIZE];
    m.read(0, &mut b).unwrap();
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

const PTE_MFN_MASK: u64 = ((1 << 40) - 1) << 12;

/// Translates a guest virtual address through the guest's 4-level page
/// tables rooted at `l4_mfn`, returning the mfn of the 4 KiB page.
fn walk(
    fm: &ForeignMemory,
    domid: DomId,
    cache: &mut HashMap<u64, Vec<u64>>,
    l4_mfn: u64,
    va: u64,
) -> Option<u64> {
    let mut table = l4_mfn;
    for level in (1..=4u32).rev() {
        let idx = ((va >> (12 + 9 * (level - 1))) & 511) as usize;
        let pte = cache
            .entry(table)
            .or_insert_with(|| read_frame(fm, domid, table))[idx];
        if pte & 1 == 0 {
            return None;
        }
        let mfn = (pte & PTE_MFN_MASK) >> 12;
        if level == 2 && pte & 0x80 != 0 {
            return Some(mfn + ((va >> 12) & 511));
        }
        table = mfn;
    }
    Some(table)
}

/// The guest's p2m (pfn -> mfn) as Linux publishes it in shared_info:
/// the virtually mapped linear list if `p2m_cr3` is set, else the
/// 3-level frame-list tree.
fn read_guest_p2m(fm: &ForeignMemory, domid: DomId, arch: &ArchSharedInfo) -> Vec<u64> {
    let n = arch.max_pfn as usize;
    let pages = n.div_ceil(512);
    let mut frames = Vec::with_capacity(pages);
    if arch.p2m_cr3 != 0 {
        let mut cache = HashMap::new();
        let l4 = arch.p2m_cr3 >> 12;
        for i in 0..pages {
            let va = arch.p2m_vaddr + (i as u64) * 4096;
            frames.push(
                walk(fm, domid, &mut cache, l4, va)
                    .unwrap_or_else(|| panic!("p2m page {i} at {va:#x} not mapped")),
            );
        }
    } else {
        let fll = read_frame(fm, domid, arch.pfn_to_mfn_frame_list_list);
        for fl in fll.iter().take(pages.div_ceil(512)) {
            frames.extend(read_frame(fm, domid, *fl));
        }
        frames.truncate(pages);
    }
    let mut p2m = Vec::with_capacity(pages * 512);
    for f in frames {
        p2m.extend(read_frame(fm, domid, f));
    }
    p2m.truncate(n);
    p2m
}

/// Linux marks p2m entries of foreign and identity frames with these bits.
const P2M_SPECIAL: u64 = (1 << 63) | (1 << 62);

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn m2p_p2m_page_types_vcpu_state_and_policy_of_a_running_guest() {
    let xc = XenCtrl::open().unwrap();
    let (guest, domid) = Guest::launch("srbind-state", 256, CALM_WORKSET_MB);
    std::thread::sleep(Duration::from_secs(3));
    let info = xc.domain_info(domid).unwrap();

    // m2p
    let m2p = xc.map_m2p().unwrap();
    let phys = xc.physinfo().unwrap();
    assert!(m2p.max_mfn() > 0 && m2p.entries() >= m2p.max_mfn());
    assert!(
        m2p.max_mfn() + 1 >= phys.max_mfn || m2p.max_mfn() >= phys.total_pages,
        "max_mfn {:#x} vs physinfo max_mfn {:#x}",
        m2p.max_mfn(),
        phys.max_mfn
    );

    // shared_info and the guest's p2m
    let fm = ForeignMemory::open().unwrap();
    let si = fm
        .map_shared_info(domid, info.shared_info_frame, Prot::Read)
        .unwrap();
    let arch = si.arch();
    eprintln!("shared_info.arch: {arch:x?}");
    assert!(
        arch.max_pfn >= 32 * 1024 && arch.max_pfn <= 512 * 1024,
        "max_pfn {} for a 256 MiB guest",
        arch.max_pfn
    );
    assert!(si.vcpu_system_time(0).unwrap() > 0);
    assert_eq!(si.to_bytes().len(), PAGE_SIZE);
    assert_eq!(arch.p2m_generation % 2, 0, "p2m not mid-update");
    let p2m = read_guest_p2m(&fm, domid, &arch);
    let mut mfns = Vec::new();
    for (pfn, &mfn) in p2m.iter().enumerate() {
        if mfn == u64::MAX || mfn & P2M_SPECIAL != 0 {
            continue;
        }
        assert_eq!(
            m2p.mfn_to_pfn(mfn),
            Some(pfn as u64),
            "p2m[{pfn:#x}] = {mfn:#x} maps back"
        );
        mfns.push(mfn);
    }
    eprintln!(
        "{} of {} p2m entries valid, tot_pages {}",
        mfns.len(),
        p2m.len(),
        info.tot_pages
    );
    assert!(
        mfns.len() as u64 + 512 >= info.tot_pages && mfns.len() as u64 <= info.tot_pages,
        "{} valid p2m entries vs tot_pages {}",
        mfns.len(),
        info.tot_pages
    );

    // page types: the guest's page tables, pinned L4s among them
    let types = xc.pfn_types(domid, &mfns).unwrap();
    assert_eq!(types.len(), mfns.len());
    let mut per_level = [0usize; 5];
    let mut pinned_l4 = 0;
    for t in &types {
        if let Some(l) = t.level() {
            per_level[l as usize] += 1;
            if l == 4 && t.pinned() {
                pinned_l4 += 1;
            }
        }
        assert_ne!(*t, PageType::XTAB, "the guest owns every p2m frame");
    }
    eprintln!("page tables per level {per_level:?}, pinned L4 {pinned_l4}");
    assert!(per_level[1..].iter().all(|&n| n > 0), "{per_level:?}");
    assert!(pinned_l4 > 0);

    // vCPU 0: cr3 is a pinned L4 of the guest
    let ctx = xc.vcpu_context(domid, 0).unwrap();
    let cr3_mfn = ctx.x86_64().ctrlreg[3] >> 12;
    let t = xc.pfn_types(domid, &[cr3_mfn]).unwrap()[0];
    assert_eq!(t.level(), Some(4), "cr3 mfn {cr3_mfn:#x} type {t:?}");
    assert!(t.pinned());
    let cr3_pfn = m2p.mfn_to_pfn(cr3_mfn).expect("cr3 in the m2p");
    assert_eq!(p2m[cr3_pfn as usize], cr3_mfn);

    // extended vCPU state
    assert_eq!(xc.address_size(domid).unwrap(), 64);
    let vi = xc.vcpu_info(domid, 0).unwrap();
    assert!(vi.online && vi.cpu_time_ns > 0, "{vi:?}");
    let ext = xc.ext_vcpu_context(domid, 0).unwrap();
    assert!(
        !ext.is_empty() && ext.len() <= EXT_VCPU_CONTEXT_MAX,
        "ext ctx {} bytes",
        ext.len()
    );
    assert_eq!(
        u32::from_le_bytes(ext[0..4].try_into().unwrap()),
        0,
        "vcpu id"
    );
    let xs = xc.vcpu_xsave(domid, 0).unwrap();
    if let Some(x) = &xs {
        // xcr0 + xcr0_accum + legacy area 512 + header 64.
        assert!(x.data.len() >= 16 + 576, "xsave {} bytes", x.data.len());
        let xcr0 = u64::from_le_bytes(x.data[0..8].try_into().unwrap());
        assert_eq!(xcr0 & 3, 3, "x87 and SSE enabled in xcr0 {xcr0:#x}");
    }
    let msrs = xc.vcpu_msrs(domid, 0).unwrap();
    eprintln!(
        "ext ctx {} bytes, xsave {:?} bytes, msrs {msrs:x?}",
        ext.len(),
        xs.as_ref().map(|x| x.data.len())
    );
    assert!(msrs.len() < 64);

    // TSC, gpfns, CPU policy
    let tsc = xc.tsc_info(domid).unwrap();
    eprintln!("tsc {tsc:?}");
    assert!(tsc.mode <= 3 && tsc.khz > 0, "{tsc:?}");
    let nr = xc.nr_gpfns(domid).unwrap();
    assert_eq!(nr, xc.maximum_gpfn(domid).unwrap() + 1);
    assert!(nr >= info.tot_pages / 2, "nr_gpfns {nr}");
    let pol = xc.domain_cpu_policy(domid).unwrap();
    assert!(pol.leaves.iter().any(|l| l.leaf == 0 && l.regs[0] >= 0xd));
    assert_eq!(pol.cpuid_bytes().len(), 24 * pol.leaves.len());
    assert_eq!(pol.msr_bytes().len(), 16 * pol.msrs.len());
    let again = CpuPolicy::from_bytes(&pol.cpuid_bytes(), &pol.msr_bytes()).unwrap();
    assert_eq!(again, pol);
    eprintln!(
        "cpu policy: {} leaves, {} msrs",
        pol.leaves.len(),
        pol.msrs.len()
    );
    drop(guest);
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn populate_map_pin_and_restore_state_on_an_empty_pv_domain() {
    let xc = XenCtrl::open().unwrap();
    let domid = xc.create_domain(&DomainConfig::pv(1)).unwrap();
    let _g = DomainGuard(&xc, domid);
    xc.set_max_vcpus(domid, 1).unwrap();
    xc.set_max_mem(domid, 16 * 1024).unwrap();
    xc.set_memmap_limit(domid, 16 * 1024).unwrap();
    xc.set_address_size(domid, 64).unwrap();

    let mut frames: Vec<u64> = (0..8).collect();
    xc.populate_physmap_exact(domid, 0, &mut frames).unwrap();
    eprintln!("pfns 0..8 -> mfns {frames:x?}");
    assert!(xc.domain_info(domid).unwrap().tot_pages >= 8);
    let m2p = xc.map_m2p().unwrap();
    for (pfn, &mfn) in frames.iter().enumerate() {
        assert_eq!(m2p.mfn_to_pfn(mfn), Some(pfn as u64), "new mfn {mfn:#x}");
    }
    assert_eq!(
        xc.maximum_gpfn(domid).unwrap() + 1,
        xc.nr_gpfns(domid).unwrap()
    );

    // Map, write, unmap; map again read-only and read back.
    let fm = ForeignMemory::open().unwrap();
    {
        let mut m = fm.map(domid, Prot::ReadWrite, &frames[..4]).unwrap();
        for i in 0..4 {
            m.write(i * PAGE_SIZE, &[0xa0 + i as u8; PAGE_SIZE])
                .unwrap();
        }
        // Page 5 becomes an empty L1 below: zero it explicitly.
        let mut z = fm.map(domid, Prot::ReadWrite, &frames[5..6]).unwrap();
        z.write(0, &[0u8; PAGE_SIZE]).unwrap();
    }
    let m = fm.map(domid, Prot::Read, &frames[..4]).unwrap();
    for i in 0..4 {
        let mut b = vec![0u8; PAGE_SIZE];
        m.read(i * PAGE_SIZE, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == 0xa0 + i as u8), "page {i}");
    }
    drop(m);
    let types = xc.pfn_types(domid, &frames).unwrap();
    assert!(types.iter().all(|&t| t == PageType::NOTAB), "{types:?}");

    // A batch with one frame the domain does not own: that page reports
    // its own error, the others map.
    let bogus = m2p.max_mfn() + 0x1000;
    let b = fm
        .map_batch(domid, Prot::Read, &[frames[0], bogus, frames[2]])
        .unwrap();
    assert_eq!(b.failed(), vec![1], "per-page errors");
    eprintln!("unowned mfn {bogus:#x}: {:?}", b.error(1));
    let mut page = [0u8; PAGE_SIZE];
    b.read_page(2, &mut page).unwrap();
    assert!(page.iter().all(|&x| x == 0xa2));
    let e = b.read_page(1, &mut page).unwrap_err();
    assert_eq!(e.op(), "xenforeignmemory_map");
    assert!(e.to_string().contains(&format!("{bogus:#x}")), "{e}");
    drop(b);

    // Pin the empty page as an L1 table, see it typed, unpin it.
    xc.mmuext_pin(domid, Pin::Level(1), &frames[5..6]).unwrap();
    let t = xc.pfn_types(domid, &frames[5..6]).unwrap()[0];
    assert_eq!((t.level(), t.pinned()), (Some(1), true), "{t:?}");
    // A pinned page table cannot be mapped writable from dom0.
    let e = fm
        .map(domid, Prot::ReadWrite, &frames[5..6])
        .err()
        .expect("writable mapping of a pinned L1 is refused");
    assert_eq!(e.op(), "xenforeignmemory_map");
    xc.mmuext_pin(domid, Pin::Unpin, &frames[5..6]).unwrap();
    assert!(!xc.pfn_types(domid, &frames[5..6]).unwrap()[0].pinned());
    // Page 1 is full of 0xa1 bytes: present entries pointing at frames
    // beyond RAM, so Xen refuses to pin it as an L4. (Page 0's 0xa0 bytes
    // would pass: every entry is non-present.)
    let e = xc
        .mmuext_pin(domid, Pin::Level(4), &frames[1..2])
        .unwrap_err();
    assert_eq!(e.op(), "xc_mmuext_op");
    assert!(e.errno().is_some(), "{e}");
    assert!(xc.mmuext_pin(domid, Pin::Level(5), &frames[0..1]).is_err());

    // Give pages back.
    let before = xc.domain_info(domid).unwrap().tot_pages;
    xc.decrease_reservation_exact(domid, 0, &frames[7..8])
        .unwrap();
    assert_eq!(xc.domain_info(domid).unwrap().tot_pages, before - 1);

    // Restore-side setters round-trip what the getters return.
    // Xen stores incarnation + 1 (a restored domain is a new incarnation).
    let mut tsc = xc.tsc_info(domid).unwrap();
    tsc.incarnation = 7;
    xc.set_tsc_info(domid, &tsc).unwrap();
    let got = xc.tsc_info(domid).unwrap();
    assert_eq!((got.mode, got.incarnation), (tsc.mode, 8), "{got:?}");

    let pol = xc.domain_cpu_policy(domid).unwrap();
    xc.set_domain_cpu_policy(domid, &pol).unwrap();
    assert_eq!(xc.domain_cpu_policy(domid).unwrap(), pol);

    let ext = xc.ext_vcpu_context(domid, 0).unwrap();
    xc.set_ext_vcpu_context(domid, 0, &ext).unwrap();
    let back = xc.ext_vcpu_context(domid, 0).unwrap();
    assert_eq!(back.len(), ext.len());
    // Xen forces RPL 3 onto the syscall32/sysenter callback selectors
    // (bytes 24..28) of a 64-bit PV guest; the rest comes back unchanged.
    assert_eq!((&back[..24], &back[28..]), (&ext[..24], &ext[28..]));
    assert!(back[24..28]
        .iter()
        .zip(&ext[24..28])
        .all(|(b, e)| b & !3 == e & !3));
    let msrs = xc.vcpu_msrs(domid, 0).unwrap();
    xc.set_vcpu_msrs(domid, 0, &msrs).unwrap();
    if let Some(x) = xc.vcpu_xsave(domid, 0).unwrap() {
        xc.set_vcpu_xsave(domid, 0, &x.data).unwrap();
    }

    assert_eq!(xc.address_size(domid).unwrap(), 64);
    eprintln!(
        "empty domain: ext ctx {} bytes, msrs {msrs:x?}, xsave {:?}",
        ext.len(),
        xc.vcpu_xsave(domid, 0)
            .unwrap()
            .map(|x| (x.xfeature_mask, x.data.len()))
    );

    // Restore writes the saved shared_info arch fields into the new domain.
    let info = xc.domain_info(domid).unwrap();
    let mut si = fm
        .map_shared_info(domid, info.shared_info_frame, Prot::ReadWrite)
        .unwrap();
    let a = ArchSharedInfo {
        max_pfn: 8,
        pfn_to_mfn_frame_list_list: frames[6],
        nmi_reason: 0,
        p2m_cr3: frames[5] << 12,
        p2m_vaddr: 0xffff_c900_0000_0000,
        p2m_generation: 2,
    };
    si.set_arch(&a).unwrap();
    drop(si);
    let si = fm
        .map_shared_info(domid, info.shared_info_frame, Prot::Read)
        .unwrap();
    assert_eq!(si.arch(), a);
    assert_eq!(&si.to_bytes()[3088..3096], &8u64.to_le_bytes());
    drop(si);

    // Seed the grant table with the console and xenstore frames.
    xc.gnttab_seed(domid, false, frames[2], frames[3], 0, 0)
        .unwrap();
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn suspend_via_control_shutdown_then_fast_resume() {
    let xc = XenCtrl::open().unwrap();
    let (guest, domid) = Guest::launch("srbind-suspend", 256, CALM_WORKSET_MB);
    let verified = || {
        run("/usr/local/bin/lab-guest-log", &[&guest.name])
            .matches("probe: verify ok")
            .count()
    };
    let base = verified();
    wait_for_long("a first verify ok", Duration::from_secs(90), || {
        verified() > base
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let xs = rt.block_on(xenstore::Xenstore::connect()).unwrap();
    let mut w = rt.block_on(xs.watch("@releaseDomain")).unwrap();
    let ctl = xenstore::control_shutdown_path(domid);
    // Linux does not advertise a suspend event channel: the xenstore path.
    assert_eq!(rt.block_on(xs.suspend_event_channel(domid)).unwrap(), None);
    rt.block_on(xs.request_shutdown(domid, "suspend")).unwrap();
    assert!(
        rt.block_on(xs.wait_shutdown_acked(domid, Duration::from_secs(60)))
            .unwrap(),
        "guest cleared control/shutdown"
    );
    let mut events = 0;
    let info = xc
        .wait_for_shutdown(
            domid,
            ShutdownReason::Suspend,
            Duration::from_secs(60),
            |left| {
                let ev = rt.block_on(async {
                    tokio::time::timeout(left.min(Duration::from_secs(1)), w.next()).await
                });
                if matches!(ev, Ok(Some(_))) {
                    events += 1;
                }
            },
        )
        .unwrap();
    eprintln!(
        "suspended after {events} @releaseDomain events: {}",
        info.xl_state()
    );
    assert_eq!(info.shutdown(), Some(ShutdownReason::Suspend));
    let cleared = rt.block_on(xs.try_read(&ctl)).unwrap();
    assert!(
        cleared.as_deref().unwrap_or_default().is_empty(),
        "the guest acknowledged by clearing control/shutdown: {cleared:?}"
    );
    // Waiting for another reason fails at once, naming it.
    let e = xc
        .wait_for_shutdown(domid, ShutdownReason::Poweroff, Duration::ZERO, |_| {})
        .unwrap_err();
    assert!(e.to_string().contains("Suspend"), "{e}");

    xc.resume_domain(domid, true).unwrap();
    rt.block_on(xs.resume_domain(domid)).unwrap();
    let after = verified();
    wait_for_long("verify ok after resume", Duration::from_secs(90), || {
        verified() > after
    });
    let i = xc.domain_info(domid).unwrap();
    assert!(i.shutdown().is_none() && !i.paused(), "{}", i.xl_state());
    let log = run("/usr/local/bin/lab-guest-log", &[&guest.name]);
    assert!(!log.contains("verify FAILED"), "{log}");
}

fn wait_for_long(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn save_restore_calls_on_a_missing_domain_name_op_and_errno() {
    let xc = XenCtrl::open().unwrap();
    let bad = 0x7fef;
    let esrch = |e: Error, op: &str| {
        assert_eq!(e.op(), op, "{e}");
        assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
        assert!(e.to_string().contains("32751"), "{e}");
    };
    esrch(
        xc.pfn_types(bad, &[1]).unwrap_err(),
        "xc_domctl(getpageframeinfo3)",
    );
    esrch(
        xc.ext_vcpu_context(bad, 0).unwrap_err(),
        "xc_domctl(get_ext_vcpucontext)",
    );
    esrch(
        xc.vcpu_xsave(bad, 0).unwrap_err(),
        "xc_domctl(getvcpuextstate)",
    );
    esrch(
        xc.vcpu_msrs(bad, 0).unwrap_err(),
        "xc_domctl(get_vcpu_msrs)",
    );
    esrch(xc.tsc_info(bad).unwrap_err(), "xc_domain_get_tsc_info");
    esrch(xc.vcpu_info(bad, 0).unwrap_err(), "xc_vcpu_getinfo");
    esrch(
        xc.address_size(bad).unwrap_err(),
        "xc_domctl(get_address_size)",
    );
    let e = xc.domain_cpu_policy(bad).unwrap_err();
    assert_eq!(e.op(), "xc_cpu_policy_get_domain", "{e}");
    assert!(e.errno().is_some(), "{e}");
    let e = xc.populate_physmap_exact(bad, 0, &mut [0]).unwrap_err();
    assert_eq!(e.op(), "xc_domain_populate_physmap_exact", "{e}");
    assert!(e.errno().is_some(), "{e}");
    let e = xc.mmuext_pin(bad, Pin::Level(1), &[1]).unwrap_err();
    assert_eq!(e.op(), "xc_mmuext_op", "{e}");
    assert!(e.errno().is_some(), "{e}");
    let e = xc.resume_domain(bad, true).unwrap_err();
    assert_eq!(e.op(), "xc_domain_resume", "{e}");
    let e = xc
        .wait_for_shutdown(bad, ShutdownReason::Suspend, Duration::ZERO, |_| {})
        .unwrap_err();
    assert!(matches!(e, Error::State { .. }), "{e}");
    let e = xc.gnttab_seed(bad, false, 1, 2, 0, 0).unwrap_err();
    assert_eq!(e.op(), "xc_dom_gnttab_seed", "{e}");
    // Shutting a live domain that is not shut down: timeout names ETIMEDOUT.
    let e = xc
        .wait_for_shutdown(0, ShutdownReason::Suspend, Duration::ZERO, |_| {})
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ETIMEDOUT), "{e}");
}
