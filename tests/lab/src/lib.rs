//! The nested-virt lab: real Xen hosts under QEMU on the build machine, with
//! the workspace's toolstack installed in each dom0.
//!
//! `lab up` brings its own tools (Debian packages), builds the hypervisor from
//! Debian's Xen source with `xen-patches/` (cached), builds the dom0 image
//! (cached), boots the hosts on copy-on-write overlays and installs the
//! toolstack. Lab tests use [`hosts::LabState`] to reach the hosts, through the
//! helpers in [`testing`].

pub mod bench;
pub mod deb;
pub mod deps;
pub mod guestkit;
pub mod hosts;
pub mod image;
pub mod qmp;
pub mod snapshot;
pub mod testing;
pub mod testrun;
pub mod util;
pub mod xen;

use anyhow::{bail, Context, Result};
use hosts::LabState;
use std::time::{Duration, Instant};
use util::{run_dir, say};

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

/// What `lab up` installs into each dom0.
pub struct Built {
    /// The guest kit's initramfs.
    pub initrd: std::path::PathBuf,
    /// The toolstack's Debian package ([`deb`]).
    pub deb: std::path::PathBuf,
}

/// Builds the toolstack's Debian package and the guest kit (before booting,
/// so the compiler and the TCG hosts do not compete for the two cores).
pub fn build_toolstack() -> Result<Built> {
    let deb = deb::build_release()?;
    let dir = run_dir();
    std::fs::create_dir_all(&dir)?;
    let initrd = guestkit::build(&dir)?;
    Ok(Built { initrd, deb })
}

/// Builds and installs the toolstack into every host, (re)starts xapi-rs
/// and, when asked, waits until it answers.
pub fn deploy(state: &LabState, wait_xapi: bool) -> Result<()> {
    let built = build_toolstack()?;
    install(state, &built, wait_xapi)
}

/// Installs the toolstack package and the guest kit into every host. dom0
/// has no network: apt finds every dependency installed (the image has them).
pub fn install(state: &LabState, built: &Built, wait_xapi: bool) -> Result<()> {
    let name = built
        .deb
        .file_name()
        .context("package path has no name")?
        .to_string_lossy();
    let remote = format!("{}/{name}", deb::DOM0_DIR);
    for h in &state.hosts {
        state.push(h.index, &built.initrd, "/opt/lab/guest/initrd.cpio")?;
        state.exec_ok(
            h.index,
            &guestkit::append_modules_script("/opt/lab/guest/initrd.cpio"),
            Duration::from_secs(60),
        )?;
        // Also what the lab copied in before it installed a package (a
        // lab booted then and redeployed now): /usr/local would shadow it.
        state.exec_ok(
            h.index,
            &format!(
                "rm -rf {} /etc/systemd/system/xapi-rs.service \
                 /etc/systemd/system/multi-user.target.wants/xapi-rs.service \
                 /usr/local/sbin/xapi-rs /usr/local/bin/xe /usr/local/lib/xapi-rs",
                deb::DOM0_DIR
            ),
            Duration::from_secs(60),
        )?;
        state.push(h.index, &built.deb, &remote)?;
        // --reinstall: a rebuilt package of the same version replaces the
        // installed one; the new conffiles win (the lab changes none).
        state.exec_ok(
            h.index,
            &format!(
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall \
                 -o Dpkg::Options::=--force-confnew {remote}"
            ),
            Duration::from_secs(600),
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
    let built = build_toolstack()?;
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
    install(&state, &built, opts.wait_xapi)?;
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
