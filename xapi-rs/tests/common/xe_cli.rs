//! Running the real `xe` binary against a test daemon (its Unix socket).
#![allow(dead_code)]

use super::{Daemon, PASS, USER};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `xe` binary: next to the daemon's binary when cargo built it (it
/// does for `cargo test -p xapi-rs -p xe` and for workspace builds),
/// otherwise built once into a private target directory.
pub fn xe_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let daemon = PathBuf::from(env!("CARGO_BIN_EXE_xapi-rs"));
        let dir = daemon.parent().unwrap();
        let beside = dir.join("xe");
        if beside.exists() {
            return beside;
        }
        let target = dir.parent().unwrap().join("xe-for-tests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args(["build", "-p", "xe", "--bin", "xe", "--target-dir"])
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build -p xe");
        assert!(st.success(), "building xe failed");
        target.join("debug").join("xe")
    })
}

pub struct Out {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// Runs `xe` against the daemon's Unix socket (the client's local path).
pub fn xe(d: &Daemon, args: &[&str]) -> Out {
    xe_with(d, args, &["-u", USER, "-pw", PASS])
}

pub fn xe_with(d: &Daemon, args: &[&str], auth: &[&str]) -> Out {
    let home = d.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let o = Command::new(xe_bin())
        .args(args)
        .args(auth)
        .env("XE_UNIX_SOCKET", &d.unix)
        .env("HOME", &home)
        .env_remove("XE_EXTRA_ARGS")
        .output()
        .expect("run xe");
    Out {
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
        code: o.status.code().unwrap_or(-1),
    }
}

pub fn ok(d: &Daemon, args: &[&str]) -> String {
    let o = xe(d, args);
    assert_eq!(o.code, 0, "xe {args:?}: stderr {:?}", o.stderr);
    assert_eq!(o.stderr, "", "xe {args:?}");
    o.stdout
}

/// Runs `xe` with `input` on its standard input (answers to prompts).
pub fn xe_input(d: &Daemon, args: &[&str], input: &str) -> Out {
    use std::io::Write;
    let home = d.dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut child = Command::new(xe_bin())
        .args(args)
        .args(["-u", USER, "-pw", PASS])
        .env("XE_UNIX_SOCKET", &d.unix)
        .env("HOME", &home)
        .env_remove("XE_EXTRA_ARGS")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run xe");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let o = child.wait_with_output().expect("xe output");
    Out {
        stdout: String::from_utf8(o.stdout).unwrap(),
        stderr: String::from_utf8(o.stderr).unwrap(),
        code: o.status.code().unwrap_or(-1),
    }
}
