//! Bad input and authority (issue 10), against the daemon binary: bounded
//! parsing, what an unauthenticated client can hold, sessions, tasks, the
//! local socket, `https_only` and what XML-RPC output may contain.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn start(extra: &[&str]) -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), extra);
    (dir, d)
}

fn alive(d: &Daemon) {
    let s = d.login();
    assert!(s.starts_with("OpaqueRef:"), "{s}");
}

/// The issue's crash: one `get_all_records_where` of 60,000 `and` terms
/// (1.7 MB) aborted the daemon. Over the body limit it is refused unread;
/// under it, an over-long expression is the reference's INVALID_VALUE
/// `[expr; reason]`.
#[test]
fn huge_where_expressions_are_refused_and_the_daemon_lives() {
    let (_t, d) = start(&[]);
    let s = d.login();
    let term = r#"field "number" = "0""#;
    let huge = vec![term; 60_000].join(" and ");
    assert!(huge.len() > 1_400_000);
    let body = json!({"jsonrpc": "2.0", "method": "host_cpu.get_all_records_where", "params": [s, huge], "id": 1});
    let r = d.post("/jsonrpc", "application/json", body.to_string().as_bytes());
    assert_eq!(r.status, 500, "{}", r.text());
    alive(&d);
    // Under the body limit (300 KiB) but far over the expression's bounds.
    let long = vec![term; 9_000].join(" and ");
    assert!(long.len() > 200 * 1024);
    let e = d.fail("host_cpu.get_all_records_where", json!([s, long]));
    assert_eq!(e[0], "INVALID_VALUE");
    assert_eq!(e[1], long);
    assert!(e[2].contains("longer than"), "{}", e[2]);
    let e = d.fail("host_cpu.get_all_where", json!([s, "field \"number\" ="]));
    assert_eq!(e[0], "INVALID_VALUE");
    // Over XML-RPC: within the byte bound, over the token bound.
    let x = format!(
        "<methodCall><methodName>host_cpu.get_all_records_where</methodName><params><param><value>{s}</value></param><param><value>{}</value></param></params></methodCall>",
        vec!["true"; 6000].join(" and ")
    );
    let r = d.xml("/", &x);
    assert!(
        r.text().contains("<value>INVALID_VALUE</value>"),
        "{}",
        r.text()
    );
    // A usual one still works.
    let one = d.ok(
        "host_cpu.get_all_records_where",
        json!([s, r#"field "number" = "0" and not (field "number" = "1")"#]),
    );
    assert_eq!(one.as_object().unwrap().len(), 1);
    alive(&d);
}

#[test]
fn deep_nesting_is_refused_on_both_wires() {
    let (_t, d) = start(&[]);
    let s = d.login();
    // JSON: 100,000 nested arrays (200 KB) inside the params.
    let deep = format!(
        r#"{{"jsonrpc":"2.0","method":"pool.get_all","params":["{s}",{}{}],"id":1}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = d.post("/jsonrpc", "application/json", deep.as_bytes());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["message"], "JSONRPC_UNMARSHAL_FAILURE", "{v}");
    // XML: 5,000 nested structs.
    let x = format!(
        "<methodCall><methodName>pool.get_all</methodName><params><param>{}</param></params></methodCall>",
        "<value><struct><member><name>a</name>".repeat(5_000)
    );
    assert!(x.len() < 300 * 1024);
    assert!(d.xml("/", &x).text().contains("XMLRPC_UNMARSHAL_FAILURE"));
    alive(&d);
}

/// A request head announcing a body over the limit is answered at once,
/// without the body being sent.
#[test]
fn oversized_bodies_are_refused_before_they_are_read() {
    let (_t, d) = start(&[]);
    for path in ["/", "/jsonrpc", "/RPC2"] {
        let mut c = TcpStream::connect(d.http).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            c,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            16 * 1024 * 1024
        )
        .unwrap();
        let mut raw = vec![];
        let _ = c.read_to_end(&mut raw);
        let r = parse_response(&raw);
        assert_eq!(r.status, 500, "{path}");
        assert!(r.text().contains("Client_requested_size_over_limit"));
    }
    // Exactly at the limit is fine (and fails as the XML it is not).
    let r = d.post("/", "text/xml", &vec![b' '; 300 * 1024]);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("XMLRPC_UNMARSHAL_FAILURE"));
    let r = d.post("/", "text/xml", &vec![b' '; 300 * 1024 + 1]);
    assert_eq!(r.status, 500);
    // A chunked body is counted as it comes.
    let mut c = TcpStream::connect(d.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..6 {
        let _ = write!(c, "{:x}\r\n", chunk.len());
        let _ = c.write_all(&chunk);
        let _ = c.write_all(b"\r\n");
    }
    let mut raw = vec![];
    let _ = c.read_to_end(&mut raw);
    assert_eq!(parse_response(&raw).status, 500);
    alive(&d);
}

/// Opens a connection that sends its request head one byte at a time.
fn slowloris(addr: std::net::SocketAddr) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut c = TcpStream::connect(addr).unwrap();
        for b in b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
            .take(10_000)
        {
            if c.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        t.elapsed()
    })
}

