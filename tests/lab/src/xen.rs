//! The lab hypervisor: Debian's Xen source with our config and patches
//! (`xen-patches/`), cached by the source version and those files.

use crate::deps::XenSource;
use crate::util::{cache_dir, hash_key, run_step, say, workspace_root};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Changing how we build changes this, so old caches are not reused.
const RECIPE: &str = "xen-build-v1 XEN_VENDORVERSION=-xapirslab";

/// `xl info` in a lab dom0 shows this in `xen_extra`: the proof it runs our build.
pub const VENDOR_VERSION: &str = "-xapirslab";

fn patch_files() -> Result<Vec<(String, Vec<u8>)>> {
    let dir = workspace_root().join("xen-patches");
    let mut v = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".patch") || name.ends_with(".config") {
            v.push((name, std::fs::read(&p)?));
        }
    }
    v.sort();
    Ok(v)
}

/// Builds (or finds in the cache) the hypervisor; returns the multiboot ELF.
pub fn build(src: &XenSource) -> Result<PathBuf> {
    let patches = patch_files()?;
    let mut parts: Vec<&[u8]> = vec![RECIPE.as_bytes(), src.version.as_bytes()];
    for (n, c) in &patches {
        parts.push(n.as_bytes());
        parts.push(c);
    }
    let key = hash_key(&parts);
    let out = cache_dir().join(format!("xen-{key}"));
    let xen = out.join("xen");
    if xen.exists() {
        say(format!("hypervisor: cached {}", xen.display()));
        return Ok(xen);
    }
    let work = cache_dir().join(format!("build-xen-{key}-{}", std::process::id()));
    let log = cache_dir().join(format!("logs/xen-{key}.log"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let tree = work.join("xen");
    run_step(
        "unpack xen source",
        Command::new("dpkg-source")
            .arg("-x")
            .arg(&src.dsc)
            .arg(&tree),
        &log,
        Duration::from_secs(300),
    )?;
    let mut config = std::fs::read_to_string(tree.join("debian/xen-kconfig"))
        .context("debian/xen-kconfig missing from the source package")?;
    for (name, content) in &patches {
        if name.ends_with(".config") {
            config.push('\n');
            config.push_str(&String::from_utf8_lossy(content));
        }
    }
    std::fs::write(tree.join("xen/.config"), config)?;
    for (name, _) in patches.iter().filter(|(n, _)| n.ends_with(".patch")) {
        run_step(
            &format!("apply {name}"),
            Command::new("patch")
                .args(["-p1", "-i"])
                .arg(workspace_root().join("xen-patches").join(name))
                .current_dir(&tree),
            &log,
            Duration::from_secs(60),
        )?;
    }
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    run_step(
        "configure hypervisor",
        Command::new("make")
            .args(["-C", "xen", "olddefconfig", "XEN_TARGET_ARCH=x86_64"])
            .current_dir(&tree),
        &log,
        Duration::from_secs(300),
    )?;
    let cfg = std::fs::read_to_string(tree.join("xen/.config"))?;
    for (name, content) in patches.iter().filter(|(n, _)| n.ends_with(".config")) {
        for line in String::from_utf8_lossy(content).lines() {
            let line = line.trim();
            if line.starts_with("CONFIG_") && !cfg.lines().any(|l| l.trim() == line) {
                bail!("{name}: '{line}' did not survive olddefconfig (a missing dependency?); log: {}", log.display());
            }
        }
    }
    run_step(
        "build hypervisor",
        Command::new("make")
            .arg(format!("-j{jobs}"))
            .args([
                "XEN_TARGET_ARCH=x86_64",
                &format!("XEN_VENDORVERSION={VENDOR_VERSION}"),
                "xen",
            ])
            .current_dir(&tree),
        &log,
        Duration::from_secs(1800),
    )?;
    // Per process: two labs (two worktrees) may build the same key at once.
    let tmp = cache_dir().join(format!("xen-{key}.tmp{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    std::fs::copy(tree.join("xen/xen"), tmp.join("xen"))?;
    std::fs::copy(tree.join("xen/xen.gz"), tmp.join("xen.gz"))?;
    std::fs::copy(tree.join("xen/.config"), tmp.join("config"))?;
    if std::fs::rename(&tmp, &out).is_err() && out.exists() {
        // Another lab finished the same build first: use theirs.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let _ = std::fs::remove_dir_all(&work);
    crate::util::prune_cache("xen", &out);
    Ok(xen)
}
