//! Black-box tests of `/cli`: the real `xe` binary against the daemon
//! (fake probe, static credentials), asserting exact output bytes.

mod common;

use common::xe_cli::*;
use common::*;
use serde_json::{json, Value};

fn start() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start_in(dir.path(), &[]);
    (dir, d)
}

/// (uuid, number) of each host_cpu, in CPU order, and the host's uuid.
fn cpus(d: &Daemon) -> (Vec<(String, i64)>, String) {
    let s = d.login();
    let recs = d.ok("host_cpu.get_all_records", json!([s]));
    let mut v: Vec<(String, i64)> = recs
        .as_object()
        .unwrap()
        .values()
        .map(|r| {
            (
                r["uuid"].as_str().unwrap().to_string(),
                r["number"].as_i64().unwrap(),
            )
        })
        .collect();
    v.sort_by_key(|x| x.1);
    let hosts = d.ok("host.get_all_records", json!([s]));
    let host = hosts.as_object().unwrap().values().next().unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    (v, host)
}

fn pool_uuid(d: &Daemon) -> String {
    let s = d.login();
    let pools = d.ok("pool.get_all_records", json!([s]));
    pools.as_object().unwrap().values().next().unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn host_cpu_list_exact() {
    let (_dir, d) = start();
    let (cpus, host) = cpus(&d);
    assert_eq!(cpus.len(), 4);
    let out = ok(
        &d,
        &[
            "host-cpu-list",
            "params=uuid,number,vendor,modelname,stepping,flags",
        ],
    );
    let mut expected = String::new();
    for (u, n) in &cpus {
        expected.push_str(&format!(
            "uuid ( RO)         : {u}\n       number ( RO): {n}\n       vendor ( RO): GenuineIntel\n    modelname ( RO): Intel(R) Core(TM)2 Quad CPU @ 2.66GHz\n     stepping ( RO): 7\n        flags ( RO): fpu de tsc msr pae mce cx8 apic sep\n\n\n"
        ));
    }
    assert_eq!(out, expected);

    // Default columns: utilisation is expensive.
    let out = ok(&d, &["host-cpu-list", "number=2"]);
    let u2 = &cpus[2].0;
    assert_eq!(
        out,
        format!("uuid ( RO)           : {u2}\n         number ( RO): 2\n         vendor ( RO): GenuineIntel\n          speed ( RO): 2660\n    utilisation ( RO): <expensive field>\n\n\n")
    );

    // --minimal: uuids comma-joined on one line.
    let all: Vec<&str> = cpus.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        ok(&d, &["host-cpu-list", "--minimal"]),
        format!("{}\n", all.join(","))
    );
    assert_eq!(
        ok(
            &d,
            &[
                "host-cpu-list",
                &format!("host-uuid={host}"),
                "params=number",
                "--minimal"
            ]
        ),
        "0,1,2,3\n"
    );
    assert_eq!(
        ok(&d, &["host-cpu-list", "vendor=AuthenticAMD", "--minimal"]),
        "\n"
    );

    // param-list of one CPU: every shown field, the utilisation value.
    let out = ok(&d, &["host-cpu-param-list", &format!("uuid={u2}")]);
    assert_eq!(
        out,
        format!(
            "uuid ( RO)           : {u2}\n      host-uuid ( RO): {host}\n         number ( RO): 2\n         vendor ( RO): GenuineIntel\n          speed ( RO): 2660\n          model ( RO): 23\n         family ( RO): 6\n      modelname ( RO): Intel(R) Core(TM)2 Quad CPU @ 2.66GHz\n       stepping ( RO): 7\n          flags ( RO): fpu de tsc msr pae mce cx8 apic sep\n    utilisation ( RO): 0.\n\n\n"
        )
    );
    assert_eq!(
        ok(
            &d,
            &[
                "host-cpu-param-get",
                &format!("uuid={u2}"),
                "param-name=modelname"
            ]
        ),
        "Intel(R) Core(TM)2 Quad CPU @ 2.66GHz\n"
    );
}

