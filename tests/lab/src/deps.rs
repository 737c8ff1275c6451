//! What the build machine needs, installed through Debian's package registry:
//! the lab brings its own tools up on a fresh Debian 12 machine.

use crate::util::{cache_dir, capture, run_step, say};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Build-machine packages, unpinned.
const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-utils",
    "mmdebstrap",
    "e2fsprogs",
    "dpkg-dev",
    "xz-utils",
    "patch",
    "make",
    "gcc",
    "binutils",
    "libc6-dev",
    "bison",
    "flex",
    "python3",
    "busybox-static",
    "openssh-client",
    "util-linux",
    "procps",
    "clang",
    "libclang-dev",
    "libpam0g-dev",
    "pkg-config",
];

/// The Xen packages, all pinned to the version whose source we build, so the
/// headers we compile against, dom0's tools and the hypervisor all match.
pub const XEN_BINARIES: &[&str] = &[
    "libxen-dev",
    "libxenmisc4.17",
    "libxencall1",
    "libxendevicemodel1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenhypfs1",
    "libxenstore4",
    "libxentoolcore1",
    "libxentoollog1",
];

/// The Xen binaries dom0 needs, pinned likewise.
pub const XEN_DOM0_BINARIES: &[&str] = &[
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "libxenmisc4.17",
    "libxencall1",
    "libxendevicemodel1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenhypfs1",
    "libxenstore4",
    "libxentoolcore1",
    "libxentoollog1",
];

const SRC_LIST: &str = "/etc/apt/sources.list.d/xapi-rs-lab-src.sources";

fn apt_log() -> PathBuf {
    cache_dir().join("logs/apt.log")
}

fn apt_update() -> Result<()> {
    run_step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-q"]),
        &apt_log(),
        Duration::from_secs(600),
    )
}

