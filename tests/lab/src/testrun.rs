//! `lab test`: the whole suite. Formatting and lints, the workspace's unit
//! tests, then on real Xen: the test binaries that must run inside dom0 (crates
//! with `[package.metadata.lab] dom0-tests = true`, their `#[ignore]`d tests)
//! and the black-box lab tests in `tests/lab/tests/` (likewise `#[ignore]`d),
//! first on one host (those named `fresh_host*` each on a fresh one), then
//! those named `two_hosts*` on two.
//!
//! Only the first hosts boot cold: once their toolstack answers, and before
//! any test ran, they are saved ([`crate::snapshot`]), and every phase gets
//! its fresh hosts restored from that in seconds. Each phase's wall time is
//! printed as it ends and in a table at the end.

use crate::hosts::{self, LabState};
use crate::snapshot::{self, Snapshot};
use crate::util::say;
use crate::UpOptions;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Default, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
    /// Tests that printed `skipped: NAME (reason)`: they count as passed
    /// in libtest's line too, so they are subtracted from `passed`.
    pub skipped: u64,
    /// Phases that could not run at all (a build or the lab failed).
    pub broken: Vec<String>,
    /// What went wrong without failing a test or a phase (a fallback was
    /// taken): shown with the summary.
    pub warnings: Vec<String>,
    /// Each test's wall time, for the table of the slowest.
    pub times: Vec<TestTime>,
}

impl Tally {
    /// Adds what another stream of phases counted.
    pub fn merge(&mut self, o: Tally) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.ignored += o.ignored;
        self.skipped += o.skipped;
        self.broken.extend(o.broken);
        self.warnings.extend(o.warnings);
        self.times.extend(o.times);
    }
}

/// One test's wall time (its line of libtest output to the next).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TestTime {
    pub name: String,
    pub secs: u64,
    pub ok: bool,
}

/// The test name and outcome of a libtest progress line
/// (`test NAME ... ok`), if `line` is one.
fn test_line(line: &str) -> Option<(&str, bool)> {
    let rest = line.strip_prefix("test ")?;
    let (name, status) = rest.split_once(" ... ")?;
    match status.split_whitespace().next()? {
        "ok" => Some((name, true)),
        s if s.starts_with("FAILED") => Some((name, false)),
        _ => None,
    }
}

/// One line of the time tables: seconds, outcome, name.
fn table_row(secs: u64, ok: bool, name: &str) -> String {
    format!(
        "{secs:>6} s  {:<6}  {name}\n",
        if ok { "ok" } else { "FAILED" }
    )
}