#[test]
fn host_commands() {
    let (_dir, d) = start();
    let (_, host) = cpus(&d);
    assert_eq!(
        ok(&d, &["host-list"]),
        format!("uuid ( RO)                : {host}\n          name-label ( RW): fakehost\n    name-description ( RW): \n\n\n")
    );
    assert_eq!(ok(&d, &["host-list", "--minimal"]), format!("{host}\n"));
    let u = format!("uuid={host}");
    assert_eq!(
        ok(
            &d,
            &[
                "host-param-get",
                &u,
                "param-name=software-version",
                "param-key=xen"
            ]
        ),
        "4.17.5\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "host-param-get",
                &u,
                "param-name=cpu_info",
                "param-key=cpu_count"
            ]
        ),
        "4\n"
    );
    assert_eq!(
        ok(&d, &["host-param-get", &u, "param-name=memory-total"]),
        "17179869184\n"
    );
    // param-list: known keys with their access.
    let pl = ok(&d, &["host-param-list", &u]);
    let first = pl.lines().next().unwrap();
    assert!(
        first.starts_with("uuid ( RO)") && first.ends_with(&host),
        "{first}"
    );
    for needle in [
        "name-label ( RW): fakehost\n",
        "software-version (MRO): ",
        "other-config (MRW): ",
        "cpu_info (MRO): ",
        "tags (SRW): \n",
        "memory-total ( RO): 17179869184\n",
        "host-metrics-live ( RO): true\n",
        "patches (SRO) [DEPRECATED]: \n",
        "API-version-major ( RO): 2\n",
    ] {
        assert!(pl.contains(needle), "{needle:?} not in\n{pl}");
    }
    assert!(!pl.contains("uefi-certificates"), "hidden field listed");

    ok(
        &d,
        &[
            "host-param-set",
            &u,
            "name-label=renamed",
            "other-config:a=1",
        ],
    );
    assert_eq!(
        ok(&d, &["host-param-get", &u, "param-name=name-label"]),
        "renamed\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "host-param-get",
                &u,
                "param-name=other-config",
                "param-key=a"
            ]
        ),
        "1\n"
    );
    // cpu_info as host-cpu-info prints it (undecorated keys).
    let info = ok(&d, &["host-cpu-info"]);
    assert!(info.starts_with("cpu_count"), "{info}");
    assert!(
        info.contains("    vendor: GenuineIntel\n") || info.contains(" vendor: GenuineIntel\n"),
        "{info}"
    );

    // Read-only field.
    let o = xe(&d, &["host-param-set", &u, "address=1.2.3.4"]);
    assert_eq!(o.code, 1);
    assert_eq!(
        o.stderr,
        "The server failed to handle your request, due to an internal error. The given message may give details useful for debugging the problem.\nmessage: Failure: Field 'address' is read-only.\n"
    );
}

