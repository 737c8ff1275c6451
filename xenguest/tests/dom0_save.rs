//! PV save against a real Xen 4.17 dom0 (run by the lab as root with
//! `--ignored --test-threads=1`): our streams are checked with the
//! reference's `verify-stream-v2` and restored with `xl restore`, and the
//! guest's probe must verify its memory afterwards.
//!
//! Lab caveat (seen with the reference too): after a live save or an
//! `xl migrate` in the TCG lab (PV log-dirty = shadow paging), dom0
//! processes may start to crash minutes later (malloc corruption in sshd,
//! sort, xl; a journald assertion).  Run this suite in a freshly booted lab.

use std::io::Write;
use std::time::{Duration, Instant};

use dom0_support::*;

use xenguest::save::{
    domain_config_json, save, AfterSave, LivePolicy, Progress, SaveError, SaveOptions, Wrapper,
};
use xenguest::stream::XlHeader;

const VERIFY: &str = "/usr/lib/xen-4.17/bin/verify-stream-v2";

/// The guest's configuration as `xl list -l` gives it (a libxl_domain_config).
fn config_json(g: &Guest) -> String {
    domain_config_json(&run("xl", &["list", "-l", &g.name])).unwrap()
}

fn tmp(name: &str) -> String {
    format!("/var/tmp/dom0_save-{name}")
}

fn verify_stream(path: &str, fmt: &str) -> String {
    let out = run(VERIFY, &["-i", path, "-f", fmt]);
    eprintln!("verify-stream-v2 {fmt} {path}:\n{}", tail(&out, 6));
    out
}

/// The libxl part of an xl save file, for `verify-stream-v2 -f libxl`.
fn libxl_part(xl_file: &str) -> String {
    let b = std::fs::read(xl_file).unwrap();
    let h = XlHeader::parse(&b).unwrap();
    assert!(h.is_json() && h.is_stream_v2());
    let off = h.to_bytes().len();
    let p = format!("{xl_file}.libxl");
    std::fs::write(&p, &b[off..]).unwrap();
    p
}

fn save_to(
    path: &str,
    domid: u32,
    opts: &SaveOptions,
) -> (xenguest::save::SaveStats, Vec<Progress>) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut seen = Vec::new();
    let t = Instant::now();
    let s = save(domid, &mut f, opts, |p| {
        eprintln!("[{:>7.3}s] {p:?}", t.elapsed().as_secs_f64());
        seen.push(p.clone());
    })
    .unwrap_or_else(|e| panic!("save of {domid} to {path}: {e}"));
    f.flush().unwrap();
    eprintln!("saved {path}: {s:?}");
    (s, seen)
}