/// The tests that took at least `min_secs`, slowest first, as a table:
/// where the suite's time goes, in every run's log.
pub fn slowest_table(times: &[TestTime], min_secs: u64) -> String {
    let mut t: Vec<&TestTime> = times.iter().filter(|t| t.secs >= min_secs).collect();
    t.sort_by(|a, b| b.secs.cmp(&a.secs).then(a.name.cmp(&b.name)));
    let mut s = format!("== tests of {min_secs} s or more (wall clock)\n");
    for x in t {
        s.push_str(&table_row(x.secs, x.ok, &x.name));
    }
    s
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

/// Runs a command, echoing its stdout while keeping it for the tally;
/// `timed`: it runs tests one at a time, each timed to the tally.
fn run_echo(phase: &str, cmd: &mut Command, timed: bool, tally: &mut Tally) -> Result<bool> {
    say(format!("== {phase}"));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("{phase}: cannot start {:?}", cmd.get_program()))?;
    let mut all = String::new();
    // With one test thread, libtest ends a test's line when it ends.
    let mut since = Instant::now();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.unwrap_or_default();
            println!("{line}");
            if line.starts_with("running ") {
                since = Instant::now();
            }
            if let Some((name, ok)) = test_line(&line).filter(|_| timed) {
                tally.times.push(TestTime {
                    name: name.to_string(),
                    secs: since.elapsed().as_secs(),
                    ok,
                });
                since = Instant::now();
            }
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

use crate::util::cargo;

/// A test executable of the workspace.
struct TestExe {
    /// "target (manifest)", for the log.
    name: String,
    /// The test target's name.
    target: String,
    manifest: String,
    exe: PathBuf,
}

/// The test executables of every workspace package, from one `cargo test
/// --workspace --release --no-run`: what the unit tests phase built, with the same
/// feature resolution, so the dom0 and black-box tests compile nothing
/// again (`-p PKG` resolves features for PKG alone, and rebuilt tokio,
/// serde_json, syn, ... differently).
fn workspace_test_exes() -> Result<Vec<TestExe>> {
    let out = cargo()
        .args([
            "test",
            "--workspace",
            "--release",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("building the workspace's test binaries failed");
    }
    Ok(test_exes_in(&String::from_utf8_lossy(&out.stdout)))
}

/// The test executables in cargo's `--message-format=json` output.
fn test_exes_in(json_lines: &str) -> Vec<TestExe> {
    let mut exes = vec![];
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let Some(exe) = v["executable"].as_str() else {
            continue;
        };
        let target = v["target"]["name"].as_str().unwrap_or("test").to_string();
        let manifest = v["manifest_path"].as_str().unwrap_or_default().to_string();
        exes.push(TestExe {
            name: format!("{target} ({manifest})"),
            target,
            manifest,
            exe: PathBuf::from(exe),
        });
    }
    exes
}

/// The packages whose tests must run in dom0 (`[package.metadata.lab]
/// dom0-tests = true`): their manifests, and the test targets listed in
/// their `fresh-host` (they live-migrate and get a fresh host each, so
/// what they leave behind cannot affect other tests).
fn dom0_packages() -> Result<Dom0Packages> {
    let meta = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()?;
    let meta: serde_json::Value = serde_json::from_slice(&meta.stdout)?;
    let mut d = Dom0Packages::default();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(String::from))
            .collect()
    };
    for p in meta["packages"].as_array().into_iter().flatten() {
        let lab = &p["metadata"]["lab"];
        if lab["dom0-tests"].as_bool() == Some(true) {
            let manifest = p["manifest_path"].as_str().unwrap_or_default().to_string();
            d.fresh.extend(strings(&lab["fresh-host"]));
            // A crate with many other tests (xapi-rs) lists the targets
            // that belong in dom0; the rest stay on the build machine.
            if lab["dom0-targets"].is_array() {
                d.only
                    .push((manifest.clone(), strings(&lab["dom0-targets"])));
            }
            d.manifests.push(manifest);
        }
    }
    Ok(d)
}

/// What `[package.metadata.lab]` says about dom0 tests.
#[derive(Default)]
struct Dom0Packages {
    manifests: Vec<String>,
    /// Test targets that get a fresh host each.
    fresh: Vec<String>,
    /// (manifest, targets): crates whose dom0 tests are only these targets.
    only: Vec<(String, Vec<String>)>,
}

impl Dom0Packages {
    /// Whether this test executable runs in dom0.
    fn wants(&self, e: &TestExe) -> bool {
        self.manifests.contains(&e.manifest)
            && self
                .only
                .iter()
                .find(|(m, _)| *m == e.manifest)
                .is_none_or(|(_, targets)| targets.contains(&e.target))
    }
}

