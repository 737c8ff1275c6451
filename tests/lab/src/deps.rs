//! What the build machine needs, installed through Debian's package registry:
//! the lab brings its own tools up on a fresh Debian 12 machine.

use crate::util::{cache_dir, capture, run_step, say};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
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
    // The client tests: a venv for PyPI's XenAPI, curl for HTTPS checks.
    "python3-venv",
    "curl",
    "busybox-static",
    "openssh-client",
    "util-linux",
    "procps",
    "clang",
    "libclang-dev",
    "libpam0g-dev",
    "pkg-config",
    "cpio",
];

/// Packages requested only when their tool is not on `PATH`: a machine may
/// carry its own Node.js with npm (NodeSource's `nodejs` bundles npm and
/// conflicts with Debian's `npm`). The npm client test needs both.
const IF_MISSING: &[(&str, &str)] = &[("node", "nodejs"), ("npm", "npm")];

/// The [`IF_MISSING`] packages whose tool `path` lacks.
fn missing_tool_packages(path: &str) -> Vec<&'static str> {
    IF_MISSING
        .iter()
        .filter(|(tool, _)| !std::env::split_paths(path).any(|d| is_executable(&d.join(tool))))
        .map(|(_, pkg)| *pkg)
        .collect()
}

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

impl XenSource {
    /// The upstream tarball beside the `.dsc`.
    pub fn orig_tarball(&self) -> Option<PathBuf> {
        std::fs::read_dir(self.dsc.parent()?)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(".orig.tar.xz"))
            })
    }
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

/// Packages that must be installed at one version: apt would otherwise keep a
/// newer `qemu-utils` (from backports) and satisfy `qemu-system-x86` by
/// removing it. The first names the version the others follow.
const LOCKSTEP: &[&str] = &["qemu-system-x86", "qemu-utils"];

/// What the lab runs or builds against, and the package that provides it.
/// Checked after every install, so a set-up cannot half-succeed silently.
pub const REQUIRED: &[(Need, &str)] = &[
    (Need::Tool("qemu-system-x86_64"), "qemu-system-x86"),
    (Need::Tool("qemu-img"), "qemu-utils"),
    (Need::Tool("mmdebstrap"), "mmdebstrap"),
    (Need::Tool("mke2fs"), "e2fsprogs"),
    (Need::Tool("dpkg-source"), "dpkg-dev"),
    (Need::Tool("dpkg-deb"), "dpkg"),
    (Need::Tool("xz"), "xz-utils"),
    (Need::Tool("patch"), "patch"),
    (Need::Tool("make"), "make"),
    (Need::Tool("gcc"), "gcc"),
    (Need::Tool("strip"), "binutils"),
    (Need::Tool("bison"), "bison"),
    (Need::Tool("flex"), "flex"),
    (Need::Tool("python3"), "python3"),
    (Need::Tool("curl"), "curl"),
    (Need::Tool("node"), "nodejs"),
    (Need::Tool("npm"), "npm"),
    (Need::Tool("busybox"), "busybox-static"),
    (Need::Tool("cpio"), "cpio"),
    (Need::Tool("ssh"), "openssh-client"),
    (Need::Tool("ssh-keygen"), "openssh-client"),
    (Need::Tool("chroot"), "coreutils"),
    (Need::Tool("pgrep"), "procps"),
    (Need::Tool("clang"), "clang"),
    (Need::Tool("pkg-config"), "pkg-config"),
    (
        Need::File("/usr/include/security/pam_appl.h"),
        "libpam0g-dev",
    ),
    (Need::File("/usr/include/xenctrl.h"), "libxen-dev"),
    // bindgen loads libclang; Debian 12's libclang-dev is LLVM 14.
    (
        Need::File("/usr/lib/llvm-14/lib/libclang.so"),
        "libclang-dev",
    ),
];

