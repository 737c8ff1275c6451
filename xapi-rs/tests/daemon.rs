//! Black-box tests of the daemon over its wire protocols.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn start() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    (dir, d)
}

fn is_ref(s: &str) -> bool {
    s.strip_prefix("OpaqueRef:")
        .is_some_and(|u| u.len() == 36 && u.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
}

#[test]
fn jsonrpc_2_envelope() {
    let (_t, d) = start();
    let body = json!({"jsonrpc":"2.0","method":"session.login_with_password","params":[USER, PASS, "1.0", "test"],"id":"abc"});
    let r = d.post("/jsonrpc", "application/json", body.to_string().as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 3, "{v}");
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], "abc");
    assert!(obj.get("error").is_none());
    assert!(is_ref(v["result"].as_str().unwrap()));
    // Failure shape.
    let body = json!({"jsonrpc":"2.0","method":"pool.get_all","params":["OpaqueRef:nope"],"id":7});
    let r = d.post("/jsonrpc", "application/json", body.to_string().as_bytes());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        v,
        json!({"jsonrpc":"2.0","error":{"code":1,"message":"SESSION_INVALID","data":["OpaqueRef:nope"]},"id":7})
    );
    assert!(v.get("result").is_none());
    // Ints are numbers.
    let s = d.login();
    let host = d.ok("host.get_all", json!([s]))[0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        d.ok("host.get_API_version_major", json!([s, host])),
        json!(2)
    );
    assert_eq!(
        d.ok("host.get_API_version_minor", json!([s, host])),
        json!(21)
    );
}

#[test]
fn jsonrpc_1_envelope_and_cors() {
    let (_t, d) = start();
    let body = json!({"method":"session.login_with_password","params":[USER, PASS],"id":3});
    let r = d.post("/jsonrpc", "application/json", body.to_string().as_bytes());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"], Value::Null);
    assert!(v.as_object().unwrap().contains_key("error"));
    assert_eq!(v["id"], 3);
    assert!(is_ref(v["result"].as_str().unwrap()));
    let body = json!({"method":"session.login_with_password","params":[USER, "wrong"],"id":4});
    let r = d.post("/jsonrpc", "application/json", body.to_string().as_bytes());
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["result"], Value::Null);
    assert_eq!(v["error"][0], "SESSION_AUTHENTICATION_FAILED");
    assert_eq!(v["error"][1], USER);

    let s = std::net::TcpStream::connect(d.http).unwrap();
    let r = request(s, "OPTIONS", "/jsonrpc", "application/json", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("POST"));
}

