//! The PyPI `XenAPI` client against the daemon (skipped with a `skipped:` line
//! when Python or pip cannot provide it; a failure under `lab test`).

mod common;

use common::*;
use std::process::Command;

#[test]
fn pypi_xenapi_client_logs_in_over_xmlrpc() {
    let venv = tempfile::tempdir().unwrap();
    let py = venv.path().join("bin/python");
    let made = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(venv.path())
        .output();
    if !matches!(&made, Ok(o) if o.status.success()) {
        skip(
            "pypi_xenapi_client_logs_in_over_xmlrpc",
            &format!("python3 -m venv failed: {made:?}"),
        );
        return;
    }
    let pip = Command::new(&py)
        .args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "XenAPI",
        ])
        .output()
        .unwrap();
    if !pip.status.success() {
        skip(
            "pypi_xenapi_client_logs_in_over_xmlrpc",
            &format!(
                "pip could not install XenAPI: {}",
                String::from_utf8_lossy(&pip.stderr)
            ),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/xenapi_client.py");
    for url in [format!("http://{}", d.http), format!("http://{}/", d.http)] {
        let out = Command::new(&py)
            .arg(script)
            .args([&url, USER, PASS])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("XENAPI-OK"),
            "{url}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
