//! Fresh hosts in seconds instead of a cold boot. `lab test` boots its
//! first hosts cold, installs the toolstack and, once it answers and before
//! any test ran, saves each whole machine: QEMU stops it and migrates its
//! memory and devices into a file, and the disk overlay is frozen as the
//! read-only backing file of later overlays. A fresh host is then restored
//! from that: a new overlay on the frozen disk, QEMU started with
//! `-incoming` from the file (new ports), dom0's clock set to now (it
//! resumes at the time of the snapshot), fresh entropy mixed in, its ssh
//! master connection made, and the daemon asked to answer. Each run takes
//! its own snapshot (the value [`save`] returns; nothing is read back from
//! an earlier run), so a restored host is exactly the freshly installed one.

use crate::hosts::{
    launch_new_host, overlay_path, qemu_argv, qmp_path, start_hub, wait_ready, LabState, Machine,
};
use crate::qmp::{migration_state, Migration, Qmp};
use crate::util::{capture, pid_alive, poll, run_dir, say, shell_quote, tail};
use anyhow::{bail, Context, Result};
use serde_json::json;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The run directory's subdirectory with the snapshot; taking a phase's
/// hosts down ([`crate::hosts::down`]) keeps it.
pub const SNAPSHOT_DIR: &str = "snapshot";

/// A saved lab: hosts `1..=hosts`, as they were when [`save`] stopped them.
/// Serialisable: `lab test`'s second stream of phases restores its hosts
/// from its parent's snapshot.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub dir: PathBuf,
    pub hosts: u32,
    pub machine: Machine,
    pub key: PathBuf,
    pub password: String,
    /// When it was taken.
    pub taken: SystemTime,
}

impl Snapshot {
    /// Host `i`'s memory and device state (QEMU's migration stream).
    pub fn state_file(&self, i: u32) -> PathBuf {
        self.dir.join(format!("host{i}.state"))
    }

    /// Host `i`'s frozen disk: the backing file of a restored host's overlay.
    pub fn disk(&self, i: u32) -> PathBuf {
        self.dir.join(format!("host{i}.disk.qcow2"))
    }

    /// Host `i`'s serial log up to the snapshot (its boot).
    pub fn serial_log(&self, i: u32) -> PathBuf {
        self.dir.join(format!("host{i}.serial.log"))
    }
}

/// Saves every host of the lab `st` into the run directory's
/// [`SNAPSHOT_DIR`] and takes the lab down (the hosts stop for good).
pub fn save(st: &LabState) -> Result<Snapshot> {
    let start = Instant::now();
    let machine = st
        .machine
        .clone()
        .context("the lab's state file does not say what its hosts run")?;
    let dir = run_dir().join(SNAPSHOT_DIR);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let snap = Snapshot {
        dir,
        hosts: st.hosts.len() as u32,
        machine,
        key: st.key.clone(),
        password: st.password.clone(),
        taken: SystemTime::now(),
    };
    for h in &st.hosts {
        save_host(st, h, &snap).with_context(|| format!("saving host {}", h.index))?;
    }
    crate::hosts::down()?;
    say(format!(
        "snapshot of {} host(s) saved in {}s ({})",
        snap.hosts,
        start.elapsed().as_secs(),
        snap.dir.display()
    ));
    Ok(snap)
}

fn save_host(st: &LabState, h: &crate::hosts::HostState, snap: &Snapshot) -> Result<()> {
    let i = h.index;
    // No connection through the forwarded ports may be open in the saved
    // state: a restored host gets new ports, and a master would be dead.
    st.stop_ssh_master(h);
    let mut q = Qmp::connect(&qmp_path(&run_dir(), i))?;
    q.execute("stop", json!({}))?;
    // QEMU 7.2 limits a migration to 32 MiB/s unless told otherwise.
    q.execute(
        "migrate-set-parameters",
        json!({"max-bandwidth": 64u64 << 30}),
    )?;
    let part = snap.dir.join(format!("host{i}.state.part"));
    q.execute(
        "migrate",
        json!({"uri": format!("exec:cat > {}", shell_quote(&part.display().to_string()))}),
    )?;
    poll(
        &format!("host {i}'s state to be written to {}", part.display()),
        Duration::from_secs(900),
        Duration::from_millis(200),
        || match migration_state(&q.execute("query-migrate", json!({}))?) {
            Migration::Completed => Ok(Some(())),
            Migration::Failed(e) => bail!("saving host {i}'s state failed: {e}"),
            Migration::Running => Ok(None),
        },
    )?;
    // QEMU may close the connection before its reply: the pid tells.
    let _ = q.execute("quit", json!({}));
    poll(
        &format!("host {i}'s QEMU (pid {}) to quit", h.pid),
        Duration::from_secs(60),
        Duration::from_millis(50),
        || Ok((!pid_alive(h.pid)).then_some(())),
    )?;
    let disk = snap.disk(i);
    std::fs::rename(overlay_path(&run_dir(), i), &disk)?;
    // Frozen: QEMU opens backing files read-only anyway.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o444))?;
    std::fs::copy(&h.serial_log, snap.serial_log(i))?;
    std::fs::rename(&part, snap.state_file(i))?;
    Ok(())
}

