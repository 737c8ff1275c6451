//! Black-box tests on real Xen in the lab. `lab test` runs them (`--ignored`)
//! against a lab it has just brought up; by hand: `lab up`, then
//! `cargo test -p lab --test lab -- --ignored --test-threads=1`.

use lab::hosts::LabState;
use lab::testing::{lab, sh, wait_console};
use lab::util::poll;
use std::time::Duration;

const NEEDS_LAB: &str = "needs the lab: run by `lab test`";

/// `xl info` as key/value pairs.
fn xl_info(st: &LabState, host: u32) -> Vec<(String, String)> {
    sh(st, host, "xl info")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn get<'a>(info: &'a [(String, String)], key: &str) -> &'a str {
    info.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("xl info has no {key}"))
}

/// How long the smoke test waits for a console line (TCG boots are slow).
const CONSOLE_WAIT: Duration = Duration::from_secs(300);

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn smoke_the_lab_runs_our_xen_build_and_its_daemons() {
    let _ = NEEDS_LAB;
    let st = lab("lab up");
    let info = xl_info(&st, 1);
    assert!(
        get(&info, "xen_extra").ends_with(lab::xen::VENDOR_VERSION),
        "not the lab's hypervisor build: xen_extra = {}",
        get(&info, "xen_extra")
    );
    assert_eq!(get(&info, "xen_major"), "4");
    assert_eq!(get(&info, "xen_minor"), "17");
    // The daemons the toolstack needs.
    let procs = sh(&st, 1, "ps -eo comm=");
    assert!(
        procs.lines().any(|p| p == "oxenstored" || p == "xenstored"),
        "no xenstored running:\n{procs}"
    );
    assert!(
        procs.lines().any(|p| p == "xenconsoled"),
        "no xenconsoled:\n{procs}"
    );
    // Dom0 is Xen's control domain with the lab's identity and network.
    assert_eq!(sh(&st, 1, "cat /proc/xen/capabilities").trim(), "control_d");
    assert_eq!(sh(&st, 1, "hostname").trim(), "labhost1");
    assert!(sh(&st, 1, "ip -4 -o addr show xenbr0").contains("10.77.0.1/24"));
}

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn smoke_a_probe_guest_boots_reports_and_survives_xl_migrate() {
    let st = lab("lab up");
    let name = "smoke-probe";
    let _ = st.exec(1, &format!("xl destroy {name}"), Duration::from_secs(60));
    // 128 MiB (64 cannot hold dom0's kernel and the kit) with a small
    // working set keeps a TCG migration through ssh short; xenguest's own
    // tests move 256 MiB.
    let domid = sh(&st, 1, &format!("lab-guest {name} 128 4"));
    let domid: u32 = domid.trim().parse().expect("lab-guest prints the domid");
    assert!(domid > 0);
    wait_console(&st, 1, name, "probe: ready workset_mb=4", 0, CONSOLE_WAIT);
    let before = wait_console(&st, 1, name, "probe: verify ok", 0, CONSOLE_WAIT).len();

    // The reference toolstack's live migration to localhost: shadow log-dirty
    // works in the lab's hypervisor (Debian's packaged one fails here).
    let out = st
        .exec(
            1,
            &format!("xl migrate -s lab-ssh-local {name} localhost"),
            Duration::from_secs(1800),
        )
        .expect("xl migrate ran");
    assert!(
        out.status.success(),
        "xl migrate failed ({}; 124 = timed out):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let list = sh(&st, 1, "xl list");
    let rows: Vec<&str> = list.lines().filter(|l| l.contains(name)).collect();
    assert_eq!(rows.len(), 1, "exactly one copy after migration:\n{list}");
    assert!(
        !rows[0].starts_with(&format!("{name}--")),
        "renamed copy left behind:\n{list}"
    );
    let new_id: u32 = sh(&st, 1, &format!("xl domid {name}"))
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_id, domid, "a migration makes a new domain");

    // The guest runs on: it verifies its memory again after the move (a
    // failure line fails wait_console) and saw its pause as a clock gap.
    sh(
        &st,
        1,
        &format!("echo v > \"$(xenstore-read /local/domain/{new_id}/console/tty)\""),
    );
    wait_console(&st, 1, name, "probe: verify ok", before, CONSOLE_WAIT);
    let gaps = wait_console(&st, 1, name, "probe: gap ms=", 0, CONSOLE_WAIT);
    eprintln!("guest-observed pauses: {gaps:?}");
    sh(&st, 1, &format!("xl destroy {name}"));
    let list = sh(&st, 1, "xl list");
    assert!(!list.contains(name), "guest left behind:\n{list}");
}

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn lab_exec_reports_exit_status_and_output() {
    let st = lab("lab up");
    let out = st
        .exec(1, "echo out; echo err >&2; exit 7", Duration::from_secs(60))
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let e = st.exec(1, "sleep 30", Duration::from_secs(2)).unwrap();
    assert_eq!(e.status.code(), Some(124), "remote timeout enforced");
    assert!(
        st.exec(9, "true", Duration::from_secs(5)).is_err(),
        "no host 9"
    );
}

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn two_hosts_are_up_with_distinct_identities_and_share_the_lab_network() {
    let st = lab("lab up");
    assert_eq!(st.hosts.len(), 2, "run with `lab up --hosts 2`");
    for h in 1..=2u32 {
        assert_eq!(sh(&st, h, "hostname").trim(), format!("labhost{h}"));
        assert_eq!(sh(&st, h, "cat /proc/xen/capabilities").trim(), "control_d");
    }
    // Host 1 reaches host 2 over the private lab network, and back.
    sh(&st, 1, "ping -c 3 -W 5 10.77.0.2");
    sh(&st, 2, "ping -c 3 -W 5 10.77.0.1");
}

