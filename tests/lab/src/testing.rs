//! Helpers for the lab's black-box tests (`tests/*.rs` of this crate), which
//! drive a lab that is already up from the build machine. They panic instead
//! of returning errors, as test code does; the `lab` binary does not use them.

use crate::hosts::LabState;
use crate::util::poll;
use serde_json::{json, Value};
use std::process::Command;
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

/// A JSON-RPC 2.0 call to host 1's daemon over its forwarded HTTPS port,
/// with curl (no client library, as a black box). Null when nothing answers
/// within `limit` or the answer is not JSON: callers that poll retry, the
/// others fail on the missing result.
pub fn rpc(st: &LabState, method: &str, params: Value, limit: Duration) -> Value {
    let url = format!(
        "https://127.0.0.1:{}/jsonrpc",
        st.host(1).expect("host 1 in the lab").https_port
    );
    let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
    let o = Command::new("curl")
        .args(["-sk", "-m", &limit.as_secs().max(1).to_string()])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(body.to_string())
        .arg(&url)
        .output()
        .expect("run curl");
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// The result of a call that must succeed; panics with the answer otherwise.
pub fn rpc_ok(st: &LabState, method: &str, params: Value, limit: Duration) -> Value {
    let v = rpc(st, method, params, limit);
    match v.get("result") {
        Some(r) if v.get("error").is_none() => r.clone(),
        _ => panic!("{method} failed: {v}"),
    }
}

/// The error of a call that must fail, as the reference's code followed by
/// its parameters; panics if it succeeded.
pub fn rpc_err(st: &LabState, method: &str, params: Value, limit: Duration) -> Vec<String> {
    let v = rpc(st, method, params, limit);
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("{method} succeeded: {v}"));
    let mut out = vec![e["message"].as_str().unwrap_or_default().to_string()];
    for d in e["data"].as_array().into_iter().flatten() {
        out.push(d.as_str().unwrap_or_default().to_string());
    }
    out
}

/// A root session, waiting up to `limit` for the daemon to answer (it may be
/// starting or restarting).
pub fn login(st: &LabState, limit: Duration) -> String {
    poll(
        "xapi-rs answering session.login_with_password",
        limit,
        Duration::from_secs(2),
        || {
            let v = rpc(
                st,
                "session.login_with_password",
                json!(["root", st.password]),
                Duration::from_secs(30),
            );
            Ok(v["result"].as_str().map(str::to_string))
        },
    )
    .unwrap_or_else(|e| {
        let log = st
            .exec_ok(
                1,
                "journalctl -u xapi-rs --no-pager | tail -30",
                Duration::from_secs(60),
            )
            .unwrap_or_default();
        panic!("{e:#}\njournal (tail):\n{log}")
    })
}

/// Prints how long a long test's steps take ("NAME: STEP +N.N s (at M s)")
/// to stderr, so a slow phase of `lab test` shows where its time goes.
pub struct Steps {
    name: &'static str,
    start: std::time::Instant,
    last: std::time::Instant,
}

impl Steps {
    pub fn new(name: &'static str) -> Steps {
        let now = std::time::Instant::now();
        Steps {
            name,
            start: now,
            last: now,
        }
    }

    /// Marks the end of step `what`.
    pub fn done(&mut self, what: &str) {
        let now = std::time::Instant::now();
        eprintln!(
            "{}: {what} +{:.1} s (at {:.0} s)",
            self.name,
            (now - self.last).as_secs_f64(),
            (now - self.start).as_secs_f64()
        );
        self.last = now;
    }
}
