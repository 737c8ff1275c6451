//! `lab bench migrate`: live migration of one probe guest to localhost, the
//! reference's `xl migrate` against ours (`xenguest migrate-send` /
//! `migrate-receive`), interleaved on the same guest in the same lab run so
//! that both see the same machine. It prints figures and asserts only that
//! each migration worked (the guest verifies its memory afterwards).
//!
//! It boots a fresh one-host lab of its own (in the run directory's
//! `bench/`, so a lab the user brought up keeps running) and takes it down
//! at the end unless asked to keep it.
//!
//! Figures per run: the pause the guest saw (the largest clock gap its
//! probe's verify lines report after the migration started), the total
//! time of the sending command in dom0, and the bytes that crossed the
//! connection (for `xl`, counted by a `dd` spliced into its transport).

use crate::hosts::LabState;
use crate::util::poll;
use anyhow::{bail, Context, Result};
use dom0_support::XENGUEST;
use std::time::Duration;

const NAME: &str = "bench-mig";
const PORT: u16 = 7790;

/// Stands in for ssh in `xl migrate -s`: drops the host, counts what the
/// sender writes with `dd` (its byte count lands in /tmp/xl-mig.dd).
const COUNTING_SSH: &str = r#"#!/bin/sh
shift
exec sh -c "dd bs=1M 2>/tmp/xl-mig.dd | $*"
"#;

#[derive(Debug, Clone, Copy)]
struct Run {
    /// The guest's largest reported pause, if it reported one.
    downtime_ms: Option<f64>,
    total_s: f64,
    bytes: u64,
}

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

fn sh(st: &LabState, script: &str) -> Result<String> {
    st.exec_ok(1, script, Duration::from_secs(1800))
}

fn console(st: &LabState) -> Result<String> {
    let log = sh(st, &format!("lab-guest-log {NAME}"))?;
    if log.contains("verify FAILED") {
        bail!("the guest's memory check failed:\n{log}");
    }
    Ok(log)
}

fn count(log: &str, pat: &str) -> usize {
    log.lines().filter(|l| l.contains(pat)).count()
}

/// Asks the probe for a verify and waits for a new `verify ok` line.
fn expect_verifies(st: &LabState) -> Result<()> {
    let before = count(&console(st)?, "probe: verify ok");
    sh(
        st,
        &format!("echo v > \"$(xenstore-read /local/domain/$(xl domid {NAME})/console/tty)\""),
    )?;
    poll(
        "the guest verifying its memory after the migration",
        Duration::from_secs(420),
        Duration::from_secs(2),
        || Ok((count(&console(st)?, "probe: verify ok") > before).then_some(())),
    )
}

/// `total_ns=N` printed by the timing wrapper.
pub(super) fn total_s(out: &str) -> Result<f64> {
    let ns: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("total_ns="))
        .context("no total_ns line")?
        .trim()
        .parse()?;
    Ok(ns / 1e9)
}

/// One migration by `script` (which prints `total_ns=`), bracketed by the
/// console bookkeeping.
fn measured(st: &LabState, script: &str, bytes: impl FnOnce(&str) -> Result<u64>) -> Result<Run> {
    let before = dom0_support::last_verify(&console(st)?);
    let out = sh(st, script)?;
    let total_s = total_s(&out)?;
    let bytes = bytes(&out)?;
    // One copy, under its own name.
    let list = sh(st, "xl list")?;
    let copies: Vec<&str> = list.lines().filter(|l| l.starts_with(NAME)).collect();
    if copies.len() != 1 || !copies[0].starts_with(&format!("{NAME} ")) {
        bail!("expected exactly one {NAME} after the migration:\n{list}");
    }
    expect_verifies(st)?;
    Ok(Run {
        downtime_ms: dom0_support::pause_after(&console(st)?, before).map(|ms| ms as f64),
        total_s,
        bytes,
    })
}

fn xl_run(st: &LabState) -> Result<Run> {
    measured(
        st,
        &format!(
            "rm -f /tmp/xl-mig.dd; s=$(date +%s%N); \
             xl migrate -s /tmp/lab-ssh-count {NAME} localhost >/tmp/xl-mig.log 2>&1 \
             || {{ cat /tmp/xl-mig.log; exit 1; }}; \
             e=$(date +%s%N); echo total_ns=$((e - s)); cat /tmp/xl-mig.dd"
        ),
        |out| {
            out.lines()
                .find(|l| l.contains(" bytes "))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .context("no byte count from dd")
        },
    )
}