/// This package's manifest, as cargo names it in its messages.
fn lab_manifest() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("Cargo.toml")
        .display()
        .to_string()
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
fn dom0_tests(st: &LabState, b: &TestExe, t: &mut Tally) -> bool {
    let file = b.exe.file_name().unwrap_or_default().to_string_lossy();
    let remote = format!("/opt/lab/tests/{file}");
    say(format!("== dom0 tests: {}", b.name));
    // Most test binaries of these packages have no test for dom0: pushing
    // one to run nothing costs TCG seconds. libtest lists them here.
    let names = match ignored_tests(&b.exe) {
        Ok(n) if n.is_empty() => {
            say(format!(
                "{}: no ignored tests, nothing to run in dom0",
                b.name
            ));
            return true;
        }
        Ok(n) => n,
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            t.broken.push(format!("dom0 tests {}", b.name));
            return false;
        }
    };
    if let Err(e) = strip_copy(&b.exe).and_then(|small| st.push(1, &small, &remote)) {
        eprintln!("lab: error: {e:#}");
        t.broken.push(format!("dom0 tests {}", b.name));
        return false;
    }
    // One test per run, so that each is timed (the output of one run
    // comes back only when it ends).
    let mut ok = true;
    for name in names {
        let start = Instant::now();
        let res = st.exec(
            1,
            &format!(
                "cd /tmp && RUST_BACKTRACE=1 {remote} --ignored --test-threads=1 --exact {}",
                crate::util::shell_quote(&name)
            ),
            Duration::from_secs(1800),
        );
        match res {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out.stdout);
                print!("{text}");
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
                t.add_output(&text);
                t.times.push(TestTime {
                    name,
                    secs: start.elapsed().as_secs(),
                    ok: out.status.success(),
                });
                if !out.status.success() && !text.contains("test result:") {
                    t.broken.push(format!("dom0 tests {}", b.name));
                }
                ok &= out.status.success();
            }
            Err(e) => {
                eprintln!("lab: error: {e:#}");
                t.broken.push(format!("dom0 tests {}", b.name));
                ok = false;
            }
        }
    }
    ok
}

/// A lab of `hosts_n` freshly booted hosts with the toolstack installed.
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

/// A lab of `hosts_n` fresh hosts: restored from the run's snapshot, else
/// (no snapshot, or restoring failed: a broken phase) booted cold.
fn fresh_hosts(snap: Option<&Snapshot>, hosts_n: u32, tally: &mut Tally) -> Option<LabState> {
    let _ = hosts::down();
    if let Some(snap) = snap {
        match snapshot::restore(snap, hosts_n, UpOptions::default().boot_timeout) {
            Ok(st) => return Some(st),
            Err(e) => {
                eprintln!("lab: error: restoring the snapshot: {e:#}; booting instead");
                // Not a failed phase: the cold-booted host is as fresh, only
                // slower to get. The reason goes in the summary, as the log's
                // middle may be cut where CI shows only its ends.
                tally.warnings.push(format!(
                    "restoring {hosts_n} host(s) from the snapshot failed, booted cold instead: {e:#}"
                ));
                let _ = hosts::down();
            }
        }
    }
    up_phase(hosts_n, tally)
}

/// Runs the black-box test executables `exes` (ignored tests, one at a
/// time, filtered by libtest arguments) as `cargo test -p lab` would: in
/// the package's directory, with CARGO set.
fn black_box(phase: &str, exes: &[&TestExe], filter: &[&str], tally: &mut Tally) -> Result<bool> {
    let mut ok = true;
    for e in exes {
        ok &= run_echo(
            &format!("{phase}: {}", e.target),
            Command::new(&e.exe)
                .args(["--ignored", "--test-threads=1"])
                .args(filter)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("CARGO", env!("CARGO"))
                .env("CARGO_MANIFEST_DIR", env!("CARGO_MANIFEST_DIR"))
                // The tests find the lab through its state file: this run's.
                .env("XAPI_LAB_RUN", crate::util::run_dir()),
            true,
            tally,
        )?;
    }
    Ok(ok)
}

/// Black-box tests whose name contains this get a fresh host each.
pub const FRESH_HOST: &str = "fresh_host";

/// The black-box tests named `*fresh_host*` in `exe` (libtest's `--list`).
fn fresh_host_black_box(exe: &TestExe) -> Result<Vec<String>> {
    let out = Command::new(&exe.exe)
        .args(["--ignored", "--list"])
        .arg(FRESH_HOST)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("listing the tests of {} failed", exe.name);
    }
    Ok(fresh_host_names(&String::from_utf8_lossy(&out.stdout)))
}

