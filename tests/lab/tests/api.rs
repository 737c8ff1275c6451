//! Black-box tests of the toolstack's API slice on real Xen, from the build
//! machine through host 1's forwarded ports: `xe`, PyPI `XenAPI` over
//! XML-RPC, npm `xen-api` over JSON-RPC, restarts and `kill -9`.
//! `lab test` runs them; by hand: `lab up`, then
//! `cargo test -p lab --test api -- --ignored --test-threads=1`.

use lab::hosts::LabState;
use lab::testing::{login, rpc};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

fn lab() -> LabState {
    lab::testing::lab("lab up")
}

fn sh(st: &LabState, script: &str) -> String {
    st.exec_ok(1, script, Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The workspace's `xe` (built if needed, by the lab's own release build
/// of the toolstack: the same features and artifacts, so no rebuild).
fn xe_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let st = lab::deb::release_build_command()
            .status()
            .expect("cargo build of the toolstack");
        assert!(st.success(), "building xe failed");
        lab::guestkit::target_dir().join("release").join("xe")
    })
}

struct Out {
    stdout: String,
    stderr: String,
    code: i32,
}

fn xe_pw(st: &LabState, pw: &str, args: &[&str]) -> Out {
    let h = st.host(1).unwrap();
    let home = std::env::temp_dir().join("xapi-rs-lab-api-home");
    std::fs::create_dir_all(&home).unwrap();
    let port = h.https_port.to_string();
    let o = Command::new(xe_bin())
        // `-s 127.0.0.1` means "this host" to xe (Unix socket, then plain
        // HTTP, never TLS, as the reference client): name the forwarded
        // HTTPS port through `localhost` to get TLS.
        .args(["-s", "localhost", "-p", &port, "-u", "root", "-pw", pw])
        .args(args)
        .env("HOME", &home)
        .output()
        .expect("run xe");
    Out {
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        code: o.status.code().unwrap_or(-1),
    }
}

fn xe(st: &LabState, args: &[&str]) -> String {
    let o = xe_pw(st, &st.password, args);
    assert_eq!(o.code, 0, "xe {args:?}: {}", o.stderr);
    o.stdout
}