#[test]
fn xmlrpc_golden() {
    let (_t, d) = start();
    for path in ["/", "/RPC2", "/some/other/path"] {
        let r = d.xml(
            path,
            &xml_call("session.login_with_password", &[USER, PASS]),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/xml"));
        let t = r.text();
        let pre = "<methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value>";
        let post = "</value></member></struct></value></param></params></methodResponse>";
        assert!(t.starts_with(pre) && t.ends_with(post), "{t}");
        assert!(is_ref(&t[pre.len()..t.len() - post.len()]), "{t}");
    }
    let s = d.login();
    let host = d.ok("host.get_all", json!([s]))[0]
        .as_str()
        .unwrap()
        .to_string();
    // int64 as a bare string.
    let r = d.xml("/", &xml_call("host.get_API_version_major", &[&s, &host]));
    assert_eq!(
        r.text(),
        "<methodResponse><params><param><value><struct><member><name>Status</name><value>Success</value></member><member><name>Value</name><value>2</value></member></struct></value></param></params></methodResponse>"
    );
    let r = d.xml("/", &xml_call("host.get_enabled", &[&s, &host]));
    assert!(r
        .text()
        .contains("<name>Value</name><value><boolean>1</boolean></value>"));
    let r = d.xml("/", &xml_call("session.logout", &["OpaqueRef:x"]));
    assert_eq!(
        r.text(),
        "<methodResponse><params><param><value><struct><member><name>Status</name><value>Failure</value></member><member><name>ErrorDescription</name><value><array><data><value>SESSION_INVALID</value><value>OpaqueRef:x</value></data></array></value></member></struct></value></param></params></methodResponse>"
    );
    // Records: compact, no whitespace between tags.
    let r = d.xml("/", &xml_call("host.get_record", &[&s, &host]));
    let t = r.text();
    assert!(!t.contains(">\n") && !t.contains("> <"), "{t}");
    assert!(t.contains("<member><name>API_version_major</name><value>2</value></member>"));
    assert!(t.contains("<dateTime.iso8601>"));
    // int params given as <int> or as strings are both accepted.
    let r = d.xml(
        "/",
        &format!("<methodCall><methodName>event.from</methodName><params><param><value>{s}</value></param><param><value><array><data><value>pool</value></data></array></value></param><param><value></value></param><param><value><int>0</int></value></param></params></methodCall>"),
    );
    assert!(
        r.text().contains("<name>valid_ref_counts</name>"),
        "{}",
        r.text()
    );
    // valid_ref_counts are int32 (<i4>), as in the reference.
    assert!(r
        .text()
        .contains("<member><name>pool</name><value><i4>1</i4></value></member>"));
}

#[test]
fn list_methods_without_session() {
    let (_t, d) = start();
    let m = d.ok("system.listMethods", json!([]));
    let names: Vec<&str> = m
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for want in [
        "pool.get_all_records",
        "host.get_all_records",
        "host_cpu.get_all_records",
        "host_metrics.get_all_records",
        "task.get_all_records",
        "pool.set_name_label",
        "event.from",
        "Async.task.cancel",
    ] {
        assert!(names.contains(&want), "missing {want}");
    }
    // As in the reference, session has no get_all* messages (clients
    // derive their class list from the *.get_all_records names).
    assert!(!names.contains(&"session.get_all_records"));
}

#[test]
fn error_codes() {
    let (_t, d) = start();
    let s = d.login();
    assert_eq!(
        d.fail("host.frobnicate", json!([s])),
        ["MESSAGE_METHOD_UNKNOWN", "host.frobnicate"]
    );
    assert_eq!(
        d.fail("nosuchclass.get_all", json!([s])),
        ["MESSAGE_METHOD_UNKNOWN", "nosuchclass.get_all"]
    );
    assert_eq!(
        d.fail("pool.set_master", json!([s, "x", "y"])),
        ["MESSAGE_METHOD_UNKNOWN", "pool.set_master"]
    );
    assert_eq!(
        d.fail("host.get_record", json!([s])),
        [
            "MESSAGE_PARAMETER_COUNT_MISMATCH",
            "host.get_record",
            "2",
            "1"
        ]
    );
    assert_eq!(
        d.fail("host.get_record", json!([s, "OpaqueRef:nope"])),
        ["HANDLE_INVALID", "host", "OpaqueRef:nope"]
    );
    assert_eq!(
        d.fail("host.get_by_uuid", json!([s, "bogus"])),
        ["UUID_INVALID", "host", "bogus"]
    );
    assert_eq!(
        d.fail("host.get_all", json!(["OpaqueRef:nope"])),
        ["SESSION_INVALID", "OpaqueRef:nope"]
    );
    let e = d.fail("session.login_with_password", json!(["root", "bad"]));
    assert_eq!(e[0], "SESSION_AUTHENTICATION_FAILED");
    assert_eq!(e[1], "root");
    assert_eq!(e.len(), 3);
    let e = d.fail("session.login_with_password", json!(["root"]));
    assert_eq!(
        e,
        [
            "MESSAGE_PARAMETER_COUNT_MISMATCH",
            "session.login_with_password",
            "4",
            "1"
        ]
    );
}

#[test]
fn malformed_and_oversized_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &["--max-body", "4096"]);
    let r = d.post("/jsonrpc", "application/json", b"{not json");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["message"], "JSONRPC_UNMARSHAL_FAILURE");
    let r = d.post("/jsonrpc", "application/json", b"[1,2]");
    assert!(r.text().contains("JSONRPC_UNMARSHAL_FAILURE"));
    for bad in ["<methodCall><methodName>x", "garbage", "<a></b>", ""] {
        let r = d.xml("/", bad);
        assert_eq!(r.status, 200);
        assert!(
            r.text().contains("<value>XMLRPC_UNMARSHAL_FAILURE</value>"),
            "{bad}: {}",
            r.text()
        );
    }
    let deep = "<methodCall><methodName>a.b</methodName><params><param>".to_string()
        + &"<value><array><data>".repeat(150);
    assert!(d
        .xml("/", &deep)
        .text()
        .contains("XMLRPC_UNMARSHAL_FAILURE"));
    // Over the limit: the reference's 500, before the body is read.
    let big = vec![b'x'; 100_000];
    let r = d.post("/", "text/xml", &big);
    assert_eq!(r.status, 500);
    assert!(r.text().contains("Client_requested_size_over_limit"));
    let r = d.post("/jsonrpc", "application/json", &big);
    assert_eq!(r.status, 500);
    // Non-HTTP bytes and abandoned connections.
    {
        use std::io::{Read, Write};
        let mut raw = std::net::TcpStream::connect(d.http).unwrap();
        raw.write_all(b"\x00\x01GARBAGE\r\n\r\n").unwrap();
        let mut buf = vec![];
        let _ = raw.read_to_end(&mut buf);
        let mut half = std::net::TcpStream::connect(d.http).unwrap();
        half.write_all(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n<met")
            .unwrap();
        drop(half);
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let a = d.http;
                std::thread::spawn(move || {
                    let body = xml_call("session.login_with_password", &[USER, PASS]);
                    post(a, "/", "text/xml", body.as_bytes()).text()
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().unwrap().contains("<value>Success</value>"));
        }
    }
    // Still serving.
    let s = d.login();
    assert!(is_ref(&s));
    use std::io::{Read, Write};
    // /cli answers with the thin CLI protocol's greeting, not HTTP (the
    // protocol itself is tested in tests/cli.rs); a client that never
    // greets back is dropped.
    let mut c = std::net::TcpStream::connect(d.http).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.write_all(b"POST /cli HTTP/1.0\r\ncontent-length: 5\r\n\r\nhelp\n")
        .unwrap();
    let mut greeting = [0u8; 35];
    c.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[..27], b"XenSource thin CLI protocol");
    assert_eq!(&greeting[27..], &[0, 0, 0, 0, 2, 0, 0, 0]);
    drop(c);
    assert!(is_ref(&d.login()));
}

