//! Restore on a real Xen 4.17 dom0 (run by `lab test` as root with
//! `--ignored --test-threads=1`).

use std::time::{Duration, Instant};

use dom0_support::*;
use xenguest::restore::{restore, RestoreOptions};

/// Starts a probe guest, waits for it, `xl save`s it to FILE (which
/// destroys it).  The guard destroys whatever carries the name later.
fn saved_probe(name: &str, file: &str) -> Guest {
    let (g, _) = Guest::start(name, 256, CALM_WORKSET_MB);
    run("xl", &["save", name, file]);
    g
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn xl_save_then_our_restore_runs_and_xl_save_restore_of_it_works() {
    let name = "rs-restore";
    let file = "/var/tmp/rs-restore.save";
    let g = saved_probe(name, file);
    let t = Instant::now();
    let mut f = std::io::BufReader::new(std::fs::File::open(file).unwrap());
    let r = restore(&mut f, &RestoreOptions::default()).expect("restore");
    eprintln!("restored {r:?} in {:?}", t.elapsed());
    assert_eq!(r.name, name);
    assert_eq!(r.vcpus, 1);
    assert_eq!(domid_of(name), Some(r.domid), "{}", g.diagnostics());
    g.expect_verifies("verify ok after our restore");
    let state = sh(&format!("xl list {} | tail -1", r.domid));
    assert!(
        state.contains("r-") || state.contains("-b") || state.contains("------"),
        "{state}"
    );
    // xl save of OUR restored guest, then xl restore of that.
    let file2 = "/var/tmp/rs-restore2.save";
    run("xl", &["save", name, file2]);
    run("xl", &["restore", file2]);
    g.expect_verifies("verify ok after xl restore");
    run("xl", &["destroy", name]);
    // A destroyed domain may linger as dying for a moment.
    wait_for("the guest gone", Duration::from_secs(60), || {
        domid_of(name).is_none()
    });
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(file2);
}

/// The children of every xenstore root a restore writes under (see
/// `restore::tree::tree_roots`): a leftover domain, /vm/UUID, /libxl/DOMID
/// or console backend shows up here.
fn xs_roots() -> String {
    let mut s = String::new();
    for root in [
        "/local/domain",
        "/vm",
        "/libxl",
        "/local/domain/0/backend/console",
    ] {
        // A missing root lists as an error message, which is stable too.
        s.push_str(&format!(
            "{root}: {}\n",
            run_any("xenstore-list", &[root]).1
        ));
    }
    s
}

fn userdata_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(xenguest::restore::XEN_LIB_DIR)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("userdata-"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Restores `bytes`, expects an error containing `expect`, and checks that
/// no domain (not even a dying one, once Xen has freed it), no xenstore
/// node and no userdata file is left behind.
fn expect_clean_failure_with(bytes: &[u8], what: &str, expect: &str) {
    let before_xl = xl_list().len();
    let before_xs = xs_roots();
    let before_files = userdata_files();
    let err = restore(&mut &bytes[..], &RestoreOptions::default())
        .expect_err(what)
        .to_string();
    eprintln!("{what}: {err}");
    assert!(
        err.contains(expect),
        "{what}: error {err:?} lacks {expect:?}"
    );
    // The destroyed domain may linger as dying for a moment.
    wait_for("no new domain", Duration::from_secs(60), || {
        xl_list().len() == before_xl
    });
    assert_eq!(xs_roots(), before_xs, "{what}: xenstore leftover");
    assert_eq!(userdata_files(), before_files, "{what}: userdata leftover");
}

fn expect_clean_failure(bytes: Vec<u8>, what: &str) {
    expect_clean_failure_with(&bytes, what, "");
}

/// /var/lib/xen replaced by a read-only tmpfs while alive, so the userdata
/// write (after the xenstore tree is written) fails.
struct ReadOnlyXenLib;

impl ReadOnlyXenLib {
    fn mount() -> Self {
        sh(&format!(
            "mount -t tmpfs -o ro tmpfs {}",
            xenguest::restore::XEN_LIB_DIR
        ));
        ReadOnlyXenLib
    }
}

impl Drop for ReadOnlyXenLib {
    fn drop(&mut self) {
        let (ok, out) = run_any("umount", &[xenguest::restore::XEN_LIB_DIR]);
        assert!(ok || std::thread::panicking(), "umount: {out}");
    }
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
    let _g = saved_probe(name, file);
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

/// Failures after the whole libxc stream was applied (memory populated and
/// written, page tables pinned, vCPU contexts set, p2m written, grant table
/// seeded) and after the xenstore tree was written: the cleanup must
/// destroy a fully built domain and remove everything written for it.
#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn late_failures_destroy_the_domain_and_remove_its_xenstore_nodes() {
    let name = "rs-restore-late";
    let file = "/var/tmp/rs-restore-late.save";
    let _g = saved_probe(name, file);
    let good = std::fs::read(file).unwrap();
    // The libxl END record (8 bytes, last in the file) cut off: everything
    // of the libxc stream has been applied when the error is found.
    assert_eq!(&good[good.len() - 8..], &[0u8; 8], "libxl END last");
    for run_no in 1..=2 {
        expect_clean_failure_with(
            &good[..good.len() - 8],
            &format!("libxl END missing, run {run_no}"),
            "truncated",
        );
    }
    // The libxc END record cut off too: vCPU records read, not applied.
    expect_clean_failure_with(&good[..good.len() - 16], "libxc END missing", "truncated");
    // A complete stream, but the userdata file cannot be written: fails
    // after the xenstore tree of the new domain was written.
    {
        let _ro = ReadOnlyXenLib::mount();
        expect_clean_failure_with(&good, "read-only /var/lib/xen", "Read-only file system");
    }
    // And the good stream still restores afterwards (nothing half-left
    // blocks its name or uuid).
    let r = restore(
        &mut &good[..],
        &RestoreOptions {
            paused: true,
            ..Default::default()
        },
    )
    .expect("restore of the intact stream");
    assert_eq!(r.name, name);
    run("xl", &["destroy", name]);
    wait_for("restored domain gone", Duration::from_secs(60), || {
        domid_of(name).is_none()
    });
    let _ = std::fs::remove_file(file);
}