/// The first processor block of dom0's /proc/cpuinfo.
fn dom0_cpuinfo(st: &LabState) -> Vec<(String, String)> {
    sh(st, "cat /proc/cpuinfo")
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(kv: &'a [(String, String)], k: &str) -> &'a str {
    kv.iter()
        .find(|(a, _)| a == k)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {k}"))
}

fn xl_info(st: &LabState) -> Vec<(String, String)> {
    sh(st, "xl info")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn xe_host_cpu_list_matches_dom0() {
    let st = lab();
    let info = xl_info(&st);
    let nr: usize = field(&info, "nr_cpus").parse().unwrap();
    let ci = dom0_cpuinfo(&st);
    let uuids = xe(&st, &["host-cpu-list", "params=uuid", "--minimal"]);
    let uuids: Vec<&str> = uuids.trim_end().split(',').collect();
    assert_eq!(uuids.len(), nr, "one host_cpu per physical CPU");
    let out = xe(
        &st,
        &[
            "host-cpu-list",
            "params=uuid,number,vendor,modelname,stepping,flags",
        ],
    );
    let mut expected = String::new();
    for (n, u) in uuids.iter().enumerate() {
        expected.push_str(&format!(
            "uuid ( RO)         : {u}\n       number ( RO): {n}\n       vendor ( RO): {}\n    modelname ( RO): {}\n     stepping ( RO): {}\n        flags ( RO): {}\n\n\n",
            field(&ci, "vendor_id"),
            field(&ci, "model name"),
            field(&ci, "stepping"),
            field(&ci, "flags"),
        ));
    }
    assert_eq!(out, expected);
    // family/model come from CPUID and agree with dom0's kernel.
    let u0 = format!("uuid={}", uuids[0]);
    assert_eq!(
        xe(&st, &["host-cpu-param-get", &u0, "param-name=family"]).trim(),
        field(&ci, "cpu family")
    );
    assert_eq!(
        xe(&st, &["host-cpu-param-get", &u0, "param-name=model"]).trim(),
        field(&ci, "model")
    );
    // host cpu_info from physinfo and the featuresets.
    let host = xe(&st, &["host-list", "--minimal"]);
    let hu = format!("uuid={}", host.trim());
    let get = |k: &str| {
        xe(
            &st,
            &[
                "host-param-get",
                &hu,
                "param-name=cpu_info",
                &format!("param-key={k}"),
            ],
        )
        .trim()
        .to_string()
    };
    assert_eq!(get("cpu_count"), nr.to_string());
    assert_eq!(get("threads_per_core"), field(&info, "threads_per_core"));
    assert_eq!(get("nr_nodes"), field(&info, "nr_nodes"));
    for k in [
        "features_pv",
        "features_hvm",
        "features_pv_host",
        "features_hvm_host",
    ] {
        let v = get(k);
        let words: Vec<&str> = v.split('-').collect();
        assert!(
            words.len() >= 8
                && words
                    .iter()
                    .all(|w| w.len() == 8 && u32::from_str_radix(w, 16).is_ok()),
            "{k} = {v:?}"
        );
    }
    // The featureset's word 0 is CPUID leaf 1 EDX: FPU (bit 0) is set
    // when dom0's flags say fpu.
    let pv = get("features_pv_host");
    let w0 = u32::from_str_radix(&pv[..8], 16).unwrap();
    assert_eq!(
        w0 & 1 == 1,
        field(&ci, "flags").split(' ').any(|f| f == "fpu")
    );
    // Memory from physinfo, as xl reports it (MiB).
    let total: u64 = xe(&st, &["host-param-get", &hu, "param-name=memory-total"])
        .trim()
        .parse()
        .unwrap();
    let xl_total: u64 = field(&info, "total_memory").parse().unwrap();
    assert_eq!(total / (1024 * 1024), xl_total);
    // software-version carries Xen's version.
    let xen = xe(
        &st,
        &[
            "host-param-get",
            &hu,
            "param-name=software-version",
            "param-key=xen",
        ],
    );
    assert_eq!(xen.trim(), field(&info, "xen_version"));
    let sv = xe(&st, &["host-param-get", &hu, "param-name=software-version"]);
    assert!(
        sv.contains(&format!("xen: {}", field(&info, "xen_version"))),
        "{sv}"
    );
    assert!(sv.contains("product_version: "), "{sv}");

    // The reference's error for an unknown uuid.
    let o = xe_pw(
        &st,
        &st.password,
        &["host-param-get", "uuid=nonexistent", "param-name=x"],
    );
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (
            1,
            "",
            "The uuid you supplied was invalid.\ntype: host\nuuid: nonexistent\n"
        )
    );
    let o = xe_pw(&st, "wrong-password", &["host-list"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "Authentication failed\nFor usage run: 'xe help'\n")
    );
}

fn tempdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xapi-rs-lab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const PY: &str = r#"
import json, sys, XenAPI
url, pw = sys.argv[1], sys.argv[2]
s = XenAPI.Session(url, ignore_ssl=True)
s.xenapi.login_with_password("root", pw, "1.0", "lab-test")
hosts = s.xenapi.host.get_all_records()
cpus = s.xenapi.host_cpu.get_all_records()
out = {"hosts": list(hosts.values()), "cpus": sorted(cpus.values(), key=lambda c: int(c["number"]))}
s.xenapi.session.logout()
bad = XenAPI.Session(url, ignore_ssl=True)
try:
    bad.xenapi.login_with_password("root", pw + "-wrong", "1.0", "lab-test")
    out["bad"] = "LOGGED IN"
except XenAPI.Failure as f:
    out["bad"] = f.details
print(json.dumps(out, default=str))
"#;

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn pypi_xenapi_over_xmlrpc() {
    let st = lab();
    let dir = tempdir("py");
    let venv = dir.join("venv");
    let ok = Command::new("python3")
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .status()
        .unwrap()
        .success();
    assert!(ok, "python3 -m venv");
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "XenAPI"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "pip install XenAPI");
    std::fs::write(dir.join("t.py"), PY).unwrap();
    let url = format!("https://127.0.0.1:{}", st.host(1).unwrap().https_port);
    let o = Command::new(venv.join("bin/python"))
        .arg(dir.join("t.py"))
        .arg(&url)
        .arg(&st.password)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let info = xl_info(&st);
    let ci = dom0_cpuinfo(&st);
    assert_eq!(v["hosts"].as_array().unwrap().len(), 1);
    let h = &v["hosts"][0];
    assert_eq!(h["software_version"]["xen"], field(&info, "xen_version"));
    assert_eq!(h["cpu_info"]["cpu_count"], field(&info, "nr_cpus"));
    let cpus = v["cpus"].as_array().unwrap();
    assert_eq!(cpus.len().to_string(), field(&info, "nr_cpus"));
    for (i, c) in cpus.iter().enumerate() {
        assert_eq!(c["number"], i.to_string()); // XML-RPC int64 as a string
        assert_eq!(c["vendor"], field(&ci, "vendor_id"));
        assert_eq!(c["modelname"], field(&ci, "model name"));
        assert_eq!(c["flags"], field(&ci, "flags"));
    }
    assert_eq!(v["bad"][0], "SESSION_AUTHENTICATION_FAILED", "{}", v["bad"]);
    let _ = std::fs::remove_dir_all(&dir);
}

const JS: &str = r#"
import https from 'node:https'
import { syncBuiltinESMExports } from 'node:module'
const paths = []
const orig = https.request
https.request = function (...a) {
  const o = a.find((x) => x && typeof x === 'object' && !(x instanceof URL)) || {}
  const u = a.find((x) => x instanceof URL || typeof x === 'string')
  paths.push(String(o.path ?? (u ? new URL(u).pathname : '?')))
  return orig.apply(this, a)
}
syncBuiltinESMExports()
// The JSON-RPC transport uses undici, which reports requests here.
import diagnostics_channel from 'node:diagnostics_channel'
diagnostics_channel.channel('undici:request:create').subscribe(({ request }) => paths.push(String(request.path)))
const { createClient } = await import('xen-api')
const [url, password, label] = process.argv.slice(2)
const fail = (m) => { console.error(m); process.exit(1) }
setTimeout(() => fail('TIMEOUT; paths ' + JSON.stringify(paths)), 60000)
const xapi = createClient({ url, allowUnauthorized: true, auth: { user: 'root', password } })
await xapi.connect()
// The client is watching once its initial fetch (one get_all_records per
// class listed by system.listMethods: 72 with the full datamodel, each on a
// new TLS connection, seconds under TCG) is done; a fixed wait raced it.
await xapi.objectsFetched
const seen = new Promise((resolve) =>
  xapi.objects.on('update', (objs) => {
    for (const o of Object.values(objs)) if (o.$type === 'pool' && o.name_label === label) resolve(Date.now())
  })
)
console.log('READY ' + xapi.pool.name_label)
const at = await seen
console.log('SEEN ' + at)
console.log('PATHS ' + JSON.stringify([...new Set(paths)]))
await xapi.disconnect()
process.exit(0)
"#;

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn npm_xen_api_over_jsonrpc_sees_xe_change() {
    use std::io::{BufRead, BufReader};
    let st = lab();
    let dir = tempdir("npm");
    let ok = Command::new("npm")
        .args(["install", "--silent", "xen-api"])
        .current_dir(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "npm install xen-api");
    std::fs::write(dir.join("t.mjs"), JS).unwrap();
    let url = format!("https://127.0.0.1:{}", st.host(1).unwrap().https_port);
    let label = format!("npm-sees-{}", std::process::id());
    let mut child = Command::new("node")
        .arg(dir.join("t.mjs"))
        .arg(&url)
        .arg(&st.password)
        .arg(&label)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = lines.next().unwrap().unwrap();
    assert!(ready.starts_with("READY "), "{ready}");
    let pool = xe(&st, &["pool-list", "--minimal"]);
    xe(
        &st,
        &[
            "pool-param-set",
            &format!("uuid={}", pool.trim()),
            &format!("name-label={label}"),
        ],
    );
    // The change is committed once xe returns; from then on the client
    // must see it by its event loop (it never polls). The bound is only
    // against a stuck or polling client: how fast events arrive is
    // `lab bench api`'s figure, not a timed test's (under TCG the xe call
    // alone takes about a second).
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let seen = lines.next().unwrap().unwrap();
    let at: u64 = seen.strip_prefix("SEEN ").unwrap().parse().unwrap();
    let paths = lines.next().unwrap().unwrap();
    assert!(child.wait().unwrap().success());
    assert!(
        at.saturating_sub(t0) < 10_000,
        "event {} ms after xe returned",
        at.saturating_sub(t0)
    );
    assert_eq!(
        paths, "PATHS [\"/jsonrpc\"]",
        "the client must use JSON-RPC only"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Each JSON-RPC call.
const RPC: Duration = Duration::from_secs(30);
/// The daemon answering again after a restart, a kill or a power cut.
const UP: Duration = Duration::from_secs(120);

#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn restart_and_kill9_keep_state_and_drop_sessions() {
    let st = lab();
    let pool = xe(&st, &["pool-list", "--minimal"]);
    let pu = format!("uuid={}", pool.trim());
    for (round, how) in [
        "systemctl restart xapi-rs",
        "pid=$(systemctl show -p MainPID --value xapi-rs); kill -9 $pid; sleep 1; systemctl start xapi-rs || true",
    ]
    .iter()
    .enumerate()
    {
        let label = format!("survives-{round}-{}", std::process::id());
        xe(&st, &["pool-param-set", &pu, &format!("name-label={label}")]);
        let old = login(&st, UP);
        assert!(rpc(&st, "pool.get_all", serde_json::json!([old]), RPC)["result"].is_array());
        let before = sh(&st, "systemctl show -p MainPID --value xapi-rs");
        sh(&st, how);
        login(&st, UP);
        let after = sh(&st, "systemctl show -p MainPID --value xapi-rs");
        assert_ne!(before.trim(), after.trim(), "{how}: the daemon did not restart");
        assert_eq!(xe(&st, &["pool-param-get", &pu, "param-name=name-label"]).trim(), label);
        let v = rpc(&st, "pool.get_all", serde_json::json!([old]), RPC);
        assert_eq!(v["error"]["message"], "SESSION_INVALID", "{how}: {v}");
        let new = login(&st, UP);
        let v = rpc(&st, "pool.get_all", serde_json::json!([new]), RPC);
        assert_eq!(v["result"].as_array().map(Vec::len), Some(1), "{v}");
    }
}

/// A power cut right after the last acknowledgement loses no acknowledged
/// write. Unlike `kill -9` of the daemon, whose writes the dom0's page cache
/// keeps, killing the host's QEMU loses everything dom0 had not written to
/// its disk: only writes fsync'd before they were acknowledged survive.
#[test]
#[ignore = "needs the lab: run by `lab test`"]
fn power_cut_keeps_acknowledged_writes() {
    let mut st = lab();
    let s = login(&st, UP);
    let pool = rpc(&st, "pool.get_all", serde_json::json!([s]), RPC)["result"][0]
        .as_str()
        .expect("pool.get_all")
        .to_string();
    let tag = format!("power-cut-{}", std::process::id());
    const N: usize = 20;
    for i in 0..N {
        let v = rpc(
            &st,
            "pool.add_to_other_config",
            serde_json::json!([s, pool, format!("{tag}-{i}"), i.to_string()]),
            RPC,
        );
        assert_eq!(v["result"], "", "write {i} not acknowledged: {v}");
    }
    let v = rpc(
        &st,
        "pool.set_name_label",
        serde_json::json!([s, pool, tag]),
        RPC,
    );
    assert_eq!(v["result"], "", "set_name_label not acknowledged: {v}");
    st.power_cut(1).unwrap_or_else(|e| panic!("{e:#}"));
    st.power_on(1, Duration::from_secs(1200))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let s = login(&st, UP);
    let v = rpc(
        &st,
        "pool.get_name_label",
        serde_json::json!([s, pool]),
        RPC,
    );
    assert_eq!(v["result"], tag.as_str(), "after the power cut: {v}");
    let v = rpc(
        &st,
        "pool.get_other_config",
        serde_json::json!([s, pool]),
        RPC,
    );
    let missing: Vec<usize> = (0..N)
        .filter(|i| v["result"][format!("{tag}-{i}")] != i.to_string().as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "writes {missing:?} lost in the power cut: {v}"
    );
}