#[test]
fn errors_as_the_reference_prints_them() {
    let (_dir, d) = start();
    let o = xe(&d, &["host-param-get", "uuid=nonexistent", "param-name=x"]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stdout, "");
    assert_eq!(
        o.stderr,
        "The uuid you supplied was invalid.\ntype: host\nuuid: nonexistent\n"
    );
    let (_, host) = cpus(&d);
    let o = xe(
        &d,
        &["host-param-get", &format!("uuid={host}"), "param-name=nope"],
    );
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (1, "Error code: Missing parameter\nError parameters: nope\n")
    );
    let o = xe(
        &d,
        &[
            "host-param-get",
            &format!("uuid={host}"),
            "param-name=software-version",
            "param-key=nope",
        ],
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .ends_with("message: Failure: Key nope not found in map\n"),
        "{}",
        o.stderr
    );
    let o = xe(&d, &["host-param-get", "param-name=x"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (
            1,
            "Required parameter not found: uuid\nFor usage run: 'xe help'\n"
        )
    );
    let o = xe(&d, &["no-such-command"]);
    assert_eq!(
        (o.code, o.stderr.as_str()),
        (
            1,
            "Unknown command: no-such-command\nFor usage run: 'xe help'\n"
        )
    );
    // On the local socket any password is the local superuser's (as the
    // reference's); over the network a wrong one fails.
    let o = xe_with(&d, &["host-list"], &["-u", USER, "-pw", "wrong"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let port = d.https.unwrap().port().to_string();
    let o = xe_with(
        &d,
        &["host-list"],
        &["-s", "localhost", "-p", &port, "-u", USER, "-pw", "wrong"],
    );
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (1, "", "Authentication failed\nFor usage run: 'xe help'\n")
    );
}

#[test]
fn pool_param_set_add_remove() {
    let (_dir, d) = start();
    let p = pool_uuid(&d);
    let u = format!("uuid={p}");
    ok(&d, &["pool-param-set", &u, "name-label=lab pool"]);
    assert_eq!(
        ok(&d, &["pool-param-get", &u, "param-name=name-label"]),
        "lab pool\n"
    );
    // The API sees it.
    let s = d.login();
    let r = d.ok("pool.get_by_uuid", json!([s, p]));
    assert_eq!(
        d.ok("pool.get_name_label", json!([s, r])),
        Value::from("lab pool")
    );

    ok(
        &d,
        &[
            "pool-param-add",
            &u,
            "param-name=other-config",
            "k1=v1",
            "k2=v2",
        ],
    );
    assert_eq!(
        ok(&d, &["pool-param-get", &u, "param-name=other-config"]),
        "k1: v1; k2: v2\n"
    );
    ok(&d, &["pool-param-set", &u, "other-config:k1=changed"]);
    ok(
        &d,
        &[
            "pool-param-remove",
            &u,
            "param-name=other-config",
            "param-key=k2",
        ],
    );
    assert_eq!(
        ok(&d, &["pool-param-get", &u, "param-name=other-config"]),
        "k1: changed\n"
    );
    ok(
        &d,
        &["pool-param-add", &u, "param-name=tags", "param-key=blue"],
    );
    ok(
        &d,
        &["pool-param-add", &u, "param-name=tags", "param-key=red"],
    );
    assert_eq!(
        ok(&d, &["pool-param-get", &u, "param-name=tags"]),
        "blue; red\n"
    );
    assert_eq!(
        ok(&d, &["pool-list", "tags:contains=red", "--minimal"]),
        format!("{p}\n")
    );
    assert_eq!(
        ok(&d, &["pool-list", "tags:contains=green", "--minimal"]),
        "\n"
    );
    ok(
        &d,
        &["pool-param-remove", &u, "param-name=tags", "param-key=blue"],
    );
    assert_eq!(ok(&d, &["pool-param-get", &u, "param-name=tags"]), "red\n");
    let o = xe(
        &d,
        &["pool-param-remove", &u, "param-name=tags", "param-key=nope"],
    );
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .ends_with("message: Failure: Key nope is not in the set\n"),
        "{}",
        o.stderr
    );
    let o = xe(&d, &["pool-param-set", &u, "migration-compression=maybe"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr
            .ends_with("Parameter migration-compression must be a boolean (true or false)\n"),
        "{}",
        o.stderr
    );
    ok(&d, &["pool-param-set", &u, "migration-compression=true"]);
    assert_eq!(
        ok(
            &d,
            &["pool-param-get", &u, "param-name=migration-compression"]
        ),
        "true\n"
    );

    let (_, host) = cpus(&d);
    // The host's local SR is the pool's default from its first start.
    let sr = ok(&d, &["sr-list", "name-label=Local storage", "--minimal"]);
    let sr = sr.trim();
    assert_eq!(sr.len(), 36, "one local SR: {sr:?}");
    let list = ok(&d, &["pool-list"]);
    assert_eq!(
        list,
        format!("uuid ( RO)                : {p}\n          name-label ( RW): lab pool\n    name-description ( RW): \n              master ( RO): {host}\n          default-SR ( RW): {sr}\n\n\n")
    );
}

#[test]
fn tasks_list_and_cancel() {
    let (_dir, d) = start();
    let s = d.login();
    let t = d.ok("task.create", json!([s, "cli-task", "made by the test"]));
    let uuid = d
        .ok("task.get_uuid", json!([s, t]))
        .as_str()
        .unwrap()
        .to_string();
    let out = ok(&d, &["task-list"]);
    assert_eq!(
        out,
        format!("uuid ( RO)                : {uuid}\n          name-label ( RO): cli-task\n    name-description ( RO): made by the test\n              status ( RO): pending\n            progress ( RO): 0.\n\n\n")
    );
    ok(&d, &["task-cancel", &format!("uuid={uuid}")]);
    assert_eq!(
        d.ok("task.get_status", json!([s, t])),
        Value::from("cancelling")
    );
    assert_eq!(
        ok(
            &d,
            &[
                "task-param-get",
                &format!("uuid={uuid}"),
                "param-name=status"
            ]
        ),
        "cancelling\n"
    );
}

#[test]
fn help_and_tls_and_session_id() {
    let (_dir, d) = start();
    let h = ok(&d, &["help", "host-cpu-info"]);
    assert_eq!(
        h,
        "command name            : host-cpu-info\n        reqd params     : \n        optional params : uuid\n        description     : Lists information about the host's physical CPUs.\n\n\n"
    );
    let all = ok(&d, &["help", "--all"]);
    assert!(
        all.contains("Full command list") && all.contains("host-cpu-list"),
        "{all}"
    );

    // Over TLS (a server name that is not 127.0.0.1 makes xe use TLS).
    let https = d.https.unwrap();
    let o = xe_with(
        &d,
        &["host-list", "--minimal"],
        &[
            "-s",
            "localhost",
            "-p",
            &https.port().to_string(),
            "-u",
            USER,
            "-pw",
            PASS,
        ],
    );
    assert_eq!(o.code, 0, "{}", o.stderr);
    let (_, host) = cpus(&d);
    assert_eq!(o.stdout, format!("{host}\n"));

    // A `session_id=` first line instead of credentials (what the reference
    // sends when it forwards), over plain HTTP with the raw protocol.
    use std::io::{Read, Write};
    let s = d.login();
    let body = format!("session_id={s}\r\nhost-list\r\n--minimal");
    let mut c = std::net::TcpStream::connect(d.http).unwrap();
    c.write_all(&xe::args::http_request(&body, None, None))
        .unwrap();
    let v = xe::protocol::read_version(&mut c).unwrap();
    assert_eq!(v, (0, 2));
    xe::protocol::write_version(&mut c).unwrap();
    let mut cmds = Vec::new();
    loop {
        match xe::protocol::read_message(&mut c).unwrap() {
            xe::protocol::Message::Command(xe::protocol::Command::Exit(n)) => {
                cmds.push(xe::protocol::Command::Exit(n));
                break;
            }
            xe::protocol::Message::Command(cmd) => cmds.push(cmd),
            m => panic!("unexpected {m:?}"),
        }
    }
    let (out, err, code) = xe::render::client_view(&cmds);
    assert_eq!(
        (out, err, code),
        (format!("{host}\n"), String::new(), Some(0))
    );
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    // The session given is not logged out.
    d.ok("session.get_this_host", json!([s, s]));
    // An invalid one is reported as the reference does.
    let body = "session_id=OpaqueRef:bogus\nhost-list".to_string();
    let mut c = std::net::TcpStream::connect(d.http).unwrap();
    c.write_all(&xe::args::http_request(&body, None, None))
        .unwrap();
    xe::protocol::read_version(&mut c).unwrap();
    xe::protocol::write_version(&mut c).unwrap();
    let mut cmds = Vec::new();
    while let Ok(xe::protocol::Message::Command(cmd)) = xe::protocol::read_message(&mut c) {
        let end = matches!(cmd, xe::protocol::Command::Exit(_));
        cmds.push(cmd);
        if end {
            break;
        }
    }
    let (_, err, code) = xe::render::client_view(&cmds);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("You gave an invalid session reference."),
        "{err}"
    );
    assert!(err.ends_with("handle: OpaqueRef:bogus\n"), "{err}");

    // Plain API requests on the same listeners still work.
    assert!(d.login().starts_with("OpaqueRef:"));
}