/// The `#[ignore]`d tests of the test executable `exe` (libtest's
/// `--ignored --list`, run on the build machine).
fn ignored_tests(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new(exe)
        .args(["--ignored", "--list"])
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("listing the tests of {}", exe.display()))?;
    if !out.status.success() {
        bail!("listing the tests of {} failed", exe.display());
    }
    Ok(test_names(&String::from_utf8_lossy(&out.stdout))
        .map(str::to_string)
        .collect())
}

/// The test names in libtest `--list` output ("NAME: test" lines).
fn test_names(list: &str) -> impl Iterator<Item = &str> {
    list.lines().filter_map(|l| l.strip_suffix(": test"))
}

/// The `*fresh_host*` test names in libtest `--list` output.
fn fresh_host_names(list: &str) -> Vec<String> {
    test_names(list)
        // As libtest's `--skip` matches: anywhere in the name.
        .filter(|n| n.contains(FRESH_HOST))
        .map(str::to_string)
        .collect()
}

/// How a phase ended, for its timing line.
trait Outcome {
    fn ok(&self) -> bool;
}

impl Outcome for bool {
    fn ok(&self) -> bool {
        *self
    }
}

impl<T> Outcome for Option<T> {
    fn ok(&self) -> bool {
        self.is_some()
    }
}

impl<T, E> Outcome for std::result::Result<T, E> {
    fn ok(&self) -> bool {
        self.is_ok()
    }
}

/// One phase's wall time.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PhaseTime {
    pub name: String,
    pub secs: u64,
    pub ok: bool,
}

/// The phases of the run so far, timed.
#[derive(Default)]
struct Phases(Vec<PhaseTime>);

impl Phases {
    /// Runs phase `name`, then prints "== NAME: done in N s".
    fn time<T: Outcome>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let r = f();
        let p = PhaseTime {
            name: name.to_string(),
            secs: start.elapsed().as_secs(),
            ok: r.ok(),
        };
        say(format!(
            "== {}: done in {} s{}",
            p.name,
            p.secs,
            if p.ok { "" } else { " (FAILED)" }
        ));
        self.0.push(p);
        r
    }
}