fn xl_restore(path: &str, name: &str) -> u32 {
    let out = run("xl", &["restore", path]);
    eprintln!("xl restore: {}", tail(&out, 4));
    domid_of(name).unwrap_or_else(|| panic!("{name} not running after xl restore: {out}"))
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn nonlive_save_verifies_then_xl_restore_runs_the_guest() {
    let (g, domid) = Guest::start("sv-nonlive", 256, 16);
    let cfg = config_json(&g);

    // 1. A bare libxc stream, guest resumed in place.
    let f1 = tmp("nonlive.libxc");
    let opts = SaveOptions {
        after: AfterSave::Resume,
        ..SaveOptions::default()
    };
    let (s, _) = save_to(&f1, domid, &opts);
    assert_eq!(s.rounds, 0);
    assert!(s.pages_sent > 16 * 256, "{s:?}");
    assert_eq!(std::fs::metadata(&f1).unwrap().len(), s.bytes);
    verify_stream(&f1, "libxc");
    let st = xl_list();
    assert!(
        st.iter().any(|(n, d, _)| n == "sv-nonlive" && *d == domid),
        "resumed in place: {st:?}"
    );
    g.expect_verifies("verify ok after resume in place");

    // 2. An xl save file; the guest is destroyed, then xl restore.
    let f2 = tmp("nonlive.xl");
    let opts = SaveOptions {
        wrapper: Wrapper::Xl { config_json: cfg },
        after: AfterSave::Destroy,
        ..SaveOptions::default()
    };
    let (s2, _) = save_to(&f2, domid, &opts);
    assert!(domid_of("sv-nonlive").is_none(), "destroyed after save");
    verify_stream(&f2, "xl");
    verify_stream(&libxl_part(&f2), "libxl");
    let t = Instant::now();
    let newid = xl_restore(&f2, "sv-nonlive");
    eprintln!(
        "xl restore of {} bytes took {:.1} s: domid {newid}",
        s2.bytes,
        t.elapsed().as_secs_f64()
    );
    assert_ne!(newid, domid);
    g.expect_verifies("verify ok after xl restore");
    g.expect_verifies("a second verify ok after xl restore");
    let _ = std::fs::remove_file(&f1);
    let _ = std::fs::remove_file(&f2);
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn live_save_converges_and_xl_restore_runs_the_guest() {
    let (g, domid) = Guest::start("sv-live", 256, 16);
    let cfg = config_json(&g);
    let f = tmp("live.xl");
    // A tight target, so that the first pass's dirty pages (the probe's
    // working set) are never enough to stop on, whatever the bandwidth.
    let opts = SaveOptions {
        live: true,
        wrapper: Wrapper::Xl { config_json: cfg },
        after: AfterSave::Destroy,
        policy: LivePolicy {
            downtime_target: Duration::from_millis(50),
            ..LivePolicy::default()
        },
        ..SaveOptions::default()
    };
    let (s, seen) = save_to(&f, domid, &opts);
    let rounds: Vec<_> = seen
        .iter()
        .filter_map(|p| match p {
            Progress::Round(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    eprintln!(
        "live: {} rounds, dirty per round {:?}, stop {:?}, final {} pages, suspended {:?}, total {:?}, {} bytes",
        s.rounds, s.dirty_per_round, s.stop_reason, s.final_pages, s.suspended_for, s.total, s.bytes
    );
    assert!(s.rounds > 1, "more than one round: {s:?}");
    assert_eq!(rounds.len() as u32, s.rounds);
    // Converging: the later rounds resend far less than the first pass.
    assert!(
        rounds.last().unwrap().pages_sent < rounds[0].pages_sent / 2,
        "{rounds:?}"
    );
    assert!(s.final_pages < rounds[0].pages_sent / 2, "{s:?}");
    assert!(s.stop_reason.is_some());
    verify_stream(&f, "xl");
    verify_stream(&libxl_part(&f), "libxl");
    let newid = xl_restore(&f, "sv-live");
    assert_ne!(newid, domid);
    g.expect_verifies("verify ok after live save + xl restore");
    g.expect_verifies("a second verify ok after live save + xl restore");
    let _ = std::fs::remove_file(&f);
}

/// A sink that fails after `left` bytes, like a pipe whose reader closed.
struct Failing {
    left: usize,
}

impl Write for Failing {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        }
        let n = b.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_running_without_logdirty(g: &Guest, domid: u32, what: &str) {
    let xc = xenctrl::XenCtrl::open().unwrap();
    let i = xc.domain_info(domid).unwrap();
    assert!(
        i.shutdown().is_none() && !i.paused() && !i.dying(),
        "{what}: guest state {}",
        i.xl_state()
    );
    // Log-dirty is off: turning it on works (and we turn it off again).
    xc.enable_logdirty(domid)
        .unwrap_or_else(|e| panic!("{what}: log-dirty left on? {e}"));
    xc.disable_shadow(domid).unwrap();
    g.expect_verifies(what);
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn failures_leave_the_guest_running() {
    // A domain that does not exist.
    let e = save(0x7ff0, &mut Vec::new(), &SaveOptions::default(), |_| {}).unwrap_err();
    assert!(matches!(e, SaveError::NoSuchDomain(0x7ff0)), "{e:?}");
    assert_eq!(e.to_string(), "domain 32752 does not exist");

    eprintln!("missing domain: ok");

    // Guests we cannot save are refused before anything happens to them.
    let xc = xenctrl::XenCtrl::open().unwrap();
    let empty = xc.create_domain(&xenctrl::DomainConfig::pv(1)).unwrap();
    let e = save(empty, &mut Vec::new(), &SaveOptions::default(), |_| {}).unwrap_err();
    eprintln!("empty 64-bit PV domain: {e}");
    assert!(matches!(e, SaveError::Layout { .. }), "{e:?}");
    match xc.set_address_size(empty, 32) {
        Ok(()) => {
            let e = save(empty, &mut Vec::new(), &SaveOptions::default(), |_| {}).unwrap_err();
            eprintln!("32-bit PV domain: {e}");
            let _ = xc.destroy_domain(empty);
            assert!(matches!(e, SaveError::Not64Bit { bits: 32, .. }), "{e:?}");
        }
        // A hypervisor built without 32-bit PV support (CONFIG_PV32=n).
        Err(e) => eprintln!("no 32-bit PV in this lab ({e}): 32-bit refusal not checked"),
    }
    let _ = xc.destroy_domain(empty);
    let hvm = xenctrl::DomainConfig {
        kind: xenctrl::DomainType::Hvm,
        ..xenctrl::DomainConfig::pv(1)
    };
    match xc.create_domain(&hvm) {
        Ok(d) => {
            let e = save(d, &mut Vec::new(), &SaveOptions::default(), |_| {}).unwrap_err();
            let _ = xc.destroy_domain(d);
            eprintln!("HVM domain: {e}");
            assert!(matches!(e, SaveError::NotPv { hvm: true, .. }), "{e:?}");
        }
        Err(e) => eprintln!("no HVM domain in this lab ({e}): HVM refusal not checked"),
    }
    let (g, domid) = Guest::start("sv-fail", 256, 16);
    let before = xl_list().len();
    eprintln!("guest sv-fail is domid {domid}");

    // Live: the sink breaks during the first pass (guest not yet suspended).
    let e = save(
        domid,
        &mut Failing { left: 20 << 20 },
        &SaveOptions {
            live: true,
            ..SaveOptions::default()
        },
        |p| eprintln!("{p:?}"),
    )
    .unwrap_err();
    eprintln!("live save into a broken pipe: {e}");
    assert!(e.to_string().to_lowercase().contains("broken pipe"), "{e}");
    assert_running_without_logdirty(&g, domid, "after a failed live save");

    // Non-live: the sink breaks after the guest was suspended.
    let mut suspended = false;
    let e = save(
        domid,
        &mut Failing { left: 30 << 20 },
        &SaveOptions::default(),
        |p| {
            if matches!(p, Progress::Suspended { .. }) {
                suspended = true;
            }
        },
    )
    .unwrap_err();
    eprintln!("non-live save into a broken pipe: {e}");
    assert!(suspended, "the failure came after the suspend");
    assert_running_without_logdirty(&g, domid, "after a failed non-live save");

    // Live, failing late: the sink breaks once the guest is suspended
    // for the final pass.
    let armed = std::rc::Rc::new(std::cell::Cell::new(false));
    let mut rounds = 0;
    let e = save(
        domid,
        &mut FailWhenArmed(armed.clone()),
        &SaveOptions {
            live: true,
            ..SaveOptions::default()
        },
        |p| match p {
            Progress::Round(_) => rounds += 1,
            Progress::Suspended { .. } => armed.set(true),
            _ => {}
        },
    )
    .unwrap_err();
    eprintln!("live save failing in the final pass after {rounds} rounds: {e}");
    assert!(armed.get() && rounds >= 1);
    assert_running_without_logdirty(&g, domid, "after a live save failing while suspended");
    assert_eq!(xl_list().len(), before, "no extra domain: {:?}", xl_list());
}

/// A sink that works until armed, then fails like a closed pipe.
struct FailWhenArmed(std::rc::Rc<std::cell::Cell<bool>>);

impl Write for FailWhenArmed {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.0.get() {
            return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