/// VM, template, network, VBD and VIF records made through the API, for
/// the VM-side `xe` classes. Returns (vm, template, network, vbd, vif)
/// uuids.
fn vm_side_objects(d: &Daemon) -> (String, String, String, String, String) {
    let s = d.login();
    let uuid = |class: &str, r: &Value| -> String {
        d.ok(&format!("{class}.get_uuid"), json!([s, r]))
            .as_str()
            .unwrap()
            .to_string()
    };
    let vm_rec = |name: &str, template: bool| {
        json!({
            "name_label": name,
            "name_description": "",
            "is_a_template": template,
            "memory_static_max": "268435456",
            "memory_dynamic_max": "268435456",
            "memory_dynamic_min": "268435456",
            "memory_static_min": "134217728",
            "VCPUs_max": "1",
            "VCPUs_at_startup": "1",
            "other_config": {},
        })
    };
    let vm = d.ok("VM.create", json!([s, vm_rec("vm1", false)]));
    let tmpl = d.ok("VM.create", json!([s, vm_rec("tmpl1", true)]));
    let net = d.ok(
        "network.create",
        json!([s, {"name_label": "net0", "name_description": "test net",
                   "bridge": "xenbr9", "MTU": "1500", "other_config": {}}]),
    );
    let vbd = d.ok(
        "VBD.create",
        json!([s, {"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3",
                   "bootable": false, "mode": "RO", "type": "CD", "empty": true,
                   "unpluggable": true, "other_config": {},
                   "qos_algorithm_type": "", "qos_algorithm_params": {}}]),
    );
    let vif = d.ok(
        "VIF.create",
        json!([s, {"VM": vm, "network": net, "device": "0",
                   "MAC": "aa:bb:cc:dd:ee:01", "MTU": "1500", "other_config": {},
                   "qos_algorithm_type": "", "qos_algorithm_params": {}}]),
    );
    (
        uuid("VM", &vm),
        uuid("VM", &tmpl),
        uuid("network", &net),
        uuid("VBD", &vbd),
        uuid("VIF", &vif),
    )
}

