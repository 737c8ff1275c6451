//! `lab test`: the whole suite. Formatting and lints, the workspace's unit
//! tests, then on real Xen: the test binaries that must run inside dom0 (crates
//! with `[package.metadata.lab] dom0-tests = true`, their `#[ignore]`d tests)
//! and the black-box lab tests in `tests/lab/tests/` (likewise `#[ignore]`d),
//! first on one host (those named `fresh_host*` each on a freshly booted
//! one), then those named `two_hosts*` on two.

use crate::hosts::{self, LabState};
use crate::util::{say, workspace_root};
use crate::UpOptions;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Default, Debug, PartialEq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Tests that printed `skipped: NAME (reason)`: they count as passed
    /// in libtest's line too, so they are subtracted from `passed`.
    pub skipped: u64,
    /// Phases that could not run at all (a build or the lab failed).
    pub broken: Vec<String>,
}

impl Tally {
    /// Adds the `test result:` lines of libtest output.
    pub fn add_output(&mut self, text: &str) {
        let mut skipped = 0;
        for line in text.lines() {
            if line.starts_with("skipped: ") {
                skipped += 1;
                continue;
            }
            let Some(rest) = line.trim().strip_prefix("test result: ") else {
                continue;
            };
            for part in rest.split(';') {
                let part = part
                    .trim()
                    .trim_start_matches("ok.")
                    .trim_start_matches("FAILED.");
                let mut it = part.split_whitespace();
                if let (Some(n), Some(what)) = (it.next(), it.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => self.passed += n,
                        "failed" => self.failed += n,
                        "ignored" => self.ignored += n,
                        _ => {}
                    }
                }
            }
        }
        self.skipped += skipped;
        self.passed = self.passed.saturating_sub(skipped);
    }
}

/// Runs a command, echoing its stdout while keeping it for the tally.
fn run_echo(phase: &str, cmd: &mut Command, tally: &mut Tally) -> Result<bool> {
    say(format!("== {phase}"));
    let mut child = cmd
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("{phase}: cannot start {:?}", cmd.get_program()))?;
    let mut all = String::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.unwrap_or_default();
            println!("{line}");
            all.push_str(&line);
            all.push('\n');
        }
    }
    let ok = child.wait()?.success();
    tally.add_output(&all);
    if !ok && !all.contains("test result:") {
        tally.broken.push(phase.to_string());
    }
    Ok(ok)
}

fn cargo() -> Command {
    Command::new(env!("CARGO"))
}

/// Test executables of the packages whose tests must run in dom0.
/// A test binary to run inside dom0.
struct Dom0Tests {
    /// "target (manifest)", for the log.
    name: String,
    exe: PathBuf,
    /// Listed in the package's `[package.metadata.lab] fresh-host`: it
    /// live-migrates and gets a freshly booted host of its own, so what it
    /// leaves behind cannot affect other tests.
    fresh_host: bool,
}

