//! `lab deb`: the toolstack as one Debian package,
//! `target/debian/xapi-rs_VERSION_ARCH.deb`, which the lab installs into
//! every dom0 (`apt install ./xapi-rs_*.deb`) and anyone can install on a
//! Debian dom0.
//!
//! The package is assembled here, as a staging tree handed to
//! `dpkg-deb --root-owner-group --build`, rather than with cargo-deb:
//! dpkg-deb (and dpkg-shlibdeps, for the shared-library dependencies) is on
//! every Debian build machine, so there is nothing to install. The files it
//! carries besides the binaries live in `packaging/`, their one source.

use crate::util::{capture, run_step, say};
use anyhow::{bail, Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const PACKAGE: &str = "xapi-rs";

/// Where the lab puts the package in dom0 before installing it.
pub const DOM0_DIR: &str = "/opt/lab/deb";

/// Where a file of the package comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Content {
    /// A release binary: (cargo package, binary name).
    Built(&'static str, &'static str),
    /// A file of `packaging/`.
    Text(&'static str),
}

/// One file the package installs.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub path: &'static str,
    pub mode: u32,
    pub content: Content,
}

const fn built(path: &'static str, pkg: &'static str, bin: &'static str) -> Item {
    Item {
        path,
        mode: 0o755,
        content: Content::Built(pkg, bin),
    }
}

const fn text(path: &'static str, content: &'static str) -> Item {
    Item {
        path,
        mode: 0o644,
        content: Content::Text(content),
    }
}

/// Everything the package installs.
pub const ITEMS: &[Item] = &[
    built("/usr/sbin/xapi-rs", "xapi-rs", "xapi-rs"),
    built("/usr/bin/xe", "xe", "xe"),
    built(dom0_support::XENGUEST, "xenguest", "xenguest"),
    text(
        "/lib/systemd/system/xapi-rs.service",
        include_str!("../../../packaging/xapi-rs.service"),
    ),
    text(
        "/etc/pam.d/xapi",
        include_str!("../../../packaging/pam.d-xapi"),
    ),
    text(
        "/etc/xensource/xapi-rs.conf",
        include_str!("../../../packaging/xapi-rs.conf"),
    ),
    text(
        "/etc/bash_completion.d/xe",
        include_str!("../../../packaging/xe.bash-completion"),
    ),
];

/// Maintainer scripts (`DEBIAN/NAME`). None of them touches a guest.
const SCRIPTS: &[(&str, &str)] = &[
    ("postinst", include_str!("../../../packaging/postinst")),
    ("prerm", include_str!("../../../packaging/prerm")),
    ("postrm", include_str!("../../../packaging/postrm")),
];

/// Dependencies beyond the shared libraries (dpkg-shlibdeps finds those:
/// libxenctrl & co, libpam0g, libc6): `xl`, which the daemon runs, and the
/// PAM configuration and modules `/etc/pam.d/xapi` includes.
const DEPENDS: &str = "xen-utils-4.17 | xen-utils, libpam-runtime, libpam-modules";

/// Debian's former packages of the reference: they own `/usr/bin/xe`,
/// `/etc/pam.d/xapi` and the XenAPI ports.
const CONFLICTS: &str = "xcp-xapi, xcp-xe";

/// The cargo packages whose binaries the package carries.
pub fn cargo_packages() -> Vec<&'static str> {
    let mut v: Vec<&str> = ITEMS
        .iter()
        .filter_map(|i| match i.content {
            Content::Built(pkg, _) => Some(pkg),
            Content::Text(_) => None,
        })
        .collect();
    v.dedup();
    v
}

/// The package's conffiles: everything under /etc (as debhelper marks them),
/// so dpkg keeps a changed setting across upgrades and removes them on purge.
pub fn conffiles() -> Vec<&'static str> {
    ITEMS
        .iter()
        .map(|i| i.path)
        .filter(|p| p.starts_with("/etc/"))
        .collect()
}

/// A Debian version from a cargo one: a pre-release (`1.0.0-rc.1`) sorts
/// before its release in Debian only with `~`.
pub fn debian_version(cargo: &str) -> String {
    cargo.replacen('-', "~", 1)
}

/// The fields of `DEBIAN/control` that vary.
pub struct Control<'a> {
    pub version: &'a str,
    pub arch: &'a str,
    /// From dpkg-shlibdeps; may be empty.
    pub shlibs: &'a str,
    pub installed_size_kib: u64,
}

