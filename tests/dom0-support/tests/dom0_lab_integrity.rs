//! The lab host itself, before anything is built on it: run by `lab test`
//! inside dom0 (as root, `--ignored`).
//!
//! Under QEMU's TCG, Xen's lazy FPU switching let a vCPU run on another
//! context's XMM registers, which showed as the last 48 bytes of 4 KiB
//! copies in dom0 going wrong and corrupted migrated guests, files and
//! heaps (tests/lab/src/hosts.rs, `XEN_TCG_ARGS`). The first test checks the
//! setting that prevents it; the second is the copy loop that found it.

use dom0_support::{Guest, CALM_WORKSET_MB};
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn xen_switches_fpu_state_eagerly_for_pv_guests() {
    let dmesg = dom0_support::run("xl", &["dmesg"]);
    let line = dmesg
        .lines()
        .find(|l| l.contains("Support for PV VMs:"))
        .unwrap_or_else(|| panic!("no speculative-mitigation summary in xl dmesg:\n{dmesg}"));
    assert!(
        line.contains("EAGER_FPU"),
        "Xen switches FPU state lazily: {line}"
    );
}

/// Copies 4 KiB pages and checks every copy, in two threads (one per dom0
/// vCPU) while a probe guest keeps Xen switching vCPUs; returns
/// (copies, descriptions of bad ones).
fn copy_loop(run_for: Duration) -> (u64, Vec<String>) {
    const PAGES: usize = 1024;
    let t0 = Instant::now();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
    let mut src = vec![0u8; PAGES * 4096];
    for w in src.chunks_exact_mut(8) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        w.copy_from_slice(&seed.to_le_bytes());
    }
    let mut dst = vec![0u8; PAGES * 4096];
    let (mut copies, mut bad) = (0u64, Vec::new());
    while t0.elapsed() < run_for {
        dst.fill(0);
        for p in 0..PAGES {
            let (s, d) = (&src[p * 4096..][..4096], &mut dst[p * 4096..][..4096]);
            d.copy_from_slice(s);
            copies += 1;
            if d != s {
                let first = (0..4096).find(|&i| d[i] != s[i]).unwrap_or(0);
                let last = (0..4096).rev().find(|&i| d[i] != s[i]).unwrap_or(0);
                bad.push(format!(
                    "copy {copies}: bytes {first:#x}..={last:#x} differ"
                ));
            }
        }
    }
    (copies, bad)
}

#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn page_copies_in_dom0_keep_every_byte_while_a_guest_runs() {
    let (_guest, _) = Guest::launch("lab-integrity", 128, CALM_WORKSET_MB);
    let threads: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| copy_loop(Duration::from_secs(20))))
        .collect();
    let (mut copies, mut bad) = (0, Vec::new());
    for t in threads {
        let (c, b) = t.join().expect("copy thread");
        copies += c;
        bad.extend(b);
    }
    println!("{copies} page copies, {} bad", bad.len());
    assert!(copies > 10_000, "only {copies} copies in 20 s");
    assert!(
        bad.is_empty(),
        "{} of {copies} page copies went wrong:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