/// Hosts `1..=n` of `snap`, restored as a lab in the run directory (which
/// holds no lab: take the previous one down first); returns once every
/// dom0 is ready, its clock right and xapi-rs answering.
pub fn restore(snap: &Snapshot, n: u32, timeout: Duration) -> Result<LabState> {
    if n == 0 || n > snap.hosts {
        bail!("the snapshot has {} host(s), not {n}", snap.hosts);
    }
    let start = Instant::now();
    let dir = run_dir();
    std::fs::create_dir_all(&dir)?;
    let mut state = LabState {
        hosts: vec![],
        hub_pid: 0,
        key: snap.key.clone(),
        password: snap.password.clone(),
        machine: Some(snap.machine.clone()),
    };
    state.hub_pid = start_hub(&dir, n)?;
    state.save()?;
    for i in 1..=n {
        capture(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(snap.disk(i))
                .arg(overlay_path(&dir, i)),
        )?;
        // The serial log is the snapshot's plus a marker, written before
        // QEMU appends to it.
        let mut log = std::fs::read(snap.serial_log(i))?;
        log.extend_from_slice(restored_marker(snap.taken).as_bytes());
        let h = launch_new_host(&dir, i, |h| {
            // The cold-boot command line is what the state file keeps: a
            // power cut and `power_on` boot the host from its disk for real.
            let cold = qemu_argv(&snap.machine, &dir, h);
            let mut argv = cold.clone();
            argv.push("-incoming".into());
            argv.push(format!(
                "exec:cat {}",
                shell_quote(&snap.state_file(i).display().to_string())
            ));
            // A retry starts from the snapshot's log again.
            std::fs::write(&h.serial_log, &log)?;
            Ok((cold, argv))
        })?;
        state.hosts.push(h);
        state.save()?;
    }
    for h in state.hosts.clone() {
        wait_loaded(&h, &dir, timeout)?;
        wait_ready(&state, &h, timeout.saturating_sub(start.elapsed()))?;
        set_clock(&state, h.index)?;
        if let Err(e) = state.start_ssh_master(&h) {
            say(format!("{e:#}; using one connection per command"));
        }
        poll(
            &format!("xapi-rs on restored host {} to answer", h.index),
            Duration::from_secs(90),
            Duration::from_millis(500),
            || Ok(crate::hosts::http_answers(h.http_port).then_some(())),
        )?;
        say(format!(
            "host {}: restored from the snapshot, ready after {}s",
            h.index,
            start.elapsed().as_secs()
        ));
    }
    Ok(state)
}

/// The line a restored host's serial log gets between the boot and what
/// follows the restore.
fn restored_marker(taken: SystemTime) -> String {
    let at = taken
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format!("\n==== lab: restored from the snapshot taken at {at} (Unix time) ====\n")
}

/// Waits until QEMU has loaded host `h`'s saved state, and lets it run.
fn wait_loaded(h: &crate::hosts::HostState, dir: &Path, timeout: Duration) -> Result<()> {
    let mut q = Qmp::connect(&qmp_path(dir, h.index))?;
    poll(
        &format!("host {} to be restored from the snapshot", h.index),
        timeout,
        Duration::from_millis(200),
        || {
            if !pid_alive(h.pid) {
                bail!(
                    "host {}: QEMU (pid {}) died loading the snapshot; log: {}",
                    h.index,
                    h.pid,
                    tail(&dir.join(format!("host{}.qemu.log", h.index)), 20)
                );
            }
            let st = q.execute("query-status", json!({}))?;
            match st["status"].as_str() {
                Some("running") => Ok(Some(())),
                // The host was saved stopped, so QEMU keeps it paused
                // once the state is loaded.
                Some("paused") => {
                    q.execute("cont", json!({}))?;
                    Ok(None)
                }
                // "inmigrate": still loading.
                _ => Ok(None),
            }
        },
    )
}

