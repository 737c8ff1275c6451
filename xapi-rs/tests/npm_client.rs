//! The npm `xen-api` client (Xen Orchestra) against the daemon over
//! JSON-RPC (skipped with a `skipped:` line when node/npm cannot
//! provide it; a failure under `lab test`).

mod common;

use common::*;
use std::process::Command;

#[test]
fn npm_xen_api_client_connects_and_watches_events() {
    let work = tempfile::tempdir().unwrap();
    let npm = Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--silent",
            "xen-api@4",
        ])
        .current_dir(work.path())
        .output();
    match &npm {
        Ok(o) if o.status.success() => {}
        other => {
            skip(
                "npm_xen_api_client_connects_and_watches_events",
                &format!("npm could not install xen-api: {other:?}"),
            );
            return;
        }
    }
    let script = work.path().join("client.mjs");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/xen_api_client.mjs"),
        &script,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    let out = Command::new("node")
        .arg(&script)
        .args([&format!("http://{}", d.http), USER, PASS])
        .current_dir(work.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("NPM-OK"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