/// Runs the `lab` binary with its own run directory (a second, throw-away lab).
fn side_lab(run: &std::path::Path, args: &[&str]) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_lab"));
    c.args(args).env("XAPI_LAB_RUN", run);
    c
}

fn lab_processes(run: &std::path::Path) -> String {
    let out = std::process::Command::new("pgrep")
        .args(["-a", "-f", &format!("{}/", run.display())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn failures_a_dying_qemu_is_reported_with_its_log_and_nothing_is_left_behind() {
    let _ = lab("lab up"); // the caches are warm once a lab is up
    let run = std::env::temp_dir().join(format!("lab-fault-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let up = side_lab(&run, &["up", "--no-xapi"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the host once Xen is printing (QEMU fully started), as a crash would.
    poll(
        "the side lab's serial log",
        Duration::from_secs(300),
        Duration::from_millis(100),
        || {
            Ok(std::fs::metadata(run.join("host1.serial.log"))
                .ok()
                .filter(|m| m.len() > 0)
                .map(|_| ()))
        },
    )
    .unwrap();
    let pid: u32 = poll(
        "the side lab's QEMU pidfile",
        Duration::from_secs(300),
        Duration::from_millis(100),
        || {
            Ok(std::fs::read_to_string(run.join("host1.pid"))
                .ok()
                .and_then(|s| s.trim().parse().ok()))
        },
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let out = lab::util::wait_output(up, Duration::from_secs(300), "lab up").unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lab up must fail:\n{err}");
    assert!(err.contains("step 'boot host 1'"), "names the step:\n{err}");
    assert!(
        err.contains(&format!("pid {pid}")) && err.contains("died"),
        "says what happened:\n{err}"
    );
    assert!(
        err.contains("serial log") && err.contains("logs kept in"),
        "points at the log:\n{err}"
    );
    assert_eq!(lab_processes(&run), "", "processes left behind");
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(run.with_extension("failed"));
}

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn failures_a_dom0_that_never_gets_ready_times_out_with_a_clear_message() {
    let _ = lab("lab up");
    let run = std::env::temp_dir().join(format!("lab-slow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run);
    let out = lab::util::output_with_timeout(
        side_lab(&run, &["up", "--no-xapi"]).env("XAPI_LAB_BOOT_TIMEOUT", "3"),
        Duration::from_secs(300),
    )
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "lab up must fail:\n{err}");
    assert!(
        err.contains("dom0 not ready"),
        "says what it waited for:\n{err}"
    );
    assert!(err.contains("serial log"), "points at the log:\n{err}");
    assert_eq!(lab_processes(&run), "", "processes left behind");
    // And commands on a lab that is not up say so.
    let out = side_lab(&run, &["exec", "--", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lab is up"));
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(run.with_extension("failed"));
}