fn dom0_test_binaries() -> Result<Vec<Dom0Tests>> {
    let meta = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()?;
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout)?;
    let mut pkgs = vec![];
    let mut manifests = vec![];
    let mut fresh: Vec<String> = vec![];
    // (manifest, targets) of packages that list their dom0 test targets in
    // `dom0-targets`: only those are pushed (a crate with many other test
    // binaries need not send them all to dom0 to run none of them).
    let mut only: Vec<(String, Vec<String>)> = vec![];
    for p in meta["packages"].as_array().into_iter().flatten() {
        let lab = &p["metadata"]["lab"];
        if lab["dom0-tests"].as_bool() == Some(true) {
            pkgs.push(p["name"].as_str().unwrap_or_default().to_string());
            let manifest = p["manifest_path"].as_str().unwrap_or_default().to_string();
            if let Some(targets) = lab["dom0-targets"].as_array() {
                let t = targets.iter().filter_map(|t| t.as_str().map(String::from));
                only.push((manifest.clone(), t.collect()));
            }
            manifests.push(manifest);
            fresh.extend(
                lab["fresh-host"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| t.as_str().map(String::from)),
            );
        }
    }
    if pkgs.is_empty() {
        return Ok(vec![]);
    }
    let mut c = cargo();
    c.args(["test", "--no-run", "--message-format=json"]);
    for p in &pkgs {
        c.args(["-p", p]);
    }
    let out = c
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the dom0 test binaries failed");
    }
    let mut bins = vec![];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["profile"]["test"] == true {
            if let Some(exe) = v["executable"].as_str() {
                let target = v["target"]["name"].as_str().unwrap_or("test");
                let name = format!(
                    "{target} ({})",
                    v["manifest_path"].as_str().unwrap_or_default()
                );
                let manifest = v["manifest_path"].as_str().unwrap_or_default();
                if manifests.iter().any(|m| m == manifest) && selected(&only, manifest, target) {
                    bins.push(Dom0Tests {
                        name,
                        exe: PathBuf::from(exe),
                        fresh_host: fresh.iter().any(|f| f == target),
                    });
                }
            }
        }
    }
    Ok(bins)
}

/// Whether a test target of the crate at `manifest` goes to dom0: all of
/// them unless the crate lists its `dom0-targets` (in `only`).
fn selected(only: &[(String, Vec<String>)], manifest: &str, target: &str) -> bool {
    only.iter()
        .find(|(m, _)| m == manifest)
        .is_none_or(|(_, t)| t.iter().any(|t| t == target))
}

/// A copy of a test binary without debug info: a tenth of the size to push.
fn strip_copy(exe: &std::path::Path) -> Result<PathBuf> {
    let dir = crate::util::run_dir().join("dom0-tests");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(exe.file_name().context("test binary has no name")?);
    std::fs::copy(exe, &out)?;
    crate::util::capture(Command::new("strip").arg("--strip-debug").arg(&out))?;
    Ok(out)
}

/// Pushes one dom0 test binary to host 1 and runs its ignored tests there;
/// false if any failed or the binary could not run.
fn dom0_tests(st: &LabState, b: &Dom0Tests, t: &mut Tally) -> bool {
    let file = b.exe.file_name().unwrap_or_default().to_string_lossy();
    let remote = format!("/opt/lab/tests/{file}");
    say(format!("== dom0 tests: {}", b.name));
    let res = strip_copy(&b.exe)
        .and_then(|small| st.push(1, &small, &remote))
        .and_then(|_| {
            st.exec(
                1,
                &format!("cd /tmp && RUST_BACKTRACE=1 {remote} --ignored --test-threads=1"),
                Duration::from_secs(1800),
            )
        });
    match res {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            print!("{text}");
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            t.add_output(&text);
            if !out.status.success() && !text.contains("test result:") {
                t.broken.push(format!("dom0 tests {}", b.name));
            }
            out.status.success()
        }
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            t.broken.push(format!("dom0 tests {}", b.name));
            false
        }
    }
}

fn up_phase(hosts_n: u32, tally: &mut Tally) -> Option<LabState> {
    let opts = UpOptions {
        hosts: hosts_n,
        ..UpOptions::default()
    };
    let _ = hosts::down();
    match crate::up(&opts) {
        Ok(st) => Some(st),
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            tally.broken.push(format!("lab up --hosts {hosts_n}"));
            None
        }
    }
}

/// The lab's black-box tests, filtered by libtest arguments.
fn black_box(phase: &str, filter: &[&str], tally: &mut Tally) -> Result<bool> {
    run_echo(
        phase,
        cargo()
            .args([
                "test",
                "-p",
                "lab",
                "--tests",
                "--",
                "--ignored",
                "--test-threads=1",
            ])
            .args(filter)
            // The tests find the lab through its state file: this run's.
            .env("XAPI_LAB_RUN", crate::util::run_dir()),
        tally,
    )
}