/// One thing [`REQUIRED`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A program found on `PATH`.
    Tool(&'static str),
    /// A file at a fixed path (headers the build compiles against).
    File(&'static str),
}

/// Where each requirement is found; an error naming every missing one and its
/// package. `path` is a `PATH`-style list, `root` prefixes [`Need::File`]
/// paths (both parameters so the check can be tested without a fresh machine).
pub fn verify(path: &str, root: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for (need, pkg) in REQUIRED {
        let at = match need {
            Need::Tool(t) => std::env::split_paths(path)
                .map(|d| d.join(t))
                .find(|p| is_executable(p)),
            Need::File(f) => {
                let p = root.join(f.trim_start_matches('/'));
                p.is_file().then_some(p)
            }
        };
        match at {
            Some(p) => found.push(format!("{need:?} at {} ({pkg})", p.display())),
            None => missing.push(format!("{need:?} (package {pkg})")),
        }
    }
    if !missing.is_empty() {
        bail!(
            "the build machine lacks what the lab needs: {}; install the package(s) with apt-get",
            missing.join(", ")
        );
    }
    Ok(found)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn candidate_version(pkg: &str) -> Result<String> {
    let out = capture(Command::new("apt-cache").args(["policy", pkg]))?;
    out.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate: "))
        .filter(|v| *v != "(none)")
        .map(str::to_string)
        .with_context(|| format!("apt has no candidate version of {pkg}"))
}

/// The install request: every package the lab needs (installed or not, so
/// apt resolves them together), the lockstep ones at one version, the Xen
/// libraries at the source's version.
fn install_request(lockstep_version: &str, xen_version: &str, extra: &[&str]) -> Vec<String> {
    let mut req: Vec<String> = HOST_PACKAGES
        .iter()
        .map(|p| {
            if LOCKSTEP.contains(p) {
                format!("{p}={lockstep_version}")
            } else {
                p.to_string()
            }
        })
        .collect();
    req.extend(XEN_BINARIES.iter().map(|p| format!("{p}={xen_version}")));
    req.extend(extra.iter().map(|p| p.to_string()));
    req
}

/// Whether the machine already has everything at acceptable versions.
fn satisfied(xen_version: &str) -> bool {
    let host_ok = HOST_PACKAGES.iter().all(|p| installed_version(p).is_some());
    let lock: Vec<Option<String>> = LOCKSTEP.iter().map(|p| installed_version(p)).collect();
    let lock_ok = lock.iter().all(|v| v.is_some() && *v == lock[0]);
    let xen_ok = XEN_BINARIES
        .iter()
        .all(|p| installed_version(p).as_deref() == Some(xen_version));
    host_ok && lock_ok && xen_ok
}

/// Installs what the build machine lacks, verifies that every tool is there,
/// and returns the Xen source to build. With everything in place this makes
/// no network call.
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
    let path = std::env::var("PATH").unwrap_or_default();
    // root's tools live in sbin, which a plain user's PATH may lack.
    let path = format!("{path}:/usr/local/sbin:/usr/sbin:/sbin");
    let extra = missing_tool_packages(&path);
    if !satisfied(&src.version) || !extra.is_empty() {
        if !updated {
            apt_update()?;
        }
        let req = install_request(&candidate_version(LOCKSTEP[0])?, &src.version, &extra);
        say(format!("installing (one transaction) {}", req.join(" ")));
        // --no-remove: apt aborts rather than remove a package to make room
        // (how qemu-utils once disappeared); the lockstep pins avoid the need.
        run_step(
            "apt-get install",
            Command::new("apt-get")
                .args([
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    "--allow-downgrades",
                    "--no-remove",
                ])
                .args(&req)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            &apt_log(),
            Duration::from_secs(1200),
        )?;
    }
    let found = verify(&path, Path::new("/"))?;
    let log = cache_dir().join("logs/setup.log");
    std::fs::create_dir_all(cache_dir().join("logs"))?;
    std::fs::write(
        &log,
        found
            .iter()
            .map(|l| format!("verified {l}\n"))
            .collect::<String>(),
    )
    .with_context(|| format!("writing {}", log.display()))?;
    say(format!(
        "set-up verified: {} tools and headers present (list in {})",
        found.len(),
        log.display()
    ));
    Ok(src)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root() -> tempdir::Dir {
        let d = tempdir::Dir::new();
        let bin = d.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for (need, _) in REQUIRED {
            match need {
                Need::Tool(t) => {
                    let p = bin.join(t);
                    std::fs::write(&p, "#!/bin/sh\n").unwrap();
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
                }
                Need::File(f) => {
                    let p = d.path().join(f.trim_start_matches('/'));
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(&p, "").unwrap();
                }
            }
        }
        d
    }

    #[test]
    fn verify_passes_when_everything_is_there() {
        let d = fake_root();
        let path = d.path().join("bin");
        let found = verify(path.to_str().unwrap(), d.path()).unwrap();
        assert_eq!(found.len(), REQUIRED.len());
    }

    #[test]
    fn verify_names_the_package_of_a_missing_qemu_img() {
        let d = fake_root();
        std::fs::remove_file(d.path().join("bin/qemu-img")).unwrap();
        std::fs::remove_file(d.path().join("usr/include/xenctrl.h")).unwrap();
        let path = d.path().join("bin");
        let e = verify(path.to_str().unwrap(), d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("Tool(\"qemu-img\") (package qemu-utils)"), "{e}");
        assert!(
            e.contains("File(\"/usr/include/xenctrl.h\") (package libxen-dev)"),
            "{e}"
        );
        assert!(!e.contains("mmdebstrap"), "{e}");
    }

    #[test]
    fn a_non_executable_file_is_not_a_tool() {
        let d = fake_root();
        use std::os::unix::fs::PermissionsExt;
        let p = d.path().join("bin/qemu-img");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = d.path().join("bin");
        assert!(verify(path.to_str().unwrap(), d.path()).is_err());
    }

    #[test]
    fn the_request_names_every_package_and_pins_the_qemu_family() {
        let req = install_request("1:7.2", "4.17.5", &["npm"]);
        assert_eq!(req.len(), HOST_PACKAGES.len() + XEN_BINARIES.len() + 1);
        assert!(req.contains(&"npm".to_string()));
        assert!(req.contains(&"qemu-system-x86=1:7.2".to_string()));
        assert!(req.contains(&"qemu-utils=1:7.2".to_string()));
        assert!(req.contains(&"mmdebstrap".to_string()));
        assert!(req.contains(&"libxen-dev=4.17.5".to_string()));
    }

    #[test]
    fn tool_packages_are_requested_only_when_the_tool_is_missing() {
        let d = fake_root();
        let bin = d.path().join("bin");
        assert!(missing_tool_packages(bin.to_str().unwrap()).is_empty());
        std::fs::remove_file(bin.join("npm")).unwrap();
        assert_eq!(missing_tool_packages(bin.to_str().unwrap()), ["npm"]);
    }

    #[test]
    fn every_required_package_is_requested() {
        for (_, pkg) in REQUIRED {
            let ok = HOST_PACKAGES.contains(pkg)
                || XEN_BINARIES.contains(pkg)
                || IF_MISSING.iter().any(|(_, p)| p == pkg)
                || ["dpkg", "coreutils"].contains(pkg); // essential packages
            assert!(ok, "{pkg} is verified but never installed");
        }
    }

    /// A throwaway directory (the lab crate takes no dev-dependencies beyond
    /// what a bare machine builds).
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "lab-deps-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