/// The text of `DEBIAN/control`.
pub fn control(c: &Control) -> String {
    let depends = [c.shlibs.trim(), DEPENDS]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "Package: {PACKAGE}\n\
         Version: {}\n\
         Architecture: {}\n\
         Maintainer: xapi-rs developers <xapi-rs@localhost>\n\
         Installed-Size: {}\n\
         Depends: {depends}\n\
         Conflicts: {CONFLICTS}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: XenAPI toolstack for Xen, in Rust (drop-in for xapi)\n \
         The xapi-rs daemon (XenAPI over JSON-RPC and XML-RPC, HTTPS, HTTP and a\n \
         local socket), the xe command line with its bash completion, and\n \
         xenguest (save, restore and live migration of PV guests).\n",
        c.version, c.arch, c.installed_size_kib
    )
}

/// Writes the package's files under `root` (binaries from `release`,
/// without their debug info) and returns the binaries' staged paths.
pub fn stage(root: &Path, release: &Path) -> Result<Vec<PathBuf>> {
    if root.exists() {
        std::fs::remove_dir_all(root).with_context(|| format!("clearing {}", root.display()))?;
    }
    let mut bins = vec![];
    for item in ITEMS {
        let dest = root.join(item.path.trim_start_matches('/'));
        mkdirs(root, dest.parent().unwrap_or(root))?;
        match item.content {
            Content::Built(_, bin) => {
                let src = release.join(bin);
                capture(
                    Command::new("strip")
                        .arg("--strip-debug")
                        .arg("-o")
                        .arg(&dest)
                        .arg(&src),
                )
                .with_context(|| format!("staging {}", src.display()))?;
                bins.push(dest.clone());
            }
            Content::Text(t) => std::fs::write(&dest, t)?,
        }
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(item.mode))?;
    }
    let debian = root.join("DEBIAN");
    mkdirs(root, &debian)?;
    for (name, body) in SCRIPTS {
        let p = debian.join(name);
        std::fs::write(&p, body)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    let conf: String = conffiles().iter().map(|c| format!("{c}\n")).collect();
    std::fs::write(debian.join("conffiles"), conf)?;
    std::fs::write(debian.join("md5sums"), md5sums(root)?)?;
    Ok(bins)
}

/// `DEBIAN/md5sums` as dh_md5sums writes it: `md5  path` (relative to
/// the root) for every shipped file but the conffiles, whose sums dpkg
/// keeps itself; `debsums` and `dpkg --verify` check installs against it.
fn md5sums(root: &Path) -> Result<String> {
    let conf = conffiles();
    let mut c = Command::new("md5sum");
    c.current_dir(root);
    for i in ITEMS.iter().filter(|i| !conf.contains(&i.path)) {
        c.arg(i.path.trim_start_matches('/'));
    }
    capture(&mut c).context("md5sum of the staged files")
}

/// `create_dir_all` with mode 0755 for every directory made below `root`
/// (dpkg-deb rejects a DEBIAN directory with other modes, and the tree's
/// modes are what gets installed whatever the umask).
fn mkdirs(root: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut d = dir;
    while d.starts_with(root) {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        match d.parent() {
            Some(p) => d = p,
            None => break,
        }
    }
    Ok(())
}

/// Installed-Size as dpkg counts it: KiB per file, rounded up, 1 per directory.
fn installed_size_kib(root: &Path) -> Result<u64> {
    fn walk(d: &Path, top: bool) -> Result<u64> {
        let mut n = 0;
        for e in std::fs::read_dir(d)? {
            let e = e?;
            if top && e.file_name() == "DEBIAN" {
                continue;
            }
            let m = e.metadata()?;
            n += if m.is_dir() {
                1 + walk(&e.path(), false)?
            } else {
                m.len().div_ceil(1024)
            };
        }
        Ok(n)
    }
    walk(root, true)
}

/// The shared-library dependencies of `bins` (`dpkg-shlibdeps`, run in
/// `work`, which holds the minimal `debian/control` it wants).
fn shlibs_depends(work: &Path, bins: &[PathBuf]) -> Result<String> {
    std::fs::create_dir_all(work.join("debian"))?;
    std::fs::write(
        work.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let mut c = Command::new("dpkg-shlibdeps");
    c.arg("-O").current_dir(work);
    for b in bins {
        c.arg(format!("-e{}", b.display()));
    }
    let out = capture(&mut c).context("dpkg-shlibdeps (package dpkg-dev)")?;
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {out:?}"))
}

/// The version of the cargo package `xapi-rs` (the workspace's version).
fn cargo_version() -> Result<String> {
    let out = crate::util::cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == PACKAGE)
        .and_then(|p| p["version"].as_str())
        .map(str::to_string)
        .context("cargo metadata lists no xapi-rs package")
}