/// The table of phase times `lab test` ends with.
pub fn phase_table(phases: &[PhaseTime], total_secs: u64) -> String {
    let mut s = String::from("== phase times (wall clock)\n");
    for p in phases {
        s.push_str(&table_row(p.secs, p.ok, &p.name));
    }
    s.push_str(&format!("{total_secs:>6} s          total\n"));
    s
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
    let run_start = Instant::now();
    // Hosts of their own, booted and taken down phase by phase: a lab the
    // user brought up keeps running.
    let dir = crate::util::use_own_lab("test")?;
    say(format!("lab test: its hosts run in {}", dir.display()));
    let mut t = Tally::default();
    let mut ph = Phases::default();
    // Tests whose prerequisite is missing fail instead of skipping
    // (xapi-rs/tests/common: `skip`); every child inherits it.
    std::env::set_var("XAPI_LAB_STRICT", "1");
    let src = crate::deps::ensure().context("installing the build machine's packages")?;
    reference_verifier(&src).context("unpacking Xen's verify-stream-v2")?;
    let mut ok = ph.time("cargo fmt --check", || {
        run_echo(
            "cargo fmt --check",
            cargo().args(["fmt", "--all", "--check"]),
            false,
            &mut t,
        )
    })?;
    ok &= ph.time("cargo clippy -D warnings", || {
        run_echo(
            "cargo clippy -D warnings",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            false,
            &mut t,
        )
    })?;
    ok &= ph.time("unit tests", || {
        run_echo(
            "unit tests",
            // Release, as the toolstack and the lab are built: one build of
            // the workspace instead of a debug one beside it, and the dom0
            // tests exercise the code users run.
            cargo().args(["test", "--workspace", "--release"]),
            false,
            &mut t,
        )
    })?;
    let exes = match ph.time("list test binaries", workspace_test_exes) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            t.broken.push("build test binaries".into());
            vec![]
        }
    };
    let dom0 = dom0_packages().unwrap_or_else(|e| {
        eprintln!("lab: error: {e:#}");
        t.broken.push("cargo metadata".into());
        Dom0Packages::default()
    });
    let (fresh, shared): (Vec<&TestExe>, Vec<&TestExe>) = exes
        .iter()
        .filter(|e| dom0.wants(e))
        .partition(|e| dom0.fresh.contains(&e.target));
    let lab_exes: Vec<&TestExe> = exes
        .iter()
        .filter(|e| e.manifest == lab_manifest())
        .collect();
    // The first hosts boot cold, both of the two-host phase's at once, and
    // are saved before any test ran; every phase restores its hosts.
    let first = ph.time("boot 2 hosts, install the toolstack", || {
        up_phase(2, &mut t)
    });
    let Some(first) = first else {
        return finish(keep, &dir, t, ph, run_start, false);
    };
    let snap = match ph.time("save the snapshot", || snapshot::save(&first)) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("lab: error: saving the snapshot: {e:#}; fresh hosts boot cold");
            t.broken.push("save the snapshot".into());
            None
        }
    };
    let snap = snap.as_ref();
    let mut second = snap.map(Second::start);
    if let Some(st) = ph.time("fresh host (shared dom0 tests)", || {
        fresh_hosts(snap, 1, &mut t)
    }) {
        for b in &shared {
            ok &= ph.time(&format!("dom0 tests {}", b.name), || {
                dom0_tests(&st, b, &mut t)
            });
        }
    }
    for b in &fresh {
        if let Some(st) = ph.time(&format!("fresh host ({})", b.target), || {
            fresh_hosts(snap, 1, &mut t)
        }) {
            ok &= ph.time(&format!("dom0 tests {}", b.name), || {
                dom0_tests(&st, b, &mut t)
            });
        }
    }
    // The black-box tests run beside them (see `Second`), or here after
    // them where the second stream could not start.
    match second.take() {
        Some(Ok(child)) => ok &= child.join(&mut ph, &mut t),
        Some(Err(e)) => {
            eprintln!("lab: error: starting the black-box tests beside the dom0 tests: {e:#}; running them after");
            t.warnings.push(format!(
                "the black-box tests ran after the dom0 tests, not beside them: {e:#}"
            ));
            ok &= black_box_phases(snap, &lab_exes, &mut ph, &mut t)?;
        }
        None => ok &= black_box_phases(snap, &lab_exes, &mut ph, &mut t)?,
    }
    if ph
        .time("fresh hosts (2)", || fresh_hosts(snap, 2, &mut t))
        .is_some()
    {
        ok &= ph.time("lab tests (2 hosts)", || {
            black_box("lab tests (2 hosts)", &lab_exes, &["two_hosts"], &mut t)
        })?;
    }
    finish(keep, &dir, t, ph, run_start, ok)
}

/// The black-box lab tests on one host: those that share one, then each
/// `fresh_host*` test on a host of its own; true if all passed.
fn black_box_phases(
    snap: Option<&Snapshot>,
    lab_exes: &[&TestExe],
    ph: &mut Phases,
    t: &mut Tally,
) -> Result<bool> {
    let mut ok = true;
    // A fresh host for the black-box tests, never one the dom0 tests
    // used: they migrate and restore guests, after which this TCG lab's
    // dom0 has been seen to corrupt memory (see README, "known lab problem").
    if ph
        .time("fresh host (lab tests)", || fresh_hosts(snap, 1, t))
        .is_some()
    {
        ok &= ph.time("lab tests (1 host)", || {
            black_box(
                "lab tests (1 host)",
                lab_exes,
                &["--skip", "two_hosts", "--skip", FRESH_HOST],
                t,
            )
        })?;
    }
    // Those that change the host itself (`fresh_host*`), each on a host
    // of its own, so what they leave cannot affect others.
    for e in lab_exes {
        match fresh_host_black_box(e) {
            Ok(names) => {
                for name in names {
                    if ph
                        .time(&format!("fresh host ({name})"), || fresh_hosts(snap, 1, t))
                        .is_some()
                    {
                        let phase = format!("lab test {name} (fresh host)");
                        ok &=
                            ph.time(&phase, || black_box(&phase, &[e], &[&name, "--exact"], t))?;
                    }
                }
            }
            Err(e) => {
                eprintln!("lab: error: {e:#}");
                t.broken.push("list fresh-host lab tests".into());
            }
        }
    }
    Ok(ok)
}