#[test]
fn login_logout_and_session_fields() {
    let (_t, d) = start();
    let s = d.login();
    let host = d.ok("session.get_this_host", json!([s, s]));
    assert_eq!(d.ok("host.get_all", json!([s])), json!([host]));
    assert_eq!(
        d.ok("session.get_this_user", json!([s, s])),
        json!("OpaqueRef:NULL")
    );
    let rec = d.ok("session.get_record", json!([s, s]));
    assert_eq!(rec["auth_user_name"], USER);
    assert_eq!(rec["is_local_superuser"], true);
    assert_eq!(d.ok("session.logout", json!([s])), json!(""));
    assert_eq!(
        d.fail("pool.get_all", json!([s])),
        ["SESSION_INVALID", s.as_str()]
    );
    let s2 = d.login();
    d.ok("session.local_logout", json!([s2]));
    assert_eq!(d.fail("pool.get_all", json!([s2]))[0], "SESSION_INVALID");
}

#[test]
fn session_idle_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &["--session-timeout", "1"]);
    let s = d.login();
    d.ok("pool.get_all", json!([s]));
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(d.fail("pool.get_all", json!([s]))[0], "SESSION_INVALID");
}

#[test]
fn records_of_host_cpu_pool() {
    let (_t, d) = start();
    let s = d.login();
    let hosts = d.ok("host.get_all_records", json!([s]));
    let hosts = hosts.as_object().unwrap();
    assert_eq!(hosts.len(), 1);
    let (href, h) = hosts.iter().next().unwrap();
    assert_eq!(h["API_version_major"], 2);
    assert_eq!(h["hostname"], "fakehost");
    assert_eq!(h["enabled"], true);
    assert_eq!(h["software_version"]["product_version"], "8.3.0");
    assert!(h["software_version"]["xapi"].is_string());
    assert_eq!(h["software_version"]["xen"], "4.17.5");
    for k in [
        "cpu_count",
        "socket_count",
        "threads_per_core",
        "nr_nodes",
        "vendor",
        "speed",
        "modelname",
        "family",
        "model",
        "stepping",
        "flags",
        "features_pv",
        "features_hvm",
        "features_pv_host",
        "features_hvm_host",
    ] {
        assert!(h["cpu_info"][k].is_string(), "cpu_info.{k}");
    }
    assert_eq!(h["cpu_info"]["cpu_count"], "4");
    assert!(h["other_config"].is_object());
    let metrics = h["metrics"].as_str().unwrap();
    let m = d.ok("host_metrics.get_record", json!([s, metrics]));
    assert_eq!(m["memory_total"], 17179869184i64);

    let cpus = d.ok("host_cpu.get_all_records", json!([s]));
    let cpus = cpus.as_object().unwrap();
    assert_eq!(cpus.len(), 4);
    let mut numbers: Vec<i64> = cpus
        .values()
        .map(|c| c["number"].as_i64().unwrap())
        .collect();
    numbers.sort();
    assert_eq!(numbers, [0, 1, 2, 3]);
    for c in cpus.values() {
        assert_eq!(c["host"], href.as_str());
        assert_eq!(c["vendor"], "GenuineIntel");
        assert_eq!(c["modelname"], "Intel(R) Core(TM)2 Quad CPU @ 2.66GHz");
        assert_eq!(c["stepping"], "7");
        assert_eq!(c["family"], 6);
        assert!(c["flags"].as_str().unwrap().starts_with("fpu"));
        assert!(c["utilisation"].is_number());
        assert!(c["other_config"].is_object());
    }
    let mut host_cpus: Vec<String> = h["host_CPUs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    let mut keys: Vec<String> = cpus.keys().cloned().collect();
    host_cpus.sort();
    keys.sort();
    assert_eq!(host_cpus, keys);
    let where_ = d.ok(
        "host_cpu.get_all_records_where",
        json!([s, "field \"number\"=\"2\""]),
    );
    assert_eq!(where_.as_object().unwrap().len(), 1);
    let all = d.ok("host_cpu.get_all_records_where", json!([s, "true"]));
    assert_eq!(all.as_object().unwrap().len(), 4);

    let pools = d.ok("pool.get_all_records", json!([s]));
    let pools = pools.as_object().unwrap();
    assert_eq!(pools.len(), 1);
    let p = pools.values().next().unwrap();
    assert_eq!(p["master"], href.as_str());
    assert_eq!(p["cpu_info"]["vendor"], "GenuineIntel");
    assert!(p["other_config"].is_object());
    // uuid lookups, name lookups
    let uuid = h["uuid"].as_str().unwrap();
    assert_eq!(d.ok("host.get_by_uuid", json!([s, uuid])), json!(href));
    assert_eq!(
        d.ok("host.get_by_name_label", json!([s, "fakehost"])),
        json!([href])
    );
    // Tasks are always listable.
    assert!(d.ok("task.get_all_records", json!([s])).is_object());
}

#[test]
fn setters_and_maps() {
    let (_t, d) = start();
    let s = d.login();
    let pool = d.ok("pool.get_all", json!([s]))[0]
        .as_str()
        .unwrap()
        .to_string();
    d.ok("pool.set_name_label", json!([s, pool, "lab pool"]));
    assert_eq!(d.ok("pool.get_name_label", json!([s, pool])), "lab pool");
    d.ok("pool.add_to_other_config", json!([s, pool, "k", "v"]));
    let token = d.ok("event.from", json!([s, ["pool"], "", 0.0]))["token"].clone();
    assert_eq!(
        d.fail("pool.add_to_other_config", json!([s, pool, "k", "w"]))[0],
        "MAP_DUPLICATE_KEY"
    );
    // The failed write changed nothing, so it is no event either.
    assert_eq!(
        d.ok("event.from", json!([s, ["pool"], token, 0.3]))["events"],
        json!([])
    );
    assert_eq!(
        d.ok("pool.get_other_config", json!([s, pool])),
        json!({"k": "v"})
    );
    d.ok("pool.remove_from_other_config", json!([s, pool, "k"]));
    assert_eq!(d.ok("pool.get_other_config", json!([s, pool])), json!({}));
    // Sets have add_F/remove_F (the definition), maps add_to_F/remove_from_F.
    d.ok("pool.add_tags", json!([s, pool, "t1"]));
    assert_eq!(d.ok("pool.get_tags", json!([s, pool])), json!(["t1"]));
    d.ok("pool.set_wlb_enabled", json!([s, pool, true]));
    assert_eq!(d.ok("pool.get_wlb_enabled", json!([s, pool])), json!(true));
    assert_eq!(
        d.fail("pool.set_wlb_enabled", json!([s, pool, "maybe"]))[0],
        "FIELD_TYPE_ERROR"
    );
}

#[test]
fn event_from_wakes_on_change() {
    let (_t, d) = start();
    let s = d.login();
    let pool = d.ok("pool.get_all", json!([s]))[0]
        .as_str()
        .unwrap()
        .to_string();
    // Xen Orchestra's sequence: inject, read records, loop on event.from.
    let token = d
        .ok("event.inject", json!([s, "pool", pool]))
        .as_str()
        .unwrap()
        .to_string();
    let r = d.ok("event.from", json!([s, ["pool"], token, 5.0]));
    let evs = r["events"].as_array().unwrap();
    assert_eq!(evs.len(), 1, "{r}");
    assert_eq!(evs[0]["class"], "pool");
    assert_eq!(evs[0]["operation"], "mod");
    assert_eq!(evs[0]["ref"], pool.as_str());
    assert!(evs[0]["id"].is_string() && evs[0]["timestamp"].is_string());
    assert_eq!(r["valid_ref_counts"]["pool"], 1);
    let token = r["token"].as_str().unwrap().to_string();
    assert!(token.as_str() > "");

    // Nothing new: held back until the timeout.
    let t0 = Instant::now();
    let r = d.ok("event.from", json!([s, ["pool"], token, 0.5]));
    assert!(t0.elapsed() >= Duration::from_millis(450));
    assert_eq!(r["events"], json!([]));

    let (http, s2, pool2, token2) = (d.http, s.clone(), pool.clone(), token.clone());
    let waiter = std::thread::spawn(move || {
        let body = json!({"jsonrpc":"2.0","method":"event.from","params":[s2, ["pool", "host"], token2, 30.0],"id":1});
        let t0 = Instant::now();
        let r = post(
            http,
            "/jsonrpc",
            "application/json",
            body.to_string().as_bytes(),
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        (v, t0.elapsed(), pool2)
    });
    std::thread::sleep(Duration::from_millis(300));
    d.ok("pool.set_name_label", json!([s, pool, "renamed"]));
    let (v, took, pool) = waiter.join().unwrap();
    assert!(
        took < Duration::from_secs(10),
        "event.from did not wake: {took:?}"
    );
    let evs = v["result"]["events"].as_array().unwrap();
    assert_eq!(evs.len(), 1, "{v}");
    assert_eq!(evs[0]["ref"], pool.as_str());
    assert_eq!(evs[0]["snapshot"]["name_label"], "renamed");
    assert_eq!(v["result"]["valid_ref_counts"]["host"], 1);
    let newtok = v["result"]["token"].as_str().unwrap();
    assert!(newtok > token.as_str(), "{newtok} <= {token}");

    // Token "" reports every object as added.
    let r = d.ok("event.from", json!([s, ["*"], "", 1.0]));
    let evs = r["events"].as_array().unwrap();
    assert!(evs
        .iter()
        .any(|e| e["class"] == "host_cpu" && e["operation"] == "add"));
    assert!(d.ok("event.get_current_id", json!([s])).is_number());
    assert_eq!(
        d.fail("event.from", json!([s, ["pool"], "junk", 1.0]))[0],
        "EVENT_FROM_TOKEN_PARSE_FAILURE"
    );
}

#[test]
fn legacy_event_next() {
    let (_t, d) = start();
    let s = d.login();
    assert_eq!(
        d.fail("event.next", json!([s]))[0],
        "SESSION_NOT_REGISTERED"
    );
    d.ok("event.register", json!([s, ["pool"]]));
    let pool = d.ok("pool.get_all", json!([s]))[0]
        .as_str()
        .unwrap()
        .to_string();
    d.ok("pool.set_name_description", json!([s, pool, "d"]));
    let evs = d.ok("event.next", json!([s]));
    let evs = evs.as_array().unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["class"], "pool");
    assert_eq!(evs[0]["snapshot"]["name_description"], "d");
    assert!(evs[0]["obj_uuid"].is_string());
    d.ok("event.unregister", json!([s, ["pool"]]));
}

#[test]
fn async_call_creates_task() {
    let (_t, d) = start();
    let s = d.login();
    let host = d.ok("host.get_all", json!([s]))[0]
        .as_str()
        .unwrap()
        .to_string();
    let task = d.ok("Async.host.compute_free_memory", json!([s, host]));
    let task = task.as_str().unwrap().to_string();
    assert!(is_ref(&task));
    let t0 = Instant::now();
    let rec = loop {
        let rec = d.ok("task.get_record", json!([s, task]));
        if rec["status"] != "pending" || t0.elapsed() > Duration::from_secs(10) {
            break rec;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(rec["status"], "success", "{rec}");
    assert_eq!(rec["progress"], 1.0);
    assert_eq!(rec["result"], "<value>8589934592</value>");
    assert_eq!(rec["resident_on"], host.as_str());
    assert_eq!(rec["name_label"], "Async.host.compute_free_memory");
    // A failing async call records error_info.
    let task = d.ok(
        "Async.host.compute_free_memory",
        json!([s, "OpaqueRef:nope"]),
    );
    std::thread::sleep(Duration::from_millis(200));
    let rec = d.ok("task.get_record", json!([s, task]));
    assert_eq!(rec["status"], "failure");
    assert_eq!(
        rec["error_info"],
        json!(["HANDLE_INVALID", "host", "OpaqueRef:nope"])
    );
    // task.create / cancel / destroy
    let t = d.ok("task.create", json!([s, "mine", "desc"]));
    d.ok("task.cancel", json!([s, t]));
    assert_eq!(d.ok("task.get_status", json!([s, t])), "cancelling");
    d.ok("task.destroy", json!([s, t]));
    assert_eq!(
        d.fail("task.get_record", json!([s, t]))[0],
        "HANDLE_INVALID"
    );
    assert_eq!(
        d.fail("Async.host.get_record", json!([s, host]))[0],
        "MESSAGE_METHOD_UNKNOWN"
    );
}

#[test]
fn restart_keeps_data_and_drops_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let (s, pool, cert) = {
        let d = Daemon::start_in(dir.path(), &[]);
        let s = d.login();
        let pool = d.ok("pool.get_all", json!([s]))[0]
            .as_str()
            .unwrap()
            .to_string();
        d.ok("pool.set_name_label", json!([s, pool, "persisted"]));
        let cert = std::fs::read(dir.path().join("xapi-ssl.pem")).unwrap();
        (s, pool, cert)
    };
    let d = Daemon::start_in(dir.path(), &[]);
    assert_eq!(
        d.fail("pool.get_all", json!([s])),
        ["SESSION_INVALID", s.as_str()]
    );
    let s = d.login();
    assert_eq!(d.ok("pool.get_all", json!([s])), json!([pool]));
    assert_eq!(d.ok("pool.get_name_label", json!([s, pool])), "persisted");
    assert_eq!(
        d.ok("host_cpu.get_all", json!([s]))
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        std::fs::read(dir.path().join("xapi-ssl.pem")).unwrap(),
        cert
    );
}

#[test]
fn kill_9_durability() {
    let dir = tempfile::tempdir().unwrap();
    let pool = {
        let mut d = Daemon::start_in(dir.path(), &[]);
        let s = d.login();
        let pool = d.ok("pool.get_all", json!([s]))[0]
            .as_str()
            .unwrap()
            .to_string();
        for i in 0..20 {
            d.ok(
                "pool.set_name_description",
                json!([s, pool, format!("v{i}")]),
            );
        }
        d.kill9();
        pool
    };
    let d = Daemon::start_in(dir.path(), &[]);
    let s = d.login();
    assert_eq!(d.ok("pool.get_name_description", json!([s, pool])), "v19");
}

#[test]
fn unix_socket_and_https() {
    let (_t, d) = start();
    let s = std::os::unix::net::UnixStream::connect(&d.unix).unwrap();
    let r = request(
        s,
        "POST",
        "/",
        "text/xml",
        xml_call("session.login_with_password", &[USER, PASS]).as_bytes(),
    );
    assert!(r.text().contains("<value>Success</value>"));
    let pem = std::fs::read_to_string(d.dir.join("xapi-ssl.pem")).unwrap();
    assert!(pem.contains("PRIVATE KEY") && pem.contains("BEGIN CERTIFICATE"));
    let https = d.https.unwrap();
    match std::process::Command::new("curl")
        .args([
            "-sk",
            "-XPOST",
            "--data",
            &xml_call("session.login_with_password", &[USER, PASS]),
        ])
        .arg(format!("https://{https}/"))
        .output()
    {
        Ok(out) if out.status.success() => {
            assert!(String::from_utf8_lossy(&out.stdout).contains("<value>Success</value>"));
        }
        other => skip(
            "unix_socket_and_https (HTTPS check)",
            &format!("curl unavailable: {other:?}"),
        ),
    }
}

/// With PAM (the production authenticator), unknown users and wrong
/// passwords are refused with SESSION_AUTHENTICATION_FAILED.
#[cfg(feature = "pam")]
#[test]
fn pam_rejects_bad_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_xapi-rs"))
        .args([
            "--http",
            "127.0.0.1:0",
            "--https",
            "none",
            "--pam-service",
            "login",
        ])
        .arg("--unix")
        .arg(&unix)
        .arg("--db")
        .arg(dir.path().join("db"))
        .arg("--fake-probe")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .unwrap()
        .parse()
        .unwrap();
    for (u, p) in [
        ("no-such-user-xapi-rs", "x"),
        ("root", "definitely-not-the-password"),
    ] {
        let body =
            json!({"jsonrpc":"2.0","method":"session.login_with_password","params":[u, p],"id":1});
        let r = post(
            addr,
            "/jsonrpc",
            "application/json",
            body.to_string().as_bytes(),
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            v["error"]["message"], "SESSION_AUTHENTICATION_FAILED",
            "{v}"
        );
        assert_eq!(v["error"]["data"][0], u);
    }
    let _ = child.kill();
    let _ = child.wait();
}