/// Sends a whole head and then its body one byte at a time.
fn slow_body(addr: std::net::SocketAddr) -> std::thread::JoinHandle<(Duration, Vec<u8>)> {
    std::thread::spawn(move || {
        let t = Instant::now();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
            .unwrap();
        let mut raw = vec![];
        for _ in 0..100_000 {
            if c.write_all(b" ").is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (t.elapsed(), raw)
    })
}

/// Ten clients dribbling their request heads, ten dribbling bodies and ten
/// sending oversized ones do not disturb a logged-in client; the slow ones
/// are cut off at the request timeout.
#[test]
fn slow_and_oversized_clients_do_not_disturb_a_logged_in_one() {
    let (_t, d) = start(&["--request-timeout", "3"]);
    let s = d.login();
    let heads: Vec<_> = (0..10).map(|_| slowloris(d.http)).collect();
    let bodies: Vec<_> = (0..10).map(|_| slow_body(d.http)).collect();
    let big: Vec<_> = (0..10)
        .map(|_| {
            let a = d.http;
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let mut c = TcpStream::connect(a).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    c.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16777216\r\n\r\n<methodCall>")
                        .unwrap();
                    let mut raw = vec![];
                    let _ = c.read_to_end(&mut raw);
                    assert_eq!(parse_response(&raw).status, 500);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let mut worst = Duration::ZERO;
    while t.elapsed() < Duration::from_secs(4) {
        let c = Instant::now();
        let pools = d.ok("pool.get_all", json!([s]));
        assert_eq!(pools.as_array().unwrap().len(), 1);
        worst = worst.max(c.elapsed());
    }
    assert!(worst < Duration::from_secs(1), "slowest call {worst:?}");
    for h in heads {
        let took = h.join().unwrap();
        assert!(took < Duration::from_secs(8), "slow head held {took:?}");
    }
    for b in bodies {
        let (took, raw) = b.join().unwrap();
        assert!(took < Duration::from_secs(8), "slow body held {took:?}");
        assert_eq!(parse_response(&raw).status, 408);
    }
    for b in big {
        b.join().unwrap();
    }
    alive(&d);
}

/// Connections beyond the limit wait for a free slot.
#[test]
fn concurrent_connections_are_bounded() {
    let (_t, d) = start(&["--max-connections", "3"]);
    let idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(d.http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let a = d.http;
    let waiting = std::thread::spawn(move || {
        let t = Instant::now();
        let body = xml_call("session.login_with_password", &[USER, PASS]);
        let r = post(a, "/", "text/xml", body.as_bytes());
        (t.elapsed(), r.text())
    });
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!waiting.is_finished(), "a fourth connection was served");
    drop(idle);
    let (took, text) = waiting.join().unwrap();
    assert!(text.contains("<value>Success</value>"), "{text}");
    assert!(took >= Duration::from_millis(1400), "{took:?}");
}

#[test]
fn failed_logins_are_answered_after_the_reference_delay() {
    let (_t, d) = start(&[]);
    let t = Instant::now();
    let e = d.fail("session.login_with_password", json!([USER, "wrong"]));
    assert_eq!(e[0], "SESSION_AUTHENTICATION_FAILED");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(4900), "{took:?}");
    // A good one is not delayed.
    let t = Instant::now();
    alive(&d);
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// Beyond 500 sessions of root with one originator, the least recently
/// active are destroyed (the reference's rule); another originator's are
/// counted apart.
#[test]
fn sessions_beyond_the_limit_evict_the_least_recently_active() {
    let (_t, d) = start(&[]);
    let login = |orig: &str| -> String {
        d.ok(
            "session.login_with_password",
            json!([USER, PASS, "1.0", orig]),
        )
        .as_str()
        .unwrap()
        .to_string()
    };
    let other = login("other-tool");
    let first: Vec<String> = (0..5).map(|_| login("ansible")).collect();
    // The first stays in use, so it is not the least recently active.
    let mut all = vec![];
    for _ in 0..500 {
        all.push(login("ansible"));
        if all.len() % 100 == 0 {
            d.ok("pool.get_all", json!([first[0]]));
        }
    }
    d.ok("pool.get_all", json!([first[0]]));
    for s in &first[1..] {
        assert_eq!(d.fail("pool.get_all", json!([s]))[0], "SESSION_INVALID");
    }
    d.ok("pool.get_all", json!([all[499]]));
    d.ok("pool.get_all", json!([other]));
}

/// Only a task's owner or an administrator may cancel, destroy or set it.
#[test]
fn tasks_belong_to_their_owner() {
    let (_t, d) = start(&[
        "--test-credentials",
        &format!("{USER}:{PASS},alice:alicepw"),
    ]);
    let root = d.login();
    let alice = d
        .ok("session.login_with_password", json!(["alice", "alicepw"]))
        .as_str()
        .unwrap()
        .to_string();
    let mine = d.ok("task.create", json!([root, "root's", ""]));
    let hers = d.ok("task.create", json!([alice, "alice's", ""]));
    let denied = [
        "RBAC_PERMISSION_DENIED",
        "task.destroy/any",
        "No permission in user session. (Roles with this permission: pool-admin, pool-operator)",
    ];
    assert_eq!(d.fail("task.cancel", json!([alice, mine])), denied);
    assert_eq!(d.fail("task.destroy", json!([alice, mine])), denied);
    assert_eq!(
        d.fail("task.set_progress", json!([alice, mine, 0.5])),
        denied
    );
    assert_eq!(
        d.fail("task.set_status", json!([alice, mine, "success"])),
        denied
    );
    assert_eq!(
        d.ok("task.get_status", json!([root, mine])),
        json!("pending")
    );
    // Her own: yes, from another of her sessions too.
    let alice2 = d
        .ok("session.login_with_password", json!(["alice", "alicepw"]))
        .as_str()
        .unwrap()
        .to_string();
    d.ok("task.set_progress", json!([alice2, hers, 0.5]));
    d.ok("task.cancel", json!([alice, hers]));
    // The local superuser may change anyone's.
    d.ok("task.set_progress", json!([root, hers, 0.7]));
    d.ok("task.destroy", json!([root, hers]));
    d.ok("task.destroy", json!([root, mine]));
    assert_eq!(
        d.fail("task.cancel", json!([alice, mine]))[0],
        "HANDLE_INVALID"
    );
}

#[test]
fn pending_tasks_are_capped() {
    let (_t, d) = start(&[]);
    let s = d.login();
    for i in 0..1000 {
        d.ok("task.create", json!([s, format!("t{i}"), ""]));
    }
    assert_eq!(
        d.fail("task.create", json!([s, "one too many", ""])),
        ["TOO_MANY_PENDING_TASKS"]
    );
    alive(&d);
}

fn unix_post(d: &Daemon, path: &str, body: &str) -> Resp {
    let s = std::os::unix::net::UnixStream::connect(&d.unix).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    request(s, "POST", path, "application/json", body.as_bytes())
}

/// On the local Unix socket any credentials log in as the local superuser
/// (Ansible's xenserver_facts sends empty ones); the socket is root-only.
#[test]
fn the_local_socket_logs_in_as_the_local_superuser() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (_t, d) = start(&[]);
    let meta = std::fs::metadata(&d.unix).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), my_uid());
    for (u, p) in [("", ""), ("root", "not-the-password"), ("nobody", "x")] {
        let body = json!({"jsonrpc": "2.0", "method": "session.login_with_password", "params": [u, p], "id": 1});
        let v: Value =
            serde_json::from_slice(&unix_post(&d, "/jsonrpc", &body.to_string()).body).unwrap();
        let s = v["result"].as_str().unwrap_or_else(|| panic!("{u:?}: {v}"));
        let rec = d.ok("session.get_record", json!([s, s]));
        assert_eq!(rec["is_local_superuser"], json!(true), "{rec}");
        assert_eq!(rec["auth_user_name"], json!(u));
    }
    // Over TCP the same credentials are refused.
    let e = d.fail("session.login_with_password", json!(["", ""]));
    assert_eq!(e[0], "SESSION_AUTHENTICATION_FAILED");
}

