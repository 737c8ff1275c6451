//! The toolstack's Debian package in a dom0, as an operator uses it: the lab
//! installed it (`apt install ./xapi-rs_*.deb`); removing it stops the
//! daemon and nothing else (a running guest runs on), reinstalling brings
//! the daemon back with its database, and so does a purge. `lab test` runs
//! it on a host of its own (`fresh_host` in the name); by hand: `lab up`,
//! then `cargo test -p lab --test package -- --ignored`.

use dom0_support::CALM_PROBE_ARGS;
use lab::hosts::{self, LabState};
use lab::testing::{self, console_lines, lab, rpc_ok, sh, wait_console};
use std::time::Duration;

/// A first guest boot and the probe's answers under TCG.
const CONSOLE_WAIT: Duration = Duration::from_secs(420);

/// Each JSON-RPC call.
const RPC: Duration = Duration::from_secs(30);

/// A root session (waiting for the daemon after an install) and the pool.
fn login(st: &LabState) -> (String, String) {
    let session = testing::login(st, Duration::from_secs(180));
    let pools = rpc_ok(st, "pool.get_all", serde_json::json!([session]), RPC);
    let pools = pools.as_array().expect("pool.get_all returns a list");
    assert_eq!(pools.len(), 1, "one pool: {pools:?}");
    (session, pools[0].as_str().unwrap().to_string())
}

fn pool_label(st: &LabState) -> String {
    let (s, pool) = login(st);
    rpc_ok(st, "pool.get_name_label", serde_json::json!([s, pool]), RPC)
        .as_str()
        .unwrap()
        .to_string()
}

fn apt_get(st: &LabState, args: &str) {
    sh(
        st,
        1,
        &format!("DEBIAN_FRONTEND=noninteractive apt-get -y -q {args}"),
    );
}

/// `dpkg-query`'s two-letter state of the package: "ii" installed, "rc"
/// removed with its configuration, "un" unknown (purged).
fn dpkg_state(st: &LabState) -> String {
    sh(
        st,
        1,
        "dpkg-query -W -f='${db:Status-Abbrev}' xapi-rs 2>/dev/null || echo un",
    )
    .trim()
    .to_string()
}

/// The daemon is gone: systemd says inactive, no process, nothing listens
/// on the XenAPI ports (in dom0 and through the forwarded port).
fn assert_daemon_stopped(st: &LabState, after: &str) {
    let active = st
        .exec(1, "systemctl is-active xapi-rs", Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&active.stdout).trim(),
        "inactive",
        "after {after}"
    );
    assert_eq!(
        sh(st, 1, "pgrep -x xapi-rs || true").trim(),
        "",
        "xapi-rs still runs after {after}"
    );
    let listening = sh(st, 1, "ss -ltnH '( sport = :80 or sport = :443 )'");
    assert_eq!(listening.trim(), "", "still listening after {after}");
    assert!(!hosts::http_answers(st.host(1).unwrap().http_port));
}

/// The guest is the same domain as before and its probe verifies its memory
/// once more on request.
fn assert_guest_runs(st: &LabState, name: &str, domid: &str, after: &str) {
    assert_eq!(
        sh(st, 1, &format!("xl domid {name}")).trim(),
        domid,
        "guest {name} is not the same domain after {after}:\n{}",
        sh(st, 1, "xl list")
    );
    let seen = console_lines(st, 1, name, "probe: verify ok").len();
    sh(
        st,
        1,
        &format!("echo v > \"$(xenstore-read /local/domain/{domid}/console/tty)\""),
    );
    wait_console(st, 1, name, "probe: verify ok", seen, CONSOLE_WAIT);
}