/// Black-box tests whose name contains this get a freshly booted host each.
pub const FRESH_HOST: &str = "fresh_host";

/// The black-box tests named `*fresh_host*` (libtest's `--list`: "NAME: test").
fn fresh_host_black_box() -> Result<Vec<String>> {
    let out = cargo()
        .args(["test", "-p", "lab", "--tests", "--", "--ignored", "--list"])
        .arg(FRESH_HOST)
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("listing the lab's black-box tests failed");
    }
    Ok(fresh_host_names(&String::from_utf8_lossy(&out.stdout)))
}

/// The `*fresh_host*` test names in libtest `--list` output.
fn fresh_host_names(list: &str) -> Vec<String> {
    list.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        // As libtest's `--skip` matches: anywhere in the name.
        .filter(|n| n.contains(FRESH_HOST))
        .map(str::to_string)
        .collect()
}

/// Xen's stream verifier (`xenguest/tests/reference_verifier.rs` runs it)
/// from the cached Xen source: Debian ships it only in the dom0 tools.
fn reference_verifier(src: &crate::deps::XenSource) -> Result<()> {
    if std::env::var_os("XENGUEST_VERIFY_STREAM_V2").is_some() {
        return Ok(());
    }
    let tarball = src
        .orig_tarball()
        .with_context(|| format!("no .orig.tar.xz beside {}", src.dsc.display()))?;
    // In the cache, not the run directory: taking a phase's hosts down clears that.
    let dir = crate::util::cache_dir().join("xen-tools-python");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    crate::util::capture(
        Command::new("tar")
            .arg("-xJf")
            .arg(&tarball)
            .arg("-C")
            .arg(&dir)
            .args(["--strip-components=3", "--wildcards"])
            .args([
                "*/tools/python/scripts/verify-stream-v2",
                "*/tools/python/xen/__init__.py",
                "*/tools/python/xen/util.py",
                "*/tools/python/xen/migration/*",
            ]),
    )?;
    std::env::set_var(
        "XENGUEST_VERIFY_STREAM_V2",
        dir.join("scripts/verify-stream-v2"),
    );
    std::env::set_var("XENGUEST_VERIFY_PYTHONPATH", &dir);
    Ok(())
}