/// The second stream of phases: the black-box tests in a `lab test-stream`
/// child, on hosts of its own (in `<run>/test2`) restored from this run's
/// snapshot, while this process runs the dom0 tests. Two TCG hosts at once
/// fill the two cores better than one (one host's tests kept them 65% busy);
/// the two streams share nothing but the snapshot's read-only files.
struct Second {
    child: std::process::Child,
    log: PathBuf,
    result: PathBuf,
}

/// The child's snapshot, as a file named in this environment variable (not
/// on its command line: a process that names a file of this run directory
/// counts as one of its lab's, and taking a phase's hosts down kills those).
const STREAM_SNAPSHOT_ENV: &str = "XAPI_LAB_STREAM_SNAPSHOT";

/// Where the child writes what it counted ([`StreamResult`]), in the
/// snapshot's directory (which outlives the phases' hosts).
const STREAM_RESULT: &str = "stream2.json";

/// What the second stream reports back.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct StreamResult {
    tally: Tally,
    phases: Vec<PhaseTime>,
    ok: bool,
}

impl Second {
    fn start(snap: &Snapshot) -> Result<Second> {
        let file = snap.dir.join("snapshot.json");
        std::fs::write(&file, serde_json::to_vec(snap)?)?;
        let result = snap.dir.join(STREAM_RESULT);
        let _ = std::fs::remove_file(&result);
        let logs = crate::util::cache_dir().join("logs");
        std::fs::create_dir_all(&logs)?;
        let log = logs.join("lab-test-stream2.log");
        let out = std::fs::File::create(&log)?;
        let child = Command::new(crate::util::lab_exe()?)
            .arg("test-stream")
            .env(STREAM_SNAPSHOT_ENV, &file)
            // Its own lab is nested in this one's directory.
            .env("XAPI_LAB_RUN", crate::util::run_dir())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting `lab test-stream`")?;
        say(format!(
            "the black-box tests run beside the dom0 tests (pid {}, log {})",
            child.id(),
            log.display()
        ));
        Ok(Second { child, log, result })
    }

    /// Waits for the child, prints its log and adds its phases and tally;
    /// true if all its tests passed.
    fn join(mut self, ph: &mut Phases, t: &mut Tally) -> bool {
        say("waiting for the black-box tests beside");
        let status = self.child.wait();
        say(format!(
            "== the black-box tests' log (they ran beside the dom0 tests): {}",
            self.log.display()
        ));
        if let Ok(text) = std::fs::read_to_string(&self.log) {
            print!("{text}");
        }
        let r: Result<StreamResult> = std::fs::read(&self.result)
            .context("reading its result")
            .and_then(|b| serde_json::from_slice(&b).context("parsing its result"));
        match (status, r) {
            (Ok(st), Ok(r)) => {
                for mut p in r.phases {
                    p.name = format!("(beside) {}", p.name);
                    ph.0.push(p);
                }
                t.merge(r.tally);
                r.ok && st.success()
            }
            (st, r) => {
                let why = match (st, r) {
                    (Err(e), _) => format!("{e}"),
                    (Ok(st), Err(e)) => format!("it exited {st}: {e:#}"),
                    (Ok(st), Ok(_)) => format!("it exited {st}"),
                };
                eprintln!("lab: error: the black-box tests beside: {why}");
                t.broken
                    .push(format!("black-box tests (beside the dom0 tests): {why}"));
                false
            }
        }
    }
}

