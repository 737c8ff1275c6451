//! Running the lab's external commands: every one is bounded by a timeout, its
//! output goes to a log, and a failure names the step and the log.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Prints a progress line (stderr, so `lab env` output stays clean).
pub fn say(msg: impl AsRef<str>) {
    eprintln!("lab: {}", msg.as_ref());
}

/// The last `n` lines of a log, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        s = String::from_utf8_lossy(&buf).into_owned();
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` as step `what`, output appended to `log`, killed after `timeout`.
/// Prints a heartbeat while it runs so long steps show progress.
pub fn run_step(what: &str, cmd: &mut Command, log: &Path, timeout: Duration) -> Result<()> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log {}", log.display()))?;
    let err = out.try_clone()?;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("step '{what}': cannot start {:?}", cmd.get_program()))?;
    let mut next_beat = Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait()? {
            if status.success() {
                say(format!("{what}: done in {}s", start.elapsed().as_secs()));
                return Ok(());
            }
            bail!(
                "step '{what}' failed ({status}); log: {}\n--- last lines ---\n{}",
                log.display(),
                tail(log, 25)
            );
        }
        let el = start.elapsed();
        if el > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "step '{what}' timed out after {}s; log: {}\n--- last lines ---\n{}",
                timeout.as_secs(),
                log.display(),
                tail(log, 25)
            );
        }
        if el >= next_beat {
            say(format!(
                "{what}: {}s... (log: {})",
                el.as_secs(),
                log.display()
            ));
            next_beat += Duration::from_secs(20);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs a short command and returns its stdout; a failure carries its stderr.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = output_with_timeout(cmd, Duration::from_secs(120))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like `Command::output`, but kills the command after `timeout`.
pub fn output_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    wait_output(child, timeout, &format!("{:?}", cmd.get_program()))
}

/// Waits for a spawned child with piped output, killing it after `timeout`.
pub fn wait_output(
    mut child: std::process::Child,
    timeout: Duration,
    what: &str,
) -> Result<Output> {
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} timed out after {}s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: t1.join().unwrap_or_default(),
        stderr: t2.join().unwrap_or_default(),
    })
}

/// Polls `f` every `every` until it returns `Some`, or fails after `timeout`
/// with `what` in the message. Never a fixed sleep: the condition decides.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            bail!("timed out after {}s waiting for {what}", timeout.as_secs());
        }
        std::thread::sleep(every);
    }
}

/// sha256 of the given parts, hex, first 16 characters: a cache key.
pub fn hash_key(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Where the cached images live (kept across runs and clones).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XAPI_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/xapi-rs-lab"))
}

/// The user's run directory: `XAPI_LAB_RUN`, else /var/tmp/xapi-rs-lab.
/// `lab up` keeps its lab here; commands that boot hosts of their own keep
/// them in a subdirectory ([`OWN_LABS`]).
pub fn base_run_dir() -> PathBuf {
    std::env::var_os("XAPI_LAB_RUN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/xapi-rs-lab"))
}

/// The subdirectories of the run directory where `lab test` and `lab bench
/// migrate` keep their own labs (they boot and take down hosts as they go,
/// and must never take down the lab the user brought up). `test2` is
/// nested in `test`: the hosts of `lab test`'s second stream of phases,
/// which its own phases must not take down.
pub const OWN_LABS: &[&str] = &["test", "bench", "test2"];

static OWN_RUN_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes this process's lab the one in `<base>/<name>` (`name` one of
/// [`OWN_LABS`]) and returns its directory. Once per process.
pub fn use_own_lab(name: &str) -> Result<PathBuf> {
    let dir = own_lab_dir(&base_run_dir(), name)?;
    OWN_RUN_DIR
        .set(dir.clone())
        .map_err(|d| anyhow::anyhow!("this process's lab is already {}", d.display()))?;
    // So that a `lab down` typed meanwhile leaves this command's hosts alone.
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(OWNER_FILE), std::process::id().to_string())?;
    Ok(dir)
}

/// In an own lab's directory: the pid of the command (`lab test`, `lab
/// bench`) whose hosts it holds.
pub const OWNER_FILE: &str = "owner.pid";

