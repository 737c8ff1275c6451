//! Helpers shared by the dom0 test binaries (they run inside a lab dom0 as
//! root): running commands, polling, `xl list`, and the guest kit's probe
//! guest.  Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a probe guest may take to boot and verify its memory once.
/// Generous: under TCG a first guest after boot has been seen to need
/// well over two minutes on a loaded CI machine.
pub const GUEST_BOOT: Duration = Duration::from_secs(420);

/// How long a running probe may take to answer a verify request.
pub const VERIFY_WAIT: Duration = Duration::from_secs(180);

/// Runs a command; (success, stdout + stderr).
pub fn run_any(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .env("PYTHONPATH", "/usr/lib/xen-4.17/lib/python")
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), s)
}

/// Runs a command that must succeed; its stdout + stderr.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let (ok, out) = run_any(cmd, args);
    assert!(ok, "{cmd} {args:?} failed: {out}");
    out
}

/// Runs a shell script that must succeed.
pub fn sh(script: &str) -> String {
    run("sh", &["-c", script])
}

/// Polls `f` every half second until it holds; panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    wait_for_or(what, limit, f, String::new)
}

/// As [`wait_for`], with `context()` appended to the panic message.
pub fn wait_for_or(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> bool,
    context: impl FnOnce() -> String,
) {
    let t = Instant::now();
    while !f() {
        if t.elapsed() >= limit {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `xl list` rows as (name, domid, state).
pub fn xl_list() -> Vec<(String, u32, String)> {
    run("xl", &["list"])
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            Some((f[0].to_string(), f[1].parse().ok()?, f[4].to_string()))
        })
        .collect()
}

/// The domid of the domain named exactly `name`.
pub fn domid_of(name: &str) -> Option<u32> {
    xl_list()
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, d, _)| d)
}

/// Last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let l: Vec<&str> = s.lines().collect();
    l[l.len().saturating_sub(n)..].join("\n")
}

/// A guest-kit probe guest, destroyed on drop (by name: it may have been
/// saved and restored meanwhile).
pub struct Guest {
    pub name: String,
}

impl Guest {
    /// Starts `lab-guest NAME MEM WORKSET` and waits for its first memory
    /// verify; returns the guard and the domid.
    pub fn start(name: &str, mem_mb: u32, workset_mb: u32) -> (Guest, u32) {
        let _ = Command::new("xl").args(["destroy", name]).output();
        // xenconsoled appends to the log of a name: start from an empty one.
        let _ = std::fs::remove_file(format!("/var/log/xen/console/guest-{name}.log"));
        let out = run(
            "/usr/local/bin/lab-guest",
            &[name, &mem_mb.to_string(), &workset_mb.to_string()],
        );
        let domid = out
            .lines()
            .rev()
            .find_map(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("lab-guest printed no domid: {out:?}"));
        let g = Guest {
            name: name.to_string(),
        };
        wait_for_or(
            &format!("{name}'s first probe verify"),
            GUEST_BOOT,
            || g.verified() > 0,
            || g.diagnostics(),
        );
        (g, domid)
    }

    /// What the guest's console printed (across renames by migration).
    pub fn log(&self) -> String {
        run("/usr/local/bin/lab-guest-log", &[&self.name])
    }

    /// The number of "probe: verify ok" lines so far.
    pub fn verified(&self) -> usize {
        self.log().matches("probe: verify ok").count()
    }

    /// Asks the probe for a verify now (`v` on its console).
    pub fn request_verify(&self) {
        let Some(domid) = domid_of(&self.name) else {
            return;
        };
        let tty = run(
            "xenstore-read",
            &[&format!("/local/domain/{domid}/console/tty")],
        );
        if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(tty.trim()) {
            let _ = f.write_all(b"v\n");
        }
    }

    /// Requests a verify, waits for a new `verify ok` line and checks the
    /// console shows no failure.
    pub fn expect_verifies(&self, what: &str) {
        let base = self.verified();
        self.request_verify();
        wait_for_or(
            what,
            VERIFY_WAIT,
            || self.verified() > base,
            || self.diagnostics(),
        );
        let log = self.log();
        assert!(!log.contains("verify FAILED"), "{what}: {log}");
    }

    /// `xl list` and the console's tail, for a failure message.
    pub fn diagnostics(&self) -> String {
        format!(
            "xl list:\n{}\nconsole of {} (tail):\n{}",
            run_any("xl", &["list"]).1,
            self.name,
            tail(&self.log(), 30)
        )
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = Command::new("xl").args(["destroy", &self.name]).output();
    }
}
