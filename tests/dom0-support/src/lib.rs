//! Helpers shared by the test binaries that run inside a lab dom0 as root
//! (`lab test` pushes and runs them): running commands, polling, `xl list`,
//! the guest kit's probe guest, and re-running a test as `nobody`.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the toolstack's Debian package (`lab deb`, which the lab installs
/// into every dom0) puts `xenguest`.
pub const XENGUEST: &str = "/usr/lib/xapi-rs/xenguest";

/// How long a probe guest may take to boot and verify its memory once.
/// Generous: under TCG a first guest after boot has been seen to need
/// well over two minutes on a loaded CI machine.
pub const GUEST_BOOT: Duration = Duration::from_secs(420);

/// The probe's working set (MB) for a guest that is not live-migrated: a
/// probe guest dirtying 16 MB keeps a TCG lab's CPUs so busy that every dom0
/// command took ten times as long beside it (2 s -> 20 s for an ssh `true`);
/// with 2 MB, beside it as without. Live-migration tests keep the large
/// working sets they need to dirty pages during pre-copy.
pub const CALM_WORKSET_MB: u32 = 2;

/// The kernel command line's probe settings for a guest that only has to
/// stay alive and keep its memory (the guest kit's init reads them): the
/// calm working set, a 100 ms tick instead of 1 ms (under TCG the 1 ms tick
/// alone took half of a lab host's CPU), a verify every 20 s or on request.
pub const CALM_PROBE_ARGS: &str = "probe.ws_mb=2 probe.tick_ms=100 probe.verify_s=20";

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

/// Runs a command that must succeed; its stdout (the panic message of a
/// failure carries stdout and stderr).
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .env("PYTHONPATH", "/usr/lib/xen-4.17/lib/python")
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// `xl list` rows as (name, domid), for comparing the set of domains.
pub fn xl_domains() -> Vec<(String, u32)> {
    xl_list().into_iter().map(|(n, d, _)| (n, d)).collect()
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

/// The number of the latest `verify ok` line in a console log, 0 if none.
pub fn last_verify(log: &str) -> u64 {
    verify_lines(log).map(|(n, _)| n).max().unwrap_or(0)
}

/// The longest pause (`window_gap_ms`) the probe reported in a console log
/// after its verify number `n`.
pub fn pause_after(log: &str, n: u64) -> Option<u64> {
    verify_lines(log)
        .filter(|&(k, _)| k > n)
        .map(|(_, gap)| gap)
        .max()
}

/// (n, window_gap_ms) of every `probe: verify ok` line of a console log.
/// A migrated guest's lines are spread over two log files, so they are
/// told apart by their number, not their position.
pub fn verify_lines(log: &str) -> impl Iterator<Item = (u64, u64)> + '_ {
    log.lines().filter_map(|l| {
        let rest = l.split("probe: verify ok n=").nth(1)?;
        let n = rest.split_whitespace().next()?.parse().ok()?;
        let gap = rest
            .split("window_gap_ms=")
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some((n, gap))
    })
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
        let (g, domid) = Guest::launch(name, mem_mb, workset_mb);
        wait_for_or(
            &format!("{name}'s first probe verify"),
            GUEST_BOOT,
            || g.verified() > 0,
            || g.diagnostics(),
        );
        (g, domid)
    }

    /// Starts `lab-guest NAME MEM WORKSET` (after destroying any domain of
    /// that name and clearing its console logs) without waiting for the
    /// probe, for tests that only need a running PV guest or wait their own
    /// way; returns the guard and the domid. The domid is not kept in the
    /// guard: a save/restore or migration gives the guest a new one.
    pub fn launch(name: &str, mem_mb: u32, workset_mb: u32) -> (Guest, u32) {
        let _ = Command::new("xl").args(["destroy", name]).output();
        // xenconsoled appends to the log of a name: start from empty ones
        // (also the temporary name an incoming migration has).
        for f in [name.to_string(), format!("{name}--incoming")] {
            let _ = std::fs::remove_file(format!("/var/log/xen/console/guest-{f}.log"));
        }
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

    /// The number of the probe's latest verify (`verify ok n=N`; it counts
    /// on across migrations), 0 before the first.
    pub fn last_verify(&self) -> u64 {
        last_verify(&self.log())
    }

    /// The longest pause the guest saw after its verify number `n`: the
    /// largest `window_gap_ms` of its later verify lines (gap lines only
    /// report pauses above the probe's threshold; this is exact).
    pub fn pause_after(&self, n: u64) -> Option<u64> {
        pause_after(&self.log(), n)
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

/// Set in the environment of a test re-run by [`rerun_as_nobody`].
const UNPRIV_CHILD: &str = "XAPI_RS_UNPRIV_CHILD";

/// True inside the unprivileged re-run of a test (see [`rerun_as_nobody`]).
pub fn in_unprivileged_child() -> bool {
    std::env::var_os(UNPRIV_CHILD).is_some()
}

/// Re-runs the test `test` of the current test binary as `nobody` (uid and
/// gid 65534, no groups) and asserts that it passed.  The test itself
/// checks [`in_unprivileged_child`] to know which side it is on.
pub fn rerun_as_nobody(test: &str) {
    use std::os::unix::fs::PermissionsExt;
    // The binary may sit under /root where nobody cannot exec it.
    let exe = std::env::temp_dir().join(format!("xapi-rs-unpriv-{}", std::process::id()));
    std::fs::copy(std::env::current_exe().expect("current exe"), &exe)
        .expect("copy the test binary to /tmp");
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod the copy");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args([test, "--exact", "--ignored", "--nocapture"])
        .env(UNPRIV_CHILD, "1")
        .output()
        .expect("setpriv (util-linux) in dom0");
    let _ = std::fs::remove_file(&exe);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{test} as nobody failed:\n{text}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_lines_are_told_apart_by_number() {
        let log = "probe: ready workset_mb=16\n\
                   probe: verify ok n=7 max_gap_ms=0 window_gap_ms=40 at_ms=1\n\
                   probe: gap ms=900 at_ms=2\n\
                   probe: verify ok n=9 max_gap_ms=900 window_gap_ms=900 at_ms=3\n\
                   probe: verify ok n=8 max_gap_ms=0 window_gap_ms=60 at_ms=2\n\
                   probe: verify FAILED n=10 at page 3\n";
        let v: Vec<_> = verify_lines(log).collect();
        assert_eq!(v, vec![(7, 40), (9, 900), (8, 60)]);
        assert_eq!(
            verify_lines(log)
                .filter(|&(n, _)| n > 7)
                .map(|(_, g)| g)
                .max(),
            Some(900)
        );
    }
}
