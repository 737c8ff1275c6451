//! Helpers for the lab's black-box tests (`tests/*.rs` of this crate), which
//! drive a lab that is already up from the build machine. They panic instead
//! of returning errors, as test code does; the `lab` binary does not use them.

use crate::hosts::LabState;
use crate::util::poll;
use std::time::Duration;

/// The lab that is up, every host's QEMU running; panics otherwise. `up` is
/// the command that brings up the lab the test needs, for the message
/// (`"lab up"`, `"lab up --hosts 2"`).
pub fn lab(up: &str) -> LabState {
    let st = LabState::load()
        .unwrap_or_else(|e| panic!("no lab is up: run `{up}` (or `lab test`): {e:?}"));
    assert!(st.all_alive(), "a lab host's QEMU is not running");
    st
}

/// Runs `script` in host `host`'s dom0 and returns its stdout; panics if it
/// fails or runs over 600 s (the error names the host and the script).
pub fn sh(st: &LabState, host: u32, script: &str) -> String {
    st.exec_ok(host, script, Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The lines of guest `name`'s console log on `host` that contain `pat`.
/// Panics if the log shows a failed memory check of the probe.
pub fn console_lines(st: &LabState, host: u32, name: &str, pat: &str) -> Vec<String> {
    let log = sh(st, host, &format!("lab-guest-log {name}"));
    assert!(
        !log.contains("verify FAILED"),
        "guest {name}'s memory check failed on host {host}:\n{log}"
    );
    log.lines()
        .filter(|l| l.contains(pat))
        .map(str::to_string)
        .collect()
}

/// Polls guest `name`'s console log on `host` every 2 s until more than
/// `before` of its lines contain `pat`, and returns those lines. Panics after
/// `limit` (with the console's tail and `xl list`), or at once if the probe
/// reports a failed memory check.
pub fn wait_console(
    st: &LabState,
    host: u32,
    name: &str,
    pat: &str,
    before: usize,
    limit: Duration,
) -> Vec<String> {
    poll(
        &format!("more than {before} console line(s) '{pat}' from guest {name} on host {host}"),
        limit,
        Duration::from_secs(2),
        || {
            let l = console_lines(st, host, name, pat);
            Ok((l.len() > before).then_some(l))
        },
    )
    .unwrap_or_else(|e| {
        let log = st
            .exec_ok(
                host,
                &format!("lab-guest-log {name} | tail -30; xl list"),
                Duration::from_secs(60),
            )
            .unwrap_or_default();
        panic!("{e:#}\nconsole (tail) and xl list:\n{log}")
    })
}
