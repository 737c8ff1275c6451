//! `lab bench vm`: the start and the clean shutdown of one guest-kit VM,
//! `xl create`/`xl shutdown -w` against `xe vm-start`/`xe vm-shutdown`,
//! interleaved in the same run on the lab that is up, with the ratio line
//! `ratio start=X shutdown=Y` (ours / xl, medians). Each figure is one
//! command's wall time in dom0, as an administrator sees it; between the
//! start and the shutdown the guest is let boot (its init prints `init up`),
//! untimed, so that both shut down a guest that can answer.
//!
//! The VMs have no disk or VIF yet: the toolstack does not plug devices so
//! far, so the with-devices figures are still to come.

use crate::hosts::LabState;
use crate::util::poll;
use anyhow::{bail, Context, Result};
use dom0_support::CALM_PROBE_ARGS;
use std::time::Duration;

const XL_NAME: &str = "bench-xl";
const OUR_NAME: &str = "bench-xe";

fn sh(st: &LabState, script: &str) -> Result<String> {
    st.exec_ok(1, script, Duration::from_secs(1800))
}

/// Runs `cmd` in dom0 and returns its wall time there.
fn timed(st: &LabState, cmd: &str) -> Result<f64> {
    let out = sh(
        st,
        &format!(
            "s=$(date +%s%N); {cmd} >/tmp/bench-vm.log 2>&1 || {{ cat /tmp/bench-vm.log; exit 1; }}; \
             e=$(date +%s%N); echo total_ns=$((e - s))"
        ),
    )?;
    let ns: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("total_ns="))
        .context("no total_ns line")?
        .trim()
        .parse()?;
    Ok(ns / 1e9)
}

fn boots(st: &LabState, name: &str) -> Result<usize> {
    let log = sh(st, &format!("lab-guest-log {name}"))?;
    Ok(log
        .lines()
        .filter(|l| l.contains("lab-guest: init up"))
        .count())
}

/// Waits until guest `name` has booted once more than `before` times.
fn booted(st: &LabState, name: &str, before: usize) -> Result<()> {
    poll(
        &format!("{name} booting"),
        Duration::from_secs(420),
        Duration::from_secs(1),
        || Ok((boots(st, name)? > before).then_some(())),
    )
}

fn gone(st: &LabState, name: &str) -> Result<()> {
    let list = sh(st, "xl list")?;
    if list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
    {
        bail!("{name} still in xl list after its shutdown:\n{list}");
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the benchmark `runs` times on the lab that is up.
pub fn vm(runs: usize) -> Result<()> {
    let st = LabState::load().context("no lab is up: run `lab up` first")?;
    let runs = runs.max(1);
    let kernel = sh(&st, "ls /boot/vmlinuz-* | sort | tail -1")?
        .trim()
        .to_string();
    let args = format!("console=hvc0 quiet {CALM_PROBE_ARGS}");
    // Ours, installed as a user would; any copy from an earlier run goes.
    let xe = format!("xe -u root -pw '{}'", st.password);
    let _ = st.exec(
        1,
        &format!("{xe} vm-uninstall vm={OUR_NAME} --force --multiple"),
        Duration::from_secs(300),
    );
    let uuid = sh(
        &st,
        &format!(
            "{xe} vm-install template='Linux PV (direct kernel boot)' new-name-label={OUR_NAME}"
        ),
    )?
    .trim()
    .to_string();
    sh(
        &st,
        &format!(
            "{xe} vm-param-set uuid={uuid} PV-kernel={kernel} PV-ramdisk=/opt/lab/guest/initrd.cpio \
             PV-args='{args}'"
        ),
    )?;
    // xl's guest gets the same memory as the template gives ours.
    let bytes: u64 = sh(
        &st,
        &format!("{xe} vm-param-get uuid={uuid} param-name=memory-static-max"),
    )?
    .trim()
    .parse()
    .context("memory-static-max")?;
    let mem = bytes >> 20;
    let _ = st.exec(1, &format!("xl destroy {XL_NAME}"), Duration::from_secs(60));
    sh(
        &st,
        &format!(
            "rm -f /var/log/xen/console/guest-{XL_NAME}*.log /var/log/xen/console/guest-{OUR_NAME}*.log; \
             cat > /etc/xen/{XL_NAME}.cfg <<'CFG'\n\
             name = \"{XL_NAME}\"\ntype = \"pv\"\nkernel = \"{kernel}\"\n\
             ramdisk = \"/opt/lab/guest/initrd.cpio\"\nextra = \"{args}\"\n\
             memory = {mem}\nmaxmem = {mem}\nvcpus = 1\nCFG"
        ),
    )?;
    println!("guest kit VM, {mem} MiB, 1 vCPU, no devices; {runs} run(s) each, interleaved");
    let (mut xl, mut ours) = (vec![], vec![]);
    for i in 1..=runs {
        let b = boots(&st, XL_NAME)?;
        let start = timed(&st, &format!("xl create -q /etc/xen/{XL_NAME}.cfg"))?;
        booted(&st, XL_NAME, b)?;
        let stop = timed(&st, &format!("xl shutdown -w {XL_NAME}"))?;
        gone(&st, XL_NAME)?;
        println!("xl   run {i}: start {start:.3} s, shutdown {stop:.3} s");
        xl.push((start, stop));

        let b = boots(&st, OUR_NAME)?;
        let start = timed(&st, &format!("{xe} vm-start uuid={uuid}"))?;
        booted(&st, OUR_NAME, b)?;
        let stop = timed(&st, &format!("{xe} vm-shutdown uuid={uuid}"))?;
        gone(&st, OUR_NAME)?;
        println!("ours run {i}: start {start:.3} s, shutdown {stop:.3} s");
        ours.push((start, stop));
    }
    let _ = st.exec(
        1,
        &format!("{xe} vm-uninstall uuid={uuid} --force"),
        Duration::from_secs(300),
    );
    let m = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| median(v.iter().map(f).collect());
    println!(
        "ratio start={:.2} shutdown={:.2}",
        m(&ours, |r| r.0) / m(&xl, |r| r.0),
        m(&ours, |r| r.1) / m(&xl, |r| r.1)
    );
    Ok(())
}