/// The host's deb822 entries for Debian (from /etc/apt/sources.list.d/*.sources
/// or, failing that, sources.list), as a deb822 text of `kind` entries.
/// We reuse the machine's own mirrors rather than naming any.
pub fn debian_sources(kind: &str) -> Result<String> {
    let mut out = String::new();
    let dir = std::fs::read_dir("/etc/apt/sources.list.d").ok();
    for e in dir.into_iter().flatten().flatten() {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("sources") || p.to_str() == Some(SRC_LIST)
        {
            continue;
        }
        let text = std::fs::read_to_string(&p)?;
        for stanza in text.split("\n\n") {
            let lines: Vec<&str> = stanza
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .collect();
            let is_debian = lines
                .iter()
                .any(|l| l.starts_with("Suites:") && l.contains("bookworm"))
                && lines
                    .iter()
                    .any(|l| l.starts_with("Types:") && l.contains("deb"));
            if !is_debian {
                continue;
            }
            for l in lines {
                if l.starts_with("Types:") {
                    out.push_str(&format!("Types: {kind}\n"));
                } else {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            out.push('\n');
        }
    }
    if out.is_empty() {
        // One-line style sources.list.
        let text = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
        for l in text.lines() {
            let l = l.trim();
            if let Some(rest) = l.strip_prefix("deb ") {
                if rest.contains("bookworm") {
                    let mut parts = rest.split_whitespace();
                    let (uri, suite) = (parts.next(), parts.next());
                    if let (Some(uri), Some(suite)) = (uri, suite) {
                        out.push_str(&format!(
                            "Types: {kind}\nURIs: {uri}\nSuites: {suite}\nComponents: main\n\n"
                        ));
                    }
                }
            }
        }
    }
    if out.is_empty() {
        bail!("found no Debian bookworm entries in the machine's apt sources");
    }
    Ok(out)
}

fn installed_version(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}|${Version}", pkg])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout);
    let (status, ver) = s.split_once('|')?;
    status.ends_with(" installed").then(|| ver.to_string())
}

/// Makes sure the source entries exist; returns whether they were just added.
fn ensure_deb_src() -> Result<bool> {
    let want = debian_sources("deb-src")?;
    if std::fs::read_to_string(SRC_LIST).ok().as_deref() == Some(want.as_str()) {
        return Ok(false);
    }
    std::fs::write(SRC_LIST, want).with_context(|| format!("writing {SRC_LIST}"))?;
    Ok(true)
}

/// The Xen version the lab builds, and the directory holding its source package.
pub struct XenSource {
    pub version: String,
    pub dsc: PathBuf,
}

fn src_dir() -> PathBuf {
    cache_dir().join("src")
}

fn cached_source() -> Option<XenSource> {
    let version = std::fs::read_to_string(src_dir().join("VERSION")).ok()?;
    let version = version.trim().to_string();
    let dsc = src_dir().join(format!(
        "xen_{}.dsc",
        version.split_once(':').map_or(&*version, |v| v.1)
    ));
    dsc.exists().then_some(XenSource { version, dsc })
}

/// Picks the newest Xen version whose source package can be fetched and whose
/// dom0 binaries are available (a security update's source is not always
/// served), and downloads its source.
fn fetch_source() -> Result<XenSource> {
    let showsrc = capture(Command::new("apt-cache").args(["showsrc", "xen"]))?;
    let mut versions: Vec<String> = showsrc
        .lines()
        .filter_map(|l| l.strip_prefix("Version: "))
        .map(|v| v.trim().to_string())
        .filter(|v| v.starts_with("4.17"))
        .collect();
    versions.sort_by(|a, b| {
        let gt = Command::new("dpkg")
            .args(["--compare-versions", a, "gt", b])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if gt {
            std::cmp::Ordering::Less
        } else {
            std::cmp::Ordering::Greater
        }
    });
    versions.dedup();
    let madison = capture(Command::new("apt-cache").args(["madison", "xen-utils-4.17"]))?;
    std::fs::create_dir_all(src_dir())?;
    for v in &versions {
        if !madison.contains(&format!("| {v} |")) {
            say(format!(
                "xen {v}: no dom0 binaries of that version, skipped"
            ));
            continue;
        }
        let ok = run_step(
            &format!("fetch xen {v} source"),
            Command::new("apt-get")
                .args(["source", "-q", "--download-only", &format!("xen={v}")])
                .current_dir(src_dir()),
            &apt_log(),
            Duration::from_secs(600),
        );
        match ok {
            Ok(()) => {
                std::fs::write(src_dir().join("VERSION"), v)?;
                return cached_source().context("source downloaded but .dsc not found");
            }
            Err(e) => say(format!(
                "xen {v}: source not available ({}), trying older",
                first_line(&e)
            )),
        }
    }
    bail!(
        "no Xen 4.17 source package could be fetched (tried {versions:?}); log: {}",
        apt_log().display()
    )
}

fn first_line(e: &anyhow::Error) -> String {
    e.to_string().lines().next().unwrap_or("").to_string()
}

/// Installs what the build machine lacks, and returns the Xen source to build.
/// With everything in place this makes no network call.
pub fn ensure() -> Result<XenSource> {
    let mut updated = false;
    if ensure_deb_src()? {
        apt_update()?;
        updated = true;
    }
    let src = match cached_source() {
        Some(s) => s,
        None => {
            if !updated {
                apt_update()?;
                updated = true;
            }
            fetch_source()?
        }
    };
    let mut missing: Vec<String> = HOST_PACKAGES
        .iter()
        .filter(|p| installed_version(p).is_none())
        .map(|p| p.to_string())
        .collect();
    for p in XEN_BINARIES {
        if installed_version(p).as_deref() != Some(src.version.as_str()) {
            missing.push(format!("{p}={}", src.version));
        }
    }
    if !missing.is_empty() {
        if !updated {
            apt_update()?;
        }
        say(format!("installing {}", missing.join(" ")));
        run_step(
            "apt-get install",
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "--allow-downgrades",
                ])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &apt_log(),
            Duration::from_secs(1200),
        )?;
    }
    Ok(src)
}
