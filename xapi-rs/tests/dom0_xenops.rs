//! The hypervisor side on real Xen 4.17 (run by the lab inside dom0 as
//! root with `--ignored --test-threads=1`): our own builder boots the guest
//! kit (dom0's kernel + the probe initramfs) without xl, and what a user
//! checks with `xl list`, `xenstore-ls` and the console log agrees.

use std::time::Duration;

use dom0_support::{
    run, run_any, wait_for_or, xl_domains, xl_list, Guest, CALM_WORKSET_MB, GUEST_BOOT,
};
use uuid::Uuid;
use xapi_rs::xenops::{
    DiskSpec, DomainEvent, DomainSpec, MemorySpec, Ownership, PvBoot, ShutdownReason,
    ShutdownRequest, Tracker, VcpuSpec, Xenops, XenopsError,
};

const RAMDISK: &str = "/opt/lab/guest/initrd.cpio";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Dom0's own kernel, as `lab-guest` boots it.
fn dom0_kernel() -> String {
    run("sh", &["-c", "ls /boot/vmlinuz-* | sort | tail -1"])
        .trim()
        .to_string()
}

fn spec(name: &str, kernel: &str) -> DomainSpec {
    DomainSpec {
        uuid: Uuid::new_v4(),
        name: name.into(),
        memory: MemorySpec {
            static_max_kib: 256 * 1024,
            target_kib: 256 * 1024,
        },
        vcpus: VcpuSpec {
            max: 1,
            at_startup: 1,
        },
        boot: PvBoot {
            kernel: kernel.into(),
            ramdisk: Some(RAMDISK.into()),
            cmdline: format!("console=hvc0 quiet probe.ws_mb={CALM_WORKSET_MB}"),
        },
        disks: vec![],
        nics: vec![],
    }
}

/// The whole xenstore tree as `path = "value"` lines.
fn xenstore_dump() -> String {
    run("xenstore-ls", &["-f", "/"])
}

fn xenstore_exists(path: &str) -> bool {
    run_any("xenstore-exists", &[path]).0
}

/// `xl list -v` columns of the domain named `name`: (domid, state, uuid).
fn xl_list_v(name: &str) -> Option<(u32, String, String)> {
    run("xl", &["list", "-v"]).lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Name ID Mem VCPUs State Time(s) UUID Reason-Code Security-Label
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some((f[1].parse().ok()?, f[4].into(), f[6].into()))
    })
}

