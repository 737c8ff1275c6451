//! The daemon's command line as an operator meets it: environment
//! fallbacks, flags over the environment, `--help`, bad flags.

mod common;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn xapi_rs() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xapi-rs"));
    for k in [
        "XAPI_RS_HTTP",
        "XAPI_RS_HTTPS",
        "XAPI_RS_UNIX",
        "XAPI_RS_CERT",
        "XAPI_RS_DB",
        "XAPI_RS_TEST_CREDENTIALS",
    ] {
        c.env_remove(k);
    }
    c
}

/// Starts the daemon and returns it with its READY line.
fn ready(c: &mut Command) -> (std::process::Child, String) {
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line)
}

#[test]
fn the_environment_configures_the_daemon_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("env.redb");
    let (mut child, line) = ready(
        xapi_rs()
            .env("XAPI_RS_HTTP", "127.0.0.1:0")
            .env("XAPI_RS_HTTPS", "127.0.0.1:0")
            .env("XAPI_RS_UNIX", "none")
            .env("XAPI_RS_DB", &db)
            .env("XAPI_RS_CERT", dir.path().join("env.pem"))
            .env("XAPI_RS_TEST_CREDENTIALS", "envuser:envpass")
            // The flag wins over XAPI_RS_HTTPS.
            .args(["--https", "none", "--no-pam", "--fake-probe"]),
    );
    assert!(
        line.starts_with("READY http=127.0.0.1:")
            && line.trim_end().ends_with(" https=none unix=none"),
        "{line:?}"
    );
    let http = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(db.exists(), "the database is where XAPI_RS_DB says");
    let login = |user: &str, pass: &str| -> Value {
        let body = json!({"jsonrpc": "2.0", "method": "session.login_with_password",
                          "params": [user, pass, "1.0", "test"], "id": 1});
        let r = common::post(
            http,
            "/jsonrpc",
            "application/json",
            body.to_string().as_bytes(),
        );
        serde_json::from_slice(&r.body).unwrap()
    };
    assert!(login("envuser", "envpass")["result"].is_string());
    assert!(login("envuser", "wrong")["error"].is_object());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn help_lists_the_flags_with_their_variables_and_hides_credentials() {
    let out = xapi_rs()
        .env("XAPI_RS_TEST_CREDENTIALS", "someone:topsecret")
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "--http",
        "XAPI_RS_HTTP",
        "--test-credentials",
        "--metrics-interval",
        "READY",
    ] {
        assert!(help.contains(want), "no {want} in\n{help}");
    }
    assert!(!help.contains("topsecret"), "{help}");
}

#[test]
fn unknown_flags_and_bad_values_exit_2_without_starting() {
    for bad in [
        &["--bogus"][..],
        &["--db"],
        &["--max-body", "lots"],
        &["--session-timeout", "-1"],
    ] {
        let out = xapi_rs()
            .args(["--http", "none", "--https", "none", "--unix", "none"])
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(out.stdout.is_empty(), "{bad:?}: no READY line");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error:"), "{bad:?}: {err}");
    }
}
