//! Live migration between two lab hosts with our `xenguest migrate-send` /
//! `migrate-receive`, as an operator would drive it: a probe guest created
//! with `xl create` on host 1 goes to host 2 over the lab network and back
//! (a guest that has migrated once migrates again). Two, not more: under TCG
//! the lab network's emulated NICs carry a few MB/s, and five migrations of
//! a 256 MiB guest took 24 minutes of the suite.
//! `lab test` runs it in its two-host phase (`two_hosts` in the name).

use dom0_support::XENGUEST;
use lab::hosts::LabState;
use lab::testing::{console_lines, lab, sh, wait_console};
use lab::util::poll;
use std::time::Duration;

/// How long to wait for a console line: a first boot or a migrated guest's
/// next verify under TCG.
const CONSOLE_WAIT: Duration = Duration::from_secs(420);

/// Names of the domains on `host` that carry `name` (also as a prefix,
/// so that a `NAME--incoming` leftover counts).
fn copies(st: &LabState, host: u32, name: &str) -> Vec<String> {
    sh(st, host, "xl list")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(name))
        .map(str::to_string)
        .collect()
}

/// Moves `name` from host `from` to host `to` with our sender and receiver.
fn migrate(st: &LabState, name: &str, from: u32, to: u32) {
    let port = 7700 + to;
    let addr = format!("10.77.0.{to}:{port}");
    // The receiver runs in the background on `to`; its exit status is
    // appended to its log.
    sh(
        st,
        to,
        &format!(
            "rm -f /tmp/recv.log; (setsid sh -c '{XENGUEST} migrate-receive --listen {addr}; \
             echo \"receiver exit=$?\"' > /tmp/recv.log 2>&1 < /dev/null &)"
        ),
    );
    poll(
        &format!("the receiver listening on {addr}"),
        Duration::from_secs(120),
        Duration::from_secs(1),
        || {
            let ss = st.exec_ok(to, "ss -ltn", Duration::from_secs(60))?;
            Ok(ss.contains(&format!(":{port} ")).then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", sh(st, to, "cat /tmp/recv.log")));
    let domid = sh(st, from, &format!("xl domid {name}"));
    let out = st
        .exec(
            from,
            &format!(
                "{XENGUEST} migrate-send --domid {} --to {addr}",
                domid.trim()
            ),
            Duration::from_secs(1800),
        )
        .expect("migrate-send ran");
    let sender = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "migrate-send {from} -> {to} failed ({}):\n{sender}\nreceiver:\n{}",
        out.status,
        sh(st, to, "cat /tmp/recv.log")
    );
    eprintln!(
        "host {from} -> host {to}: {}",
        sender.lines().last().unwrap_or_default()
    );
    let recv = poll(
        "the receiver's exit",
        Duration::from_secs(300),
        Duration::from_secs(1),
        || {
            let log = st.exec_ok(to, "cat /tmp/recv.log", Duration::from_secs(60))?;
            Ok(log.contains("receiver exit=").then_some(log))
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(recv.contains("receiver exit=0"), "receiver failed:\n{recv}");
}

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn two_hosts_live_migration_there_and_back_with_xenguest() {
    let st = lab("lab up --hosts 2");
    assert_eq!(st.hosts.len(), 2, "run with `lab up --hosts 2`");
    let name = "mig2";
    for h in 1..=2 {
        let _ = st.exec(h, &format!("xl destroy {name}"), Duration::from_secs(60));
        sh(
            &st,
            h,
            &format!("rm -f /var/log/xen/console/guest-{name}*.log"),
        );
    }
    sh(&st, 1, &format!("lab-guest {name} 128 8"));
    wait_console(&st, 1, name, "probe: verify ok", 0, CONSOLE_WAIT);
    for (from, to) in [(1, 2), (2, 1)] {
        let verified = console_lines(&st, to, name, "probe: verify ok").len();
        let last_n = dom0_support::verify_lines(&sh(&st, from, &format!("lab-guest-log {name}")))
            .map(|(n, _)| n)
            .max()
            .unwrap_or(0);
        migrate(&st, name, from, to);
        // Exactly one copy, on the destination, under its own name.
        assert_eq!(copies(&st, from, name), Vec::<String>::new(), "source");
        assert_eq!(copies(&st, to, name), vec![name.to_string()], "destination");
        // It runs there: verifies its memory on request and saw its pause.
        let domid = sh(&st, to, &format!("xl domid {name}"));
        sh(
            &st,
            to,
            &format!(
                "echo v > \"$(xenstore-read /local/domain/{}/console/tty)\"",
                domid.trim()
            ),
        );
        let lines = wait_console(&st, to, name, "probe: verify ok", verified, CONSOLE_WAIT);
        // The pause it saw: the largest gap its verify lines report after
        // the last one it printed on the source (one of them spans it).
        let pause = dom0_support::verify_lines(&lines.join("\n"))
            .filter(|&(n, _)| n > last_n)
            .map(|(_, gap)| gap)
            .max()
            .unwrap_or_else(|| panic!("no verify line after n={last_n}: {lines:?}"));
        eprintln!("pause seen by the guest, host {from} -> {to}: {pause} ms");
    }
    sh(&st, 1, &format!("xl destroy {name}"));
}