/// The next tracker event about `domid`, within `limit`.
fn next_event(
    rt: &tokio::runtime::Runtime,
    t: &mut Tracker,
    domid: u32,
    limit: Duration,
) -> DomainEvent {
    rt.block_on(async {
        tokio::time::timeout(limit, async {
            loop {
                let ev = t
                    .next()
                    .await
                    .expect("tracker ended")
                    .expect("tracker scan");
                match ev {
                    DomainEvent::Shutdown { domid: d, .. } | DomainEvent::Gone { domid: d, .. }
                        if d == domid =>
                    {
                        return ev
                    }
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no tracker event for domid {domid} within {limit:?}"))
    })
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn our_builder_boots_the_guest_kit_then_clean_shutdown_and_destroy_leave_nothing() {
    const NAME: &str = "xenops-probe";
    let rt = runtime();
    let xo = rt
        .block_on(Xenops::connect())
        .expect("open Xen and xenstore");
    // Guest's Drop runs `xl destroy NAME`: a safety net if an assert fails.
    let guest = Guest { name: NAME.into() };
    let _ = std::fs::remove_file(format!("/var/log/xen/console/guest-{NAME}.log"));
    let s = spec(NAME, &dom0_kernel());
    let mut tracker = rt.block_on(xo.track()).expect("track @releaseDomain");

    let domid = rt.block_on(xo.start(&s)).expect("build and start");

    // xl sees it under our name and uuid, not paused.
    let (xl_domid, state, xl_uuid) = xl_list_v(NAME)
        .unwrap_or_else(|| panic!("{NAME} not in xl list -v:\n{}", run("xl", &["list", "-v"])));
    assert_eq!(xl_domid, domid);
    assert_eq!(xl_uuid, s.uuid.to_string());
    assert!(!state.contains('p'), "state {state}");

    // The tree a user (and the guest) reads.
    let rd = |p: String| run("xenstore-read", &[&p]).trim().to_string();
    assert_eq!(rd(format!("/local/domain/{domid}/name")), NAME);
    assert_eq!(
        rd(format!("/local/domain/{domid}/vm")),
        format!("/vm/{}", s.uuid)
    );
    assert_eq!(rd(format!("/vm/{}/uuid", s.uuid)), s.uuid.to_string());
    assert_eq!(rd(format!("/local/domain/{domid}/memory/target")), "262144");
    assert_eq!(
        rd(format!("/local/domain/{domid}/cpu/0/availability")),
        "online"
    );
    let perms = run("xenstore-ls", &["-p", &format!("/local/domain/{domid}")]);
    let perm_of = |key: &str| {
        perms
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("{key} not in:\n{perms}"))
            .to_string()
    };
    assert!(
        perm_of("control").contains(&format!("(n0,r{domid})")),
        "{perms}"
    );
    assert!(perm_of("data").contains(&format!("(n{domid})")), "{perms}");

    // xenconsoled attached (it writes its pty) and the guest's console
    // output arrives: the probe's init line, then its first memory verify.
    let tty_path = format!("/local/domain/{domid}/console/tty");
    wait_for_or(
        "xenconsoled to write console/tty",
        Duration::from_secs(60),
        || {
            run_any("xenstore-read", &[&tty_path])
                .1
                .trim()
                .starts_with("/dev/pts/")
        },
        xenstore_dump,
    );
    wait_for_or(
        "the guest's first probe verify on its console",
        GUEST_BOOT,
        || guest.verified() > 0,
        || guest.diagnostics(),
    );
    assert!(
        guest.log().contains("lab-guest: init up"),
        "{}",
        guest.log()
    );

    // Adoption: ours and started; dom0 and an xl-created guest foreign.
    let (foreign, foreign_domid) = Guest::launch("xenops-foreign", 128, CALM_WORKSET_MB);
    let listing = rt.block_on(xo.list()).expect("list");
    let owner = |d: u32| listing.iter().find(|l| l.state.domid == d).map(|l| l.owner);
    assert_eq!(
        owner(domid),
        Some(Ownership::Ours {
            stage: xapi_rs::xenops::tree::Stage::Started
        })
    );
    assert_eq!(owner(0), Some(Ownership::Foreign));
    assert_eq!(
        owner(foreign_domid),
        Some(Ownership::Foreign),
        "{listing:?}"
    );
    let ours = listing.iter().find(|l| l.state.domid == domid).unwrap();
    assert_eq!(
        (ours.name.as_deref(), ours.state.handle),
        (Some(NAME), s.uuid)
    );
    // Refused on a domain that is not ours.
    let e = rt.block_on(xo.destroy(foreign_domid)).unwrap_err();
    assert!(
        matches!(e, XenopsError::NotOurs(d) if d == foreign_domid),
        "{e}"
    );
    drop(foreign);

    // Clean shutdown: the guest acks control/shutdown and powers off; the
    // reason arrives through @releaseDomain.
    let reason = rt
        .block_on(xo.clean_shutdown(domid, ShutdownRequest::Poweroff, Duration::from_secs(300)))
        .unwrap_or_else(|e| panic!("clean shutdown: {e}\n{}", guest.diagnostics()));
    assert_eq!(reason, ShutdownReason::Poweroff);
    assert_eq!(
        next_event(&rt, &mut tracker, domid, Duration::from_secs(60)),
        DomainEvent::Shutdown {
            domid,
            uuid: s.uuid,
            reason: ShutdownReason::Poweroff
        }
    );
    let (_, state, _) = xl_list_v(NAME).expect("a shut-down domain stays until destroyed");
    assert!(state.contains('s'), "xl state {state}");

    // Destroy: gone from Xen and from xenstore.
    rt.block_on(xo.destroy(domid)).expect("destroy");
    assert_eq!(
        next_event(&rt, &mut tracker, domid, Duration::from_secs(60)),
        DomainEvent::Gone {
            domid,
            uuid: s.uuid
        }
    );
    assert!(
        xl_list().iter().all(|(n, d, _)| n != NAME && *d != domid),
        "{:?}",
        xl_list()
    );
    for p in [
        format!("/local/domain/{domid}"),
        format!("/vm/{}", s.uuid),
        format!("/xapi-rs/domain/{domid}"),
    ] {
        assert!(!xenstore_exists(&p), "{p} left behind");
    }
    let dump = xenstore_dump();
    assert!(
        !dump.contains(&s.uuid.to_string()) && !dump.contains(NAME),
        "{dump}"
    );
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn an_image_file_is_the_guests_xvda_through_blkback_and_nothing_is_left_after() {
    const NAME: &str = "xenops-disk";
    let rt = runtime();
    let xo = rt
        .block_on(Xenops::connect())
        .expect("open Xen and xenstore");
    let guest = Guest { name: NAME.into() };
    let _ = std::fs::remove_file(format!("/var/log/xen/console/guest-{NAME}.log"));
    // An 8 MiB image whose first sector says what it held before.
    let img = std::env::temp_dir().join("xenops-disk.img");
    std::fs::write(&img, b"lab-disk=before\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let img_name = img.display().to_string();
    let mut s = spec(NAME, &dom0_kernel());
    s.boot.cmdline.push_str(" lab.disk=written-by-the-guest");
    s.disks = vec![DiskSpec {
        slot: 0,
        path: img.clone(),
        read_only: false,
    }];

    let domid = rt
        .block_on(xo.start(&s))
        .expect("build and start with a disk");
    let be = format!("/local/domain/0/backend/vbd/{domid}/51712");
    // The loop device blkback opened is the image's.
    let dev = run("xenstore-read", &[&format!("{be}/params")])
        .trim()
        .to_string();
    let loops = run("losetup", &["-a"]);
    assert!(
        loops
            .lines()
            .any(|l| l.starts_with(&format!("{dev}:")) && l.contains(&img_name)),
        "{dev} on {img_name}:\n{loops}"
    );
    wait_for_or(
        "the guest to write its disk marker",
        GUEST_BOOT,
        || guest.log().contains("lab-guest: xvda marker written"),
        || {
            format!(
                "{}\n{}",
                guest.diagnostics(),
                run_any("xenstore-ls", &["-f", &be]).1
            )
        },
    );
    // blkback and blkfront connected (state 4), and the guest saw the image.
    assert_eq!(run("xenstore-read", &[&format!("{be}/state")]).trim(), "4");
    let log = guest.log();
    assert!(
        log.contains("lab-guest: xvda 16384 sectors, held: lab-disk=before"),
        "{log}"
    );

    rt.block_on(xo.clean_shutdown(domid, ShutdownRequest::Poweroff, Duration::from_secs(300)))
        .unwrap_or_else(|e| panic!("clean shutdown: {e}\n{}", guest.diagnostics()));
    rt.block_on(xo.destroy(domid)).expect("destroy");
    // The guest's write is in the image file.
    let head = std::fs::read(&img).unwrap();
    assert!(
        head.starts_with(b"lab-disk=written-by-the-guest\n"),
        "first bytes: {:?}",
        String::from_utf8_lossy(&head[..64])
    );
    // Nothing of the disk is left: no backend, no loop device.
    assert!(!xenstore_exists(&format!(
        "/local/domain/0/backend/vbd/{domid}"
    )));
    wait_for_or(
        "the loop device to be detached",
        Duration::from_secs(60),
        || !run("losetup", &["-a"]).contains(&img_name),
        || run("losetup", &["-a"]),
    );
    let _ = std::fs::remove_file(&img);
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn a_bad_kernel_fails_clearly_and_leaves_no_domain() {
    let rt = runtime();
    let xo = rt
        .block_on(Xenops::connect())
        .expect("open Xen and xenstore");
    let before = xl_domains();

    // A path that does not exist: refused before any domain is created.
    let s = spec("xenops-nokernel", "/boot/no-such-kernel");
    let e = rt.block_on(xo.start(&s)).unwrap_err();
    assert!(
        matches!(e, XenopsError::BootFile { what: "kernel", .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "kernel /boot/no-such-kernel: No such file or directory (os error 2)"
    );

    // A file that is not a kernel: the domain is created, the builder
    // refuses the image, and the half-built domain is destroyed again.
    let junk = std::env::temp_dir().join("xenops-not-a-kernel");
    std::fs::write(&junk, vec![0x5au8; 64 * 1024]).unwrap();
    let s = spec("xenops-junk", junk.to_str().unwrap());
    let e = rt.block_on(xo.start(&s)).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            XenopsError::Xen {
                step: "build the PV image",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("xc_dom_parse_image") && msg.contains(junk.to_str().unwrap()),
        "{msg}"
    );
    let _ = std::fs::remove_file(&junk);

    assert_eq!(xl_domains(), before, "a domain was left behind");
    let dump = xenstore_dump();
    for needle in [
        s.uuid.to_string(),
        "xenops-junk".into(),
        "/xapi-rs/domain/".into(),
    ] {
        assert!(
            !dump.contains(&needle),
            "{needle} left in xenstore:\n{dump}"
        );
    }
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn tracker_reports_reboot_and_crash_codes_of_a_built_domain() {
    let rt = runtime();
    let xo = rt
        .block_on(Xenops::connect())
        .expect("open Xen and xenstore");
    let xc = xenctrl::XenCtrl::open().expect("libxenctrl");
    let mut tracker = rt.block_on(xo.track()).expect("track @releaseDomain");
    for reason in [ShutdownReason::Reboot, ShutdownReason::Crash] {
        let name = format!("xenops-{reason:?}").to_lowercase();
        let s = spec(&name, &dom0_kernel());
        // Built and introduced but left paused: no boot needed to have Xen
        // record a shutdown code, as the guest's own SCHEDOP_shutdown would.
        let domid = rt.block_on(xo.build(&s)).expect("build");
        let (_, state, _) = xl_list_v(&name).expect("listed");
        assert!(state.contains('p'), "built, not started: {state}");
        xc.shutdown_domain(domid, reason).expect("shutdown");
        assert_eq!(
            next_event(&rt, &mut tracker, domid, Duration::from_secs(60)),
            DomainEvent::Shutdown {
                domid,
                uuid: s.uuid,
                reason
            }
        );
        rt.block_on(xo.destroy(domid)).expect("destroy");
        assert_eq!(
            next_event(&rt, &mut tracker, domid, Duration::from_secs(60)),
            DomainEvent::Gone {
                domid,
                uuid: s.uuid
            }
        );
        assert!(xl_list_v(&name).is_none());
    }
}
