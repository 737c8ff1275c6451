//! Restore on a real Xen 4.17 dom0 (run by `lab test` as root with
//! `--ignored --test-threads=1`).

use std::process::Command;
use std::time::{Duration, Instant};

use xenguest::restore::{restore, RestoreOptions};

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), s)
}

fn sh(script: &str) -> String {
    let (ok, out) = run("sh", &["-c", script]);
    assert!(ok, "{script}: {out}");
    out
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn verify_ok_count(name: &str) -> usize {
    run("/usr/local/bin/lab-guest-log", &[name])
        .1
        .matches("probe: verify ok")
        .count()
}

fn domains() -> String {
    run("xl", &["list"]).1
}

fn xs_domains() -> String {
    run("xenstore-ls", &["/local/domain"]).1
}

/// Starts a probe guest, waits for it, `xl save`s it to FILE.
fn saved_probe(name: &str, file: &str) {
    let _ = run("xl", &["destroy", name]);
    // The console log outlives guests of the same name: count from here.
    let before = verify_ok_count(name);
    let (ok, out) = run("/usr/local/bin/lab-guest", &[name, "256", "16"]);
    assert!(ok, "lab-guest: {out}");
    wait_for("probe verify ok", Duration::from_secs(120), || {
        verify_ok_count(name) > before
    });
    let (ok, out) = run("xl", &["save", name, file]);
    assert!(ok, "xl save: {out}");
}

fn request_verify(domid: u32) {
    let tty = sh(&format!("xenstore-read /local/domain/{domid}/console/tty"));
    let tty = tty.trim().to_string();
    assert!(tty.starts_with("/dev/pts/"), "console tty {tty:?}");
    std::fs::write(&tty, b"v\n").expect("write to the console pty");
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn xl_save_then_our_restore_runs_and_xl_save_restore_of_it_works() {
    let name = "rs-restore";
    let file = "/var/tmp/rs-restore.save";
    saved_probe(name, file);
    let before = verify_ok_count(name);
    let t = Instant::now();
    let mut f = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    let r = restore(&mut f, &RestoreOptions::default()).expect("restore");
    eprintln!("restored {r:?} in {:?}", t.elapsed());
    assert_eq!(r.name, name);
    assert_eq!(r.vcpus, 1);
    let line = domains();
    assert!(line.contains(name), "{line}");
    request_verify(r.domid);
    wait_for("new verify ok lines", Duration::from_secs(120), || {
        verify_ok_count(name) > before + 1
    });
    let state = sh(&format!("xl list {} | tail -1", r.domid));
    assert!(
        state.contains("r-") || state.contains("-b") || state.contains("------"),
        "{state}"
    );
    // xl save of OUR restored guest, then xl restore of that.
    let file2 = "/var/tmp/rs-restore2.save";
    let (ok, out) = run("xl", &["save", name, file2]);
    assert!(ok, "xl save of our restored guest: {out}");
    let (ok, out) = run("xl", &["restore", file2]);
    assert!(ok, "xl restore: {out}");
    let n = verify_ok_count(name);
    wait_for(
        "verify ok after xl restore",
        Duration::from_secs(120),
        || verify_ok_count(name) > n,
    );
    let log = run("/usr/local/bin/lab-guest-log", &[name]).1;
    assert!(!log.contains("verify FAILED"), "{log}");
    let (ok, out) = run("xl", &["destroy", name]);
    assert!(ok, "xl destroy: {out}");
    assert!(!domains().contains(name));
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(file2);
}

fn expect_clean_failure(bytes: Vec<u8>, what: &str) {
    let before_xl = domains().lines().count();
    let before_xs = xs_domains();
    let err = restore(&mut bytes.as_slice(), &RestoreOptions::default())
        .expect_err(what)
        .to_string();
    eprintln!("{what}: {err}");
    assert!(!err.is_empty());
    // The destroyed domain may linger as dying for a moment.
    wait_for("no new domain", Duration::from_secs(30), || {
        domains().lines().count() == before_xl
    });
    assert_eq!(xs_domains(), before_xs, "{what}: xenstore leftover");
}

/// Offset of the first PAGE_DATA record (type 1) after the libxc headers.
fn first_page_data(b: &[u8]) -> usize {
    let ihdr = b
        .windows(8)
        .position(|w| w == [0xff; 8])
        .expect("libxc image header");
    let mut off = ihdr + 24 + 16;
    loop {
        let t = u32::from_le_bytes(b[off..off + 4].try_into().unwrap());
        let len = u32::from_le_bytes(b[off + 4..off + 8].try_into().unwrap()) as usize;
        if t == 1 {
            return off;
        }
        off += 8 + len.div_ceil(8) * 8;
    }
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn malformed_streams_fail_cleanly() {
    let name = "rs-restore-bad";
    let file = "/var/tmp/rs-restore-bad.save";
    saved_probe(name, file);
    let good = std::fs::read(file).unwrap();
    // Truncated in the middle of the page data.
    expect_clean_failure(good[..good.len() / 2].to_vec(), "truncated");
    // Corrupted PAGE_DATA header: count 0.
    let pd = first_page_data(&good);
    let mut bad = good.clone();
    bad[pd + 8..pd + 12].copy_from_slice(&0u32.to_le_bytes());
    expect_clean_failure(bad, "corrupted PAGE_DATA header");
    // A pfn beyond the advertised p2m range.
    let mut bad = good.clone();
    let e = pd + 16;
    let entry = u64::from_le_bytes(bad[e..e + 8].try_into().unwrap());
    let beyond = (entry & !0x000f_ffff_ffff_ffff) | 0x0000_00ff_ffff_0000;
    bad[e..e + 8].copy_from_slice(&beyond.to_le_bytes());
    expect_clean_failure(bad, "pfn beyond range");
    let _ = std::fs::remove_file(file);
}
