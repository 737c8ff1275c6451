//! Black-box harness: runs the `xapi-rs` binary on loopback with a temp
//! database, static test credentials and the fake host probe, and speaks
//! raw HTTP/1.1 to it.
#![allow(dead_code)]

pub mod xe_cli;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const USER: &str = "root";
pub const PASS: &str = "s3cret";

pub struct Daemon {
    pub child: Child,
    pub http: SocketAddr,
    pub https: Option<SocketAddr>,
    pub unix: PathBuf,
    pub dir: PathBuf,
}

impl Daemon {
    /// Start with a database in `dir` (kept across restarts by the caller).
    pub fn start_in(dir: &Path, extra: &[&str]) -> Daemon {
        let unix = dir.join("xapi.sock");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xapi-rs"));
        cmd.args(["--http", "127.0.0.1:0", "--https", "127.0.0.1:0"])
            .arg("--unix")
            .arg(&unix)
            .arg("--db")
            .arg(dir.join("state.redb"))
            .arg("--cert")
            .arg(dir.join("xapi-ssl.pem"))
            .args(["--no-pam", "--test-credentials", &format!("{USER}:{PASS}")])
            .arg("--fake-probe")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let started = std::time::Instant::now();
        let mut child = cmd.spawn().expect("spawn xapi-rs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("READY "), "no READY line: {line:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slow start: {:?}",
            started.elapsed()
        );
        let field = |k: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")).map(str::to_string))
                .unwrap()
        };
        Daemon {
            child,
            http: field("http").parse().unwrap(),
            https: field("https").parse().ok(),
            unix,
            dir: dir.to_path_buf(),
        }
    }

    pub fn kill9(&mut self) {
        // Child::kill sends SIGKILL on Unix.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn post(&self, path: &str, ctype: &str, body: &[u8]) -> Resp {
        post(self.http, path, ctype, body)
    }

    pub fn xml(&self, path: &str, body: &str) -> Resp {
        self.post(path, "text/xml", body.as_bytes())
    }

    /// JSON-RPC 2.0 call; returns the parsed response object.
    pub fn json(&self, method: &str, params: Value) -> Value {
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
        let r = self.post("/jsonrpc", "application/json", body.to_string().as_bytes());
        serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("bad JSON {e}: {}", r.text()))
    }

    /// Call and expect success; returns `result`.
    pub fn ok(&self, method: &str, params: Value) -> Value {
        let v = self.json(method, params);
        assert!(v.get("error").is_none(), "{method} failed: {v}");
        v["result"].clone()
    }

    /// Call and expect failure; returns [code, params...].
    pub fn fail(&self, method: &str, params: Value) -> Vec<String> {
        let v = self.json(method, params);
        let e = v
            .get("error")
            .unwrap_or_else(|| panic!("{method} succeeded: {v}"));
        let mut out = vec![e["message"].as_str().unwrap().to_string()];
        for d in e["data"].as_array().unwrap() {
            out.push(d.as_str().unwrap().to_string());
        }
        out
    }

    pub fn login(&self) -> String {
        self.ok("session.login_with_password", json!([USER, PASS]))
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn request<S: Read + Write>(
    mut s: S,
    method: &str,
    path: &str,
    ctype: &str,
    body: &[u8],
) -> Resp {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (500) before reading everything: ignore write errors.
    let _ = s.write_all(body);
    let mut raw = vec![];
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

pub fn post(addr: SocketAddr, path: &str, ctype: &str, body: &[u8]) -> Resp {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    request(s, "POST", path, ctype, body)
}

pub fn xml_call(method: &str, params: &[&str]) -> String {
    let mut s = format!(
        "<?xml version='1.0'?>\n<methodCall>\n<methodName>{method}</methodName>\n<params>\n"
    );
    for p in params {
        s.push_str(&format!("<param>\n<value>{p}</value>\n</param>\n"));
    }
    s.push_str("</params>\n</methodCall>\n");
    s
}

/// Whether a missing prerequisite must fail the test rather than skip it:
/// under `lab test` (which sets `XAPI_LAB_STRICT=1`) and in CI.
pub fn strict() -> bool {
    ["XAPI_LAB_STRICT", "CI"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// A test that cannot run here: fails when [`strict`], else prints a
/// `skipped: NAME (reason)` line that `lab test` counts. The line goes to
/// the real stdout, past libtest's capture of passing tests' output.
pub fn skip(name: &str, reason: &str) {
    assert!(!strict(), "{name}: prerequisite missing: {reason}");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "skipped: {name} ({})", reason.replace('\n', " "));
    let _ = out.flush();
}