/// Packages the release binaries in `release` as
/// `out/xapi-rs_VERSION_ARCH.deb`, with `out/build` as the work area.
pub fn package(release: &Path, out: &Path) -> Result<PathBuf> {
    let version = debian_version(&cargo_version()?);
    let arch = capture(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let work = out.join("build");
    // debhelper's layout (debian/PACKAGE), where dpkg-shlibdeps expects
    // the binaries it looks at.
    let root = work.join("debian").join(PACKAGE);
    let bins = stage(&root, release)?;
    let shlibs = shlibs_depends(&work, &bins)?;
    let ctl = control(&Control {
        version: &version,
        arch: &arch,
        shlibs: &shlibs,
        installed_size_kib: installed_size_kib(&root)?,
    });
    std::fs::write(root.join("DEBIAN/control"), ctl)?;
    let deb = out.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    run_step(
        "build the Debian package (dpkg-deb)",
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&root)
            .arg(&deb),
        &work.join("dpkg-deb.log"),
        Duration::from_secs(600),
    )?;
    Ok(deb)
}

/// Where `lab deb` writes the package.
pub fn out_dir() -> PathBuf {
    crate::guestkit::target_dir().join("debian")
}

/// `lab deb`: installs what the build needs, then [`build_release`].
pub fn build() -> Result<PathBuf> {
    crate::deps::ensure().context("installing the build machine's packages")?;
    build_release()
}

/// `cargo build --release` of the packages whose binaries the package
/// carries: also how the lab's tests get a release `xe`, so that they share
/// its artifacts (one feature resolution, one build).
pub fn release_build_command() -> Command {
    let mut c = crate::util::cargo();
    c.args(["build", "--release"]);
    for p in cargo_packages() {
        c.args(["-p", p]);
    }
    c
}