/// Our own uid, from the file we just created (no libc call).
fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid()
}

/// A non-loopback address of this machine, if it has one: the local
/// address a UDP socket would use towards a private network (no packet is
/// sent).
fn own_address() -> Option<std::net::IpAddr> {
    let u = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    u.connect("10.255.255.255:9").ok()?;
    let ip = u.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// With `host.https_only`, plain HTTP is refused to all but loopback
/// peers (the reference closes port 80 in its firewall, whose loopback
/// rule comes first); HTTPS is unaffected.
#[test]
fn https_only_refuses_plain_http_from_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &["--http", "0.0.0.0:0"]);
    let Some(ip) = own_address() else {
        skip(
            "https_only_refuses_plain_http_from_the_network",
            "no non-loopback address",
        );
        return;
    };
    let port = d.http.port();
    let ext = std::net::SocketAddr::new(ip, port);
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let call = xml_call("session.login_with_password", &[USER, PASS]);
    assert!(post(ext, "/", "text/xml", call.as_bytes())
        .text()
        .contains("Success"));
    let s = d.login();
    let host = d.ok("host.get_all", json!([s]))[0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(d.ok("host.get_https_only", json!([s, host])), json!(false));
    d.ok("host.set_https_only", json!([s, host, true]));
    assert_eq!(d.ok("host.get_https_only", json!([s, host])), json!(true));
    // From the network: closed without a byte of answer.
    let mut c = TcpStream::connect(ext).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(
        c,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{call}",
        call.len()
    );
    let mut raw = vec![];
    let _ = c.read_to_end(&mut raw);
    assert!(raw.is_empty(), "{}", String::from_utf8_lossy(&raw));
    // Loopback still works.
    assert!(post(local, "/", "text/xml", call.as_bytes())
        .text()
        .contains("Success"));
    d.ok("host.set_https_only", json!([s, host, false]));
    assert!(post(ext, "/", "text/xml", call.as_bytes())
        .text()
        .contains("Success"));
}

/// Control characters in stored strings are dropped from XML-RPC output
/// (as the reference drops them), so the response stays well-formed XML;
/// JSON carries them escaped.
#[test]
fn xmlrpc_output_has_no_control_characters() {
    let (_t, d) = start(&[]);
    let s = d.login();
    let pool = d.ok("pool.get_all", json!([s]))[0]
        .as_str()
        .unwrap()
        .to_string();
    d.ok(
        "pool.set_name_label",
        json!([s, pool, "a\u{1}b\u{1b}[0m\tc\u{0}"]),
    );
    let r = d.xml("/", &xml_call("pool.get_name_label", &[&s, &pool]));
    let text = r.text();
    assert!(
        !r.body
            .iter()
            .any(|b| *b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')),
        "{text:?}"
    );
    assert!(text.contains("<value>ab[0m\tc</value>"), "{text:?}");
    assert_eq!(
        d.ok("pool.get_name_label", json!([s, pool])),
        json!("a\u{1}b\u{1b}[0m\tc\u{0}")
    );
}