/// `lab test-stream`: [`Second`]'s child. Runs the black-box phases on
/// hosts restored from the parent's snapshot, takes them down, and writes
/// what it counted for the parent.
pub fn run_stream() -> Result<i32> {
    let file = std::env::var_os(STREAM_SNAPSHOT_ENV)
        .with_context(|| format!("{STREAM_SNAPSHOT_ENV} is not set: `lab test` runs this"))?;
    let snap: Snapshot = serde_json::from_slice(&std::fs::read(&file)?)?;
    let dir = crate::util::use_own_lab("test2")?;
    say(format!(
        "lab test-stream: its hosts run in {}",
        dir.display()
    ));
    let mut t = Tally::default();
    let mut ph = Phases::default();
    let exes = ph
        .time("list test binaries", workspace_test_exes)
        .unwrap_or_else(|e| {
            eprintln!("lab: error: {e:#}");
            t.broken.push("build test binaries".into());
            vec![]
        });
    let lab_exes: Vec<&TestExe> = exes
        .iter()
        .filter(|e| e.manifest == lab_manifest())
        .collect();
    let ok = black_box_phases(Some(&snap), &lab_exes, &mut ph, &mut t).unwrap_or_else(|e| {
        eprintln!("lab: error: {e:#}");
        t.broken.push(format!("black-box tests: {e:#}"));
        false
    });
    down_and_check(&dir, &mut t);
    let r = StreamResult {
        tally: t,
        phases: ph.0,
        ok,
    };
    std::fs::write(snap.dir.join(STREAM_RESULT), serde_json::to_vec(&r)?)?;
    Ok(0)
}