/// Runs the completion function for the words typed so far (the last one
/// being completed) and returns what it offers.
fn complete(st: &LabState, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "bash -c '. /etc/bash_completion.d/xe; COMP_WORDS=({}); COMP_CWORD={}; _xe; printf \"%s\\n\" \"${{COMPREPLY[@]}}\"'",
        quoted.join(" ").replace('\'', "'\\''"),
        words.len() - 1
    );
    sh(st, 1, &script)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn fresh_host_package_remove_and_reinstall_keep_the_guests_and_the_database() {
    let st = lab("lab up");
    let mut steps = testing::Steps::new("package");
    // Installed by the package, every file where the package says.
    assert_eq!(dpkg_state(&st), "ii");
    let files = sh(&st, 1, "dpkg -L xapi-rs");
    for i in lab::deb::ITEMS {
        assert!(
            files.lines().any(|l| l == i.path),
            "{} not installed by the package:\n{files}",
            i.path
        );
    }
    assert_eq!(sh(&st, 1, "command -v xe").trim(), "/usr/bin/xe");
    // The installed files are the packaged ones (md5sums).
    assert_eq!(sh(&st, 1, "dpkg --verify xapi-rs").trim(), "");
    assert_eq!(sh(&st, 1, "systemctl is-enabled xapi-rs").trim(), "enabled");
    assert_eq!(sh(&st, 1, "systemctl is-active xapi-rs").trim(), "active");
    let deb = format!("{}/xapi-rs_*.deb", lab::deb::DOM0_DIR);
    let deb = sh(&st, 1, &format!("ls {deb}")).trim().to_string();
    steps.done("installed files checked");

    // Bash completion asks xe, which asks the daemon: command names, then
    // the chosen command's parameters.
    let names = complete(&st, &["xe", "host-cpu-li"]);
    assert_eq!(names, ["host-cpu-list"]);
    assert!(complete(&st, &["xe", "po"]).contains(&"pool-list".to_string()));
    let params = complete(&st, &["xe", "host-cpu-param-get", "param-n"]);
    assert_eq!(params, ["param-name="]);
    steps.done("bash completion");

    // State written through the API, and a running guest.
    let label = format!("kept-{}", std::process::id());
    let (s, pool) = login(&st);
    rpc_ok(
        &st,
        "pool.set_name_label",
        serde_json::json!([s, pool, label]),
        RPC,
    );
    assert_eq!(pool_label(&st), label);
    steps.done("API write");
    let name = "pkg-guest";
    let _ = st.exec(1, &format!("xl destroy {name}"), Duration::from_secs(60));
    sh(
        &st,
        1,
        &format!("rm -f /var/log/xen/console/guest-{name}*.log"),
    );
    // A calm guest kit guest (lab-guest's probe keeps a TCG dom0 busy).
    let kernel = sh(&st, 1, "ls /boot/vmlinuz-* | sort | tail -1");
    let cfg = lab::guestkit::xl_config(
        name,
        kernel.trim(),
        128,
        &format!("console=hvc0 quiet {CALM_PROBE_ARGS}"),
    );
    let domid = sh(
        &st,
        1,
        &format!("cat > /etc/xen/{name}.cfg <<'CFG'\n{cfg}CFG\nxl create -q /etc/xen/{name}.cfg && xl domid {name}"),
    )
    .trim()
    .to_string();
    wait_console(&st, 1, name, "probe: verify ok", 0, CONSOLE_WAIT);
    steps.done("guest up");

    // Remove: the daemon stops, the guest runs on, the database stays.
    let db = "/var/lib/xapi-rs/state.redb";
    apt_get(&st, "remove xapi-rs");
    steps.done("apt remove");
    assert_eq!(dpkg_state(&st), "rc");
    assert_daemon_stopped(&st, "apt remove");
    sh(&st, 1, &format!("test -f {db}"));
    assert!(st
        .exec(1, "test -e /usr/sbin/xapi-rs", Duration::from_secs(60))
        .map(|o| !o.status.success())
        .unwrap());
    assert_guest_runs(&st, name, &domid, "apt remove");
    steps.done("checks after remove");

    // Reinstall: the daemon is back with what was written before.
    apt_get(&st, &format!("install {deb}"));
    steps.done("apt install");
    assert_eq!(dpkg_state(&st), "ii");
    assert_eq!(pool_label(&st), label, "the database after a reinstall");
    assert_guest_runs(&st, name, &domid, "reinstall");
    steps.done("checks after reinstall");

    // Purge: the configuration goes, the database does not.
    apt_get(&st, "purge xapi-rs");
    steps.done("apt purge");
    assert_eq!(dpkg_state(&st), "un");
    assert_daemon_stopped(&st, "apt purge");
    for gone in ["/etc/xensource/xapi-rs.conf", "/etc/pam.d/xapi"] {
        let o = st
            .exec(1, &format!("test -e {gone}"), Duration::from_secs(60))
            .unwrap();
        assert!(!o.status.success(), "{gone} left after purge");
    }
    sh(&st, 1, &format!("test -f {db}"));
    assert_guest_runs(&st, name, &domid, "apt purge");
    steps.done("checks after purge");
    apt_get(&st, &format!("install {deb}"));
    assert_eq!(
        pool_label(&st),
        label,
        "the database after purge and install"
    );
    assert_guest_runs(&st, name, &domid, "install after purge");
    steps.done("install after purge, checks");
    sh(&st, 1, &format!("xl destroy {name}"));
}
