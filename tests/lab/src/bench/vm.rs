//! `lab bench vm`: the start and the clean shutdown of one guest-kit VM,
//! `xl create`/`xl shutdown -w` against `xe vm-start`/`xe vm-shutdown`,
//! interleaved in the same run on the lab that is up, with the ratio line
//! `ratio start=X shutdown=Y` (ours / xl, medians). Each figure is one
//! command's wall time in dom0, as an administrator sees it; between the
//! start and the shutdown the guest is let boot (its init prints `init up`),
//! untimed, so that both shut down a guest that can answer.
//!
//! Both VMs have an 8 MiB disk (a raw image file on a loop device: xl's
//! `block` script, our local SR) and a VIF on xenbr0 (xl's `vif-bridge`
//! script, our netback hotplug), so each start and shutdown plugs and
//! unplugs the same devices.

use crate::hosts::LabState;
use crate::testing::{login, rpc_ok};
use crate::util::poll;
use anyhow::{bail, Context, Result};
use dom0_support::CALM_PROBE_ARGS;
use serde_json::json;
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
    super::migrate::total_s(&out)
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

/// One timed start of guest `name` by `start`, its boot (untimed), one
/// timed shutdown by `stop`: (start s, shutdown s).
fn cycle(st: &LabState, name: &str, start: &str, stop: &str) -> Result<(f64, f64)> {
    let b = boots(st, name)?;
    let up = timed(st, start)?;
    booted(st, name, b)?;
    let down = timed(st, stop)?;
    gone(st, name)?;
    Ok((up, down))
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
    // Our VM's devices, through the API as a client adds them: a VDI of
    // the default SR as its xvda, a VIF on the network of xenbr0.
    let rpc = |m: &str, p: serde_json::Value| rpc_ok(&st, m, p, Duration::from_secs(300));
    let s = login(&st, Duration::from_secs(180));
    let vm = rpc("VM.get_by_uuid", json!([s, uuid]));
    let pool = rpc("pool.get_all", json!([s]))[0].clone();
    let sr = rpc("pool.get_default_SR", json!([s, pool]));
    let vdi = rpc(
        "VDI.create",
        json!([s, {"name_label": "bench disk", "SR": sr, "virtual_size": "8388608",
                   "type": "user", "sharable": false, "read_only": false, "other_config": {}}]),
    );
    rpc(
        "VBD.create",
        json!([s, {"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": true,
                   "mode": "RW", "type": "Disk", "empty": false, "other_config": {},
                   "qos_algorithm_type": "", "qos_algorithm_params": {}}]),
    );
    let nets = rpc("network.get_all_records", json!([s]));
    let net = nets
        .as_object()
        .and_then(|o| o.iter().find(|(_, n)| n["bridge"] == "xenbr0"))
        .map(|(r, _)| r.clone())
        .context("no network on xenbr0")?;
    rpc(
        "VIF.create",
        json!([s, {"device": "0", "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                   "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}}]),
    );
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
             rm -f /var/tmp/{XL_NAME}.img; truncate -s 8M /var/tmp/{XL_NAME}.img; \
             cat > /etc/xen/{XL_NAME}.cfg <<'CFG'\n{}\
             disk = [\"format=raw,vdev=xvda,access=rw,script=block,target=/var/tmp/{XL_NAME}.img\"]\n\
             vif = [\"bridge=xenbr0\"]\nCFG",
            crate::guestkit::xl_config(XL_NAME, &kernel, mem, &args)
        ),
    )?;
    println!(
        "guest kit VM, {mem} MiB, 1 vCPU, an 8 MiB disk and a VIF on xenbr0; {runs} run(s) each, interleaved"
    );
    let (mut xl, mut ours) = (vec![], vec![]);
    for i in 1..=runs {
        let r = cycle(
            &st,
            XL_NAME,
            &format!("xl create -q /etc/xen/{XL_NAME}.cfg"),
            &format!("xl shutdown -w {XL_NAME}"),
        )?;
        println!("xl   run {i}: start {:.3} s, shutdown {:.3} s", r.0, r.1);
        xl.push(r);
        let r = cycle(
            &st,
            OUR_NAME,
            &format!("{xe} vm-start uuid={uuid}"),
            &format!("{xe} vm-shutdown uuid={uuid}"),
        )?;
        println!("ours run {i}: start {:.3} s, shutdown {:.3} s", r.0, r.1);
        ours.push(r);
    }
    let _ = st.exec(
        1,
        &format!("{xe} vm-uninstall uuid={uuid} --force; rm -f /var/tmp/{XL_NAME}.img"),
        Duration::from_secs(300),
    );
    // runs >= 1: every median exists.
    let m = |v: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| {
        super::migrate::median(v.iter().map(f).collect()).unwrap_or(f64::NAN)
    };
    println!(
        "ratio start={:.2} shutdown={:.2}",
        m(&ours, |r| r.0) / m(&xl, |r| r.0),
        m(&ours, |r| r.1) / m(&xl, |r| r.1)
    );
    Ok(())
}