pub fn run(keep: bool) -> Result<i32> {
    // Hosts of its own, booted and taken down phase by phase: a lab the
    // user brought up keeps running.
    let dir = crate::util::use_own_lab("test")?;
    say(format!("lab test: its hosts run in {}", dir.display()));
    let mut t = Tally::default();
    // Tests whose prerequisite is missing fail instead of skipping
    // (xapi-rs/tests/common: `skip`); every child inherits it.
    std::env::set_var("XAPI_LAB_STRICT", "1");
    let src = crate::deps::ensure().context("installing the build machine's packages")?;
    reference_verifier(&src).context("unpacking Xen's verify-stream-v2")?;
    let mut ok = run_echo(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
        &mut t,
    )?;
    ok &= run_echo(
        "cargo clippy -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
        &mut t,
    )?;
    ok &= run_echo("unit tests", cargo().args(["test", "--workspace"]), &mut t)?;
    let bins = match dom0_test_binaries() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            t.broken.push("build dom0 tests".into());
            vec![]
        }
    };
    let (fresh, shared): (Vec<_>, Vec<_>) = bins.into_iter().partition(|b| b.fresh_host);
    if let Some(st) = up_phase(1, &mut t) {
        for b in &shared {
            ok &= dom0_tests(&st, b, &mut t);
        }
        drop(st);
        for b in &fresh {
            if let Some(st) = up_phase(1, &mut t) {
                ok &= dom0_tests(&st, b, &mut t);
            }
        }
        // A fresh host for the black-box tests: the dom0 tests migrate and
        // restore guests, after which this TCG lab's dom0 has been seen to
        // corrupt memory (see README, "known lab problem").
        if up_phase(1, &mut t).is_some() {
            ok &= black_box(
                "lab tests (1 host)",
                &["--skip", "two_hosts", "--skip", FRESH_HOST],
                &mut t,
            )?;
        }
        // Those that change the host itself (`fresh_host*`), each on a host
        // of its own, so what they leave cannot affect others.
        match fresh_host_black_box() {
            Ok(names) => {
                for name in names {
                    if up_phase(1, &mut t).is_some() {
                        ok &= black_box(
                            &format!("lab test {name} (fresh host)"),
                            &[&name, "--exact"],
                            &mut t,
                        )?;
                    }
                }
            }
            Err(e) => {
                eprintln!("lab: error: {e:#}");
                t.broken.push("list fresh-host lab tests".into());
            }
        }
        if let Some(_st2) = up_phase(2, &mut t) {
            ok &= black_box("lab tests (2 hosts)", &["two_hosts"], &mut t)?;
        }
    }
    if !keep {
        // `lab down` must leave no process of the lab behind: checked every run.
        let _ = hosts::down();
        let left: String = hosts::lab_processes(&dir)
            .iter()
            .map(|(pid, cmd)| format!("{pid} {cmd}\n"))
            .collect();
        if left.trim().is_empty() {
            t.passed += 1;
            println!("test lab_down_leaves_no_process_behind ... ok");
        } else {
            t.failed += 1;
            println!("test lab_down_leaves_no_process_behind ... FAILED:\n{left}");
        }
    }
    if keep {
        say(format!(
            "the test's last lab is kept: XAPI_LAB_RUN={} lab status|exec|env reach it; \
             `lab down` (or XAPI_LAB_RUN={0} lab down) stops it",
            dir.display()
        ));
    }
    ok &= t.broken.is_empty() && t.failed == 0;
    for b in &t.broken {
        println!("lab: phase failed to run: {b}");
    }
    println!(
        "{} passed, {} failed, {} skipped",
        t.passed,
        t.failed + t.broken.len() as u64,
        t.skipped
    );
    Ok(if ok { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dom0_targets_limit_only_their_crate() {
        let only = vec![(
            "/w/xapi-rs/Cargo.toml".to_string(),
            vec!["dom0_xenops".to_string()],
        )];
        assert!(selected(&only, "/w/xapi-rs/Cargo.toml", "dom0_xenops"));
        assert!(!selected(&only, "/w/xapi-rs/Cargo.toml", "daemon"));
        assert!(!selected(&only, "/w/xapi-rs/Cargo.toml", "xapi_rs"));
        // Crates without the list send every test binary, as before.
        assert!(selected(&only, "/w/xenguest/Cargo.toml", "dom0_save"));
        assert!(selected(&[], "/w/xenctrl/Cargo.toml", "dom0"));
    }

    #[test]
    fn tally_sums_libtest_result_lines() {
        let mut t = Tally::default();
        t.add_output(
            "running 3 tests\ntest a ... ok\n\ntest result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\
             test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out\n",
        );
        assert_eq!((t.passed, t.failed, t.ignored), (4, 2, 1));
    }

    #[test]
    fn fresh_host_tests_are_found_by_name() {
        let list = "fresh_host_package_remove_keeps_guests: test\n\
                    smoke_the_lab_runs: test\n\
                    tests::fresh_host_in_a_module: test\n\
                    fresh_host_bench: benchmark\n\n\
                    2 tests, 1 benchmark\n";
        assert_eq!(
            fresh_host_names(list),
            [
                "fresh_host_package_remove_keeps_guests",
                "tests::fresh_host_in_a_module"
            ]
        );
    }

    #[test]
    fn tally_counts_skipped_lines_apart_from_passes() {
        let mut t = Tally::default();
        t.add_output(
            "running 2 tests\nskipped: https_check (curl unavailable)\ntest a ... ok\ntest b ... ok\n\
             test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out\n",
        );
        assert_eq!((t.passed, t.failed, t.skipped), (1, 0, 1));
    }
}
