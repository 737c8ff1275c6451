//! The nested-virt lab: real Xen hosts under QEMU on the build machine, with
//! the workspace's toolstack installed in each dom0.
//!
//! `lab up` brings its own tools (Debian packages), builds the hypervisor from
//! Debian's Xen source with `xen-patches/` (cached), builds the dom0 image
//! (cached), boots the hosts on copy-on-write overlays and installs the
//! toolstack. Lab tests use [`hosts::LabState`] to reach the hosts, through the
//! helpers in [`testing`].

pub mod bench;
pub mod deps;
pub mod guestkit;
pub mod hosts;
pub mod image;
pub mod testing;
pub mod testrun;
pub mod util;
pub mod xen;

use anyhow::{bail, Context, Result};
use hosts::LabState;
use std::process::Command;
use std::time::{Duration, Instant};
use util::{run_dir, run_step, say, workspace_root};

pub struct UpOptions {
    pub hosts: u32,
    pub cpus: u32,
    /// Wait for xapi-rs to answer on every host.
    pub wait_xapi: bool,
    pub boot_timeout: Duration,
}

impl Default for UpOptions {
    fn default() -> Self {
        UpOptions {
            hosts: 1,
            // XAPI_LAB_CPUS overrides the vCPUs per host.
            cpus: std::env::var("XAPI_LAB_CPUS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(2),
            wait_xapi: true,
            // Generous: TCG on a loaded 2-core machine. XAPI_LAB_BOOT_TIMEOUT
            // (seconds) overrides it, e.g. to test the failure path.
            boot_timeout: Duration::from_secs(
                std::env::var("XAPI_LAB_BOOT_TIMEOUT")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1200),
            ),
        }
    }
}

/// The toolstack binaries installed into dom0: (cargo package, binary, dom0 path).
const TOOLSTACK: &[(&str, &str, &str)] = &[
    ("xapi-rs", "xapi-rs", "/usr/local/sbin/xapi-rs"),
    ("xe", "xe", "/usr/local/bin/xe"),
    ("xenguest", "xenguest", "/usr/local/lib/xapi-rs/xenguest"),
];

const XAPI_UNIT: &str = "[Unit]
Description=xapi-rs, the XenAPI toolstack
After=xen.service lab-net.service network.target
Wants=xen.service

[Service]
ExecStart=/usr/local/sbin/xapi-rs
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
";

/// Builds the release toolstack and the guest kit (before booting, so the
/// compiler and the TCG hosts do not compete for the two cores).
pub fn build_toolstack() -> Result<std::path::PathBuf> {
    let dir = run_dir();
    std::fs::create_dir_all(&dir)?;
    let log = dir.join("build.log");
    let mut c = Command::new(env!("CARGO"));
    c.args(["build", "--release"]);
    for (pkg, _, _) in TOOLSTACK {
        c.args(["-p", pkg]);
    }
    run_step(
        "build toolstack (release)",
        c.current_dir(workspace_root()),
        &log,
        Duration::from_secs(3600),
    )?;
    guestkit::build(&dir)
}

/// Builds and installs the toolstack into every host, (re)starts xapi-rs
/// and, when asked, waits until it answers.
pub fn deploy(state: &LabState, wait_xapi: bool) -> Result<()> {
    let initrd = build_toolstack()?;
    install(state, &initrd, wait_xapi)
}

/// Installs the built toolstack and guest kit into every host.
pub fn install(state: &LabState, initrd: &std::path::Path, wait_xapi: bool) -> Result<()> {
    let target = guestkit::target_dir().join("release");
    for h in &state.hosts {
        for (_, bin, dest) in TOOLSTACK {
            state.push(h.index, &target.join(bin), dest)?;
        }
        state.push(h.index, initrd, "/opt/lab/guest/initrd.cpio")?;
        state.push_bytes(
            h.index,
            XAPI_UNIT.as_bytes(),
            "/etc/systemd/system/xapi-rs.service",
            0o644,
        )?;
        state.exec_ok(
            h.index,
            "systemctl daemon-reload && systemctl enable -q xapi-rs && systemctl restart xapi-rs",
            Duration::from_secs(120),
        )?;
    }
    if wait_xapi {
        for h in &state.hosts {
            let start = Instant::now();
            while !hosts::http_answers(h.http_port) {
                if start.elapsed() > Duration::from_secs(90) {
                    let journal = state
                        .exec(
                            h.index,
                            "journalctl -u xapi-rs --no-pager | tail -30",
                            Duration::from_secs(30),
                        )
                        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                        .unwrap_or_default();
                    bail!(
                        "step 'start xapi-rs on host {}': no answer on http port {} after 90s; journal:\n{journal}",
                        h.index,
                        h.http_port
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            say(format!("host {}: xapi-rs answers", h.index));
        }
    }
    Ok(())
}

/// `lab up`: everything from a bare machine to hosts with the toolstack.
pub fn up(opts: &UpOptions) -> Result<LabState> {
    if let Ok(st) = LabState::load() {
        if st.all_alive() && st.hosts.len() as u32 == opts.hosts {
            say("lab already up: redeploying the toolstack");
            deploy(&st, opts.wait_xapi)?;
            return Ok(st);
        }
        if st.all_alive() {
            bail!(
                "a lab with {} host(s) is up; run `lab down` first",
                st.hosts.len()
            );
        }
        hosts::down()?;
    }
    let start = Instant::now();
    let src = deps::ensure().context("installing the build machine's packages")?;
    let xen = xen::build(&src)?;
    let cred = image::credentials()?;
    let img = image::build(&src.version, &cred)?;
    let initrd = build_toolstack()?;
    say(format!(
        "booting {} host(s) (Xen {} under QEMU TCG)",
        opts.hosts, src.version
    ));
    let state = match hosts::boot(opts.hosts, &xen, &img, &cred, opts.cpus, opts.boot_timeout) {
        Ok(s) => s,
        Err(e) => {
            // Leave the logs for the message, but no processes behind.
            let keep = run_dir().with_extension("failed");
            let _ = std::fs::remove_dir_all(&keep);
            let _ = copy_logs(&run_dir(), &keep);
            let _ = hosts::down();
            return Err(e.context(format!("logs kept in {}", keep.display())));
        }
    };
    install(&state, &initrd, opts.wait_xapi)?;
    say(format!("lab up in {}s", start.elapsed().as_secs()));
    Ok(state)
}

fn copy_logs(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let p = e?.path();
        if p.extension().and_then(|x| x.to_str()) == Some("log") {
            std::fs::copy(&p, to.join(p.file_name().unwrap_or_default()))?;
        }
    }
    Ok(())
}