/// Takes this process's lab down, snapshot included, and counts a test
/// that nothing of it is left (checked every run).
fn down_and_check(dir: &Path, t: &mut Tally) {
    let _ = hosts::down_with_snapshot();
    // Its hosts are gone: nothing left for `lab down` to spare.
    let _ = std::fs::remove_file(dir.join(crate::util::OWNER_FILE));
    let _ = std::fs::remove_dir(dir);
    let left: String = hosts::lab_processes(dir)
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

/// The end of `lab test`: the lab taken down (unless `keep`) and checked
/// for leftovers, the phase times and the tally.
fn finish(
    keep: bool,
    dir: &Path,
    mut t: Tally,
    ph: Phases,
    run_start: Instant,
    mut ok: bool,
) -> Result<i32> {
    if !keep {
        // `lab down` must leave no process of the lab behind: checked every run.
        down_and_check(dir, &mut t);
    }
    if keep {
        say(format!(
            "the test's last lab is kept: XAPI_LAB_RUN={} lab status|exec|env reach it; \
             `lab down` (or XAPI_LAB_RUN={0} lab down) stops it",
            dir.display()
        ));
    }
    print!("{}", slowest_table(&t.times, 10));
    print!("{}", phase_table(&ph.0, run_start.elapsed().as_secs()));
    ok &= t.broken.is_empty() && t.failed == 0;
    for w in &t.warnings {
        println!("lab: warning: {w}");
    }
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
    fn ignored_tests_are_counted_from_the_list() {
        assert_eq!(test_names("0 tests, 0 benchmarks\n").count(), 0);
        assert_eq!(
            test_names("a: test\nmod::b: test\nc: benchmark\n\n2 tests, 1 benchmark\n")
                .collect::<Vec<_>>(),
            ["a", "mod::b"]
        );
        // This very executable has no ignored test.
        let me = std::env::current_exe().unwrap();
        assert!(ignored_tests(&me).unwrap().is_empty());
    }

    #[test]
    fn test_lines_are_timed_and_the_slowest_listed_first() {
        assert_eq!(test_line("test a::b ... ok"), Some(("a::b", true)));
        assert_eq!(test_line("test c ... FAILED"), Some(("c", false)));
        assert_eq!(test_line("test d ... ignored"), None);
        assert_eq!(test_line("test result: ok. 1 passed"), None);
        assert_eq!(test_line("running 2 tests"), None);
        let t = |name: &str, secs, ok| TestTime {
            name: name.into(),
            secs,
            ok,
        };
        let table = slowest_table(
            &[t("fast", 3, true), t("slow", 70, true), t("mid", 12, false)],
            10,
        );
        assert_eq!(
            table,
            "== tests of 10 s or more (wall clock)\n    70 s  ok      slow\n    12 s  FAILED  mid\n"
        );
    }

    #[test]
    fn phase_times_make_a_table_with_the_total() {
        let table = phase_table(
            &[
                PhaseTime {
                    name: "unit tests".into(),
                    secs: 61,
                    ok: true,
                },
                PhaseTime {
                    name: "fresh host (lab tests)".into(),
                    secs: 12,
                    ok: false,
                },
            ],
            4412,
        );
        assert_eq!(
            table,
            "== phase times (wall clock)\n\
             \x20   61 s  ok      unit tests\n\
             \x20   12 s  FAILED  fresh host (lab tests)\n\
             \x20 4412 s          total\n"
        );
    }

    #[test]
    fn phases_are_timed_with_their_outcome() {
        let mut ph = Phases::default();
        assert!(ph.time("a", || true));
        assert_eq!(ph.time("b", || None::<u8>), None);
        assert!(ph.time("c", || Err::<(), _>("x")).is_err());
        let oks: Vec<(&str, bool)> = ph.0.iter().map(|p| (p.name.as_str(), p.ok)).collect();
        assert_eq!(oks, [("a", true), ("b", false), ("c", false)]);
    }

    #[test]
    fn test_executables_come_from_cargos_messages() {
        let msgs = [
            r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":"/t/debug/deps/api-1","target":{"name":"api"},"manifest_path":"/w/tests/lab/Cargo.toml"}"#,
            r#"{"reason":"compiler-artifact","profile":{"test":false},"executable":"/t/debug/lab","target":{"name":"lab"},"manifest_path":"/w/tests/lab/Cargo.toml"}"#,
            r#"{"reason":"compiler-artifact","profile":{"test":true},"executable":null,"target":{"name":"x"},"manifest_path":"/w/x/Cargo.toml"}"#,
            r#"{"reason":"build-finished","success":true}"#,
            "not json",
        ]
        .join("\n");
        let exes = test_exes_in(&msgs);
        assert_eq!(exes.len(), 1);
        assert_eq!(exes[0].target, "api");
        assert_eq!(exes[0].manifest, "/w/tests/lab/Cargo.toml");
        assert_eq!(exes[0].exe, Path::new("/t/debug/deps/api-1"));
        assert_eq!(exes[0].name, "api (/w/tests/lab/Cargo.toml)");
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

    #[test]
    fn dom0_targets_limit_only_their_crate() {
        let exe = |target: &str, manifest: &str| TestExe {
            name: String::new(),
            target: target.into(),
            manifest: manifest.into(),
            exe: PathBuf::new(),
        };
        let d = Dom0Packages {
            manifests: vec!["x/Cargo.toml".into(), "g/Cargo.toml".into()],
            fresh: vec![],
            only: vec![("x/Cargo.toml".into(), vec!["dom0_xenops".into()])],
        };
        assert!(d.wants(&exe("dom0_xenops", "x/Cargo.toml")));
        assert!(!d.wants(&exe("daemon", "x/Cargo.toml")));
        assert!(d.wants(&exe("anything", "g/Cargo.toml")));
        assert!(!d.wants(&exe("dom0_xenops", "other/Cargo.toml")));
    }
}