/// Builds the release binaries and packages them.
pub fn build_release() -> Result<PathBuf> {
    let out = out_dir();
    std::fs::create_dir_all(&out)?;
    run_step(
        "build toolstack (release)",
        &mut release_build_command(),
        &out.join("build.log"),
        Duration::from_secs(3600),
    )?;
    let deb = package(&crate::guestkit::target_dir().join("release"), &out)?;
    say(format!("package: {}", deb.display()));
    Ok(deb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_carries_the_toolstack_and_its_configuration() {
        let paths: Vec<&str> = ITEMS.iter().map(|i| i.path).collect();
        assert_eq!(
            paths,
            [
                "/usr/sbin/xapi-rs",
                "/usr/bin/xe",
                "/usr/lib/xapi-rs/xenguest",
                "/lib/systemd/system/xapi-rs.service",
                "/etc/pam.d/xapi",
                "/etc/xensource/xapi-rs.conf",
                "/etc/bash_completion.d/xe",
            ]
        );
        assert_eq!(cargo_packages(), ["xapi-rs", "xe", "xenguest"]);
        assert_eq!(
            conffiles(),
            [
                "/etc/pam.d/xapi",
                "/etc/xensource/xapi-rs.conf",
                "/etc/bash_completion.d/xe"
            ]
        );
        for i in ITEMS {
            let exe = matches!(i.content, Content::Built(..));
            assert_eq!(i.mode, if exe { 0o755 } else { 0o644 }, "{}", i.path);
        }
    }

    #[test]
    fn the_unit_starts_the_packaged_daemon_and_stops_only_it() {
        let Some(Content::Text(unit)) = ITEMS
            .iter()
            .find(|i| i.path.ends_with("xapi-rs.service"))
            .map(|i| i.content)
        else {
            panic!("no unit");
        };
        let lines: Vec<&str> = unit.lines().map(str::trim).collect();
        assert!(lines.contains(&"KillMode=process"));
        assert!(lines.contains(&"ExecStart=/usr/sbin/xapi-rs $XAPI_RS_OPTIONS"));
        assert!(lines.contains(&"EnvironmentFile=-/etc/xensource/xapi-rs.conf"));
    }

    #[test]
    fn maintainer_scripts_never_delete_the_database_by_default() {
        for (name, body) in SCRIPTS {
            assert!(body.starts_with("#!/bin/sh\n"), "{name}");
            for l in body.lines().filter(|l| l.contains("/var/lib/xapi-rs")) {
                let l = l.trim();
                assert!(
                    !l.starts_with("rm") || name == &"postrm",
                    "{name} removes the database: {l}"
                );
            }
            assert!(!body.contains("xl destroy") && !body.contains("xl shutdown"));
        }
        let postrm = SCRIPTS.iter().find(|(n, _)| *n == "postrm").unwrap().1;
        let purge_db = postrm
            .lines()
            .position(|l| l.trim() == "rm -rf /var/lib/xapi-rs")
            .expect("purge can delete the database on request");
        let guard = postrm.lines().nth(purge_db - 1).unwrap();
        assert!(guard.contains("XAPI_RS_PURGE_DATABASE:-no"), "{guard}");
    }

    #[test]
    fn versions_sort_as_debian_expects() {
        assert_eq!(debian_version("0.1.0"), "0.1.0");
        assert_eq!(debian_version("1.0.0-rc.1"), "1.0.0~rc.1");
    }

    #[test]
    fn control_file_fields() {
        let c = control(&Control {
            version: "0.1.0",
            arch: "amd64",
            shlibs: "libc6 (>= 2.36), libxenmisc4.17 (>= 4.17.5)",
            installed_size_kib: 1234,
        });
        let field = |k: &str| {
            c.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                .unwrap_or_else(|| panic!("no {k} in\n{c}"))
        };
        assert_eq!(field("Package"), "xapi-rs");
        assert_eq!(field("Version"), "0.1.0");
        assert_eq!(field("Architecture"), "amd64");
        assert_eq!(field("Installed-Size"), "1234");
        assert_eq!(
            field("Depends"),
            "libc6 (>= 2.36), libxenmisc4.17 (>= 4.17.5), xen-utils-4.17 | xen-utils, libpam-runtime, libpam-modules"
        );
        assert_eq!(field("Conflicts"), "xcp-xapi, xcp-xe");
        // Continuation lines of the description start with a space, and
        // there is no empty line (that would end the paragraph).
        assert!(c.ends_with('\n') && !c.contains("\n\n"));
        for l in c.lines() {
            assert!(l.starts_with(' ') || l.contains(": "), "bad line {l:?}");
        }
        let no_shlibs = control(&Control {
            version: "0.1.0",
            arch: "amd64",
            shlibs: "",
            installed_size_kib: 1,
        });
        assert!(no_shlibs.contains("\nDepends: xen-utils-4.17 | xen-utils,"));
    }

    /// Stages fake binaries and builds a package of them with dpkg-deb (on
    /// every Debian machine), then reads it back as dpkg sees it.
    #[test]
    fn a_staged_tree_builds_into_the_package_dpkg_reads() {
        let dir = std::env::temp_dir().join(format!("lab-deb-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let release = dir.join("release");
        std::fs::create_dir_all(&release).unwrap();
        // strip needs an object file: a copy of a real executable.
        for (_, bin) in ITEMS.iter().filter_map(|i| match i.content {
            Content::Built(p, b) => Some((p, b)),
            _ => None,
        }) {
            std::fs::copy("/bin/true", release.join(bin)).unwrap();
        }
        let root = dir.join("root");
        let bins = stage(&root, &release).unwrap();
        assert_eq!(bins.len(), 3);
        let size = installed_size_kib(&root).unwrap();
        assert!(size > 0);
        std::fs::write(
            root.join("DEBIAN/control"),
            control(&Control {
                version: "0.1.0",
                arch: "all",
                shlibs: "",
                installed_size_kib: size,
            }),
        )
        .unwrap();
        let deb = dir.join("t.deb");
        capture(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "--build"])
                .arg(&root)
                .arg(&deb),
        )
        .unwrap();
        let contents = capture(Command::new("dpkg-deb").arg("--contents").arg(&deb)).unwrap();
        for i in ITEMS {
            let mode = if i.mode == 0o755 {
                "-rwxr-xr-x"
            } else {
                "-rw-r--r--"
            };
            let line = contents
                .lines()
                .find(|l| l.ends_with(&format!(".{}", i.path)))
                .unwrap_or_else(|| panic!("{} missing:\n{contents}", i.path));
            assert!(line.starts_with(&format!("{mode} root/root")), "{line}");
        }
        let conf = capture(Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --ctrl-tarfile {} | tar -xOf - ./conffiles",
            deb.display()
        )))
        .unwrap();
        assert_eq!(conf.lines().collect::<Vec<_>>(), conffiles());
        // md5sums: every file but the conffiles, and the sums hold.
        let sums = capture(Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --ctrl-tarfile {} | tar -xOf - ./md5sums",
            deb.display()
        )))
        .unwrap();
        let listed: Vec<&str> = sums.lines().map(|l| &l[34..]).collect();
        for i in ITEMS {
            let rel = i.path.trim_start_matches('/');
            assert_eq!(
                listed.contains(&rel),
                !conffiles().contains(&i.path),
                "{rel} in md5sums:\n{sums}"
            );
        }
        let check = Command::new("md5sum")
            .args(["-c", "--quiet", "-"])
            .current_dir(&root)
            .stdin(std::fs::File::open(root.join("DEBIAN/md5sums")).unwrap())
            .output()
            .unwrap();
        assert!(check.status.success(), "{check:?}");
        let info = capture(Command::new("dpkg-deb").arg("--info").arg(&deb)).unwrap();
        for s in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
            assert!(info.contains(s), "{s} missing:\n{info}");
        }
        assert_eq!(
            capture(
                Command::new("dpkg-deb")
                    .args(["-f"])
                    .arg(&deb)
                    .arg("Package")
            )
            .unwrap(),
            "xapi-rs\n"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