fn our_run(st: &LabState) -> Result<Run> {
    measured(
        st,
        &format!(
            "rm -f /tmp/bench-recv.log; \
             (setsid sh -c '{XENGUEST} migrate-receive --listen 127.0.0.1:{PORT}; \
               echo \"receiver exit=$?\"' >/tmp/bench-recv.log 2>&1 </dev/null &); \
             end=$(($(date +%s) + 300)); until ss -ltn | grep -q ':{PORT} '; do \
               if grep -q 'receiver exit=' /tmp/bench-recv.log || [ $(date +%s) -gt $end ]; then \
                 cat /tmp/bench-recv.log; exit 1; fi; sleep 0.1; done; \
             d=$(xl domid {NAME}); s=$(date +%s%N); \
             {XENGUEST} migrate-send --quiet --domid $d --to 127.0.0.1:{PORT} 2>/tmp/bench-send.log \
             || {{ cat /tmp/bench-send.log /tmp/bench-recv.log; exit 1; }}; \
             e=$(date +%s%N); echo total_ns=$((e - s)); cat /tmp/bench-send.log; \
             end=$(($(date +%s) + 300)); until grep -q 'receiver exit=' /tmp/bench-recv.log; do \
               [ $(date +%s) -le $end ] || {{ cat /tmp/bench-recv.log; exit 1; }}; sleep 0.1; done; \
             grep -q 'receiver exit=0' /tmp/bench-recv.log || {{ cat /tmp/bench-recv.log; exit 1; }}"
        ),
        |out| {
            out.split(" bytes ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
                .context("no `bytes N` in migrate-send's summary")
        },
    )
}

fn show(who: &str, i: usize, r: &Run) {
    let dt = r.downtime_ms.map_or("?".to_string(), |d| format!("{d:.0}"));
    println!(
        "{who:<4} run {i}: guest-observed downtime ms {dt}, total {:.2} s, bytes {}",
        r.total_s, r.bytes
    );
}

/// Boots the bench's own host, runs `runs` migrations with each tool,
/// interleaved, and prints the figures and the ratio line (ours / xl,
/// medians). The host is taken down afterwards unless `keep`.
pub fn migrate(runs: usize, keep: bool) -> Result<()> {
    // A freshly booted host: live migrations wear this TCG dom0 out (see
    // README, "known lab problem"), and a fresh one makes runs comparable.
    let dir = crate::util::use_own_lab("bench")?;
    crate::util::say(format!(
        "bench migrate: booting a fresh lab host in {}",
        dir.display()
    ));
    crate::hosts::down()?;
    // Whatever fails (the set-up included), the host goes unless `keep`.
    let r = crate::up(&crate::UpOptions {
        wait_xapi: false,
        ..crate::UpOptions::default()
    })
    .and_then(|st| runs_on(&st, runs));
    if keep {
        crate::util::say(format!(
            "bench lab kept: XAPI_LAB_RUN={} lab exec -- CMD reaches it; `lab down` stops it",
            dir.display()
        ));
    } else {
        crate::hosts::down()?;
    }
    r
}

fn runs_on(st: &LabState, runs: usize) -> Result<()> {
    st.push_bytes(1, COUNTING_SSH.as_bytes(), "/tmp/lab-ssh-count", 0o755)?;
    let _ = st.exec(1, &format!("xl destroy {NAME}"), Duration::from_secs(60));
    sh(
        st,
        &format!("rm -f /var/log/xen/console/guest-{NAME}*.log; lab-guest {NAME} 256 16"),
    )?;
    poll(
        "the bench guest's first memory verify",
        Duration::from_secs(420),
        Duration::from_secs(2),
        || Ok((count(&console(st)?, "probe: verify ok") > 0).then_some(())),
    )?;
    println!("guest: {NAME}, 256 MiB, probe dirtying 16 MiB; migrations to localhost");
    let (mut xl, mut ours) = (vec![], vec![]);
    for i in 1..=runs {
        let r = xl_run(st).context("xl migrate")?;
        show("xl", i, &r);
        xl.push(r);
        let r = our_run(st).context("xenguest migrate-send")?;
        show("ours", i, &r);
        ours.push(r);
    }
    let _ = st.exec(1, &format!("xl destroy {NAME}"), Duration::from_secs(60));
    let med = |v: &[Run], f: fn(&Run) -> Option<f64>| median(v.iter().filter_map(f).collect());
    let ratio = |f: fn(&Run) -> Option<f64>| match (med(&ours, f), med(&xl, f)) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".to_string(),
    };
    println!(
        "ratio downtime={} total={} bytes={}",
        ratio(|r| r.downtime_ms),
        ratio(|r| Some(r.total_s)),
        ratio(|r| Some(r.bytes as f64))
    );
    Ok(())
}