/// The dom0 script that sets the clock to `now` (since the epoch), mixes
/// `seed` (hex) into the kernel's random pool (every restored host would
/// otherwise start from the same one) and prints the clock.
pub fn clock_script(now: Duration, seed: &str) -> String {
    format!(
        "date -s @{}.{:09} >/dev/null && printf %s {seed} > /dev/urandom && date +%s",
        now.as_secs(),
        now.subsec_nanos()
    )
}

/// Whether a dom0 clock reading `theirs` (seconds) fits `ours` taken just
/// after it, allowing for the slowness of TCG.
pub fn clock_is_right(theirs: u64, ours: u64) -> bool {
    theirs.abs_diff(ours) <= 30
}

fn set_clock(st: &LabState, n: u32) -> Result<()> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let seed: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let out = st.exec_ok(n, &clock_script(now, &seed), Duration::from_secs(60))?;
    let theirs: u64 = out
        .trim()
        .parse()
        .with_context(|| format!("host {n}: `date +%s` printed {out:?}"))?;
    let ours = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    if !clock_is_right(theirs, ours) {
        bail!("host {n}: dom0's clock reads {theirs} after setting it, the build machine's {ours}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_script_sets_the_time_to_the_nanosecond_and_reads_it_back() {
        let s = clock_script(Duration::new(1_764_633_600, 5_000_000), "00ff");
        assert_eq!(
            s,
            "date -s @1764633600.005000000 >/dev/null && printf %s 00ff > /dev/urandom && date +%s"
        );
        assert!(clock_is_right(100, 100) && clock_is_right(100, 130) && clock_is_right(130, 100));
        // A dom0 still at the time of the snapshot (minutes ago).
        assert!(!clock_is_right(100, 400));
    }

    #[test]
    fn a_snapshot_keeps_each_host_apart() {
        let s = Snapshot {
            dir: "/r/test/snapshot".into(),
            hosts: 2,
            machine: Machine {
                xen: "/c/xen".into(),
                kernel: "/c/vmlinuz".into(),
                initrd: "/c/initrd".into(),
                cpus: 2,
            },
            key: "/c/key".into(),
            password: "pw".into(),
            taken: UNIX_EPOCH + Duration::from_secs(42),
        };
        assert_eq!(s.state_file(2), Path::new("/r/test/snapshot/host2.state"));
        assert_eq!(s.disk(1), Path::new("/r/test/snapshot/host1.disk.qcow2"));
        assert_eq!(
            s.serial_log(1),
            Path::new("/r/test/snapshot/host1.serial.log")
        );
        assert!(restored_marker(s.taken).contains("taken at 42 "));
    }

    /// A restored host boots cold after a power cut: the command line kept
    /// for `power_on` has no `-incoming`, and names the host's own overlay,
    /// sockets and log.
    #[test]
    fn the_kept_command_line_is_a_cold_boot_of_the_hosts_own_files() {
        let m = Machine {
            xen: "/c/xen".into(),
            kernel: "/c/vmlinuz".into(),
            initrd: "/c/initrd".into(),
            cpus: 2,
        };
        let dir = Path::new("/r/test");
        let h = crate::hosts::HostState {
            index: 2,
            pid: 0,
            ssh_port: 2222,
            http_port: 8080,
            https_port: 4443,
            serial_log: dir.join("host2.serial.log"),
            qemu_argv: vec![],
        };
        let argv = qemu_argv(&m, dir, &h).join(" ");
        assert!(!argv.contains("-incoming"), "{argv}");
        for part in [
            "file=/r/test/host2.qcow2,",
            "hostfwd=tcp:127.0.0.1:2222-:22",
            "lab.host=2,",
            "unix:/r/test/host2.qmp,server=on,wait=off",
            "path=/r/test/host2.serial.log,append=on",
            "mac=52:54:00:77:00:02",
        ] {
            assert!(argv.contains(part), "{part} not in {argv}");
        }
    }
}