/// The pid of the `lab` command still running that owns the lab in `dir`,
/// if any (a stale file, or a pid now used by another program, is none).
pub fn running_owner(dir: &Path) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(dir.join(OWNER_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let lab = cmdline
        .split(|b| *b == 0)
        .next()
        .and_then(|arg0| {
            Path::new(std::str::from_utf8(arg0).ok()?)
                .file_name()?
                .to_str()
        })
        .is_some_and(|n| n == "lab" || n.starts_with("lab-"));
    (pid != std::process::id() && pid_alive(pid) && lab).then_some(pid)
}

/// Every own lab's directory under the user's run directory `base`, the
/// nested one first (taking `test` down leaves `test/test2` alone).
pub fn own_lab_dirs(base: &Path) -> Vec<PathBuf> {
    vec![
        base.join("test").join("test2"),
        base.join("test"),
        base.join("bench"),
    ]
}

/// This `lab` program's path, to start it again (the hub, `lab test`'s
/// second stream) or print it. `lab test`'s unit tests phase builds the
/// workspace, which links `target/release/lab` again (its dependencies'
/// features unify with the workspace's) while this one runs: the kernel
/// then names the running file "PATH (deleted)", and the file at PATH is
/// the same program rebuilt.
pub fn lab_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(
        match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(p) => PathBuf::from(p),
            None => exe,
        },
    )
}

/// The directory of own lab `name` under the run directory `base`.
pub fn own_lab_dir(base: &Path, name: &str) -> Result<PathBuf> {
    if !OWN_LABS.contains(&name) {
        bail!("{name} is not one of the run directory's own labs {OWN_LABS:?}");
    }
    Ok(base.join(name))
}

/// Where this process's lab keeps its state, overlays and logs: the base
/// run directory unless [`use_own_lab`] chose one of its own.
pub fn run_dir() -> PathBuf {
    OWN_RUN_DIR.get().cloned().unwrap_or_else(base_run_dir)
}

/// Whether a process with command line `cmdline` belongs to the lab in `dir`
/// (and not to a lab in one of its [`OWN_LABS`] subdirectories): its
/// arguments name a file in `dir` (QEMU's overlays, sockets and logs, ssh's
/// control socket) or `dir` itself (the hub's `--dir`).
pub fn belongs_to_lab(cmdline: &str, dir: &Path) -> bool {
    let names = |d: &Path| {
        let d = d.display().to_string();
        cmdline.contains(&format!("{d}/")) || cmdline.split_whitespace().any(|w| w == d)
    };
    names(dir) && !OWN_LABS.iter().any(|s| names(&dir.join(s)))
}

/// Whether `name` is one of the variables `cargo run` (and `cargo test`)
/// sets for the program it runs, describing *that* package. A cargo started
/// from the lab inherits them, and build scripts that declare
/// `rerun-if-env-changed` on them (ring's does, for CARGO_MANIFEST_DIR and
/// CARGO_PKG_*) then look changed to cargo against a build from a shell, so
/// ring, rustls and everything above them were rebuilt on every switch.
pub fn set_by_cargo_for_its_program(name: &str) -> bool {
    matches!(
        name,
        "CARGO_MANIFEST_DIR"
            | "CARGO_MANIFEST_PATH"
            | "CARGO_MANIFEST_LINKS"
            | "CARGO_CRATE_NAME"
            | "CARGO_BIN_NAME"
            | "CARGO_PRIMARY_PACKAGE"
            | "CARGO_TARGET_TMPDIR"
            | "CARGO_RUSTC_CURRENT_DIR"
            | "OUT_DIR"
    ) || name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
}

/// A `cargo` command (the one that built the lab) run in the workspace root,
/// without the variables [`set_by_cargo_for_its_program`]: the builds it
/// does are then the same, fingerprints included, as from a shell.
pub fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(set_by_cargo_for_its_program) {
            c.env_remove(&k);
        }
    }
    c.current_dir(workspace_root());
    c
}

/// The workspace root: this crate lives in `tests/lab`.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Removes the cache entries `PREFIX-*` other than `keep`: a changed recipe
/// leaves its old image behind otherwise, and images are large.
pub fn prune_cache(prefix: &str, keep: &Path) {
    let Ok(rd) = std::fs::read_dir(cache_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        // Only finished entries: a `.tmpPID` may be another lab's build.
        if name.starts_with(&format!("{prefix}-")) && !name.contains(".tmp") && p != keep {
            say(format!("cache: removing old {}", p.display()));
            let _ = std::fs::remove_dir_all(&p);
        }
    }
}