/// The VM-side classes as the reference prints them. Expected text follows
/// records.ml (`vm_record`, `vbd_record`, `vif_record`, `net_record`: field
/// order, names, access) and cli_operations.ml's `gen_cmds` (default
/// columns, `vm`/`template` filters on is-a-template), rendered by the rules
/// of `xe` output (maxlen = 4 + longest decorated key; first key padded on
/// the right, the others on the left; records end with an empty line).
#[test]
fn vm_side_classes() {
    let (_dir, d) = start();
    let (vm, tmpl, net, vbd, vif) = vm_side_objects(&d);
    // vm-list: record order, not the defaults' order; the template is not
    // listed. power-state lowercased (vm_power_state_to_lowercase_string).
    assert_eq!(
        ok(&d, &["vm-list", "is-control-domain=false"]),
        format!(
            "uuid ( RO)           : {vm}\n     name-label ( RW): vm1\n    power-state ( RO): halted\n\n\n"
        )
    );
    // dom0 is listed too, as in the reference (the daemon keeps its record).
    let all = ok(&d, &["vm-list"]);
    assert!(
        all.contains("name-label ( RW): Control domain on host: "),
        "{all}"
    );
    assert!(
        all.contains(&format!("uuid ( RO)           : {vm}\n")),
        "{all}"
    );
    assert_eq!(
        ok(&d, &["vm-list", "is-control-domain=false", "--minimal"]),
        format!("{vm}\n")
    );
    assert_eq!(ok(&d, &["vm-list", "name-label=nothing-like-this"]), "");
    assert_eq!(
        ok(&d, &["template-list", "name-label=tmpl1"]),
        format!(
            "uuid ( RO)                : {tmpl}\n          name-label ( RW): tmpl1\n    name-description ( RW): \n\n\n"
        )
    );
    let u = format!("uuid={vm}");
    assert_eq!(
        ok(&d, &["vm-param-get", &u, "param-name=power-state"]),
        "halted\n"
    );
    // vbd-list: vdi-uuid of a null VDI is records.ml's nid.
    assert_eq!(
        ok(&d, &["vbd-list"]),
        format!(
            "uuid ( RO)             : {vbd}\n          vm-uuid ( RO): {vm}\n    vm-name-label ( RO): vm1\n         vdi-uuid ( RO): <not in database>\n            empty ( RO): true\n           device ( RO): \n\n\n"
        )
    );
    assert_eq!(
        ok(
            &d,
            &[
                "vbd-param-get",
                &format!("uuid={vbd}"),
                "param-name=vdi-name-label"
            ]
        ),
        "<EMPTY>\n"
    );
    assert_eq!(
        ok(
            &d,
            &["vbd-param-get", &format!("uuid={vbd}"), "param-name=mode"]
        ),
        "ro\n"
    );
    assert_eq!(
        ok(&d, &["vif-list"]),
        format!(
            "uuid ( RO)            : {vif}\n         vm-uuid ( RO): {vm}\n          device ( RO): 0\n    network-uuid ( RO): {net}\n\n\n"
        )
    );
    assert_eq!(
        ok(
            &d,
            &[
                "vif-param-get",
                &format!("uuid={vif}"),
                "param-name=network-name-label"
            ]
        ),
        "net0\n"
    );
    assert_eq!(
        ok(&d, &["network-list"]),
        format!(
            "uuid ( RO)                : {net}\n          name-label ( RW): net0\n    name-description ( RW): test net\n              bridge ( RO): xenbr9\n\n\n"
        )
    );
    // param-set / param-add / param-clear, read back.
    assert_eq!(ok(&d, &["vm-param-set", &u, "name-label=renamed"]), "");
    // other-config goes through VM.add_to_other_config (a message of its
    // own in the datamodel), xenstore-data through the generic map update.
    assert_eq!(
        ok(&d, &["vm-param-add", &u, "param-name=other-config", "k=v"]),
        ""
    );
    assert_eq!(
        ok(
            &d,
            &["vm-param-get", &u, "param-name=other-config", "param-key=k"]
        ),
        "v\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "vm-param-add",
                &u,
                "param-name=xenstore-data",
                "k=v",
                "k2=v2"
            ]
        ),
        ""
    );
    assert_eq!(
        ok(&d, &["vm-param-get", &u, "param-name=xenstore-data"]),
        "k: v; k2: v2\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "vm-param-get",
                &u,
                "param-name=xenstore-data",
                "param-key=k2"
            ]
        ),
        "v2\n"
    );
    assert_eq!(
        ok(
            &d,
            &[
                "vm-list",
                "params=name-label",
                "xenstore-data:k=v",
                "--minimal"
            ]
        ),
        "renamed\n"
    );
    // The VBD's read-through vm-name-label follows the rename.
    assert_eq!(
        ok(
            &d,
            &[
                "vbd-param-get",
                &format!("uuid={vbd}"),
                "param-name=vm-name-label"
            ]
        ),
        "renamed\n"
    );
    // param-list: the head of vm_record as the reference prints it for a
    // halted VM with no metrics objects (memory-actual: nid).
    let pl = ok(&d, &["vm-param-list", &u]);
    let head: Vec<&str> = pl.lines().take(17).collect();
    let pad = " ".repeat(44 - "uuid ( RO)".len());
    assert_eq!(
        head.join("\n"),
        format!(
            "uuid ( RO){pad}: {vm}
                            name-label ( RW): renamed
                      name-description ( RW): 
                          user-version ( RW): 0
                         is-a-template ( RW): false
                   is-default-template ( RW): false
                         is-a-snapshot ( RO): false
                           snapshot-of ( RO): <not in database>
                             snapshots ( RO): 
                         snapshot-time ( RO): 19700101T00:00:00Z
                         snapshot-info ( RO): 
                                parent ( RO): <not in database>
                              children ( RO): 
                     is-control-domain ( RO): false
                           power-state ( RO): halted
                         memory-actual ( RO): 0
                         memory-target ( RO): <unknown>"
        )
    );
    for needle in [
        "                         xenstore-data (MRW): k: v; k2: v2\n",
        "                actions-after-shutdown ( RW): Destroy\n",
        "                 HVM-shadow-multiplier ( RW): 1.000\n",
        "            ha-always-run ( RW) [DEPRECATED]: false\n",
        "                            start-time ( RO): 19700101T00:00:00Z\n",
        "                              networks (MRO): <not in database>\n",
        "                         console-uuids (SRO): \n",
    ] {
        assert!(pl.contains(needle), "{needle:?} not in\n{pl}");
    }
    // Hidden fields are not listed.
    assert!(!pl.contains("transportable-snapshot-id"), "{pl}");
    // The template is a VM too: param commands reach it.
    assert_eq!(
        ok(
            &d,
            &[
                "template-param-get",
                &format!("uuid={tmpl}"),
                "param-name=name-label"
            ]
        ),
        "tmpl1\n"
    );
    assert_eq!(
        ok(&d, &["vm-param-clear", &u, "param-name=xenstore-data"]),
        ""
    );
    assert_eq!(
        ok(&d, &["vm-param-get", &u, "param-name=xenstore-data"]),
        "\n"
    );
    // A read-only field refuses param-set.
    let o = xe(&d, &["vm-param-set", &u, "power-state=running"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
}