/// Quotes a word for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether a process is alive (and not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .map(|r| r.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_owner_is_a_live_lab_command() {
        use std::os::unix::process::CommandExt;
        let dir = std::env::temp_dir().join(format!("lab-owner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(running_owner(&dir), None, "no file");
        std::fs::write(dir.join(OWNER_FILE), "junk").unwrap();
        assert_eq!(running_owner(&dir), None, "junk");
        // pid 1 runs, but is not a lab command.
        std::fs::write(dir.join(OWNER_FILE), "1").unwrap();
        assert_eq!(running_owner(&dir), None, "not lab");
        // A process whose argv[0] is `lab`, as the lab binary's is: set by
        // the exec itself (a shell's `exec -a` left a window in which the
        // child was still `bash`, and CI hit it).
        let mut child = Command::new("sleep")
            .arg0("lab")
            .arg("20")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::fs::write(dir.join(OWNER_FILE), child.id().to_string()).unwrap();
        assert_eq!(running_owner(&dir), Some(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(running_owner(&dir), None, "exited");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn quoting_survives_a_shell() {
        for s in ["plain", "with space", "it's", "", "$(x)"] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", shell_quote(s)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), s);
        }
    }

    #[test]
    fn a_failing_step_names_itself_and_its_log() {
        let dir = std::env::temp_dir().join(format!("lab-util-{}", std::process::id()));
        let log = dir.join("x.log");
        let e = run_step(
            "demo",
            Command::new("sh").args(["-c", "echo boom; exit 3"]),
            &log,
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("step 'demo' failed"), "{e}");
        assert!(e.contains("x.log") && e.contains("boom"), "{e}");
        let e = run_step(
            "slow",
            Command::new("sleep").arg("30"),
            &log,
            Duration::from_millis(300),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("timed out"), "{e}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn test_and_bench_labs_live_under_the_run_directory() {
        let base = Path::new("/var/tmp/lab-x");
        assert_eq!(own_lab_dir(base, "test").unwrap(), base.join("test"));
        assert_eq!(own_lab_dir(base, "bench").unwrap(), base.join("bench"));
        assert!(own_lab_dir(base, "").is_err() && own_lab_dir(base, "../x").is_err());
        // Without a choice of its own, a process's lab is the user's.
        assert_eq!(run_dir(), base_run_dir());
    }

    #[test]
    fn processes_belong_to_their_own_lab_only() {
        let base = Path::new("/var/tmp/lab-x");
        let test = base.join("test");
        let qemu = |d: &Path| {
            format!(
                "qemu-system-x86_64 -drive file={}/host1.qcow2,if=virtio -daemonize",
                d.display()
            )
        };
        let hub = |d: &Path| format!("/w/target/release/lab hub --dir {} --hosts 1", d.display());
        let ssh = |d: &Path| format!("ssh -o ControlPath={}/ssh-4242.ctl -f -N", d.display());
        for p in [qemu(base), hub(base), ssh(base)] {
            assert!(belongs_to_lab(&p, base), "{p}");
            assert!(!belongs_to_lab(&p, &test), "{p}");
        }
        for p in [qemu(&test), hub(&test), ssh(&test)] {
            assert!(belongs_to_lab(&p, &test), "{p}");
            assert!(
                !belongs_to_lab(&p, base),
                "{p}: the user's lab must not take the test's down"
            );
        }
        // The second stream's hosts, restored from the test's snapshot,
        // belong to it alone: the test's phases taking their hosts down
        // leave them running.
        let test2 = test.join("test2");
        let restored = format!(
            "{} -incoming exec:cat {}/snapshot/host1.state",
            qemu(&test2),
            test.display()
        );
        for p in [restored, hub(&test2), ssh(&test2)] {
            assert!(belongs_to_lab(&p, &test2), "{p}");
            assert!(!belongs_to_lab(&p, &test), "{p}");
            assert!(!belongs_to_lab(&p, base), "{p}");
        }
        assert_eq!(
            own_lab_dirs(base)[0],
            test2,
            "the nested lab goes down first"
        );
        // A sibling directory whose name starts like the lab's is another lab.
        assert!(!belongs_to_lab(&qemu(Path::new("/var/tmp/lab-xy")), base));
        assert!(!belongs_to_lab(&hub(Path::new("/var/tmp/lab-x2")), base));
    }

    #[test]
    fn cargo_drops_what_cargo_run_set_for_the_lab_only() {
        for v in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_EXE_lab",
            "OUT_DIR",
        ] {
            assert!(set_by_cargo_for_its_program(v), "{v}");
        }
        // The user's configuration of cargo and rustc stays.
        for v in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_PROFILE_RELEASE_DEBUG",
            "RUSTFLAGS",
            "PATH",
        ] {
            assert!(!set_by_cargo_for_its_program(v), "{v}");
        }
        // Under `cargo test` this process has CARGO_MANIFEST_DIR set.
        let c = cargo();
        let removed: Vec<_> = c
            .get_envs()
            .filter(|(_, v)| v.is_none())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert!(
            removed.iter().any(|k| k == "CARGO_MANIFEST_DIR"),
            "{removed:?}"
        );
    }

    #[test]
    fn cache_keys_change_with_any_part() {
        assert_ne!(hash_key(&[b"a", b"bc"]), hash_key(&[b"ab", b"c"]));
        assert_eq!(hash_key(&[b"a"]), hash_key(&[b"a"]));
    }
}
